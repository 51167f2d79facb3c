//! Plain Rust mirrors of the records, enums and variants of `kiln:harness/types`.
//!
//! They are owned, `Clone` and `Debug`, so processor code never touches the
//! generated bindings. On wasm the SDK converts them to and from the binding
//! types at the boundary (a field-by-field move, no copying of strings).

use std::fmt;

/// The eight lifecycle hooks, in the order a task meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Once, before the first step. May change the system prompt and the tool list.
    TaskStart,
    /// At the start of every step. May edit the history structurally.
    StepStart,
    /// Just before the model is called. May change the last user message and
    /// append at most one user message.
    BeforeModel,
    /// Just after the model answered. May rewrite the response text and its tool calls.
    AfterModel,
    /// Before each tool call. May change its arguments, deny it or answer it.
    BeforeTool,
    /// After each tool call. May change the tool result.
    AfterTool,
    /// At the end of every step. Read-only; may emit advice for the next step.
    StepEnd,
    /// Once, when the task is over. Read-only.
    TaskEnd,
}

impl Hook {
    /// All hooks, in lifecycle order.
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

    /// The WIT name of the hook, e.g. `"before-model"`.
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
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Hook {
    type Err = String;

    /// Parses a WIT hook name such as `"after-tool"`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Hook::ALL
            .into_iter()
            .find(|hook| hook.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Hook::ALL.iter().map(|h| h.name()).collect();
                format!(
                    "unknown hook `{text}`; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The system prompt (never a message of the conversation itself).
    System,
    /// The user, the environment, and advice or notes the harness adds.
    User,
    /// The model.
    Assistant,
    /// A tool result; carries the id of the call it answers.
    Tool,
}

impl Role {
    /// The WIT name of the role, e.g. `"assistant"`.
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tool call as the model wrote it. `arguments` is raw JSON text that may
/// be malformed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Call {
    /// The id that the tool message answering it carries.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON text (normally an object).
    pub arguments: String,
}

impl Call {
    /// A call from its three parts.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Call {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// Tool calls made by an assistant message (empty otherwise).
    pub calls: Vec<Call>,
    /// For a tool message: the id of the call it answers.
    pub call_id: Option<String>,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
            calls: Vec::new(),
            call_id: None,
        }
    }

    /// An assistant message without tool calls.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
            calls: Vec::new(),
            call_id: None,
        }
    }

    /// An assistant message that makes tool calls.
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<Call>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
            calls,
            call_id: None,
        }
    }

    /// A tool result answering the call with id `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: Role::Tool,
            content: content.into(),
            calls: Vec::new(),
            call_id: Some(call_id.into()),
        }
    }
}

/// A tool the model may call. `parameters` is a JSON Schema as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments, as text.
    pub parameters: String,
}

impl ToolSpec {
    /// A tool spec from its three parts.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: impl Into<String>,
    ) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters: parameters.into(),
        }
    }
}

/// What a processor decides at a hook.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Go on, with whatever edits the call made.
    #[default]
    Pass,
    /// Drop the event (the model response or the tool call); the reason is
    /// shown to the model as `[blocked by <processor>] <reason>`.
    Block(String),
    /// Stop the task; the reason is recorded.
    Interrupt(String),
}

impl Verdict {
    /// `Verdict::Block` with a reason.
    pub fn block(reason: impl Into<String>) -> Self {
        Verdict::Block(reason.into())
    }

    /// `Verdict::Interrupt` with a reason.
    pub fn interrupt(reason: impl Into<String>) -> Self {
        Verdict::Interrupt(reason.into())
    }

    /// True for `Verdict::Pass`.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

/// Coarse position of a processor within a hook's pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Band {
    /// Runs before the normal band.
    Pre,
    /// The default band.
    #[default]
    Normal,
    /// Runs after the normal band.
    Post,
}

/// What a processor says about itself; the host reads it once per component.
///
/// Build it with [`Info::new`] and the chained setters:
///
/// ```
/// use kiln_guest::{Band, Hook, Info};
/// let info = Info::new("loop-guard", "0.1.0")
///     .hooks([Hook::BeforeTool, Hook::AfterTool])
///     .group("loop-guard")
///     .band(Band::Pre);
/// assert_eq!(info.group.as_deref(), Some("loop-guard"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Stable name, e.g. `"loop-guard"`: used by `after` and in traces.
    pub name: String,
    /// Semantic version of the processor (not of the WIT).
    pub version: String,
    /// The hooks it wants to be called at; it is never called at others.
    pub hooks: Vec<Hook>,
    /// Singleton group: at most one processor per group in a harness.
    pub group: Option<String>,
    /// Coarse position within each hook's pipeline.
    pub band: Band,
    /// Soft ordering: run after these processors (by name) when present.
    pub after: Vec<String>,
}

impl Info {
    /// Info with a name and version, no hooks, no group, the normal band.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Info {
            name: name.into(),
            version: version.into(),
            hooks: Vec::new(),
            group: None,
            band: Band::Normal,
            after: Vec::new(),
        }
    }

    /// Sets the hooks the processor is called at.
    pub fn hooks(mut self, hooks: impl IntoIterator<Item = Hook>) -> Self {
        self.hooks = hooks.into_iter().collect();
        self
    }

    /// Puts the processor in a singleton group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the band.
    pub fn band(mut self, band: Band) -> Self {
        self.band = band;
        self
    }

    /// Adds a soft `after` dependency on the processor named `name`.
    pub fn after(mut self, name: impl Into<String>) -> Self {
        self.after.push(name.into());
        self
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Detail for debugging a processor.
    Debug,
    /// Normal operation worth recording.
    Info,
    /// Something odd that did not stop the processor.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// An edit the host refused without faulting the processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// The index does not name a message.
    OutOfRange(u32),
    /// The edit is well-formed for this hook but invalid (the text says why).
    Invalid(String),
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::OutOfRange(index) => write!(f, "message index {index} is out of range"),
            EditError::Invalid(why) => write!(f, "invalid edit: {why}"),
        }
    }
}

impl std::error::Error for EditError {}

/// A capability use the host refused or that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapError {
    /// The manifest grants no such access; the denial is in the trace.
    Denied(String),
    /// Access was granted but the operation failed.
    Failed(String),
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapError::Denied(why) => write!(f, "denied: {why}"),
            CapError::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl std::error::Error for CapError {}

/// Facts about the running task. None of them reveals the score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    /// The task's id within its environment.
    pub task_id: String,
    /// The current step, from 0.
    pub step: u32,
    /// The step budget of the task.
    pub max_steps: u32,
    /// The task seed (WASI randomness is already seeded from it).
    pub seed: u64,
    /// The hook being called.
    pub hook: Hook,
}

impl TaskFacts {
    /// Steps that remain after the current one: `max_steps - step - 1`, or 0.
    pub fn steps_left_after_this(&self) -> u32 {
        self.max_steps.saturating_sub(self.step.saturating_add(1))
    }
}
