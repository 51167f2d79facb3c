//! Training data: stored traces as GRPO groups or SFT conversations, in JSON lines.
//!
//! Every trace is a trajectory of the task model. This module turns a set of
//! them into the two shapes RL and fine-tuning pipelines read
//! (docs/training-data.md has the line format and an example):
//!
//! - **`grpo`**: one line per trajectory, with its reward, its group's
//!   normalized advantage and every model call it made.
//! - **`sft`**: one line per conversation of a successful trajectory.
//!
//! Design choices:
//!
//! - **Exact contexts, never re-rendered.** A turn's `messages` and `tools`
//!   are the fold of the trace ([`super::Fold`]) up to its `model-call`
//!   event. The agent loop records every change to the context, including
//!   the edits of step-start and before-model processors, so that fold is by
//!   construction the very request the model got: the final history (after
//!   compaction, with pinned goals and advice) is never used as a stand-in.
//!   Messages and tools are written in the OpenAI chat format, the same JSON
//!   that [`crate::models::openai`] puts on the wire. The `completion` is
//!   the model's own reply, before after-model processors repaired it.
//! - **Groups are prompts.** A group is every trajectory of the same
//!   environment, task and starting messages (the environment's prompt,
//!   before any harness touched it), across seeds, harnesses and models:
//!   exactly the set GRPO compares. Its id is the first 16 hex digits of the
//!   blake3 of those three, so it is stable across stores.
//! - **Advantage** is `(reward - mean) / (std + 1e-4)` over the group, with
//!   the sample standard deviation (n - 1), as TRL's `GRPOTrainer` computes
//!   it. A group of one, or one whose rewards are all equal, has no
//!   baseline to compare with: its advantages are 0 and its lines are
//!   flagged (`single`, `flat`). Such groups carry no GRPO signal and are
//!   dropped unless [`Options::keep_flat`] is set.
//! - **Only the policy's outcomes.** A task that ended `errored` failed on
//!   infrastructure (a dead endpoint, a broken bridge), and one with no
//!   model call never asked the model anything; neither says anything about
//!   the model, so neither joins a group. Both are counted in the [`Summary`].
//! - **Two passes, bounded memory.** The first pass reads each trace once,
//!   checks that it is whole and folds, and keeps only its header (group,
//!   reward, ids). The second re-reads the traces to be written, in output
//!   order, and streams one line at a time. Memory holds the small headers
//!   and one trajectory, whatever the size of the store.
//! - **Damaged traces are named and skipped**, never fatal: a [`TraceProblem`]
//!   says which trace and what is wrong with it, and is counted.
//! - **Deterministic.** Lines are sorted by group id, then trace id; there
//!   are no timestamps; the same traces give the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{decode, EndReason, Event, Fold};
use crate::chat::{Message, Role, ToolCall, ToolSpec};
use crate::models::Usage;
use crate::store::{GetError, ListError, ObjectId, Store};

/// The `eps` of the advantage `(r - mean) / (std + eps)`; TRL's value.
pub const ADVANTAGE_EPS: f64 = 1e-4;

/// Hex digits in a group id.
pub const GROUP_ID_LEN: usize = 16;

/// Which kind of line to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One [`GrpoLine`] per trajectory.
    #[default]
    Grpo,
    /// One [`SftLine`] per conversation of a successful trajectory.
    Sft,
}

/// What to export.
#[derive(Clone, Debug)]
pub struct Options {
    pub format: Format,
    /// Only trajectories of this environment (its recorded name, e.g. `shop`).
    pub env: Option<String>,
    /// Only trajectories whose harness id starts with this (a full id or a prefix).
    pub harness: Option<String>,
    /// grpo: drop groups with fewer trajectories than this (after filtering).
    pub min_group: usize,
    /// grpo: keep groups with no signal (one trajectory, or all rewards
    /// equal), with advantage 0 and a flag.
    pub keep_flat: bool,
}

impl Options {
    /// Whether the `env` and `harness` filters let a trajectory through.
    fn selects(&self, h: &Header) -> bool {
        self.env.as_ref().is_none_or(|env| &h.env == env)
            && self.harness.as_ref().is_none_or(|prefix| h.harness.starts_with(prefix.as_str()))
    }
}

impl Default for Options {
    fn default() -> Self {
        Options { format: Format::Grpo, env: None, harness: None, min_group: 1, keep_flat: false }
    }
}

/// Why a group's advantages are all 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flag {
    /// The group has one trajectory: nothing to compare it with.
    Single,
    /// Every reward in the group is the same: zero variance.
    Flat,
}

/// A group's reward statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupStats {
    pub size: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for a group of one.
    pub std: f64,
    /// Set when the group carries no signal; then every advantage is 0.
    pub flag: Option<Flag>,
}

impl GroupStats {
    /// The statistics of a group's rewards, summed in the order given.
    pub fn of(rewards: &[f64]) -> GroupStats {
        let size = rewards.len();
        if size == 0 {
            return GroupStats { size, mean: 0.0, std: 0.0, flag: Some(Flag::Single) };
        }
        let mean = rewards.iter().sum::<f64>() / size as f64;
        if size == 1 {
            return GroupStats { size, mean, std: 0.0, flag: Some(Flag::Single) };
        }
        let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (size - 1) as f64).sqrt();
        let flat = rewards.iter().all(|r| *r == rewards[0]);
        GroupStats { size, mean, std, flag: flat.then_some(Flag::Flat) }
    }

    /// `(reward - mean) / (std + ADVANTAGE_EPS)`, or 0 for a flagged group.
    pub fn advantage(&self, reward: f64) -> f64 {
        if self.flag.is_some() {
            0.0
        } else {
            (reward - self.mean) / (self.std + ADVANTAGE_EPS)
        }
    }
}

