//! `tool-alias` (kiln evolve template): renames tool calls the model makes
//! under invented names to the tools it meant, from an explicit alias table
//! fitted to the names seen in traces.
//!
//! At after-model, every call whose name is a key of `aliases` is renamed to
//! its value, only when that value is a tool offered in this task. Calls to
//! known tools pass untouched.
//!
//! Config (JSON): `{"aliases": {"search_products": "search", "buy_now": "buy"}}`.

use std::collections::BTreeMap;

use kiln_guest::{config, Conversation, Hook, Info, Processor, Response, Toolset, Verdict};
use serde::Deserialize;

pub const NAME: &str = "tool-alias";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub aliases: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct ToolAlias {
    config: Config,
    known: Vec<String>,
}

impl Processor for ToolAlias {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION")).hooks([Hook::TaskStart, Hook::AfterModel]).group("tool-alias")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        self.config = config::parse(NAME, text)?;
        Ok(())
    }

    fn on_task_start(&mut self, _conv: &Conversation<'_>, tools: &Toolset<'_>) -> Verdict {
        self.known = tools.names();
        Verdict::Pass
    }

    fn on_after_model(&mut self, _conv: &Conversation<'_>, response: &Response<'_>) -> Verdict {
        let mut calls = response.calls();
        let mut changed = false;
        for call in calls.iter_mut() {
            if let Some(to) = self.config.aliases.get(&call.name) {
                if self.known.iter().any(|k| k == to) {
                    call.name = to.clone();
                    changed = true;
                }
            }
        }
        if changed {
            response.set_calls(&calls);
        }
        Verdict::Pass
    }
}

kiln_guest::export!(ToolAlias);
