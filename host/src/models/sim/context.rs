//! What the simulated model can see, and its dice.
//!
//! The model sees the system prompt plus the newest messages that fit its
//! window (approximate tokens = chars / 4); everything older is gone, exactly
//! as if it had never been said. All of the model's "memory" is rebuilt from
//! that view on every call, so a processor that keeps the right things in
//! view (a pinned goal, a compacted history, trimmed observations) changes
//! what the model does.
//!
//! **History digests are memory.** A user message whose first line starts
//! `[compacted ` (history-compactor's digest, a shared text convention) is
//! not read as one block of text: each of its lines
//! `- <tool> <JSON arguments> -> <result>` is read as an earlier step, the
//! call with its result, in the place of the steps it stands for. That is
//! what a model with a good memory would make of such a summary. A result
//! is read as the text it stands for: ` | ` separates its lines, and one
//! that ends in `…` was cut, so its last, partial line or sentence is
//! treated as unread (a half list of a shelf's contents is not a search of
//! the shelf). A line whose call cannot be read still gives its result.
//!
//! Randomness comes from [`Rolls`]: blake3 over the profile, the request seed
//! and the visible context, then one hash per named decision. The same
//! request always gets the same reply.

use crate::chat::{Message, Role, ToolCall};
use crate::models::ModelRequest;

/// Approximate tokens of a text: chars / 4, rounded up.
pub(crate) fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// Approximate tokens of one message, its tool calls included.
pub(crate) fn message_tokens(message: &Message) -> u64 {
    let calls: usize = message.calls.iter().map(|c| c.name.len() + c.arguments.len() + 8).sum();
    tokens(message.content.len() + calls) + 4
}

/// The part of the request inside the window: the newest messages whose
/// tokens, with the system prompt's, fit. The newest message is always kept.
pub(crate) fn visible(request: &ModelRequest, window: u32) -> &[Message] {
    let mut budget = (window as u64).saturating_sub(tokens(request.system.len()));
    let mut start = request.messages.len();
    while start > 0 {
        let cost = message_tokens(&request.messages[start - 1]);
        if cost > budget && start < request.messages.len() {
            break;
        }
        budget = budget.saturating_sub(cost);
        start -= 1;
    }
    &request.messages[start..]
}

/// One tool call the model can see and, if visible, what it returned.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub call: Option<ToolCall>,
    pub result: Option<String>,
}

/// A piece of text the model reads, in order: user messages and tool results.
#[derive(Clone, Debug)]
pub(crate) enum Seen {
    User(String),
    Result(String),
}

/// What the visible context says, parsed once per call.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reading {
    /// The newest `Goal (pinned):` or `Goal:` line, system prompt included.
    pub goal: Option<String>,
    /// Visible tool calls with their results, oldest first.
    pub steps: Vec<Step>,
    /// User messages and tool results, oldest first.
    pub seen: Vec<Seen>,
    /// Advice about repeating, shown after the model's last call.
    pub loop_advice: bool,
    /// The newest visible step-budget advice: steps it said were left, and
    /// how many calls the model has made since.
    pub budget: Option<(u32, u32)>,
    /// The model's last call was blocked (`[blocked by ...]` as its result).
    pub call_blocked: bool,
    /// The model's last reply was blocked and replaced by a user message.
    pub reply_blocked: bool,
    /// Steps recalled from history digests rather than seen as messages.
    pub recalled: usize,
}