/// A message in the OpenAI chat format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    /// `null` only for an assistant message that has tool calls and no text.
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ChatToolCall>>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// The message as [`crate::models::openai`] sends it.
    pub fn from_message(m: &Message) -> ChatMessage {
        match m.role {
            Role::Assistant if !m.calls.is_empty() => ChatMessage {
                role: Role::Assistant,
                content: (!m.content.is_empty()).then(|| m.content.clone()),
                tool_calls: Some(m.calls.iter().map(ChatToolCall::from_call).collect()),
                tool_call_id: None,
            },
            Role::Tool => ChatMessage {
                role: Role::Tool,
                content: Some(m.content.clone()),
                tool_calls: None,
                tool_call_id: Some(m.call_id.clone().unwrap_or_default()),
            },
            role => ChatMessage { role, content: Some(m.content.clone()), tool_calls: None, tool_call_id: None },
        }
    }

    /// A model's reply as an assistant message.
    pub fn reply(text: &str, calls: &[ToolCall]) -> ChatMessage {
        ChatMessage::from_message(&Message::assistant(text, calls.to_vec()))
    }
}

/// A tool call in the OpenAI chat format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatToolCall {
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: ChatFunctionCall,
}

/// The function part of a [`ChatToolCall`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatFunctionCall {
    pub name: String,
    /// Raw JSON text, exactly as the model wrote it (it may be malformed).
    pub arguments: String,
}

impl ChatToolCall {
    fn from_call(c: &ToolCall) -> ChatToolCall {
        ChatToolCall {
            id: c.id.clone(),
            kind: "function".into(),
            function: ChatFunctionCall { name: c.name.clone(), arguments: c.arguments.clone() },
        }
    }
}

/// A tool offered to the model, in the OpenAI chat format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatTool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: ChatFunction,
}

/// The function part of a [`ChatTool`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatFunction {
    pub name: String,
    pub description: String,
    /// A JSON Schema.
    pub parameters: serde_json::Value,
}

impl ChatTool {
    /// The tool as [`crate::models::openai`] sends it.
    pub fn from_spec(t: &ToolSpec) -> ChatTool {
        ChatTool {
            kind: "function".into(),
            function: ChatFunction {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            },
        }
    }
}

/// One model call of a trajectory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The agent-loop step of the call.
    pub step: u32,
    /// Exactly what the model was sent: the system prompt first (when there
    /// is one), then the conversation as the processors left it.
    pub messages: Vec<ChatMessage>,
    /// The tools the model was offered.
    pub tools: Vec<ChatTool>,
    /// What the model answered, before after-model processors touched it.
    pub completion: ChatMessage,
    /// Tokens as the backend reported them.
    pub usage: Usage,
}

/// Which trajectory a line comes from: the fields every line format
/// starts with (flattened into the line's JSON object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// The group id: see the module docs.
    pub group: String,
    pub env: String,
    pub task: String,
    pub seed: u64,
    /// The harness id the trajectory ran under.
    pub harness: String,
    /// The model, as its backend describes itself.
    pub model: String,
    /// The trace's object id.
    pub trace: String,
    /// The task's score, in [0, 1].
    pub reward: f64,
}

/// One trajectory, in `grpo` format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrpoLine {
    #[serde(flatten)]
    pub trajectory: Trajectory,
    pub success: bool,
    /// How the task ended.
    pub end: EndReason,
    /// `(reward - group_mean) / (group_std + 1e-4)`; 0 when `flag` is set.
    pub advantage: f64,
    pub group_size: usize,
    pub group_mean: f64,
    pub group_std: f64,
    /// Why `advantage` is 0 for the whole group, if it is.
    pub flag: Option<Flag>,
    /// Every model call, in order.
    pub turns: Vec<Turn>,
}

/// One conversation of a successful trajectory, in `sft` format.
///
/// A conversation is a run of model calls where each call's context extends
/// the previous one's (same system prompt and tools, earlier messages kept).
/// `messages` is the context of the run's last call followed by the model's
/// reply to it. Without history-rewriting processors a trajectory is one
/// conversation; each compaction starts a new one, so no line ever holds a
/// history the model did not see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftLine {
    #[serde(flatten)]
    pub trajectory: Trajectory,
    /// This conversation's index among the trajectory's, from 0.
    pub part: usize,
    /// How many conversations the trajectory has.
    pub parts: usize,
    /// The steps of the model calls this conversation covers.
    pub steps: Vec<u32>,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ChatTool>,
}

/// A trace that could not be exported: which one, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TraceProblem {
    #[error("trace {trace} cannot be read from the store")]
    Read {
        trace: String,
        #[source]
        source: GetError,
    },
    #[error("trace {trace} is not a trace: {reason}")]
    Format { trace: String, reason: String },
    #[error("trace {trace} is incomplete: {why}")]
    Incomplete { trace: String, why: String },
    #[error("trace {trace} does not begin with a task-start event")]
    NoStart { trace: String },
    #[error("trace {trace} does not replay at event {index}: {reason}")]
    Fold { trace: String, index: usize, reason: String },
}

