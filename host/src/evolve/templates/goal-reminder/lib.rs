//! `goal-reminder` (kiln evolve template): keeps the task's goal in the
//! system prompt, which never scrolls out of a model's window.
//!
//! At task-start it finds the first user message's `Goal: <instruction>`
//! line and appends `<prefix><instruction>` to the system prompt. Unlike a
//! pinned user message it costs one line for the whole task.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `prefix` | `Goal: ` | what precedes the instruction in the system prompt |
//! | `search` | 4 | how many leading messages are searched for the goal line |

use kiln_guest::{config, Conversation, Hook, Info, Processor, Role, Toolset, Verdict};
use serde::Deserialize;

pub const NAME: &str = "goal-reminder";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub prefix: String,
    pub search: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { prefix: "Goal: ".into(), search: 4 }
    }
}

#[derive(Default)]
pub struct GoalReminder {
    config: Config,
}

impl Processor for GoalReminder {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION")).hooks([Hook::TaskStart]).group("goal-reminder")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        self.config = config::parse(NAME, text)?;
        Ok(())
    }

    fn on_task_start(&mut self, conv: &Conversation<'_>, _tools: &Toolset<'_>) -> Verdict {
        let n = conv.len().min(self.config.search);
        for i in 0..n {
            let Some(m) = conv.get(i) else { continue };
            if m.role != Role::User {
                continue;
            }
            if let Some(line) = m.content.lines().find_map(|l| l.trim_start().strip_prefix("Goal:")) {
                let mut system = conv.system_prompt();
                if !system.is_empty() {
                    system.push('\n');
                }
                system.push_str(&self.config.prefix);
                system.push_str(line.trim());
                conv.set_system_prompt(&system);
                break;
            }
        }
        Verdict::Pass
    }
}

kiln_guest::export!(GoalReminder);
