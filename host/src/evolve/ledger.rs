//! The run's ledgers: readable files under `.kiln/evolve/<name>/`, mirrored
//! into the store.
//!
//! ```text
//! run.json            the run's configuration and status (not compared across runs)
//! journal.md          what happened, round by round, in prose
//! curves.json         train and held-out success per round, and the final harness's
//! task_history.json   per task: outcome, category and trace of every round
//! candidates.jsonl    every candidate: manifest, build, smoke, review, judge, gate, verdict, cost, gain
//! rejected.json       every candidate that did not ship, with the stage and reason
//! ships.json          shipped edits: predicted vs actual flips, hit rate, attribution, record
//! scoreboard.json     per lever, bucket and dimension: proposed, shipped, hit rate
//! regressions.md      regressions the gate caught, and those let through (must be none)
//! lineage.json        the shipped lineage: harness, parent, candidate, edit, record
//! cost.json           rollouts, builds, meta-model and judge tokens, per round and in all
//! timing.json         wall time (not deterministic, so not a ledger)
//! R<n>/digest.json    the round's digest (pointers into the traces)
//! R<n>/landscape.md   the Planner's landscape
//! ```
//!
//! Harness ids are the harness room's canonical ids (`kiln harness show
//! <id>` shows any of them). In `candidates.jsonl` a manifest's `edit` is the
//! harness room's edit as JSON (`{"op": "insert", "name", "processor":
//! {"component", "config", "limits", "grants", "on-fault"}}`, `"set-config"`
//! with `target` and `config`, `"append-system-line"` with `line`,
//! `"remove"` with `target`), or `null` when the lever's code never built;
//! elsewhere an edit is one line (`insert final-answer-guard {...config}`,
//! `prompt line "..."`). A ship's `record` is the store object that holds
//! its candidate record (`kiln-evolve-ship/1`: run, round, candidate); the
//! shipped harness's lineage record names it as its `reason`.
//!
//! **The judge.** In a run with a `judge` model, each record the Critic let
//! through carries a `judge` object ([`JudgeRecord`]): the written review,
//! or `error` (`no review: ...`) when none could be had, and the one
//! revision when it asked for one: the request, its `outcome`
//! (`replaced`, `kept-original`, `rejected`, `unanswered`), the judge's
//! review of the revision, and `set_aside`, the proposal that did not go on
//! to the Gate. A record's own manifest, build, smoke and review are those
//! of the candidate that went on: the revision when it replaced the
//! original. A candidate the judge rejects has the verdict
//! `judge-rejected` and the review as its reason. Each round row carries a
//! `judge` tally, each candidate's cost its `judge_tokens`, and `cost.json`
//! a `judge` line with the judge's calls and tokens. Runs without a judge
//! write none of these fields, so their ledgers are what they always were.
//!
//! Every file but `run.json` and `timing.json` is a pure function of the
//! configuration, so two runs with the same seed write identical bytes. The
//! store holds each file as an object and an index (`evolve/<name>` ref)
//! that also names every trace the ledgers point to, so `gc` keeps them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::critic::Review;
use super::digest::Category;
use super::evolver::{BuildRecord, Manifest};
use super::forge::SmokeReport;
use super::gate::GateReport;
use super::judge::{JudgeReview, JudgeVerdict};
use super::plan::{LeverStats, DIMENSIONS};
use crate::models::Usage;
use crate::store::Store;

/// Files whose bytes are deterministic (everything but run.json and timing.json).
pub const DETERMINISTIC_FILES: &[&str] = &[
    "journal.md",
    "curves.json",
    "task_history.json",
    "candidates.jsonl",
    "rejected.json",
    "ships.json",
    "scoreboard.json",
    "regressions.md",
    "lineage.json",
    "cost.json",
];

/// One task in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub round: u32,
    pub seed: u64,
    pub success: bool,
    pub reason: String,
    pub category: Category,
    pub trace: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Compute spent on a candidate (its revision included, when it had one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub rollouts: u64,
    pub compile_attempts: u32,
    pub meta_tokens: u64,
    /// Tokens the judge's calls used (absent without a judge).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub judge_tokens: u64,
}