impl Reading {
    pub(crate) fn new(system: &str, messages: &[Message]) -> Reading {
        let mut reading = Reading { goal: find_goal(system), ..Reading::default() };
        let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
        for (index, message) in messages.iter().enumerate() {
            let after_last_reply = last_assistant.is_none_or(|last| index > last);
            match message.role {
                Role::System => {
                    if let Some(goal) = find_goal(&message.content) {
                        reading.goal = Some(goal);
                    }
                }
                Role::User => {
                    let text = message.content.trim_start();
                    if let Some(recalled) = digest_steps(text) {
                        reading.recalled += recalled.len();
                        for step in recalled {
                            if let Some(result) = &step.result {
                                reading.seen.push(Seen::Result(result.clone()));
                            }
                            reading.steps.push(step);
                        }
                        continue;
                    }
                    if let Some(goal) = find_goal(text) {
                        reading.goal = Some(goal);
                    }
                    if text.starts_with("[advice from") {
                        let lower = text.to_ascii_lowercase();
                        if lower.contains("repeat") && after_last_reply {
                            reading.loop_advice = true;
                        }
                        if let Some(left) = steps_left(&lower) {
                            reading.budget = Some((left, 0));
                        }
                    }
                    if text.starts_with("[blocked by") && after_last_reply {
                        reading.reply_blocked = true;
                    }
                    reading.seen.push(Seen::User(message.content.clone()));
                }
                Role::Assistant => {
                    for call in &message.calls {
                        reading.steps.push(Step { call: Some(call.clone()), result: None });
                    }
                    if let Some((_, since)) = reading.budget.as_mut() {
                        *since += 1;
                    }
                }
                Role::Tool => {
                    let pending = message.call_id.as_ref().and_then(|id| {
                        reading
                            .steps
                            .iter_mut()
                            .rev()
                            .find(|s| s.result.is_none() && s.call.as_ref().is_some_and(|c| &c.id == id))
                    });
                    match pending {
                        Some(step) => step.result = Some(message.content.clone()),
                        None => reading.steps.push(Step { call: None, result: Some(message.content.clone()) }),
                    }
                    reading.seen.push(Seen::Result(message.content.clone()));
                }
            }
        }
        reading.call_blocked = reading
            .steps
            .last()
            .and_then(|s| s.result.as_deref())
            .is_some_and(|r| r.trim_start().starts_with("[blocked by"));
        reading
    }

    /// The visible calls, oldest first.
    pub(crate) fn calls(&self) -> impl DoubleEndedIterator<Item = &ToolCall> {
        self.steps.iter().filter_map(|s| s.call.as_ref())
    }

    pub(crate) fn last_step(&self) -> Option<&Step> {
        self.steps.last()
    }

    /// Steps left by the newest budget advice, counting calls made since.
    pub(crate) fn steps_left(&self) -> Option<u32> {
        self.budget.map(|(left, since)| left.saturating_sub(since))
    }
}

/// The goal in `text`: a `Goal (pinned):` or `Goal:` line (the last one).
pub(crate) fn find_goal(text: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let line = line.trim();
        line.strip_prefix("Goal (pinned):")
            .or_else(|| line.strip_prefix("Goal:"))
            .map(|goal| goal.trim().to_string())
            .filter(|goal| !goal.is_empty())
    })
}

/// The steps a history digest recalls, oldest first, or `None` when `text`
/// is no digest. A bare `[compacted N earlier messages]` recalls nothing.
pub(crate) fn digest_steps(text: &str) -> Option<Vec<Step>> {
    let (header, body) = text.split_once('\n').unwrap_or((text, ""));
    if !header.starts_with("[compacted ") {
        return None;
    }
    Some(body.lines().filter_map(digest_step).collect())
}

/// One `- <tool> <JSON arguments> -> <result>` line; `(no result)` is none.
fn digest_step(line: &str) -> Option<Step> {
    const ARROW: &str = " -> ";
    let rest = line.trim_end().strip_prefix("- ")?;
    let call = rest.split_once(' ').and_then(|(name, after)| {
        let is_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !is_name {
            return None;
        }
        // The arguments are one JSON value when they parse (so an arrow
        // inside a string is no separator), else the text before the arrow.
        let mut values = serde_json::Deserializer::from_str(after).into_iter::<serde_json::Value>();
        let arguments = match values.next() {
            Some(Ok(_)) if after[values.byte_offset()..].starts_with(ARROW) => &after[..values.byte_offset()],
            _ => after.split_once(ARROW)?.0,
        };
        let call = ToolCall { id: String::new(), name: name.to_string(), arguments: arguments.to_string() };
        Some((call, &after[arguments.len() + ARROW.len()..]))
    });
    let (call, result) = match call {
        Some((call, result)) => (Some(call), result),
        None => (None, rest.split_once("->")?.1.trim_start()),
    };
    let result = (result != "(no result)").then(|| recalled_text(result));
    Some(Step { call, result })
}

/// A digest result as the text it stands for: ` | ` back to line breaks,
/// and a cut (a final `…`) back to the last whole line or sentence.
fn recalled_text(flat: &str) -> String {
    let text = flat.replace(" | ", "\n");
    let Some(cut) = text.strip_suffix('…') else { return text };
    let line_end = cut.rfind('\n');
    let sentence_end = cut.rfind(". ").map(|at| at + 1);
    let keep = line_end.max(sentence_end).unwrap_or(0);
    cut[..keep].trim_end().to_string()
}

