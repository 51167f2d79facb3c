//! AEGIS, the evolution engine: traces in, better harnesses out, never
//! losing a task the harness had solved.
//!
//! A run is the paper's Algorithm 1. Each round is a row of named stages,
//! each its own function below (`Run::round` reads as the algorithm):
//!
//! 0. run the incumbent on the train batch (and, for the curve only, on the
//!    held-out tasks);
//! 1. [`digest`]: every trace becomes a structured summary with pointers back
//!    into it, the summaries become themes, and an actionability score `a`;
//!    below `alpha` the round is idle.
//! 2. [`plan`]: the landscape (themes, persistent failures, levers tried by
//!    bucket and dimension with hit rates, what was never tried) and an
//!    ordered list of directions that pushes under-explored buckets.
//! 3. [`evolver`]: up to K candidates, each a harness room
//!    [`Edit`](crate::harness::Edit) of the incumbent with a change
//!    manifest; code is generated from templates ([`forge`]) or written by a
//!    `meta` model ([`meta`]), compiled by kiln, smoke-tested by replay.
//! 4. [`critic`]: deterministic checks (capability, hard-coding, scoring,
//!    duplicates, overlap, non-local effects by replay, portfolio audit) and
//!    a ranking; then, when the run has a `judge` model, its written review
//!    of each candidate the Critic let through, just before the Gate would
//!    try it ([`judge`], `Run::judge_and_gate`; none once one has shipped):
//!    `reject` takes the candidate out (`judge-rejected`), `revise` gets one
//!    revision, made and checked like a first proposal, `approve` and a
//!    judge that gives no review let it go on unchanged.
//! 5. [`gate`]: ordered deterministic checks; the first candidate to pass
//!    ships. A round that ships nothing is idle, and `patience` idle rounds
//!    in a row end the run (one helper, `Run::end_round`, closes every
//!    round, idle or not).
//!
//! Design choices:
//! - **The harness is the harness room's [`Harness`].** The incumbent and
//!   every candidate are `Harness` values whose id is the canonical id `kiln
//!   harness` shows; candidates come from the room's own edits, so the
//!   composition rules hold and each candidate knows its parent and edit.
//!   A shipped harness is saved with that lineage plus a `reason`: a stored
//!   object holding the candidate's ledger record (change manifest, review,
//!   gate verdict). The ref `harness/evolve/<run>/incumbent` follows the
//!   incumbent, so `kiln harness show evolve/<run>/incumbent` and `kiln
//!   harness lineage evolve/<run>/incumbent` show what the run made.
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
//! - **The judge advises; the Gate decides.** Judge calls cost tokens, so
//!   only candidates the deterministic Critic let through are reviewed.
//!   A revision of a model-written candidate continues its writer's
//!   conversation with the judge's request and goes through compile,
//!   repair, smoke and the Critic again, then one more review that may not
//!   ask for another revision; if it fails anywhere before that review,
//!   the original goes on. Without a writer, the offline planner answers a
//!   request only by narrowing (dropping the tool aliases or predicted
//!   targets it names, [`Workbench::narrow`]); otherwise it records the
//!   request as unanswered and the original goes on. Replies are cached
//!   like the meta model's, so a resumed run reads the same reviews.
//! - **Ledgers are deterministic**: they count rollouts asked (not computed)
//!   and keep wall time in a separate file, so the same seed gives the same
//!   bytes ([`ledger::DETERMINISTIC_FILES`]).

pub mod critic;
pub mod digest;
pub mod evolver;
pub mod forge;
pub mod gate;
pub mod judge;
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
use self::digest::{aggregate, digest_task, Digest};
use self::evolver::{Candidate, Workbench};
use self::forge::Forge;
use self::gate::{Bench, GateReport};
use self::judge::{
    writer_follow_up, AttributionSignature, ChangeManifest, CriticFlag, Judge, JudgeInput, JudgeReview, JudgeVerdict,
    ThemeEvidence,
};
use self::ledger::{
    CandidateRecord, Cost, JudgeRecord, JudgeTally, Ledger, Outcome, Point, Proposal, RevisionOutcome, RevisionRecord,
    RoundRow, Ship,
};
use self::plan::{History, Landscape, LeverStats};
use self::rollout::{Counters, Lab, TaskResult};
use crate::env::Split;
use crate::harness::{Harness, ProcessorEntry, ToolPolicy, Workshop};
use crate::models::Model;
use crate::sandbox::Runtime;
use crate::store::{ObjectId, Store};
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
    /// `static` (no processors), `stock` (the seven stock processors), a
    /// harness manifest file, or a stored harness: its name (the ref
    /// `harness/<name>`, e.g. `evolve/<run>/incumbent`), id or id prefix.
    pub start: String,
    /// The task agent's model spec.
    pub model: String,
    /// The model that writes processors, if any.
    pub meta: Option<String>,
    /// The model that reviews candidates between the Critic and the Gate,
    /// if any. Absent from the `run.json` of runs without one (and of runs
    /// made before it existed, which read back as `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
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
            judge: None,
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
    #[error("`{name}` cannot name an evolution run: {reason}")]
    Name { name: String, reason: String },
    #[error("unknown environment `{0}` (built in: shop, house)")]
    UnknownEnv(String),
    #[error("environment `{0}` has no held-out tasks: the Gate could not check that the held-out score does not drop")]
    NoHeldOut(String),
    #[error("task index {index} is out of range: the {split} split of `{env}` has {len} tasks")]
    TaskIndex { env: String, split: String, index: usize, len: usize },
    #[error("cannot start from `{start}`: {reason}")]
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
    /// The starting and the final harness (canonical ids, hex).
    pub start: String,
    pub harness: String,
    /// The name under which the store keeps the final harness (for `kiln harness`).
    pub harness_name: String,
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

