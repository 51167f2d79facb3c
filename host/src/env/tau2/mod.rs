//! `tau2-mock`: tau2-bench's mock domain, served by the real
//! `tau2-mock-mcp-eval` MCP server and graded here in Rust.
//!
//! The agent gets a ticket (`Goal: Create a new task called 'Important
//! Meeting' for user_1.`) and the domain's tools: `get_users`,
//! `create_task`, `update_task_status`, `transfer_to_human_agents`, and the
//! user-side `check_notifications` and `dismiss_notification` (tau2's solo
//! mode hands the agent the user's tools too). Two tools belong to the
//! environment itself: `respond {message}` says something to the user, and
//! `done {}` ends the task.
//!
//! Design choices:
//! - **The real server, pinned.** `make tau2` installs `tau2-mock-mcp-eval`
//!   [`PACKAGE_VERSION`] into the project's `.venv`; [`Tau2Suite::discover`]
//!   finds it. Each environment runs its own server over stdio
//!   ([`crate::mcp`]) with `TAU2_MOCK_MCP_STATE_DIR` set to a temporary
//!   directory that is removed with the environment.
//! - **State keys.** `reset` calls the server's `reset_state` with the domain
//!   and task id (without them the task's `initial_state` is skipped) under
//!   `tau2/mock/<task>/agent`; every business call gets that key injected,
//!   and `state_key` is hidden from the schemas, so the agent cannot reach
//!   another namespace. `reset_state` and `get_call_log` are not offered.
//! - **Grading in Rust, by the task's `reward_basis`** (tau2's default
//!   `[DB, COMMUNICATE]` when unstated), as tau2's evaluators do it
//!   ([`grade`]): DB — `reset` also replays the gold actions under
//!   `tau2/mock/<task>/gold`, and the agent's `tasks`, `users` and
//!   `notifications` in `$STATE_DIR/sha256(key).json` must equal the gold
//!   ones; ENV_ASSERTION — `assert_task_status` and
//!   `assert_notification_status` are evaluated on the agent's state;
//!   ACTION — every gold action was called (on its `compare_args`);
//!   COMMUNICATE — every `communicate_info` string appears in some reply,
//!   case-insensitively with commas ignored. Reward is 1 iff all hold.
//! - **Replies** are the `respond` messages plus the final answer, which the
//!   agent loop hands over through [`Environment::finish`]. The task is graded from the
//!   server's state whenever [`Environment::score`] is read, so ending with a
//!   text answer instead of `done` loses nothing but that answer.
//! - **Left out** ([`Tau2Suite::left_out`]): tasks graded by NL assertions
//!   (they need an LLM judge), tasks with no checkable criterion (only NL
//!   assertions), and tasks whose criteria contradict each other — found by
//!   replaying the gold actions when the suite is built: if the gold end
//!   state fails the task's own env assertions while DB is graded, no run
//!   can pass (the mock task `update_task_with_user_tools` wants a
//!   notification read that only the simulated user would dismiss).
//! - **Splits.** The mock package ships no split file, so of the gradable
//!   tasks in `tasks.json` order every third (the 3rd, 6th, ...) is test and
//!   the rest are train. Task ids are `tau2-mock/<task id>`.
//! - **Seeds change nothing**: tau2 tasks are fixed and the server is
//!   deterministic, so the same task and seed give the same observations.

mod grade;
mod task;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use self::task::{Basis, Tau2Task};
use crate::chat::{ToolCall, ToolSpec};
use crate::env::{EnvError, Environment, Observation, Score, Split, Start, Suite};
use crate::mcp::{CallToolResult, McpClient, McpError, McpTools, ServerCommand};

pub use self::grade::{Check, Grade};

/// The suite's name, also the first part of its task ids.
pub const NAME: &str = "tau2-mock";
/// The PyPI package and the version `make tau2` installs.
pub const PACKAGE: &str = "tau2-mock-mcp-eval";
pub const PACKAGE_VERSION: &str = "0.4.0";
/// The server's console script inside the venv.
pub const SERVER_SCRIPT: &str = "bin/tau2-mock-mcp";
/// The variable that tells the server where to keep its state files.
pub const STATE_DIR_VAR: &str = "TAU2_MOCK_MCP_STATE_DIR";
/// The variable that points [`Tau2Suite::discover`] at a venv.
pub const VENV_VAR: &str = "KILN_TAU2_VENV";
/// Tool calls allowed per task (the gold solutions need at most 3).
pub const MAX_STEPS: u32 = 20;
/// The domain name the server knows.
const DOMAIN: &str = "mock";
/// Server tools that are the host's, not the agent's.
const HOST_TOOLS: [&str; 2] = ["reset_state", "get_call_log"];
/// The argument every business tool takes to pick a state namespace.
const STATE_KEY: &str = "state_key";
/// Per-request deadline for the server (its calls take about a millisecond).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn broken(reason: impl Into<String>) -> EnvError {
    EnvError::Broken { env: NAME.to_string(), reason: reason.into() }
}

