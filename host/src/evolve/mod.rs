//! AEGIS, the evolution engine: traces in, better harnesses out, never
//! losing a task the harness had solved.
//!
//! A run is the paper's Algorithm 1. Each round runs the incumbent harness
//! on the train batch (and, for the curve only, on the held-out tasks), then:
//!
//! 1. [`digest`]: every trace becomes a structured summary with pointers back
//!    into it, the summaries become themes, and an actionability score `a`;
//!    below `alpha` the round is idle.
//! 2. [`plan`]: the landscape (themes, persistent failures, levers tried by
//!    bucket and dimension with hit rates, what was never tried) and an
//!    ordered list of directions that pushes under-explored buckets.
//! 3. [`evolver`]: up to K candidates, each a typed edit of the harness with
//!    a change manifest; code is generated from templates ([`forge`]) or
//!    written by a `meta` model ([`meta`]), compiled by kiln, smoke-tested
//!    by replay.
//! 4. [`critic`]: deterministic checks (capability, hard-coding, scoring,
//!    duplicates, overlap, non-local effects by replay, portfolio audit) and
//!    a ranking.
//! 5. [`gate`]: ordered deterministic checks; the first candidate to pass
//!    ships. `patience` idle rounds in a row end the run.
//!
//! Design choices:
//! - **Held-out is never seen by the proposers.** Digests, landscapes and
//!   candidates come from the train split only; the held-out split enters
//!   only the Gate's last check and the curves. A suite without one is
//!   refused unless the run explicitly allows it.
//! - **Everything expensive is memoized in the store**: rollouts by
//!   (harness id, task, seed, model, step budget), builds by source hash,
//!   meta-model replies by request hash. A run is therefore resumable at any
//!   point: `resume` replays the run from its configuration, every finished
//!   piece comes back from the caches, and the ledgers come out byte-for-byte
//!   what an uninterrupted run writes.
//! - **Ledgers are deterministic**: they count rollouts asked (not computed)
//!   and keep wall time in a separate file, so the same seed gives the same
//!   bytes ([`ledger::DETERMINISTIC_FILES`]).
//! - **The harness is a [`genome::Genome`]** behind one small adapter, so the
//!   engine can move to the harness room's `Harness` without touching the
//!   stages.

pub mod critic;
pub mod digest;
pub mod evolver;
pub mod forge;
pub mod gate;
pub mod genome;
pub mod ledger;
pub mod meta;
pub mod plan;
pub mod rollout;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use self::critic::Review;
use self::digest::{aggregate, digest_task};
use self::evolver::{Candidate, Workbench};
use self::forge::Forge;
use self::gate::{Bench, GateReport};
use self::genome::Genome;
use self::ledger::{CandidateRecord, Cost, Ledger, Outcome, Point, RoundRow, Ship};
use self::plan::{History, LeverStats};
use self::rollout::{Counters, Lab, TaskResult};
use crate::env::Split;
use crate::models::Model;
use crate::sandbox::Runtime;
use crate::store::Store;
use crate::trace::Event;

/// The system prompt of the built-in starting harnesses.
pub const DEFAULT_SYSTEM: &str =
    "You are a careful agent. Solve the task with the tools ({tools}); call exactly one tool per turn.";

/// The stock processors, in pipeline order (the `stock` starting harness).
pub const STOCK: [&str; 7] =
    ["history-compactor", "goal-pin", "tool-call-repair", "loop-guard", "observation-trim", "step-budget", "notes"];

/// Everything that defines a run. Stored as `run.json`; `resume` reads it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvolveConfig {
    pub name: String,
    /// A built-in suite (`shop`, `house`).
    pub env: String,
    /// `static` (no processors), `stock`, a harness manifest (`*.toml`), or a stored genome id.
    pub start: String,
    /// The task agent's model spec.
    pub model: String,
    /// The model that writes processors, if any.
    pub meta: Option<String>,
    /// Train task indices (the evolution batch).
    pub train: Vec<usize>,
    /// Held-out task indices.
    pub test: Vec<usize>,
    /// Seeds every batch task runs with.
    pub seeds: Vec<u64>,
    /// k: seeds each solved task is rerun on by the Gate.
    pub gate_seeds: u32,
    /// T, P, K.
    pub rounds: u32,
    pub patience: u32,
    pub candidates: u32,
    /// The actionability threshold.
    pub alpha: f64,
    /// Compile repairs a meta model gets per candidate.
    pub repairs: u32,
    pub max_steps: Option<u32>,
    /// Budgets: meta-model tokens, rollouts asked, wall seconds (0 = none).
    pub meta_tokens: u64,
    pub max_rollouts: u64,
    pub wall_secs: u64,
    /// Go on without a held-out split (the Gate's last check is skipped).
    pub allow_no_heldout: bool,
}

