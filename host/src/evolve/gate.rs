//! The Gate: deterministic, ordered, the first failure stops.
//!
//! 1. **manifest** — every field of the change manifest is filled in:
//!    id, lever, bucket, dimension, evidence, file changes, tasks to
//!    unlock, attribution signature, the candidate harness id.
//! 2. **canonical** — the candidate harness, stored and loaded back through
//!    the harness room ([`Harness::load`]: canonical bytes, re-assembled
//!    under the composition rules), has the id the manifest names. The
//!    candidate stays in the store, so `kiln harness show <id>` shows any
//!    candidate the ledgers name.
//! 3. **build-smoke** — its code built and passed the smoke test, and every
//!    processor of the harness loads.
//! 4. **no-regression** (the seesaw) — every train (task, seed) the incumbent
//!    solved is rerun on `k` seeds (the batch seed, then `seed + 7919·j`).
//!    A regression is a seed on which the incumbent succeeds and the
//!    candidate does not; one regression rejects. Seeds on which the
//!    incumbent itself fails are not held against the candidate. With a
//!    deterministic model this is exact; with a sampling one, raise `k`.
//! 5. **target-flip** — at least one task the manifest predicts to unlock
//!    now succeeds on its batch seed.
//! 6. **held-out** — the candidate's success count on the held-out tasks is
//!    at least the incumbent's (skipped, and recorded so, only when the run
//!    was explicitly allowed to go without a held-out split).
//!
//! Every rollout goes through the result cache, so the incumbent's reruns
//! are paid once per incumbent, and the report counts the rollouts asked.

use serde::{Deserialize, Serialize};

use super::error_chain;
use super::evolver::Candidate;
use super::rollout::{Lab, TaskResult};
use crate::harness::Harness;

/// One check's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The Gate's verdict on one candidate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub checks: Vec<Check>,
    pub passed: bool,
    pub failed_at: Option<String>,
    /// Train tasks that flipped from failed to solved (batch seeds).
    pub flips: Vec<String>,
    /// Of those, the predicted ones.
    pub target_flips: Vec<String>,
    /// (task, seed) the candidate lost.
    pub regressions: Vec<String>,
    pub heldout_before: Option<usize>,
    pub heldout_after: Option<usize>,
    /// The candidate's train results (batch seeds), when it got that far.
    #[serde(skip)]
    pub train: Vec<TaskResult>,
    #[serde(skip)]
    pub test: Vec<TaskResult>,
}

/// What the Gate runs against.
pub struct Bench<'a> {
    pub lab: &'a Lab,
    pub incumbent: &'a Harness,
    /// The incumbent's train results on the batch seeds.
    pub train: &'a [TaskResult],
    /// The incumbent's held-out results; `None` without a held-out split.
    pub test: Option<&'a [TaskResult]>,
    pub gate_seeds: u32,
}

/// The seeds a solved (task, seed) is rerun on.
pub fn gate_seeds(seed: u64, k: u32) -> Vec<u64> {
    (0..k.max(1) as u64).map(|j| seed.wrapping_add(7919 * j)).collect()
}

