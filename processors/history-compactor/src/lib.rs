//! `history-compactor`: keeps a long conversation within budget by
//! *condensing* old steps, not forgetting them.
//!
//! At step-start, when the conversation is over budget, it keeps the first
//! user message (the goal line and the first observation) and the last
//! `keep_recent` messages, and replaces everything between them with one
//! user message, a **digest** of what happened there:
//!
//! ```text
//! [compacted 16 earlier messages; earlier actions and what they showed:]
//! - act {"command":"go to shelf 1"} -> You arrive at shelf 1. On the shelf 1, you see a mug 1.
//! - act {"command":"open drawer 2"} -> You open the drawer 2. The drawer 2 is open. In it, you see…
//! ```
//!
//! One line per dropped tool call, in call order: the tool's name, its
//! arguments and its result. Newlines inside arguments and results become
//! ` | `, and each is cut to `observation_chars` characters, a cut marked by
//! a final `…`. Advice, pinned goals and blocked replies in the dropped
//! range are not carried over: they were about the moment, and the
//! processors that wrote them write them again when they still apply.
//!
//! **Budget.** It compacts only when the conversation is over *both*
//! budgets: more than `max_messages` messages and more than `max_chars`
//! characters (message text plus tool-call names and arguments), so a short
//! context is never compacted however many small steps it holds. With
//! `max_chars` 0 the message count alone decides.
//!
//! **Merging.** A digest left by an earlier compaction that falls in the
//! dropped range is merged, not nested: its lines come first and its count
//! is folded into the new one. When the digest grows past `digest_chars`,
//! its oldest lines are left out and the header says how many
//! (`..., 3 oldest left out:]`).
//!
//! Steps are dropped whole: the kept tail never starts with a tool message,
//! because the cut moves back to the assistant message that made the call,
//! so no tool result ever loses its assistant call. Edits are one `replace`
//! and then `remove`s from the back, so indexes stay valid.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `max_messages` | 24 | compact only when the conversation has more messages than this |
//! | `max_chars` | 12000 | ... and more characters than this (0: count messages only) |
//! | `keep_recent` | 8 | recent messages always kept (more if a step straddles the cut) |
//! | `observation_chars` | 160 | longest arguments or result kept in a digest line (at least 20) |
//! | `digest_chars` | 4000 | longest digest; oldest lines go first (at least 200) |
//!
//! Cost: one `len` per step while under the message budget, then one `get`
//! per message until the character budget is passed; when compacting, one
//! `role_of` per message it walks over and a `get` of each dropped message.

use kiln_guest::{config, Conversation, Hook, Info, Level, Message, Processor, Role, Verdict};
use serde::Deserialize;

/// The processor's name, as in its [`Info`].
pub const NAME: &str = "history-compactor";

/// The processor's config; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Compact only when the conversation has more messages than this.
    pub max_messages: u32,
    /// ... and more characters than this; 0 leaves the count alone to decide.
    pub max_chars: u32,
    /// Recent messages always kept.
    pub keep_recent: u32,
    /// Longest arguments or result text kept in one digest line.
    pub observation_chars: u32,
    /// Longest digest message; its oldest lines are left out beyond it.
    pub digest_chars: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_messages: 24,
            max_chars: 12_000,
            keep_recent: 8,
            observation_chars: 160,
            digest_chars: 4_000,
        }
    }
}

/// Marks a cut in a digest line.
pub const ELLIPSIS: char = '…';

/// What stands for newlines in a digest line.
pub const LINE_BREAK: &str = " | ";

/// The message that stands for compacted history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    /// How many original messages it stands for.
    pub represented: u32,
    /// How many of their action lines were left out to fit the cap.
    pub omitted: u32,
    /// One `- <tool> <arguments> -> <result>` line per action, oldest first.
    pub lines: Vec<String>,
}