fn mcp_broken(e: McpError) -> EnvError {
    broken(e.to_string())
}

/// Where the installed package lives.
#[derive(Clone, Debug)]
struct Install {
    server: PathBuf,
    tasks_json: PathBuf,
}

impl Install {
    /// Find the pinned package in `venv`, or say how to install it.
    fn find(venv: &Path) -> Result<Install, EnvError> {
        let missing = |what: String| {
            broken(format!(
                "{PACKAGE} {PACKAGE_VERSION} is not installed in `{}` ({what}); run `make tau2`",
                venv.display()
            ))
        };
        let server = venv.join(SERVER_SCRIPT);
        if !server.is_file() {
            return Err(missing(format!("no `{}`", server.display())));
        }
        let lib = venv.join("lib");
        let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
            .map_err(|e| missing(format!("cannot read `{}`: {e}", lib.display())))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python3")))
            .collect();
        pythons.sort();
        for python in pythons {
            let site = python.join("site-packages");
            let tasks_json = site.join("tau2_mock_mcp/data/tasks.json");
            if !tasks_json.is_file() {
                continue;
            }
            let dist = site.join(format!("{}-{PACKAGE_VERSION}.dist-info", PACKAGE.replace('-', "_")));
            if !dist.is_dir() {
                return Err(missing(format!("another version is there, not `{}`", dist.display())));
            }
            return Ok(Install { server, tasks_json });
        }
        Err(missing("no `lib/python3*/site-packages/tau2_mock_mcp/data/tasks.json`".into()))
    }

    fn command(&self, state_dir: &Path) -> ServerCommand {
        ServerCommand::new(&self.server).env(STATE_DIR_VAR, state_dir)
    }
}

/// A running server with its own state directory, removed on drop.
struct Server {
    // Field order matters: the server is stopped before its directory goes.
    tools: McpTools,
    state_dir: tempfile::TempDir,
}

impl Server {
    fn start(install: &Install) -> Result<Server, EnvError> {
        let state_dir = tempfile::Builder::new()
            .prefix("kiln-tau2-")
            .tempdir()
            .map_err(|e| broken(format!("cannot make a state directory: {e}")))?;
        let client = McpClient::spawn(&install.command(state_dir.path()), REQUEST_TIMEOUT).map_err(mcp_broken)?;
        let tools = McpTools::new(client)
            .map_err(mcp_broken)?
            .exclude(&HOST_TOOLS)
            .inject(STATE_KEY, Value::Null)
            .render_with(tau2_content);
        Ok(Server { tools, state_dir })
    }

    fn state_file(&self, key: &str) -> PathBuf {
        self.state_dir.path().join(format!("{:x}.json", Sha256::digest(key.as_bytes())))
    }

    /// The databases under `key`, from the server's state file.
    fn db(&self, key: &str) -> Result<Value, String> {
        let path = self.state_file(key);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let state: Value = serde_json::from_str(&text).map_err(|e| format!("`{}` is not JSON: {e}", path.display()))?;
        Ok(grade::db_view(&state))
    }

    /// Reset namespace `key` to the start of `task`.
    fn reset(&mut self, task: &str, key: &str) -> Result<(), EnvError> {
        let client = self.tools.client();
        let args = json!({ "domain": DOMAIN, "task_id": task, STATE_KEY: key });
        let result = client.call_tool("reset_state", args).map_err(mcp_broken)?;
        let ok = result.structured_content.as_ref().and_then(|s| s.get("ok")).and_then(Value::as_bool);
        if result.is_error || ok == Some(false) {
            return Err(broken(format!("reset_state for task `{task}` failed: {}", result.text())));
        }
        Ok(())
    }

