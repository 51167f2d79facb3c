//! tau2 tasks as `tasks.json` writes them, and which of them can be graded.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chat::ToolCall;

/// One task of `tasks.json` (the fields this environment reads).
#[derive(Clone, Debug, Deserialize)]
pub(super) struct Tau2Task {
    pub id: String,
    /// The solo-mode statement of the request.
    #[serde(default)]
    pub ticket: Option<String>,
    #[serde(default)]
    pub user_scenario: Option<UserScenario>,
    #[serde(default)]
    pub initial_state: Option<InitialState>,
    #[serde(default)]
    pub evaluation_criteria: Option<Criteria>,
}

#[derive(Clone, Debug, Deserialize)]
pub(super) struct UserScenario {
    /// A string for mock tasks; an object of named parts in other domains.
    #[serde(default)]
    pub instructions: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub(super) struct InitialState {
    /// Earlier turns of the conversation (the server replays their tool calls).
    #[serde(default)]
    pub message_history: Option<Vec<Value>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(super) struct Criteria {
    #[serde(default)]
    pub actions: Option<Vec<GoldAction>>,
    #[serde(default)]
    pub env_assertions: Option<Vec<EnvAssertion>>,
    #[serde(default)]
    pub communicate_info: Option<Vec<String>>,
    #[serde(default)]
    pub nl_assertions: Option<Vec<String>>,
    /// Missing means tau2's default, `[DB, COMMUNICATE]`.
    #[serde(default)]
    pub reward_basis: Option<Vec<String>>,
}

/// A tool call of the reference solution.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct GoldAction {
    pub name: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// The arguments a matching call must agree on: all when missing, none when empty.
    #[serde(default)]
    pub compare_args: Option<Vec<String>>,
}

/// A check of the final state, e.g. `assert_task_status`.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct EnvAssertion {
    // `env_type` (whose tools run it) is not needed: each function reads one table.
    pub func_name: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    #[serde(default = "yes")]
    pub assert_value: bool,
}

fn yes() -> bool {
    true
}

/// What a task's reward is the product of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Basis {
    /// The final DB equals the DB after replaying the gold actions.
    Db,
    /// The env assertions hold on the final DB.
    EnvAssertion,
    /// Every gold action was called (on its `compare_args`).
    Action,
    /// Every `communicate_info` string was said to the user.
    Communicate,
    /// Natural-language assertions, for an LLM judge.
    NlAssertion,
}

/// The env assertions this environment can evaluate itself.
pub(super) const CHECKABLE_ASSERTIONS: [&str; 2] = ["assert_task_status", "assert_notification_status"];

impl Tau2Task {
    pub fn criteria(&self) -> Criteria {
        self.evaluation_criteria.clone().unwrap_or_default()
    }

    /// The reward basis, tau2's default `[DB, COMMUNICATE]` when unstated.
    pub fn basis(&self) -> Result<Vec<Basis>, String> {
        let Some(names) = self.evaluation_criteria.as_ref().and_then(|c| c.reward_basis.clone()) else {
            return Ok(vec![Basis::Db, Basis::Communicate]);
        };
        names
            .iter()
            .map(|name| match name.as_str() {
                "DB" => Ok(Basis::Db),
                "ENV_ASSERTION" => Ok(Basis::EnvAssertion),
                "ACTION" => Ok(Basis::Action),
                "COMMUNICATE" => Ok(Basis::Communicate),
                "NL_ASSERTION" => Ok(Basis::NlAssertion),
                other => Err(format!("its reward basis `{other}` is unknown")),
            })
            .collect()
    }

