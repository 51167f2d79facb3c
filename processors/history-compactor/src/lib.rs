//! `history-compactor`: keeps a long conversation within a message budget.
//!
//! At step-start, when the conversation has more than `max_messages`
//! messages, it keeps the first user message (the goal and first
//! observation) and the last `keep_recent` messages, and replaces everything
//! between them with one user message `[compacted N earlier messages]`
//! (one `replace`, then `remove`s from the back so indexes stay valid).
//!
//! Steps are dropped whole: the kept tail never starts with a tool message,
//! because the cut moves back to the assistant message that made the call.
//! So no tool result ever loses its assistant call. A marker left by an
//! earlier compaction is folded into the new count rather than stacked.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `max_messages` | 24 | compact when the conversation is longer than this |
//! | `keep_recent` | 8 | recent messages always kept (more if a step straddles the cut) |
//!
//! Cost: one `len` per step while under budget; when compacting, one
//! `role_of` per message it walks over and a `get` of at most two messages.

use kiln_guest::{config, Conversation, Hook, Info, Level, Message, Processor, Role, Verdict};
use serde::Deserialize;

/// The processor's name, as in its [`Info`].
pub const NAME: &str = "history-compactor";

/// The processor's config; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Compact when the conversation has more messages than this.
    pub max_messages: u32,
    /// Recent messages always kept.
    pub keep_recent: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_messages: 24,
            keep_recent: 8,
        }
    }
}

/// The marker text for `count` compacted messages.
pub fn marker(count: u32) -> String {
    format!("[compacted {count} earlier messages]")
}

/// The count in a marker message, if `text` is one.
pub fn marker_count(text: &str) -> Option<u32> {
    text.strip_prefix("[compacted ")?
        .strip_suffix(" earlier messages]")?
        .parse()
        .ok()
}

/// The component.
#[derive(Default)]
pub struct HistoryCompactor {
    config: Config,
}

impl HistoryCompactor {
    /// Compacts `conv` if it is over budget; returns how many messages the
    /// marker now stands for, or `None` when nothing changed.
    pub fn compact(&self, conv: &Conversation<'_>) -> Option<u32> {
        let len = conv.len();
        if len <= self.config.max_messages {
            return None;
        }
        let first_user = (0..len).find(|&i| conv.role_of(i) == Some(Role::User))?;
        let drop_start = first_user + 1;
        let mut cut = len.saturating_sub(self.config.keep_recent).max(drop_start);
        while cut > drop_start && conv.role_of(cut) == Some(Role::Tool) {
            cut -= 1;
        }
        let dropped = cut - drop_start;
        if dropped < 2 {
            return None; // Replacing one message by a marker gains nothing.
        }
        let earlier = conv
            .get(drop_start)
            .filter(|m| m.role == Role::User)
            .and_then(|m| marker_count(&m.content));
        let represented = match earlier {
            Some(count) => count + dropped - 1,
            None => dropped,
        };
        let edits = conv
            .replace(drop_start, &Message::user(marker(represented)))
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
        Some(represented)
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
        if config.keep_recent == 0 {
            return Err(format!(
                "config for `{NAME}` is invalid: `keep_recent` must be at least 1"
            ));
        }
        if config.max_messages < config.keep_recent + 3 {
            return Err(format!(
                "config for `{NAME}` is invalid: `max_messages` ({}) must be at least `keep_recent` + 3 ({}), \
                 room for the first user message, a marker and the recent messages",
                config.max_messages,
                config.keep_recent + 3
            ));
        }
        self.config = config;
        Ok(())
    }

    fn on_step_start(&mut self, conv: &Conversation<'_>) -> Verdict {
        if let Some(count) = self.compact(conv) {
            kiln_guest::log(
                Level::Info,
                &format!("compacted the history; the marker stands for {count} messages"),
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

    fn configured(max_messages: u32, keep_recent: u32) -> HistoryCompactor {
        let mut compactor = HistoryCompactor::default();
        let config = format!(r#"{{"max_messages": {max_messages}, "keep_recent": {keep_recent}}}"#);
        TestHost::new().configure(&mut compactor, &config).unwrap();
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

    #[test]
    fn under_budget_nothing_changes() {
        let mut host = task(5);
        let before = host.messages();
        host.step_start(&mut HistoryCompactor::default());
        assert_eq!(host.messages(), before);
    }

    #[test]
    fn keeps_the_goal_and_the_recent_steps() {
        let mut host = task(12);
        let before = host.messages();
        let mut compactor = configured(10, 4);
        host.step_start(&mut compactor);
        let after = host.messages();
        assert_eq!(after[0], before[0]);
        assert_eq!(
            after[1],
            Message::user(marker((before.len() - after.len() + 1) as u32))
        );
        assert!(after.len() - 2 >= 4);
        assert_eq!(&after[2..], &before[before.len() - (after.len() - 2)..]);
        assert_eq!(after[2].role, Role::Assistant);
        assert_tool_messages_have_their_calls(&after);
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
    fn a_second_compaction_folds_the_first_marker_in() {
        let mut host = task(12);
        let total = host.messages().len() as u32;
        let mut compactor = configured(10, 4);
        host.step_start(&mut compactor);
        for step in 12..20 {
            let id = format!("late{step}");
            host.assistant_calls("late", vec![Call::new(&id, "look", "{}")])
                .tool(&id, "r");
        }
        host.step_start(&mut compactor);
        let after = host.messages();
        let markers: Vec<&Message> = after
            .iter()
            .filter(|m| marker_count(&m.content).is_some())
            .collect();
        assert_eq!(markers.len(), 1);
        let represented = marker_count(&markers[0].content).unwrap();
        assert_eq!(
            represented + after.len() as u32 - 1,
            total + 16,
            "every message is kept or counted"
        );
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
        assert!(host
            .configure(&mut compactor, r#"{"max": 5}"#)
            .unwrap_err()
            .contains("unknown field `max`"));
    }

    #[test]
    fn marker_round_trips() {
        assert_eq!(marker_count(&marker(17)), Some(17));
        assert_eq!(marker_count("[compacted many earlier messages]"), None);
    }
}