impl Digest {
    /// The message text.
    pub fn render(&self) -> String {
        let mut text = format!("[compacted {} earlier messages", self.represented);
        if self.lines.is_empty() && self.omitted == 0 {
            text.push(']');
            return text;
        }
        text.push_str("; earlier actions and what they showed");
        if self.omitted > 0 {
            text.push_str(&format!(", {} oldest left out", self.omitted));
        }
        text.push_str(":]");
        for line in &self.lines {
            text.push('\n');
            text.push_str(line);
        }
        text
    }

    /// The digest in `text`, if `text` is one (as [`Digest::render`] writes it).
    pub fn parse(text: &str) -> Option<Digest> {
        let (header, body) = text.split_once('\n').unwrap_or((text, ""));
        let rest = header.strip_prefix("[compacted ")?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let represented = rest[..digits].parse().ok()?;
        let rest = rest[digits..].strip_prefix(" earlier messages")?;
        if rest == "]" {
            return body.is_empty().then(|| Digest {
                represented,
                ..Digest::default()
            });
        }
        let rest = rest
            .strip_prefix("; earlier actions and what they showed")?
            .strip_suffix(":]")?;
        let omitted = match rest.strip_prefix(", ") {
            Some(count) => count.strip_suffix(" oldest left out")?.parse().ok()?,
            None if rest.is_empty() => 0,
            None => return None,
        };
        let lines = body.lines().map(str::to_string).collect();
        Some(Digest {
            represented,
            omitted,
            lines,
        })
    }

    /// Leave out the oldest lines until the rendered text has at most
    /// `max_chars` characters (or no line is left).
    fn fit(&mut self, max_chars: usize) {
        let mut total = self.render().chars().count();
        let mut drop = 0;
        while total > max_chars && drop < self.lines.len() {
            total -= self.lines[drop].chars().count() + 1;
            drop += 1;
        }
        if drop > 0 {
            self.lines.drain(..drop);
            // The header may have grown a digit or a clause; re-check.
            self.omitted += drop as u32;
            if self.render().chars().count() > max_chars && !self.lines.is_empty() {
                self.fit(max_chars);
            }
        }
    }
}