/// Run the Gate on one candidate.
pub async fn gate(b: &Bench<'_>, c: &Candidate) -> GateReport {
    let mut r = GateReport::default();
    let m = &c.manifest;
    macro_rules! check {
        ($name:expr, $ok:expr, $detail:expr) => {{
            let ok: bool = $ok;
            r.checks.push(Check { name: $name.into(), passed: ok, detail: $detail });
            if !ok {
                r.failed_at = Some($name.into());
                return r;
            }
        }};
    }
    let mut missing = Vec::new();
    for (field, empty) in [
        ("candidate_id", m.candidate_id.is_empty()),
        ("lever", m.lever.is_empty()),
        ("dimension", m.dimension.is_empty()),
        ("capability_evidence", m.capability_evidence.is_empty()),
        ("file_changes", m.file_changes.is_empty()),
        ("predicted_impact.tasks_will_unlock", m.predicted_impact.tasks_will_unlock.is_empty()),
        (
            "attribution_signature",
            m.attribution_signature.name.is_empty() || m.attribution_signature.expected_min_calls == 0,
        ),
        ("edit", m.edit.is_none()),
        ("harness", m.harness.is_empty()),
    ] {
        if empty {
            missing.push(field);
        }
    }
    check!(
        "manifest",
        missing.is_empty(),
        if missing.is_empty() { "complete".into() } else { format!("missing: {}", missing.join(", ")) }
    );

    let Some(harness) = &c.harness else {
        check!("canonical", false, "no candidate harness".into());
        unreachable!()
    };
    let read_back = b
        .lab
        .store
        .put(harness.canonical_json())
        .map_err(|e| e.to_string())
        .and_then(|id| Harness::load(&b.lab.store, &id, harness.probe().clone()).map_err(|e| error_chain(&e)));
    let recomputes = matches!(&read_back, Ok(h) if h.id().to_hex() == m.harness);
    check!(
        "canonical",
        recomputes,
        match &read_back {
            Ok(_) if recomputes => format!("id {} recomputes", &m.harness[..12]),
            Ok(h) => format!(
                "the id does not recompute: the manifest says {}, the harness reads back as {}",
                m.harness,
                h.id()
            ),
            Err(e) => format!("the harness does not read back: {e}"),
        }
    );

    let smoke_ok = c.smoke.as_ref().map(|s| s.passed).unwrap_or(c.loaded.is_none());
    let loads = harness.processor_specs(&b.lab.rt, &b.lab.store).map_err(|e| error_chain(&e));
    check!(
        "build-smoke",
        smoke_ok && loads.is_ok(),
        match (&loads, &c.smoke) {
            (Err(e), _) => format!("the harness does not load: {e}"),
            (_, Some(s)) if !s.passed => s.reason.clone().unwrap_or_default(),
            (_, Some(s)) => format!("smoke passed: {} calls on {} traces, no fault, deterministic", s.calls, s.traces),
            (_, None) => "no code to build".into(),
        }
    );

    // The seesaw.
    let solved: Vec<&TaskResult> = b.train.iter().filter(|t| t.success).collect();
    let jobs: Vec<(String, u64)> = solved
        .iter()
        .flat_map(|t| gate_seeds(t.seed, b.gate_seeds).into_iter().map(move |s| (t.task.clone(), s)))
        .collect();
    let (before, after) = match (b.lab.run(b.incumbent, &jobs).await, b.lab.run(harness, &jobs).await) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            check!("no-regression", false, format!("could not run: {e}"));
            unreachable!()
        }
    };
    r.regressions = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| x.success && !y.success)
        .map(|(x, _)| format!("{}@{}", x.task, x.seed))
        .collect();
    check!(
        "no-regression",
        r.regressions.is_empty(),
        if r.regressions.is_empty() {
            format!("{} solved tasks hold on {} seeds each", solved.len(), b.gate_seeds.max(1))
        } else {
            format!("regresses {}", r.regressions.join(", "))
        }
    );

    let jobs: Vec<(String, u64)> = b.train.iter().map(|t| (t.task.clone(), t.seed)).collect();
    r.train = match b.lab.run(harness, &jobs).await {
        Ok(x) => x,
        Err(e) => {
            check!("target-flip", false, format!("could not run: {e}"));
            unreachable!()
        }
    };
    r.flips =
        b.train.iter().zip(&r.train).filter(|(x, y)| !x.success && y.success).map(|(x, _)| x.task.clone()).collect();
    r.target_flips = r.flips.iter().filter(|t| m.predicted_impact.tasks_will_unlock.contains(t)).cloned().collect();
    check!(
        "target-flip",
        !r.target_flips.is_empty(),
        format!(
            "{} of {} predicted tasks flip ({} flips in all)",
            r.target_flips.len(),
            m.predicted_impact.tasks_will_unlock.len(),
            r.flips.len()
        )
    );

    match b.test {
        None => r.checks.push(Check {
            name: "held-out".into(),
            passed: true,
            detail: "skipped: the run was allowed to go without a held-out split".into(),
        }),
        Some(test) => {
            let jobs: Vec<(String, u64)> = test.iter().map(|t| (t.task.clone(), t.seed)).collect();
            r.test = match b.lab.run(harness, &jobs).await {
                Ok(x) => x,
                Err(e) => {
                    check!("held-out", false, format!("could not run: {e}"));
                    unreachable!()
                }
            };
            let (x, y) = (test.iter().filter(|t| t.success).count(), r.test.iter().filter(|t| t.success).count());
            r.heldout_before = Some(x);
            r.heldout_after = Some(y);
            check!("held-out", y >= x, format!("held-out {x} -> {y} of {}", test.len()));
        }
    }
    r.passed = true;
    r
}
