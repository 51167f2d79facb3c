//! The native backend: an in-memory host, so processors unit-test with plain
//! `cargo test`. [`crate::testing::TestHost`] owns a [`FakeHost`] and makes it
//! the thread's current host for the length of each call it drives; outside
//! such a call the host functions act on a per-thread scratch host.
//!
//! The fake enforces the hook contracts of `wit/harness.wit` the way the real
//! host does, except that a violation panics (failing the test with a message
//! naming the method and hook) where the real host traps the call.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::types::{Call, CapError, EditError, Hook, Level, Message, Role, TaskFacts, ToolSpec};

/// Everything the fake host holds for one task.
#[derive(Debug)]
pub(crate) struct FakeHost {
    pub(crate) facts: TaskFacts,
    /// The hook being called, or `None` between calls and in lifecycle calls
    /// (configure, call-tool, ...).
    pub(crate) in_hook: Option<Hook>,
    pub(crate) system_prompt: String,
    pub(crate) messages: Vec<Message>,
    pub(crate) tools: Vec<ToolSpec>,
    pub(crate) hidden_tools: Vec<String>,
    pub(crate) response_text: String,
    pub(crate) response_calls: Vec<Call>,
    pub(crate) tool_call: Call,
    pub(crate) tool_response: Option<String>,
    pub(crate) tool_result: String,
    pub(crate) tool_result_is_error: bool,
    pub(crate) appended_this_call: bool,
    pub(crate) slots: BTreeMap<String, String>,
    pub(crate) advice: Option<String>,
    pub(crate) logs: Vec<(Level, String)>,
    pub(crate) files: BTreeMap<String, Vec<u8>>,
    pub(crate) urls: BTreeMap<String, String>,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            facts: TaskFacts {
                task_id: "test-task".to_owned(),
                step: 0,
                max_steps: 10,
                seed: 0,
                hook: Hook::TaskStart,
            },
            in_hook: None,
            system_prompt: String::new(),
            messages: Vec::new(),
            tools: Vec::new(),
            hidden_tools: Vec::new(),
            response_text: String::new(),
            response_calls: Vec::new(),
            tool_call: Call::default(),
            tool_response: None,
            tool_result: String::new(),
            tool_result_is_error: false,
            appended_this_call: false,
            slots: BTreeMap::new(),
            advice: None,
            logs: Vec::new(),
            files: BTreeMap::new(),
            urls: BTreeMap::new(),
        }
    }
}