/// One line of text: newlines become [`LINE_BREAK`], blank lines and outer
/// spaces go, and beyond `max_chars` characters it is cut and ends in
/// [`ELLIPSIS`]. Never splits a character.
pub fn flatten(text: &str, max_chars: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(LINE_BREAK);
    if joined.chars().count() <= max_chars {
        return joined;
    }
    let mut cut: String = joined.chars().take(max_chars.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push(ELLIPSIS);
    cut
}

/// The digest line for a call and its result (`None`: no result seen).
pub fn action_line(name: &str, arguments: &str, result: Option<&str>, max_chars: usize) -> String {
    let result = match result {
        Some(text) => flatten(text, max_chars),
        None => "(no result)".to_string(),
    };
    format!("- {name} {} -> {result}", flatten(arguments, max_chars))
}

/// Characters a message puts in the context: its text, and its calls' names
/// and arguments.
fn message_chars(message: &Message) -> usize {
    message.content.chars().count()
        + message
            .calls
            .iter()
            .map(|call| call.name.chars().count() + call.arguments.chars().count())
            .sum::<usize>()
}

/// The component.
#[derive(Default)]
pub struct HistoryCompactor {
    config: Config,
}

impl HistoryCompactor {
    /// Whether `conv` is over both budgets.
    fn over_budget(&self, conv: &Conversation<'_>) -> bool {
        let len = conv.len();
        if len <= self.config.max_messages {
            return false;
        }
        let max_chars = self.config.max_chars as usize;
        if max_chars == 0 {
            return true;
        }
        let mut chars = 0;
        for index in 0..len {
            chars += conv.get(index).map_or(0, |m| message_chars(&m));
            if chars > max_chars {
                return true;
            }
        }
        false
    }

    /// The digest of the messages `range` of `conv`, earlier digests merged.
    fn digest(&self, conv: &Conversation<'_>, range: std::ops::Range<u32>) -> Digest {
        let max_chars = self.config.observation_chars as usize;
        let mut digest = Digest::default();
        // Calls in order, each with its result once seen.
        let mut actions: Vec<(kiln_guest::Call, Option<String>)> = Vec::new();
        let flush = |actions: &mut Vec<(kiln_guest::Call, Option<String>)>, digest: &mut Digest| {
            for (call, result) in actions.drain(..) {
                let line = action_line(&call.name, &call.arguments, result.as_deref(), max_chars);
                digest.lines.push(line);
            }
        };
        for index in range {
            let Some(message) = conv.get(index) else {
                continue;
            };
            match message.role {
                Role::User => match Digest::parse(&message.content) {
                    Some(earlier) => {
                        flush(&mut actions, &mut digest);
                        digest.represented += earlier.represented;
                        digest.omitted += earlier.omitted;
                        digest.lines.extend(earlier.lines);
                    }
                    None => digest.represented += 1,
                },
                Role::Assistant => {
                    digest.represented += 1;
                    actions.extend(message.calls.into_iter().map(|call| (call, None)));
                }
                Role::Tool => {
                    digest.represented += 1;
                    let id = message.call_id.as_deref().unwrap_or_default();
                    let pending = actions
                        .iter_mut()
                        .find(|(call, result)| result.is_none() && call.id == id);
                    match pending {
                        Some((_, result)) => *result = Some(message.content),
                        None => {
                            flush(&mut actions, &mut digest);
                            let result = flatten(&message.content, max_chars);
                            digest.lines.push(format!("- (call not shown) -> {result}"));
                        }
                    }
                }
                Role::System => digest.represented += 1,
            }
        }
        flush(&mut actions, &mut digest);
        digest.fit(self.config.digest_chars as usize);
        digest
    }

    /// Compacts `conv` if it is over budget; returns the digest that now
    /// stands for the dropped messages, or `None` when nothing changed.
    pub fn compact(&self, conv: &Conversation<'_>) -> Option<Digest> {
        if !self.over_budget(conv) {
            return None;
        }
        let len = conv.len();
        let first_user = (0..len).find(|&i| conv.role_of(i) == Some(Role::User))?;
        let drop_start = first_user + 1;
        let mut cut = len.saturating_sub(self.config.keep_recent).max(drop_start);
        while cut > drop_start && conv.role_of(cut) == Some(Role::Tool) {
            cut -= 1;
        }
        if cut - drop_start < 2 {
            return None; // Replacing one message by a digest gains nothing.
        }
        let digest = self.digest(conv, drop_start..cut);
        let edits = conv
            .replace(drop_start, &Message::user(digest.render()))
            .and_then(|()| {
                (drop_start + 1..cut)
                    .rev()
                    .try_for_each(|index| conv.remove(index))
            });
        if let Err(error) = edits {
            kiln_guest::log(
                Level::Error,
                &format!("compaction stopped halfway: {error}"),
            );
        }
        Some(digest)
    }
}

impl Processor for HistoryCompactor {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION"))
            .hooks([Hook::StepStart])
            .group("compactor")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        let config: Config = config::parse(NAME, text)?;
        let invalid = |why: String| Err(format!("config for `{NAME}` is invalid: {why}"));
        if config.keep_recent == 0 {
            return invalid("`keep_recent` must be at least 1".into());
        }
        if config.max_messages < config.keep_recent + 3 {
            return invalid(format!(
                "`max_messages` ({}) must be at least `keep_recent` + 3 ({}), \
                 room for the first user message, a digest and the recent messages",
                config.max_messages,
                config.keep_recent + 3
            ));
        }
        if config.observation_chars < 20 {
            return invalid(format!(
                "`observation_chars` ({}) must be at least 20, or digest lines say nothing",
                config.observation_chars
            ));
        }
        if config.digest_chars < 200 {
            return invalid(format!(
                "`digest_chars` ({}) must be at least 200, room for a header and a few lines",
                config.digest_chars
            ));
        }
        self.config = config;
        Ok(())
    }

    fn on_step_start(&mut self, conv: &Conversation<'_>) -> Verdict {
        if let Some(digest) = self.compact(conv) {
            kiln_guest::log(
                Level::Info,
                &format!(
                    "compacted the history; the digest stands for {} messages in {} lines ({} left out)",
                    digest.represented,
                    digest.lines.len(),
                    digest.omitted
                ),
            );
        }
        Verdict::Pass
    }
}

