//! One `house` episode: the room's state, the command parser, and the
//! observations, in ALFWorld's words.
//!
//! A command is valid only when it is admissible now: the agent must be at a
//! receptacle to open it or take from it, a closed receptacle must be opened
//! first, hands hold one object at a time. Anything else is `Nothing happens.`
//! (an observation with `is_error` set, never an `Err`).

use super::world::{openable, preposition, HouseTask, TaskKind};

/// The desklamp is furniture: it can be used, not taken.
const LAMP: &str = "desklamp";

#[derive(Clone, Debug)]
pub(crate) struct ObjectState {
    pub kind: &'static str,
    pub number: u32,
    /// Receptacle index, or `None` while held.
    pub receptacle: Option<usize>,
    pub clean: bool,
    pub hot: bool,
    pub cool: bool,
}

impl ObjectState {
    pub(crate) fn name(&self) -> String {
        format!("{} {}", self.kind, self.number)
    }
}

/// The state of one task.
pub(crate) struct Episode {
    pub task: HouseTask,
    pub open: Vec<bool>,
    pub objects: Vec<ObjectState>,
    /// Where the agent stands: a receptacle index, or the middle of the room.
    pub location: Option<usize>,
    pub holding: Option<usize>,
    pub lamp_on: bool,
    /// The order receptacles are listed in (varies with the seed).
    pub listing: Vec<usize>,
    pub steps: u32,
    pub max_steps: u32,
    pub solved: bool,
}