/// What the judge made of one candidate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeRecord {
    /// The judge model, as it describes itself.
    pub model: String,
    /// The review of the candidate as first proposed; `None` when the
    /// judge gave none (see `error`).
    pub review: Option<JudgeReview>,
    /// `no review: <why>` when the judge's call failed or its reply could
    /// not be read; the candidate went on unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The one revision, when the review asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionRecord>,
    /// Tokens of every judge call about this candidate (unreadable replies
    /// included: they were paid for).
    pub usage: Usage,
}

impl JudgeRecord {
    /// The recorded reason when the judge's last word on the candidate was
    /// `reject`: the review itself.
    pub fn rejection(&self) -> Option<String> {
        match &self.revision {
            Some(r) if r.outcome == RevisionOutcome::Rejected => {
                r.review.as_ref().map(|review| format!("its revision: {}", review.review))
            }
            Some(_) => None,
            None => self.review.as_ref().filter(|r| r.verdict == JudgeVerdict::Reject).map(|r| r.review.clone()),
        }
    }

    /// Add the usage of one more judge call.
    pub fn charge(&mut self, usage: Usage) {
        self.usage.input_tokens += usage.input_tokens;
        self.usage.output_tokens += usage.output_tokens;
    }
}

/// How a revision the judge asked for ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionOutcome {
    /// It built, passed its smoke test and the Critic, and the judge did not
    /// reject it: it went on to the Gate in the original's place.
    Replaced,
    /// It failed to build or smoke, or the Critic blocked it: the original
    /// went on to the Gate.
    KeptOriginal,
    /// The judge rejected the revision: the candidate is `judge-rejected`.
    Rejected,
    /// No revision could be made (the offline planner cannot answer the
    /// request): the original went on to the Gate.
    Unanswered,
}

/// The judge's one revision of a candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// The change the judge asked for.
    pub request: String,
    pub outcome: RevisionOutcome,
    /// What was done, or why it failed, in one line.
    pub detail: String,
    /// The judge's review of the revision (a second `revise` counts as
    /// `approve`; the request is kept as its `declined_revision`).
    pub review: Option<JudgeReview>,
    /// `no review: <why>` when the review of the revision failed (the
    /// revision went on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The proposal that did not go on to the Gate: the original when the
    /// revision replaced it or was rejected, the failed revision when the
    /// original was kept; `None` when no revision was made.
    pub set_aside: Option<Proposal>,
}

/// A candidate as proposed: what the ledgers keep of the one set aside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub manifest: Manifest,
    pub build: BuildRecord,
    pub smoke: Option<SmokeReport>,
    /// Where and why the Evolver ended it, if it did.
    pub failed: Option<(String, String)>,
    /// The Critic's review, when it got that far.
    pub critic: Option<Review>,
}

/// One round of the judge, in numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeTally {
    /// Candidates the judge read (those the Critic let through).
    pub reviewed: usize,
    /// First reviews by verdict, and those that gave no review.
    pub approved: usize,
    pub revise: usize,
    pub rejected: usize,
    pub no_review: usize,
    /// Revisions that went on to the Gate in the original's place.
    pub replaced: usize,
    /// Candidates judge-rejected (at the first review or the revision's).
    pub judge_rejected: usize,
    /// Judge calls made (reviews of revisions included) and their tokens.
    pub calls: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Everything about one candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub round: u32,
    pub manifest: Manifest,
    pub build: BuildRecord,
    pub smoke: Option<SmokeReport>,
    pub review: Review,
    /// The judge's review and revision (absent without a judge, or when
    /// the candidate never reached the judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeRecord>,
    pub gate: Option<GateReport>,
    /// `shipped`, or the stage that ended it (`evolver:build`, `critic`,
    /// `judge-rejected`, `gate:no-regression`, ...).
    pub verdict: String,
    pub reason: String,
    pub cost: Cost,
    /// Train flips and held-out change, when gated that far.
    pub gain: Option<(usize, i64)>,
}

