//! tau2's grading rules, over plain JSON: the databases, the calls made and
//! the replies given. Nothing here talks to the server.

use serde_json::{Map, Value};

use super::task::{Basis, EnvAssertion, GoldAction, Tau2Task};
use crate::env::Score;

/// The parts of a mock state file that make up tau2's databases: the
/// agent's (`tasks`, `users`) and the user's (`notifications`). The call
/// log and bookkeeping fields are not compared.
pub(super) const DB_KEYS: [&str; 3] = ["tasks", "users", "notifications"];

/// The databases of a state file, without the rest.
pub(super) fn db_view(state: &Value) -> Value {
    let mut view = Map::new();
    for key in DB_KEYS {
        view.insert(key.to_string(), state.get(key).cloned().unwrap_or(Value::Null));
    }
    Value::Object(view)
}

/// One graded criterion.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// `DB`, `ENV_ASSERTION`, `ACTION` or `COMMUNICATE`.
    pub criterion: &'static str,
    pub passed: bool,
    /// What was compared, in words (for reports and failing tests).
    pub detail: String,
}

/// Every criterion of a task's reward basis, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grade {
    pub checks: Vec<Check>,
}

impl Grade {
    /// Reward 1 iff every check passed, as tau2 multiplies 0/1 rewards.
    pub fn score(&self) -> Score {
        let success = self.checks.iter().all(|c| c.passed);
        Score { reward: if success { 1.0 } else { 0.0 }, success }
    }
}

/// What the agent did, as the grader needs it.
pub(super) struct Run<'a> {
    /// The agent's databases now ([`db_view`] of its state file).
    pub db: &'a Value,
    /// The databases after replaying the gold actions.
    pub gold_db: &'a Value,
    /// Every business tool call: name and arguments.
    pub calls: &'a [(String, Map<String, Value>)],
    /// Everything the agent said to the user.
    pub replies: &'a [String],
}

/// Grade `run` by `task`'s reward basis, following tau2's evaluators: DB and
/// ENV_ASSERTION only when the task has gold actions or env assertions;
/// ACTION and COMMUNICATE only when it lists some.
pub(super) fn grade(task: &Tau2Task, basis: &[Basis], run: &Run) -> Grade {
    let c = task.criteria();
    let mut checks = Vec::new();
    let env_checked = c.actions.is_some() || c.env_assertions.is_some();
    if basis.contains(&Basis::Db) && env_checked {
        let passed = run.db == run.gold_db;
        let detail = if passed {
            "the database equals the gold replay's".to_string()
        } else {
            format!("the database differs from the gold replay's: {}", first_difference(run.gold_db, run.db, ""))
        };
        checks.push(Check { criterion: "DB", passed, detail });
    }
    if basis.contains(&Basis::EnvAssertion) && env_checked {
        for a in c.env_assertions.as_deref().unwrap_or_default() {
            let (passed, detail) = match assertion_holds(a, run.db) {
                Ok(value) => {
                    (value == a.assert_value, format!("{} is {value}, wanted {}", describe(a), a.assert_value))
                }
                Err(why) => (false, format!("{}: {why}", describe(a))),
            };
            checks.push(Check { criterion: "ENV_ASSERTION", passed, detail });
        }
    }
    if basis.contains(&Basis::Action) {
        for action in c.actions.as_deref().unwrap_or_default() {
            let passed = run.calls.iter().any(|(name, args)| action_matches(action, name, args));
            let detail = format!("{} {}", action.name, Value::Object(action.arguments.clone()));
            let detail = if passed { format!("called {detail}") } else { format!("never called {detail}") };
            checks.push(Check { criterion: "ACTION", passed, detail });
        }
    }
    if basis.contains(&Basis::Communicate) {
        for info in c.communicate_info.as_deref().unwrap_or_default() {
            let wanted = normalize(info);
            let passed = run.replies.iter().any(|r| normalize(r).contains(&wanted));
            let detail = format!("{} `{info}` to the user", if passed { "said" } else { "never said" });
            checks.push(Check { criterion: "COMMUNICATE", passed, detail });
        }
    }
    Grade { checks }
}

/// tau2's comparison for required statements: case-insensitive, commas ignored.
fn normalize(text: &str) -> String {
    text.to_lowercase().replace(',', "")
}

/// tau2's action match: same name, and equal values on `compare_args`
/// (every gold argument when unset, nothing when empty).
fn action_matches(action: &GoldAction, name: &str, args: &Map<String, Value>) -> bool {
    if action.name != name {
        return false;
    }
    let keys: Vec<&String> = match &action.compare_args {
        Some(keys) => keys.iter().collect(),
        None => action.arguments.keys().collect(),
    };
    keys.into_iter().all(|k| args.get(k) == action.arguments.get(k))
}

fn describe(a: &EnvAssertion) -> String {
    format!("{}({})", a.func_name, Value::Object(a.arguments.clone()))
}

