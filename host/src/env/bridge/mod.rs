//! External environments behind a process bridge.
//!
//! A bridge is a child process that speaks the kiln bridge protocol: JSON
//! lines over its stdin and stdout, described in docs/bridge-protocol.md and
//! implemented for Python by `bridges/kiln_bridge.py`. The reference bridges
//! serve TextWorldExpress (`bridges/twx_bridge.py`) and MiniGrid's BabyAI
//! levels (`bridges/babyai_bridge.py`) from the project venv that `make
//! bridges` installs.
//!
//! Design choices:
//! - One bridge process per environment, spawned by [`Suite::make`]: each
//!   holds its own engine (TextWorldExpress a JVM), and a crash takes down
//!   one task, never a neighbour. A bridge that died is started again by the
//!   next `reset`.
//! - The agent's tools are `act {command}` and `admissible {}`, as in the
//!   built-in `house`. Admissibility is checked here, against the list the
//!   bridge sent with its last state: an inadmissible command is an
//!   observation with `is_error` and never reaches the bridge. Matching
//!   ignores case, surrounding blanks and a final period, and sends the
//!   bridge's own spelling.
//! - Everything that goes wrong with the process (it is missing, exits,
//!   hangs past its timeout, prints something that is not a protocol line,
//!   or speaks another protocol version) is [`EnvError::Broken`] with a
//!   reason that names the bridge and quotes the last lines of its stderr.
//!   A refusal (`ok: false`) is `Broken` too, quoting the bridge's words.
//! - Task ids are `<env>/<bridge task>`, with `<env>` from the bridge's hello
//!   (`twx/coin/train/3`, `babyai/GoToLocal/test/7`), so they never collide
//!   with another suite's. The seed of `reset` is passed on; the reference
//!   bridges' tasks fix their games completely, so it does not change them.
//! - Score: `reward` is the bridge's score clamped into [0, 1], `success` is
//!   its `won`. The step budget comes from the reset reply's `max_steps`
//!   (default [`DEFAULT_MAX_STEPS`]); every tool call counts, as in `house`.
//!
//! Suite specs ([`suite`]): `twx` (all eight games), `twx:coin`,
//! `twx:coin,twc`, `twx:cookingworld:numLocations=5,includeDoors=1` (game
//! parameters), `babyai` (five levels), `babyai:GoToLocal`,
//! `babyai:GoToLocal,PickupLoc`, and `bridge:<path>` for any program that
//! speaks the protocol (a `.py` path runs with the venv's Python).

mod process;
mod protocol;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use self::process::{BridgeProcess, Failure};
pub use self::process::{Launch, Timeouts, STDERR_LINES};
use self::protocol::{decode, Request, State};
pub use self::protocol::{Hello, PROTOCOL_VERSION};
use crate::chat::{ToolCall, ToolSpec};
use crate::env::{EnvError, Environment, Observation, Score, Split, Start, Suite};

/// The step budget when a bridge's reset reply names none.
pub const DEFAULT_MAX_STEPS: u32 = 50;
/// The environment variable that overrides the Python that runs bridges.
pub const PYTHON_VAR: &str = "KILN_PYTHON";

/// Whether `spec` names a bridge suite (`twx...`, `babyai...`, `bridge:...`),
/// so that a caller can route it to [`suite`].
pub fn is_bridge_spec(spec: &str) -> bool {
    let kind = spec.split(':').next().unwrap_or_default();
    matches!(kind, "twx" | "babyai") || spec.starts_with("bridge:")
}

/// The suite a spec names, with its bridge started once to list the tasks.
pub fn suite(spec: &str) -> Result<Box<dyn Suite>, EnvError> {
    Ok(Box::new(BridgeSuite::new(spec)?))
}

/// The repository folder that holds `bridges/` and `.venv/`: the current
/// directory or its nearest ancestor with `bridges/kiln_bridge.py`, else the
/// checkout this kiln was built from.
pub fn project_root() -> PathBuf {
    let here = std::env::current_dir().ok();
    here.iter()
        .flat_map(|dir| dir.ancestors())
        .find(|dir| dir.join("bridges/kiln_bridge.py").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf())
}

/// The Python that runs bridges: `$KILN_PYTHON`, else `.venv/bin/python`
/// under [`project_root`].
pub fn python() -> PathBuf {
    match std::env::var_os(PYTHON_VAR) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => project_root().join(".venv/bin/python"),
    }
}

/// A launch for a Python bridge script, run by [`python`]. Fails, naming the
/// fix, when the interpreter or the script is missing.
pub fn python_launch(script: &Path, args: Vec<String>) -> Result<Launch, String> {
    let from_var = std::env::var_os(PYTHON_VAR).is_some_and(|p| !p.is_empty());
    launch_with(&python(), from_var, script, args)
}