impl TraceProblem {
    /// The id of the trace the problem is about.
    pub fn trace(&self) -> &str {
        match self {
            TraceProblem::Read { trace, .. }
            | TraceProblem::Format { trace, .. }
            | TraceProblem::Incomplete { trace, .. }
            | TraceProblem::NoStart { trace }
            | TraceProblem::Fold { trace, .. } => trace,
        }
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the exported lines")]
    Write(#[source] io::Error),
    /// A trace read whole in the first pass could not be read in the second.
    #[error("trace {trace} changed while it was being exported; run the export again")]
    Changed {
        trace: String,
        #[source]
        source: Box<TraceProblem>,
    },
}

/// Hears how an export is going; every method does nothing by default.
pub trait Progress {
    /// The first pass has read `done` of `total` traces.
    fn on_read(&mut self, _done: usize, _total: usize) {}
    /// A trace is skipped; it is also counted in [`Summary::corrupt`].
    fn on_skip(&mut self, _problem: &TraceProblem) {}
    /// The second pass has written `done` of `total` trajectories.
    fn on_write(&mut self, _done: usize, _total: usize) {}
}

impl Progress for () {}

/// What an export did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Distinct traces looked at.
    pub traces: usize,
    /// Traces skipped as unreadable or damaged, each naming its trace.
    pub corrupt: Vec<TraceProblem>,
    /// Tasks that ended `errored` (infrastructure, not the model): left out.
    pub errored: usize,
    /// Tasks in which the model was never called: left out.
    pub without_model_calls: usize,
    /// Trajectories left out by `env` or `harness`.
    pub filtered: usize,
    /// sft: unsuccessful trajectories left out.
    pub unsuccessful: usize,
    /// Groups the remaining trajectories form.
    pub groups: usize,
    /// grpo: groups dropped for having fewer than `min_group` trajectories.
    pub small_groups: usize,
    /// grpo: groups dropped for carrying no signal (one trajectory, or all rewards equal).
    pub flat_groups: usize,
    /// Groups with at least one line written.
    pub groups_written: usize,
    /// Trajectories with at least one line written.
    pub trajectories: usize,
    /// Lines written.
    pub lines: usize,
}

/// Every trace in the store, in id order. An object is a trace when it is
/// gzip-compressed and its first event is a task-start; this is checked by
/// decompressing only the first bytes, so components and other large objects
/// cost one small read each.
pub fn store_traces(store: &Store) -> Result<Vec<ObjectId>, ListError> {
    let mut out = Vec::new();
    for id in store.list() {
        let id = id?;
        if looks_like_trace(&store.object_path(&id)) {
            out.push(id);
        }
    }
    Ok(out)
}

/// A trace's first bytes: gzip whose text starts with a task-start event
/// (serde writes the `event` tag first). Anything else fails to decompress
/// within its first few bytes.
fn looks_like_trace(path: &std::path::Path) -> bool {
    const HEAD: &[u8] = br#"{"event":"task-start""#;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut head = Vec::with_capacity(HEAD.len());
    let read = flate2::read::GzDecoder::new(io::BufReader::new(file)).take(HEAD.len() as u64).read_to_end(&mut head);
    read.is_ok() && head == HEAD
}

/// What the first pass keeps of a usable trace.
#[derive(Clone, Debug)]
struct Header {
    id: ObjectId,
    trace: String,
    group: String,
    env: String,
    task: String,
    seed: u64,
    harness: String,
    model: String,
    reward: f64,
    success: bool,
    end: EndReason,
    model_calls: usize,
}

impl Header {
    fn trajectory(&self) -> Trajectory {
        Trajectory {
            group: self.group.clone(),
            env: self.env.clone(),
            task: self.task.clone(),
            seed: self.seed,
            harness: self.harness.clone(),
            model: self.model.clone(),
            trace: self.trace.clone(),
            reward: self.reward,
        }
    }
}

/// The group id of (env, task, starting messages).
pub fn group_id(env: &str, task: &str, prompt: &[Message]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"kiln-grpo-group/1\0");
    h.update(env.as_bytes());
    h.update(b"\0");
    h.update(task.as_bytes());
    h.update(b"\0");
    h.update(&serde_json::to_vec(prompt).expect("messages serialize"));
    h.finalize().to_hex()[..GROUP_ID_LEN].to_string()
}

fn read_events(store: &Store, id: &ObjectId) -> Result<Vec<Event>, TraceProblem> {
    let trace = id.to_hex();
    let bytes = store.get(id).map_err(|source| TraceProblem::Read { trace: trace.clone(), source })?;
    let read = decode(&bytes).map_err(|e| TraceProblem::Format { trace: trace.clone(), reason: e.to_string() })?;
    if let Some(why) = read.truncated {
        return Err(TraceProblem::Incomplete { trace, why });
    }
    Ok(read.events)
}

/// The first pass over one trace: its header, after checking it folds.
fn header(id: &ObjectId, events: &[Event]) -> Result<Header, TraceProblem> {
    let trace = id.to_hex();
    let Some(Event::TaskStart { env, task, seed, harness, model, context, .. }) = events.first() else {
        return Err(TraceProblem::NoStart { trace });
    };
    let Some(Event::TaskEnd { reason, score, .. }) = events.last() else {
        return Err(TraceProblem::Incomplete { trace, why: "no task-end event".into() });
    };
    let mut fold = Fold::default();
    let mut model_calls = 0;
    for (i, e) in events.iter().enumerate() {
        fold.apply(e).map_err(|reason| TraceProblem::Fold { trace: trace.clone(), index: i + 1, reason })?;
        model_calls += matches!(e, Event::ModelCall { error: None, .. }) as usize;
    }
    Ok(Header {
        id: *id,
        group: group_id(env, task, &context.messages),
        trace,
        env: env.clone(),
        task: task.clone(),
        seed: *seed,
        harness: harness.clone(),
        model: model.clone(),
        reward: score.reward,
        success: score.success,
        end: *reason,
        model_calls,
    })
}

