//! Traces: one event per thing that happened in a task, written as deltas.
//!
//! A trace never snapshots the conversation. It records the task's starting
//! context and then every change to it, each hook call with its edits, each
//! model call and each tool call. Folding the events in order rebuilds the
//! exact context any hook call saw, which is what replay and the evolution
//! engine's smoke tests need. Events are JSON lines, gzip-compressed, stored
//! in the store by blake3 id; a truncated file yields every whole event
//! before the cut and says what is missing.

use std::io::{BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

use crate::chat::{Message, ToolCall, ToolSpec};
use crate::env::Score;
use crate::models::Usage;
use crate::sandbox::{CallReport, Context, Hook, Member, Reply, SwapReport, ToolOutcome};
use crate::store::{ObjectId, Store};

/// Traces as RL training data: GRPO groups and SFT conversations.
pub mod export;

/// The version of the event schema.
pub const SCHEMA: u32 = 1;

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// The environment said the task is over.
    Done,
    /// The model answered without a tool call before the task was over.
    Stopped,
    /// The step budget ran out.
    Budget,
    /// A processor interrupted the task.
    Interrupted,
    /// A processor with the `abort` policy faulted.
    Faulted,
    /// Infrastructure failed (model endpoint, bridge): not the agent's fault.
    Errored,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Done => "done",
            EndReason::Stopped => "stopped",
            EndReason::Budget => "budget",
            EndReason::Interrupted => "interrupted",
            EndReason::Faulted => "faulted",
            EndReason::Errored => "errored",
        }
    }
}

/// One thing that happened in a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The first event: what the task started from.
    TaskStart {
        schema: u32,
        env: String,
        task: String,
        seed: u64,
        harness: String,
        model: String,
        max_steps: u32,
        /// The context before the task-start hook.
        context: Context,
        /// The processors, in order.
        processors: Vec<Member>,
    },
    /// A hook is about to run across the pipeline at this context.
    Hook { step: u32, hook: Hook },
    /// One processor's call at the hook just announced.
    Call { step: u32, report: CallReport },
    /// A processor-provided tool ran (its slot writes are in `report.edits`).
    ProcessorTool { step: u32, name: String, arguments: String, result: Result<String, String>, report: CallReport },
    /// The loop itself changed the context.
    Append { step: u32, message: Message },
    SetReply { step: u32, reply: Option<Reply> },
    SetCall { step: u32, call: Option<ToolCall>, answer: Option<String> },
    SetOutcome { step: u32, outcome: Option<ToolOutcome> },
    SetTools { step: u32, tools: Vec<ToolSpec> },
    /// The model was called on the context as it stands.
    ModelCall { step: u32, model: String, text: String, calls: Vec<ToolCall>, usage: Usage, nanos: u64, error: Option<String> },
    /// A tool ran (or was answered or blocked).
    ToolCall { step: u32, call: ToolCall, by: String, content: String, is_error: bool, nanos: u64 },
    /// The pipeline changed at a step boundary.
    Swap { step: u32, report: SwapReport },
    StepEnd { step: u32 },
    /// The last event.
    TaskEnd { steps: u32, reason: EndReason, detail: Option<String>, score: Score, usage: Usage },
}

/// Collects a task's events.
#[derive(Debug, Default)]
pub struct Trace {
    pub events: Vec<Event>,
}

impl Trace {
    pub fn push(&mut self, e: Event) {
        self.events.push(e);
    }

    /// Gzip-compressed JSON lines. Deterministic: no timestamps in the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
        for e in &self.events {
            serde_json::to_writer(&mut gz, e).expect("events serialize");
            gz.write_all(b"\n").expect("in-memory write");
        }
        gz.finish().expect("in-memory write")
    }

    /// Store the trace; returns its id.
    pub fn save(&self, store: &Store) -> Result<ObjectId, crate::store::PutError> {
        store.put(&self.encode())
    }
}

/// What a reader could not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("trace is not gzip-compressed JSON lines: {0}")]
    Format(String),
}

/// A trace read back, possibly cut short.
#[derive(Debug, Default)]
pub struct ReadTrace {
    pub events: Vec<Event>,
    /// Why reading stopped early, if it did: every whole event before the cut is in `events`.
    pub truncated: Option<String>,
}

