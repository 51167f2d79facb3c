//! `kiln evolve`: evolve a harness from traces (AEGIS); `kiln evolve resume NAME`.
//!
//! The evolved harness is an ordinary stored harness: the store keeps the
//! run's incumbent under the name `evolve/<run>/incumbent`, so `kiln harness
//! show|lineage|diff` work on it, and `--from` takes it to evolve further.
//!
//! Progress goes to stderr as cargo-style status lines (round, stage,
//! candidates, verdicts); the final report (a per-round table, the curves,
//! the shipped lineage with each edit's manifest) to stdout, or as JSON with
//! `--json`. Ctrl-C stops at the next safe point: the ledgers stay
//! consistent and `kiln evolve resume NAME` picks the run up, reusing every
//! finished rollout and build.
//!
//! `--meta` and `--judge` take one model spec each (`sim:...`,
//! `openai:MODEL@URL`, `anthropic:MODEL`), stored in the run's `run.json`,
//! so `resume` asks the same models. With `--judge`, the judge model reviews
//! every candidate the Critic lets through and may reject it or ask for one
//! revision; the Gate still decides.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{open_store, runtime, CliError, CliResult, Hint};
use crate::evolve::{EvolveConfig, EvolveError, Paths, Progress, Report, Reporter};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Resume a run by name after Ctrl-C or a crash; finished work is reused.
    Resume {
        /// The run's name (`kiln evolve --name`).
        name: String,
        #[command(flatten)]
        out: OutArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct OutArgs {
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(short, long)]
    pub quiet: bool,
    /// The cargo target dir for processor builds (default: target/guest, or $KILN_GUEST_TARGET_DIR).
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The run's name: its ledgers go to <store>/evolve/<name>/.
    #[arg(long, default_value = "evolve")]
    pub name: String,
    /// The environment: shop or house.
    #[arg(long, default_value = "shop")]
    pub env: String,
    /// The starting harness: static, stock, a harness manifest file, or a
    /// stored harness by name (e.g. evolve/RUN/incumbent), id or id prefix.
    #[arg(long, default_value = "static")]
    pub from: String,
    /// The task agent's model.
    #[arg(long, default_value = "sim:weak")]
    pub model: String,
    /// The model that writes processor code (e.g. openai:MODEL@URL); without it, templates.
    #[arg(long)]
    pub meta: Option<String>,
    /// A model that reviews each candidate the Critic lets through (e.g.
    /// openai:MODEL@URL): approve, reject, or one revision; the gate decides.
    #[arg(long)]
    pub judge: Option<String>,
    /// Train task indices (the evolution batch): `0..40`, `3,5,9`.
    #[arg(long, default_value = "0..40")]
    pub train: String,
    /// Held-out task indices.
    #[arg(long, default_value = "0..40")]
    pub test: String,
    /// Seeds every batch task runs with, comma-separated.
    #[arg(long, default_value = "1")]
    pub seeds: String,
    /// k: seeds each solved task is rerun on by the gate.
    #[arg(long, default_value_t = 2)]
    pub gate_seeds: u32,
    /// T: rounds at most.
    #[arg(long, default_value_t = 15)]
    pub rounds: u32,
    /// P: idle rounds in a row that end the run.
    #[arg(long, default_value_t = 3)]
    pub patience: u32,
    /// K: candidates per round.
    #[arg(long, default_value_t = 4)]
    pub candidates: u32,
    /// The actionability threshold below which a round is idle.
    #[arg(long, default_value_t = 0.02)]
    pub alpha: f64,
    /// Compile repairs the meta model gets per candidate.
    #[arg(long, default_value_t = 2)]
    pub repairs: u32,
    /// Override the environment's step budget.
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Meta-model token budget.
    #[arg(long, default_value_t = 2_000_000)]
    pub meta_tokens: u64,
    /// Rollout budget (0: none).
    #[arg(long, default_value_t = 0)]
    pub max_rollouts: u64,
    /// Wall-time budget in seconds (0: none).
    #[arg(long, default_value_t = 0)]
    pub wall_secs: u64,
    /// Go on when the environment has no held-out split (the gate's held-out check is skipped).
    #[arg(long)]
    pub allow_no_heldout: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

struct Lines {
    on: bool,
}

impl Reporter for Lines {
    fn report(&self, e: &Progress) {
        if !self.on {
            return;
        }
        let (verb, text) = match e {
            Progress::Round { round, train_solved, train_total, heldout_solved } => (
                "Round",
                format!(
                    "{round}: incumbent solves {train_solved}/{train_total} train{}",
                    heldout_solved.map(|h| format!(", {h} held-out")).unwrap_or_default()
                ),
            ),
            Progress::Stage { round, stage, detail } => ("Stage", format!("R{round} {stage}: {detail}")),
            Progress::Candidate { id, lever, verdict, reason, .. } => {
                ("Candidate", format!("{id} {lever}: {verdict} ({})", reason.chars().take(100).collect::<String>()))
            }
            Progress::Shipped { id, harness, flips, .. } => {
                ("Shipped", format!("{id}: harness {} (+{flips} train)", &harness[..12]))
            }
            Progress::Idle { round, reason } => ("Idle", format!("R{round}: {reason}")),
            Progress::Finished { status } => ("Finished", status.clone()),
        };
        eprintln!("{verb:>12} {text}");
    }
}

fn indices(spec: &str, what: &str) -> Result<Vec<usize>, CliError> {
    let spec = spec.trim();
    let v: Result<Vec<usize>, std::num::ParseIntError> = if spec.is_empty() {
        Ok(vec![])
    } else if let Some((a, b)) = spec.split_once("..") {
        (|| Ok((a.parse::<usize>()?..b.parse::<usize>()?).collect()))()
    } else {
        spec.split(',').map(|s| s.trim().parse()).collect()
    };
    v.hint(format!("--{what} takes a range like `0..40` or indices like `3,5,9`"))
}

fn paths(out: &OutArgs) -> Paths {
    let mut p = Paths::default();
    if let Some(t) = &out.target_dir {
        p.target_dir = t.clone();
    }
    p
}

fn hint_for(e: EvolveError) -> CliError {
    let hint = match &e {
        EvolveError::NoHeldOut(_) => Some("pass --allow-no-heldout to evolve without the held-out check".to_string()),
        EvolveError::Exists(n) => Some(format!("resume it with `kiln evolve resume {n}`, or pick another --name")),
        EvolveError::NoRun { .. } => {
            Some("runs are listed in <store>/evolve/; start one with `kiln evolve --name NAME`".to_string())
        }
        EvolveError::Start { .. } => Some(
            "--from takes static, stock, a manifest file, or a harness from `kiln store ls` (refs under harness/); \
             `make guests` builds the stock processors"
                .to_string(),
        ),
        EvolveError::Name { .. } => Some("e.g. --name shop-2".to_string()),
        EvolveError::UnknownEnv(_) => Some("--env shop or --env house".to_string()),
        EvolveError::Model { .. } => Some(
            "--model, --meta and --judge take sim:weak|mid|strong, openai:MODEL@URL or anthropic:MODEL".to_string(),
        ),
        _ => None,
    };
    CliError { error: e.into(), hint }
}

pub fn execute(store_dir: &Path, args: Args) -> CliResult {
    let store = open_store(store_dir)?;
    let rt = runtime(&store)?;
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let (result, out) = match args.cmd {
        Some(Cmd::Resume { name, out }) => {
            let lines = Lines {
                on: !out.quiet && !out.json && std::io::stderr().is_terminal()
                    || std::env::var_os("KILN_PROGRESS").is_some(),
            };
            (tokio.block_on(crate::evolve::resume(&store, &rt, &name, &paths(&out), &lines, &stop)), out)
        }
        None => {
            let a = args.run;
            let mut cfg = EvolveConfig::new(&a.name, &a.env);
            cfg.start = a.from;
            cfg.model = a.model;
            cfg.meta = a.meta;
            cfg.judge = a.judge;
            cfg.train = indices(&a.train, "train")?;
            cfg.test = indices(&a.test, "test")?;
            cfg.seeds = a
                .seeds
                .split(',')
                .map(|s| s.trim().parse::<u64>())
                .collect::<Result<_, _>>()
                .hint("--seeds takes comma-separated integers, e.g. `1,2`")?;
            cfg.gate_seeds = a.gate_seeds;
            cfg.rounds = a.rounds;
            cfg.patience = a.patience;
            cfg.candidates = a.candidates;
            cfg.alpha = a.alpha;
            cfg.repairs = a.repairs;
            cfg.max_steps = a.max_steps;
            cfg.meta_tokens = a.meta_tokens;
            cfg.max_rollouts = a.max_rollouts;
            cfg.wall_secs = a.wall_secs;
            cfg.allow_no_heldout = a.allow_no_heldout;
            let lines = Lines {
                on: !a.out.quiet && !a.out.json && std::io::stderr().is_terminal()
                    || std::env::var_os("KILN_PROGRESS").is_some(),
            };
            (tokio.block_on(crate::evolve::evolve(&store, &rt, cfg, &paths(&a.out), &lines, &stop)), a.out)
        }
    };
    let report = result.map_err(hint_for)?;
    if out.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if report.status == "interrupted" {
        return Err(CliError {
            error: anyhow::anyhow!("interrupted; the ledgers in {} are consistent", report.dir.display()),
            hint: Some(format!("kiln evolve resume {}", report.name)),
        });
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!("evolution  {} ({})", r.name, r.status);
    println!("ledgers    {}", r.dir.display());
    println!("harness    {} -> {}  (kiln harness show {})", &r.start[..12], &r.harness[..12], r.harness_name);
    let pct = |n: Option<usize>, d: usize| {
        n.map(|n| format!("{n}/{d} ({:.1}%)", 100.0 * n as f64 / d.max(1) as f64)).unwrap_or_else(|| "-".into())
    };
    println!("held-out   {} -> {}", pct(r.heldout_before, r.heldout_total), pct(r.heldout_after, r.heldout_total));
    println!("train      {}", r.train_curve.iter().map(|(k, n)| format!("R{k} {n}")).collect::<Vec<_>>().join("  ·  "));
    println!("regressions let through: {}", r.let_through);
    // In pipeline order; any other stage name the tally has comes after.
    const ORDER: [&str; 8] =
        ["proposed", "compiled", "smoke-failed", "critic-blocked", "judge-rejected", "judge-revised", "gate-rejected", "shipped"];
    let rest = r.tally.keys().filter(|k| !ORDER.contains(&k.as_str())).map(String::as_str);
    let counts: Vec<String> = ORDER
        .into_iter()
        .chain(rest)
        .filter_map(|k| r.tally.get(k).map(|v| format!("{v} {k}")))
        .collect();
    println!("candidates {}", counts.join(" / "));
    let tallies: Vec<_> = r.rounds.iter().filter_map(|row| row.judge.as_ref()).collect();
    if !tallies.is_empty() {
        let tokens: u64 = tallies.iter().map(|t| t.input_tokens + t.output_tokens).sum();
        println!(
            "judge      {} reviews in {} calls, {tokens} tokens (ledger: cost.json)",
            tallies.iter().map(|t| t.reviewed).sum::<usize>(),
            tallies.iter().map(|t| t.calls).sum::<usize>()
        );
    }
    // The judge column (approved / revise / rejected / no review, then
    // revisions that replaced their original) only in runs with a judge.
    let judged = r.rounds.iter().any(|row| row.judge.is_some());
    let judge_head = if judged { format!("  {:<22}", "judge ok/rev/rej/none") } else { String::new() };
    println!(
        "\n{:>5}  {:>7}  {:<36}  {:>8}  {:<10}  {:>8}{judge_head}  idle",
        "round", "action.", "top themes", "proposed", "shipped", "rollouts"
    );
    for row in &r.rounds {
        let themes = row.themes.iter().take(3).map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ");
        let judge = match (&row.judge, judged) {
            (Some(t), _) => format!(
                "  {:<22}",
                format!("{}/{}/{}/{} ({} revised)", t.approved, t.revise, t.rejected, t.no_review, t.replaced)
            ),
            (None, true) => format!("  {:<22}", "-"),
            (None, false) => String::new(),
        };
        println!(
            "{:>5}  {:>7.3}  {:<36}  {:>8}  {:<10}  {:>8}{judge}  {}",
            row.round,
            row.actionability,
            themes,
            row.proposed,
            row.shipped.as_deref().unwrap_or("-"),
            row.rollouts,
            row.idle.as_deref().unwrap_or("")
        );
    }
    if !r.ships.is_empty() {
        println!("\nshipped lineage");
        for s in &r.ships {
            println!(
                "  R{} {} {} [{}/{}] {} -> {}",
                s.round,
                s.candidate,
                s.lever,
                s.bucket,
                s.dimension,
                &s.parent[..12],
                &s.harness[..12]
            );
            println!("     edit      {}", s.edit);
            println!(
                "     predicted {} tasks, flipped {} (hit rate {:.2}, attributed {})",
                s.predicted.len(),
                s.flipped.len(),
                s.hit_rate,
                s.attributed
            );
        }
        println!("  (the store keeps it: kiln harness lineage {})", r.harness_name);
    }
    println!("\nwall       {:.1}s ({} rollouts computed, the rest cached)", r.wall_secs, r.computed_rollouts);
}