fn launch_with(python: &Path, from_var: bool, script: &Path, args: Vec<String>) -> Result<Launch, String> {
    let bare_name = python.components().count() == 1;
    if !bare_name && !python.exists() {
        let origin = if from_var {
            format!("${PYTHON_VAR} points at {}, which does not exist", python.display())
        } else {
            format!("the bridges' Python venv is missing ({} does not exist)", python.display())
        };
        return Err(format!(
            "bridge `{}` cannot run: {origin}. Run `make bridges` to install it, or set {PYTHON_VAR} to a Python \
             with bridges/requirements.txt installed",
            script.display()
        ));
    }
    if !script.is_file() {
        return Err(format!("bridge script {} does not exist", script.display()));
    }
    let mut all = vec![script.display().to_string()];
    all.extend(args);
    // Bridges anywhere can `import kiln_bridge`.
    let mut path = project_root().join("bridges").display().to_string();
    if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        path = format!("{path}:{}", existing.to_string_lossy());
    }
    Ok(Launch {
        program: python.to_path_buf(),
        args: all,
        vars: vec![
            ("JAVA_TOOL_OPTIONS".into(), "-XX:-UsePerfData".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("PYTHONPATH".into(), path),
        ],
    })
}

/// What a spec asks for: how to launch, and the env name the hello must say.
fn resolve(spec: &str) -> Result<(Launch, Option<&'static str>), String> {
    let bridges = project_root().join("bridges");
    if let Some(path) = spec.strip_prefix("bridge:") {
        let path = PathBuf::from(path);
        if path.extension().is_some_and(|e| e == "py") {
            return Ok((python_launch(&path, Vec::new())?, None));
        }
        return Ok((Launch { program: path, args: Vec::new(), vars: Vec::new() }, None));
    }
    let mut parts = spec.splitn(3, ':');
    let kind = parts.next().unwrap_or_default();
    let choice = parts.next().filter(|c| !c.is_empty());
    let params = parts.next();
    match kind {
        "twx" => {
            let mut args = Vec::new();
            if let Some(games) = choice {
                args.extend(["--games".to_string(), games.to_string()]);
            }
            if let Some(params) = params {
                args.extend(["--params".to_string(), params.to_string()]);
            }
            Ok((python_launch(&bridges.join("twx_bridge.py"), args)?, Some("twx")))
        }
        "babyai" => {
            if params.is_some() {
                return Err(format!("`{spec}`: babyai specs are `babyai` or `babyai:<level>[,<level>...]`"));
            }
            let args = choice.map(|levels| vec!["--levels".to_string(), levels.to_string()]).unwrap_or_default();
            Ok((python_launch(&bridges.join("babyai_bridge.py"), args)?, Some("babyai")))
        }
        _ => Err(format!(
            "`{spec}` is not a bridge suite; bridge suites are `twx[:<games>[:<params>]]`, `babyai[:<levels>]` and \
             `bridge:<path>`"
        )),
    }
}

/// A suite served by a bridge. Building one starts the bridge, checks its
/// hello, and asks for both splits' task ids (`{"op": "tasks"}`); that
/// first process is kept for the first [`Suite::make`].
pub struct BridgeSuite {
    name: String,
    launch: Launch,
    timeouts: Timeouts,
    hello: Hello,
    train: Vec<String>,
    test: Vec<String>,
    known: Arc<HashSet<String>>,
    spare: Mutex<Option<BridgeProcess>>,
}

impl BridgeSuite {
    /// The suite a spec names (see the module docs), with default timeouts.
    pub fn new(spec: &str) -> Result<BridgeSuite, EnvError> {
        let broken = |reason: String| EnvError::Broken { env: spec.to_string(), reason };
        let (launch, expected) = resolve(spec).map_err(broken)?;
        let suite = BridgeSuite::with_launch(spec, launch, Timeouts::default())?;
        if let Some(expected) = expected.filter(|e| *e != suite.hello.env) {
            return Err(broken(format!(
                "bridge `{}` says it serves `{}`, not `{expected}`",
                suite.launch.describe(),
                suite.hello.env
            )));
        }
        Ok(suite)
    }

