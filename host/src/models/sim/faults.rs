//! The failure layer: what goes wrong between deciding and writing.
//!
//! The suite policies decide what a competent player would do; this layer
//! then applies the profile's flaws, each with its own named die:
//! - **stopping early**: a final answer before the task is done;
//! - **loops**: repeating the previous call, and once two calls in a row
//!   match, repeating again with `loop_persist` (advice that mentions
//!   `repeat` breaks it with `obey`, a `[blocked by ...]` with `obey_block`);
//! - **dressing faults**: the call written as text (`search[{...}]`), under
//!   an invented name (`search_products`), or with broken JSON.

use serde_json::Value;

use super::context::{same_call, Reading, Rolls};
use super::profile::Knobs;
use crate::chat::ToolCall;

/// A call the policy wants to make, in canonical form.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Action {
    pub tool: &'static str,
    pub args: Value,
    /// A sentence of reasoning, written as the reply's text.
    pub thought: String,
}

impl Action {
    pub(crate) fn new(tool: &'static str, args: Value, thought: impl Into<String>) -> Action {
        Action { tool, args, thought: thought.into() }
    }

    /// Whether this is the same call as `call` (by name and JSON meaning).
    pub(crate) fn is(&self, call: &ToolCall) -> bool {
        same_call(&self.as_call(""), call)
    }

    pub(crate) fn as_call(&self, id: &str) -> ToolCall {
        ToolCall { id: id.to_string(), name: self.tool.to_string(), arguments: self.args.to_string() }
    }
}

/// What the loop layer decided before the policy is asked.
pub(crate) enum LoopDecision {
    /// Repeat this earlier call verbatim.
    Repeat(ToolCall),
    /// Think, but do not make this call again.
    Avoid(ToolCall),
    /// Think freely.
    Free,
}

/// Decide whether the model is stuck repeating itself.
pub(crate) fn loop_decision(reading: &Reading, knobs: &Knobs, rolls: &Rolls) -> LoopDecision {
    let mut calls = reading.calls().rev();
    let Some(last) = calls.next().cloned() else { return LoopDecision::Free };
    let in_loop = calls.next().is_some_and(|previous| same_call(previous, &last));
    if reading.call_blocked {
        return if rolls.chance("obey-block", knobs.obey_block) {
            LoopDecision::Avoid(last)
        } else if in_loop {
            LoopDecision::Repeat(last)
        } else {
            LoopDecision::Free
        };
    }
    if in_loop {
        if reading.loop_advice && rolls.chance("obey-loop-advice", knobs.obey) {
            return LoopDecision::Avoid(last);
        }
        if rolls.chance("loop-persist", knobs.loop_persist) {
            return LoopDecision::Repeat(last);
        }
        return LoopDecision::Free;
    }
    if rolls.chance("loop-start", knobs.loop_rate) {
        return LoopDecision::Repeat(last);
    }
    // A call that just failed in the same form is not worth repeating.
    // (A call that failed for its form, bad JSON or a wrong name, differs
    // from the clean call the policy will want, so this does not stop a retry.)
    let failed = reading
        .last_step()
        .and_then(|s| s.result.as_deref())
        .is_some_and(|r| r.starts_with("Nothing happens") || r.starts_with("Error:"));
    if failed {
        LoopDecision::Avoid(last)
    } else {
        LoopDecision::Free
    }
}

/// Whether the model gives up with a final answer now.
pub(crate) fn stops_early(reading: &Reading, knobs: &Knobs, rolls: &Rolls) -> bool {
    if reading.reply_blocked {
        // Told not to stop: it stops again only if it ignores the block.
        return !rolls.chance("obey-reply-block", knobs.obey_block) && rolls.chance("stop-again", 0.5);
    }
    reading.calls().count() >= 2 && rolls.chance("early-stop", knobs.early_stop_rate)
}

/// Invented names for each real tool: most contain the real name (so a
/// nearest-name repair can map them back), a few do not.
fn invented_names(tool: &str) -> &'static [&'static str] {
    match tool {
        "search" => &["search_products", "product_search", "find"],
        "next_page" => &["next_page_results", "goto_next_page"],
        "prev_page" => &["prev_page_results", "goto_prev_page"],
        "view" => &["view_product", "click"],
        "select" => &["select_option", "choose"],
        "back" => &["go_back", "back_button"],
        "buy" => &["buy_now", "purchase"],
        "act" => &["act_command", "take_action", "execute"],
        "admissible" => &["get_admissible", "admissible_commands"],
        _ => &["do_it"],
    }
}

/// Break JSON the ways models do.
fn malform(arguments: &str, variant: usize) -> String {
    match variant {
        0 => arguments.replace('"', "'"),
        1 => match arguments.rfind('}') {
            Some(at) if at > 1 => format!("{},{}", &arguments[..at], &arguments[at..]),
            _ => format!("{arguments},"),
        },
        _ => arguments.trim_end_matches('}').to_string(),
    }
}

/// How a decided action is finally written.
pub(crate) struct Written {
    pub text: String,
    pub call: Option<ToolCall>,
    /// Names of the faults applied, for the raw record.
    pub faults: Vec<&'static str>,
}

/// Write `action` as the reply, with this call's dressing faults.
pub(crate) fn dress(action: &Action, call_id: &str, knobs: &Knobs, rolls: &Rolls) -> Written {
    let mut faults = Vec::new();
    let mut arguments = action.args.to_string();
    if rolls.chance("text-call", knobs.text_call_rate) {
        faults.push("text_call");
        return Written { text: format!("{}\n{}[{}]", action.thought, action.tool, arguments), call: None, faults };
    }
    let mut name = action.tool.to_string();
    if rolls.chance("invent", knobs.invent_rate) {
        let names = invented_names(action.tool);
        name = names[rolls.below("invent-which", names.len())].to_string();
        faults.push("invented_name");
    }
    if rolls.chance("malformed", knobs.malformed_rate) {
        arguments = malform(&arguments, rolls.below("malformed-how", 3));
        faults.push("malformed_json");
    }
    Written { text: action.thought.clone(), call: Some(ToolCall { id: call_id.to_string(), name, arguments }), faults }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_arguments_do_not_parse() {
        let good = r#"{"query":"red shoes"}"#;
        for variant in 0..3 {
            let bad = malform(good, variant);
            assert!(serde_json::from_str::<Value>(&bad).is_err(), "{bad}");
        }
        assert_eq!(malform(good, 0), "{'query':'red shoes'}");
        assert_eq!(malform(good, 1), r#"{"query":"red shoes",}"#);
        assert_eq!(malform(good, 2), r#"{"query":"red shoes""#);
        assert!(serde_json::from_str::<Value>(&malform("{}", 1)).is_err());
    }
}