/// A model call with its context, in kiln's own types.
struct RawTurn {
    step: u32,
    system: String,
    messages: Vec<Message>,
    tools: Vec<ToolSpec>,
    text: String,
    calls: Vec<ToolCall>,
    usage: Usage,
}

impl RawTurn {
    fn context(&self) -> Vec<ChatMessage> {
        let mut out = Vec::with_capacity(self.messages.len() + 1);
        if !self.system.is_empty() {
            out.push(ChatMessage {
                role: Role::System,
                content: Some(self.system.clone()),
                tool_calls: None,
                tool_call_id: None,
            });
        }
        out.extend(self.messages.iter().map(ChatMessage::from_message));
        out
    }

    fn tools(&self) -> Vec<ChatTool> {
        self.tools.iter().map(ChatTool::from_spec).collect()
    }

    fn turn(&self) -> Turn {
        Turn {
            step: self.step,
            messages: self.context(),
            tools: self.tools(),
            completion: ChatMessage::reply(&self.text, &self.calls),
            usage: self.usage,
        }
    }

    /// Whether `next`'s context is this one's, grown: the same conversation.
    fn continued_by(&self, next: &RawTurn) -> bool {
        next.system == self.system && next.tools == self.tools && next.messages.starts_with(&self.messages)
    }
}

/// Every successful model call of a trace, with the context it was made on.
fn raw_turns(trace: &str, events: &[Event]) -> Result<Vec<RawTurn>, TraceProblem> {
    let mut fold = Fold::default();
    let mut turns = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Event::ModelCall { step, text, calls, usage, error: None, .. } = e {
            turns.push(RawTurn {
                step: *step,
                system: fold.ctx.system.clone(),
                messages: fold.ctx.messages.clone(),
                tools: fold.ctx.tools.clone(),
                text: text.clone(),
                calls: calls.clone(),
                usage: *usage,
            });
        }
        fold.apply(e).map_err(|reason| TraceProblem::Fold { trace: trace.to_string(), index: i + 1, reason })?;
    }
    Ok(turns)
}

/// Split turns into conversations: ranges of turns, each extending the last.
fn conversations(turns: &[RawTurn]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..turns.len() {
        if !turns[i - 1].continued_by(&turns[i]) {
            out.push(start..i);
            start = i;
        }
    }
    if start < turns.len() {
        out.push(start..turns.len());
    }
    out
}

/// Export the traces `ids` (in any order, repeats ignored) as JSON lines to
/// `out`. Damaged traces are skipped and named in the summary; only a write
/// failure, or a trace that changes between the two passes, stops the export.
pub fn export(
    store: &Store,
    ids: &[ObjectId],
    options: &Options,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<Summary, ExportError> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let mut summary = Summary { traces: ids.len(), ..Default::default() };

    // Pass 1: headers.
    let mut groups: BTreeMap<String, Vec<Header>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        match read_events(store, id).and_then(|events| header(id, &events)) {
            Err(problem) => {
                progress.on_skip(&problem);
                summary.corrupt.push(problem);
            }
            Ok(h) if h.end == EndReason::Errored => summary.errored += 1,
            Ok(h) if h.model_calls == 0 => summary.without_model_calls += 1,
            Ok(h) if !options.selects(&h) => summary.filtered += 1,
            Ok(h) => groups.entry(h.group.clone()).or_default().push(h),
        }
        progress.on_read(i + 1, ids.len());
    }
    summary.groups = groups.len();

    // Which trajectories get lines, in output order (ids are sorted, so each
    // group's members already are).
    let mut plan: Vec<(Header, GroupStats)> = Vec::new();
    for members in groups.into_values() {
        let rewards: Vec<f64> = members.iter().map(|h| h.reward).collect();
        let stats = GroupStats::of(&rewards);
        match options.format {
            Format::Grpo if members.len() < options.min_group => summary.small_groups += 1,
            Format::Grpo if stats.flag.is_some() && !options.keep_flat => summary.flat_groups += 1,
            Format::Grpo => plan.extend(members.into_iter().map(|h| (h, stats))),
            Format::Sft => {
                let (good, bad): (Vec<Header>, Vec<Header>) = members.into_iter().partition(|h| h.success);
                summary.unsuccessful += bad.len();
                plan.extend(good.into_iter().map(|h| (h, stats)));
            }
        }
    }

    // Pass 2: one trajectory at a time.
    let mut last_group: Option<String> = None;
    let mut line = Vec::new();
    for (n, (h, stats)) in plan.iter().enumerate() {
        let changed = |source| ExportError::Changed { trace: h.trace.clone(), source: Box::new(source) };
        let events = read_events(store, &h.id).map_err(changed)?;
        let turns = raw_turns(&h.trace, &events).map_err(changed)?;
        let mut written = 0;
        match options.format {
            Format::Grpo => {
                let record = GrpoLine {
                    trajectory: h.trajectory(),
                    success: h.success,
                    end: h.end,
                    advantage: stats.advantage(h.reward),
                    group_size: stats.size,
                    group_mean: stats.mean,
                    group_std: stats.std,
                    flag: stats.flag,
                    turns: turns.iter().map(RawTurn::turn).collect(),
                };
                write_line(out, &mut line, &record)?;
                written += 1;
            }
            Format::Sft => {
                let parts = conversations(&turns);
                for (part, range) in parts.iter().enumerate() {
                    let last = &turns[range.end - 1];
                    let mut messages = last.context();
                    messages.push(ChatMessage::reply(&last.text, &last.calls));
                    let record = SftLine {
                        trajectory: h.trajectory(),
                        part,
                        parts: parts.len(),
                        steps: turns[range.clone()].iter().map(|t| t.step).collect(),
                        messages,
                        tools: last.tools(),
                    };
                    write_line(out, &mut line, &record)?;
                    written += 1;
                }
            }
        }
        if written > 0 {
            summary.lines += written;
            summary.trajectories += 1;
            if last_group.as_deref() != Some(h.group.as_str()) {
                summary.groups_written += 1;
                last_group = Some(h.group.clone());
            }
        }
        progress.on_write(n + 1, plan.len());
    }
    out.flush().map_err(ExportError::Write)?;
    Ok(summary)
}

