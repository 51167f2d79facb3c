//! `kiln trace ls|show|export`: find traces, read them as a human would,
//! and export them as RL training data (docs/training-data.md).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::run::RunIndex;
use super::{open_store, CliError, CliResult, Hint};
use crate::sandbox::Verdict;
use crate::store::{ObjectId, Store};
use crate::trace::export::{self, Format, Options, Progress, TraceProblem};
use crate::trace::{decode, Event, Fold, ReadTrace};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List runs, or the tasks of one run with their traces.
    Ls {
        /// A run name (see `kiln trace ls`).
        #[arg(long)]
        run: Option<String>,
    },
    /// Show a trace step by step: the model's calls, the tools, every hook call and its edits.
    Show {
        /// RUN/INDEX, RUN/TASK-ID, or a trace id (prefix).
        trace: String,
        /// Show only this step, with the conversation as the model saw it.
        #[arg(long)]
        step: Option<u32>,
        /// Print the raw events as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Write traces as RL training data, one JSON object per line (docs/training-data.md).
    ///
    /// `grpo`: one line per trajectory with its reward, its group's advantage
    /// and, for every model call, the exact messages and tools the model got
    /// and its reply. A group is every trajectory of one task and prompt,
    /// across seeds, harnesses and models. `sft`: one line per conversation
    /// of a successful trajectory. Damaged traces are named and skipped.
    Export(ExportArgs),
}

/// `kiln trace export`'s flags.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// `grpo` (trajectories with group advantages) or `sft` (successful conversations).
    #[arg(long, value_enum, default_value = "grpo")]
    pub format: FormatArg,
    /// Only traces of this environment, as recorded (`shop`, `house`, `twx:coin`, ...).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Only traces of this harness: a name from the store, an id, or an id prefix.
    #[arg(long, value_name = "ID")]
    pub harness: Option<String>,
    /// grpo: drop groups with fewer than N trajectories [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub min_group: Option<u32>,
    /// grpo: keep groups whose rewards are all equal (advantage 0, flagged).
    #[arg(long)]
    pub keep_flat: bool,
    /// Only the traces of this run (`kiln trace ls`); default: every trace in the store.
    #[arg(long, value_name = "NAME", conflicts_with = "evolve_run")]
    pub run: Option<String>,
    /// Only the traces this evolution run's ledgers name (`kiln evolve --name`).
    #[arg(long, value_name = "NAME")]
    pub evolve_run: Option<String>,
    /// Write the lines to FILE (replaced atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The line formats, for clap.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FormatArg {
    Grpo,
    Sft,
}

/// Read a run's index.
pub(crate) fn run_index(store: &Store, run: &str) -> Result<RunIndex, CliError> {
    let id = store.get_ref(&format!("runs/{run}"))?.ok_or_else(|| anyhow::anyhow!("no run named `{run}`")).hint("`kiln trace ls` lists the runs")?;
    Ok(serde_json::from_slice(&store.get(&id)?)?)
}

/// Find and read a trace by RUN/INDEX, RUN/TASK-ID or id prefix.
pub(crate) fn load_trace(store: &Store, what: &str) -> Result<ReadTrace, CliError> {
    let id = match what.split_once('/') {
        Some((run, rest)) if store.get_ref(&format!("runs/{run}")).ok().flatten().is_some() => {
            let idx = run_index(store, run)?;
            let row = match rest.parse::<usize>() {
                Ok(i) => idx.tasks.get(i),
                Err(_) => idx.tasks.iter().find(|t| t.task == rest),
            };
            let row = row.ok_or_else(|| anyhow::anyhow!("run `{run}` has no task `{rest}`")).hint(format!("`kiln trace ls --run {run}` lists its tasks"))?;
            store.resolve(&row.trace)?
        }
        _ => store.resolve(what).hint("give RUN/INDEX, RUN/TASK-ID or a trace id")?,
    };
    Ok(decode(&store.get(&id)?)?)
}