/// Evaluate one of the mock domain's assertion functions on `db`.
fn assertion_holds(a: &EnvAssertion, db: &Value) -> Result<bool, String> {
    let arg = |k: &str| a.arguments.get(k).and_then(Value::as_str).ok_or_else(|| format!("argument `{k}` is missing"));
    let (table, key) = match a.func_name.as_str() {
        "assert_task_status" => ("tasks", arg("task_id")?),
        "assert_notification_status" => ("notifications", arg("notification_id")?),
        other => return Err(format!("`{other}` cannot be checked here")),
    };
    let expected = arg("expected_status")?;
    let row = db.get(table).and_then(|t| t.get(key)).ok_or_else(|| format!("there is no `{key}` in {table}"))?;
    Ok(row.get("status").and_then(Value::as_str) == Some(expected))
}

/// The first path where `want` and `got` differ, e.g. `tasks.task_2: missing`.
fn first_difference(want: &Value, got: &Value, path: &str) -> String {
    let here = if path.is_empty() { "(top)".to_string() } else { path.to_string() };
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match g.get(k) {
                    None => return format!("{sub}: missing, wanted {wv}"),
                    Some(gv) if gv != wv => return first_difference(wv, gv, &sub),
                    _ => {}
                }
            }
            match g.keys().find(|k| !w.contains_key(*k)) {
                Some(k) => {
                    format!("{}: unexpected {}", if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, g[k])
                }
                None => format!("{here}: differs"),
            }
        }
        _ => format!("{here}: {got}, wanted {want}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(criteria: Value) -> Tau2Task {
        serde_json::from_value(json!({ "id": "t", "ticket": "x", "evaluation_criteria": criteria })).unwrap()
    }

    fn db(status: &str) -> Value {
        json!({ "tasks": { "task_1": { "status": status } }, "users": {}, "notifications": {} })
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn db_is_compared_with_the_gold_replay_and_the_difference_is_named() {
        let t = task(json!({ "actions": [] }));
        let basis = t.basis().unwrap();
        let (gold, mine) = (db("completed"), db("pending"));
        let g = grade(&t, &basis, &Run { db: &mine, gold_db: &gold, calls: &[], replies: &[] });
        assert_eq!(g.score(), Score { reward: 0.0, success: false });
        assert_eq!(
            g.checks[0].detail,
            r#"the database differs from the gold replay's: tasks.task_1.status: "pending", wanted "completed""#
        );
        let g = grade(&t, &basis, &Run { db: &gold, gold_db: &gold, calls: &[], replies: &[] });
        assert_eq!(g.score(), Score { reward: 1.0, success: true });
    }

    #[test]
    fn statements_match_case_insensitively_without_commas() {
        let t = task(json!({ "communicate_info": ["Task 1, done"] }));
        let basis = t.basis().unwrap();
        let d = db("x");
        let said = ["ok: TASK 1 DONE now".to_string()];
        let g = grade(&t, &basis, &Run { db: &d, gold_db: &d, calls: &[], replies: &said });
        assert!(g.score().success, "{g:?}");
        assert!(g.checks.iter().all(|c| c.criterion == "COMMUNICATE"), "no DB check without actions: {g:?}");
        let g = grade(&t, &basis, &Run { db: &d, gold_db: &d, calls: &[], replies: &[] });
        assert!(!g.score().success);
    }

    #[test]
    fn actions_match_on_their_compare_args() {
        let t = task(json!({ "reward_basis": ["ACTION"], "actions": [
            { "name": "transfer_to_human_agents", "arguments": { "summary": "exact words" }, "compare_args": [] },
            { "name": "update_task_status", "arguments": { "task_id": "task_1", "status": "done" } }
        ] }));
        let basis = t.basis().unwrap();
        let d = db("x");
        let good = [
            ("transfer_to_human_agents".to_string(), args(json!({ "summary": "other words" }))),
            ("update_task_status".to_string(), args(json!({ "task_id": "task_1", "status": "done" }))),
        ];
        assert!(grade(&t, &basis, &Run { db: &d, gold_db: &d, calls: &good, replies: &[] }).score().success);
        let wrong =
            [good[0].clone(), ("update_task_status".to_string(), args(json!({ "task_id": "task_1", "status": "x" })))];
        let g = grade(&t, &basis, &Run { db: &d, gold_db: &d, calls: &wrong, replies: &[] });
        assert_eq!(g.checks.iter().filter(|c| !c.passed).count(), 1, "{g:?}");
    }

    #[test]
    fn env_assertions_read_the_agent_database() {
        let t = task(json!({ "reward_basis": ["ENV_ASSERTION"], "env_assertions": [
            { "env_type": "assistant", "func_name": "assert_task_status", "arguments": { "task_id": "task_1", "expected_status": "completed" } },
            { "env_type": "assistant", "func_name": "assert_task_status", "arguments": { "task_id": "task_9", "expected_status": "pending" }, "assert_value": false }
        ] }));
        let basis = t.basis().unwrap();
        let (done, gold) = (db("completed"), db("whatever"));
        let g = grade(&t, &basis, &Run { db: &done, gold_db: &gold, calls: &[], replies: &[] });
        assert_eq!(g.checks.len(), 2);
        assert!(g.checks[0].passed, "{g:?}");
        assert!(!g.checks[1].passed && g.checks[1].detail.contains("there is no `task_9` in tasks"), "{g:?}");
        let pending = db("pending");
        assert!(!grade(&t, &basis, &Run { db: &pending, gold_db: &gold, calls: &[], replies: &[] }).checks[0].passed);
    }
}