kiln_guest::export!(HistoryCompactor);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_guest::testing::TestHost;
    use kiln_guest::Call;

    /// A task of `steps` steps; every third step makes two tool calls.
    fn task(steps: usize) -> TestHost {
        let mut host = TestHost::new();
        host.user("Goal: find it");
        for step in 0..steps {
            let ids: Vec<String> = (0..1 + usize::from(step % 3 == 2))
                .map(|n| format!("s{step}c{n}"))
                .collect();
            host.assistant_calls(
                &format!("step {step}"),
                ids.iter().map(|id| Call::new(id, "look", "{}")).collect(),
            );
            for id in &ids {
                host.tool(id, &format!("result {id}"));
            }
        }
        host
    }

    /// A compactor that counts messages only (`max_chars` 0).
    fn configured(max_messages: u32, keep_recent: u32) -> HistoryCompactor {
        with_config(&format!(
            r#"{{"max_messages": {max_messages}, "keep_recent": {keep_recent}, "max_chars": 0}}"#
        ))
    }

    fn with_config(config: &str) -> HistoryCompactor {
        let mut compactor = HistoryCompactor::default();
        TestHost::new().configure(&mut compactor, config).unwrap();
        compactor
    }

    /// Every tool message answers a call of an assistant message before it.
    fn assert_tool_messages_have_their_calls(messages: &[Message]) {
        for (index, message) in messages.iter().enumerate() {
            if message.role == Role::Tool {
                let id = message.call_id.as_deref().unwrap();
                assert!(
                    messages[..index]
                        .iter()
                        .any(|m| m.calls.iter().any(|call| call.id == id)),
                    "tool message {index} ({id}) lost its assistant call: {messages:#?}"
                );
            }
        }
    }

    fn digests(messages: &[Message]) -> Vec<Digest> {
        messages
            .iter()
            .filter_map(|m| Digest::parse(&m.content))
            .collect()
    }

    #[test]
    fn under_budget_nothing_changes() {
        let mut host = task(5);
        let before = host.messages();
        host.step_start(&mut HistoryCompactor::default());
        assert_eq!(host.messages(), before);
    }

    #[test]
    fn many_short_messages_are_not_compacted_by_default() {
        // 40 steps of tiny messages: far over 24 messages, far under 12000 chars.
        let mut host = task(40);
        let before = host.messages();
        assert!(before.len() > 24);
        host.step_start(&mut HistoryCompactor::default());
        assert_eq!(host.messages(), before);
    }

    #[test]
    fn a_long_context_is_compacted_by_default() {
        let mut host = TestHost::new();
        host.user("Goal: find it");
        let page = "x".repeat(700);
        for step in 0..20 {
            let id = format!("c{step}");
            host.assistant_calls(
                "",
                vec![Call::new(&id, "view", format!(r#"{{"id":"P{step}"}}"#))],
            )
            .tool(&id, &page);
        }
        host.step_start(&mut HistoryCompactor::default());
        let after = host.messages();
        assert_eq!(after.len(), 1 + 1 + 8);
        let digest = Digest::parse(&after[1].content).unwrap();
        assert_eq!(digest.represented, 32);
        assert_eq!(digest.lines.len(), 16);
        assert!(
            digest.lines[0].starts_with(r#"- view {"id":"P0"} -> xxx"#),
            "{}",
            digest.lines[0]
        );
        assert!(digest.lines[0].ends_with(ELLIPSIS));
        assert!(after[1].content.chars().count() <= 4000);
    }

    #[test]
    fn keeps_the_goal_and_the_recent_steps_and_digests_the_rest() {
        let mut host = task(12);
        let before = host.messages();
        let mut compactor = configured(10, 4);
        host.step_start(&mut compactor);
        let after = host.messages();
        assert_eq!(after[0], before[0]);
        let kept = after.len() - 2;
        assert!(kept >= 4);
        assert_eq!(&after[2..], &before[before.len() - kept..]);
        assert_eq!(after[2].role, Role::Assistant);
        assert_tool_messages_have_their_calls(&after);

        let digest = Digest::parse(&after[1].content).unwrap();
        assert_eq!(digest.represented as usize, before.len() - after.len() + 1);
        // One line per dropped call, in order, each with its own result.
        let dropped = &before[1..before.len() - kept];
        let calls: Vec<&Call> = dropped.iter().flat_map(|m| &m.calls).collect();
        assert_eq!(digest.lines.len(), calls.len());
        for (line, call) in digest.lines.iter().zip(calls) {
            assert_eq!(line, &format!("- look {{}} -> result {}", call.id));
        }
        assert!(after[1].content.starts_with(
            "[compacted 23 earlier messages; earlier actions and what they showed:]\n- look {} -> result s0c0\n"
        ), "{}", after[1].content);
    }

    #[test]
    fn digest_lines_are_flat_and_bounded() {
        let line = action_line(
            "act",
            r#"{"command":"go to shelf 1"}"#,
            Some("You arrive at shelf 1.\n\nOn the shelf 1, you see a mug 1."),
            160,
        );
        assert_eq!(
            line,
            r#"- act {"command":"go to shelf 1"} -> You arrive at shelf 1. | On the shelf 1, you see a mug 1."#
        );
        let long = flatten(&"é".repeat(500), 160);
        assert_eq!(long.chars().count(), 160);
        assert!(long.ends_with(ELLIPSIS));
        assert_eq!(flatten("short", 160), "short");
        assert_eq!(
            action_line("buy", "{}", None, 160),
            "- buy {} -> (no result)"
        );
    }

    #[test]
    fn never_strands_a_tool_message_for_any_budget() {
        for steps in 0..20 {
            for keep_recent in 1..8 {
                for extra in 3..6 {
                    let mut host = task(steps);
                    let mut compactor = configured(keep_recent + extra, keep_recent);
                    host.step_start(&mut compactor);
                    let after = host.messages();
                    assert_tool_messages_have_their_calls(&after);
                    assert_eq!(after[0].content, "Goal: find it");
                }
            }
        }
    }

    #[test]
    fn a_second_compaction_merges_the_first_digest() {
        let mut host = task(12);
        let total = host.messages().len() as u32;
        let mut compactor = configured(10, 4);
        host.step_start(&mut compactor);
        let first = digests(&host.messages()).remove(0);
        for step in 12..20 {
            let id = format!("late{step}");
            host.assistant_calls("late", vec![Call::new(&id, "look", "{}")])
                .tool(&id, "r");
        }
        host.step_start(&mut compactor);
        let after = host.messages();
        let found = digests(&after);
        assert_eq!(found.len(), 1, "one digest, not nested ones");
        let merged = &found[0];
        assert_eq!(
            merged.represented + after.len() as u32 - 1,
            total + 16,
            "every message is kept or counted"
        );
        assert_eq!(
            &merged.lines[..first.lines.len()],
            &first.lines[..],
            "old lines first"
        );
        assert!(merged.lines.len() > first.lines.len());
        assert!(!merged.lines.iter().any(|l| l.contains("[compacted")));
    }

    #[test]
    fn a_full_digest_leaves_out_its_oldest_lines() {
        let mut compactor = with_config(
            r#"{"max_chars": 0, "max_messages": 10, "keep_recent": 4, "digest_chars": 300}"#,
        );
        let mut host = task(40);
        let before = host.messages();
        host.step_start(&mut compactor);
        let after = host.messages();
        let digest = digests(&after).remove(0);
        let text = digest.render();
        assert!(text.chars().count() <= 300, "{text}");
        assert!(digest.omitted > 0);
        assert!(
            text.contains(&format!(", {} oldest left out:]", digest.omitted)),
            "{text}"
        );
        let calls = |messages: &[Message]| -> Vec<String> {
            messages
                .iter()
                .flat_map(|m| m.calls.iter().map(|c| c.id.clone()))
                .collect()
        };
        let (all, kept) = (calls(&before), calls(&after));
        let dropped = &all[..all.len() - kept.len()];
        assert_eq!(
            digest.lines.len() + digest.omitted as usize,
            dropped.len(),
            "every dropped call is listed or counted"
        );
        let newest = dropped.last().unwrap();
        assert!(
            digest
                .lines
                .last()
                .unwrap()
                .ends_with(&format!("result {newest}")),
            "the newest lines stay"
        );
    }

    #[test]
    fn advice_and_pins_are_not_carried_into_the_digest() {
        let mut host = TestHost::new();
        host.user("Goal: find it");
        for step in 0..8 {
            let id = format!("c{step}");
            host.assistant_calls("", vec![Call::new(&id, "look", "{}")])
                .tool(&id, "seen")
                .user("[advice from loop-guard] You repeated look 2 times")
                .user("Goal (pinned): find it");
        }
        host.step_start(&mut configured(10, 4));
        let after = host.messages();
        let digest = digests(&after).remove(0);
        assert!(
            digest.lines.iter().all(|l| l == "- look {} -> seen"),
            "{digest:?}"
        );
        assert_eq!(digest.represented as usize + after.len() - 1, 33);
    }

    #[test]
    fn config_is_checked() {
        let host = TestHost::new();
        let mut compactor = HistoryCompactor::default();
        assert!(host
            .configure(&mut compactor, r#"{"keep_recent": 0}"#)
            .is_err());
        let error = host
            .configure(&mut compactor, r#"{"max_messages": 5, "keep_recent": 4}"#)
            .unwrap_err();
        assert!(
            error.contains("`max_messages` (5) must be at least `keep_recent` + 3 (7)"),
            "{error}"
        );
        let error = host
            .configure(&mut compactor, r#"{"observation_chars": 5}"#)
            .unwrap_err();
        assert!(
            error.contains("`observation_chars` (5) must be at least 20"),
            "{error}"
        );
        let error = host
            .configure(&mut compactor, r#"{"digest_chars": 50}"#)
            .unwrap_err();
        assert!(
            error.contains("`digest_chars` (50) must be at least 200"),
            "{error}"
        );
        assert!(host
            .configure(&mut compactor, r#"{"max": 5}"#)
            .unwrap_err()
            .contains("unknown field `max`"));
        host.configure(&mut compactor, r#"{"max_messages": 24, "keep_recent": 8}"#)
            .unwrap();
        assert_eq!(
            compactor.config.max_chars, 12_000,
            "unset keys keep their defaults"
        );
    }

    #[test]
    fn digests_round_trip() {
        let plain = Digest {
            represented: 17,
            ..Digest::default()
        };
        assert_eq!(plain.render(), "[compacted 17 earlier messages]");
        assert_eq!(Digest::parse(&plain.render()), Some(plain));
        let full = Digest {
            represented: 30,
            omitted: 4,
            lines: vec!["- act {} -> a".into(), "- look {} -> b | c".into()],
        };
        assert_eq!(Digest::parse(&full.render()), Some(full.clone()));
        let fresh = Digest { omitted: 0, ..full };
        assert_eq!(Digest::parse(&fresh.render()), Some(fresh));
        assert_eq!(Digest::parse("[compacted many earlier messages]"), None);
        assert_eq!(
            Digest::parse("[compacted 3 earlier messages] and more"),
            None
        );
        assert_eq!(Digest::parse("Goal: find it"), None);
    }
}
