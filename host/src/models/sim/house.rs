//! How the simulated model keeps house: read the room from the messages in
//! view, then find the object, prepare it, and put it where the goal says.
//!
//! Its map of the room (which receptacles exist, what is in them, which are
//! closed, what it holds) is rebuilt on every call from the visible
//! observations. When old observations fall out of the window it forgets
//! where it has looked and looks again; without the goal line in view it
//! wanders.

use serde_json::json;

use super::context::{Reading, Rolls, Seen};
use super::faults::Action;
use super::profile::Knobs;

/// What the goal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Pick,
    PickTwo,
    Clean,
    Heat,
    Cool,
    Examine,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HouseGoal {
    pub kind: Kind,
    pub object: String,
    /// The receptacle type the object must end up in/on.
    pub target: Option<String>,
}

impl HouseGoal {
    pub(crate) fn parse(goal: &str) -> Option<HouseGoal> {
        let goal = goal.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(rest) = goal.strip_prefix("look at ") {
            let object = rest.split(" under ").next()?.trim().trim_start_matches("the ").to_string();
            return Some(HouseGoal { kind: Kind::Examine, object, target: None });
        }
        let split_target = |rest: &str| -> Option<(String, String)> {
            let (object, target) = rest.split_once(" in ").or_else(|| rest.split_once(" on "))?;
            Some((object.trim().to_string(), target.trim().to_string()))
        };
        if let Some(rest) = goal.strip_prefix("find two ") {
            let (object, rest) = rest.split_once(" and put them ")?;
            let target = rest.trim_start_matches("in ").trim_start_matches("on ").to_string();
            return Some(HouseGoal { kind: Kind::PickTwo, object: object.to_string(), target: Some(target) });
        }
        let rest = goal.strip_prefix("put a ").or_else(|| goal.strip_prefix("put some "))?;
        let (kind, rest) = match rest.split_once(' ') {
            Some(("clean", rest)) => (Kind::Clean, rest),
            Some(("hot", rest)) => (Kind::Heat, rest),
            Some(("cool", rest)) => (Kind::Cool, rest),
            _ => (Kind::Pick, rest),
        };
        let (object, target) = split_target(rest)?;
        Some(HouseGoal { kind, object, target: Some(target) })
    }

    fn appliance(&self) -> Option<(&'static str, &'static str)> {
        match self.kind {
            Kind::Clean => Some(("sinkbasin", "clean")),
            Kind::Heat => Some(("microwave", "heat")),
            Kind::Cool => Some(("fridge", "cool")),
            _ => None,
        }
    }
}

/// `cabinet 3` -> `cabinet`.
fn kind_of(name: &str) -> &str {
    name.rsplit_once(' ').map_or(name, |(kind, _)| kind)
}

/// `a cabinet 1, a drawer 2, and a shelf 1` -> names.
fn listed(text: &str) -> Vec<String> {
    let tokens: Vec<&str> = text.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()).collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let numbered = i + 2 < tokens.len() && tokens[i + 2].bytes().all(|b| b.is_ascii_digit());
        if matches!(tokens[i], "a" | "an") && numbered {
            names.push(format!("{} {}", tokens[i + 1], tokens[i + 2]));
            i += 3;
        } else {
            i += 1;
        }
    }
    names
}

/// The model's map of the room.
#[derive(Default)]
struct Belief {
    /// Receptacles in the order they were listed.
    receptacles: Vec<String>,
    location: Option<String>,
    holding: Option<String>,
    /// Receptacle -> what was last seen in it.
    contents: Vec<(String, Vec<String>)>,
    closed: Vec<String>,
    prepared: Vec<String>,
}

impl Belief {
    fn read(reading: &Reading) -> Belief {
        let mut belief = Belief::default();
        for seen in &reading.seen {
            let text = match seen {
                Seen::User(text) | Seen::Result(text) => text,
            };
            if text.starts_with("Admissible commands:") {
                for line in text.lines().skip(1) {
                    if let Some(name) = line.trim().strip_prefix("go to ") {
                        belief.know(name);
                    }
                }
                continue;
            }
            let mut last_receptacle: Option<String> = None;
            for sentence in text.split(['.', '\n']).map(str::trim).filter(|s| !s.is_empty()) {
                belief.absorb(sentence, &mut last_receptacle);
            }
        }
        belief
    }