/// A shipped edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ship {
    pub round: u32,
    pub candidate: String,
    pub lever: String,
    pub bucket: String,
    pub dimension: String,
    pub edit: String,
    pub parent: String,
    pub harness: String,
    /// The store object holding the candidate's record (the lineage record's `reason`).
    pub record: String,
    pub predicted: Vec<String>,
    pub flipped: Vec<String>,
    pub hit_rate: f64,
    /// The attribution signature fired on the flipped tasks.
    pub attributed: bool,
    pub heldout_before: Option<usize>,
    pub heldout_after: Option<usize>,
}

/// One point of the curves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub round: u32,
    pub harness: String,
    pub train_solved: usize,
    pub train_total: usize,
    pub heldout_solved: Option<usize>,
    pub heldout_total: usize,
}

/// One round's summary line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRow {
    pub round: u32,
    pub actionability: f64,
    pub themes: Vec<(String, usize)>,
    pub proposed: usize,
    pub shipped: Option<String>,
    /// Why the round was idle.
    pub idle: Option<String>,
    pub rollouts: u64,
    pub meta_tokens: u64,
    /// What the judge did this round (absent without a judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeTally>,
}

/// All ledgers of a run, in memory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub rounds: Vec<RoundRow>,
    pub curves: Vec<Point>,
    pub final_point: Option<Point>,
    pub history: BTreeMap<String, Vec<Outcome>>,
    pub candidates: Vec<CandidateRecord>,
    pub ships: Vec<Ship>,
    pub levers: BTreeMap<String, LeverStats>,
    pub caught: Vec<String>,
    pub let_through: Vec<String>,
    pub concerns: Vec<String>,
    pub journal: String,
    /// The judge model's spec, when the run has one (`cost.json` then has a `judge` line).
    #[serde(default)]
    pub judge_model: Option<String>,
    /// (round, file name, bytes) for the R<n>/ files.
    #[serde(skip)]
    pub round_files: Vec<(u32, String, Vec<u8>)>,
}

fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("ledger serializes");
    b.push(b'\n');
    b
}