impl FakeHost {
    /// Panics, like the real host traps, when `method` is called outside `allowed`.
    fn require(&self, method: &str, allowed: &[Hook]) {
        let allowed_names: Vec<&str> = allowed.iter().map(|hook| hook.name()).collect();
        match self.in_hook {
            Some(hook) if allowed.contains(&hook) => {}
            Some(hook) => panic!(
                "contract violation: `{method}` may only be called at {}, not at {hook}",
                allowed_names.join(" or ")
            ),
            None => panic!(
                "contract violation: `{method}` called outside a hook call (allowed at {})",
                allowed_names.join(" or ")
            ),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<FakeHost>>>> = const { RefCell::new(None) };
    static SCRATCH: Rc<RefCell<FakeHost>> = Rc::new(RefCell::new(FakeHost::default()));
}

/// Makes `host` the thread's current host until the guard drops.
pub(crate) fn enter(host: &Rc<RefCell<FakeHost>>) -> CurrentGuard {
    let previous = CURRENT.with(|current| current.replace(Some(Rc::clone(host))));
    CurrentGuard { previous }
}

/// Restores the previous current host on drop (also when a test panics).
pub(crate) struct CurrentGuard {
    previous: Option<Rc<RefCell<FakeHost>>>,
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

fn with_host<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    let host = CURRENT
        .with(|current| current.borrow().clone())
        .unwrap_or_else(|| SCRATCH.with(Rc::clone));
    let mut host = host.borrow_mut();
    f(&mut host)
}

fn check_index(index: u32, len: usize) -> Result<usize, EditError> {
    let at = index as usize;
    if at < len {
        Ok(at)
    } else {
        Err(EditError::OutOfRange(index))
    }
}

fn check_message(message: &Message) -> Result<(), EditError> {
    match message.role {
        Role::System => Err(EditError::Invalid(
            "a system message cannot join the conversation; the system prompt is set at task-start"
                .to_owned(),
        )),
        Role::Tool if message.call_id.is_none() => Err(EditError::Invalid(
            "a tool message needs the call-id of the call it answers".to_owned(),
        )),
        _ => Ok(()),
    }
}

pub(crate) struct Conversation<'a>(pub(crate) &'a RefCell<FakeHost>);

impl Conversation<'_> {
    pub(crate) fn len(&self) -> u32 {
        self.0.borrow().messages.len() as u32
    }
    pub(crate) fn get(&self, index: u32) -> Option<Message> {
        self.0.borrow().messages.get(index as usize).cloned()
    }
    pub(crate) fn last(&self) -> Option<Message> {
        self.0.borrow().messages.last().cloned()
    }
    pub(crate) fn role_of(&self, index: u32) -> Option<Role> {
        self.0.borrow().messages.get(index as usize).map(|m| m.role)
    }
    pub(crate) fn last_of(&self, role: Role) -> Option<u32> {
        self.0
            .borrow()
            .messages
            .iter()
            .rposition(|m| m.role == role)
            .map(|at| at as u32)
    }
    pub(crate) fn system_prompt(&self) -> String {
        self.0.borrow().system_prompt.clone()
    }
    pub(crate) fn set_system_prompt(&self, text: &str) {
        let mut host = self.0.borrow_mut();
        host.require("Conversation::set_system_prompt", &[Hook::TaskStart]);
        host.system_prompt = text.to_owned();
    }
    pub(crate) fn remove(&self, index: u32) -> Result<(), EditError> {
        let mut host = self.0.borrow_mut();
        host.require("Conversation::remove", &[Hook::StepStart]);
        let at = check_index(index, host.messages.len())?;
        host.messages.remove(at);
        Ok(())
    }
    pub(crate) fn insert(&self, index: u32, message: &Message) -> Result<(), EditError> {
        let mut host = self.0.borrow_mut();
        host.require("Conversation::insert", &[Hook::StepStart]);
        let at = check_index(index, host.messages.len() + 1)?;
        check_message(message)?;
        host.messages.insert(at, message.clone());
        Ok(())
    }
    pub(crate) fn replace(&self, index: u32, message: &Message) -> Result<(), EditError> {
        let mut host = self.0.borrow_mut();
        host.require("Conversation::replace", &[Hook::StepStart]);
        let at = check_index(index, host.messages.len())?;
        check_message(message)?;
        host.messages[at] = message.clone();
        Ok(())
    }
    pub(crate) fn set_last_user(&self, content: &str) -> Result<(), EditError> {
        let mut host = self.0.borrow_mut();
        host.require("Conversation::set_last_user", &[Hook::BeforeModel]);
        match host.messages.last_mut() {
            Some(last) if last.role == Role::User => {
                last.content = content.to_owned();
                Ok(())
            }
            Some(last) => Err(EditError::Invalid(format!(
                "the last message is a {} message, not a user message",
                last.role
            ))),
            None => Err(EditError::Invalid(
                "the conversation has no messages".to_owned(),
            )),
        }
    }
    pub(crate) fn append_user(&self, content: &str) -> Result<(), EditError> {
        let mut host = self.0.borrow_mut();
        host.require("Conversation::append_user", &[Hook::BeforeModel]);
        if host.appended_this_call {
            return Err(EditError::Invalid(
                "append-user may be called at most once per hook call".to_owned(),
            ));
        }
        host.appended_this_call = true;
        host.messages.push(Message::user(content));
        Ok(())
    }
}

pub(crate) struct Toolset<'a>(pub(crate) &'a RefCell<FakeHost>);