    fn know(&mut self, receptacle: &str) {
        if !self.receptacles.iter().any(|r| r == receptacle) {
            self.receptacles.push(receptacle.to_string());
        }
    }

    fn set_contents(&mut self, receptacle: &str, items: Vec<String>) {
        self.know(receptacle);
        self.closed.retain(|r| r != receptacle);
        match self.contents.iter_mut().find(|(r, _)| r == receptacle) {
            Some((_, old)) => *old = items,
            None => self.contents.push((receptacle.to_string(), items)),
        }
    }

    fn contents_of(&self, receptacle: &str) -> Option<&Vec<String>> {
        self.contents.iter().find(|(r, _)| r == receptacle).map(|(_, items)| items)
    }

    fn visited(&self, receptacle: &str) -> bool {
        self.contents_of(receptacle).is_some() || self.closed.iter().any(|r| r == receptacle)
    }

    fn absorb(&mut self, sentence: &str, last: &mut Option<String>) {
        if let Some(rest) = sentence.split_once("Looking quickly around you, you see ").map(|(_, r)| r) {
            for name in listed(rest) {
                self.know(&name);
            }
        }
        if sentence.starts_with("You are in the middle of a room") {
            self.location = None;
        } else if let Some(name) = sentence.strip_prefix("You arrive at ") {
            self.know(name);
            self.location = Some(name.to_string());
            *last = Some(name.to_string());
        } else if let Some(rest) = sentence.strip_prefix("You are facing the ") {
            self.location = Some(rest.to_string());
        } else if let Some(name) = sentence.strip_prefix("The ").and_then(|s| s.strip_suffix(" is closed")) {
            self.know(name);
            self.contents.retain(|(r, _)| r != name);
            if !self.closed.iter().any(|r| r == name) {
                self.closed.push(name.to_string());
            }
        } else if let Some(name) = sentence.strip_prefix("The ").and_then(|s| s.strip_suffix(" is open")) {
            self.closed.retain(|r| r != name);
            *last = Some(name.to_string());
        } else if let Some(rest) = sentence.strip_prefix("In it, you see ") {
            if let Some(name) = last.clone() {
                self.set_contents(&name, listed(rest));
            }
        } else if let Some(rest) = sentence.strip_prefix("On the ") {
            if let Some((name, items)) = rest.split_once(", you see ") {
                self.set_contents(name, listed(items));
            }
        } else if let Some(name) = sentence.strip_prefix("You open the ") {
            self.closed.retain(|r| r != name);
            *last = Some(name.to_string());
        } else if let Some(name) = sentence.strip_prefix("You close the ") {
            self.contents.retain(|(r, _)| r != name);
            self.closed.push(name.to_string());
        } else if let Some(rest) = sentence.strip_prefix("You pick up the ") {
            if let Some((object, from)) = rest.split_once(" from the ") {
                self.holding = Some(object.to_string());
                if let Some((_, items)) = self.contents.iter_mut().find(|(r, _)| r == from) {
                    items.retain(|i| i != object);
                }
            }
        } else if let Some(rest) = sentence.strip_prefix("You put the ") {
            let split = rest.split_once(" in the ").or_else(|| rest.split_once(" on the "));
            if let Some((object, into)) = split {
                self.holding = None;
                match self.contents.iter_mut().find(|(r, _)| r == into) {
                    Some((_, items)) => items.push(object.to_string()),
                    None => self.contents.push((into.to_string(), vec![object.to_string()])),
                }
            }
        } else if let Some(rest) =
            ["You clean the ", "You heat the ", "You cool the "].iter().find_map(|p| sentence.strip_prefix(p))
        {
            if let Some((object, _)) = rest.split_once(" using the ") {
                self.prepared.push(object.to_string());
            }
        } else if let Some(rest) = sentence.strip_prefix("You are carrying: ") {
            self.holding = listed(rest).into_iter().next();
        } else if sentence.starts_with("You are not carrying anything") {
            self.holding = None;
        }
    }

    /// The first known receptacle of `kind`, in listing order.
    fn first_of(&self, kind: &str) -> Option<&String> {
        self.receptacles.iter().find(|r| kind_of(r) == kind)
    }

    fn lamp(&self) -> Option<(String, String)> {
        self.contents.iter().find_map(|(receptacle, items)| {
            items.iter().find(|i| kind_of(i) == "desklamp").map(|lamp| (receptacle.clone(), lamp.clone()))
        })
    }
}

