//! The host-owned objects a hook call reads and edits.
//!
//! Each wrapper lends access to one resource of `kiln:harness/context` for the
//! length of a hook call. Every method is one host call whose cost follows
//! what it touches (reading message 7 costs the size of message 7, not of the
//! conversation), so prefer `role_of`, `last_of` and `get` over reading
//! everything. Edits are buffered by the host and committed only when the
//! hook returns normally. An edit the current hook may not make (see the
//! method docs) traps the call as a `contract` fault.
//!
//! Natively (`cargo test`) the same wrappers are backed by the in-memory fake
//! in [`crate::testing`], which enforces the same hook contracts by panicking.

use crate::backend;
use crate::types::{Call, EditError, Message, Role, ToolSpec};

/// The conversation so far, as the model will see it. The system prompt is
/// not one of its messages.
pub struct Conversation<'a>(pub(crate) backend::Conversation<'a>);

impl Conversation<'_> {
    /// Number of messages. O(1).
    pub fn len(&self) -> u32 {
        self.0.len()
    }

    /// True when there are no messages.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Message `index`, or `None` past the end. O(size of that message).
    pub fn get(&self, index: u32) -> Option<Message> {
        self.0.get(index)
    }

    /// The last message, if any. One host call (cheaper than `len` + `get`).
    pub fn last(&self) -> Option<Message> {
        self.0.last()
    }

    /// The role of message `index`. O(1).
    pub fn role_of(&self, index: u32) -> Option<Role> {
        self.0.role_of(index)
    }

    /// Index of the last message with `role`, searching backwards. Cost
    /// follows the distance searched.
    pub fn last_of(&self, role: Role) -> Option<u32> {
        self.0.last_of(role)
    }

    /// The system prompt.
    pub fn system_prompt(&self) -> String {
        self.0.system_prompt()
    }

    /// Replaces the system prompt. task-start only.
    pub fn set_system_prompt(&self, text: &str) {
        self.0.set_system_prompt(text)
    }

    /// Removes message `index`. step-start only.
    pub fn remove(&self, index: u32) -> Result<(), EditError> {
        self.0.remove(index)
    }

    /// Inserts `message` before `index` (`len()` appends). step-start only.
    pub fn insert(&self, index: u32, message: &Message) -> Result<(), EditError> {
        self.0.insert(index, message)
    }

    /// Replaces message `index` (e.g. with a summary). step-start only.
    pub fn replace(&self, index: u32, message: &Message) -> Result<(), EditError> {
        self.0.replace(index, message)
    }

    /// Replaces the text of the last message, which must be a user message.
    /// before-model only.
    pub fn set_last_user(&self, content: &str) -> Result<(), EditError> {
        self.0.set_last_user(content)
    }

    /// Appends one user message. before-model only, at most once per call.
    pub fn append_user(&self, content: &str) -> Result<(), EditError> {
        self.0.append_user(content)
    }
}

/// The tools offered to the model. Readable everywhere; editable at task-start.
pub struct Toolset<'a>(pub(crate) backend::Toolset<'a>);

impl Toolset<'_> {
    /// The tools, in registry order.
    pub fn all(&self) -> Vec<ToolSpec> {
        self.0.all()
    }

    /// The tool names, in registry order.
    pub fn names(&self) -> Vec<String> {
        self.all().into_iter().map(|tool| tool.name).collect()
    }

    /// Hides a tool from the model for this task. task-start only.
    pub fn hide(&self, name: &str) -> Result<(), EditError> {
        self.0.hide(name)
    }
}

/// The model's latest response. Editable at after-model.
pub struct Response<'a>(pub(crate) backend::Response<'a>);

impl Response<'_> {
    /// The response text.
    pub fn text(&self) -> String {
        self.0.text()
    }

    /// The tool calls, in the order the model made them.
    pub fn calls(&self) -> Vec<Call> {
        self.0.calls()
    }

    /// Rewrites the text. after-model only.
    pub fn set_text(&self, text: &str) {
        self.0.set_text(text)
    }

    /// Replaces the tool calls (repair, rewrite, split). after-model only.
    pub fn set_calls(&self, calls: &[Call]) {
        self.0.set_calls(calls)
    }
}

/// The tool call being made, at before-tool and after-tool.
pub struct ToolCall<'a>(pub(crate) backend::ToolCall<'a>);

impl ToolCall<'_> {
    /// The call: id, tool name and arguments.
    pub fn get(&self) -> Call {
        self.0.get()
    }

    /// Just the tool's name: one string crosses instead of the whole call
    /// (what a processor wants when it only asks which tool ran).
    pub fn name(&self) -> String {
        self.0.name()
    }

    /// Just the arguments (JSON text, as the model wrote them).
    pub fn arguments(&self) -> String {
        self.0.arguments()
    }

    /// Rewrites the arguments (JSON text). before-tool only.
    pub fn set_arguments(&self, arguments: &str) {
        self.0.set_arguments(arguments)
    }

    /// Answers the call without running the tool: `content` becomes the tool
    /// result. before-tool only.
    pub fn respond(&self, content: &str) {
        self.0.respond(content)
    }
}

/// The result of the tool call, at after-tool.
pub struct ToolResult<'a>(pub(crate) backend::ToolResult<'a>);

impl ToolResult<'_> {
    /// The result text.
    pub fn content(&self) -> String {
        self.0.content()
    }

    /// True when the tool reported an error.
    pub fn is_error(&self) -> bool {
        self.0.is_error()
    }

    /// Replaces the result text. after-tool only.
    pub fn set_content(&self, content: &str) {
        self.0.set_content(content)
    }
}
