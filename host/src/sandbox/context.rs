//! The host-owned context a hook call reads and edits, and the journal that
//! makes edits all-or-nothing.
//!
//! A hook call never receives a copy of the conversation. The [`Context`] is
//! moved (O(1)) into the processor's store for the duration of the call and
//! the guest reads it through resource methods. Each edit is applied in place
//! and journaled twice: an undo entry (to roll back if the call faults) and an
//! [`Edit`] record (for the trace and for replay diffs). Both cost what the
//! edit touched, never the size of the conversation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::chat::{Message, ToolCall, ToolSpec};

/// The eight lifecycle hooks, in the order a task meets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    TaskStart,
    StepStart,
    BeforeModel,
    AfterModel,
    BeforeTool,
    AfterTool,
    StepEnd,
    TaskEnd,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::TaskStart,
        Hook::StepStart,
        Hook::BeforeModel,
        Hook::AfterModel,
        Hook::BeforeTool,
        Hook::AfterTool,
        Hook::StepEnd,
        Hook::TaskEnd,
    ];

    /// The WIT name, e.g. `before-model`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::TaskStart => "task-start",
            Hook::StepStart => "step-start",
            Hook::BeforeModel => "before-model",
            Hook::AfterModel => "after-model",
            Hook::BeforeTool => "before-tool",
            Hook::AfterTool => "after-tool",
            Hook::StepEnd => "step-end",
            Hook::TaskEnd => "task-end",
        }
    }

    /// Parse a WIT name.
    pub fn parse(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The model's response as processors see it at after-model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub text: String,
    pub calls: Vec<ToolCall>,
}

/// A tool's result as processors see it at after-tool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOutcome {
    pub content: String,
    pub is_error: bool,
}

/// Everything a hook call can read. Owned by the agent loop between calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub system: String,
    pub messages: Vec<Message>,
    /// Tools offered to the model (hidden ones removed).
    pub tools: Vec<ToolSpec>,
    /// The response being processed (after-model on).
    pub reply: Option<Reply>,
    /// The tool call being processed (before-tool, after-tool).
    pub call: Option<ToolCall>,
    /// An answer a processor gave in place of running the tool (before-tool).
    pub answer: Option<String>,
    /// The tool's result (after-tool).
    pub outcome: Option<ToolOutcome>,
    /// The task's shared slots.
    pub slots: BTreeMap<String, String>,
}

/// One edit a hook call made, as recorded in the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Edit {
    SetSystemPrompt { text: String },
    Remove { index: u32 },
    Insert { index: u32, message: Message },
    Replace { index: u32, message: Message },
    SetLastUser { index: u32, content: String },
    AppendUser { content: String },
    HideTool { name: String },
    SetText { text: String },
    SetCalls { calls: Vec<ToolCall> },
    SetArguments { arguments: String },
    Respond { content: String },
    SetResult { content: String },
    SlotSet { key: String, value: String },
    SlotRemove { key: String },
    Advise { text: String },
}

/// How to take one edit back.
#[derive(Debug)]
pub(crate) enum Undo {
    System(String),
    Removed(usize, Message),
    Inserted(usize),
    Replaced(usize, Message),
    LastUser(usize, String),
    Appended,
    Hidden(usize, ToolSpec),
    Text(String),
    Calls(Vec<ToolCall>),
    Arguments(String),
    Answer(Option<String>),
    Outcome(String),
    Slot(String, Option<String>),
}

/// The journal of one hook call.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    pub undo: Vec<Undo>,
    pub edits: Vec<Edit>,
}

impl Journal {
    pub fn clear(&mut self) {
        self.undo.clear();
        self.edits.clear();
    }

    /// Take every journaled edit back, newest first.
    pub fn rollback(&mut self, ctx: &mut Context) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::System(s) => ctx.system = s,
                Undo::Removed(i, m) => ctx.messages.insert(i, m),
                Undo::Inserted(i) => {
                    ctx.messages.remove(i);
                }
                Undo::Replaced(i, m) => ctx.messages[i] = m,
                Undo::LastUser(i, c) => ctx.messages[i].content = c,
                Undo::Appended => {
                    ctx.messages.pop();
                }
                Undo::Hidden(i, t) => ctx.tools.insert(i, t),
                Undo::Text(t) => {
                    if let Some(r) = ctx.reply.as_mut() {
                        r.text = t
                    }
                }
                Undo::Calls(c) => {
                    if let Some(r) = ctx.reply.as_mut() {
                        r.calls = c
                    }
                }
                Undo::Arguments(a) => {
                    if let Some(c) = ctx.call.as_mut() {
                        c.arguments = a
                    }
                }
                Undo::Answer(a) => ctx.answer = a,
                Undo::Outcome(c) => {
                    if let Some(o) = ctx.outcome.as_mut() {
                        o.content = c
                    }
                }
                Undo::Slot(k, v) => match v {
                    Some(v) => {
                        ctx.slots.insert(k, v);
                    }
                    None => {
                        ctx.slots.remove(&k);
                    }
                },
            }
        }
        self.edits.clear();
    }
}

/// Apply `edits` (as recorded in a trace) to a context, outside any sandbox.
/// Replay and trace readers use this to rebuild what a hook call produced.
pub fn apply_edits(ctx: &mut Context, edits: &[Edit]) -> Result<(), String> {
    let bad = |what: &str| Err(format!("recorded edit does not apply: {what}"));
    for e in edits {
        match e {
            Edit::SetSystemPrompt { text } => ctx.system = text.clone(),
            Edit::Remove { index } => {
                if (*index as usize) >= ctx.messages.len() {
                    return bad("remove out of range");
                }
                ctx.messages.remove(*index as usize);
            }
            Edit::Insert { index, message } => {
                if (*index as usize) > ctx.messages.len() {
                    return bad("insert out of range");
                }
                ctx.messages.insert(*index as usize, message.clone())
            }
            Edit::Replace { index, message } => match ctx.messages.get_mut(*index as usize) {
                Some(m) => *m = message.clone(),
                None => return bad("replace out of range"),
            },
            Edit::SetLastUser { index, content } => match ctx.messages.get_mut(*index as usize) {
                Some(m) => m.content = content.clone(),
                None => return bad("set-last-user out of range"),
            },
            Edit::AppendUser { content } => ctx.messages.push(Message::user(content.clone())),
            Edit::HideTool { name } => ctx.tools.retain(|t| &t.name != name),
            Edit::SetText { text } => {
                if let Some(r) = ctx.reply.as_mut() {
                    r.text = text.clone()
                }
            }
            Edit::SetCalls { calls } => {
                if let Some(r) = ctx.reply.as_mut() {
                    r.calls = calls.clone()
                }
            }
            Edit::SetArguments { arguments } => {
                if let Some(c) = ctx.call.as_mut() {
                    c.arguments = arguments.clone()
                }
            }
            Edit::Respond { content } => ctx.answer = Some(content.clone()),
            Edit::SetResult { content } => {
                if let Some(o) = ctx.outcome.as_mut() {
                    o.content = content.clone()
                }
            }
            Edit::SlotSet { key, value } => {
                ctx.slots.insert(key.clone(), value.clone());
            }
            Edit::SlotRemove { key } => {
                ctx.slots.remove(key);
            }
            Edit::Advise { .. } => {}
        }
    }
    Ok(())
}