/// Shared inputs of one decision.
pub(crate) struct Ctx<'a> {
    pub reading: &'a Reading,
    pub knobs: &'a Knobs,
    pub rolls: &'a Rolls,
}

fn act(command: String, thought: impl Into<String>) -> Action {
    Action::new("act", json!({ "command": command }), thought)
}

/// The ranked choices for the next call (never empty), or `None` when the
/// model believes it is done.
pub(crate) fn plan(ctx: &Ctx) -> Option<Vec<Action>> {
    let belief = Belief::read(ctx.reading);
    let Some(goal) = ctx.reading.goal.as_deref().and_then(HouseGoal::parse) else {
        return Some(wander(ctx, &belief));
    };
    let mut choices = decide(&goal, &belief)?;
    if ctx.rolls.chance("invalid", ctx.knobs.invalid_rate) {
        if let Some(wrong) = choices.first().and_then(|c| invalid_variant(c, &goal, ctx.rolls)) {
            choices.insert(0, wrong);
        }
    }
    choices.push(act("look".to_string(), "Let me look around again."));
    choices.push(Action::new("admissible", json!({}), "Let me check what I can do here."));
    Some(choices)
}

/// Go to `receptacle`, opening it if it is closed, then do `then`.
fn reach(belief: &Belief, receptacle: &str, then: Action) -> Action {
    if belief.location.as_deref() != Some(receptacle) {
        act(format!("go to {receptacle}"), format!("Going to the {receptacle}."))
    } else if belief.closed.iter().any(|r| r == receptacle) {
        act(format!("open {receptacle}"), format!("The {receptacle} is closed; opening it."))
    } else {
        then
    }
}

fn decide(goal: &HouseGoal, belief: &Belief) -> Option<Vec<Action>> {
    // The receptacle to fill: one already holding our objects, else the first.
    let target: Option<String> = goal.target.as_deref().and_then(|kind| {
        belief
            .contents
            .iter()
            .find(|(r, items)| kind_of(r) == kind && items.iter().any(|i| kind_of(i) == goal.object))
            .map(|(r, _)| r.clone())
            .or_else(|| belief.first_of(kind).cloned())
    });
    if let Some(held) = &belief.holding {
        if kind_of(held) != goal.object {
            return Some(vec![match &belief.location {
                Some(here) => {
                    act(format!("put {held} in/on {here}"), format!("I do not need the {held}; putting it down."))
                }
                None => act("look".to_string(), format!("I do not need the {held}; where can I put it?")),
            }]);
        }
        if let Some((appliance_kind, verb)) = goal.appliance() {
            if !belief.prepared.contains(held) {
                let Some(appliance) = belief.first_of(appliance_kind).cloned() else {
                    return Some(vec![act("look".to_string(), format!("I need a {appliance_kind}; looking around."))]);
                };
                return Some(vec![if belief.location.as_deref() == Some(appliance.as_str()) {
                    act(format!("{verb} {held} with {appliance}"), format!("Now I {verb} the {held}."))
                } else {
                    act(
                        format!("go to {appliance}"),
                        format!("The {held} needs to be {verb}ed; going to the {appliance}."),
                    )
                }]);
            }
        }
        if goal.kind == Kind::Examine {
            return Some(vec![match belief.lamp() {
                Some((stand, lamp)) => {
                    reach(belief, &stand, act(format!("use {lamp}"), format!("Turning on the {lamp}.")))
                }
                None => explore(belief, None).unwrap_or_else(|| act("look".to_string(), "Where is the lamp?")),
            }]);
        }
        let Some(target) = target else {
            return Some(vec![act("look".to_string(), "Where should this go? Looking around.")]);
        };
        let put = act(format!("put {held} in/on {target}"), format!("Putting the {held} in/on the {target}."));
        return Some(vec![reach(belief, &target, put)]);
    }
    if goal.kind == Kind::PickTwo {
        let placed = target
            .as_deref()
            .and_then(|t| belief.contents_of(t))
            .map_or(0, |items| items.iter().filter(|i| kind_of(i) == goal.object).count());
        if placed >= 2 {
            return None;
        }
    }
    // A known object of the right type that is not already in place.
    let found = belief.contents.iter().find_map(|(receptacle, items)| {
        let in_place = goal.target.as_deref() == Some(kind_of(receptacle));
        if in_place {
            return None;
        }
        items.iter().find(|i| kind_of(i) == goal.object).map(|object| (receptacle.clone(), object.clone()))
    });
    if let Some((receptacle, object)) = found {
        let take = act(format!("take {object} from {receptacle}"), format!("Taking the {object}."));
        return Some(vec![reach(belief, &receptacle, take)]);
    }
    Some(vec![explore(belief, goal.target.as_deref()).unwrap_or_else(|| {
        act("look".to_string(), format!("I have not found a {} yet; looking around.", goal.object))
    })])
}