/// Read a trace's bytes. A truncated or damaged tail is reported, not fatal.
pub fn decode(bytes: &[u8]) -> Result<ReadTrace, ReadError> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Err(ReadError::Format("missing gzip header".into()));
    }
    let mut out = ReadTrace::default();
    let mut reader = BufReader::new(flate2::read::GzDecoder::new(bytes));
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if !line.ends_with('\n') => {
                out.truncated = Some(format!("the last event is cut short after {} whole events", out.events.len()));
                break;
            }
            Ok(_) => match serde_json::from_str::<Event>(&line) {
                Ok(e) => out.events.push(e),
                Err(e) => {
                    out.truncated = Some(format!("event {} is unreadable ({e}); {} whole events before it", out.events.len() + 1, out.events.len()));
                    break;
                }
            },
            Err(e) => {
                out.truncated = Some(format!("the compressed stream ends early ({e}) after {} whole events", out.events.len()));
                break;
            }
        }
    }
    if out.truncated.is_none() && !matches!(out.events.last(), Some(Event::TaskEnd { .. })) {
        out.truncated = Some(format!("no task-end event: the task did not finish ({} events)", out.events.len()));
    }
    let _ = reader.read_to_end(&mut Vec::new());
    Ok(out)
}

/// Replays the loop's own changes to a context, event by event. Hook calls
/// apply their recorded edits. The result after each event is exactly the
/// context the task had at that point.
#[derive(Debug, Default, Clone)]
pub struct Fold {
    pub ctx: Context,
    pub step: u32,
}

impl Fold {
    /// Apply one event. Returns an error if a recorded edit does not apply
    /// (the trace does not belong to this schema, or is damaged).
    pub fn apply(&mut self, e: &Event) -> Result<(), String> {
        match e {
            Event::TaskStart { context, .. } => self.ctx = context.clone(),
            Event::Hook { step, .. } | Event::StepEnd { step } => self.step = *step,
            Event::Call { report, .. } | Event::ProcessorTool { report, .. } => crate::sandbox::apply_edits(&mut self.ctx, &report.edits)?,
            Event::Append { message, .. } => self.ctx.messages.push(message.clone()),
            Event::SetReply { reply, .. } => self.ctx.reply = reply.clone(),
            Event::SetCall { call, answer, .. } => {
                self.ctx.call = call.clone();
                self.ctx.answer = answer.clone();
            }
            Event::SetOutcome { outcome, .. } => self.ctx.outcome = outcome.clone(),
            Event::SetTools { tools, .. } => self.ctx.tools = tools.clone(),
            Event::ModelCall { .. } | Event::ToolCall { .. } | Event::Swap { .. } | Event::TaskEnd { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;

    fn sample() -> Trace {
        let mut t = Trace::default();
        t.push(Event::TaskStart {
            schema: SCHEMA,
            env: "shop".into(),
            task: "t".into(),
            seed: 1,
            harness: "h".into(),
            model: "m".into(),
            max_steps: 5,
            context: Context::default(),
            processors: vec![],
        });
        for step in 0..50 {
            t.push(Event::Append { step, message: Message::user(format!("message {step} {}", "x".repeat(step as usize * 7))) });
            t.push(Event::StepEnd { step });
        }
        t.push(Event::TaskEnd { steps: 50, reason: EndReason::Done, detail: None, score: Score::default(), usage: Usage::default() });
        t
    }

    #[test]
    fn round_trip_and_fold() {
        let t = sample();
        let read = decode(&t.encode()).unwrap();
        assert!(read.truncated.is_none());
        assert_eq!(read.events, t.events);
        let mut fold = Fold::default();
        for e in &read.events {
            fold.apply(e).unwrap();
        }
        assert_eq!(fold.ctx.messages.len(), 50);
    }

    #[test]
    fn encoding_is_deterministic() {
        assert_eq!(sample().encode(), sample().encode());
    }

    #[test]
    fn a_truncated_trace_keeps_every_whole_event_and_says_what_is_missing() {
        let bytes = sample().encode();
        for cut in [bytes.len() - 1, bytes.len() / 2, 40] {
            let read = decode(&bytes[..cut]).unwrap();
            let why = read.truncated.expect("a cut trace is reported");
            assert!(why.contains("whole events") || why.contains("no task-end"), "{why}");
            assert_eq!(read.events[..], sample().events[..read.events.len()], "events before the cut are intact");
        }
        assert!(decode(b"not a trace").is_err());
    }
}