    /// A suite named `name` over any bridge.
    pub fn with_launch(name: &str, launch: Launch, timeouts: Timeouts) -> Result<BridgeSuite, EnvError> {
        let broken = |reason: String| EnvError::Broken { env: name.to_string(), reason };
        let (mut process, hello) = BridgeProcess::spawn(&launch, &timeouts).map_err(broken)?;
        let mut list = |split: Split| -> Result<Vec<String>, EnvError> {
            let fields = process.request(&Request::Tasks { split }, &timeouts).map_err(|failure| match failure {
                Failure::Died(reason) => broken(reason),
                Failure::Refused(error) => broken(format!(
                    "bridge `{}` cannot list its tasks (a suite needs `{{\"op\": \"tasks\"}}`): {error}",
                    launch.describe()
                )),
            })?;
            #[derive(serde::Deserialize)]
            struct Tasks {
                tasks: Vec<String>,
            }
            let tasks: Tasks =
                decode(fields, "tasks").map_err(|why| broken(format!("bridge `{}` {why}", launch.describe())))?;
            Ok(tasks.tasks.into_iter().map(|task| format!("{}/{task}", hello.env)).collect())
        };
        let train = list(Split::Train)?;
        let test = list(Split::Test)?;
        let known = Arc::new(train.iter().chain(&test).cloned().collect());
        Ok(BridgeSuite {
            name: name.to_string(),
            launch,
            timeouts,
            hello,
            train,
            test,
            known,
            spare: Mutex::new(Some(process)),
        })
    }

    /// What the bridge said in its hello line.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// A fresh environment of the concrete type (tests use its oracles).
    pub fn env(&self) -> Result<BridgeEnv, EnvError> {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take().filter(|p| !p.is_dead());
        let (process, hello) = match spare {
            Some(process) => (process, self.hello.clone()),
            None => BridgeProcess::spawn(&self.launch, &self.timeouts)
                .map_err(|reason| EnvError::Broken { env: self.name.clone(), reason })?,
        };
        let mut env = BridgeEnv::from_process(&self.name, self.launch.clone(), self.timeouts, process, hello);
        env.known = Some(Arc::clone(&self.known));
        Ok(env)
    }
}

impl Suite for BridgeSuite {
    fn name(&self) -> &str {
        &self.name
    }

    fn tasks(&self, split: Split) -> Vec<String> {
        match split {
            Split::Train => self.train.clone(),
            Split::Test => self.test.clone(),
        }
    }

    fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.env()?))
    }
}

/// The episode as the bridge last described it, plus kiln's step count.
struct Episode {
    state: State,
    steps: u32,
    max_steps: u32,
}

/// One environment served by one bridge process.
pub struct BridgeEnv {
    name: String,
    launch: Launch,
    timeouts: Timeouts,
    /// `None` after the process died; the next `reset` starts another.
    process: Option<BridgeProcess>,
    hello: Hello,
    /// Why the last process died, for calls made after it.
    death: Option<String>,
    /// The suite's task ids, when made by a suite.
    known: Option<Arc<HashSet<String>>>,
    episode: Option<Episode>,
}

impl BridgeEnv {
    /// Start a bridge. `name` is how errors name the environment.
    pub fn spawn(name: &str, launch: Launch, timeouts: Timeouts) -> Result<BridgeEnv, EnvError> {
        let (process, hello) = BridgeProcess::spawn(&launch, &timeouts)
            .map_err(|reason| EnvError::Broken { env: name.to_string(), reason })?;
        Ok(BridgeEnv::from_process(name, launch, timeouts, process, hello))
    }

    fn from_process(name: &str, launch: Launch, timeouts: Timeouts, process: BridgeProcess, hello: Hello) -> BridgeEnv {
        BridgeEnv {
            name: name.to_string(),
            launch,
            timeouts,
            process: Some(process),
            hello,
            death: None,
            known: None,
            episode: None,
        }
    }

    /// What the bridge said in its hello line.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The admissible actions right now (empty before `reset`).
    pub fn admissible_actions(&self) -> Vec<String> {
        self.episode.as_ref().map(|e| e.state.actions.clone()).unwrap_or_default()
    }

    /// The bridge's gold action sequence for the current episode
    /// (`{"op": "gold"}`; TextWorldExpress). For tests and oracles only.
    pub fn gold(&mut self) -> Result<Vec<String>, EnvError> {
        #[derive(serde::Deserialize)]
        struct Gold {
            gold: Vec<String>,
        }
        let fields = self.request(&Request::Extra { op: "gold" })?;
        Ok(decode::<Gold>(fields, "gold")
            .map_err(|why| self.broken(format!("bridge `{}` {why}", self.launch.describe())))?
            .gold)
    }

