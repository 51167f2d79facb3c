//! Rollouts with a memory: every (harness id, task, seed, model, step
//! budget) is run once, ever, per store.
//!
//! A finished task's row is kept in the store's cache (`evolve-results/`)
//! under the blake3 of that key, and its trace as an object. Asking again
//! returns the row; nothing is recomputed, which is also what makes a
//! resumed evolution cheap and identical to an uninterrupted one. A row
//! whose trace has gone (a `gc`) is recomputed.
//!
//! The harness is the harness room's [`Harness`]: its canonical id is the
//! first part of the key, its processors come from
//! [`Harness::processor_specs`] (config, limits, grants, failure policy), and
//! a harness that asks for text actions gets the model wrapped in
//! [`TextActions`], whose description (and so the key) says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::agent::{run_task, Shape, TaskSpec};
use crate::env::Suite;
use crate::harness::Harness;
use crate::models::text_actions::TextActions;
use crate::models::Model;
use crate::sandbox::Runtime;
use crate::store::{ObjectId, Store};
use crate::trace::{EndReason, Event};

const CACHE_NS: &str = "evolve-results";

/// One finished task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: String,
    pub seed: u64,
    pub success: bool,
    pub reward: f64,
    pub reason: EndReason,
    pub steps: u32,
    pub tokens: u64,
    /// The trace's object id (hex).
    pub trace: String,
    /// (processor, fault kind) per fault.
    pub faults: Vec<(String, String)>,
}

/// Counts of work done, for the cost ledger. `rollouts` counts every task
/// asked for (cached or not, so ledgers do not depend on the cache);
/// `computed` only those actually run (reported, never in ledgers).
#[derive(Debug, Default)]
pub struct Counters {
    pub rollouts: AtomicU64,
    pub computed: AtomicU64,
    pub tokens: AtomicU64,
}

/// Everything needed to run tasks of one environment with one model.
#[derive(Clone)]
pub struct Lab {
    pub rt: Runtime,
    pub store: Store,
    pub suite: Arc<dyn Suite>,
    pub env_name: String,
    pub model: Arc<dyn Model>,
    pub max_steps: Option<u32>,
    /// Tasks run at once.
    pub jobs: usize,
    pub counters: Arc<Counters>,
}

impl Lab {
    /// The cache key of one rollout: (harness id, environment, task, seed,
    /// model, step budget).
    fn key(&self, harness_id: &str, model: &dyn Model, task: &str, seed: u64) -> String {
        let text = format!(
            "kiln-evolve/result/1\n{harness_id}\n{}\n{task}\n{seed}\n{}\n{:?}",
            self.env_name,
            model.describe(),
            self.max_steps
        );
        ObjectId::of(text.as_bytes()).to_hex()
    }

    fn cached(&self, key: &str) -> Option<TaskResult> {
        let bytes = self.store.cache_get(CACHE_NS, key).ok()??;
        let row: TaskResult = serde_json::from_slice(&bytes).ok()?;
        let trace: ObjectId = row.trace.parse().ok()?;
        self.store.has(&trace).then_some(row)
    }

    /// Run `harness` on every (task, seed) of `jobs`; rows come back in the
    /// order asked. Fails only when the harness cannot be instantiated at all.
    pub async fn run(&self, harness: &Harness, jobs: &[(String, u64)]) -> Result<Vec<TaskResult>, String> {
        let id = harness.id().to_hex();
        let model: Arc<dyn Model> = if harness.tools().text_actions {
            Arc::new(TextActions::new(Box::new(self.model.clone())))
        } else {
            self.model.clone()
        };
        let mut out: Vec<Option<TaskResult>> = vec![None; jobs.len()];
        let mut todo = Vec::new();
        for (i, (task, seed)) in jobs.iter().enumerate() {
            self.counters.rollouts.fetch_add(1, Ordering::Relaxed);
            let key = self.key(&id, model.as_ref(), task, *seed);
            match self.cached(&key) {
                Some(row) => out[i] = Some(row),
                None => todo.push((i, task.clone(), *seed, key)),
            }
        }
        if !todo.is_empty() {
            let specs = harness
                .processor_specs(&self.rt, &self.store)
                .map_err(|e| format!("harness {}: {e}", harness.id().short()))?;
            let shape = Shape { system: harness.system().to_string(), deny: harness.tools().deny.clone() };
            let sem = Arc::new(tokio::sync::Semaphore::new(self.jobs.max(1)));
            let mut set = tokio::task::JoinSet::new();
            for (i, task, seed, key) in todo {
                let permit = sem.clone().acquire_owned().await.map_err(|e| e.to_string())?;
                let lab = self.clone();
                let (specs, shape, id, model) = (specs.clone(), shape.clone(), id.clone(), model.clone());
                set.spawn(async move {
                    let _permit = permit;
                    let mut env = lab.suite.make().map_err(|e| format!("environment {}: {e}", lab.env_name))?;
                    let spec = TaskSpec {
                        env_name: lab.env_name.clone(),
                        task: task.clone(),
                        seed,
                        max_steps: lab.max_steps,
                        harness_id: id,
                        shape,
                        processors: specs,
                        swaps: vec![],
                        mcp: vec![],
                        deterministic: true,
                    };
                    let (outcome, trace) = run_task(&lab.rt, model.as_ref(), env.as_mut(), spec).await;
                    let trace_id =
                        trace.save(&lab.store).map_err(|e| format!("cannot store the trace of {task}: {e}"))?;
                    let tokens = outcome.usage.input_tokens + outcome.usage.output_tokens;
                    let row = TaskResult {
                        task,
                        seed,
                        success: outcome.score.success,
                        reward: outcome.score.reward,
                        reason: outcome.reason,
                        steps: outcome.steps,
                        tokens,
                        trace: trace_id.to_hex(),
                        faults: outcome.faults,
                    };
                    lab.counters.computed.fetch_add(1, Ordering::Relaxed);
                    // Infrastructure failures are not cached: the next ask retries.
                    if row.reason != EndReason::Errored {
                        let _ = lab.store.cache_put(CACHE_NS, &key, &serde_json::to_vec(&row).expect("row serializes"));
                    }
                    Ok::<_, String>((i, row))
                });
            }
            while let Some(joined) = set.join_next().await {
                let (i, row) = joined.map_err(|e| format!("a rollout panicked: {e}"))??;
                out[i] = Some(row);
            }
        }
        let rows: Vec<TaskResult> = out.into_iter().map(|r| r.expect("every job ran")).collect();
        let tokens: u64 = rows.iter().map(|r| r.tokens).sum();
        self.counters.tokens.fetch_add(tokens, Ordering::Relaxed);
        Ok(rows)
    }

    /// Read a stored trace's events.
    pub fn events(&self, trace: &str) -> Result<Vec<Event>, String> {
        let id: ObjectId = trace.parse().map_err(|e| format!("trace id {trace}: {e}"))?;
        let bytes = self.store.get(&id).map_err(|e| e.to_string())?;
        let read = crate::trace::decode(&bytes).map_err(|e| e.to_string())?;
        Ok(read.events)
    }
}