    /// Reset `key` to `task`, replay its gold actions there, and return the
    /// resulting databases. A gold call the server rejects is skipped, as
    /// tau2 skips it (with a warning).
    fn gold_db(&mut self, task: &Tau2Task, key: &str) -> Result<Value, EnvError> {
        self.reset(&task.id, key)?;
        for action in task.criteria().actions.unwrap_or_default() {
            let mut args = action.arguments.clone();
            args.insert(STATE_KEY.into(), json!(key));
            let result = self.tools.client().call_tool(&action.name, Value::Object(args)).map_err(mcp_broken)?;
            if result.is_error {
                tracing::warn!(task = %task.id, action = %action.name, "a gold action failed: {}", tau2_content(&result));
            }
        }
        self.db(key).map_err(broken)
    }
}

/// The tool message tau2 would show the agent: the server's
/// `tau2_tool_message.content` (`{"task_id": ...}` or `Error: ...`).
fn tau2_content(result: &CallToolResult) -> String {
    result
        .structured_content
        .as_ref()
        .and_then(|s| s.pointer("/tau2_tool_message/content"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| result.text())
}

fn agent_key(task: &str) -> String {
    format!("tau2/{DOMAIN}/{task}/agent")
}

fn gold_key(task: &str) -> String {
    format!("tau2/{DOMAIN}/{task}/gold")
}

/// The tasks, read once and shared by every environment of the suite.
struct Catalog {
    install: Install,
    tasks: Vec<Arc<Tau2Task>>,
    train: Vec<usize>,
    test: Vec<usize>,
    left_out: Vec<(String, String)>,
}

impl Catalog {
    fn get(&self, id: &str) -> Option<&Arc<Tau2Task>> {
        let bare = id.strip_prefix(NAME)?.strip_prefix('/')?;
        self.tasks.iter().find(|t| t.id == bare)
    }
    fn is_gradable(&self, task: &Tau2Task) -> bool {
        !self.left_out.iter().any(|(id, _)| *id == task.id)
    }
}

/// The `tau2-mock` suite: the gradable tasks of the mock domain.
#[derive(Clone)]
pub struct Tau2Suite {
    catalog: Arc<Catalog>,
}

impl Tau2Suite {
    /// The suite over the package installed in `venv` (a `python -m venv`
    /// folder). Starts one server briefly to check every task's gold
    /// solution against its own criteria.
    pub fn from_venv(venv: &Path) -> Result<Tau2Suite, EnvError> {
        let install = Install::find(venv)?;
        let text = std::fs::read_to_string(&install.tasks_json)
            .map_err(|e| broken(format!("cannot read `{}`: {e}", install.tasks_json.display())))?;
        let tasks: Vec<Tau2Task> = serde_json::from_str(&text)
            .map_err(|e| broken(format!("`{}` is not a list of tau2 tasks: {e}", install.tasks_json.display())))?;
        let mut left_out = Vec::new();
        let mut probe: Option<Server> = None;
        for task in &tasks {
            let verdict = match task.static_gradability() {
                Ok(()) => {
                    let server = match probe.as_mut() {
                        Some(s) => s,
                        None => probe.insert(Server::start(&install)?),
                    };
                    contradiction(server, task)?
                }
                Err(why) => Some(why),
            };
            if let Some(why) = verdict {
                left_out.push((task.id.clone(), why));
            }
        }
        drop(probe);
        let tasks: Vec<Arc<Tau2Task>> = tasks.into_iter().map(Arc::new).collect();
        let gradable: Vec<usize> =
            (0..tasks.len()).filter(|&i| !left_out.iter().any(|(id, _)| *id == tasks[i].id)).collect();
        // Every third gradable task (the 3rd, 6th, ...) is test.
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (n, &i) in gradable.iter().enumerate() {
            if n % 3 == 2 {
                test.push(i)
            } else {
                train.push(i)
            }
        }
        Ok(Tau2Suite { catalog: Arc::new(Catalog { install, tasks, train, test, left_out }) })
    }

    /// The suite over the venv named by `KILN_TAU2_VENV`, else the nearest
    /// `.venv` with the package, from the current directory upward.
    pub fn discover() -> Result<Tau2Suite, EnvError> {
        if let Some(venv) = std::env::var_os(VENV_VAR) {
            return Tau2Suite::from_venv(Path::new(&venv));
        }
        let cwd = std::env::current_dir().map_err(|e| broken(format!("cannot read the current directory: {e}")))?;
        for dir in cwd.ancestors() {
            let venv = dir.join(".venv");
            if venv.join(SERVER_SCRIPT).is_file() {
                return Tau2Suite::from_venv(&venv);
            }
        }
        Err(broken(format!(
            "no `.venv` with {PACKAGE} in `{}` or above it; run `make tau2` in the kiln checkout, or set {VENV_VAR}",
            cwd.display()
        )))
    }

    /// Tasks of `tasks.json` that are in no split, each with the reason.
    pub fn left_out(&self) -> &[(String, String)] {
        &self.catalog.left_out
    }

    /// The reference solution of `task` as tool calls (for tests and
    /// baselines): the gold actions, the required statements through
    /// `respond`, then `done`. `None` for unknown or left-out tasks.
    pub fn oracle(&self, task: &str) -> Option<Vec<ToolCall>> {
        let t = self.catalog.get(task).filter(|t| self.catalog.is_gradable(t))?;
        Some(t.oracle_calls())
    }

    /// A fresh environment of the concrete type, with its own server.
    pub fn env(&self) -> Result<Tau2Env, EnvError> {
        let server = Server::start(&self.catalog.install)?;
        Ok(Tau2Env { server, catalog: Arc::clone(&self.catalog), episode: None })
    }
}

/// Why `task`'s criteria cannot all hold, found by replaying its gold
/// actions: with DB graded, the gold end state is the only passing one, so
/// it must satisfy the task's env assertions too.
fn contradiction(server: &mut Server, task: &Tau2Task) -> Result<Option<String>, EnvError> {
    let basis = task.basis().map_err(broken)?;
    let c = task.criteria();
    let assertions = c.env_assertions.clone().unwrap_or_default();
    if !(basis.contains(&Basis::Db) && basis.contains(&Basis::EnvAssertion) && !assertions.is_empty()) {
        return Ok(None);
    }
    let gold = server.gold_db(task, &format!("tau2/{DOMAIN}/{}/probe", task.id))?;
    let run = grade::Run { db: &gold, gold_db: &gold, calls: &[], replies: &[] };
    let failed = grade::grade(task, &[Basis::EnvAssertion], &run).checks.into_iter().find(|c| !c.passed);
    Ok(failed.map(|check| {
        format!("its criteria contradict each other: the DB check wants the gold end state, where {}", check.detail)
    }))
}

impl Suite for Tau2Suite {
    fn name(&self) -> &str {
        NAME
    }

    fn tasks(&self, split: Split) -> Vec<String> {
        let indices = match split {
            Split::Train => &self.catalog.train,
            Split::Test => &self.catalog.test,
        };
        indices.iter().map(|&i| format!("{NAME}/{}", self.catalog.tasks[i].id)).collect()
    }

    fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.env()?))
    }
}