    /// What the agent is asked to do: the ticket, else the user's instructions.
    pub fn goal(&self) -> Option<String> {
        if let Some(ticket) = self.ticket.as_ref().filter(|t| !t.trim().is_empty()) {
            return Some(ticket.trim().to_string());
        }
        match self.user_scenario.as_ref()?.instructions.as_ref()? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Object(parts) => {
                let lines: Vec<String> = parts
                    .iter()
                    .filter_map(|(k, v)| match v {
                        Value::String(s) => Some(format!("{k}: {s}")),
                        Value::Null => None,
                        other => Some(format!("{k}: {other}")),
                    })
                    .collect();
                (!lines.is_empty()).then(|| lines.join("\n"))
            }
            _ => None,
        }
    }

    /// The earlier turns, one line each, for the prompt.
    pub fn history_lines(&self) -> Vec<String> {
        let Some(history) = self.initial_state.as_ref().and_then(|s| s.message_history.as_ref()) else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        for message in history {
            let role = message.get("role").and_then(Value::as_str).unwrap_or("?");
            if let Some(content) = message.get("content").and_then(Value::as_str).filter(|c| !c.is_empty()) {
                lines.push(format!("{role}: {content}"));
            }
            for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let name = call.get("name").and_then(Value::as_str).unwrap_or("?");
                let args = call.get("arguments").cloned().unwrap_or(json!({}));
                lines.push(format!("{role} called {name} {args}"));
            }
        }
        lines
    }

    /// `Ok` when every criterion of the reward basis can be checked here and
    /// at least one of them constrains the run; else why the task is left out.
    /// (Contradictory criteria are found later, by replaying the gold actions.)
    pub fn static_gradability(&self) -> Result<(), String> {
        let basis = self.basis()?;
        if basis.contains(&Basis::NlAssertion) {
            return Err("its reward basis includes NL_ASSERTION, which needs an LLM judge".into());
        }
        if self.goal().is_none() {
            return Err("it has neither a ticket nor user instructions to act on".into());
        }
        let c = self.criteria();
        let env_checked = c.actions.is_some() || c.env_assertions.is_some();
        let non_empty = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
        let assertions = c.env_assertions.clone().unwrap_or_default();
        let constrained = (basis.contains(&Basis::Db) && env_checked)
            || (basis.contains(&Basis::EnvAssertion) && !assertions.is_empty())
            || (basis.contains(&Basis::Action) && c.actions.as_ref().is_some_and(|a| !a.is_empty()))
            || (basis.contains(&Basis::Communicate) && non_empty(&c.communicate_info));
        if !constrained {
            return Err(if non_empty(&c.nl_assertions) {
                "its only criteria are NL assertions, which need an LLM judge".into()
            } else {
                "no criterion of its reward basis constrains the run".into()
            });
        }
        if basis.contains(&Basis::EnvAssertion) {
            if let Some(a) = assertions.iter().find(|a| !CHECKABLE_ASSERTIONS.contains(&a.func_name.as_str())) {
                return Err(format!("its env assertion `{}` cannot be checked here", a.func_name));
            }
        }
        Ok(())
    }

    /// The reference solution as tool calls: the gold actions; with none,
    /// calls that make the env assertions true; then a `respond` that says
    /// every required statement, then `done`.
    pub fn oracle_calls(&self) -> Vec<ToolCall> {
        let c = self.criteria();
        let mut calls: Vec<(String, Value)> = Vec::new();
        let actions = c.actions.clone().unwrap_or_default();
        for action in &actions {
            calls.push((action.name.clone(), Value::Object(action.arguments.clone())));
        }
        if actions.is_empty() {
            for a in c.env_assertions.clone().unwrap_or_default() {
                let arg = |k: &str| a.arguments.get(k).cloned().unwrap_or(Value::Null);
                match (a.func_name.as_str(), a.assert_value) {
                    ("assert_task_status", true) => calls.push((
                        "update_task_status".into(),
                        json!({ "task_id": arg("task_id"), "status": arg("expected_status") }),
                    )),
                    ("assert_notification_status", true) if arg("expected_status") == "read" => calls
                        .push(("dismiss_notification".into(), json!({ "notification_id": arg("notification_id") }))),
                    _ => {}
                }
            }
        }
        let info = c.communicate_info.unwrap_or_default();
        if !info.is_empty() {
            calls.push(("respond".into(), json!({ "message": info.join(". ") })));
        }
        calls.push(("done".into(), json!({})));
        calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, args))| ToolCall { id: format!("oracle-{i}"), name, arguments: args.to_string() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(v: Value) -> Tau2Task {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_default_basis_is_db_and_communicate() {
        let t = task(json!({ "id": "a", "ticket": "do it", "evaluation_criteria": { "actions": [] } }));
        assert_eq!(t.basis().unwrap(), vec![Basis::Db, Basis::Communicate]);
        assert!(t.static_gradability().is_ok());
    }

    #[test]
    fn tasks_that_need_a_judge_or_constrain_nothing_are_left_out() {
        let nl_only = task(json!({ "id": "n", "ticket": "x", "evaluation_criteria": { "nl_assertions": ["nice"] } }));
        assert_eq!(
            nl_only.static_gradability().unwrap_err(),
            "its only criteria are NL assertions, which need an LLM judge"
        );
        let judged = task(json!({ "id": "j", "ticket": "x",
            "evaluation_criteria": { "actions": [], "reward_basis": ["DB", "NL_ASSERTION"] } }));
        assert!(judged.static_gradability().unwrap_err().contains("NL_ASSERTION"));
        let odd = task(json!({ "id": "o", "ticket": "x", "evaluation_criteria": {
            "env_assertions": [{ "func_name": "assert_moon_phase", "arguments": {} }], "reward_basis": ["ENV_ASSERTION"] } }));
        assert_eq!(
            odd.static_gradability().unwrap_err(),
            "its env assertion `assert_moon_phase` cannot be checked here"
        );
        let mute = task(json!({ "id": "m", "evaluation_criteria": { "actions": [] } }));
        assert!(mute.static_gradability().unwrap_err().contains("neither a ticket"));
    }

    #[test]
    fn the_goal_falls_back_to_the_user_instructions_and_history_is_rendered() {
        let t = task(json!({
            "id": "h",
            "user_scenario": { "instructions": "Mark it done." },
            "initial_state": { "message_history": [
                { "role": "user", "content": "Make a task." },
                { "role": "assistant", "tool_calls": [{ "name": "create_task", "arguments": { "title": "T" } }] },
                { "role": "assistant", "content": "Created task_2." }
            ] }
        }));
        assert_eq!(t.goal().unwrap(), "Mark it done.");
        assert_eq!(
            t.history_lines(),
            vec!["user: Make a task.", r#"assistant called create_task {"title":"T"}"#, "assistant: Created task_2."]
        );
    }

    #[test]
    fn the_oracle_satisfies_assertions_when_there_are_no_gold_actions() {
        let t = task(json!({ "id": "e", "ticket": "x", "evaluation_criteria": {
            "env_assertions": [{ "func_name": "assert_task_status", "arguments": { "task_id": "task_2", "expected_status": "completed" } }],
            "communicate_info": ["Done", "really"] } }));
        let calls: Vec<(String, Value)> =
            t.oracle_calls().into_iter().map(|c| (c.name, serde_json::from_str(&c.arguments).unwrap())).collect();
        assert_eq!(
            calls,
            vec![
                ("update_task_status".to_string(), json!({ "task_id": "task_2", "status": "completed" })),
                ("respond".to_string(), json!({ "message": "Done. really" })),
                ("done".to_string(), json!({})),
            ]
        );
    }
}