/// Open the closed receptacle here, or go to the next one not yet seen
/// (receptacles of the target type last: the object is unlikely there).
fn explore(belief: &Belief, target_kind: Option<&str>) -> Option<Action> {
    if let Some(here) = &belief.location {
        if belief.closed.iter().any(|r| r == here) {
            return Some(act(format!("open {here}"), format!("Opening the {here} to look inside.")));
        }
    }
    let unseen = |r: &&String| !belief.visited(r) && belief.location.as_ref() != Some(*r);
    let next = belief
        .receptacles
        .iter()
        .filter(unseen)
        .find(|r| Some(kind_of(r)) != target_kind)
        .or_else(|| belief.receptacles.iter().find(unseen))?;
    Some(act(format!("go to {next}"), format!("Searching the {next}.")))
}

/// A plausible but inadmissible command (the `invalid_rate` flaw).
fn invalid_variant(choice: &Action, goal: &HouseGoal, rolls: &Rolls) -> Option<Action> {
    let command = choice.args.get("command")?.as_str()?;
    let wrong = if let Some(receptacle) = command.strip_prefix("open ") {
        format!("take {} 1 from {receptacle}", goal.object)
    } else {
        // Bump the last number: `take apple 1 from ...` -> `take apple 2 ...`.
        let mut tokens: Vec<String> = command.split(' ').map(str::to_string).collect();
        let numbered: Vec<usize> = (0..tokens.len()).filter(|&i| tokens[i].parse::<u32>().is_ok()).collect();
        let &at = numbered.get(rolls.below("invalid-which", numbered.len().max(1)))?;
        let number: u32 = tokens[at].parse().ok()?;
        tokens[at] = (number + 1 + rolls.below("invalid-by", 3) as u32).to_string();
        tokens.join(" ")
    };
    Some(act(wrong, choice.thought.clone()))
}

/// No goal in view: do something plausible-looking and pointless.
fn wander(ctx: &Ctx, belief: &Belief) -> Vec<Action> {
    let mut choices = Vec::new();
    if !belief.receptacles.is_empty() && ctx.rolls.chance("wander-go", 0.7) {
        let next = &belief.receptacles[ctx.rolls.below("wander-where", belief.receptacles.len())];
        choices.push(act(format!("go to {next}"), format!("Let me check the {next}.")));
    }
    choices.push(act("look".to_string(), "Let me look around."));
    choices.push(act("inventory".to_string(), "What am I carrying?"));
    choices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_parse() {
        let parse = |g: &str| HouseGoal::parse(g).unwrap();
        assert_eq!(parse("put a clean mug on shelf.").kind, Kind::Clean);
        assert_eq!(parse("put a clean mug on shelf.").target.as_deref(), Some("shelf"));
        assert_eq!(parse("put a mug in cabinet.").object, "mug");
        let two = parse("find two pen and put them in drawer.");
        assert_eq!((two.kind, two.object.as_str(), two.target.as_deref()), (Kind::PickTwo, "pen", Some("drawer")));
        let look = parse("look at book under the desklamp.");
        assert_eq!((look.kind, look.object.as_str()), (Kind::Examine, "book"));
        assert_eq!(parse("put a hot egg in fridge.").kind, Kind::Heat);
        assert!(HouseGoal::parse("dance").is_none());
    }

    #[test]
    fn lists_parse() {
        assert_eq!(listed("a apple 1, a mug 2, and a cup 10"), vec!["apple 1", "mug 2", "cup 10"]);
        assert_eq!(listed("nothing"), Vec::<String>::new());
        assert_eq!(listed("a desklamp 1"), vec!["desklamp 1"]);
    }
}