/// One task in progress.
struct Episode {
    task: Arc<Tau2Task>,
    basis: Vec<Basis>,
    agent_key: String,
    gold_db: Value,
    initial_db: Value,
    calls: Vec<(String, Map<String, Value>)>,
    replies: Vec<String>,
    steps: u32,
    done: bool,
}

/// One `tau2-mock` environment: a server of its own, one task at a time.
pub struct Tau2Env {
    server: Server,
    catalog: Arc<Catalog>,
    episode: Option<Episode>,
}

impl Tau2Env {
    /// Count `text` as said to the user: the agent loop passes the model's
    /// final answer here, since a task ends on a text answer and the
    /// [`Environment`] trait has no call for it.
    pub fn record_answer(&mut self, text: &str) {
        if let Some(e) = self.episode.as_mut().filter(|_| !text.trim().is_empty()) {
            e.replies.push(text.to_string());
        }
    }

    /// The server's state directory (removed when the environment is dropped).
    pub fn state_dir(&self) -> &Path {
        self.server.state_dir.path()
    }

    /// Whether the gold solution of the current task changes the database
    /// (so doing nothing cannot pass a DB check).
    pub fn gold_changes_db(&self) -> bool {
        self.episode.as_ref().is_some_and(|e| e.gold_db != e.initial_db)
    }

    /// The current task graded criterion by criterion.
    pub fn grade(&self) -> Result<Grade, EnvError> {
        let e = self.episode.as_ref().ok_or_else(|| broken("grade called before reset"))?;
        let db = self.server.db(&e.agent_key).map_err(broken)?;
        let run = grade::Run { db: &db, gold_db: &e.gold_db, calls: &e.calls, replies: &e.replies };
        Ok(grade::grade(&e.task, &e.basis, &run))
    }

