//! The wasm backend: thin adapters from the SDK's plain types to the
//! generated bindings of `kiln:harness` (field moves, no re-parsing).

use crate::types::{Call, CapError, EditError, Hook, Level, Message, Role, TaskFacts, ToolSpec};
use crate::wit::kiln::harness::{capabilities, context, host, slots, types as w};

pub(crate) fn role_to_wit(role: Role) -> w::Role {
    match role {
        Role::System => w::Role::System,
        Role::User => w::Role::User,
        Role::Assistant => w::Role::Assistant,
        Role::Tool => w::Role::Tool,
    }
}

pub(crate) fn role_from_wit(role: w::Role) -> Role {
    match role {
        w::Role::System => Role::System,
        w::Role::User => Role::User,
        w::Role::Assistant => Role::Assistant,
        w::Role::Tool => Role::Tool,
    }
}

pub(crate) fn hook_to_wit(hook: Hook) -> w::Hook {
    match hook {
        Hook::TaskStart => w::Hook::TaskStart,
        Hook::StepStart => w::Hook::StepStart,
        Hook::BeforeModel => w::Hook::BeforeModel,
        Hook::AfterModel => w::Hook::AfterModel,
        Hook::BeforeTool => w::Hook::BeforeTool,
        Hook::AfterTool => w::Hook::AfterTool,
        Hook::StepEnd => w::Hook::StepEnd,
        Hook::TaskEnd => w::Hook::TaskEnd,
    }
}

pub(crate) fn hook_from_wit(hook: w::Hook) -> Hook {
    match hook {
        w::Hook::TaskStart => Hook::TaskStart,
        w::Hook::StepStart => Hook::StepStart,
        w::Hook::BeforeModel => Hook::BeforeModel,
        w::Hook::AfterModel => Hook::AfterModel,
        w::Hook::BeforeTool => Hook::BeforeTool,
        w::Hook::AfterTool => Hook::AfterTool,
        w::Hook::StepEnd => Hook::StepEnd,
        w::Hook::TaskEnd => Hook::TaskEnd,
    }
}

pub(crate) fn call_from_wit(call: w::Call) -> Call {
    Call {
        id: call.id,
        name: call.name,
        arguments: call.arguments,
    }
}

pub(crate) fn call_to_wit(call: &Call) -> w::Call {
    w::Call {
        id: call.id.clone(),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
    }
}

fn message_from_wit(message: w::Message) -> Message {
    Message {
        role: role_from_wit(message.role),
        content: message.content,
        calls: message.calls.into_iter().map(call_from_wit).collect(),
        call_id: message.call_id,
    }
}

fn message_to_wit(message: &Message) -> w::Message {
    w::Message {
        role: role_to_wit(message.role),
        content: message.content.clone(),
        calls: message.calls.iter().map(call_to_wit).collect(),
        call_id: message.call_id.clone(),
    }
}

pub(crate) fn tool_spec_from_wit(spec: w::ToolSpec) -> ToolSpec {
    ToolSpec {
        name: spec.name,
        description: spec.description,
        parameters: spec.parameters,
    }
}

pub(crate) fn tool_spec_to_wit(spec: ToolSpec) -> w::ToolSpec {
    w::ToolSpec {
        name: spec.name,
        description: spec.description,
        parameters: spec.parameters,
    }
}

fn edit_error_from_wit(error: w::EditError) -> EditError {
    match error {
        w::EditError::OutOfRange(index) => EditError::OutOfRange(index),
        w::EditError::Invalid(why) => EditError::Invalid(why),
    }
}

fn cap_error_from_wit(error: w::CapError) -> CapError {
    match error {
        w::CapError::Denied(why) => CapError::Denied(why),
        w::CapError::Failed(why) => CapError::Failed(why),
    }
}

pub(crate) struct Conversation<'a>(pub(crate) &'a context::Conversation);

