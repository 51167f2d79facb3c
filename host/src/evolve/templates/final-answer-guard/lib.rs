//! `final-answer-guard` (kiln evolve template `no-call-nudge`): blocks a
//! premature final answer at after-model.
//!
//! The agent loop ends a task when the model answers without a tool call and
//! the environment is not done, so such an answer is, by construction, a stop
//! before the goal was reached. This processor blocks up to `max_blocks` of
//! them per task; the model then sees `[blocked by final-answer-guard]
//! <reason>` and goes on. After that it lets the answer through, so a model
//! that really cannot go on is never trapped.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `max_blocks` | 2 | blocked final answers per task |
//! | `min_step` | 0 | only block from this step on (0-based) |
//! | `reason` | see below | the text the model sees |

use kiln_guest::{config, task, Conversation, Hook, Info, Processor, Response, Verdict};
use serde::Deserialize;

pub const NAME: &str = "final-answer-guard";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub max_blocks: u32,
    pub min_step: u32,
    pub reason: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_blocks: 2,
            min_step: 0,
            reason: "the task is not finished yet: keep working with the tools instead of answering".into(),
        }
    }
}

#[derive(Default)]
pub struct FinalAnswerGuard {
    config: Config,
    blocked: u32,
}

impl Processor for FinalAnswerGuard {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION"))
            .hooks([Hook::AfterModel])
            .group("final-answer")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        self.config = config::parse(NAME, text)?;
        Ok(())
    }

    fn on_after_model(&mut self, _conv: &Conversation<'_>, response: &Response<'_>) -> Verdict {
        if !response.calls().is_empty() || task().step < self.config.min_step || self.blocked >= self.config.max_blocks {
            return Verdict::Pass;
        }
        self.blocked += 1;
        Verdict::Block(self.config.reason.clone())
    }
}

kiln_guest::export!(FinalAnswerGuard);
