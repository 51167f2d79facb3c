//! An in-memory host for unit-testing processors natively.
//!
//! [`TestHost`] holds one task's state: the system prompt, the messages, the
//! tools, the task facts, the slots, the granted files and URLs. Build the
//! conversation with its builder methods, then drive a processor through a
//! hook with [`TestHost::before_model`], [`TestHost::after_model`], ... and
//! read back what it did: the messages, the advice of the last call, the log
//! lines, the slots, or the outcome struct a hook method returns.
//!
//! While a `TestHost` method runs, the crate's host functions ([`crate::log`],
//! [`crate::slots`], [`crate::advise`], ...) act on that host. The hook
//! contracts of the WIT are enforced: an edit the hook may not make panics
//! with a message naming the method and the hook (the real host traps).
//! Unlike the real host, edits are applied at once rather than at return.
//!
//! ```
//! use kiln_guest::testing::TestHost;
//! use kiln_guest::{Call, Message, Role};
//!
//! let mut host = TestHost::new();
//! host.user("Goal: buy shoes")
//!     .assistant_calls("", vec![Call::new("c1", "search", r#"{"q":"shoes"}"#)])
//!     .tool("c1", "3 results");
//! assert_eq!(host.messages().len(), 3);
//! assert_eq!(host.messages()[2].role, Role::Tool);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::backend;
use crate::backend::native::{self as fake, FakeHost};
use crate::context::{Conversation, Response, ToolCall, ToolResult, Toolset};
use crate::types::{Call, Hook, Level, Message, TaskFacts, ToolSpec, Verdict};
use crate::Processor;

/// One task's worth of fake host state; see the module docs.
pub struct TestHost {
    state: Rc<RefCell<FakeHost>>,
}

/// What an after-model call left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterModel {
    /// The processor's verdict.
    pub verdict: Verdict,
    /// The response text, possibly rewritten.
    pub text: String,
    /// The tool calls, possibly rewritten.
    pub calls: Vec<Call>,
}

/// What a before-tool call left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeforeTool {
    /// The processor's verdict.
    pub verdict: Verdict,
    /// The call, with its arguments possibly rewritten.
    pub call: Call,
    /// The answer the processor gave in place of the tool (`respond`), if any.
    pub response: Option<String>,
}

