//! `step-budget`: tells the model how many steps it has left, and stops a
//! task that runs out of steps while still calling tools.
//!
//! At step-end, when `warn_at` or fewer steps remain after the current one
//! (and at least one does), it advises `N steps left: ...` (the wording
//! always contains `steps left`, which the simulated model reacts to). At
//! after-model on the last step, when the model still asks for tools and
//! `stop_at_limit` is on, it interrupts the task with a reason instead of
//! running tools whose results no step would ever read.
//!
//! Steps come from the task facts: `step` counts from 0, so after step `s`
//! there remain `max_steps - s - 1`.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `warn_at` | 3 | advise when this many steps or fewer remain (0: never) |
//! | `stop_at_limit` | true | interrupt on the last step if the model still calls tools |

use kiln_guest::{
    advise, config, task, Conversation, Hook, Info, Processor, Response, TaskFacts, Verdict,
};
use serde::Deserialize;

/// The processor's name, as in its [`Info`].
pub const NAME: &str = "step-budget";

/// The processor's config; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Advise when this many steps or fewer remain.
    pub warn_at: u32,
    /// Interrupt on the last step if the model still calls tools.
    pub stop_at_limit: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            warn_at: 3,
            stop_at_limit: true,
        }
    }
}

impl Config {
    /// The advice for the end of the step described by `facts`, if any.
    pub fn warning(&self, facts: &TaskFacts) -> Option<String> {
        let left = facts.steps_left_after_this();
        if left == 0 || left > self.warn_at {
            return None;
        }
        Some(if left == 1 {
            "1 steps left: this is your last step, give your final answer now".to_owned()
        } else {
            format!("{left} steps left: wrap up and give your final answer soon")
        })
    }

    /// The interrupt reason for a response on the step described by `facts`.
    pub fn stop(&self, facts: &TaskFacts, calls_tools: bool) -> Option<String> {
        if !self.stop_at_limit || !calls_tools || facts.steps_left_after_this() > 0 {
            return None;
        }
        Some(format!(
            "step budget exhausted: step {} of {} still calls tools, and no step is left to read their results",
            facts.step + 1,
            facts.max_steps
        ))
    }
}

/// The component.
#[derive(Default)]
pub struct StepBudget {
    config: Config,
}

impl Processor for StepBudget {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION"))
            .hooks([Hook::AfterModel, Hook::StepEnd])
            .group("budget")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        self.config = config::parse(NAME, text)?;
        Ok(())
    }

    fn on_after_model(&mut self, _conv: &Conversation<'_>, response: &Response<'_>) -> Verdict {
        match self.config.stop(&task(), !response.calls().is_empty()) {
            Some(reason) => Verdict::Interrupt(reason),
            None => Verdict::Pass,
        }
    }

    fn on_step_end(&mut self, _conv: &Conversation<'_>) -> Verdict {
        if let Some(warning) = self.config.warning(&task()) {
            advise(&warning);
        }
        Verdict::Pass
    }
}

kiln_guest::export!(StepBudget);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_guest::testing::TestHost;
    use kiln_guest::Call;

    fn at_step(step: u32, max_steps: u32) -> TestHost {
        let mut host = TestHost::new();
        host.user("Goal: x").set_step(step).set_max_steps(max_steps);
        host
    }

    #[test]
    fn warns_only_in_the_last_warn_at_steps() {
        let mut budget = StepBudget::default();
        let advice_at = |step| {
            let mut host = at_step(step, 10);
            host.step_end(&mut StepBudget::default());
            host.advice()
        };
        assert_eq!(advice_at(5), None, "4 steps left");
        assert_eq!(
            advice_at(6).as_deref(),
            Some("3 steps left: wrap up and give your final answer soon")
        );
        assert_eq!(
            advice_at(8).as_deref(),
            Some("1 steps left: this is your last step, give your final answer now")
        );
        assert_eq!(advice_at(9), None, "no step is left to read advice");
        let mut host = at_step(8, 10);
        host.configure(&mut budget, r#"{"warn_at": 0}"#).unwrap();
        host.step_end(&mut budget);
        assert_eq!(host.advice(), None);
    }

    #[test]
    fn every_warning_says_steps_left() {
        let config = Config {
            warn_at: 50,
            stop_at_limit: true,
        };
        for step in 0..60 {
            let facts = TaskFacts {
                task_id: "t".into(),
                step,
                max_steps: 60,
                seed: 0,
                hook: Hook::StepEnd,
            };
            if let Some(text) = config.warning(&facts) {
                assert!(text.contains("steps left"), "{text}");
            }
        }
    }

    #[test]
    fn interrupts_tool_calls_on_the_last_step() {
        let call = Call::new("c", "search", "{}");
        let mut host = at_step(9, 10);
        let outcome = host.after_model(&mut StepBudget::default(), "", vec![call.clone()]);
        assert_eq!(
            outcome.verdict,
            Verdict::Interrupt(
                "step budget exhausted: step 10 of 10 still calls tools, and no step is left to read their results".into()
            )
        );
        // A final answer on the last step is fine.
        assert_eq!(
            host.after_model(&mut StepBudget::default(), "done", vec![])
                .verdict,
            Verdict::Pass
        );
        // Earlier steps are fine.
        let mut host = at_step(8, 10);
        assert_eq!(
            host.after_model(&mut StepBudget::default(), "", vec![call.clone()])
                .verdict,
            Verdict::Pass
        );
        // And it can be switched off.
        let mut host = at_step(9, 10);
        let mut budget = StepBudget::default();
        host.configure(&mut budget, r#"{"stop_at_limit": false}"#)
            .unwrap();
        assert_eq!(
            host.after_model(&mut budget, "", vec![call]).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn interrupts_only_on_the_last_step_of_any_budget() {
        let config = Config::default();
        for max_steps in 1..60 {
            for step in 0..max_steps {
                let facts = TaskFacts {
                    task_id: "t".into(),
                    step,
                    max_steps,
                    seed: 0,
                    hook: Hook::AfterModel,
                };
                let last = step + 1 == max_steps;
                assert_eq!(
                    config.stop(&facts, true).is_some(),
                    last,
                    "step {step} of {max_steps} (counting from 0)"
                );
                assert_eq!(
                    config.stop(&facts, false),
                    None,
                    "a final answer is never stopped"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let host = TestHost::new();
        let error = host
            .configure(&mut StepBudget::default(), r#"{"warn": 2}"#)
            .unwrap_err();
        assert!(error.contains("unknown field `warn`"), "{error}");
    }
}