    /// The bridge's bot's next action (`{"op": "bot_step"}`; BabyAI). For
    /// tests and oracles only.
    pub fn bot_step(&mut self) -> Result<String, EnvError> {
        #[derive(serde::Deserialize)]
        struct Bot {
            action: String,
        }
        let fields = self.request(&Request::Extra { op: "bot_step" })?;
        Ok(decode::<Bot>(fields, "bot_step")
            .map_err(|why| self.broken(format!("bridge `{}` {why}", self.launch.describe())))?
            .action)
    }

    /// Ask the bridge; a dead process, or any failure, is `Broken`.
    fn request(&mut self, request: &Request) -> Result<serde_json::Map<String, Value>, EnvError> {
        let Some(process) = self.process.as_mut() else {
            let why = self.death.clone().unwrap_or_else(|| "it is not running".to_string());
            return Err(self.broken(format!(
                "the bridge is no longer running; `reset` starts a new one. It stopped because: {why}"
            )));
        };
        match process.request(request, &self.timeouts) {
            Ok(fields) => Ok(fields),
            Err(Failure::Refused(error)) => {
                Err(self.broken(format!("bridge `{}` refused `{}`: {error}", self.launch.describe(), request.op())))
            }
            Err(Failure::Died(reason)) => {
                self.process = None;
                self.death = Some(reason.clone());
                Err(self.broken(reason))
            }
        }
    }

    /// A state reply to `request`, decoded.
    fn state(&mut self, request: &Request) -> Result<State, EnvError> {
        let fields = self.request(request)?;
        decode::<State>(fields, request.op())
            .map_err(|why| self.broken(format!("bridge `{}` {why}", self.launch.describe())))
    }

    fn broken(&self, reason: String) -> EnvError {
        EnvError::Broken { env: self.name.clone(), reason }
    }

    /// Start a new process if the last one died.
    fn ensure_running(&mut self) -> Result<(), EnvError> {
        if self.process.as_ref().is_some_and(|p| !p.is_dead()) {
            return Ok(());
        }
        let (process, hello) =
            BridgeProcess::spawn(&self.launch, &self.timeouts).map_err(|reason| self.broken(reason))?;
        if hello.env != self.hello.env {
            return Err(self.broken(format!(
                "bridge `{}` restarted as `{}`, but it was `{}`",
                self.launch.describe(),
                hello.env,
                self.hello.env
            )));
        }
        self.process = Some(process);
        self.death = None;
        Ok(())
    }

    fn act(&mut self, command: &str) -> Result<Observation, EnvError> {
        let Some(episode) = self.episode.as_mut() else { unreachable!("checked by step") };
        episode.steps += 1;
        let wanted = canonical(command);
        let Some(action) = episode.state.actions.iter().find(|a| canonical(a) == wanted).cloned() else {
            return Ok(Observation {
                content: format!(
                    "Nothing happens: `{command}` is not an admissible action now. Call `admissible` to list them."
                ),
                is_error: true,
            });
        };
        let state = self.state(&Request::Step { action: &action })?;
        let content = state.obs.clone();
        if let Some(episode) = self.episode.as_mut() {
            episode.state = state;
        }
        Ok(Observation { content, is_error: false })
    }
}

/// How commands are compared with admissible actions: blanks collapsed,
/// lower case, no final period.
fn canonical(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.join(" ").trim_end_matches('.').trim_end().to_lowercase()
}

impl Environment for BridgeEnv {
    fn reset(&mut self, task: &str, seed: u64) -> Result<Start, EnvError> {
        self.episode = None;
        let unknown = || EnvError::UnknownTask { env: self.name.clone(), task: task.to_string() };
        if self.known.as_ref().is_some_and(|known| !known.contains(task)) {
            return Err(unknown());
        }
        let Some(inner) = task.strip_prefix(&self.hello.env).and_then(|rest| rest.strip_prefix('/')) else {
            return Err(unknown());
        };
        self.ensure_running()?;
        let state = self.state(&Request::Reset { task: inner, seed })?;
        let Some(goal) = state.goal.clone() else {
            return Err(
                self.broken(format!("bridge `{}` sent a reply to `reset` without a `goal`", self.launch.describe()))
            );
        };
        let max_steps = state.max_steps.unwrap_or(DEFAULT_MAX_STEPS).max(1);
        let prompt = format!("Goal: {goal}\n{}", state.obs);
        let done = state.done;
        self.episode = Some(Episode { state, steps: 0, max_steps });
        if done {
            return Err(
                self.broken(format!("bridge `{}` started task `{task}` already finished", self.launch.describe()))
            );
        }
        Ok(Start { prompt, tools: tool_specs(), max_steps })
    }

