//! `goal-pin`: keeps the task's goal in view of the model.
//!
//! The first user message of every task begins with `Goal: <instruction>`.
//! goal-pin remembers that instruction at task-start (or, if it was added
//! mid-task, at its first before-model). At before-model, when the
//! instruction does not appear in any of the last `window` messages, it
//! appends the user message `Goal (pinned): <instruction>`. That message
//! itself carries the goal, so the pin repeats only once it scrolls out of
//! the window again.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `window` | 6 | how many recent messages must mention the goal |
//!
//! Cost: reads at most `window` messages per call, never the whole history.
//! State (hot swap): the remembered instruction, as UTF-8 text.

use kiln_guest::{config, Conversation, Hook, Info, Level, Processor, Role, Toolset, Verdict};
use serde::Deserialize;

/// The processor's name, as in its [`Info`].
pub const NAME: &str = "goal-pin";

/// The prefix of a pinned goal message.
pub const PIN_PREFIX: &str = "Goal (pinned): ";

/// How far into the conversation the first user message is looked for.
const FIRST_USER_SEARCH: u32 = 4;

/// The processor's config; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How many recent messages must mention the goal.
    pub window: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { window: 6 }
    }
}

/// The instruction of the `Goal:` line of `text`, if it has one.
pub fn goal_of(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.trim_start().strip_prefix("Goal:"))
        .map(str::trim)
        .filter(|goal| !goal.is_empty())
}

/// The component.
#[derive(Default)]
pub struct GoalPin {
    config: Config,
    goal: Option<String>,
    /// True once a first user message was read (with or without a goal line).
    looked: bool,
}

impl GoalPin {
    /// Finds the goal in the first user message, if not known yet.
    fn learn_goal(&mut self, conv: &Conversation<'_>) {
        if self.looked {
            return;
        }
        let first_user =
            (0..conv.len().min(FIRST_USER_SEARCH)).find(|&i| conv.role_of(i) == Some(Role::User));
        let message = first_user.and_then(|i| conv.get(i));
        self.goal = message
            .as_ref()
            .and_then(|m| goal_of(&m.content))
            .map(str::to_owned);
        self.looked = message.is_some();
        if self.goal.is_none() && message.is_some() {
            kiln_guest::log(
                Level::Warn,
                "the first user message has no `Goal:` line; nothing to pin",
            );
        }
    }
}

impl Processor for GoalPin {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION"))
            .hooks([Hook::TaskStart, Hook::BeforeModel])
            .group("goal")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        let config: Config = config::parse(NAME, text)?;
        if config.window == 0 {
            return Err(format!(
                "config for `{NAME}` is invalid: `window` must be at least 1"
            ));
        }
        self.config = config;
        Ok(())
    }

    fn save_state(&self) -> Vec<u8> {
        self.goal.clone().unwrap_or_default().into_bytes()
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), String> {
        let goal = std::str::from_utf8(state).map_err(|error| {
            format!("`{NAME}` cannot load this state: the goal is not UTF-8 ({error})")
        })?;
        self.goal = (!goal.is_empty()).then(|| goal.to_owned());
        self.looked = self.goal.is_some();
        Ok(())
    }

    fn on_task_start(&mut self, conv: &Conversation<'_>, _tools: &Toolset<'_>) -> Verdict {
        self.goal = None;
        self.looked = false;
        self.learn_goal(conv);
        Verdict::Pass
    }

    fn on_before_model(&mut self, conv: &Conversation<'_>) -> Verdict {
        self.learn_goal(conv);
        let Some(goal) = &self.goal else {
            return Verdict::Pass;
        };
        let len = conv.len();
        let start = len.saturating_sub(self.config.window);
        let in_view = (start..len).rev().any(|i| {
            conv.get(i)
                .is_some_and(|m| m.content.contains(goal.as_str()))
        });
        if !in_view {
            if let Err(error) = conv.append_user(&format!("{PIN_PREFIX}{goal}")) {
                kiln_guest::log(Level::Warn, &format!("could not pin the goal: {error}"));
            }
        }
        Verdict::Pass
    }
}

kiln_guest::export!(GoalPin);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_guest::testing::TestHost;
    use kiln_guest::Call;

    fn long_task(steps: usize) -> TestHost {
        let mut host = TestHost::new();
        host.user("Goal: buy red shoes under $50\nYou are on the home page.");
        for n in 0..steps {
            let id = format!("c{n}");
            host.assistant_calls("", vec![Call::new(&id, "search", "{}")])
                .tool(&id, "results");
        }
        host
    }

    #[test]
    fn reads_the_goal_line() {
        assert_eq!(goal_of("Goal: buy shoes\nobs"), Some("buy shoes"));
        assert_eq!(goal_of("obs\n  Goal:  find x  "), Some("find x"));
        assert_eq!(goal_of("Goal:   "), None);
        assert_eq!(goal_of("no goal here"), None);
    }

    #[test]
    fn pins_once_the_goal_scrolls_out_of_the_window() {
        let mut host = long_task(1);
        let mut pin = GoalPin::default();
        host.task_start(&mut pin);
        host.before_model(&mut pin);
        assert_eq!(host.messages().len(), 3, "the goal is still in view");

        let mut host = long_task(4);
        host.task_start(&mut pin);
        host.before_model(&mut pin);
        let last = host.messages().last().unwrap().clone();
        assert_eq!(last.role, Role::User);
        assert_eq!(last.content, "Goal (pinned): buy red shoes under $50");
        // The pin is in view now: no second pin.
        host.before_model(&mut pin);
        assert_eq!(host.messages().len(), 10);
    }

    #[test]
    fn the_window_is_configurable() {
        let mut host = long_task(2);
        let mut pin = GoalPin::default();
        host.configure(&mut pin, r#"{"window": 10}"#).unwrap();
        host.task_start(&mut pin);
        host.before_model(&mut pin);
        assert_eq!(host.messages().len(), 5);
        assert!(host.configure(&mut pin, r#"{"window": 0}"#).is_err());
        assert!(host
            .configure(&mut pin, r#"{"windows": 3}"#)
            .unwrap_err()
            .contains("`windows`"));
    }

    #[test]
    fn learns_the_goal_late_when_added_mid_task() {
        let mut host = long_task(4);
        let mut pin = GoalPin::default();
        host.before_model(&mut pin);
        assert!(host
            .messages()
            .last()
            .unwrap()
            .content
            .starts_with(PIN_PREFIX));
    }

    #[test]
    fn without_a_goal_line_it_only_warns() {
        let mut host = TestHost::new();
        host.user("just do it").assistant("ok").user("more");
        let mut pin = GoalPin::default();
        host.task_start(&mut pin);
        host.before_model(&mut pin);
        assert_eq!(host.messages().len(), 3);
        assert_eq!(host.logs().len(), 1);
    }

    #[test]
    fn state_carries_the_goal() {
        let mut host = long_task(4);
        let mut first = GoalPin::default();
        host.task_start(&mut first);
        let state = host.save_state(&first);
        let mut second = GoalPin::default();
        host.load_state(&mut second, &state).unwrap();
        assert_eq!(second.goal.as_deref(), Some("buy red shoes under $50"));
        assert!(host.load_state(&mut second, &[0xff, 0xfe]).is_err());
    }
}