/// `3 steps left` -> 3.
fn steps_left(lower: &str) -> Option<u32> {
    let at = lower.find("steps left").or_else(|| lower.find("step left"))?;
    lower[..at].split(|c: char| !c.is_ascii_digit()).rev().find(|w| !w.is_empty())?.parse().ok()
}

/// Two calls are the same if their names match and their arguments mean the
/// same JSON (or, when unparsable, are the same text).
pub(crate) fn same_call(a: &ToolCall, b: &ToolCall) -> bool {
    if a.name != b.name {
        return false;
    }
    match (
        serde_json::from_str::<serde_json::Value>(&a.arguments),
        serde_json::from_str::<serde_json::Value>(&b.arguments),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.arguments.trim() == b.arguments.trim(),
    }
}

/// Deterministic dice: one independent draw per decision name.
#[derive(Clone, Debug)]
pub(crate) struct Rolls {
    key: [u8; 32],
}

impl Rolls {
    /// Dice for one call: keyed by the profile, the seed and what is visible.
    pub(crate) fn for_call(profile: &str, seed: u64, system: &str, messages: &[Message]) -> Rolls {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kiln-sim-call\0");
        hasher.update(profile.as_bytes());
        hasher.update(&seed.to_le_bytes());
        hash_text(&mut hasher, system);
        for message in messages {
            hash_text(&mut hasher, &format!("{:?}", message.role));
            hash_text(&mut hasher, &message.content);
            for call in &message.calls {
                hash_text(&mut hasher, &call.name);
                hash_text(&mut hasher, &call.arguments);
            }
        }
        Rolls { key: *hasher.finalize().as_bytes() }
    }

    /// Dice for a whole episode: keyed by the goal and the seed only, for
    /// traits that last a task (a careless shopper stays careless).
    pub(crate) fn for_episode(profile: &str, seed: u64, goal: &str) -> Rolls {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kiln-sim-episode\0");
        hasher.update(profile.as_bytes());
        hasher.update(&seed.to_le_bytes());
        hash_text(&mut hasher, goal);
        Rolls { key: *hasher.finalize().as_bytes() }
    }