    fn step(&mut self, call: &ToolCall) -> Result<Observation, EnvError> {
        let Some(episode) = self.episode.as_mut() else {
            return Err(self.broken("step called before reset; call reset with a task id first".to_string()));
        };
        let error = |content: String| Ok(Observation { content: format!("Error: {content}"), is_error: true });
        if episode.state.done || episode.steps >= episode.max_steps {
            return error("the task is over; no more actions are accepted.".to_string());
        }
        let args = match super::object_arguments(call) {
            Ok(args) => args,
            Err(reason) => {
                episode.steps += 1;
                return error(reason);
            }
        };
        match call.name.as_str() {
            "act" => {
                match args.get("command").and_then(Value::as_str) {
                    Some(command) => self.act(command),
                    None => {
                        episode.steps += 1;
                        error("act needs a `command`, one of the admissible actions, e.g. {\"command\": \"look around\"}.".to_string())
                    }
                }
            }
            "admissible" => {
                episode.steps += 1;
                Ok(Observation {
                    content: format!("Admissible actions:\n{}", episode.state.actions.join("\n")),
                    is_error: false,
                })
            }
            other => {
                episode.steps += 1;
                error(format!("unknown tool `{other}`. Available tools: act, admissible."))
            }
        }
    }

    fn done(&self) -> bool {
        self.process.is_none() || self.episode.as_ref().is_none_or(|e| e.state.done || e.steps >= e.max_steps)
    }

    fn score(&self) -> Score {
        match &self.episode {
            Some(episode) => {
                let score = episode.state.score;
                let reward = if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 };
                Score { reward, success: episode.state.won }
            }
            None => Score::default(),
        }
    }
}

/// The tools of a bridge environment: `act` and `admissible`.
pub fn tool_specs() -> Vec<ToolSpec> {
    super::text_world_tools(
        "Do one action in the environment. It must be one of the admissible actions right now, written as \
         `admissible` lists it (e.g. `look around`, `move north`, `take coin`, `forward`).",
        "List the actions that are admissible right now.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_match_admissible_actions_loosely() {
        assert_eq!(canonical("  Take   Coin. "), "take coin");
        assert_eq!(canonical("move north"), canonical("MOVE NORTH."));
        assert_ne!(canonical("take coin"), canonical("take coins"));
    }

    #[test]
    fn bridge_specs_are_recognised() {
        for spec in ["twx", "twx:coin", "twx:cookingworld:numLocations=3", "babyai", "babyai:GoToLocal", "bridge:x.py"]
        {
            assert!(is_bridge_spec(spec), "{spec}");
        }
        for spec in ["shop", "house", "twxx", "babyai2:x", ""] {
            assert!(!is_bridge_spec(spec), "{spec}");
        }
    }

    #[test]
    fn unknown_kinds_and_malformed_specs_say_what_is_accepted() {
        let err = resolve("nethack:score").unwrap_err();
        assert!(err.contains("`nethack:score` is not a bridge suite") && err.contains("babyai[:<levels>]"), "{err}");
        if python().exists() {
            let err = resolve("babyai:GoToLocal:x=1").unwrap_err();
            assert!(err.contains("babyai:<level>"), "{err}");
        }
    }

    #[test]
    fn a_missing_venv_names_make_bridges() {
        let script = project_root().join("bridges/twx_bridge.py");
        let err = launch_with(Path::new("/nonexistent/.venv/bin/python"), false, &script, Vec::new()).unwrap_err();
        assert!(err.contains("venv is missing (/nonexistent/.venv/bin/python does not exist)"), "{err}");
        assert!(err.contains("Run `make bridges`") && err.contains("twx_bridge.py"), "{err}");
        let err = launch_with(Path::new("/nonexistent/python"), true, &script, Vec::new()).unwrap_err();
        assert!(err.contains("$KILN_PYTHON points at /nonexistent/python"), "{err}");
    }

    #[test]
    fn a_missing_script_is_named() {
        let err =
            launch_with(Path::new("/bin/sh"), false, Path::new("/nonexistent/bridge.py"), Vec::new()).unwrap_err();
        assert_eq!(err, "bridge script /nonexistent/bridge.py does not exist");
    }

    #[test]
    fn bridge_launches_pass_the_jvm_and_python_settings() {
        let script = project_root().join("bridges/twx_bridge.py");
        let launch = launch_with(Path::new("/bin/sh"), false, &script, vec!["--games".into(), "coin".into()]).unwrap();
        assert_eq!(launch.args[1..], ["--games".to_string(), "coin".to_string()]);
        assert!(launch.vars.contains(&("JAVA_TOOL_OPTIONS".to_string(), "-XX:-UsePerfData".to_string())));
        assert_eq!(launch.describe(), script.display().to_string());
    }
}
