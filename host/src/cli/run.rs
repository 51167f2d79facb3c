//! `kiln run`: a harness, a model, an environment and a task set; traces and a summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{open_store, runtime, runtime_for, CliError, CliResult, Hint};
use crate::agent::{run_task, Shape, TaskSpec};
use crate::env::Split;
use crate::sandbox::{ProcessorSpec, Swap};
use crate::store::Store;
use crate::trace::EndReason;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The harness: a TOML manifest, `static` or `stock` (harnesses/*.toml), or a harness name or id in the store.
    #[arg(long, default_value = "stock")]
    pub harness: String,
    /// The model: sim:weak|mid|strong, openai:MODEL@URL, anthropic:MODEL, local:PATH|smollm2, or a roles TOML.
    #[arg(long, default_value = "sim:weak")]
    pub model: String,
    /// The environment: shop or house.
    #[arg(long, default_value = "shop")]
    pub env: String,
    /// Which split of the environment's tasks.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Task indices within the split: `0..20`, `3,5,9`, or `all`.
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// Seeds, comma-separated; every task runs once per seed.
    #[arg(long, default_value = "1")]
    pub seeds: String,
    /// Tasks run at once.
    #[arg(short = 'j', long, default_value_t = 4)]
    pub jobs: usize,
    /// Override the environment's step budget.
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// The run's name (default: <env>-<split>).
    #[arg(long)]
    pub name: Option<String>,
    /// Swap a processor into a running task: TASK@STEP:insert|replace|remove:TARGET[=COMPONENT].
    /// TASK is the task index, TARGET a processor name (insert: a position), COMPONENT a file, dir or id.
    #[arg(long)]
    pub swap: Vec<String>,
    /// Record durations as zero so identical runs give identical traces.
    #[arg(long)]
    pub deterministic: bool,
    /// Add an MCP server's tools to every task: a stdio command line (`npx -y some-server`)
    /// or a streamable-HTTP URL. Repeatable.
    #[arg(long)]
    pub mcp: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SplitArg {
    Train,
    Test,
}

/// One finished task, as kept in the run index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRow {
    pub task: String,
    pub seed: u64,
    pub trace: String,
    pub reason: EndReason,
    pub reward: f64,
    pub success: bool,
    pub steps: u32,
    pub tokens: u64,
    pub faults: Vec<(String, String)>,
}

/// The run index: stored as an object, reachable from `runs/<name>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunIndex {
    pub name: String,
    pub env: String,
    pub split: String,
    pub harness: String,
    pub model: String,
    pub planned: usize,
    pub tasks: Vec<TaskRow>,
}

/// A harness resolved for running: its id, its shape, its processors in order.
pub(crate) struct Resolved {
    pub id: String,
    pub shape: Shape,
    pub processors: Vec<ProcessorSpec>,
    /// Ask the model for text actions instead of native tool calls.
    pub text_actions: bool,
}

pub fn execute(store_dir: &Path, args: Args) -> CliResult {
    let store = open_store(store_dir)?;
    let mut rt = runtime(&store)?;
    let suite = crate::env::open(&args.env).hint(format!("environments: {}", crate::env::KNOWN))?;
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    let all = suite.tasks(split);
    let picked = pick(&args.tasks, all.len()).hint("--tasks takes `all`, a range like `0..20`, or indices like `3,5,9`")?;
    let seeds: Vec<u64> = args
        .seeds
        .split(',')
        .map(|s| s.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .hint("--seeds takes comma-separated integers, e.g. `1,2,3`")?;
    let model: Arc<dyn crate::models::Model> = Arc::from(crate::models::roles::main_model(&args.model).hint("e.g. --model sim:weak, openai:gpt-4o-mini@http://127.0.0.1:8000/v1")?);
    let mut harness = resolve_harness(&store, &rt, &args.harness)?;
    // Every live task holds one instance per processor (and one more while
    // a swap hands over): size the pool for -j such tasks, reloading the
    // components (from the code cache) into the bigger runtime if needed.
    let at_once = args.jobs.max(1).min((picked.len() * seeds.len()).max(1));
    let needed = at_once.saturating_mul(harness.processors.len() + args.swap.len() + 1);
    if rt.max_instances().is_some_and(|pool| needed > pool as usize) {
        let needed = u32::try_from(needed).hint("-j times the harness's processors is too many instances; lower -j")?;
        rt = runtime_for(&store, needed)?;
        harness = resolve_harness(&store, &rt, &args.harness)?;
    }
    let model: Arc<dyn crate::models::Model> =
        if harness.text_actions { Arc::new(crate::models::text_actions::TextActions::new(Box::new(model))) } else { model };
    let mut swaps: Vec<(usize, u32, Swap)> = Vec::new();
    for s in &args.swap {
        swaps.push(parse_swap(&store, &rt, s).hint("--swap takes TASK@STEP:insert|replace|remove:TARGET[=COMPONENT], e.g. 3@2:replace:loop-guard=processors/loop-guard")?);
    }
    let mut mcp = Vec::new();
    for m in &args.mcp {
        mcp.push(Arc::new(Mutex::new(connect_mcp(m).hint("--mcp takes a command line (`python3 server.py`) or an http(s) URL")?)));
    }
    let split_name = format!("{split:?}").to_lowercase();
    // Run names become ref names: keep them to [A-Za-z0-9._-].
    let name = args.name.clone().unwrap_or_else(|| format!("{}-{}", args.env, split_name));
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
    let jobs: Vec<(usize, String, u64)> = picked.iter().flat_map(|&i| seeds.iter().map(move |&s| (i, s))).map(|(i, s)| (i, all[i].clone(), s)).collect();
    let index = Arc::new(Mutex::new(RunIndex {
        name: name.clone(),
        env: args.env.clone(),
        split: split_name,
        harness: harness.id.clone(),
        model: model.describe(),
        planned: jobs.len(),
        tasks: Vec::new(),
    }));

    let bar = progress(jobs.len(), args.json);
    let started = std::time::Instant::now();
    let runtime_tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let store = Arc::new(store);
    let suite: Arc<dyn crate::env::Suite> = Arc::from(suite);
    let harness = Arc::new(harness);
    let swaps = Arc::new(swaps);
    let interrupted = runtime_tokio.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(args.jobs.max(1)));
        let mut handles = Vec::new();
        for (i, task, seed) in jobs {
            let permit = sem.clone().acquire_owned().await.expect("semaphore open");
            let (rt, model, store, suite, harness, swaps, index, bar) = (rt.clone(), model.clone(), store.clone(), suite.clone(), harness.clone(), swaps.clone(), index.clone(), bar.clone());
            let deterministic = args.deterministic;
            let max_steps = args.max_steps;
            let env_name = args.env.clone();
            let run_name = name.clone();
            let mcp = mcp.clone();
            handles.push(tokio::spawn(async move {
                let _permit = permit;
                let mut env = match suite.make() {
                    Ok(e) => e,
                    Err(e) => {
                        bar.println(format!("task {task}: {e}"));
                        return;
                    }
                };
                let spec = TaskSpec {
                    env_name,
                    task: task.clone(),
                    seed,
                    max_steps,
                    harness_id: harness.id.clone(),
                    shape: harness.shape.clone(),
                    processors: harness.processors.clone(),
                    swaps: swaps.iter().filter(|(t, _, _)| *t == i).map(|(_, s, w)| (*s, w.clone())).collect(),
                    deterministic,
                    mcp: mcp.clone(),
                };
                let (outcome, trace) = run_task(&rt, model.as_ref(), env.as_mut(), spec).await;
                let trace_id = match trace.save(&store) {
                    Ok(id) => id.to_hex(),
                    Err(e) => {
                        bar.println(format!("task {task}: cannot store its trace: {e}"));
                        String::new()
                    }
                };
                let row = TaskRow {
                    task,
                    seed,
                    trace: trace_id,
                    reason: outcome.reason,
                    reward: outcome.score.reward,
                    success: outcome.score.success,
                    steps: outcome.steps,
                    tokens: outcome.usage.input_tokens + outcome.usage.output_tokens,
                    faults: outcome.faults,
                };
                // The index is rewritten after every task, under the lock so a
                // slower writer never replaces a newer index with an older one:
                // an interrupted run keeps everything that finished.
                let saved = {
                    let mut idx = index.lock().unwrap();
                    idx.tasks.push(row);
                    idx.tasks.sort_by(|a, b| (&a.task, a.seed).cmp(&(&b.task, b.seed)));
                    let snapshot = serde_json::to_vec(&*idx).expect("index serializes");
                    store.put(&snapshot).map_err(|e| e.to_string()).and_then(|id| store.set_ref(&format!("runs/{run_name}"), &id).map_err(|e| e.to_string()))
                };
                if let Err(e) = saved {
                    bar.println(format!("warning: cannot update the run index: {e}"));
                }
                bar.inc(1);
            }));
        }
        let all = futures_join(handles);
        tokio::select! {
            _ = all => false,
            _ = tokio::signal::ctrl_c() => true,
        }
    });
    bar.finish_and_clear();
    let idx = index.lock().unwrap().clone();
    let summary = Summary::of(&idx, started.elapsed().as_secs_f64());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "summary": summary, "index": idx }))?);
    } else {
        summary.print(&idx);
        eprintln!("traces: kiln trace ls --run {name}   (store {})", store_dir.display());
    }
    if interrupted {
        return Err(CliError { error: anyhow::anyhow!("interrupted: {} of {} tasks finished and kept", idx.tasks.len(), idx.planned), hint: None });
    }
    Ok(())
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

fn progress(n: usize, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks").unwrap());
    bar
}

/// Start (stdio) or connect to (HTTP) an MCP server and list its tools.
fn connect_mcp(what: &str) -> anyhow::Result<crate::mcp::McpTools> {
    let timeout = std::time::Duration::from_secs(30);
    let client = if what.starts_with("http://") || what.starts_with("https://") {
        crate::mcp::McpClient::connect_http(what, timeout)?
    } else {
        let mut words = what.split_whitespace();
        let program = words.next().ok_or_else(|| anyhow::anyhow!("empty MCP server command"))?;
        let command = words.fold(crate::mcp::ServerCommand::new(program), |c, w| c.arg(w));
        crate::mcp::McpClient::spawn(&command, timeout)?
    };
    Ok(crate::mcp::McpTools::new(client)?)
}

/// Parse `all`, `a..b`, or `i,j,k` against a split of `n` tasks.
pub(crate) fn pick(spec: &str, n: usize) -> anyhow::Result<Vec<usize>> {
    let spec = spec.trim();
    let v: Vec<usize> = if spec == "all" {
        (0..n).collect()
    } else if let Some((a, b)) = spec.split_once("..") {
        let a: usize = if a.is_empty() { 0 } else { a.parse()? };
        let b: usize = if b.is_empty() { n } else { b.parse()? };
        (a..b.min(n)).collect()
    } else {
        spec.split(',').map(|s| s.trim().parse::<usize>()).collect::<Result<_, _>>()?
    };
    if let Some(bad) = v.iter().find(|&&i| i >= n) {
        anyhow::bail!("task index {bad} is out of range: the split has {n} tasks");
    }
    if v.is_empty() {
        anyhow::bail!("no tasks selected");
    }
    Ok(v)
}

fn parse_swap(store: &Store, rt: &crate::sandbox::Runtime, s: &str) -> anyhow::Result<(usize, u32, Swap)> {
    let (task, rest) = s.split_once('@').ok_or_else(|| anyhow::anyhow!("`{s}`: missing `@`"))?;
    let mut parts = rest.splitn(3, ':');
    let step: u32 = parts.next().unwrap_or("").parse()?;
    let op = parts.next().ok_or_else(|| anyhow::anyhow!("`{s}`: missing the operation"))?;
    let target = parts.next().ok_or_else(|| anyhow::anyhow!("`{s}`: missing the target"))?;
    let task: usize = task.parse()?;
    let (target, component) = match target.split_once('=') {
        Some((t, c)) => (t.to_string(), Some(c.to_string())),
        None => (target.to_string(), None),
    };
    let spec = |c: &Option<String>| -> anyhow::Result<ProcessorSpec> {
        let c = c.as_ref().ok_or_else(|| anyhow::anyhow!("`{s}`: {op} needs `=COMPONENT`"))?;
        let bytes = component_bytes(store, c)?;
        let loaded = rt.load(&bytes)?;
        store.put(&bytes)?;
        Ok(ProcessorSpec { loaded, instance: Default::default(), policy: Default::default() })
    };
    let swap = match op {
        "insert" => Swap::Insert { at: target.parse().unwrap_or(usize::MAX), spec: spec(&component)? },
        "replace" => Swap::Replace { target, spec: spec(&component)? },
        "remove" => Swap::Remove { target },
        other => anyhow::bail!("`{other}` is not a swap operation (insert, replace, remove)"),
    };
    Ok((task, step, swap))
}

/// A component's bytes from a .wasm file, a processor crate dir (built), or a store id.
pub(crate) fn component_bytes(store: &Store, what: &str) -> anyhow::Result<Vec<u8>> {
    let p = PathBuf::from(what);
    if p.is_file() {
        return Ok(std::fs::read(&p)?);
    }
    if p.join("Cargo.toml").is_file() {
        return Ok(crate::build::build_processor(&p, &crate::build::default_target_dir())?);
    }
    let id = store.resolve(what)?;
    Ok(store.get(&id)?)
}

/// Resolve `--harness`: a manifest file, `static`/`stock` (the manifests in
/// `harnesses/`), or a harness name or id in the store. The harness is saved
/// in the store so traces can name it by id.
pub(crate) fn resolve_harness(store: &Store, rt: &crate::sandbox::Runtime, what: &str) -> Result<Resolved, CliError> {
    let shop = crate::harness::Workshop::new(rt, store, crate::build::default_target_dir());
    let builtin = Path::new("harnesses").join(format!("{what}.toml"));
    let path = if Path::new(what).is_file() { Some(PathBuf::from(what)) } else if builtin.is_file() { Some(builtin) } else { None };
    let (harness, name) = match path {
        Some(p) => {
            let authored = shop.open(&p).map_err(|e| CliError { error: anyhow::anyhow!("{e}"), hint: None })?;
            (authored.harness, Some(authored.name))
        }
        None => {
            let id = crate::harness::find(store, what).hint("--harness takes a manifest file, `static`, `stock`, or a harness name or id from the store")?;
            (shop.load(&id)?, None)
        }
    };
    let id = harness.save(store, name.as_deref())?;
    let processors = harness.processor_specs(rt, store)?;
    let shape = Shape { system: harness.system().to_string(), deny: harness.tools().deny.clone() };
    Ok(Resolved { id: id.to_hex(), shape, processors, text_actions: harness.tools().text_actions })
}

/// The numbers a run is judged by.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub finished: usize,
    pub planned: usize,
    pub success_rate: f64,
    pub mean_reward: f64,
    pub mean_steps: f64,
    pub tokens: u64,
    pub reasons: BTreeMap<String, usize>,
    pub faults: BTreeMap<String, BTreeMap<String, usize>>,
    pub wall_secs: f64,
}

impl Summary {
    pub fn of(idx: &RunIndex, wall_secs: f64) -> Summary {
        let n = idx.tasks.len().max(1) as f64;
        let mut reasons = BTreeMap::new();
        let mut faults: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for t in &idx.tasks {
            *reasons.entry(t.reason.name().to_string()).or_default() += 1;
            for (p, k) in &t.faults {
                *faults.entry(p.clone()).or_default().entry(k.clone()).or_default() += 1;
            }
        }
        Summary {
            finished: idx.tasks.len(),
            planned: idx.planned,
            success_rate: idx.tasks.iter().filter(|t| t.success).count() as f64 / n,
            mean_reward: idx.tasks.iter().map(|t| t.reward).sum::<f64>() / n,
            mean_steps: idx.tasks.iter().map(|t| t.steps as f64).sum::<f64>() / n,
            tokens: idx.tasks.iter().map(|t| t.tokens).sum(),
            reasons,
            faults,
            wall_secs,
        }
    }

    pub fn print(&self, idx: &RunIndex) {
        println!("run        {}  ({} on {}/{})", idx.name, idx.model, idx.env, idx.split);
        println!("harness    {}", &idx.harness[..idx.harness.len().min(16)]);
        println!("finished   {} of {} tasks", self.finished, self.planned);
        println!("success    {:.1}%", self.success_rate * 100.0);
        println!("reward     {:.3} mean", self.mean_reward);
        println!("steps      {:.1} mean", self.mean_steps);
        println!("tokens     {}", self.tokens);
        println!("ended      {}", self.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
        if self.faults.is_empty() {
            println!("faults     none");
        } else {
            for (p, kinds) in &self.faults {
                println!("faults     {p}: {}", kinds.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
            }
        }
        println!("wall       {:.2}s", self.wall_secs);
    }
}