/// What an after-tool call left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterTool {
    /// The processor's verdict.
    pub verdict: Verdict,
    /// The tool result, possibly rewritten.
    pub content: String,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// An empty task: no messages, no tools, step 0 of 10, seed 0, task id `test-task`.
    pub fn new() -> Self {
        TestHost {
            state: Rc::new(RefCell::new(FakeHost::default())),
        }
    }

    // ----- building the task -----

    /// Sets the system prompt.
    pub fn system_prompt(&mut self, text: &str) -> &mut Self {
        self.state.borrow_mut().system_prompt = text.to_owned();
        self
    }

    /// Appends a message.
    pub fn push(&mut self, message: Message) -> &mut Self {
        self.state.borrow_mut().messages.push(message);
        self
    }

    /// Appends a user message.
    pub fn user(&mut self, content: &str) -> &mut Self {
        self.push(Message::user(content))
    }

    /// Appends an assistant message without tool calls.
    pub fn assistant(&mut self, content: &str) -> &mut Self {
        self.push(Message::assistant(content))
    }

    /// Appends an assistant message that makes `calls`.
    pub fn assistant_calls(&mut self, content: &str, calls: Vec<Call>) -> &mut Self {
        self.push(Message::assistant_calls(content, calls))
    }

    /// Appends a tool message answering the call `call_id`.
    pub fn tool(&mut self, call_id: &str, content: &str) -> &mut Self {
        self.push(Message::tool(call_id, content))
    }

    /// Sets the tools offered to the model.
    pub fn set_tools(&mut self, tools: Vec<ToolSpec>) -> &mut Self {
        self.state.borrow_mut().tools = tools;
        self
    }

    /// Sets the current step (from 0).
    pub fn set_step(&mut self, step: u32) -> &mut Self {
        self.state.borrow_mut().facts.step = step;
        self
    }

    /// Sets the step budget.
    pub fn set_max_steps(&mut self, max_steps: u32) -> &mut Self {
        self.state.borrow_mut().facts.max_steps = max_steps;
        self
    }

    /// Sets the task id.
    pub fn set_task_id(&mut self, task_id: &str) -> &mut Self {
        self.state.borrow_mut().facts.task_id = task_id.to_owned();
        self
    }

    /// Sets the task seed.
    pub fn set_seed(&mut self, seed: u64) -> &mut Self {
        self.state.borrow_mut().facts.seed = seed;
        self
    }

    /// Advances to the next step.
    pub fn next_step(&mut self) -> &mut Self {
        self.state.borrow_mut().facts.step += 1;
        self
    }

    /// Stores a slot value, as another processor would.
    pub fn set_slot(&mut self, key: &str, value: &str) -> &mut Self {
        self.state
            .borrow_mut()
            .slots
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Grants read access to a file with these contents.
    pub fn grant_file(&mut self, path: &str, contents: &[u8]) -> &mut Self {
        self.state
            .borrow_mut()
            .files
            .insert(path.to_owned(), contents.to_vec());
        self
    }

    /// Puts a URL on the allowlist, answering with `body`.
    pub fn grant_url(&mut self, url: &str, body: &str) -> &mut Self {
        self.state
            .borrow_mut()
            .urls
            .insert(url.to_owned(), body.to_owned());
        self
    }

    // ----- reading back -----

    /// The messages.
    pub fn messages(&self) -> Vec<Message> {
        self.state.borrow().messages.clone()
    }

    /// The system prompt.
    pub fn current_system_prompt(&self) -> String {
        self.state.borrow().system_prompt.clone()
    }

    /// The tools still visible to the model.
    pub fn tools(&self) -> Vec<ToolSpec> {
        self.state.borrow().tools.clone()
    }

    /// The names of the tools hidden at task-start, in the order hidden.
    pub fn hidden_tools(&self) -> Vec<String> {
        self.state.borrow().hidden_tools.clone()
    }

    /// The task facts as a processor would see them now.
    pub fn facts(&self) -> TaskFacts {
        self.state.borrow().facts.clone()
    }

    /// The advice of the last hook call, if it gave any.
    pub fn advice(&self) -> Option<String> {
        self.state.borrow().advice.clone()
    }

    /// The log lines so far, oldest first.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.state.borrow().logs.clone()
    }

    /// The value of a slot.
    pub fn slot(&self, key: &str) -> Option<String> {
        self.state.borrow().slots.get(key).cloned()
    }

    /// All slots.
    pub fn slots(&self) -> BTreeMap<String, String> {
        self.state.borrow().slots.clone()
    }

    // ----- driving a processor -----

    /// Runs `f` with this host as the thread's current host, inside `hook` if any.
    fn run<R>(&self, hook: Option<Hook>, f: impl FnOnce(&RefCell<FakeHost>) -> R) -> R {
        {
            let mut state = self.state.borrow_mut();
            state.in_hook = hook;
            if let Some(hook) = hook {
                state.facts.hook = hook;
                state.advice = None;
                state.appended_this_call = false;
            }
        }
        let _current = fake::enter(&self.state);
        let result = f(&self.state);
        self.state.borrow_mut().in_hook = None;
        result
    }

    /// Calls `configure`.
    pub fn configure<P: Processor>(&self, processor: &mut P, config: &str) -> Result<(), String> {
        self.run(None, |_| processor.configure(config))
    }

    /// Calls `save_state`.
    pub fn save_state<P: Processor>(&self, processor: &P) -> Vec<u8> {
        self.run(None, |_| processor.save_state())
    }

    /// Calls `load_state`.
    pub fn load_state<P: Processor>(&self, processor: &mut P, state: &[u8]) -> Result<(), String> {
        self.run(None, |_| processor.load_state(state))
    }

    /// Calls `list_tools`.
    pub fn list_tools<P: Processor>(&self, processor: &P) -> Vec<ToolSpec> {
        self.run(None, |_| processor.list_tools())
    }

    /// Calls `call_tool`.
    pub fn call_tool<P: Processor>(
        &self,
        processor: &mut P,
        name: &str,
        arguments: &str,
    ) -> Result<String, String> {
        self.run(None, |_| processor.call_tool(name, arguments))
    }

    /// Calls the task-start hook.
    pub fn task_start<P: Processor>(&mut self, processor: &mut P) -> Verdict {
        self.run(Some(Hook::TaskStart), |state| {
            let conv = Conversation(backend::Conversation(state));
            let tools = Toolset(backend::Toolset(state));
            processor.on_task_start(&conv, &tools)
        })
    }

    /// Calls the step-start hook.
    pub fn step_start<P: Processor>(&mut self, processor: &mut P) -> Verdict {
        self.run(Some(Hook::StepStart), |state| {
            processor.on_step_start(&Conversation(backend::Conversation(state)))
        })
    }

    /// Calls the before-model hook.
    pub fn before_model<P: Processor>(&mut self, processor: &mut P) -> Verdict {
        self.run(Some(Hook::BeforeModel), |state| {
            processor.on_before_model(&Conversation(backend::Conversation(state)))
        })
    }

    /// Calls the after-model hook on a response with `text` and `calls`.
    ///
    /// The response is not added to the conversation; push it yourself
    /// (e.g. with [`TestHost::assistant_calls`]) if later hooks should see it.
    pub fn after_model<P: Processor>(
        &mut self,
        processor: &mut P,
        text: &str,
        calls: Vec<Call>,
    ) -> AfterModel {
        {
            let mut state = self.state.borrow_mut();
            state.response_text = text.to_owned();
            state.response_calls = calls;
        }
        let verdict = self.run(Some(Hook::AfterModel), |state| {
            let conv = Conversation(backend::Conversation(state));
            let response = Response(backend::Response(state));
            processor.on_after_model(&conv, &response)
        });
        let state = self.state.borrow();
        AfterModel {
            verdict,
            text: state.response_text.clone(),
            calls: state.response_calls.clone(),
        }
    }

    /// Calls the before-tool hook on `call`.
    pub fn before_tool<P: Processor>(&mut self, processor: &mut P, call: Call) -> BeforeTool {
        {
            let mut state = self.state.borrow_mut();
            state.tool_call = call;
            state.tool_response = None;
        }
        let verdict = self.run(Some(Hook::BeforeTool), |state| {
            let conv = Conversation(backend::Conversation(state));
            let call = ToolCall(backend::ToolCall(state));
            processor.on_before_tool(&conv, &call)
        });
        let state = self.state.borrow();
        BeforeTool {
            verdict,
            call: state.tool_call.clone(),
            response: state.tool_response.clone(),
        }
    }

    /// Calls the after-tool hook on `call` and its result `content`.
    ///
    /// The result is not added to the conversation; push it yourself with
    /// [`TestHost::tool`] if later hooks should see it.
    pub fn after_tool<P: Processor>(
        &mut self,
        processor: &mut P,
        call: Call,
        content: &str,
        is_error: bool,
    ) -> AfterTool {
        {
            let mut state = self.state.borrow_mut();
            state.tool_call = call;
            state.tool_result = content.to_owned();
            state.tool_result_is_error = is_error;
        }
        let verdict = self.run(Some(Hook::AfterTool), |state| {
            let conv = Conversation(backend::Conversation(state));
            let call = ToolCall(backend::ToolCall(state));
            let result = ToolResult(backend::ToolResult(state));
            processor.on_after_tool(&conv, &call, &result)
        });
        AfterTool {
            verdict,
            content: self.state.borrow().tool_result.clone(),
        }
    }

    /// Calls the step-end hook.
    pub fn step_end<P: Processor>(&mut self, processor: &mut P) -> Verdict {
        self.run(Some(Hook::StepEnd), |state| {
            processor.on_step_end(&Conversation(backend::Conversation(state)))
        })
    }

    /// Calls the task-end hook.
    pub fn task_end<P: Processor>(&mut self, processor: &mut P) -> Verdict {
        self.run(Some(Hook::TaskEnd), |state| {
            processor.on_task_end(&Conversation(backend::Conversation(state)))
        })
    }
}