impl EvolveConfig {
    /// Defaults for a run on `env`: the paper's T = 15, P = 3, K = 4.
    pub fn new(name: &str, env: &str) -> EvolveConfig {
        EvolveConfig {
            name: name.into(),
            env: env.into(),
            start: "static".into(),
            model: "sim:weak".into(),
            meta: None,
            train: (0..40).collect(),
            test: (0..40).collect(),
            seeds: vec![1],
            gate_seeds: 2,
            rounds: 15,
            patience: 3,
            candidates: 4,
            alpha: 0.02,
            repairs: 2,
            max_steps: None,
            meta_tokens: 2_000_000,
            max_rollouts: 0,
            wall_secs: 0,
            allow_no_heldout: false,
        }
    }
}

/// Where kiln finds and builds processor source. Machine-specific, so not
/// part of [`EvolveConfig`].
#[derive(Clone, Debug)]
pub struct Paths {
    /// The shared cargo target dir for guest builds.
    pub target_dir: PathBuf,
    /// The `kiln-guest` crate.
    pub guest_sdk: PathBuf,
    /// The stock processors' workspace.
    pub processors: PathBuf,
}

impl Default for Paths {
    /// The repository this kiln was built from, and [`crate::build::default_target_dir`].
    fn default() -> Paths {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf();
        Paths {
            target_dir: crate::build::default_target_dir(),
            guest_sdk: root.join("guest-sdk"),
            processors: root.join("processors"),
        }
    }
}

/// Why a run could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum EvolveError {
    #[error("unknown environment `{0}` (built in: shop, house)")]
    UnknownEnv(String),
    #[error("environment `{0}` has no held-out tasks: the Gate could not check that the held-out score does not drop")]
    NoHeldOut(String),
    #[error("task index {index} is out of range: the {split} split of `{env}` has {len} tasks")]
    TaskIndex { env: String, split: String, index: usize, len: usize },
    #[error("the starting harness `{start}` does not build: {reason}")]
    Start { start: String, reason: String },
    #[error("model `{spec}`: {reason}")]
    Model { spec: String, reason: String },
    #[error("an evolution run named `{0}` already exists")]
    Exists(String),
    #[error("no evolution run named `{name}` in {dir}")]
    NoRun { name: String, dir: PathBuf },
    #[error("the run's configuration {path} is unreadable: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("the ledgers could not be written: {0}")]
    Ledger(String),
    #[error("rolling out the incumbent failed: {0}")]
    Rollout(String),
}

/// What the engine tells its reporter, as it happens.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    Round { round: u32, train_solved: usize, train_total: usize, heldout_solved: Option<usize> },
    Stage { round: u32, stage: String, detail: String },
    Candidate { round: u32, id: String, lever: String, verdict: String, reason: String },
    Shipped { round: u32, id: String, harness: String, flips: usize },
    Idle { round: u32, reason: String },
    Finished { status: String },
}

/// Receives [`Progress`] (the CLI draws it; tests collect it).
pub trait Reporter: Send + Sync {
    fn report(&self, event: &Progress);
}

/// A reporter that drops everything.
pub struct Silent;
impl Reporter for Silent {
    fn report(&self, _: &Progress) {}
}

/// How a run ended, and where to read about it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub name: String,
    /// `patience`, `rounds`, `interrupted`, `budget: ...`.
    pub status: String,
    pub dir: PathBuf,
    pub start: String,
    pub harness: String,
    pub heldout_before: Option<usize>,
    pub heldout_after: Option<usize>,
    pub heldout_total: usize,
    pub train_curve: Vec<(u32, usize)>,
    pub train_total: usize,
    pub let_through: usize,
    /// proposed / compiled / smoke-failed / critic-blocked / gate-rejected / shipped.
    pub tally: BTreeMap<String, usize>,
    pub rounds: Vec<RoundRow>,
    pub ships: Vec<Ship>,
    pub wall_secs: f64,
    /// Rollouts actually computed (the rest came from the cache).
    pub computed_rollouts: u64,
}

/// The directory of the run `name`.
pub fn run_dir(store: &Store, name: &str) -> PathBuf {
    store.root().join("evolve").join(name)
}