impl Ledger {
    /// The bytes of every ledger file, by relative path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut f = BTreeMap::new();
        f.insert("journal.md".into(), self.journal.clone().into_bytes());
        f.insert("curves.json".into(), pretty(&json!({ "rounds": self.curves, "final": self.final_point })));
        f.insert("task_history.json".into(), pretty(&self.history));
        let mut lines = Vec::new();
        for c in &self.candidates {
            lines.extend(serde_json::to_vec(c).expect("record serializes"));
            lines.push(b'\n');
        }
        f.insert("candidates.jsonl".into(), lines);
        let rejected: Vec<_> = self.candidates.iter().filter(|c| c.verdict != "shipped").map(|c| json!({ "candidate": c.manifest.candidate_id, "round": c.round, "lever": c.manifest.lever, "stage": c.verdict, "reason": c.reason })).collect();
        f.insert("rejected.json".into(), pretty(&rejected));
        f.insert("ships.json".into(), pretty(&self.ships));
        let mut buckets: BTreeMap<String, (u32, u32, u32, u32)> = BTreeMap::new();
        let mut dims: BTreeMap<String, (u32, u32, u32, u32)> =
            DIMENSIONS.iter().map(|d| (d.to_string(), (0, 0, 0, 0))).collect();
        for s in self.levers.values() {
            for e in [
                buckets.entry(s.bucket.map(|b| b.name().to_string()).unwrap_or_default()).or_default(),
                dims.entry(s.dimension.clone()).or_default(),
            ] {
                e.0 += s.proposed;
                e.1 += s.shipped;
                e.2 += s.predicted;
                e.3 += s.flipped;
            }
        }
        let rate = |e: &(u32, u32, u32, u32)| if e.2 > 0 { Some(e.3 as f64 / e.2 as f64) } else { None };
        let table = |m: &BTreeMap<String, (u32, u32, u32, u32)>| -> serde_json::Value {
            m.iter().map(|(k, e)| (k.clone(), json!({ "proposed": e.0, "shipped": e.1, "predicted": e.2, "flipped": e.3, "hit_rate": rate(e) }))).collect::<serde_json::Map<_, _>>().into()
        };
        let levers: serde_json::Map<String, serde_json::Value> = self.levers.iter().map(|(k, s)| (k.clone(), json!({ "bucket": s.bucket, "dimension": s.dimension, "proposed": s.proposed, "shipped": s.shipped, "rejected": s.rejected, "predicted": s.predicted, "flipped": s.flipped, "hit_rate": s.hit_rate(), "ship_rounds": s.ship_rounds }))).collect();
        f.insert("scoreboard.json".into(), pretty(&json!({ "levers": levers, "buckets": table(&buckets), "dimensions": table(&dims), "strategy_concerns": self.concerns })));
        let mut md = String::from("# Regressions\n\n## Let through (must be none)\n");
        if self.let_through.is_empty() {
            md.push_str("none\n");
        }
        for r in &self.let_through {
            md.push_str(&format!("- {r}\n"));
        }
        md.push_str("\n## Caught by the gate\n");
        if self.caught.is_empty() {
            md.push_str("none\n");
        }
        for r in &self.caught {
            md.push_str(&format!("- {r}\n"));
        }
        f.insert("regressions.md".into(), md.into_bytes());
        let lineage: Vec<_> = self.ships.iter().map(|s| json!({ "round": s.round, "harness": s.harness, "parent": s.parent, "candidate": s.candidate, "edit": s.edit, "record": s.record })).collect();
        f.insert("lineage.json".into(), pretty(&lineage));
        let total = |g: fn(&RoundRow) -> u64| self.rounds.iter().map(g).sum::<u64>();
        let per_candidate: Vec<_> = self.candidates.iter().map(|c| json!({ "candidate": c.manifest.candidate_id, "cost": c.cost, "gain": c.gain, "verdict": c.verdict })).collect();
        let mut cost = json!({ "rollouts": total(|r| r.rollouts), "meta_tokens": total(|r| r.meta_tokens), "compile_attempts": self.candidates.iter().map(|c| c.cost.compile_attempts as u64).sum::<u64>(), "rounds": self.rounds, "candidates": per_candidate });
        if let Some(model) = &self.judge_model {
            let tallies = || self.rounds.iter().filter_map(|r| r.judge.as_ref());
            let input: u64 = tallies().map(|t| t.input_tokens).sum();
            let output: u64 = tallies().map(|t| t.output_tokens).sum();
            cost["judge"] = json!({ "model": model, "calls": tallies().map(|t| t.calls).sum::<usize>(), "input_tokens": input, "output_tokens": output, "tokens": input + output });
        }
        f.insert("cost.json".into(), pretty(&cost));
        for (round, name, bytes) in &self.round_files {
            f.insert(format!("R{round}/{name}"), bytes.clone());
        }
        f
    }

    /// Write every file under `dir` and mirror them into the store; the
    /// ref `evolve/<name>` names the index.
    pub fn write(&self, dir: &Path, store: &Store, name: &str, extra: &[(&str, Vec<u8>)]) -> Result<(), String> {
        let mut files = self.files();
        for (n, b) in extra {
            files.insert(n.to_string(), b.clone());
        }
        let mut index = serde_json::Map::new();
        for (rel, bytes) in &files {
            let path: PathBuf = dir.join(rel);
            std::fs::create_dir_all(path.parent().expect("has a parent"))
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let tmp = path.with_extension("tmp~");
            std::fs::write(&tmp, bytes)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let id = store.put(bytes).map_err(|e| e.to_string())?;
            index.insert(rel.clone(), json!(id.to_hex()));
        }
        let mut traces: Vec<&str> = self.history.values().flatten().map(|o| o.trace.as_str()).collect();
        traces.sort();
        traces.dedup();
        let idx = json!({ "format": "kiln-evolve-ledger/1", "name": name, "files": index, "traces": traces, "harnesses": self.ships.iter().map(|s| s.harness.clone()).collect::<Vec<_>>() });
        let id = store.put(&serde_json::to_vec(&idx).expect("index serializes")).map_err(|e| e.to_string())?;
        store.set_ref(&format!("evolve/{name}"), &id).map_err(|e| e.to_string())?;
        Ok(())
    }
}
