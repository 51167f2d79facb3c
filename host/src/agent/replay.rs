//! Replay: run a processor on the recorded inputs of a trace.
//!
//! The trace is folded event by event, so the context at every hook call is
//! exactly what the task had. The candidate runs at every hook point it
//! wants, in order, so a stateful processor sees the same sequence it would
//! have seen live. Where the trace holds a call of a processor with the same
//! name, the candidate's input is the context just before that call and its
//! output (verdict, edits, fault kind) is compared with the recorded one;
//! elsewhere the candidate runs on the hook's first input and its output is
//! reported. The recorded trajectory is never changed by the candidate.

use std::sync::Arc;

use serde::Serialize;

use crate::sandbox::{CallReport, Grants, Hook, Instance, InstanceSpec, Limits, Loaded, Runtime, TaskFacts, VirtualClock};
use crate::trace::{Event, Fold};

/// One replayed call.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayedCall {
    pub step: u32,
    pub hook: Hook,
    /// The recorded call, when the trace has one for this processor here.
    pub recorded: Option<CallReport>,
    pub replayed: CallReport,
    /// `Some(true)` identical, `Some(false)` different, `None` nothing to compare.
    pub identical: Option<bool>,
}

/// What a replay found.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub processor: String,
    pub component: String,
    pub calls: Vec<ReplayedCall>,
    pub compared: usize,
    pub identical: usize,
    pub faults: usize,
    /// The trace was cut short; what was whole was replayed.
    pub truncated: Option<String>,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the trace has no task-start event")]
    NoStart,
    #[error("the trace does not fold: {0}")]
    Fold(String),
    #[error("the processor could not start: {0}")]
    Start(String),
}

/// Replay `loaded` (configured with `config`, or with the recorded config of
/// the same-named processor when `config` is `None`) on `events`.
pub fn replay(rt: &Runtime, loaded: Arc<Loaded>, config: Option<String>, limits: Limits, events: &[Event], truncated: Option<String>) -> Result<ReplayReport, ReplayError> {
    let Some(Event::TaskStart { task, seed, max_steps, processors, .. }) = events.first() else {
        return Err(ReplayError::NoStart);
    };
    let name = loaded.info.name.clone();
    let config = config.or_else(|| processors.iter().find(|m| m.name == name).map(|m| m.config.clone())).unwrap_or_else(|| "{}".into());
    let clock = VirtualClock::default();
    let spec = InstanceSpec { config, limits, grants: Arc::new(Grants::default()) };
    let mut inst = Instance::new(rt, loaded.clone(), spec, *seed, clock.clone()).map_err(|f| ReplayError::Start(f.to_string()))?;
    let mut facts = TaskFacts { task_id: task.clone(), step: 0, max_steps: *max_steps, seed: *seed };
    let mut fold = Fold::default();
    let mut report = ReplayReport { processor: name.clone(), component: loaded.id.to_string(), calls: vec![], compared: 0, identical: 0, faults: 0, truncated };
    // Within a hook: whether the recorded trace has a call of this processor.
    let mut pending: Option<Hook> = None;
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Hook { step, hook } => {
                facts.step = *step;
                clock.set(*step as u64 * 1_000_000_000);
                pending = None;
                if inst.wants(*hook) {
                    let recorded_here = events[i + 1..]
                        .iter()
                        .take_while(|e| matches!(e, Event::Call { .. }))
                        .any(|e| matches!(e, Event::Call { report, .. } if *report.processor == *name));
                    if recorded_here {
                        pending = Some(*hook);
                    } else {
                        let mut ctx = fold.ctx.clone();
                        let r = inst.call_hook(*hook, &mut ctx, &facts);
                        report.faults += r.fault.is_some() as usize;
                        report.calls.push(ReplayedCall { step: *step, hook: *hook, recorded: None, replayed: r, identical: None });
                    }
                }
            }
            Event::Call { step, report: rec } if *rec.processor == *name && pending == Some(rec.hook) => {
                let mut ctx = fold.ctx.clone();
                let r = inst.call_hook(rec.hook, &mut ctx, &facts);
                let same = r.verdict == rec.verdict && r.edits == rec.edits && r.fault.as_ref().map(|f| f.kind) == rec.fault.as_ref().map(|f| f.kind);
                report.compared += 1;
                report.identical += same as usize;
                report.faults += r.fault.is_some() as usize;
                report.calls.push(ReplayedCall { step: *step, hook: rec.hook, recorded: Some(rec.clone()), replayed: r, identical: Some(same) });
            }
            Event::ProcessorTool { name: tool, arguments, report: rec, .. } if *rec.processor == *name => {
                // Keep the candidate's state in step with the recording.
                let mut ctx = fold.ctx.clone();
                let _ = inst.call_tool(tool, arguments, &mut ctx, &facts);
            }
            _ => {}
        }
        fold.apply(e).map_err(ReplayError::Fold)?;
    }
    Ok(report)
}
