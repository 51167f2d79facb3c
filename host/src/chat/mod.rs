//! The conversation's plain data: messages, tool calls and tool specs.
//!
//! This is the bottom room. The sandbox lends these to processors as
//! resources, the model backends send them over the wire, the environments
//! describe their tools with them, and traces record them. They are plain
//! serde types with no behaviour beyond construction, so every room above can
//! share them without depending on one another.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call as the model wrote it. `arguments` is raw JSON text and may
/// be malformed; processors repair it, tools reject it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ToolCall>,
    /// For a tool message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into(), calls: Vec::new(), call_id: None }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Message { calls, ..Self::new(Role::Assistant, content) }
    }
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message { call_id: Some(call_id.into()), ..Self::new(Role::Tool, content) }
    }
}

/// A tool offered to the model. `parameters` is a JSON Schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

impl ToolSpec {
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: serde_json::Value) -> Self {
        ToolSpec { name: name.into(), description: description.into(), parameters }
    }
}