    fn tool_specs(&self) -> Vec<ToolSpec> {
        let mut specs = self.server.tools.specs().to_vec();
        specs.push(ToolSpec::new(
            "respond",
            "Say something to the user (confirmations, answers, what was done).",
            json!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "what to tell the user" } },
                "required": ["message"],
                "additionalProperties": false
            }),
        ));
        specs.push(ToolSpec::new(
            "done",
            "End the task once the request is handled.",
            json!({ "type": "object", "properties": {}, "additionalProperties": false }),
        ));
        specs
    }

    fn prompt(task: &Tau2Task, goal: &str) -> String {
        let mut prompt = format!("Goal: {goal}\n");
        let history = task.history_lines();
        if !history.is_empty() {
            prompt.push_str("\nThe conversation so far:\n");
            for line in history {
                prompt.push_str(&line);
                prompt.push('\n');
            }
        }
        prompt.push_str(
            "\nYou are the support agent. Use the tools to handle the request, tell the user what you did \
             with `respond` (or in your final answer), and call `done` when it is handled.",
        );
        prompt
    }
}

impl Environment for Tau2Env {
    fn finish(&mut self, answer: &str) {
        self.record_answer(answer);
    }

    fn reset(&mut self, task: &str, _seed: u64) -> Result<Start, EnvError> {
        let catalog = Arc::clone(&self.catalog);
        let found =
            catalog.get(task).ok_or_else(|| EnvError::UnknownTask { env: NAME.to_string(), task: task.to_string() })?;
        if let Some((_, why)) = catalog.left_out.iter().find(|(id, _)| *id == found.id) {
            return Err(broken(format!("task `{task}` is in no split and cannot be graded here: {why}")));
        }
        let goal = found.goal().ok_or_else(|| broken(format!("task `{task}` has no goal")))?;
        self.episode = None;
        let basis = found.basis().map_err(broken)?;
        let gold_db = self.server.gold_db(found, &gold_key(&found.id))?;
        let agent_key = agent_key(&found.id);
        self.server.reset(&found.id, &agent_key)?;
        let initial_db = self.server.db(&agent_key).map_err(broken)?;
        self.server.tools.set_injected(STATE_KEY, json!(agent_key));
        self.episode = Some(Episode {
            task: Arc::clone(found),
            basis,
            agent_key,
            gold_db,
            initial_db,
            calls: Vec::new(),
            replies: Vec::new(),
            steps: 0,
            done: false,
        });
        Ok(Start { prompt: Tau2Env::prompt(found, &goal), tools: self.tool_specs(), max_steps: MAX_STEPS })
    }

    fn step(&mut self, call: &ToolCall) -> Result<Observation, EnvError> {
        let known: Vec<String> = self.tool_specs().into_iter().map(|s| s.name).collect();
        let e =
            self.episode.as_mut().ok_or_else(|| broken("step called before reset; call reset with a task id first"))?;
        let refuse = |content: String| Ok(Observation { content, is_error: true });
        if e.done {
            return refuse("Error: the task is over; answer without a tool call".into());
        }
        e.steps += 1;
        if e.steps >= MAX_STEPS {
            e.done = true;
        }
        let parsed: Result<Map<String, Value>, String> = match serde_json::from_str::<Value>(&call.arguments) {
            _ if call.arguments.trim().is_empty() => Ok(Map::new()),
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(format!("must be a JSON object, not `{other}`")),
            Err(err) => Err(format!("are not valid JSON: {err}")),
        };
        match call.name.as_str() {
            "respond" => {
                let message = match &parsed {
                    Ok(args) => args.get("message").and_then(Value::as_str),
                    Err(_) => None,
                };
                match message {
                    Some(m) => {
                        e.replies.push(m.to_string());
                        Ok(Observation { content: "Sent to the user.".into(), is_error: false })
                    }
                    None => refuse("Error: `respond` needs {\"message\": \"...\"}".into()),
                }
            }
            "done" => {
                e.done = true;
                Ok(Observation { content: "The task is over.".into(), is_error: false })
            }
            name if self.server.tools.contains(name) => {
                if let Ok(args) = &parsed {
                    e.calls.push((name.to_string(), args.clone()));
                }
                self.server.tools.call(name, &call.arguments).map_err(mcp_broken)
            }
            name => refuse(format!("Error: unknown tool `{name}`; the tools are: {}", known.join(", "))),
        }
    }

    fn done(&self) -> bool {
        self.episode.as_ref().is_none_or(|e| e.done)
    }

    fn score(&self) -> Score {
        if self.episode.is_none() {
            return Score::default();
        }
        match self.grade() {
            Ok(grade) => grade.score(),
            Err(e) => {
                tracing::warn!("{e}");
                Score::default()
            }
        }
    }
}