/// A parsed command.
enum Command {
    Look,
    Inventory,
    GoTo(usize),
    Open(usize),
    Close(usize),
    Take(usize, usize),
    Put(usize, usize),
    Transform(&'static str, usize, usize),
    Use(usize),
    ExamineObject(usize),
    ExamineReceptacle(usize),
}

impl Episode {
    pub(crate) fn new(task: HouseTask, listing: Vec<usize>, max_steps: u32) -> Episode {
        let open = vec![false; task.receptacles.len()];
        let objects = task
            .objects
            .iter()
            .map(|p| ObjectState {
                kind: p.kind,
                number: p.number,
                receptacle: Some(p.receptacle),
                clean: false,
                hot: false,
                cool: false,
            })
            .collect();
        Episode {
            task,
            open,
            objects,
            location: None,
            holding: None,
            lamp_on: false,
            listing,
            steps: 0,
            max_steps,
            solved: false,
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.solved || self.steps >= self.max_steps
    }

    pub(crate) fn receptacle_name(&self, index: usize) -> String {
        self.task.receptacles[index].name()
    }

    pub(crate) fn is_closed(&self, receptacle: usize) -> bool {
        openable(self.task.receptacles[receptacle].kind) && !self.open[receptacle]
    }

    /// `You are in the middle of a room. Looking quickly around you, you see ...`
    pub(crate) fn room_text(&self) -> String {
        let names: Vec<String> = self.listing.iter().map(|&i| self.receptacle_name(i)).collect();
        format!("Looking quickly around you, you see {}.", a_list(&names))
    }

    /// Execute `command` (one `act` call). Counts as a step.
    pub(crate) fn act(&mut self, command: &str) -> (String, bool) {
        self.steps += 1;
        let Some(parsed) = self.parse(command) else { return ("Nothing happens.".to_string(), true) };
        match self.execute(parsed) {
            Some(text) => {
                self.solved = self.goal_met();
                (text, false)
            }
            None => ("Nothing happens.".to_string(), true),
        }
    }

    /// Listing the admissible commands counts as a step, like any tool call.
    pub(crate) fn admissible_step(&mut self) -> String {
        self.steps += 1;
        format!("Admissible commands:\n{}", self.admissible().join("\n"))
    }

    fn find_receptacle(&self, name: &str) -> Option<usize> {
        self.task.receptacles.iter().position(|r| r.name() == name)
    }

    fn find_object(&self, name: &str) -> Option<usize> {
        self.objects.iter().position(|o| o.name() == name)
    }

    fn parse(&self, command: &str) -> Option<Command> {
        let command = command.trim().trim_end_matches('.').to_ascii_lowercase();
        let command = command.split_whitespace().collect::<Vec<_>>().join(" ");
        let receptacle = |name: &str| self.find_receptacle(name.trim());
        let object = |name: &str| self.find_object(name.trim());
        if command == "look" || command == "look around" {
            return Some(Command::Look);
        }
        if command == "inventory" || command == "inv" {
            return Some(Command::Inventory);
        }
        if let Some(rest) = command.strip_prefix("go to ") {
            return receptacle(rest.trim_start_matches("the ")).map(Command::GoTo);
        }
        if let Some(rest) = command.strip_prefix("open ") {
            return receptacle(rest).map(Command::Open);
        }
        if let Some(rest) = command.strip_prefix("close ") {
            return receptacle(rest).map(Command::Close);
        }
        if let Some(rest) = command.strip_prefix("take ") {
            let (what, from) = rest.split_once(" from ")?;
            return Some(Command::Take(object(what)?, receptacle(from)?));
        }
        if let Some(rest) = command.strip_prefix("put ").or_else(|| command.strip_prefix("move ")) {
            for separator in [" in/on ", " in ", " on ", " to ", " into ", " onto "] {
                if let Some((what, into)) = rest.split_once(separator) {
                    return Some(Command::Put(object(what)?, receptacle(into)?));
                }
            }
            return None;
        }
        for verb in ["clean", "heat", "cool"] {
            if let Some(rest) = command.strip_prefix(verb).and_then(|r| r.strip_prefix(' ')) {
                let (what, with) = rest.split_once(" with ")?;
                let verb = match verb {
                    "clean" => "clean",
                    "heat" => "heat",
                    _ => "cool",
                };
                return Some(Command::Transform(verb, object(what)?, receptacle(with)?));
            }
        }
        if let Some(rest) = command.strip_prefix("use ").or_else(|| command.strip_prefix("toggle ")) {
            return object(rest).map(Command::Use);
        }
        if let Some(rest) = command.strip_prefix("examine ") {
            if let Some(found) = object(rest) {
                return Some(Command::ExamineObject(found));
            }
            return receptacle(rest).map(Command::ExamineReceptacle);
        }
        None
    }

    /// Apply a command; `None` when it is not admissible now.
    fn execute(&mut self, command: Command) -> Option<String> {
        match command {
            Command::Look => Some(match self.location {
                None => format!("You are in the middle of a room. {}", self.room_text()),
                Some(here) => format!("You are facing the {}. {}", self.receptacle_name(here), self.room_text()),
            }),
            Command::Inventory => Some(match self.holding {
                Some(held) => format!("You are carrying: a {}.", self.objects[held].name()),
                None => "You are not carrying anything.".to_string(),
            }),
            Command::GoTo(target) => {
                self.location = Some(target);
                Some(format!("You arrive at {}. {}", self.receptacle_name(target), self.contents_text(target)))
            }
            Command::Open(target) => {
                if self.location != Some(target) || !openable(self.task.receptacles[target].kind) || self.open[target] {
                    return None;
                }
                self.open[target] = true;
                let name = self.receptacle_name(target);
                Some(format!("You open the {name}. {}", self.contents_text(target)))
            }
            Command::Close(target) => {
                if self.location != Some(target) || !self.open[target] {
                    return None;
                }
                self.open[target] = false;
                Some(format!("You close the {}.", self.receptacle_name(target)))
            }
            Command::Take(object, from) => {
                let ok = self.location == Some(from)
                    && !self.is_closed(from)
                    && self.holding.is_none()
                    && self.objects[object].receptacle == Some(from)
                    && self.objects[object].kind != LAMP;
                if !ok {
                    return None;
                }
                self.objects[object].receptacle = None;
                self.holding = Some(object);
                Some(format!(
                    "You pick up the {} from the {}.",
                    self.objects[object].name(),
                    self.receptacle_name(from)
                ))
            }
            Command::Put(object, into) => {
                if self.location != Some(into) || self.is_closed(into) || self.holding != Some(object) {
                    return None;
                }
                self.objects[object].receptacle = Some(into);
                self.holding = None;
                let kind = self.task.receptacles[into].kind;
                Some(format!(
                    "You put the {} {} the {}.",
                    self.objects[object].name(),
                    preposition(kind),
                    self.receptacle_name(into)
                ))
            }
            Command::Transform(verb, object, with) => {
                let appliance = match verb {
                    "clean" => "sinkbasin",
                    "heat" => "microwave",
                    _ => "fridge",
                };
                if self.location != Some(with)
                    || self.holding != Some(object)
                    || self.task.receptacles[with].kind != appliance
                {
                    return None;
                }
                let state = &mut self.objects[object];
                match verb {
                    "clean" => state.clean = true,
                    "heat" => (state.hot, state.cool) = (true, false),
                    _ => (state.cool, state.hot) = (true, false),
                }
                Some(format!("You {verb} the {} using the {}.", state.name(), self.receptacle_name(with)))
            }
            Command::Use(lamp) => {
                if self.objects[lamp].kind != LAMP
                    || self.location.is_none()
                    || self.objects[lamp].receptacle != self.location
                {
                    return None;
                }
                self.lamp_on = true;
                Some(format!("You turn on the {}.", self.objects[lamp].name()))
            }
            Command::ExamineObject(object) => {
                let state = &self.objects[object];
                let visible = self.holding == Some(object)
                    || (state.receptacle.is_some()
                        && state.receptacle == self.location
                        && !self.is_closed(state.receptacle?));
                if !visible {
                    return None;
                }
                let mut adjectives = Vec::new();
                for (flag, word) in [(state.clean, "clean"), (state.hot, "hot"), (state.cool, "cool")] {
                    if flag {
                        adjectives.push(word);
                    }
                }
                Some(if adjectives.is_empty() {
                    format!("There's nothing special about {}.", state.name())
                } else {
                    format!("This is a {} {}.", adjectives.join(" "), state.name())
                })
            }
            Command::ExamineReceptacle(target) => {
                if self.location != Some(target) {
                    return None;
                }
                Some(self.contents_text(target))
            }
        }
    }

    /// `The cabinet 1 is closed.` / `The fridge 1 is open. In it, you see ...` / `On the desk 1, you see ...`
    fn contents_text(&self, receptacle: usize) -> String {
        let name = self.receptacle_name(receptacle);
        if self.is_closed(receptacle) {
            return format!("The {name} is closed.");
        }
        let inside: Vec<String> =
            self.objects.iter().filter(|o| o.receptacle == Some(receptacle)).map(ObjectState::name).collect();
        let seen = if inside.is_empty() { "nothing".to_string() } else { a_list(&inside) };
        if openable(self.task.receptacles[receptacle].kind) {
            format!("The {name} is open. In it, you see {seen}.")
        } else {
            format!("On the {name}, you see {seen}.")
        }
    }

    /// Every command that would do something now, in a fixed order.
    pub(crate) fn admissible(&self) -> Vec<String> {
        let mut commands: Vec<String> = self
            .listing
            .iter()
            .filter(|&&i| Some(i) != self.location)
            .map(|&i| format!("go to {}", self.receptacle_name(i)))
            .collect();
        if let Some(here) = self.location {
            let name = self.receptacle_name(here);
            let kind = self.task.receptacles[here].kind;
            if openable(kind) {
                commands.push(format!("{} {name}", if self.open[here] { "close" } else { "open" }));
            }
            let accessible = !self.is_closed(here);
            for object in self.objects.iter().filter(|o| o.receptacle == Some(here)) {
                if object.kind == LAMP {
                    commands.push(format!("use {}", object.name()));
                } else if accessible && self.holding.is_none() {
                    commands.push(format!("take {} from {name}", object.name()));
                }
            }
            if let Some(held) = self.holding {
                let held_name = self.objects[held].name();
                if accessible {
                    commands.push(format!("put {held_name} in/on {name}"));
                }
                match kind {
                    "sinkbasin" => commands.push(format!("clean {held_name} with {name}")),
                    "microwave" => commands.push(format!("heat {held_name} with {name}")),
                    "fridge" => commands.push(format!("cool {held_name} with {name}")),
                    _ => {}
                }
            }
            commands.push(format!("examine {name}"));
        }
        if let Some(held) = self.holding {
            commands.push(format!("examine {}", self.objects[held].name()));
        }
        commands.push("inventory".to_string());
        commands.push("look".to_string());
        commands
    }

    /// Whether the goal holds in the current state.
    fn goal_met(&self) -> bool {
        let task = &self.task;
        let of_kind = |o: &&ObjectState| o.kind == task.object;
        match task.kind {
            TaskKind::Examine => {
                self.lamp_on
                    && self.holding.is_some_and(|h| self.objects[h].kind == task.object)
                    && self
                        .objects
                        .iter()
                        .any(|o| o.kind == LAMP && o.receptacle.is_some() && o.receptacle == self.location)
            }
            TaskKind::PickTwo => (0..task.receptacles.len()).any(|r| {
                Some(task.receptacles[r].kind) == task.target
                    && self.objects.iter().filter(of_kind).filter(|o| o.receptacle == Some(r)).count() >= 2
            }),
            kind => self.objects.iter().filter(of_kind).any(|o| {
                let placed = o.receptacle.is_some_and(|r| Some(task.receptacles[r].kind) == task.target);
                let prepared = match kind {
                    TaskKind::Clean => o.clean,
                    TaskKind::Heat => o.hot,
                    TaskKind::Cool => o.cool,
                    _ => true,
                };
                placed && prepared
            }),
        }
    }
}

/// `a x 1, a y 2, and a z 3`, as ALFWorld lists things.
fn a_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("a {one}"),
        [rest @ .., last] => {
            let head: Vec<String> = rest.iter().map(|n| format!("a {n}")).collect();
            format!("{}, and a {last}", head.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_like_alfworld() {
        assert_eq!(a_list(&["apple 1".into()]), "a apple 1");
        assert_eq!(a_list(&["apple 1".into(), "mug 2".into(), "cup 1".into()]), "a apple 1, a mug 2, and a cup 1");
    }
}
