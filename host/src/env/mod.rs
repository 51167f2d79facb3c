//! Environments: where tasks come from and where tool calls land.
//!
//! An [`Environment`] holds one task at a time: `reset` starts it from a seed,
//! `step` executes a tool call, and `score` grades it. The score is read only
//! by the agent loop after the task is over; nothing in it is ever passed to a
//! processor. A [`Suite`] names tasks and splits and makes environments.
//! Environments are synchronous: the built-in ones are in-process and the
//! bridges bound every read with their own timeout.

use serde::{Deserialize, Serialize};

use crate::chat::{ToolCall, ToolSpec};

/// Which part of a suite's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// What the agent sees when a task starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// The task instruction plus the first observation, as the first user message.
    pub prompt: String,
    /// The tools the environment offers for this task.
    pub tools: Vec<ToolSpec>,
    /// The step budget the environment allows.
    pub max_steps: u32,
}

/// The result of one tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub content: String,
    /// The call was invalid (unknown tool, bad arguments, inadmissible action).
    pub is_error: bool,
}

/// How a finished task went. Never shown to processors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// In [0, 1].
    pub reward: f64,
    pub success: bool,
}

/// Why an environment could not go on. The task is marked errored, not failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("unknown task `{task}` in environment `{env}`")]
    UnknownTask { env: String, task: String },
    #[error("environment `{env}`: {reason}")]
    Broken { env: String, reason: String },
}

/// One task at a time of one environment.
pub trait Environment: Send {
    /// Start `task` from `seed`. Same task and seed, same start, always.
    fn reset(&mut self, task: &str, seed: u64) -> Result<Start, EnvError>;
    /// Execute one tool call. Invalid calls are observations with
    /// `is_error`, not `Err`: `Err` means the environment itself broke.
    fn step(&mut self, call: &ToolCall) -> Result<Observation, EnvError>;
    /// Whether the task is over (solved, failed or out of steps).
    fn done(&self) -> bool;
    /// The grade so far.
    fn score(&self) -> Score;
    /// The agent's final answer (a reply without a tool call). Environments
    /// that grade what the agent says (tau2's required statements) keep it.
    fn finish(&mut self, _answer: &str) {}
}

/// A named collection of tasks that makes environments.
pub trait Suite: Send + Sync {
    fn name(&self) -> &str;
    /// Task ids of a split, in a fixed order.
    fn tasks(&self, split: Split) -> Vec<String>;
    /// A fresh environment, ready for `reset`.
    fn make(&self) -> Result<Box<dyn Environment>, EnvError>;
}

pub mod bridge;
pub mod house;
pub(crate) mod rng;
pub mod shop;
pub mod tau2;

impl Split {
    /// The split's name in task ids: `train` or `test`.
    pub fn label(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// The arguments of a tool call as a JSON object (blank text = `{}`), or the
/// error the agent should see, naming the tool and quoting the arguments.
pub(crate) fn object_arguments(call: &ToolCall) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if call.arguments.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(&call.arguments) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("the arguments of `{}` must be a JSON object: {}", call.name, call.arguments)),
        Err(err) => Err(format!("the arguments of `{}` are not a valid JSON object ({err}): {}", call.name, call.arguments)),
    }
}

/// The two tools of a text world (`house` and the bridges): `act {command}`
/// and `admissible {}`, with the world's own descriptions.
pub(crate) fn text_world_tools(act: &str, admissible: &str) -> Vec<ToolSpec> {
    vec![
        ToolSpec::new(
            "act",
            act,
            serde_json::json!({
                "type": "object",
                "properties": { "command": { "type": "string" } },
                "required": ["command"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new(
            "admissible",
            admissible,
            serde_json::json!({ "type": "object", "properties": {}, "additionalProperties": false }),
        ),
    ]
}

/// The ids of a built-in suite's `count` tasks of `split`:
/// `<suite>/<split>/<index>`.
pub(crate) fn task_ids(suite: &str, split: Split, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{suite}/{}/{i}", split.label())).collect()
}

/// The split and index of a built-in suite's task id, the inverse of
/// [`task_ids`]; `None` for another suite, split or a non-canonical index
/// (`01`, empty).
pub(crate) fn parse_task_id(suite: &str, id: &str) -> Option<(Split, usize)> {
    let (split, index) = id.strip_prefix(suite)?.strip_prefix('/')?.split_once('/')?;
    let canonical = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) && (index == "0" || !index.starts_with('0'));
    let split = [Split::Train, Split::Test].into_iter().find(|s| s.label() == split)?;
    Some((split, index.parse().ok().filter(|_| canonical)?))
}

/// The built-in suite called `name` (`shop` or `house`), freshly built.
pub fn builtin(name: &str) -> Option<Box<dyn Suite>> {
    match name {
        shop::NAME => Some(Box::new(shop::ShopSuite::new())),
        house::NAME => Some(Box::new(house::HouseSuite::new())),
        _ => None,
    }
}

/// Every environment `kiln run --env` knows, for help texts.
pub const KNOWN: &str = "shop, house, tau2-mock, twx[:GAME], babyai:LEVEL, bridge:PATH";

/// Open a suite by name: the built-in ones, `tau2-mock` (needs `make tau2`),
/// and bridged environments such as `twx:coin` or `babyai:GoToLocal` (need
/// `make bridges`). Errors say what is missing and how to install it.
pub fn open(name: &str) -> Result<Box<dyn Suite>, EnvError> {
    if let Some(s) = builtin(name) {
        return Ok(s);
    }
    if name == tau2::NAME {
        return Ok(Box::new(tau2::Tau2Suite::discover()?));
    }
    if bridge::is_bridge_spec(name) {
        return bridge::suite(name);
    }
    Err(EnvError::Broken { env: name.to_string(), reason: format!("unknown environment; known: {KNOWN}") })
}
