//! `kiln trace ls|show`: find traces and read them as a human would.

use std::path::Path;

use super::run::RunIndex;
use super::{open_store, CliError, CliResult, Hint};
use crate::sandbox::Verdict;
use crate::store::Store;
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
