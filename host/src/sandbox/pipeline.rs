//! The processors of one task, in order, with failure policies and hot swap.
//!
//! A hook runs every processor that wants it, in pipeline order, each seeing
//! the edits of those before it. The first `block` or `interrupt` ends the
//! hook. A fault is handled by the faulting processor's policy and never
//! touches another processor: its edits were already rolled back.
//!
//! Swaps are applied by the caller between hook calls (the agent loop does it
//! at step boundaries), never inside one.

use std::sync::Arc;

use super::context::{Context, Hook};
use super::instance::{CallReport, Fault, Instance, InstanceSpec, Verdict};
use super::limits::FailurePolicy;
use super::runtime::{ComponentId, Loaded, Runtime};
use super::state::{TaskFacts, VirtualClock};
use crate::chat::ToolSpec;

/// One processor of a harness, ready to instantiate.
#[derive(Clone, Debug)]
pub struct ProcessorSpec {
    pub loaded: Arc<Loaded>,
    pub instance: InstanceSpec,
    pub policy: FailurePolicy,
}

struct Live {
    spec: ProcessorSpec,
    instance: Instance,
    faults: u32,
    disabled: bool,
}

/// A processor of a live pipeline, as traces record it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub name: String,
    pub component: ComponentId,
    /// The JSON config it was configured with.
    pub config: String,
}

/// What a hook did across the pipeline.
#[derive(Debug)]
pub struct HookOutcome {
    /// `Pass`, or the first `Block`/`Interrupt`.
    pub verdict: Verdict,
    /// The processor that blocked or interrupted.
    pub by: Option<String>,
    pub reports: Vec<CallReport>,
    /// Advice for the next step, as (processor, text).
    pub advice: Vec<(String, String)>,
    /// A processor whose policy is `abort` faulted: the task must end.
    pub aborted: Option<(String, Fault)>,
    /// Processors taken out by `disable` during this hook.
    pub disabled: Vec<String>,
}

/// A change to a live pipeline.
#[derive(Clone, Debug)]
pub enum Swap {
    /// Insert at a position (clamped to the end).
    Insert { at: usize, spec: ProcessorSpec },
    /// Replace the processor named `target`, handing its state over.
    Replace { target: String, spec: ProcessorSpec },
    /// Remove the processor named `target`.
    Remove { target: String },
}

/// What a swap did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwapReport {
    pub op: String,
    pub target: String,
    pub old: Option<ComponentId>,
    pub new: Option<ComponentId>,
    /// Bytes of state handed from the old processor to the new one.
    pub state_bytes: usize,
    /// Why the swap did not happen; the pipeline is then unchanged.
    pub error: Option<String>,
}

/// The live processors of one task.
pub struct Pipeline {
    rt: Runtime,
    members: Vec<Live>,
    clock: VirtualClock,
    facts: TaskFacts,
}

impl Pipeline {
    /// Instantiate and configure every processor for a new task.
    pub fn new(rt: &Runtime, specs: Vec<ProcessorSpec>, task_id: &str, seed: u64, max_steps: u32) -> Result<Pipeline, (String, Fault)> {
        let clock = VirtualClock::default();
        let mut members = Vec::with_capacity(specs.len());
        for spec in specs {
            let instance = Instance::new(rt, spec.loaded.clone(), spec.instance.clone(), seed, clock.clone())
                .map_err(|f| (spec.loaded.info.name.clone(), f))?;
            members.push(Live { spec, instance, faults: 0, disabled: false });
        }
        let facts = TaskFacts { task_id: task_id.to_string(), step: 0, max_steps, seed };
        Ok(Pipeline { rt: rt.clone(), members, clock, facts })
    }

    /// Advance to `step`: the task facts and the virtual clock (one second per step).
    pub fn set_step(&mut self, step: u32) {
        self.facts.step = step;
        self.clock.set(step as u64 * 1_000_000_000);
    }

    pub fn facts(&self) -> &TaskFacts {
        &self.facts
    }

    /// Names of the live (not disabled) processors, in order.
    pub fn names(&self) -> Vec<&str> {
        self.members.iter().filter(|m| !m.disabled).map(|m| m.instance.name()).collect()
    }