impl Conversation<'_> {
    pub(crate) fn len(&self) -> u32 {
        self.0.len()
    }
    pub(crate) fn get(&self, index: u32) -> Option<Message> {
        self.0.get(index).map(message_from_wit)
    }
    pub(crate) fn last(&self) -> Option<Message> {
        self.0.last().map(message_from_wit)
    }
    pub(crate) fn role_of(&self, index: u32) -> Option<Role> {
        self.0.role_of(index).map(role_from_wit)
    }
    pub(crate) fn last_of(&self, role: Role) -> Option<u32> {
        self.0.last_of(role_to_wit(role))
    }
    pub(crate) fn system_prompt(&self) -> String {
        self.0.system_prompt()
    }
    pub(crate) fn set_system_prompt(&self, text: &str) {
        self.0.set_system_prompt(text)
    }
    pub(crate) fn remove(&self, index: u32) -> Result<(), EditError> {
        self.0.remove(index).map_err(edit_error_from_wit)
    }
    pub(crate) fn insert(&self, index: u32, message: &Message) -> Result<(), EditError> {
        self.0
            .insert(index, &message_to_wit(message))
            .map_err(edit_error_from_wit)
    }
    pub(crate) fn replace(&self, index: u32, message: &Message) -> Result<(), EditError> {
        self.0
            .replace(index, &message_to_wit(message))
            .map_err(edit_error_from_wit)
    }
    pub(crate) fn set_last_user(&self, content: &str) -> Result<(), EditError> {
        self.0.set_last_user(content).map_err(edit_error_from_wit)
    }
    pub(crate) fn append_user(&self, content: &str) -> Result<(), EditError> {
        self.0.append_user(content).map_err(edit_error_from_wit)
    }
}

pub(crate) struct Toolset<'a>(pub(crate) &'a context::Toolset);

impl Toolset<'_> {
    pub(crate) fn all(&self) -> Vec<ToolSpec> {
        self.0.all().into_iter().map(tool_spec_from_wit).collect()
    }
    pub(crate) fn hide(&self, name: &str) -> Result<(), EditError> {
        self.0.hide(name).map_err(edit_error_from_wit)
    }
}

pub(crate) struct Response<'a>(pub(crate) &'a context::Response);

impl Response<'_> {
    pub(crate) fn text(&self) -> String {
        self.0.text()
    }
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.0.calls().into_iter().map(call_from_wit).collect()
    }
    pub(crate) fn set_text(&self, text: &str) {
        self.0.set_text(text)
    }
    pub(crate) fn set_calls(&self, calls: &[Call]) {
        let calls: Vec<w::Call> = calls.iter().map(call_to_wit).collect();
        self.0.set_calls(&calls)
    }
}

pub(crate) struct ToolCall<'a>(pub(crate) &'a context::ToolCall);

impl ToolCall<'_> {
    pub(crate) fn get(&self) -> Call {
        call_from_wit(self.0.get())
    }
    pub(crate) fn name(&self) -> String {
        self.0.name()
    }
    pub(crate) fn arguments(&self) -> String {
        self.0.arguments()
    }
    pub(crate) fn set_arguments(&self, arguments: &str) {
        self.0.set_arguments(arguments)
    }
    pub(crate) fn respond(&self, content: &str) {
        self.0.respond(content)
    }
}

pub(crate) struct ToolResult<'a>(pub(crate) &'a context::ToolResult);

impl ToolResult<'_> {
    pub(crate) fn content(&self) -> String {
        self.0.content()
    }
    pub(crate) fn is_error(&self) -> bool {
        self.0.is_error()
    }
    pub(crate) fn set_content(&self, content: &str) {
        self.0.set_content(content)
    }
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => w::Level::Debug,
        Level::Info => w::Level::Info,
        Level::Warn => w::Level::Warn,
        Level::Error => w::Level::Error,
    };
    host::log(level, message)
}

pub(crate) fn task() -> TaskFacts {
    let facts = host::task();
    TaskFacts {
        task_id: facts.task_id,
        step: facts.step,
        max_steps: facts.max_steps,
        seed: facts.seed,
        hook: hook_from_wit(facts.hook),
    }
}

pub(crate) fn advise(text: &str) {
    host::advise(text)
}

pub(crate) fn slot_get(key: &str) -> Option<String> {
    slots::get(key)
}

pub(crate) fn slot_set(key: &str, value: &str) {
    slots::set(key, value)
}

pub(crate) fn slot_remove(key: &str) {
    slots::remove(key)
}

pub(crate) fn read_file(path: &str) -> Result<Vec<u8>, CapError> {
    capabilities::read_file(path).map_err(cap_error_from_wit)
}

pub(crate) fn http_get(url: &str) -> Result<String, CapError> {
    capabilities::http_get(url).map_err(cap_error_from_wit)
}