/// Start a new run.
pub async fn evolve(
    store: &Store,
    rt: &Runtime,
    cfg: EvolveConfig,
    paths: &Paths,
    reporter: &dyn Reporter,
    stop: &AtomicBool,
) -> Result<Report, EvolveError> {
    let dir = run_dir(store, &cfg.name);
    if dir.join("run.json").exists() {
        return Err(EvolveError::Exists(cfg.name.clone()));
    }
    execute(store, rt, cfg, paths, reporter, stop, 0).await
}

/// Resume the run `name` from its stored configuration.
pub async fn resume(
    store: &Store,
    rt: &Runtime,
    name: &str,
    paths: &Paths,
    reporter: &dyn Reporter,
    stop: &AtomicBool,
) -> Result<Report, EvolveError> {
    let path = run_dir(store, name).join("run.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| EvolveError::NoRun { name: name.into(), dir: store.root().join("evolve") })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EvolveError::BadConfig { path: path.clone(), reason: e.to_string() })?;
    let cfg: EvolveConfig = serde_json::from_value(v["config"].clone())
        .map_err(|e| EvolveError::BadConfig { path: path.clone(), reason: e.to_string() })?;
    let resumes = v["resumes"].as_u64().unwrap_or(0) + 1;
    execute(store, rt, cfg, paths, reporter, stop, resumes).await
}

fn model(spec: &str) -> Result<Arc<dyn Model>, EvolveError> {
    crate::models::spec::parse(spec)
        .map(Arc::from)
        .map_err(|e| EvolveError::Model { spec: spec.into(), reason: e.to_string() })
}

fn start_genome(store: &Store, rt: &Runtime, forge: &Forge, start: &str) -> Result<Genome, EvolveError> {
    let bad = |reason: String| EvolveError::Start { start: start.into(), reason };
    let base = Genome { system: DEFAULT_SYSTEM.into(), deny: vec![], processors: vec![] };
    let g = match start {
        "static" => base,
        "stock" => {
            let mut g = base;
            for name in STOCK {
                let b = forge.stock(rt, name).map_err(|e| bad(format!("stock processor {name}: {e}")))?;
                let info = &b.loaded.info;
                g.processors.push(genome::Part {
                    name: info.name.clone(),
                    group: info.group.clone(),
                    band: info.band,
                    component: b.component,
                    config: serde_json::json!({}),
                    limits: Default::default(),
                    policy: Default::default(),
                });
            }
            g
        }
        path if path.ends_with(".toml") => {
            let shop = crate::harness::Workshop::new(rt, store, forge.target_dir.clone());
            let authored = shop.open(Path::new(path)).map_err(|e| bad(e.to_string()))?;
            genome::from_harness(&authored.harness).map_err(bad)?
        }
        id => {
            let oid = store
                .resolve(id)
                .map_err(|e| bad(format!("not `static`, `stock`, a `.toml` manifest or a stored genome id: {e}")))?;
            let bytes = store.get(&oid).map_err(|e| bad(e.to_string()))?;
            load_genome(store, rt, &bytes).map_err(bad)?
        }
    };
    g.specs(rt, store).map_err(bad)?;
    Ok(g)
}

/// Read a genome from its canonical bytes (names, groups, bands come from the components).
pub fn load_genome(store: &Store, rt: &Runtime, bytes: &[u8]) -> Result<Genome, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not a genome: {e}"))?;
    if v["format"] != "kiln-evolve-genome/1" {
        return Err("not a kiln-evolve genome (format kiln-evolve-genome/1)".into());
    }
    let mut g = Genome {
        system: v["system"].as_str().unwrap_or_default().into(),
        deny: serde_json::from_value(v["deny"].clone()).unwrap_or_default(),
        processors: vec![],
    };
    for p in v["processors"].as_array().cloned().unwrap_or_default() {
        let component = p["component"].as_str().ok_or("a processor without a component")?.to_string();
        let id: crate::store::ObjectId = component.parse().map_err(|e| format!("{e}"))?;
        let loaded = rt.load(&store.get(&id).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        g.processors.push(genome::Part {
            name: loaded.info.name.clone(),
            group: loaded.info.group.clone(),
            band: loaded.info.band,
            component,
            config: p["config"].clone(),
            limits: if p["limits"].is_null() {
                Default::default()
            } else {
                serde_json::from_value(p["limits"].clone()).map_err(|e| format!("limits: {e}"))?
            },
            policy: if p["policy"].is_null() {
                Default::default()
            } else {
                serde_json::from_value(p["policy"].clone()).map_err(|e| format!("policy: {e}"))?
            },
        });
    }
    Ok(g)
}

fn count_verdicts(records: &[CandidateRecord]) -> BTreeMap<String, usize> {
    let mut t: BTreeMap<String, usize> =
        ["proposed", "compiled", "smoke-failed", "critic-blocked", "gate-rejected", "shipped"]
            .iter()
            .map(|k| (k.to_string(), 0))
            .collect();
    for c in records {
        *t.get_mut("proposed").unwrap() += 1;
        if c.build.component.is_some() && c.build.attempts > 0 {
            *t.get_mut("compiled").unwrap() += 1;
        }
        let key = match c.verdict.as_str() {
            "shipped" => Some("shipped"),
            "evolver:smoke" => Some("smoke-failed"),
            "critic" => Some("critic-blocked"),
            v if v.starts_with("gate:") => Some("gate-rejected"),
            _ => None,
        };
        if let Some(k) = key {
            *t.get_mut(k).unwrap() += 1;
        }
    }
    t
}

/// Did the attribution signature fire on the flipped tasks?
fn attributed(lab: &Lab, c: &Candidate, train: &[TaskResult], flipped: &[String]) -> bool {
    let a = &c.manifest.attribution_signature;
    match a.kind.as_str() {
        "processor_invocation" => train.iter().filter(|r| flipped.contains(&r.task)).any(|r| {
            let Ok(events) = lab.events(&r.trace) else { return false };
            let fired = events
                .iter()
                .filter(|e| match e {
                    Event::Call { report, .. } => {
                        report.processor == a.name
                            && (!report.edits.is_empty()
                                || !matches!(report.verdict, Some(crate::sandbox::Verdict::Pass)))
                    }
                    _ => false,
                })
                .count();
            fired as u32 >= a.expected_min_calls
        }),
        _ => true,
    }
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    store: &Store,
    rt: &Runtime,
    cfg: EvolveConfig,
    paths: &Paths,
    reporter: &dyn Reporter,
    stop: &AtomicBool,
    resumes: u64,
) -> Result<Report, EvolveError> {
    let began = Instant::now();
    let dir = run_dir(store, &cfg.name);
    let suite: Arc<dyn crate::env::Suite> =
        Arc::from(crate::env::builtin(&cfg.env).ok_or_else(|| EvolveError::UnknownEnv(cfg.env.clone()))?);
    let all_train = suite.tasks(Split::Train);
    let all_test = suite.tasks(Split::Test);
    let pick = |ids: &[String], idx: &[usize], split: &str| -> Result<Vec<String>, EvolveError> {
        idx.iter()
            .map(|&i| {
                ids.get(i).cloned().ok_or(EvolveError::TaskIndex {
                    env: cfg.env.clone(),
                    split: split.into(),
                    index: i,
                    len: ids.len(),
                })
            })
            .collect()
    };
    let train_ids = pick(&all_train, &cfg.train, "train")?;
    let test_ids = pick(&all_test, &cfg.test, "test")?;
    if test_ids.is_empty() && !cfg.allow_no_heldout {
        return Err(EvolveError::NoHeldOut(cfg.env.clone()));
    }
    let main = model(&cfg.model)?;
    let meta = cfg.meta.as_deref().map(model).transpose()?;
    let forge = Forge {
        store: store.clone(),
        target_dir: paths.target_dir.clone(),
        guest_sdk: paths.guest_sdk.clone(),
        processors: paths.processors.clone(),
    };
    let mut incumbent = start_genome(store, rt, &forge, &cfg.start)?;
    let start_id = incumbent.id();
    incumbent.save(store).map_err(|e| EvolveError::Ledger(e.to_string()))?;
    let counters = Arc::new(Counters::default());
    let lab = Lab {
        rt: rt.clone(),
        store: store.clone(),
        suite: suite.clone(),
        env_name: cfg.env.clone(),
        model: main.clone(),
        max_steps: cfg.max_steps,
        jobs: 2,
        counters: counters.clone(),
    };
    let train_jobs: Vec<(String, u64)> =
        train_ids.iter().flat_map(|t| cfg.seeds.iter().map(move |s| (t.clone(), *s))).collect();
    let test_jobs: Vec<(String, u64)> =
        test_ids.iter().flat_map(|t| cfg.seeds.iter().map(move |s| (t.clone(), *s))).collect();
    let every_id: Vec<String> = all_train.iter().chain(&all_test).cloned().collect();

    std::fs::create_dir_all(&dir).map_err(|e| EvolveError::Ledger(format!("cannot create {}: {e}", dir.display())))?;
    let run_json = |status: &str| -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(&serde_json::json!({ "format": "kiln-evolve-run/1", "config": cfg, "status": status, "resumes": resumes, "start": start_id })).expect("config serializes");
        b.push(b'\n');
        b
    };
    std::fs::write(dir.join("run.json"), run_json("running"))
        .map_err(|e| EvolveError::Ledger(format!("cannot write {}: {e}", dir.join("run.json").display())))?;

    let mut led = Ledger::default();
    led.journal = format!(
        "# Evolution `{}`\n\nenv {} · start {} ({}) · model {} · meta {} · train {} tasks × seeds {:?} · held-out {} tasks · T={} P={} K={} k={} alpha={}\n",
        cfg.name,
        cfg.env,
        cfg.start,
        &start_id[..12],
        cfg.model,
        cfg.meta.as_deref().unwrap_or("none (offline planner)"),
        train_ids.len(),
        cfg.seeds,
        test_ids.len(),
        cfg.rounds,
        cfg.patience,
        cfg.candidates,
        cfg.gate_seeds,
        cfg.alpha
    );
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    seen.insert(incumbent.id(), "the starting harness".into());
    let mut failures: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut meta_left = cfg.meta_tokens;
    let mut idle = 0u32;
    let mut status = "rounds".to_string();
    let mut timing: Vec<(u32, f64)> = Vec::new();
    let write = |led: &Ledger, status: &str, timing: &[(u32, f64)]| -> Result<(), EvolveError> {
        let t = serde_json::to_vec_pretty(&serde_json::json!({ "wall_secs": began.elapsed().as_secs_f64(), "round_end_secs": timing, "computed_rollouts": counters.computed.load(Ordering::Relaxed) })).expect("timing serializes");
        led.write(&dir, store, &cfg.name, &[("run.json", run_json(status)), ("timing.json", t)])
            .map_err(EvolveError::Ledger)
    };
    let heldout =
        |rows: &[TaskResult]| if test_jobs.is_empty() { None } else { Some(rows.iter().filter(|r| r.success).count()) };

    for round in 1..=cfg.rounds {
        if stop.load(Ordering::Relaxed) {
            status = "interrupted".into();
            break;
        }
        if cfg.wall_secs > 0 && began.elapsed().as_secs() >= cfg.wall_secs {
            status = "budget: wall time".into();
            break;
        }
        if cfg.max_rollouts > 0 && counters.rollouts.load(Ordering::Relaxed) >= cfg.max_rollouts {
            status = "budget: rollouts".into();
            break;
        }
        let rollouts_at_start = counters.rollouts.load(Ordering::Relaxed);
        let meta_at_start = meta_left;
        let train = lab.run(&incumbent, &train_jobs).await.map_err(EvolveError::Rollout)?;
        let test = lab.run(&incumbent, &test_jobs).await.map_err(EvolveError::Rollout)?;
        let train_solved = train.iter().filter(|r| r.success).count();
        led.curves.push(Point {
            round,
            harness: incumbent.id(),
            train_solved,
            train_total: train.len(),
            heldout_solved: heldout(&test),
            heldout_total: test.len(),
        });
        reporter.report(&Progress::Round {
            round,
            train_solved,
            train_total: train.len(),
            heldout_solved: heldout(&test),
        });
        led.journal.push_str(&format!(
            "\n## Round {round}\n\nincumbent {} solves {train_solved}/{} train, {} held-out\n",
            &incumbent.id()[..12],
            train.len(),
            heldout(&test).map(|h| format!("{h}/{}", test.len())).unwrap_or_else(|| "no".into())
        ));

        // Digest.
        reporter.report(&Progress::Stage { round, stage: "digest".into(), detail: format!("{} traces", train.len()) });
        let digests = train
            .iter()
            .map(|r| lab.events(&r.trace).map(|e| digest_task(r, &e)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EvolveError::Rollout)?;
        let digest = aggregate(digests);
        for t in &digest.tasks {
            led.history.entry(t.task.clone()).or_default().push(Outcome {
                round,
                seed: t.seed,
                success: t.success,
                reason: t.reason.name().into(),
                category: t.category,
                trace: t.trace.clone(),
            });
            if !t.success {
                failures.entry(t.task.clone()).or_default().insert(round);
            }
        }
        led.round_files.push((
            round,
            "digest.json".into(),
            serde_json::to_vec_pretty(&digest).expect("digest serializes"),
        ));
        let mut row = RoundRow {
            round,
            actionability: digest.actionability,
            themes: digest.themes.iter().map(|t| (t.category.name().to_string(), t.count)).collect(),
            proposed: 0,
            shipped: None,
            idle: None,
            rollouts: 0,
            meta_tokens: 0,
        };
        led.journal.push_str(&format!(
            "digest: actionability {:.3}; themes {}\n",
            digest.actionability,
            row.themes.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ")
        ));

        let finish_round =
            |led: &mut Ledger, mut row: RoundRow, idle_reason: Option<String>, counters: &Counters, meta_left: u64| {
                if let Some(r) = &idle_reason {
                    reporter.report(&Progress::Idle { round, reason: r.clone() });
                    led.journal.push_str(&format!("idle: {r}\n"));
                }
                row.idle = idle_reason;
                row.rollouts = counters.rollouts.load(Ordering::Relaxed) - rollouts_at_start;
                row.meta_tokens = meta_at_start - meta_left;
                led.rounds.push(row);
            };

        if digest.actionability < cfg.alpha {
            finish_round(
                &mut led,
                row,
                Some(format!("nothing actionable (a = {:.3} < alpha = {})", digest.actionability, cfg.alpha)),
                &counters,
                meta_left,
            );
            idle += 1;
            timing.push((round, began.elapsed().as_secs_f64()));
            write(&led, "running", &timing)?;
            if idle >= cfg.patience {
                status = "patience".into();
                break;
            }
            continue;
        }

        // Plan.
        reporter.report(&Progress::Stage {
            round,
            stage: "plan".into(),
            detail: format!("{} themes", digest.themes.len()),
        });
        let regressions: Vec<String> = led.caught.clone();
        let landscape = plan::plan(
            &digest,
            &incumbent,
            &History { levers: &led.levers, failures: &failures, regressions: &regressions, concerns: &led.concerns },
            meta.is_some(),
        );
        led.round_files.push((round, "landscape.md".into(), landscape.markdown(round).into_bytes()));

        // Evolve.
        let mut candidates: Vec<Candidate> = Vec::new();
        {
            let mut bench = Workbench {
                lab: &lab,
                forge: &forge,
                meta: meta.as_deref(),
                repairs: cfg.repairs,
                meta_tokens_left: meta_left,
                digest: &digest,
                results: &train,
                incumbent: &incumbent,
                round,
                tried: &seen,
                skipped: vec![],
            };
            for d in &landscape.directions {
                if candidates.len() as u32 >= cfg.candidates || stop.load(Ordering::Relaxed) {
                    break;
                }
                reporter.report(&Progress::Stage {
                    round,
                    stage: "evolve".into(),
                    detail: format!("{} via {}", d.theme.name(), d.lever),
                });
                if let Some(c) = bench.propose(d, candidates.len()).await {
                    candidates.push(c);
                }
            }
            meta_left = bench.meta_tokens_left;
            if !bench.skipped.is_empty() {
                led.journal.push_str(&format!("skipped, already tried: {}\n", bench.skipped.join(", ")));
            }
        }
        if stop.load(Ordering::Relaxed) {
            status = "interrupted".into();
            break;
        }
        row.proposed = candidates.len();
        if candidates.is_empty() {
            let reason = if landscape.directions.is_empty() {
                "the landscape has no direction to try"
            } else {
                "the Evolver made no candidate"
            };
            finish_round(&mut led, row, Some(reason.into()), &counters, meta_left);
            idle += 1;
            timing.push((round, began.elapsed().as_secs_f64()));
            write(&led, "running", &timing)?;
            if idle >= cfg.patience {
                status = "patience".into();
                break;
            }
            continue;
        }

        // Critic.
        reporter.report(&Progress::Stage {
            round,
            stage: "critic".into(),
            detail: format!("{} candidates", candidates.len()),
        });
        let incumbent_id = incumbent.id();
        let cx = critic::Context {
            lab: &lab,
            digest: &digest,
            results: &train,
            task_ids: &every_id,
            seen: &seen,
            levers: &led.levers,
            round,
            incumbent: &incumbent_id,
            present: incumbent.processors.iter().map(|p| p.name.clone()).collect(),
        };
        let (reviews, concerns) = critic::review(&cx, &candidates);
        for c in &concerns {
            if !led.concerns.contains(c) {
                led.concerns.push(c.clone());
            }
        }

        // Gate, in rank order; the first to pass ships.
        let mut order: Vec<usize> = (0..candidates.len()).filter(|&i| reviews[i].rank.is_some()).collect();
        order.sort_by_key(|&i| reviews[i].rank);
        let mut gates: Vec<Option<(GateReport, u64)>> = vec![None; candidates.len()];
        let mut shipped: Option<usize> = None;
        for &i in &order {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            reporter.report(&Progress::Stage {
                round,
                stage: "gate".into(),
                detail: candidates[i].manifest.candidate_id.clone(),
            });
            let before = counters.rollouts.load(Ordering::Relaxed);
            let bench = Bench {
                lab: &lab,
                incumbent: &incumbent,
                train: &train,
                test: (!test_jobs.is_empty()).then_some(&test[..]),
                gate_seeds: cfg.gate_seeds,
            };
            let report = gate::gate(&bench, &candidates[i]).await;
            let spent = counters.rollouts.load(Ordering::Relaxed) - before;
            let passed = report.passed;
            gates[i] = Some((report, spent));
            if passed {
                shipped = Some(i);
                break;
            }
        }
        if stop.load(Ordering::Relaxed) && shipped.is_none() {
            status = "interrupted".into();
            break;
        }

        // Record every candidate.
        for (i, c) in candidates.iter().enumerate() {
            let review: Review = reviews[i].clone();
            let (gate, spent) = match &gates[i] {
                Some((g, s)) => (Some(g.clone()), *s),
                None => (None, 0),
            };
            let (verdict, reason) = if let Some((stage, reason)) = &c.failed {
                (stage.clone(), reason.clone())
            } else if review.blocked {
                (
                    "critic".to_string(),
                    review
                        .flags
                        .iter()
                        .filter(|f| f.blocks)
                        .map(|f| format!("{}: {}", f.rule, f.detail))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            } else if let Some(g) = &gate {
                if g.passed {
                    (
                        "shipped".to_string(),
                        format!(
                            "{} target flips, held-out {:?} -> {:?}",
                            g.target_flips.len(),
                            g.heldout_before,
                            g.heldout_after
                        ),
                    )
                } else {
                    let at = g.failed_at.clone().unwrap_or_default();
                    let detail = g.checks.last().map(|c| c.detail.clone()).unwrap_or_default();
                    (format!("gate:{at}"), detail)
                }
            } else {
                ("not-gated".to_string(), "an earlier-ranked candidate shipped".to_string())
            };
            if let Some(g) = &gate {
                for r in &g.regressions {
                    led.caught.push(format!("R{round} {} ({}): {r}", c.manifest.candidate_id, c.manifest.lever));
                }
            }
            let gain = gate.as_ref().filter(|g| g.failed_at.as_deref() != Some("manifest")).and_then(|g| {
                let train_gain = g.flips.len();
                match (g.heldout_before, g.heldout_after) {
                    (Some(a), Some(b)) => Some((train_gain, b as i64 - a as i64)),
                    _ if !g.train.is_empty() => Some((train_gain, 0)),
                    _ => None,
                }
            });
            reporter.report(&Progress::Candidate {
                round,
                id: c.manifest.candidate_id.clone(),
                lever: c.manifest.lever.clone(),
                verdict: verdict.clone(),
                reason: reason.clone(),
            });
            led.journal.push_str(&format!(
                "- {} {} [{}/{}] {}: **{verdict}** — {reason}\n",
                c.manifest.candidate_id,
                c.manifest.lever,
                c.manifest.bucket.name(),
                c.manifest.dimension,
                c.manifest.edit.describe()
            ));
            let stats = led.levers.entry(c.manifest.lever.clone()).or_insert_with(|| LeverStats {
                bucket: Some(c.manifest.bucket),
                dimension: c.manifest.dimension.clone(),
                ..Default::default()
            });
            stats.proposed += 1;
            if verdict == "shipped" {
                let g = gate.as_ref().expect("shipped candidates were gated");
                stats.shipped += 1;
                stats.predicted += c.manifest.predicted_impact.tasks_will_unlock.len() as u32;
                stats.flipped += g.target_flips.len() as u32;
                stats.ship_rounds.push(round);
            } else if verdict != "not-gated" {
                stats.rejected += 1;
            }
            if !c.manifest.harness.is_empty() {
                seen.entry(c.manifest.harness.clone()).or_insert_with(|| c.manifest.candidate_id.clone());
            }
            led.candidates.push(CandidateRecord {
                round,
                manifest: c.manifest.clone(),
                build: c.build.clone(),
                smoke: c.smoke.clone(),
                review,
                gate,
                verdict,
                reason,
                cost: Cost { rollouts: spent, compile_attempts: c.build.attempts, meta_tokens: c.build.meta_tokens },
                gain,
            });
        }

        match shipped {
            Some(i) => {
                let c = &candidates[i];
                let (g, _) = gates[i].clone().expect("gated");
                let new = c.genome.clone().expect("a shipped candidate has a harness");
                // Regressions let through: solved by the old incumbent on a batch seed, lost now.
                for (a, b) in train.iter().zip(&g.train) {
                    if a.success && !b.success {
                        led.let_through.push(format!("R{round} {}: {}@{}", c.manifest.candidate_id, a.task, a.seed));
                    }
                }
                let predicted = c.manifest.predicted_impact.tasks_will_unlock.clone();
                let hit = g.target_flips.len() as f64 / predicted.len().max(1) as f64;
                led.ships.push(Ship {
                    round,
                    candidate: c.manifest.candidate_id.clone(),
                    lever: c.manifest.lever.clone(),
                    bucket: c.manifest.bucket.name().into(),
                    dimension: c.manifest.dimension.clone(),
                    edit: c.manifest.edit.describe(),
                    parent: incumbent.id(),
                    harness: new.id(),
                    predicted,
                    flipped: g.flips.clone(),
                    hit_rate: (hit * 1e4).round() / 1e4,
                    attributed: attributed(&lab, c, &g.train, &g.target_flips),
                    heldout_before: g.heldout_before,
                    heldout_after: g.heldout_after,
                });
                new.save(store).map_err(|e| EvolveError::Ledger(e.to_string()))?;
                reporter.report(&Progress::Shipped {
                    round,
                    id: c.manifest.candidate_id.clone(),
                    harness: new.id(),
                    flips: g.flips.len(),
                });
                led.journal.push_str(&format!("shipped {} -> harness {}\n", c.manifest.candidate_id, &new.id()[..12]));
                row.shipped = Some(c.manifest.candidate_id.clone());
                incumbent = new;
                idle = 0;
                finish_round(&mut led, row, None, &counters, meta_left);
            }
            None => {
                idle += 1;
                finish_round(&mut led, row, Some("no candidate passed the gate".into()), &counters, meta_left);
            }
        }
        timing.push((round, began.elapsed().as_secs_f64()));
        write(&led, "running", &timing)?;
        if idle >= cfg.patience {
            status = "patience".into();
            break;
        }
    }

    // The final harness, measured on the same batches.
    if status != "interrupted" {
        let train = lab.run(&incumbent, &train_jobs).await.map_err(EvolveError::Rollout)?;
        let test = lab.run(&incumbent, &test_jobs).await.map_err(EvolveError::Rollout)?;
        led.final_point = Some(Point {
            round: led.rounds.len() as u32 + 1,
            harness: incumbent.id(),
            train_solved: train.iter().filter(|r| r.success).count(),
            train_total: train.len(),
            heldout_solved: heldout(&test),
            heldout_total: test.len(),
        });
        led.journal.push_str(&format!("\n## End ({status})\n\nfinal harness {}\n", &incumbent.id()[..12]));
    }
    write(&led, &status, &timing)?;
    reporter.report(&Progress::Finished { status: status.clone() });
    let tally = count_verdicts(&led.candidates);
    Ok(Report {
        name: cfg.name.clone(),
        status,
        dir,
        start: start_id,
        harness: incumbent.id(),
        heldout_before: led.curves.first().and_then(|p| p.heldout_solved),
        heldout_after: led.final_point.as_ref().and_then(|p| p.heldout_solved),
        heldout_total: test_jobs.len(),
        train_curve: led
            .curves
            .iter()
            .map(|p| (p.round, p.train_solved))
            .chain(led.final_point.iter().map(|p| (p.round, p.train_solved)))
            .collect(),
        train_total: train_jobs.len(),
        let_through: led.let_through.len(),
        tally,
        rounds: led.rounds.clone(),
        ships: led.ships.clone(),
        wall_secs: began.elapsed().as_secs_f64(),
        computed_rollouts: counters.computed.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_refuses_unknown_keys() {
        let c = EvolveConfig::new("n", "shop");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::from_value::<EvolveConfig>(v.clone()).unwrap(), c);
        let mut bad = v;
        bad["roundz"] = serde_json::json!(3);
        assert!(serde_json::from_value::<EvolveConfig>(bad).unwrap_err().to_string().contains("roundz"));
    }

    #[test]
    fn verdicts_are_tallied_by_stage() {
        assert_eq!(count_verdicts(&[])["proposed"], 0);
    }

    #[test]
    fn edit_descriptions_are_stable() {
        let e = genome::EditOp::AddPromptLine { line: "x".into() };
        assert_eq!(e.describe(), "prompt line \"x\"");
    }
}