impl Toolset<'_> {
    pub(crate) fn all(&self) -> Vec<ToolSpec> {
        self.0.borrow().tools.clone()
    }
    pub(crate) fn hide(&self, name: &str) -> Result<(), EditError> {
        let mut host = self.0.borrow_mut();
        host.require("Toolset::hide", &[Hook::TaskStart]);
        let Some(at) = host.tools.iter().position(|tool| tool.name == name) else {
            return Err(EditError::Invalid(format!(
                "no tool named `{name}` to hide"
            )));
        };
        host.tools.remove(at);
        host.hidden_tools.push(name.to_owned());
        Ok(())
    }
}

pub(crate) struct Response<'a>(pub(crate) &'a RefCell<FakeHost>);

impl Response<'_> {
    pub(crate) fn text(&self) -> String {
        self.0.borrow().response_text.clone()
    }
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.0.borrow().response_calls.clone()
    }
    pub(crate) fn set_text(&self, text: &str) {
        let mut host = self.0.borrow_mut();
        host.require("Response::set_text", &[Hook::AfterModel]);
        host.response_text = text.to_owned();
    }
    pub(crate) fn set_calls(&self, calls: &[Call]) {
        let mut host = self.0.borrow_mut();
        host.require("Response::set_calls", &[Hook::AfterModel]);
        host.response_calls = calls.to_vec();
    }
}

pub(crate) struct ToolCall<'a>(pub(crate) &'a RefCell<FakeHost>);

impl ToolCall<'_> {
    pub(crate) fn get(&self) -> Call {
        self.0.borrow().tool_call.clone()
    }
    pub(crate) fn name(&self) -> String {
        self.0.borrow().tool_call.name.clone()
    }
    pub(crate) fn arguments(&self) -> String {
        self.0.borrow().tool_call.arguments.clone()
    }
    pub(crate) fn set_arguments(&self, arguments: &str) {
        let mut host = self.0.borrow_mut();
        host.require("ToolCall::set_arguments", &[Hook::BeforeTool]);
        host.tool_call.arguments = arguments.to_owned();
    }
    pub(crate) fn respond(&self, content: &str) {
        let mut host = self.0.borrow_mut();
        host.require("ToolCall::respond", &[Hook::BeforeTool]);
        host.tool_response = Some(content.to_owned());
    }
}

pub(crate) struct ToolResult<'a>(pub(crate) &'a RefCell<FakeHost>);

impl ToolResult<'_> {
    pub(crate) fn content(&self) -> String {
        self.0.borrow().tool_result.clone()
    }
    pub(crate) fn is_error(&self) -> bool {
        self.0.borrow().tool_result_is_error
    }
    pub(crate) fn set_content(&self, content: &str) {
        let mut host = self.0.borrow_mut();
        host.require("ToolResult::set_content", &[Hook::AfterTool]);
        host.tool_result = content.to_owned();
    }
}

pub(crate) fn log(level: Level, message: &str) {
    with_host(|host| host.logs.push((level, message.to_owned())))
}

pub(crate) fn task() -> TaskFacts {
    with_host(|host| host.facts.clone())
}

pub(crate) fn advise(text: &str) {
    with_host(|host| host.advice = Some(text.to_owned()))
}

pub(crate) fn slot_get(key: &str) -> Option<String> {
    with_host(|host| host.slots.get(key).cloned())
}

pub(crate) fn slot_set(key: &str, value: &str) {
    with_host(|host| {
        host.slots.insert(key.to_owned(), value.to_owned());
    })
}

pub(crate) fn slot_remove(key: &str) {
    with_host(|host| {
        host.slots.remove(key);
    })
}

pub(crate) fn read_file(path: &str) -> Result<Vec<u8>, CapError> {
    with_host(|host| {
        host.files.get(path).cloned().ok_or_else(|| {
            CapError::Denied(format!(
                "no read grant covers `{path}` (grant it with TestHost::grant_file)"
            ))
        })
    })
}

pub(crate) fn http_get(url: &str) -> Result<String, CapError> {
    with_host(|host| {
        host.urls.get(url).cloned().ok_or_else(|| {
            CapError::Denied(format!(
                "`{url}` is not on the network allowlist (grant it with TestHost::grant_url)"
            ))
        })
    })
}