    /// Every processor, in order, as recorded in traces.
    pub fn members(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|m| Member { name: m.instance.name().to_string(), component: m.spec.loaded.id.clone(), config: m.spec.instance.config.clone() })
            .collect()
    }

    /// Run `hook` across the pipeline on `ctx`.
    pub fn run(&mut self, hook: Hook, ctx: &mut Context) -> HookOutcome {
        let mut out = HookOutcome { verdict: Verdict::Pass, by: None, reports: Vec::new(), advice: Vec::new(), aborted: None, disabled: Vec::new() };
        for m in self.members.iter_mut() {
            if m.disabled || !m.instance.wants(hook) {
                continue;
            }
            let report = m.instance.call_hook(hook, ctx, &self.facts);
            if let Some(text) = report.advice() {
                out.advice.push((report.processor.to_string(), text.to_string()));
            }
            // Decide from the report by reference: a passing call (the
            // common case) then costs no clone at all.
            let stop = match (&report.fault, &report.verdict) {
                (Some(f), _) => {
                    m.faults += 1;
                    match m.spec.policy {
                        FailurePolicy::Skip => false,
                        FailurePolicy::Abort => {
                            out.aborted = Some((report.processor.to_string(), f.clone()));
                            true
                        }
                        FailurePolicy::Disable { after } => {
                            if m.faults >= after.max(1) {
                                m.disabled = true;
                                out.disabled.push(report.processor.to_string());
                            }
                            false
                        }
                    }
                }
                (None, Some(v @ (Verdict::Block(_) | Verdict::Interrupt(_)))) => {
                    out.verdict = v.clone();
                    out.by = Some(report.processor.to_string());
                    true
                }
                (None, _) => false,
            };
            out.reports.push(report);
            if stop {
                return out;
            }
        }
        out
    }

    /// Tools provided by live processors, with the provider's name.
    pub fn tools(&self) -> Vec<(String, ToolSpec)> {
        self.members
            .iter()
            .filter(|m| !m.disabled)
            .flat_map(|m| m.instance.tools().iter().map(|t| (m.instance.name().to_string(), t.clone())))
            .collect()
    }

    /// Run a processor-provided tool; `None` if no live processor provides it.
    pub fn call_tool(&mut self, name: &str, arguments: &str, ctx: &mut Context) -> Option<(Result<String, String>, CallReport)> {
        let facts = self.facts.clone();
        let m = self.members.iter_mut().find(|m| !m.disabled && m.instance.tools().iter().any(|t| t.name == name))?;
        Some(m.instance.call_tool(name, arguments, ctx, &facts))
    }

    /// Apply a swap now. On any failure the pipeline is left as it was.
    pub fn swap(&mut self, swap: Swap) -> SwapReport {
        let seed = self.facts.seed;
        match swap {
            Swap::Insert { at, spec } => {
                let mut r = SwapReport { op: "insert".into(), target: spec.loaded.info.name.clone(), old: None, new: Some(spec.loaded.id.clone()), state_bytes: 0, error: None };
                match Instance::new(&self.rt, spec.loaded.clone(), spec.instance.clone(), seed, self.clock.clone()) {
                    Ok(instance) => {
                        let at = at.min(self.members.len());
                        self.members.insert(at, Live { spec, instance, faults: 0, disabled: false });
                    }
                    Err(f) => r.error = Some(format!("cannot start {}: {f}", r.target)),
                }
                r
            }
            Swap::Remove { target } => {
                let mut r = SwapReport { op: "remove".into(), target: target.clone(), old: None, new: None, state_bytes: 0, error: None };
                match self.members.iter().position(|m| m.instance.name() == target) {
                    Some(i) => r.old = Some(self.members.remove(i).spec.loaded.id.clone()),
                    None => r.error = Some(format!("no processor named `{target}` in this task")),
                }
                r
            }
            Swap::Replace { target, spec } => {
                let mut r = SwapReport { op: "replace".into(), target: target.clone(), old: None, new: Some(spec.loaded.id.clone()), state_bytes: 0, error: None };
                let Some(i) = self.members.iter().position(|m| m.instance.name() == target) else {
                    r.error = Some(format!("no processor named `{target}` in this task"));
                    return r;
                };
                r.old = Some(self.members[i].spec.loaded.id.clone());
                let mut instance = match Instance::new(&self.rt, spec.loaded.clone(), spec.instance.clone(), seed, self.clock.clone()) {
                    Ok(x) => x,
                    Err(f) => {
                        r.error = Some(format!("cannot start the replacement: {f}; kept {target}"));
                        return r;
                    }
                };
                let state = match self.members[i].instance.save_state() {
                    Ok(s) => s,
                    Err(f) => {
                        r.error = Some(format!("{target} could not save its state: {f}; kept {target}"));
                        return r;
                    }
                };
                r.state_bytes = state.len();
                if let Err(f) = instance.load_state(&state) {
                    r.error = Some(format!("{f}; kept {target}"));
                    return r;
                }
                self.members[i] = Live { spec, instance, faults: 0, disabled: false };
                r
            }
        }
    }
}