/// The harness name (ref `harness/<name>`) that follows the incumbent of
/// the run `run`: `kiln harness show evolve/<run>/incumbent`.
pub fn incumbent_name(run: &str) -> String {
    format!("evolve/{run}/incumbent")
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
    check_name(&cfg.name)?;
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
    check_name(name)?;
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

/// A run's name becomes a directory, the ledger ref `evolve/<name>` and the
/// harness name `evolve/<name>/incumbent`, so it must be one valid ref segment.
fn check_name(name: &str) -> Result<(), EvolveError> {
    let bad = |reason: String| EvolveError::Name { name: name.into(), reason };
    if name.contains('/') {
        return Err(bad("it contains `/`; use letters, digits, `.`, `_` and `-`".into()));
    }
    Store::check_ref_name(&format!("harness/{}", incumbent_name(name))).map_err(|e| bad(e.to_string()))
}

fn model(spec: &str) -> Result<Arc<dyn Model>, EvolveError> {
    crate::models::spec::parse(spec)
        .map(Arc::from)
        .map_err(|e| EvolveError::Model { spec: spec.into(), reason: e.to_string() })
}

/// An error with its causes, `outer: inner: ...`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The starting harness: `static` (the default prompt, no processors),
/// `stock` (the default prompt and the stock processors with their default
/// configs), a manifest file (resolved by the [`Workshop`]), or a stored
/// harness found by [`crate::harness::find`]. It must load in the sandbox.
fn start_harness(store: &Store, rt: &Runtime, forge: &Forge, start: &str) -> Result<Harness, EvolveError> {
    let bad = |reason: String| EvolveError::Start { start: start.into(), reason };
    let shop = Workshop::new(rt, store, forge.target_dir.clone());
    let default_prompt = |entries: Vec<ProcessorEntry>| {
        Harness::assemble(shop.probe.clone(), DEFAULT_SYSTEM.into(), ToolPolicy::default(), entries)
            .map_err(|e| bad(error_chain(&e)))
    };
    let harness = match start {
        "static" => default_prompt(vec![])?,
        "stock" => {
            let mut entries = Vec::new();
            for name in STOCK {
                let built = forge.stock(rt, name).map_err(|e| bad(format!("stock processor {name}: {e}")))?;
                let component: ObjectId = built.component.parse().expect("a stored component's id parses");
                entries.push(ProcessorEntry::new(component));
            }
            default_prompt(entries)?
        }
        path if path.ends_with(".toml") || Path::new(path).is_file() => {
            shop.open(Path::new(path)).map_err(|e| bad(e.to_string()))?.harness
        }
        name => {
            let id = crate::harness::find(store, name).map_err(|e| bad(error_chain(&e)))?;
            shop.load(&id).map_err(|e| bad(error_chain(&e)))?
        }
    };
    harness.processor_specs(rt, store).map_err(|e| bad(error_chain(&e)))?;
    Ok(harness)
}

fn count_verdicts(records: &[CandidateRecord]) -> BTreeMap<String, usize> {
    let mut t: BTreeMap<String, usize> = [
        "proposed",
        "compiled",
        "smoke-failed",
        "critic-blocked",
        "judge-rejected",
        "judge-revised",
        "gate-rejected",
        "shipped",
    ]
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
            "judge-rejected" => Some("judge-rejected"),
            v if v.starts_with("gate:") => Some("gate-rejected"),
            _ => None,
        };
        if let Some(k) = key {
            *t.get_mut(k).unwrap() += 1;
        }
        if c.judge.as_ref().and_then(|j| j.revision.as_ref()).is_some_and(|r| r.outcome == RevisionOutcome::Replaced) {
            *t.get_mut("judge-revised").unwrap() += 1;
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
                        *report.processor == *a.name
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

/// The Critic's blocking flags in one line.
fn blocking_flags(review: &Review) -> String {
    review.flags.iter().filter(|f| f.blocks).map(|f| format!("{}: {}", f.rule, f.detail)).collect::<Vec<_>>().join("; ")
}

/// What one candidate's story comes to: its verdict (`shipped`, or the
/// stage that ended it) and the reason in one line.
fn verdict(
    c: &Candidate,
    review: &Review,
    judged: Option<&JudgeRecord>,
    gate: Option<&GateReport>,
) -> (String, String) {
    if let Some((stage, reason)) = &c.failed {
        return (stage.clone(), reason.clone());
    }
    if review.blocked {
        return ("critic".into(), blocking_flags(review));
    }
    if let Some(reason) = judged.and_then(JudgeRecord::rejection) {
        return ("judge-rejected".into(), reason);
    }
    match gate {
        Some(g) if g.passed => (
            "shipped".into(),
            format!("{} target flips, held-out {:?} -> {:?}", g.target_flips.len(), g.heldout_before, g.heldout_after),
        ),
        Some(g) => {
            let at = g.failed_at.clone().unwrap_or_default();
            let detail = g.checks.last().map(|c| c.detail.clone()).unwrap_or_default();
            (format!("gate:{at}"), detail)
        }
        None => ("not-gated".into(), "an earlier-ranked candidate shipped".into()),
    }
}

/// What a candidate gained, when the Gate measured it: train flips and the
/// held-out change.
fn gain(gate: Option<&GateReport>) -> Option<(usize, i64)> {
    let g = gate.filter(|g| g.failed_at.as_deref() != Some("manifest"))?;
    let train_gain = g.flips.len();
    match (g.heldout_before, g.heldout_after) {
        (Some(a), Some(b)) => Some((train_gain, b as i64 - a as i64)),
        _ if !g.train.is_empty() => Some((train_gain, 0)),
        _ => None,
    }
}

/// The digest's failure themes as the judge reads them, each excerpt
/// pointing back into its trace (`trace <id> event <n>: ...`).
fn theme_evidence(digest: &Digest) -> Vec<ThemeEvidence> {
    digest
        .themes
        .iter()
        .map(|t| ThemeEvidence {
            theme: t.category.name().to_string(),
            count: t.count,
            excerpts: t
                .examples
                .iter()
                .map(|p| format!("trace {} event {}: {}", p.trace, p.event, p.excerpt))
                .collect(),
        })
        .collect()
}

/// What the ledgers keep of a candidate set aside by a revision.
fn proposal(c: &Candidate, critic: Option<Review>) -> Proposal {
    Proposal {
        manifest: c.manifest.clone(),
        build: c.build.clone(),
        smoke: c.smoke.clone(),
        failed: c.failed.clone(),
        critic,
    }
}

/// The round's judge work in numbers.
fn judge_tally(judged: &[Option<JudgeRecord>]) -> JudgeTally {
    let mut t = JudgeTally::default();
    for j in judged.iter().flatten() {
        t.reviewed += 1;
        t.calls += 1;
        match j.review.as_ref().map(|r| r.verdict) {
            Some(JudgeVerdict::Approve) => t.approved += 1,
            Some(JudgeVerdict::Revise) => t.revise += 1,
            Some(JudgeVerdict::Reject) => t.rejected += 1,
            None => t.no_review += 1,
        }
        if let Some(r) = &j.revision {
            if r.review.is_some() || r.error.is_some() {
                t.calls += 1;
            }
            if r.outcome == RevisionOutcome::Replaced {
                t.replaced += 1;
            }
        }
        if j.rejection().is_some() {
            t.judge_rejected += 1;
        }
        t.input_tokens += j.usage.input_tokens;
        t.output_tokens += j.usage.output_tokens;
    }
    t
}

/// The journal's lines on what the judge made of one candidate.
fn judge_journal(j: &JudgeRecord) -> String {
    let mut s = String::new();
    match (&j.review, &j.error) {
        (Some(r), _) => s.push_str(&format!("  - judge: {} — {}\n", r.verdict.as_str(), r.review)),
        (None, Some(e)) => s.push_str(&format!("  - judge: {e}\n")),
        (None, None) => {}
    }
    if let Some(r) = &j.revision {
        let outcome =
            serde_json::to_value(r.outcome).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        s.push_str(&format!("  - revision {:?}: {outcome} — {}\n", r.request, r.detail));
        match (&r.review, &r.error) {
            (Some(again), _) => {
                s.push_str(&format!("  - judge on the revision: {} — {}\n", again.verdict.as_str(), again.review))
            }
            (None, Some(e)) => s.push_str(&format!("  - judge on the revision: {e}\n")),
            (None, None) => {}
        }
    }
    s
}

/// What a revision needs from its round.
struct Revising<'r, 'w> {
    judge: &'r Judge,
    bench: &'r mut Workbench<'w>,
    st: &'r State,
    round: u32,
    digest: &'r Digest,
    base: &'r Baseline,
    themes: &'r [ThemeEvidence],
    record: &'r mut JudgeRecord,
}

/// What stays fixed for the whole run.
struct Run<'a> {
    cfg: EvolveConfig,
    store: &'a Store,
    reporter: &'a dyn Reporter,
    stop: &'a AtomicBool,
    began: Instant,
    dir: PathBuf,
    resumes: u64,
    lab: Lab,
    forge: Forge,
    meta: Option<Arc<dyn Model>>,
    /// The `judge`, with its reply cache in the store.
    judge: Option<Judge>,
    counters: Arc<Counters>,
    /// (task, seed) of the train batch and of the held-out tasks.
    train_jobs: Vec<(String, u64)>,
    test_jobs: Vec<(String, u64)>,
    /// Every task id of the suite, train and held-out (the Critic's hard-coding check).
    every_id: Vec<String>,
    /// The starting harness's id (hex).
    start_id: String,
}

/// What the rounds change.
struct State {
    incumbent: Harness,
    led: Ledger,
    /// Harness ids already proposed (hex), with the candidate that had them.
    seen: BTreeMap<String, String>,
    /// Rounds each train task failed in.
    failures: BTreeMap<String, BTreeSet<u32>>,
    /// Meta-model tokens still allowed.
    meta_left: u64,
    /// Idle rounds in a row.
    idle: u32,
    /// (round, seconds since the run began) at each round's end.
    timing: Vec<(u32, f64)>,
}

/// The counters as a round began, to charge the round with what it spent.
struct RoundStart {
    round: u32,
    rollouts: u64,
    meta_left: u64,
}

/// The incumbent's results this round: the baseline every stage compares to.
struct Baseline {
    train: Vec<TaskResult>,
    test: Vec<TaskResult>,
}

/// The round's candidates after the Critic: what the judge reads and the
/// Gate tries.
struct Reviewed {
    candidates: Vec<Candidate>,
    /// One review per candidate.
    reviews: Vec<Review>,
    /// Indices of the candidates let through, best first.
    ranked: Vec<usize>,
    /// Per candidate, what the judge made of it (`None`: not judged).
    judged: Vec<Option<JudgeRecord>>,
}

/// What the Gate made of the ranked candidates.
struct Gated {
    /// Per candidate: its report and the rollouts it cost, when it was gated.
    reports: Vec<Option<(GateReport, u64)>>,
    /// The candidate that passed, if any.
    shipped: Option<usize>,
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
    let (run, mut st) = Run::open(store, rt, cfg, paths, reporter, stop, resumes)?;
    let mut status = "rounds".to_string();
    for round in 1..=run.cfg.rounds {
        if let Some(end) = run.round(&mut st, round).await? {
            status = end;
            break;
        }
    }
    run.finish(st, status).await
}

impl<'a> Run<'a> {
    /// Check the configuration, resolve the environment, the models and the
    /// starting harness, and write `run.json` and the journal's header.
    /// Nothing is written for a run that cannot start.
    #[allow(clippy::too_many_arguments)]
    fn open(
        store: &'a Store,
        rt: &Runtime,
        cfg: EvolveConfig,
        paths: &Paths,
        reporter: &'a dyn Reporter,
        stop: &'a AtomicBool,
        resumes: u64,
    ) -> Result<(Run<'a>, State), EvolveError> {
        let began = Instant::now();
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
        let judge = cfg.judge.as_deref().map(model).transpose()?.map(|m| Judge::new(m).with_cache(store.clone()));
        let forge = Forge {
            store: store.clone(),
            target_dir: paths.target_dir.clone(),
            guest_sdk: paths.guest_sdk.clone(),
            processors: paths.processors.clone(),
        };
        let incumbent = start_harness(store, rt, &forge, &cfg.start)?;
        let start_id = incumbent.id().to_hex();
        let counters = Arc::new(Counters::default());
        let lab = Lab {
            rt: rt.clone(),
            store: store.clone(),
            suite: suite.clone(),
            env_name: cfg.env.clone(),
            model: main,
            max_steps: cfg.max_steps,
            jobs: 2,
            counters: counters.clone(),
        };
        let jobs = |ids: &[String]| -> Vec<(String, u64)> {
            ids.iter().flat_map(|t| cfg.seeds.iter().map(move |s| (t.clone(), *s))).collect()
        };
        let (train_jobs, test_jobs) = (jobs(&train_ids), jobs(&test_ids));
        let every_id: Vec<String> = all_train.iter().chain(&all_test).cloned().collect();
        let dir = run_dir(store, &cfg.name);
        let run = Run {
            store,
            reporter,
            stop,
            began,
            dir,
            resumes,
            lab,
            forge,
            meta,
            judge,
            counters,
            train_jobs,
            test_jobs,
            every_id,
            start_id,
            cfg,
        };

        let cfg = &run.cfg;
        std::fs::create_dir_all(&run.dir)
            .map_err(|e| EvolveError::Ledger(format!("cannot create {}: {e}", run.dir.display())))?;
        let run_json = run.dir.join("run.json");
        std::fs::write(&run_json, run.run_json("running"))
            .map_err(|e| EvolveError::Ledger(format!("cannot write {}: {e}", run_json.display())))?;
        incumbent
            .save(store, Some(&incumbent_name(&cfg.name)))
            .map_err(|e| EvolveError::Ledger(format!("cannot store the starting harness: {}", error_chain(&e))))?;
        let mut journal = format!(
            "# Evolution `{}`\n\nenv {} · start {} ({}) · model {} · meta {} · train {} tasks × seeds {:?} · held-out {} tasks · T={} P={} K={} k={} alpha={}",
            cfg.name,
            cfg.env,
            cfg.start,
            &run.start_id[..12],
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
        if let Some(judge) = &cfg.judge {
            journal.push_str(&format!(" · judge {judge}"));
        }
        journal.push('\n');
        let led = Ledger { journal, judge_model: cfg.judge.clone(), ..Ledger::default() };
        let state = State {
            seen: BTreeMap::from([(run.start_id.clone(), "the starting harness".to_string())]),
            incumbent,
            led,
            failures: BTreeMap::new(),
            meta_left: cfg.meta_tokens,
            idle: 0,
            timing: Vec::new(),
        };
        Ok((run, state))
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn rollouts(&self) -> u64 {
        self.counters.rollouts.load(Ordering::Relaxed)
    }

    fn stage(&self, round: u32, stage: &str, detail: String) {
        self.reporter.report(&Progress::Stage { round, stage: stage.into(), detail });
    }

    /// Solved held-out tasks, or `None` when the run has no held-out split.
    fn heldout(&self, rows: &[TaskResult]) -> Option<usize> {
        (!self.test_jobs.is_empty()).then(|| rows.iter().filter(|r| r.success).count())
    }

    fn run_json(&self, status: &str) -> Vec<u8> {
        let v = serde_json::json!({ "format": "kiln-evolve-run/1", "config": self.cfg, "status": status, "resumes": self.resumes, "start": self.start_id });
        let mut b = serde_json::to_vec_pretty(&v).expect("config serializes");
        b.push(b'\n');
        b
    }

    /// Write every ledger, `run.json` with `status`, and `timing.json`.
    fn write(&self, st: &State, status: &str) -> Result<(), EvolveError> {
        let timing = serde_json::json!({ "wall_secs": self.began.elapsed().as_secs_f64(), "round_end_secs": st.timing, "computed_rollouts": self.counters.computed.load(Ordering::Relaxed) });
        let timing = serde_json::to_vec_pretty(&timing).expect("timing serializes");
        st.led
            .write(
                &self.dir,
                self.store,
                &self.cfg.name,
                &[("run.json", self.run_json(status)), ("timing.json", timing)],
            )
            .map_err(EvolveError::Ledger)
    }

    /// One round, stage by stage. `Some(status)` ends the run.
    async fn round(&self, st: &mut State, round: u32) -> Result<Option<String>, EvolveError> {
        if let Some(status) = self.out_of_budget() {
            return Ok(Some(status));
        }
        let start = RoundStart { round, rollouts: self.rollouts(), meta_left: st.meta_left };
        let base = self.run_incumbent(st, round).await?;
        let (digest, mut row) = self.digest(st, round, &base)?;
        if digest.actionability < self.cfg.alpha {
            let why = format!("nothing actionable (a = {:.3} < alpha = {})", digest.actionability, self.cfg.alpha);
            return self.end_round(st, &start, row, Some(why));
        }
        let landscape = self.plan(st, round, &digest);
        let candidates = self.propose(st, round, &digest, &base, &landscape).await;
        if self.stopped() {
            return Ok(Some("interrupted".into()));
        }
        row.proposed = candidates.len();
        if candidates.is_empty() {
            let why = if landscape.directions.is_empty() {
                "the landscape has no direction to try"
            } else {
                "the Evolver made no candidate"
            };
            return self.end_round(st, &start, row, Some(why.into()));
        }
        let reviewed = self.criticize(st, round, &digest, &base, candidates);
        let (reviewed, gated) = self.judge_and_gate(st, round, &digest, &base, reviewed).await;
        if self.stopped() && gated.shipped.is_none() {
            return Ok(Some("interrupted".into()));
        }
        if self.judge.is_some() {
            row.judge = Some(judge_tally(&reviewed.judged));
        }
        self.record(st, round, &reviewed, &gated);
        match gated.shipped {
            Some(i) => {
                let (report, _) = gated.reports[i].as_ref().expect("a shipped candidate was gated");
                row.shipped = Some(self.ship(st, round, &base, &reviewed.candidates[i], report)?);
                self.end_round(st, &start, row, None)
            }
            None => self.end_round(st, &start, row, Some("no candidate passed the gate".into())),
        }
    }

    /// Why the run must stop before another round, if it must.
    fn out_of_budget(&self) -> Option<String> {
        if self.stopped() {
            Some("interrupted".into())
        } else if self.cfg.wall_secs > 0 && self.began.elapsed().as_secs() >= self.cfg.wall_secs {
            Some("budget: wall time".into())
        } else if self.cfg.max_rollouts > 0 && self.rollouts() >= self.cfg.max_rollouts {
            Some("budget: rollouts".into())
        } else {
            None
        }
    }

    /// Stage 0: run the incumbent on the train batch and the held-out tasks;
    /// record the curve point.
    async fn run_incumbent(&self, st: &mut State, round: u32) -> Result<Baseline, EvolveError> {
        let train = self.lab.run(&st.incumbent, &self.train_jobs).await.map_err(EvolveError::Rollout)?;
        let test = self.lab.run(&st.incumbent, &self.test_jobs).await.map_err(EvolveError::Rollout)?;
        let train_solved = train.iter().filter(|r| r.success).count();
        let id = st.incumbent.id().to_hex();
        st.led.curves.push(Point {
            round,
            harness: id.clone(),
            train_solved,
            train_total: train.len(),
            heldout_solved: self.heldout(&test),
            heldout_total: test.len(),
        });
        self.reporter.report(&Progress::Round {
            round,
            train_solved,
            train_total: train.len(),
            heldout_solved: self.heldout(&test),
        });
        st.led.journal.push_str(&format!(
            "\n## Round {round}\n\nincumbent {} solves {train_solved}/{} train, {} held-out\n",
            &id[..12],
            train.len(),
            self.heldout(&test).map(|h| format!("{h}/{}", test.len())).unwrap_or_else(|| "no".into())
        ));
        Ok(Baseline { train, test })
    }

    /// Stage 1: digest every train trace, update the task history, and open
    /// the round's row.
    fn digest(&self, st: &mut State, round: u32, base: &Baseline) -> Result<(Digest, RoundRow), EvolveError> {
        self.stage(round, "digest", format!("{} traces", base.train.len()));
        let digests = base
            .train
            .iter()
            .map(|r| self.lab.events(&r.trace).map(|e| digest_task(r, &e)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EvolveError::Rollout)?;
        let digest = aggregate(digests);
        for t in &digest.tasks {
            st.led.history.entry(t.task.clone()).or_default().push(Outcome {
                round,
                seed: t.seed,
                success: t.success,
                reason: t.reason.name().into(),
                category: t.category,
                trace: t.trace.clone(),
            });
            if !t.success {
                st.failures.entry(t.task.clone()).or_default().insert(round);
            }
        }
        st.led.round_files.push((
            round,
            "digest.json".into(),
            serde_json::to_vec_pretty(&digest).expect("digest serializes"),
        ));
        let row = RoundRow {
            round,
            actionability: digest.actionability,
            themes: digest.themes.iter().map(|t| (t.category.name().to_string(), t.count)).collect(),
            proposed: 0,
            shipped: None,
            idle: None,
            rollouts: 0,
            meta_tokens: 0,
            judge: None,
        };
        st.led.journal.push_str(&format!(
            "digest: actionability {:.3}; themes {}\n",
            digest.actionability,
            row.themes.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ")
        ));
        Ok((digest, row))
    }

    /// Stage 2: the Planner's landscape and directions.
    fn plan(&self, st: &mut State, round: u32, digest: &Digest) -> Landscape {
        self.stage(round, "plan", format!("{} themes", digest.themes.len()));
        let regressions = st.led.caught.clone();
        let history = History {
            levers: &st.led.levers,
            failures: &st.failures,
            regressions: &regressions,
            concerns: &st.led.concerns,
        };
        let landscape = plan::plan(digest, &st.incumbent, &history, self.meta.is_some());
        st.led.round_files.push((round, "landscape.md".into(), landscape.markdown(round).into_bytes()));
        landscape
    }

    /// The Evolver's bench for this round: what it may read and spend.
    fn workbench<'w>(&'w self, st: &'w State, round: u32, digest: &'w Digest, base: &'w Baseline) -> Workbench<'w> {
        Workbench {
            lab: &self.lab,
            forge: &self.forge,
            meta: self.meta.as_deref(),
            repairs: self.cfg.repairs,
            meta_tokens_left: st.meta_left,
            digest,
            results: &base.train,
            incumbent: &st.incumbent,
            round,
            tried: &st.seen,
            skipped: vec![],
        }
    }

    /// Stage 3: the Evolver makes up to K candidates, following the
    /// directions in order.
    async fn propose(
        &self,
        st: &mut State,
        round: u32,
        digest: &Digest,
        base: &Baseline,
        landscape: &Landscape,
    ) -> Vec<Candidate> {
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut bench = self.workbench(st, round, digest, base);
        for d in &landscape.directions {
            if candidates.len() as u32 >= self.cfg.candidates || self.stopped() {
                break;
            }
            self.stage(round, "evolve", format!("{} via {}", d.theme.name(), d.lever));
            if let Some(c) = bench.propose(d, candidates.len()).await {
                candidates.push(c);
            }
        }
        let (meta_left, skipped) = (bench.meta_tokens_left, bench.skipped);
        st.meta_left = meta_left;
        if !skipped.is_empty() {
            st.led.journal.push_str(&format!("skipped, already tried: {}\n", skipped.join(", ")));
        }
        candidates
    }

    /// Stage 4: the Critic reviews every candidate and ranks the ones it
    /// lets through.
    fn criticize(
        &self,
        st: &mut State,
        round: u32,
        digest: &Digest,
        base: &Baseline,
        candidates: Vec<Candidate>,
    ) -> Reviewed {
        self.stage(round, "critic", format!("{} candidates", candidates.len()));
        let incumbent = st.incumbent.id().to_hex();
        let cx = self.critic_context(st, round, digest, base, &st.seen, &incumbent);
        let (reviews, concerns) = critic::review(&cx, &candidates);
        for c in concerns {
            if !st.led.concerns.contains(&c) {
                st.led.concerns.push(c);
            }
        }
        let mut ranked: Vec<usize> = (0..candidates.len()).filter(|&i| reviews[i].rank.is_some()).collect();
        ranked.sort_by_key(|&i| reviews[i].rank);
        let judged = vec![None; candidates.len()];
        Reviewed { candidates, reviews, ranked, judged }
    }

    /// What the Critic reads besides the candidates; `seen` names the
    /// harnesses a candidate may not repeat.
    fn critic_context<'b>(
        &'b self,
        st: &'b State,
        round: u32,
        digest: &'b Digest,
        base: &'b Baseline,
        seen: &'b BTreeMap<String, String>,
        incumbent: &'b str,
    ) -> critic::Context<'b> {
        critic::Context {
            lab: &self.lab,
            digest,
            results: &base.train,
            task_ids: &self.every_id,
            seen,
            levers: &st.led.levers,
            round,
            incumbent,
            present: st.incumbent.processors().iter().map(|p| p.name().to_string()).collect(),
        }
    }

    /// Stages 4b and 5, **the judge, then the Gate**, candidate by candidate
    /// in the Critic's order (without a `judge` model, only the Gate).
    ///
    /// A candidate is reviewed just before the Gate would try it, so once
    /// one ships no judge tokens go to the candidates ranked after it
    /// (they stay `not-gated`, unreviewed). `reject` takes it out
    /// (`judge-rejected`, the review as the reason); `approve` sends it to
    /// the Gate; a judge that gives no review (`no review: ...`) sends it on
    /// unchanged; `revise` gets one revision ([`Run::revise`]), which goes
    /// to the Gate in its original's place. Meta-model tokens a revision
    /// spends come off `st.meta_left`, so the round's cost row counts them.
    async fn judge_and_gate(
        &self,
        st: &mut State,
        round: u32,
        digest: &Digest,
        base: &Baseline,
        reviewed: Reviewed,
    ) -> (Reviewed, Gated) {
        let Some(judge) = &self.judge else {
            let gated = self.gate(st, round, base, &reviewed.candidates, &reviewed.ranked).await;
            return (reviewed, gated);
        };
        let Reviewed { mut candidates, mut reviews, ranked, mut judged } = reviewed;
        let mut gated = Gated { reports: vec![None; candidates.len()], shipped: None };
        let themes = theme_evidence(digest);
        let mut bench = self.workbench(st, round, digest, base);
        let mut kept = Vec::new();
        for &i in &ranked {
            if self.stopped() {
                break;
            }
            self.stage(round, "judge", candidates[i].manifest.candidate_id.clone());
            let mut record = JudgeRecord { model: judge.model_name(), ..Default::default() };
            let input = self.judge_input(&candidates[i], &reviews[i], &themes, None);
            match judge.review(&input).await {
                Err(e) => {
                    record.charge(e.usage());
                    record.error = Some(format!("no review: {e}"));
                    kept.push(i);
                }
                Ok(review) => {
                    record.charge(review.usage);
                    record.review = Some(review.clone());
                    let goes_on = match review.verdict {
                        JudgeVerdict::Approve => true,
                        JudgeVerdict::Reject => false,
                        JudgeVerdict::Revise => {
                            let mut revising = Revising {
                                judge,
                                bench: &mut bench,
                                st: &*st,
                                round,
                                digest,
                                base,
                                themes: &themes,
                                record: &mut record,
                            };
                            self.revise(&mut revising, &mut candidates, &mut reviews, i, &review).await
                        }
                    };
                    if goes_on {
                        kept.push(i);
                    }
                }
            }
            judged[i] = Some(record);
            if kept.last() == Some(&i) && !self.stopped() {
                let mut one = self.gate(st, round, base, &candidates, &[i]).await;
                gated.reports[i] = one.reports[i].take();
                if one.shipped.is_some() {
                    gated.shipped = Some(i);
                    break;
                }
            }
        }
        st.meta_left = bench.meta_tokens_left;
        (Reviewed { candidates, reviews, ranked: kept, judged }, gated)
    }

    /// The one revision the judge asked for in `review` of candidate `i`.
    ///
    /// A model-written candidate's writer gets the request as the next
    /// message of its conversation ([`writer_follow_up`]); any other
    /// candidate is narrowed by the offline planner if the request names
    /// something it can drop ([`Workbench::narrow`]), and otherwise the
    /// request is recorded as unanswered. A revision that fails to build or
    /// smoke, or that the Critic blocks, is recorded and the original goes
    /// on. One that passes is reviewed once more with the request it
    /// answers (the judge may not ask again) and takes the original's place
    /// and rank; the original is kept in the record as `set_aside`. Returns
    /// whether the candidate goes on to the Gate: only a rejected revision
    /// does not.
    async fn revise(
        &self,
        cx: &mut Revising<'_, '_>,
        candidates: &mut [Candidate],
        reviews: &mut [Review],
        i: usize,
        review: &JudgeReview,
    ) -> bool {
        let request = review.revision.clone().unwrap_or_default();
        let mut rev = RevisionRecord {
            request: request.clone(),
            outcome: RevisionOutcome::Unanswered,
            detail: String::new(),
            review: None,
            error: None,
            set_aside: None,
        };
        let made = match cx.bench.rewrite(&candidates[i], writer_follow_up(review)).await {
            Some(revised) => Ok((revised, "rewritten by the meta writer".to_string())),
            None => {
                let asked = std::iter::once(request.as_str())
                    .chain(review.concerns.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join("\n");
                cx.bench.narrow(&candidates[i], &asked)
            }
        };
        let (revised, what) = match made {
            Ok(made) => made,
            Err(why) => {
                rev.detail = why;
                cx.record.revision = Some(rev);
                return true;
            }
        };
        if let Some((stage, reason)) = &revised.failed {
            rev.outcome = RevisionOutcome::KeptOriginal;
            rev.detail = format!("the revision ended at {stage}: {reason}");
            rev.set_aside = Some(proposal(&revised, None));
            cx.record.revision = Some(rev);
            return true;
        }
        // The Critic again, with every other candidate of the round counted as seen.
        let mut seen = cx.st.seen.clone();
        for (j, c) in candidates.iter().enumerate() {
            if j != i && !c.manifest.harness.is_empty() {
                seen.entry(c.manifest.harness.clone()).or_insert_with(|| c.manifest.candidate_id.clone());
            }
        }
        let incumbent = cx.st.incumbent.id().to_hex();
        let critic_cx = self.critic_context(cx.st, cx.round, cx.digest, cx.base, &seen, &incumbent);
        let (mut critic_reviews, _) = critic::review(&critic_cx, std::slice::from_ref(&revised));
        let mut critic_review = critic_reviews.pop().expect("one review per candidate");
        if critic_review.blocked {
            rev.outcome = RevisionOutcome::KeptOriginal;
            rev.detail = format!("the Critic blocked the revision: {}", blocking_flags(&critic_review));
            rev.set_aside = Some(proposal(&revised, Some(critic_review)));
            cx.record.revision = Some(rev);
            return true;
        }
        critic_review.rank = reviews[i].rank;
        self.stage(cx.round, "judge", format!("{} (revised)", revised.manifest.candidate_id));
        let input = self.judge_input(&revised, &critic_review, cx.themes, Some(request));
        let rejected = match cx.judge.review(&input).await {
            Ok(again) => {
                cx.record.charge(again.usage);
                let rejected = again.verdict == JudgeVerdict::Reject;
                rev.review = Some(again);
                rejected
            }
            Err(e) => {
                cx.record.charge(e.usage());
                rev.error = Some(format!("no review: {e}"));
                false
            }
        };
        rev.outcome = if rejected { RevisionOutcome::Rejected } else { RevisionOutcome::Replaced };
        rev.detail = what;
        rev.set_aside = Some(proposal(&candidates[i], Some(reviews[i].clone())));
        candidates[i] = revised;
        reviews[i] = critic_review;
        cx.record.revision = Some(rev);
        !rejected
    }

    /// What the judge reads about candidate `c`: its manifest, its edit,
    /// its source (a stock processor's from `processors/`) and config or
    /// prompt text, the Critic's flags and the digest's themes.
    fn judge_input(
        &self,
        c: &Candidate,
        review: &Review,
        themes: &[ThemeEvidence],
        answers_revision: Option<String>,
    ) -> JudgeInput {
        use crate::harness::Edit;
        let m = &c.manifest;
        let source = c.source_text.clone().or_else(|| {
            let name = c.build.source.as_deref()?.strip_prefix("stock:")?;
            std::fs::read_to_string(self.forge.processors.join(name).join("src/lib.rs")).ok()
        });
        let config = c.config_text.clone().or_else(|| match &m.edit {
            Some(Edit::AppendSystemLine { line }) => Some(line.clone()),
            Some(Edit::SetSystem { text }) => Some(text.clone()),
            _ => None,
        });
        let a = &m.attribution_signature;
        JudgeInput {
            candidate_id: m.candidate_id.clone(),
            bucket: m.bucket.name().to_string(),
            dimension: m.dimension.clone(),
            edit_summary: format!(
                "{}\n(lever `{}`, answering the `{}` failure theme)",
                m.describe_edit(),
                m.lever,
                m.theme.name()
            ),
            manifest: ChangeManifest {
                tasks_to_unlock: m.predicted_impact.tasks_will_unlock.clone(),
                tasks_to_stabilize: m.predicted_impact.tasks_will_stabilize.clone(),
                tasks_at_risk: m.predicted_impact.tasks_at_risk.clone(),
                attribution: AttributionSignature {
                    kind: a.kind.clone(),
                    name: a.name.clone(),
                    expected_min_calls: a.expected_min_calls,
                },
            },
            source,
            config,
            critic_flags: review
                .flags
                .iter()
                .map(|f| CriticFlag { rule: f.rule.clone(), blocks: f.blocks, detail: f.detail.clone() })
                .collect(),
            themes: themes.to_vec(),
            answers_revision,
        }
    }

    /// Stage 5: the Gate, in rank order; the first candidate to pass ships
    /// and the rest are not gated.
    async fn gate(&self, st: &State, round: u32, base: &Baseline, candidates: &[Candidate], ranked: &[usize]) -> Gated {
        let mut gated = Gated { reports: vec![None; candidates.len()], shipped: None };
        for &i in ranked {
            if self.stopped() {
                break;
            }
            self.stage(round, "gate", candidates[i].manifest.candidate_id.clone());
            let before = self.rollouts();
            let bench = Bench {
                lab: &self.lab,
                incumbent: &st.incumbent,
                train: &base.train,
                test: (!self.test_jobs.is_empty()).then_some(&base.test[..]),
                gate_seeds: self.cfg.gate_seeds,
            };
            let report = gate::gate(&bench, &candidates[i]).await;
            let passed = report.passed;
            gated.reports[i] = Some((report, self.rollouts() - before));
            if passed {
                gated.shipped = Some(i);
                break;
            }
        }
        gated
    }

    /// Record every candidate of the round in the ledgers: its verdict and
    /// reason, the regressions the Gate caught, its lever's record, its cost
    /// and gain.
    fn record(&self, st: &mut State, round: u32, reviewed: &Reviewed, gated: &Gated) {
        for (i, c) in reviewed.candidates.iter().enumerate() {
            let (gate, spent) = match &gated.reports[i] {
                Some((g, s)) => (Some(g.clone()), *s),
                None => (None, 0),
            };
            let review = reviewed.reviews[i].clone();
            let judged = reviewed.judged[i].clone();
            let (verdict, reason) = verdict(c, &review, judged.as_ref(), gate.as_ref());
            let m = &c.manifest;
            if let Some(g) = &gate {
                for r in &g.regressions {
                    st.led.caught.push(format!("R{round} {} ({}): {r}", m.candidate_id, m.lever));
                }
            }
            self.reporter.report(&Progress::Candidate {
                round,
                id: m.candidate_id.clone(),
                lever: m.lever.clone(),
                verdict: verdict.clone(),
                reason: reason.clone(),
            });
            st.led.journal.push_str(&format!(
                "- {} {} [{}/{}] {}: **{verdict}** — {reason}\n",
                m.candidate_id,
                m.lever,
                m.bucket.name(),
                m.dimension,
                m.describe_edit()
            ));
            let stats = st.led.levers.entry(m.lever.clone()).or_insert_with(|| LeverStats {
                bucket: Some(m.bucket),
                dimension: m.dimension.clone(),
                ..Default::default()
            });
            stats.proposed += 1;
            if verdict == "shipped" {
                let g = gate.as_ref().expect("shipped candidates were gated");
                stats.shipped += 1;
                stats.predicted += m.predicted_impact.tasks_will_unlock.len() as u32;
                stats.flipped += g.target_flips.len() as u32;
                stats.ship_rounds.push(round);
            } else if verdict != "not-gated" {
                stats.rejected += 1;
            }
            if !m.harness.is_empty() {
                st.seen.entry(m.harness.clone()).or_insert_with(|| m.candidate_id.clone());
            }
            let mut cost = Cost {
                rollouts: spent,
                compile_attempts: c.build.attempts,
                meta_tokens: c.build.meta_tokens,
                judge_tokens: 0,
            };
            if let Some(j) = &judged {
                st.led.journal.push_str(&judge_journal(j));
                cost.judge_tokens = j.usage.input_tokens + j.usage.output_tokens;
                if let Some(aside) = j.revision.as_ref().and_then(|r| r.set_aside.as_ref()) {
                    // A narrowed revision reuses its original's build: count a build once.
                    if aside.build != c.build {
                        cost.compile_attempts += aside.build.attempts;
                        cost.meta_tokens += aside.build.meta_tokens;
                    }
                    if !aside.manifest.harness.is_empty() {
                        st.seen.entry(aside.manifest.harness.clone()).or_insert_with(|| m.candidate_id.clone());
                    }
                }
            }
            st.led.candidates.push(CandidateRecord {
                round,
                manifest: m.clone(),
                build: c.build.clone(),
                smoke: c.smoke.clone(),
                gain: gain(gate.as_ref()),
                review,
                judge: judged,
                gate,
                verdict,
                reason,
                cost,
            });
        }
    }

    /// Ship candidate `c`: record the edit with predicted vs actual flips
    /// and any regression let through, store the new harness with its
    /// lineage (the reason being the candidate's ledger record), move the
    /// incumbent ref, and make it the incumbent. Returns the candidate id.
    fn ship(
        &self,
        st: &mut State,
        round: u32,
        base: &Baseline,
        c: &Candidate,
        g: &GateReport,
    ) -> Result<String, EvolveError> {
        let m = &c.manifest;
        let new = c.harness.clone().expect("a shipped candidate has a harness");
        // Regressions let through: solved by the old incumbent on a batch seed, lost now.
        for (a, b) in base.train.iter().zip(&g.train) {
            if a.success && !b.success {
                st.led.let_through.push(format!("R{round} {}: {}@{}", m.candidate_id, a.task, a.seed));
            }
        }
        let record = st
            .led
            .candidates
            .iter()
            .rev()
            .find(|r| r.round == round && r.manifest.candidate_id == m.candidate_id)
            .expect("the shipped candidate was recorded");
        let why = serde_json::json!({ "format": "kiln-evolve-ship/1", "run": self.cfg.name, "round": round, "candidate": record });
        let stored = |e: String| EvolveError::Ledger(format!("cannot store shipped harness {}: {e}", &m.harness[..12]));
        let reason =
            self.store.put(&serde_json::to_vec(&why).expect("record serializes")).map_err(|e| stored(e.to_string()))?;
        let new = new.with_reason(reason);
        new.save(self.store, Some(&incumbent_name(&self.cfg.name))).map_err(|e| stored(error_chain(&e)))?;
        let predicted = m.predicted_impact.tasks_will_unlock.clone();
        let hit = g.target_flips.len() as f64 / predicted.len().max(1) as f64;
        let new_id = new.id().to_hex();
        st.led.ships.push(Ship {
            round,
            candidate: m.candidate_id.clone(),
            lever: m.lever.clone(),
            bucket: m.bucket.name().into(),
            dimension: m.dimension.clone(),
            edit: m.describe_edit(),
            parent: st.incumbent.id().to_hex(),
            harness: new_id.clone(),
            record: reason.to_hex(),
            predicted,
            flipped: g.flips.clone(),
            hit_rate: (hit * 1e4).round() / 1e4,
            attributed: attributed(&self.lab, c, &g.train, &g.target_flips),
            heldout_before: g.heldout_before,
            heldout_after: g.heldout_after,
        });
        self.reporter.report(&Progress::Shipped {
            round,
            id: m.candidate_id.clone(),
            harness: new_id.clone(),
            flips: g.flips.len(),
        });
        st.led.journal.push_str(&format!("shipped {} -> harness {}\n", m.candidate_id, &new_id[..12]));
        st.incumbent = new;
        Ok(m.candidate_id.clone())
    }

    /// Close a round, idle (`idle` says why) or not: report and journal why
    /// it was idle, charge the row with the rollouts and meta tokens the
    /// round spent, count idle rounds in a row, note the time, and write
    /// the ledgers. `Some("patience")` when the idle rounds in a row reach
    /// `patience`.
    fn end_round(
        &self,
        st: &mut State,
        start: &RoundStart,
        mut row: RoundRow,
        idle: Option<String>,
    ) -> Result<Option<String>, EvolveError> {
        match &idle {
            Some(why) => {
                self.reporter.report(&Progress::Idle { round: start.round, reason: why.clone() });
                st.led.journal.push_str(&format!("idle: {why}\n"));
                st.idle += 1;
            }
            None => st.idle = 0,
        }
        row.idle = idle;
        if self.judge.is_some() && row.judge.is_none() {
            row.judge = Some(JudgeTally::default());
        }
        row.rollouts = self.rollouts() - start.rollouts;
        row.meta_tokens = start.meta_left - st.meta_left;
        st.led.rounds.push(row);
        st.timing.push((start.round, self.began.elapsed().as_secs_f64()));
        self.write(st, "running")?;
        Ok((st.idle >= self.cfg.patience).then(|| "patience".to_string()))
    }

    /// Measure the final harness on the same batches (unless interrupted),
    /// write the ledgers with the run's status, and report.
    async fn finish(self, mut st: State, status: String) -> Result<Report, EvolveError> {
        if status != "interrupted" {
            let train = self.lab.run(&st.incumbent, &self.train_jobs).await.map_err(EvolveError::Rollout)?;
            let test = self.lab.run(&st.incumbent, &self.test_jobs).await.map_err(EvolveError::Rollout)?;
            let id = st.incumbent.id().to_hex();
            st.led.final_point = Some(Point {
                round: st.led.rounds.len() as u32 + 1,
                harness: id.clone(),
                train_solved: train.iter().filter(|r| r.success).count(),
                train_total: train.len(),
                heldout_solved: self.heldout(&test),
                heldout_total: test.len(),
            });
            st.led.journal.push_str(&format!("\n## End ({status})\n\nfinal harness {}\n", &id[..12]));
        }
        self.write(&st, &status)?;
        self.reporter.report(&Progress::Finished { status: status.clone() });
        let led = &st.led;
        Ok(Report {
            name: self.cfg.name.clone(),
            status,
            dir: self.dir.clone(),
            start: self.start_id.clone(),
            harness: st.incumbent.id().to_hex(),
            harness_name: incumbent_name(&self.cfg.name),
            heldout_before: led.curves.first().and_then(|p| p.heldout_solved),
            heldout_after: led.final_point.as_ref().and_then(|p| p.heldout_solved),
            heldout_total: self.test_jobs.len(),
            train_curve: led
                .curves
                .iter()
                .map(|p| (p.round, p.train_solved))
                .chain(led.final_point.iter().map(|p| (p.round, p.train_solved)))
                .collect(),
            train_total: self.train_jobs.len(),
            let_through: led.let_through.len(),
            tally: count_verdicts(&led.candidates),
            rounds: led.rounds.clone(),
            ships: led.ships.clone(),
            wall_secs: self.began.elapsed().as_secs_f64(),
            computed_rollouts: self.counters.computed.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolve::critic::Flag;
    use crate::evolve::digest::Category;
    use crate::evolve::evolver::{Attribution, BuildRecord, Impact, Manifest};
    use crate::evolve::gate::Check;
    use crate::evolve::plan::Bucket;
    use crate::harness::Edit;

    #[test]
    fn config_round_trips_and_refuses_unknown_keys() {
        let c = EvolveConfig::new("n", "shop");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::from_value::<EvolveConfig>(v.clone()).unwrap(), c);
        let mut bad = v;
        bad["roundz"] = serde_json::json!(3);
        assert!(serde_json::from_value::<EvolveConfig>(bad).unwrap_err().to_string().contains("roundz"));
    }

    fn manifest(edit: Option<Edit>) -> Manifest {
        Manifest {
            candidate_id: "C-R1-01".into(),
            lever: "prompt-line".into(),
            bucket: Bucket::Prompt,
            dimension: "D2 context".into(),
            theme: Category::WrongAnswer,
            edit,
            capability_evidence: vec![],
            file_changes: vec!["harness.system".into()],
            predicted_impact: Impact::default(),
            attribution_signature: Attribution {
                kind: "prompt_feature".into(),
                name: "final-answer-guard".into(),
                expected_min_calls: 1,
            },
            parent: "p".into(),
            harness: "h".into(),
        }
    }

    fn candidate(edit: Option<Edit>, failed: Option<(&str, &str)>) -> Candidate {
        Candidate {
            manifest: manifest(edit),
            build: BuildRecord::default(),
            smoke: None,
            failed: failed.map(|(a, b)| (a.into(), b.into())),
            source_text: None,
            harness: None,
            loaded: None,
            config_text: None,
            before: vec![],
            conversation: vec![],
        }
    }

    #[test]
    fn edits_read_the_same_in_every_ledger() {
        let line = Edit::AppendSystemLine { line: "Read every tool error.".into() };
        assert_eq!(manifest(Some(line.clone())).describe_edit(), "prompt line \"Read every tool error.\"");
        let component = ObjectId::of(b"a component");
        let config = serde_json::json!({"reason": "keep going", "max_blocks": 2}).as_object().unwrap().clone();
        let insert = Edit::Insert {
            name: "final-answer-guard".into(),
            processor: ProcessorEntry::new(component).with_config(config.clone()),
        };
        assert_eq!(
            manifest(Some(insert.clone())).describe_edit(),
            r#"insert final-answer-guard {"max_blocks":2,"reason":"keep going"}"#,
            "the config is written out: the Critic reads it"
        );
        let tune = Edit::SetConfig { target: "loop-guard".into(), config };
        assert_eq!(
            manifest(Some(tune)).describe_edit(),
            r#"set-config loop-guard {"max_blocks":2,"reason":"keep going"}"#
        );
        assert_eq!(manifest(None).describe_edit(), "no edit: final-answer-guard was not built");
        // In candidates.jsonl the edit is the harness room's JSON, and reads back.
        for edit in [Some(insert), Some(line), None] {
            let m = manifest(edit);
            let json = serde_json::to_value(&m).unwrap();
            match &m.edit {
                Some(e) => assert_eq!(json["edit"], e.to_json()),
                None => assert!(json["edit"].is_null()),
            }
            assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), m);
        }
    }

    #[test]
    fn verdicts_follow_the_stage_that_ended_the_candidate() {
        let failed = candidate(None, Some(("evolver:build", "does not compile")));
        assert_eq!(
            verdict(&failed, &Review::default(), None, None),
            ("evolver:build".into(), "does not compile".into())
        );
        let ok = candidate(Some(Edit::Remove { target: "x".into() }), None);
        let blocked = Review {
            flags: vec![
                Flag { rule: "non-local".into(), blocks: false, detail: "a warning".into() },
                Flag { rule: "scoring".into(), blocks: true, detail: "mentions `reward`".into() },
            ],
            blocked: true,
            ..Default::default()
        };
        assert_eq!(verdict(&ok, &blocked, None, None), ("critic".into(), "scoring: mentions `reward`".into()));
        assert_eq!(verdict(&ok, &Review::default(), None, None).0, "not-gated");
        let rejected = GateReport {
            checks: vec![Check { name: "no-regression".into(), passed: false, detail: "regresses t@1".into() }],
            failed_at: Some("no-regression".into()),
            ..Default::default()
        };
        assert_eq!(
            verdict(&ok, &Review::default(), None, Some(&rejected)),
            ("gate:no-regression".into(), "regresses t@1".into())
        );
        assert_eq!(gain(Some(&rejected)), None, "nothing was measured");
        let passed = GateReport {
            passed: true,
            flips: vec!["a".into(), "b".into()],
            target_flips: vec!["a".into()],
            heldout_before: Some(3),
            heldout_after: Some(5),
            ..Default::default()
        };
        assert_eq!(
            verdict(&ok, &Review::default(), None, Some(&passed)),
            ("shipped".into(), "1 target flips, held-out Some(3) -> Some(5)".into())
        );
        assert_eq!(gain(Some(&passed)), Some((2, 2)));
    }

    #[test]
    fn verdicts_are_tallied_by_stage() {
        let t = count_verdicts(&[]);
        assert_eq!(t.values().sum::<usize>(), 0);
        let record = |verdict: &str, attempts: u32| CandidateRecord {
            round: 1,
            manifest: manifest(None),
            build: BuildRecord { attempts, component: Some("c".into()), ..Default::default() },
            smoke: None,
            review: Review::default(),
            judge: None,
            gate: None,
            verdict: verdict.into(),
            reason: String::new(),
            cost: Cost::default(),
            gain: None,
        };
        let t = count_verdicts(&[
            record("shipped", 1),
            record("evolver:smoke", 1),
            record("critic", 0),
            record("gate:held-out", 0),
            record("not-gated", 0),
        ]);
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            [
                ("compiled".to_string(), 2),
                ("critic-blocked".into(), 1),
                ("gate-rejected".into(), 1),
                ("judge-rejected".into(), 0),
                ("judge-revised".into(), 0),
                ("proposed".into(), 5),
                ("shipped".into(), 1),
                ("smoke-failed".into(), 1)
            ]
        );
        let mut rejected = record("judge-rejected", 1);
        rejected.judge = Some(judged(JudgeVerdict::Reject, None));
        let mut revised = record("shipped", 1);
        revised.judge =
            Some(judged(JudgeVerdict::Revise, Some((RevisionOutcome::Replaced, Some(JudgeVerdict::Approve)))));
        let t = count_verdicts(&[rejected, revised]);
        assert_eq!((t["judge-rejected"], t["judge-revised"], t["shipped"]), (1, 1, 1));
    }

    fn review_by(verdict: JudgeVerdict, text: &str) -> JudgeReview {
        JudgeReview {
            candidate_id: "C-R1-01".into(),
            verdict,
            review: text.into(),
            revision: (verdict == JudgeVerdict::Revise).then(|| "narrow it".to_string()),
            concerns: vec![],
            declined_revision: None,
            usage: crate::models::Usage { input_tokens: 100, output_tokens: 10 },
            model: "canned".into(),
        }
    }

    /// A judge record: the first review's verdict, and the revision's
    /// outcome with the verdict on the revision, if there was one.
    fn judged(first: JudgeVerdict, revision: Option<(RevisionOutcome, Option<JudgeVerdict>)>) -> JudgeRecord {
        JudgeRecord {
            model: "canned".into(),
            review: Some(review_by(first, "the first review")),
            error: None,
            revision: revision.map(|(outcome, again)| RevisionRecord {
                request: "narrow it".into(),
                outcome,
                detail: String::new(),
                review: again.map(|v| review_by(v, "the second review")),
                error: None,
                set_aside: None,
            }),
            usage: crate::models::Usage { input_tokens: 100, output_tokens: 10 },
        }
    }

    #[test]
    fn the_judge_rejects_after_the_critic_and_before_the_gate() {
        let ok = candidate(Some(Edit::Remove { target: "x".into() }), None);
        let none = Review::default();
        let reject = judged(JudgeVerdict::Reject, None);
        assert_eq!(verdict(&ok, &none, Some(&reject), None), ("judge-rejected".into(), "the first review".into()));
        let blocked = Review {
            flags: vec![Flag { rule: "scoring".into(), blocks: true, detail: "mentions `reward`".into() }],
            blocked: true,
            ..Default::default()
        };
        assert_eq!(verdict(&ok, &blocked, Some(&reject), None).0, "critic", "the Critic's block comes first");
        let revision_rejected =
            judged(JudgeVerdict::Revise, Some((RevisionOutcome::Rejected, Some(JudgeVerdict::Reject))));
        assert_eq!(
            verdict(&ok, &none, Some(&revision_rejected), None),
            ("judge-rejected".into(), "its revision: the second review".into())
        );
        for goes_on in [
            judged(JudgeVerdict::Approve, None),
            judged(JudgeVerdict::Revise, Some((RevisionOutcome::Replaced, Some(JudgeVerdict::Approve)))),
            judged(JudgeVerdict::Revise, Some((RevisionOutcome::KeptOriginal, None))),
            judged(JudgeVerdict::Revise, Some((RevisionOutcome::Unanswered, None))),
            JudgeRecord { error: Some("no review: garbage".into()), ..Default::default() },
        ] {
            assert_eq!(verdict(&ok, &none, Some(&goes_on), None).0, "not-gated", "{goes_on:?}");
            assert_eq!(goes_on.rejection(), None);
        }
    }

    #[test]
    fn the_judge_tally_counts_verdicts_revisions_and_tokens() {
        let records = vec![
            None,
            Some(judged(JudgeVerdict::Reject, None)),
            Some(judged(JudgeVerdict::Approve, None)),
            Some(judged(JudgeVerdict::Revise, Some((RevisionOutcome::Replaced, Some(JudgeVerdict::Approve))))),
            Some(judged(JudgeVerdict::Revise, Some((RevisionOutcome::Unanswered, None)))),
            Some(JudgeRecord { error: Some("no review: x".into()), ..Default::default() }),
        ];
        let t = judge_tally(&records);
        assert_eq!(
            (t.reviewed, t.approved, t.revise, t.rejected, t.no_review, t.replaced, t.judge_rejected, t.calls),
            (5, 1, 2, 1, 1, 1, 1, 6)
        );
        assert_eq!((t.input_tokens, t.output_tokens), (400, 40), "each record carries its calls' usage");
        let journal = judge_journal(records[3].as_ref().unwrap());
        assert!(
            journal.contains("judge: revise — the first review")
                && journal.contains("revision \"narrow it\": replaced")
                && journal.contains("judge on the revision: approve — the second review"),
            "{journal}"
        );
        assert_eq!(judge_journal(records[5].as_ref().unwrap()), "  - judge: no review: x\n");
    }

    #[test]
    fn theme_excerpts_point_into_their_traces() {
        use crate::evolve::digest::{Pointer, Theme};
        let digest = Digest {
            tasks: vec![],
            themes: vec![Theme {
                category: Category::GoalLost,
                count: 4,
                symptomatic: 5,
                tasks: vec![],
                examples: vec![Pointer { trace: "ab".repeat(32), event: 7, excerpt: "bought the wrong item".into() }],
            }],
            solved: 0,
            actionability: 0.5,
        };
        let themes = theme_evidence(&digest);
        assert_eq!((themes[0].theme.as_str(), themes[0].count), ("goal-lost", 4));
        assert_eq!(themes[0].excerpts, [format!("trace {} event 7: bought the wrong item", "ab".repeat(32))]);
    }

    #[test]
    fn a_judge_is_optional_in_run_json_old_and_new() {
        let c = EvolveConfig::new("n", "shop");
        let v = serde_json::to_value(&c).unwrap();
        assert!(v.get("judge").is_none(), "a run without a judge writes the run.json it always wrote");
        assert_eq!(serde_json::from_value::<EvolveConfig>(v).unwrap().judge, None, "an old run.json reads back");
        let mut with = c.clone();
        with.judge = Some("openai:judge@http://127.0.0.1:9/v1".into());
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(v["judge"], "openai:judge@http://127.0.0.1:9/v1");
        assert_eq!(serde_json::from_value::<EvolveConfig>(v).unwrap(), with, "resume reads the judge back");
    }

    #[test]
    fn run_names_must_make_one_ref_segment() {
        assert!(check_name("shop-1.b_2").is_ok());
        assert_eq!(incumbent_name("shop"), "evolve/shop/incumbent");
        for bad in ["a/b", "", "..", "sp ace"] {
            let e = check_name(bad).unwrap_err();
            assert!(matches!(e, EvolveError::Name { .. }), "{bad:?}: {e}");
            assert!(e.to_string().starts_with(&format!("`{bad}` cannot name an evolution run: ")), "{e}");
        }
    }
}