fn write_line<T: Serialize>(out: &mut dyn Write, buf: &mut Vec<u8>, record: &T) -> Result<(), ExportError> {
    buf.clear();
    serde_json::to_writer(&mut *buf, record).expect("export lines serialize");
    buf.push(b'\n');
    out.write_all(buf).map_err(ExportError::Write)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use serde_json::json;

    use super::*;
    use crate::agent::{run_task, Shape, TaskSpec};
    use crate::env::{Score, Split};
    use crate::models::openai::{OpenAi, OpenAiConfig};
    use crate::models::sim::Sim;
    use crate::models::{BoxFuture, Model, ModelError, ModelRequest, ModelResponse};
    use crate::sandbox::{Context, Edit, FailurePolicy, InstanceSpec, ProcessorSpec, Runtime, RuntimeConfig};
    use crate::trace::{Trace, SCHEMA};

    /// Wraps a model and keeps every request it answered, with the answer.
    struct Recording<M> {
        inner: M,
        calls: Mutex<Vec<(ModelRequest, ModelResponse)>>,
    }

    impl<M: Model> Model for Recording<M> {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
            Box::pin(async move {
                let reply = self.inner.complete(request).await;
                if let Ok(r) = &reply {
                    self.calls.lock().unwrap().push((request.clone(), r.clone()));
                }
                reply
            })
        }
    }

    /// A model whose endpoint is always down.
    struct Down;

    impl Model for Down {
        fn describe(&self) -> String {
            "down".into()
        }
        fn complete<'a>(&'a self, _: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
            Box::pin(std::future::ready(Err(ModelError::Unreachable {
                url: "http://127.0.0.1:9/v1".into(),
                reason: "connection refused".into(),
            })))
        }
    }

    /// One recorded task.
    struct Run {
        harness: String,
        bytes: Vec<u8>,
        id: ObjectId,
        calls: Vec<(ModelRequest, ModelResponse)>,
        score: Score,
    }

    fn harness_id(digit: char) -> String {
        std::iter::repeat_n(digit, 64).collect()
    }

    fn runtime() -> &'static Runtime {
        static RT: OnceLock<Runtime> = OnceLock::new();
        RT.get_or_init(|| Runtime::new(RuntimeConfig { pooling: false, ..Default::default() }).unwrap())
    }

    /// A stock processor's component: from `$KILN_GUEST_OUT` or `make
    /// guests`' output, else built from its crate.
    fn component(name: &str) -> Vec<u8> {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = Vec::new();
        if let Some(out) = std::env::var_os("KILN_GUEST_OUT").map(PathBuf::from) {
            dirs.push(out.clone());
            dirs.push(out.join("wasm32-wasip2/release"));
        }
        dirs.push(repo.join("target/guest/wasm32-wasip2/release"));
        dirs.iter()
            .find_map(|d| std::fs::read(d.join(&file)).ok())
            .or_else(|| {
                crate::build::build_processor(&repo.join("processors").join(name), &repo.join("target/guest")).ok()
            })
            .unwrap_or_else(|| panic!("{name} is neither built (make guests) nor buildable"))
    }

    fn processor(name: &str, config: serde_json::Value) -> ProcessorSpec {
        let loaded = runtime().load(&component(name)).unwrap_or_else(|e| panic!("load {name}: {e}"));
        ProcessorSpec {
            loaded,
            instance: InstanceSpec { config: config.to_string(), ..Default::default() },
            policy: FailurePolicy::Skip,
        }
    }

    /// 3 shop tasks x 3 seeds x 2 harnesses with `sim:weak`: a bare one, and
    /// one whose processors edit the context before the model sees it
    /// (goal-pin appends at before-model, history-compactor rewrites the
    /// history at step-start).
    fn runs() -> &'static [Run] {
        static RUNS: OnceLock<Vec<Run>> = OnceLock::new();
        RUNS.get_or_init(|| {
            let suite = crate::env::builtin("shop").unwrap();
            let tasks: Vec<String> = suite.tasks(Split::Test).into_iter().take(3).collect();
            let editing = vec![
                processor("goal-pin", json!({ "window": 2 })),
                processor("history-compactor", json!({ "max_messages": 6, "keep_recent": 3, "max_chars": 0 })),
            ];
            let harnesses =
                [(harness_id('a'), vec![], "Be brief."), (harness_id('b'), editing, "You are careful. Tools: {tools}")];
            let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mut runs = Vec::new();
            for (harness, processors, system) in &harnesses {
                for task in &tasks {
                    for seed in 1..=3 {
                        let model = Recording { inner: Sim::from_spec("sim:weak").unwrap(), calls: Mutex::default() };
                        let mut env = suite.make().unwrap();
                        let spec = TaskSpec {
                            env_name: "shop".into(),
                            task: task.clone(),
                            seed,
                            max_steps: Some(12),
                            harness_id: harness.clone(),
                            shape: Shape { system: system.to_string(), deny: vec![] },
                            processors: processors.clone(),
                            swaps: vec![],
                            deterministic: true,
                            mcp: vec![],
                        };
                        let (outcome, trace) = tokio.block_on(run_task(runtime(), &model, env.as_mut(), spec));
                        assert_ne!(outcome.reason, EndReason::Errored, "{:?}", outcome.detail);
                        let bytes = trace.encode();
                        runs.push(Run {
                            harness: harness.clone(),
                            id: ObjectId::of(&bytes),
                            bytes,
                            calls: model.calls.into_inner().unwrap(),
                            score: outcome.score,
                        });
                    }
                }
            }
            runs
        })
    }

    fn run_of(trace: &str) -> &'static Run {
        runs().iter().find(|r| r.id.to_hex() == trace).unwrap_or_else(|| panic!("no recorded run has trace {trace}"))
    }

    fn store_with(runs: &[Run]) -> (tempfile::TempDir, Store, Vec<ObjectId>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join(".kiln")).unwrap();
        let ids = runs.iter().map(|r| store.put(&r.bytes).unwrap()).collect();
        (dir, store, ids)
    }

    fn export_to_vec(store: &Store, ids: &[ObjectId], options: &Options) -> (Vec<u8>, Summary) {
        let mut out = Vec::new();
        let summary = export(store, ids, options, &mut out, &mut ()).unwrap();
        (out, summary)
    }

    fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// What `models::openai` would put on the wire for `request`: (messages, tools).
    fn wire(request: &ModelRequest) -> (serde_json::Value, serde_json::Value) {
        let body = OpenAi::with_api_key(OpenAiConfig::new("m", "http://127.0.0.1:9/v1"), None).unwrap().encode(request);
        (body["messages"].clone(), body.get("tools").cloned().unwrap_or(json!([])))
    }

    fn keep_all() -> Options {
        Options { keep_flat: true, ..Default::default() }
    }

    #[test]
    fn group_statistics_follow_the_documented_formula() {
        let s = GroupStats::of(&[0.0, 0.5, 1.0]);
        assert_eq!((s.size, s.mean, s.std, s.flag), (3, 0.5, 0.5, None));
        assert_eq!(s.advantage(1.0), 0.5 / (0.5 + ADVANTAGE_EPS));
        assert_eq!(s.advantage(0.5), 0.0);
        assert_eq!(s.advantage(0.0), -0.5 / (0.5 + ADVANTAGE_EPS));
        // Sample standard deviation: two rewards 0 and 1 give sqrt(1/2).
        let s = GroupStats::of(&[0.0, 1.0]);
        assert!((s.std - 0.5f64.sqrt()).abs() < 1e-15, "{}", s.std);
        let s = GroupStats::of(&[0.7]);
        assert_eq!((s.flag, s.advantage(0.7), s.mean), (Some(Flag::Single), 0.0, 0.7));
        let s = GroupStats::of(&[0.25, 0.25, 0.25]);
        assert_eq!((s.flag, s.std, s.advantage(0.25)), (Some(Flag::Flat), 0.0, 0.0));
    }

    #[test]
    fn every_turn_is_exactly_what_the_model_was_sent() {
        let (_dir, store, ids) = store_with(runs());
        let (out, summary) = export_to_vec(&store, &ids, &keep_all());
        let lines: Vec<GrpoLine> = parse(&out);
        assert_eq!((lines.len(), summary.lines, summary.trajectories), (runs().len(), runs().len(), runs().len()));
        let (mut pinned, mut compacted) = (false, false);
        for line in &lines {
            let run = run_of(&line.trajectory.trace);
            assert_eq!(line.turns.len(), run.calls.len(), "one turn per model call in {}", line.trajectory.trace);
            for (turn, (request, response)) in line.turns.iter().zip(&run.calls) {
                let (messages, tools) = wire(request);
                assert_eq!(
                    serde_json::to_value(&turn.messages).unwrap(),
                    messages,
                    "step {} of {}",
                    turn.step,
                    line.trajectory.trace
                );
                assert_eq!(serde_json::to_value(&turn.tools).unwrap(), tools);
                assert_eq!(turn.completion, ChatMessage::reply(&response.text, &response.calls));
                assert_eq!(turn.usage, response.usage);
                let said = |prefix: &str| request.messages.iter().any(|m| m.content.starts_with(prefix));
                pinned |= said("Goal (pinned): ");
                compacted |= said("[compacted ");
            }
        }
        assert!(pinned && compacted, "the editing harness must have pinned a goal ({pinned}) and compacted history ({compacted}) for this test to mean anything");
    }

    #[test]
    fn groups_span_seeds_and_harnesses_and_advantages_are_normalized_within_them() {
        let (_dir, store, ids) = store_with(runs());
        let (out, summary) = export_to_vec(&store, &ids, &keep_all());
        let lines: Vec<GrpoLine> = parse(&out);
        let keys: Vec<(&str, &str)> = lines.iter().map(|l| (l.trajectory.group.as_str(), l.trajectory.trace.as_str())).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted by group, then trace");
        let mut groups: BTreeMap<&str, Vec<&GrpoLine>> = BTreeMap::new();
        for l in &lines {
            groups.entry(&l.trajectory.group).or_default().push(l);
        }
        assert_eq!((groups.len(), summary.groups, summary.groups_written), (3, 3, 3), "one group per task");
        let mut with_signal = 0;
        for members in groups.values() {
            assert_eq!(members.len(), 6, "3 seeds x 2 harnesses");
            assert!(members
                .iter()
                .all(|l| l.trajectory.task == members[0].trajectory.task && l.trajectory.env == "shop" && l.trajectory.group.len() == GROUP_ID_LEN));
            let harnesses: std::collections::BTreeSet<&str> = members.iter().map(|l| l.trajectory.harness.as_str()).collect();
            assert_eq!(harnesses.len(), 2);
            let rewards: Vec<f64> = members.iter().map(|l| l.trajectory.reward).collect();
            let n = rewards.len() as f64;
            let mean = rewards.iter().sum::<f64>() / n;
            let std = (rewards.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / (n - 1.0)).sqrt();
            let flat = rewards.iter().all(|r| *r == rewards[0]);
            for l in members {
                assert_eq!(l.trajectory.reward, run_of(&l.trajectory.trace).score.reward, "the reward is the task's score");
                assert_eq!(l.success, run_of(&l.trajectory.trace).score.success);
                assert_eq!(l.group_size, 6);
                assert!((l.group_mean - mean).abs() < 1e-12 && (l.group_std - std).abs() < 1e-12);
                if flat {
                    assert_eq!((l.flag, l.advantage), (Some(Flag::Flat), 0.0));
                } else {
                    assert_eq!(l.flag, None);
                    assert!((l.advantage - (l.trajectory.reward - mean) / (std + ADVANTAGE_EPS)).abs() < 1e-12);
                }
            }
            if !flat {
                with_signal += 1;
                assert!(
                    members.iter().map(|l| l.advantage).sum::<f64>().abs() < 1e-9,
                    "advantages of a group sum to zero"
                );
            }
        }
        assert!(with_signal > 0, "sim:weak should vary on at least one task");
    }

    #[test]
    fn exports_are_byte_identical_whatever_the_input_order() {
        let (_dir, store, ids) = store_with(runs());
        let (first, _) = export_to_vec(&store, &ids, &keep_all());
        let mut shuffled: Vec<ObjectId> = ids.iter().rev().cloned().collect();
        shuffled.extend(ids.iter().take(4).cloned());
        let (second, _) = export_to_vec(&store, &shuffled, &keep_all());
        assert_eq!(first, second);
        let sft = Options { format: Format::Sft, ..Default::default() };
        assert_eq!(export_to_vec(&store, &ids, &sft).0, export_to_vec(&store, &shuffled, &sft).0);
    }

    #[test]
    fn flat_and_small_groups_are_dropped_and_filters_apply() {
        let (_dir, store, ids) = store_with(runs());
        let (all, _) = export_to_vec(&store, &ids, &keep_all());
        let all: Vec<GrpoLine> = parse(&all);
        let flat_groups: std::collections::BTreeSet<&str> =
            all.iter().filter(|l| l.flag.is_some()).map(|l| l.trajectory.group.as_str()).collect();

        let (out, summary) = export_to_vec(&store, &ids, &Options::default());
        let lines: Vec<GrpoLine> = parse(&out);
        assert!(lines.iter().all(|l| l.flag.is_none()), "no flat group by default");
        assert_eq!(lines.len(), all.iter().filter(|l| l.flag.is_none()).count());
        assert_eq!(summary.flat_groups, flat_groups.len());

        let (out, summary) =
            export_to_vec(&store, &ids, &Options { min_group: 7, keep_flat: true, ..Default::default() });
        assert!(out.is_empty());
        assert_eq!((summary.small_groups, summary.groups, summary.lines), (3, 3, 0));

        let (out, summary) = export_to_vec(&store, &ids, &Options { env: Some("house".into()), ..keep_all() });
        assert!(out.is_empty());
        assert_eq!(summary.filtered, runs().len());

        let (out, summary) = export_to_vec(&store, &ids, &Options { harness: Some("bbbb".into()), ..keep_all() });
        let lines: Vec<GrpoLine> = parse(&out);
        assert_eq!((lines.len(), summary.filtered), (9, 9));
        assert!(lines.iter().all(|l| l.trajectory.harness == harness_id('b') && l.group_size == 3));
    }

    #[test]
    fn sft_keeps_the_conversations_of_successful_trajectories() {
        let (_dir, store, ids) = store_with(runs());
        let (out, summary) = export_to_vec(&store, &ids, &Options { format: Format::Sft, ..Default::default() });
        let lines: Vec<SftLine> = parse(&out);
        let successes = runs().iter().filter(|r| r.score.success).count();
        assert!(successes > 0, "sim:weak should solve some shop tasks");
        assert_eq!((summary.trajectories, summary.unsuccessful), (successes, runs().len() - successes));
        let mut split = false;
        for line in &lines {
            let run = run_of(&line.trajectory.trace);
            assert!(run.score.success);
            // The conversation is the context of its last call, then the reply to it.
            let last = *line.steps.last().unwrap();
            let (request, response) =
                run.calls.iter().zip(raw_steps(run)).find(|(_, step)| *step == last).map(|(c, _)| c).unwrap();
            let (messages, tools) = wire(request);
            let (reply, context) = line.messages.split_last().unwrap();
            assert_eq!(serde_json::to_value(context).unwrap(), messages);
            assert_eq!(serde_json::to_value(&line.tools).unwrap(), tools);
            assert_eq!(*reply, ChatMessage::reply(&response.text, &response.calls));
            if run.harness == harness_id('a') {
                assert_eq!(
                    (line.part, line.parts, line.steps.len()),
                    (0, 1, run.calls.len()),
                    "without history edits a trajectory is one conversation"
                );
            }
            split |= line.parts > 1;
        }
        let parts: usize = lines.iter().filter(|l| l.part == 0).map(|l| l.parts).sum();
        assert_eq!(parts, lines.len());
        assert!(
            split,
            "a compacted successful trajectory must be split into conversations for this test to mean anything"
        );
    }

    /// The step of each model call of a run, from its trace.
    fn raw_steps(run: &Run) -> Vec<u32> {
        let events = decode(&run.bytes).unwrap().events;
        events
            .iter()
            .filter_map(|e| if let Event::ModelCall { step, error: None, .. } = e { Some(*step) } else { None })
            .collect()
    }

    #[derive(Default)]
    struct Seen {
        skipped: Vec<String>,
        read: Option<(usize, usize)>,
        written: Option<(usize, usize)>,
    }

    impl Progress for Seen {
        fn on_read(&mut self, done: usize, total: usize) {
            self.read = Some((done, total));
        }
        fn on_skip(&mut self, problem: &TraceProblem) {
            self.skipped.push(problem.to_string());
        }
        fn on_write(&mut self, done: usize, total: usize) {
            self.written = Some((done, total));
        }
    }

    #[test]
    fn corrupt_traces_are_named_skipped_and_counted() {
        let (_dir, store, ids) = store_with(runs());
        let (clean, _) = export_to_vec(&store, &ids, &keep_all());
        let events = decode(&runs()[10].bytes).unwrap().events;

        // Cut short: the second half of the gzip stream is gone.
        let bytes = &runs()[0].bytes;
        let truncated = store.put(&bytes[..bytes.len() / 2]).unwrap();
        // Damaged on disk after it was stored: its bytes no longer match its id.
        let mut other = events.clone();
        if let Event::TaskStart { seed, .. } = &mut other[0] {
            *seed = 99;
        }
        let damaged = store.put(&Trace { events: other }.encode()).unwrap();
        let path = store.object_path(&damaged);
        let mut on_disk = std::fs::read(&path).unwrap();
        let n = on_disk.len();
        on_disk[n - 12] ^= 0xff;
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).unwrap();
        std::fs::write(&path, &on_disk).unwrap();
        // Whole, but a recorded edit does not apply.
        let mut bad = events.clone();
        let call = bad
            .iter()
            .find_map(|e| if let Event::Call { step, report } = e { Some((*step, report.clone())) } else { None })
            .expect("the editing harness made hook calls");
        let (step, mut report) = call;
        report.edits = vec![Edit::Remove { index: 9999 }];
        let at = bad.len() - 1;
        bad.insert(at, Event::Call { step, report });
        let unfoldable = store.put(&Trace { events: bad }.encode()).unwrap();
        // Not traces at all.
        store.put(br#"{"format":"kiln-run/1"}"#).unwrap();
        store.put(&Trace::default().encode()).unwrap();

        let mut expected: Vec<ObjectId> = ids.iter().cloned().chain([truncated, damaged, unfoldable]).collect();
        expected.sort();
        let found = store_traces(&store).unwrap();
        assert_eq!(found, expected, "the store scan finds every trace, damaged or not, and nothing else");

        let mut seen = Seen::default();
        let mut out = Vec::new();
        let summary = export(&store, &found, &keep_all(), &mut out, &mut seen).unwrap();
        assert_eq!(out, clean, "damaged traces change nothing in what is exported");
        let named: Vec<&str> = summary.corrupt.iter().map(|p| p.trace()).collect();
        let mut want = [truncated.to_hex(), damaged.to_hex(), unfoldable.to_hex()];
        want.sort();
        assert_eq!(named, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(seen.skipped.len(), 3);
        assert_eq!(seen.read, Some((found.len(), found.len())));
        assert_eq!(seen.written, Some((runs().len(), runs().len())));
        let says = |id: &ObjectId, what: &str| {
            let m = seen.skipped.iter().find(|m| m.contains(&id.to_hex())).unwrap();
            assert!(m.contains(what), "{m}");
        };
        says(&truncated, "is incomplete");
        says(&damaged, "cannot be read");
        says(&unfoldable, "does not replay at event");
        let read = summary.corrupt.iter().find(|p| p.trace() == damaged.to_hex()).unwrap();
        let cause = std::error::Error::source(read).expect("the store's error is the cause").to_string();
        assert!(cause.contains(&damaged.to_hex()), "{cause}");
    }

    #[test]
    fn errored_tasks_and_tasks_without_model_calls_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join(".kiln")).unwrap();
        let suite = crate::env::builtin("shop").unwrap();
        let task = suite.tasks(Split::Test)[0].clone();
        let mut env = suite.make().unwrap();
        let spec = TaskSpec {
            env_name: "shop".into(),
            task: task.clone(),
            seed: 1,
            max_steps: Some(4),
            harness_id: harness_id('c'),
            shape: Shape::default(),
            processors: vec![],
            swaps: vec![],
            deterministic: true,
            mcp: vec![],
        };
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (outcome, trace) = tokio.block_on(run_task(runtime(), &Down, env.as_mut(), spec));
        assert_eq!(outcome.reason, EndReason::Errored);
        let errored = trace.save(&store).unwrap();
        let silent = Trace {
            events: vec![
                Event::TaskStart {
                    schema: SCHEMA,
                    env: "shop".into(),
                    task,
                    seed: 2,
                    harness: harness_id('c'),
                    model: "m".into(),
                    max_steps: 4,
                    context: Context::default(),
                    processors: vec![],
                },
                Event::TaskEnd {
                    steps: 0,
                    reason: EndReason::Interrupted,
                    detail: None,
                    score: Score::default(),
                    usage: Usage::default(),
                },
            ],
        };
        let silent = silent.save(&store).unwrap();
        let (out, summary) = export_to_vec(&store, &[errored, silent], &keep_all());
        assert!(out.is_empty());
        assert_eq!(
            (summary.traces, summary.errored, summary.without_model_calls, summary.groups, summary.corrupt.len()),
            (2, 1, 1, 0, 0)
        );
    }
}