    fn draw(&self, tag: &str) -> u64 {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(tag.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        u64::from_le_bytes(bytes)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&self, tag: &str) -> f64 {
        (self.draw(tag) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (never for 0, always for 1).
    pub(crate) fn chance(&self, tag: &str, p: f64) -> bool {
        self.unit(tag) < p
    }

    /// Uniform in [0, n); `n` must be positive.
    pub(crate) fn below(&self, tag: &str, n: usize) -> usize {
        (self.draw(tag) % n.max(1) as u64) as usize
    }
}

fn hash_text(hasher: &mut blake3::Hasher, text: &str) {
    hasher.update(&(text.len() as u64).to_le_bytes());
    hasher.update(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(messages: Vec<Message>) -> ModelRequest {
        ModelRequest { system: "sys".into(), messages, ..ModelRequest::default() }
    }

    #[test]
    fn the_window_drops_the_oldest_messages_but_keeps_the_newest() {
        let messages: Vec<Message> = (0..10).map(|i| Message::user(format!("{i}{}", "x".repeat(39)))).collect();
        let req = request(messages);
        // Each message costs 10 + 4 tokens; the system prompt 1.
        assert_eq!(visible(&req, 1 + 14 * 3).len(), 3);
        assert_eq!(visible(&req, 1_000_000).len(), 10);
        assert_eq!(visible(&req, 1).len(), 1);
    }

    #[test]
    fn the_newest_goal_line_wins_and_pins_count() {
        assert_eq!(find_goal("Goal: buy a hat\nobs"), Some("buy a hat".into()));
        let reading = Reading::new("", &[Message::user("Goal: a\nx"), Message::user("Goal (pinned): b")]);
        assert_eq!(reading.goal.as_deref(), Some("b"));
        assert_eq!(Reading::new("Goal: in system", &[]).goal.as_deref(), Some("in system"));
    }

    #[test]
    fn feedback_after_the_last_reply_is_noticed() {
        let call = ToolCall { id: "c1".into(), name: "look".into(), arguments: "{}".into() };
        let messages = vec![
            Message::assistant("", vec![call.clone()]),
            Message::tool("c1", "[blocked by loop-guard] stop"),
            Message::user("[advice from loop-guard] You repeated look 3 times"),
            Message::user("[advice from step-budget] 3 steps left: finish now"),
        ];
        let reading = Reading::new("", &messages);
        assert!(reading.call_blocked && reading.loop_advice && !reading.reply_blocked);
        assert_eq!(reading.steps_left(), Some(3));
        let mut later = messages.clone();
        later.push(Message::assistant("", vec![call]));
        let reading = Reading::new("", &later);
        assert!(!reading.loop_advice);
        assert_eq!(reading.steps_left(), Some(2));
    }

    #[test]
    fn digest_lines_read_as_earlier_steps() {
        let digest = "[compacted 9 earlier messages; earlier actions and what they showed:]\n\
            - act {\"command\":\"go to shelf 1\"} -> You arrive at shelf 1. On the shelf 1, you see a mug 1.\n\
            - search {\"query\":\"a -> b\"} -> Search results for \"a\" (page 1 of 2, 9 results): | [P0001] Mug $3.00 | [P0002] Cu…\n\
            - act {\"command\":\"go to drawer 1\"} -> You arrive at drawer 1. On the drawer 1, you see a pen 1, a…\n\
            - buy {} -> (no result)\n\
            - look {'broken' -> Nothing happens.\n\
            - (call not shown) -> You are in the middle of a room.";
        let call = ToolCall { id: "c1".into(), name: "act".into(), arguments: "{\"command\":\"look\"}".into() };
        let messages = vec![
            Message::user("Goal: x"),
            Message::user(digest),
            Message::assistant("", vec![call]),
            Message::tool("c1", "ok"),
        ];
        let reading = Reading::new("", &messages);
        assert_eq!(reading.recalled, 6);
        assert_eq!(reading.steps.len(), 7);
        let step = |i: usize| &reading.steps[i];
        let act = step(0).call.as_ref().unwrap();
        assert_eq!((act.name.as_str(), act.arguments.as_str()), ("act", "{\"command\":\"go to shelf 1\"}"));
        assert_eq!(step(0).result.as_deref(), Some("You arrive at shelf 1. On the shelf 1, you see a mug 1."));
        assert_eq!(step(1).call.as_ref().unwrap().arguments, "{\"query\":\"a -> b\"}");
        assert_eq!(
            step(1).result.as_deref(),
            Some("Search results for \"a\" (page 1 of 2, 9 results):\n[P0001] Mug $3.00"),
            "lines come back and the cut line is dropped"
        );
        assert_eq!(step(2).result.as_deref(), Some("You arrive at drawer 1."), "a cut sentence is unread");
        assert_eq!((step(3).call.as_ref().unwrap().name.as_str(), step(3).result.as_deref()), ("buy", None));
        assert_eq!(step(4).call.as_ref().unwrap().arguments, "{'broken'");
        assert!(step(5).call.is_none());
        assert_eq!(step(5).result.as_deref(), Some("You are in the middle of a room."));
        assert_eq!(step(6).result.as_deref(), Some("ok"), "the live step still gets its result");
        assert!(matches!(&reading.seen[1], Seen::Result(r) if r.starts_with("You arrive at shelf 1")));
        assert!(!reading.seen.iter().any(|s| matches!(s, Seen::User(t) if t.contains("[compacted"))));
        assert!(digest_steps("[compacted 4 earlier messages]").unwrap().is_empty());
        assert!(digest_steps("[advice from x] - a {} -> b").is_none());
    }

    #[test]
    fn dice_are_deterministic_and_depend_on_the_context() {
        let a = Rolls::for_call("sim:weak", 1, "s", &[Message::user("x")]);
        let b = Rolls::for_call("sim:weak", 1, "s", &[Message::user("x")]);
        let c = Rolls::for_call("sim:weak", 2, "s", &[Message::user("x")]);
        assert_eq!(a.unit("t"), b.unit("t"));
        assert_ne!(a.unit("t"), c.unit("t"));
        assert_ne!(a.unit("t"), a.unit("u"));
        assert!(!a.chance("t", 0.0) && a.chance("t", 1.0));
    }

    #[test]
    fn same_call_compares_json_meaning() {
        let call = |args: &str| ToolCall { id: "x".into(), name: "search".into(), arguments: args.into() };
        assert!(same_call(&call("{\"a\": 1, \"b\": 2}"), &call("{\"b\":2,\"a\":1}")));
        assert!(!same_call(&call("{\"a\": 1}"), &call("{\"a\": 2}")));
        assert!(same_call(&call("{'a'"), &call("{'a'")));
    }
}