pub fn execute(store_dir: &Path, cmd: Cmd) -> CliResult {
    let store = open_store(store_dir)?;
    match cmd {
        Cmd::Ls { run: None } => {
            for (name, _) in store.refs("runs/")? {
                let run = name.trim_start_matches("runs/");
                let idx = run_index(&store, run)?;
                let ok = idx.tasks.iter().filter(|t| t.success).count();
                println!("{run:<24} {:>4}/{:<4} tasks  {:>5.1}% success  {} on {}", idx.tasks.len(), idx.planned, ok as f64 * 100.0 / idx.tasks.len().max(1) as f64, idx.model, idx.env);
            }
        }
        Cmd::Ls { run: Some(run) } => {
            let idx = run_index(&store, &run)?;
            for (i, t) in idx.tasks.iter().enumerate() {
                println!("{run}/{i:<4} {:<18} seed {:<3} {:<11} reward {:.2} steps {:>3}  trace {}", t.task, t.seed, t.reason.name(), t.reward, t.steps, &t.trace[..12.min(t.trace.len())]);
            }
        }
        Cmd::Export(args) => return export_traces(&store, args),
        Cmd::Show { trace, step, json } => {
            let t = load_trace(&store, &trace)?;
            if json {
                for e in &t.events {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                show(&t, step);
            }
            if let Some(why) = &t.truncated {
                eprintln!("warning: this trace is incomplete: {why}");
            }
        }
    }
    Ok(())
}

fn show(t: &ReadTrace, only: Option<u32>) {
    let mut fold = Fold::default();
    for e in &t.events {
        let step = match e {
            Event::Hook { step, .. } | Event::Call { step, .. } | Event::ModelCall { step, .. } | Event::ToolCall { step, .. } | Event::Swap { step, .. } | Event::StepEnd { step } => Some(*step),
            _ => None,
        };
        let visible = only.is_none() || step.is_none() || step == only;
        if visible {
            match e {
                Event::TaskStart { env, task, seed, harness, model, processors, .. } => {
                    println!("task {task} ({env}, seed {seed})  model {model}  harness {}", &harness[..harness.len().min(12)]);
                    println!("processors: {}", processors.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "));
                }
                Event::ModelCall { step, model, text, calls, usage, error, .. } => {
                    if only == Some(*step) {
                        println!("--- the conversation the model saw at step {step} ({} messages) ---", fold.ctx.messages.len());
                        for m in &fold.ctx.messages {
                            println!("  [{:?}] {}", m.role, m.content.replace('\n', "\n      "));
                        }
                        println!("---");
                    }
                    match error {
                        Some(err) => println!("{step:>3} model {model}: ERROR {err}"),
                        None => {
                            let c = calls.iter().map(|c| format!("{}({})", c.name, c.arguments)).collect::<Vec<_>>().join(", ");
                            println!("{step:>3} model -> {}{} [{} in / {} out tokens]", text.replace('\n', " "), if c.is_empty() { String::new() } else { format!(" calls {c}") }, usage.input_tokens, usage.output_tokens);
                        }
                    }
                }
                Event::Call { step, report } => {
                    let verdict = match (&report.fault, &report.verdict) {
                        (Some(f), _) => format!("FAULT {f}"),
                        (None, Some(Verdict::Pass)) => "pass".into(),
                        (None, Some(v)) => format!("{v:?}"),
                        _ => "-".into(),
                    };
                    println!("{step:>3}   {:<12} {:<18} {verdict}  fuel {} {:.1}µs", report.hook.name(), report.processor, report.fuel, report.nanos as f64 / 1e3);
                    for ed in &report.edits {
                        println!("        edit {}", serde_json::to_string(ed).unwrap_or_default());
                    }
                }
                Event::ToolCall { step, call, by, content, is_error, .. } => {
                    println!("{step:>3} tool {}({}) by {by}{} -> {}", call.name, call.arguments, if *is_error { " ERROR" } else { "" }, content.replace('\n', " | "));
                }
                Event::ProcessorTool { step, name, report, .. } => println!("{step:>3}   tool {name} ran in processor {}", report.processor),
                Event::Swap { step, report } => println!("{step:>3} SWAP {} {} {:?} -> {:?}{}", report.op, report.target, report.old, report.new, report.error.as_ref().map(|e| format!(" FAILED: {e}")).unwrap_or_default()),
                Event::TaskEnd { steps, reason, detail, score, usage } => println!(
                    "end: {} after {steps} steps{}; reward {:.2} success {}; tokens {}",
                    reason.name(),
                    detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default(),
                    score.reward,
                    score.success,
                    usage.input_tokens + usage.output_tokens
                ),
                _ => {}
            }
        }
        let _ = fold.apply(e);
    }
}

/// The trace ids named by the refs under `prefix` (`runs/`, `evolve/`).
fn referenced_traces(store: &Store, prefix: &str) -> Result<Vec<String>, CliError> {
    let mut out = Vec::new();
    for (name, _) in store.refs(prefix)? {
        let name = name.trim_start_matches(prefix);
        match prefix {
            "runs/" => out.extend(run_index(store, name)?.tasks.into_iter().map(|t| t.trace)),
            _ => out.extend(evolve_traces(store, name)?),
        }
    }
    Ok(out)
}

/// The traces an evolution run's ledger index names.
fn evolve_traces(store: &Store, name: &str) -> Result<Vec<String>, CliError> {
    let hint = "evolution runs are named by `kiln evolve --name NAME`; their ledgers are in <store>/evolve/";
    let id = store.get_ref(&format!("evolve/{name}"))?.ok_or_else(|| anyhow::anyhow!("no evolution run named `{name}`")).hint(hint)?;
    let index: serde_json::Value = serde_json::from_slice(&store.get(&id)?).map_err(|e| anyhow::anyhow!("the ledger index of evolution run `{name}` (object {id}) is not JSON: {e}"))?;
    let traces = index.get("traces").and_then(|t| t.as_array()).ok_or_else(|| anyhow::anyhow!("the ledger index of evolution run `{name}` (object {id}) names no traces")).hint("ledgers written by an older kiln do not list their traces; export the whole store instead")?;
    Ok(traces.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
}

/// Parse trace ids named by indexes; a bad one is a warning, not the end.
fn parse_ids(names: Vec<String>, from: &str) -> Vec<ObjectId> {
    let mut ids = Vec::new();
    for name in names {
        if name.is_empty() {
            continue; // a task whose trace could not be stored
        }
        match name.parse() {
            Ok(id) => ids.push(id),
            Err(e) => eprintln!("warning: {from} names `{name}` as a trace, which is not an object id ({e}); skipped"),
        }
    }
    ids
}

/// Progress for the export: a bar on a terminal, warnings always.
struct Reporter {
    bar: indicatif::ProgressBar,
}

impl Reporter {
    fn new() -> Reporter {
        let bar = if std::io::stderr().is_terminal() { indicatif::ProgressBar::new(0) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg:>9} {bar:30} {pos}/{len} traces").expect("valid template"));
        Reporter { bar }
    }

    fn warn(&self, text: String) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

impl Progress for Reporter {
    fn on_read(&mut self, done: usize, total: usize) {
        self.bar.set_message("Reading");
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }
    fn on_skip(&mut self, problem: &TraceProblem) {
        let cause = std::error::Error::source(problem).map(|c| format!(": {c}")).unwrap_or_default();
        self.warn(format!("warning: skipped: {problem}{cause}"));
    }
    fn on_write(&mut self, done: usize, total: usize) {
        self.bar.set_message("Writing");
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }
}

fn export_traces(store: &Store, args: ExportArgs) -> CliResult {
    let format = match args.format {
        FormatArg::Grpo => Format::Grpo,
        FormatArg::Sft => Format::Sft,
    };
    if format == Format::Sft && (args.keep_flat || args.min_group.is_some()) {
        return Err(anyhow::anyhow!("--keep-flat and --min-group shape GRPO groups; sft lines are not grouped")).hint("drop them, or use --format grpo");
    }
    // Hex digits are an id or id prefix as recorded; anything else names a stored harness.
    let harness = match &args.harness {
        Some(h) if !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()) => Some(h.to_ascii_lowercase()),
        Some(h) => Some(crate::harness::find(store, h).hint("--harness takes a harness name from the store, or a harness id or id prefix")?.to_hex()),
        None => None,
    };
    let ids = match (&args.run, &args.evolve_run) {
        (Some(run), _) => parse_ids(run_index(store, run)?.tasks.into_iter().map(|t| t.trace).collect(), &format!("run `{run}`")),
        (None, Some(name)) => parse_ids(evolve_traces(store, name)?, &format!("evolution run `{name}`")),
        (None, None) => {
            // Every trace the scan recognizes, plus every one an index names,
            // so a referenced trace too damaged to recognize is still reported.
            let mut ids = export::store_traces(store).hint("the store's objects/ directory could not be listed; `kiln store verify` checks it")?;
            let mut named = referenced_traces(store, "runs/")?;
            named.extend(referenced_traces(store, "evolve/")?);
            ids.extend(parse_ids(named, "an index"));
            ids
        }
    };
    let options = Options { format, env: args.env.clone(), harness, min_group: args.min_group.unwrap_or(1) as usize, keep_flat: args.keep_flat };
    let mut reporter = Reporter::new();
    let summary = match &args.out {
        Some(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| anyhow::anyhow!("cannot create a temp file in {}: {e}", dir.display())).hint("--out must name a file in a writable directory")?;
            let summary = {
                let mut w = std::io::BufWriter::new(tmp.as_file_mut());
                let summary = export::export(store, &ids, &options, &mut w, &mut reporter)?;
                w.flush()?;
                summary
            };
            tmp.persist(path).map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
            summary
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            export::export(store, &ids, &options, &mut w, &mut reporter)?
        }
    };
    reporter.bar.finish_and_clear();
    let what = match format {
        Format::Grpo => "trajectories",
        Format::Sft => "successful trajectories",
    };
    let to = args.out.as_ref().map(|p| format!(" to {}", p.display())).unwrap_or_default();
    eprintln!("exported {} lines{to}: {} {what} in {} groups, from {} traces", summary.lines, summary.trajectories, summary.groups_written, summary.traces);
    let mut left_out = Vec::new();
    let mut note = |n: usize, what: &str| {
        if n > 0 {
            left_out.push(format!("{n} {what}"));
        }
    };
    note(summary.corrupt.len(), "damaged traces (warned above)");
    note(summary.errored, "errored tasks (infrastructure failures)");
    note(summary.without_model_calls, "tasks without a model call");
    note(summary.filtered, "filtered out by --env/--harness");
    note(summary.unsuccessful, "unsuccessful trajectories");
    note(summary.small_groups, "groups smaller than --min-group");
    note(summary.flat_groups, "groups with equal rewards (keep them with --keep-flat)");
    if !left_out.is_empty() {
        eprintln!("left out: {}", left_out.join(", "));
    }
    Ok(())
}
