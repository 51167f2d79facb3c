//! The data of one processor's store and the host side of every WIT import.
//!
//! Host functions check the hook contract before they touch anything: an
//! edit the current hook may not make traps the call with a
//! [`HostTrap::Contract`], which the sandbox reports as a `contract` fault.
//! Every host call counts against the call's host-call cap, and everything a
//! processor writes (edits, advice, slots) counts against its output cap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::kiln::harness::{capabilities, context, host, slots, types};
use super::context::{Context, Edit, Hook, Journal, ToolOutcome, Undo};
use super::limits::{Grants, Limits};
use crate::chat::{Message, Role, ToolCall, ToolSpec};

/// Why the host stopped a call from the inside.
#[derive(Debug, thiserror::Error)]
pub enum HostTrap {
    #[error("`{op}` is not allowed at {hook} (see the hook contracts in DESIGN.md)")]
    Contract { op: &'static str, hook: String },
    #[error("wrote {used} bytes, over its output cap of {cap} bytes")]
    Output { used: u64, cap: u64 },
    #[error("made more than {cap} host calls in one call")]
    HostCalls { cap: u64 },
}

/// Facts about the task, readable by processors through `host.task`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFacts {
    pub task_id: String,
    pub step: u32,
    pub max_steps: u32,
    pub seed: u64,
}

/// A virtual clock shared by the processors of one task; the host advances it.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    /// Nanoseconds since the task started.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, nanos: u64) {
        self.0.store(nanos, Ordering::Relaxed)
    }
}

/// 2026-01-01T00:00:00Z: what a processor's wall clock reads at virtual time 0.
const WALL_EPOCH_SECS: u64 = 1_767_225_600;

struct Wall(VirtualClock);
impl wasmtime_wasi::HostWallClock for Wall {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_secs(WALL_EPOCH_SECS) + std::time::Duration::from_nanos(self.0.now())
    }
}
struct Mono(VirtualClock);
impl wasmtime_wasi::HostMonotonicClock for Mono {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.now()
    }
}

/// An endless deterministic byte stream: blake3 in XOF mode, keyed by the seed.
struct SeededRng(blake3::OutputReader);
impl rand_core::TryRng for SeededRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst);
        Ok(())
    }
}

/// Severity of a processor's log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The data of one processor instance's store.
pub(crate) struct State {
    pub ctx: Context,
    pub journal: Journal,
    /// The hook being called; `None` during init and tool calls (read-only, no context).
    pub hook: Option<Hook>,
    pub facts: TaskFacts,
    pub advice: Option<String>,
    pub appended: bool,
    pub output: u64,
    pub host_calls: u64,
    pub limits: Limits,
    pub grants: Arc<Grants>,
    pub denials: Vec<String>,
    pub logs: Vec<(Level, String)>,
    pub memory_denied: bool,
    pub panic: Option<String>,
    /// Seed of this processor's randomness: blake3(task seed, processor id).
    pub rng_seed: [u8; 32],
    pub clock: VirtualClock,
    pub table: ResourceTable,
    /// Built on the first WASI call only: most processors never make one.
    pub wasi: Option<WasiCtx>,
}

impl State {
    pub fn new(limits: Limits, grants: Arc<Grants>, rng_seed: [u8; 32], clock: VirtualClock) -> Self {
        State {
            ctx: Context::default(),
            journal: Journal::default(),
            hook: None,
            facts: TaskFacts::default(),
            advice: None,
            appended: false,
            output: 0,
            host_calls: 0,
            limits,
            grants,
            denials: Vec::new(),
            logs: Vec::new(),
            memory_denied: false,
            panic: None,
            rng_seed,
            clock,
            table: ResourceTable::new(),
            wasi: None,
        }
    }

    /// Reset the per-call bookkeeping before a call.
    pub fn begin(&mut self, hook: Option<Hook>) {
        self.hook = hook;
        self.journal.clear();
        self.advice = None;
        self.appended = false;
        self.output = 0;
        self.host_calls = 0;
        self.denials.clear();
        self.logs.clear();
        self.memory_denied = false;
        self.panic = None;
    }

    fn tick(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.limits.host_calls {
            return Err(wasmtime::Error::new(HostTrap::HostCalls { cap: self.limits.host_calls }));
        }
        Ok(())
    }

    /// Count `bytes` against the output cap.
    pub fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.output += bytes as u64;
        if self.output > self.limits.output_bytes {
            return Err(wasmtime::Error::new(HostTrap::Output { used: self.output, cap: self.limits.output_bytes }));
        }
        Ok(())
    }

    /// Allow `op` only at `hooks`.
    fn allow(&mut self, op: &'static str, hooks: &[Hook]) -> wasmtime::Result<()> {
        self.tick()?;
        match self.hook {
            Some(h) if hooks.contains(&h) => Ok(()),
            h => Err(wasmtime::Error::new(HostTrap::Contract {
                op,
                hook: h.map_or("initialization".into(), |h| h.name().to_string()),
            })),
        }
    }

    fn record(&mut self, undo: Undo, edit: Edit) {
        self.journal.undo.push(undo);
        self.journal.edits.push(edit);
    }

    fn missing(&self, what: &'static str) -> wasmtime::Error {
        wasmtime::Error::new(HostTrap::Contract {
            op: what,
            hook: self.hook.map_or("initialization".into(), |h| h.name().to_string()),
        })
    }

    /// The tool call, for a reading method (counted as a host call).
    fn read_call(&mut self, method: &'static str) -> wasmtime::Result<&ToolCall> {
        self.tick()?;
        self.ctx.call.as_ref().ok_or_else(|| self.missing(method))
    }

    /// The tool's result, for a reading method (counted as a host call).
    fn read_outcome(&mut self, method: &'static str) -> wasmtime::Result<&ToolOutcome> {
        self.tick()?;
        self.ctx.outcome.as_ref().ok_or_else(|| self.missing(method))
    }
}

impl ResourceLimiter for State {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.limits.memory_bytes {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        if self.wasi.is_none() {
            let mut b = WasiCtx::builder();
            let mut key = self.rng_seed;
            b.secure_random(SeededRng(blake3::Hasher::new_keyed(&key).finalize_xof()));
            key[0] ^= 1;
            b.insecure_random(SeededRng(blake3::Hasher::new_keyed(&key).finalize_xof()));
            b.insecure_random_seed(u128::from_le_bytes(self.rng_seed[..16].try_into().unwrap()));
            b.wall_clock(Wall(self.clock.clone()));
            b.monotonic_clock(Mono(self.clock.clone()));
            for dir in &self.grants.read {
                // A grant that cannot be opened is reported when the harness loads;
                // here it is simply not visible.
                let _ = b.preopened_dir(dir, dir.to_string_lossy(), wasmtime_wasi::FsPerms::ReadOnly);
            }
            self.wasi = Some(b.build());
        }
        WasiCtxView { ctx: self.wasi.as_mut().unwrap(), table: &mut self.table }
    }
}

// ---- conversions between WIT types and chat types ----

pub(crate) fn role_to_wit(r: Role) -> types::Role {
    match r {
        Role::System => types::Role::System,
        Role::User => types::Role::User,
        Role::Assistant => types::Role::Assistant,
        Role::Tool => types::Role::Tool,
    }
}
pub(crate) fn role_from_wit(r: types::Role) -> Role {
    match r {
        types::Role::System => Role::System,
        types::Role::User => Role::User,
        types::Role::Assistant => Role::Assistant,
        types::Role::Tool => Role::Tool,
    }
}
pub(crate) fn call_to_wit(c: &ToolCall) -> types::Call {
    types::Call { id: c.id.clone(), name: c.name.clone(), arguments: c.arguments.clone() }
}
pub(crate) fn call_from_wit(c: types::Call) -> ToolCall {
    ToolCall { id: c.id, name: c.name, arguments: c.arguments }
}
fn message_to_wit(m: &Message) -> types::Message {
    types::Message {
        role: role_to_wit(m.role),
        content: m.content.clone(),
        calls: m.calls.iter().map(call_to_wit).collect(),
        call_id: m.call_id.clone(),
    }
}
fn message_from_wit(m: types::Message) -> Message {
    Message {
        role: role_from_wit(m.role),
        content: m.content,
        calls: m.calls.into_iter().map(call_from_wit).collect(),
        call_id: m.call_id,
    }
}
pub(crate) fn spec_to_wit(t: &ToolSpec) -> types::ToolSpec {
    types::ToolSpec { name: t.name.clone(), description: t.description.clone(), parameters: t.parameters.to_string() }
}
/// A message a processor may put into the history: not a system message (the
/// system prompt is not part of the history), and a tool message answers a call.
fn check_message(m: &types::Message) -> Result<(), EditError> {
    match m.role {
        types::Role::System => Err(EditError::Invalid("the system prompt is not a history message; set it at task-start".into())),
        types::Role::Tool if m.call_id.is_none() => Err(EditError::Invalid("a tool message needs the call-id of the call it answers".into())),
        _ => Ok(()),
    }
}

fn message_bytes(m: &types::Message) -> usize {
    m.content.len() + m.calls.iter().map(|c| c.id.len() + c.name.len() + c.arguments.len()).sum::<usize>()
}

use context::{Conversation, Response, ToolCall as WitToolCall, ToolResult, Toolset};
use types::EditError;

impl types::Host for State {}
impl context::Host for State {}

impl context::HostConversation for State {
    fn len(&mut self, _: Resource<Conversation>) -> wasmtime::Result<u32> {
        self.tick()?;
        Ok(self.ctx.messages.len() as u32)
    }
    fn get(&mut self, _: Resource<Conversation>, index: u32) -> wasmtime::Result<Option<types::Message>> {
        self.tick()?;
        Ok(self.ctx.messages.get(index as usize).map(message_to_wit))
    }
    fn last(&mut self, _: Resource<Conversation>) -> wasmtime::Result<Option<types::Message>> {
        self.tick()?;
        Ok(self.ctx.messages.last().map(message_to_wit))
    }
    fn role_of(&mut self, _: Resource<Conversation>, index: u32) -> wasmtime::Result<Option<types::Role>> {
        self.tick()?;
        Ok(self.ctx.messages.get(index as usize).map(|m| role_to_wit(m.role)))
    }
    fn last_of(&mut self, _: Resource<Conversation>, role: types::Role) -> wasmtime::Result<Option<u32>> {
        self.tick()?;
        let role = role_from_wit(role);
        Ok(self.ctx.messages.iter().rposition(|m| m.role == role).map(|i| i as u32))
    }
    fn system_prompt(&mut self, _: Resource<Conversation>) -> wasmtime::Result<String> {
        self.tick()?;
        Ok(self.ctx.system.clone())
    }
    fn set_system_prompt(&mut self, _: Resource<Conversation>, text: String) -> wasmtime::Result<()> {
        self.allow("conversation.set-system-prompt", &[Hook::TaskStart])?;
        self.charge(text.len())?;
        let old = std::mem::replace(&mut self.ctx.system, text.clone());
        self.record(Undo::System(old), Edit::SetSystemPrompt { text });
        Ok(())
    }
    fn remove(&mut self, _: Resource<Conversation>, index: u32) -> wasmtime::Result<Result<(), EditError>> {
        self.allow("conversation.remove", &[Hook::StepStart])?;
        if index as usize >= self.ctx.messages.len() {
            return Ok(Err(EditError::OutOfRange(index)));
        }
        let old = self.ctx.messages.remove(index as usize);
        self.record(Undo::Removed(index as usize, old), Edit::Remove { index });
        Ok(Ok(()))
    }
    fn insert(&mut self, _: Resource<Conversation>, index: u32, msg: types::Message) -> wasmtime::Result<Result<(), EditError>> {
        self.allow("conversation.insert", &[Hook::StepStart])?;
        self.charge(message_bytes(&msg))?;
        if index as usize > self.ctx.messages.len() {
            return Ok(Err(EditError::OutOfRange(index)));
        }
        if let Err(e) = check_message(&msg) {
            return Ok(Err(e));
        }
        let message = message_from_wit(msg);
        self.ctx.messages.insert(index as usize, message.clone());
        self.record(Undo::Inserted(index as usize), Edit::Insert { index, message });
        Ok(Ok(()))
    }
    fn replace(&mut self, _: Resource<Conversation>, index: u32, msg: types::Message) -> wasmtime::Result<Result<(), EditError>> {
        self.allow("conversation.replace", &[Hook::StepStart])?;
        self.charge(message_bytes(&msg))?;
        if let Err(e) = check_message(&msg) {
            return Ok(Err(e));
        }
        let Some(slot) = self.ctx.messages.get_mut(index as usize) else {
            return Ok(Err(EditError::OutOfRange(index)));
        };
        let message = message_from_wit(msg);
        let old = std::mem::replace(slot, message.clone());
        self.record(Undo::Replaced(index as usize, old), Edit::Replace { index, message });
        Ok(Ok(()))
    }
    fn set_last_user(&mut self, _: Resource<Conversation>, content: String) -> wasmtime::Result<Result<(), EditError>> {
        self.allow("conversation.set-last-user", &[Hook::BeforeModel])?;
        self.charge(content.len())?;
        let Some(index) = self.ctx.messages.len().checked_sub(1) else {
            return Ok(Err(EditError::Invalid("the conversation is empty".into())));
        };
        let last = &mut self.ctx.messages[index];
        if last.role != Role::User {
            return Ok(Err(EditError::Invalid("the last message is not a user message".into())));
        }
        let old = std::mem::replace(&mut last.content, content.clone());
        self.record(Undo::LastUser(index, old), Edit::SetLastUser { index: index as u32, content });
        Ok(Ok(()))
    }
    fn append_user(&mut self, _: Resource<Conversation>, content: String) -> wasmtime::Result<Result<(), EditError>> {
        self.allow("conversation.append-user", &[Hook::BeforeModel])?;
        self.charge(content.len())?;
        if self.appended {
            return Ok(Err(EditError::Invalid("append-user may be called once per hook call".into())));
        }
        self.appended = true;
        self.ctx.messages.push(Message::user(content.clone()));
        self.record(Undo::Appended, Edit::AppendUser { content });
        Ok(Ok(()))
    }
    fn drop(&mut self, _: Resource<Conversation>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl context::HostToolset for State {
    fn all(&mut self, _: Resource<Toolset>) -> wasmtime::Result<Vec<types::ToolSpec>> {
        self.tick()?;
        Ok(self.ctx.tools.iter().map(spec_to_wit).collect())
    }
    fn hide(&mut self, _: Resource<Toolset>, name: String) -> wasmtime::Result<Result<(), EditError>> {
        self.allow("toolset.hide", &[Hook::TaskStart])?;
        let Some(i) = self.ctx.tools.iter().position(|t| t.name == name) else {
            return Ok(Err(EditError::Invalid(format!("no tool named `{name}`"))));
        };
        let old = self.ctx.tools.remove(i);
        self.record(Undo::Hidden(i, old), Edit::HideTool { name });
        Ok(Ok(()))
    }
    fn drop(&mut self, _: Resource<Toolset>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl context::HostResponse for State {
    fn text(&mut self, _: Resource<Response>) -> wasmtime::Result<String> {
        self.tick()?;
        let r = self.ctx.reply.as_ref().ok_or_else(|| self.missing("response.text"))?;
        Ok(r.text.clone())
    }
    fn calls(&mut self, _: Resource<Response>) -> wasmtime::Result<Vec<types::Call>> {
        self.tick()?;
        let r = self.ctx.reply.as_ref().ok_or_else(|| self.missing("response.calls"))?;
        Ok(r.calls.iter().map(call_to_wit).collect())
    }
    fn set_text(&mut self, _: Resource<Response>, text: String) -> wasmtime::Result<()> {
        self.allow("response.set-text", &[Hook::AfterModel])?;
        self.charge(text.len())?;
        let Some(r) = self.ctx.reply.as_mut() else { return Err(self.missing("response.set-text")) };
        let old = std::mem::replace(&mut r.text, text.clone());
        self.record(Undo::Text(old), Edit::SetText { text });
        Ok(())
    }
    fn set_calls(&mut self, _: Resource<Response>, calls: Vec<types::Call>) -> wasmtime::Result<()> {
        self.allow("response.set-calls", &[Hook::AfterModel])?;
        self.charge(calls.iter().map(|c| c.id.len() + c.name.len() + c.arguments.len()).sum())?;
        let calls: Vec<ToolCall> = calls.into_iter().map(call_from_wit).collect();
        let Some(r) = self.ctx.reply.as_mut() else { return Err(self.missing("response.set-calls")) };
        let old = std::mem::replace(&mut r.calls, calls.clone());
        self.record(Undo::Calls(old), Edit::SetCalls { calls });
        Ok(())
    }
    fn drop(&mut self, _: Resource<Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl context::HostToolCall for State {
    fn get(&mut self, _: Resource<WitToolCall>) -> wasmtime::Result<types::Call> {
        self.read_call("tool-call.get").map(call_to_wit)
    }
    fn name(&mut self, _: Resource<WitToolCall>) -> wasmtime::Result<String> {
        self.read_call("tool-call.name").map(|c| c.name.clone())
    }
    fn arguments(&mut self, _: Resource<WitToolCall>) -> wasmtime::Result<String> {
        self.read_call("tool-call.arguments").map(|c| c.arguments.clone())
    }
    fn set_arguments(&mut self, _: Resource<WitToolCall>, arguments: String) -> wasmtime::Result<()> {
        self.allow("tool-call.set-arguments", &[Hook::BeforeTool])?;
        self.charge(arguments.len())?;
        let Some(c) = self.ctx.call.as_mut() else { return Err(self.missing("tool-call.set-arguments")) };
        let old = std::mem::replace(&mut c.arguments, arguments.clone());
        self.record(Undo::Arguments(old), Edit::SetArguments { arguments });
        Ok(())
    }
    fn respond(&mut self, _: Resource<WitToolCall>, content: String) -> wasmtime::Result<()> {
        self.allow("tool-call.respond", &[Hook::BeforeTool])?;
        self.charge(content.len())?;
        let old = self.ctx.answer.replace(content.clone());
        self.record(Undo::Answer(old), Edit::Respond { content });
        Ok(())
    }
    fn drop(&mut self, _: Resource<WitToolCall>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl context::HostToolResult for State {
    fn content(&mut self, _: Resource<ToolResult>) -> wasmtime::Result<String> {
        self.read_outcome("tool-result.content").map(|o| o.content.clone())
    }
    fn is_error(&mut self, _: Resource<ToolResult>) -> wasmtime::Result<bool> {
        self.read_outcome("tool-result.is-error").map(|o| o.is_error)
    }
    fn set_content(&mut self, _: Resource<ToolResult>, content: String) -> wasmtime::Result<()> {
        self.allow("tool-result.set-content", &[Hook::AfterTool])?;
        self.charge(content.len())?;
        let Some(o) = self.ctx.outcome.as_mut() else { return Err(self.missing("tool-result.set-content")) };
        let old = std::mem::replace(&mut o.content, content.clone());
        self.record(Undo::Outcome(old), Edit::SetResult { content });
        Ok(())
    }
    fn drop(&mut self, _: Resource<ToolResult>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl host::Host for State {
    fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        self.tick()?;
        self.charge(message.len())?;
        let level = match level {
            types::Level::Debug => Level::Debug,
            types::Level::Info => Level::Info,
            types::Level::Warn => Level::Warn,
            types::Level::Error => Level::Error,
        };
        if level == Level::Error {
            if let Some(p) = message.strip_prefix("panic: ") {
                self.panic = Some(p.to_string());
            }
        }
        self.logs.push((level, message));
        Ok(())
    }
    fn task(&mut self) -> wasmtime::Result<host::TaskFacts> {
        self.tick()?;
        let hook = match self.hook.unwrap_or(Hook::TaskStart) {
            Hook::TaskStart => types::Hook::TaskStart,
            Hook::StepStart => types::Hook::StepStart,
            Hook::BeforeModel => types::Hook::BeforeModel,
            Hook::AfterModel => types::Hook::AfterModel,
            Hook::BeforeTool => types::Hook::BeforeTool,
            Hook::AfterTool => types::Hook::AfterTool,
            Hook::StepEnd => types::Hook::StepEnd,
            Hook::TaskEnd => types::Hook::TaskEnd,
        };
        Ok(host::TaskFacts {
            task_id: self.facts.task_id.clone(),
            step: self.facts.step,
            max_steps: self.facts.max_steps,
            seed: self.facts.seed,
            hook,
        })
    }
    fn advise(&mut self, text: String) -> wasmtime::Result<()> {
        self.tick()?;
        self.charge(text.len())?;
        self.advice = Some(text);
        Ok(())
    }
}

impl slots::Host for State {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.tick()?;
        Ok(self.ctx.slots.get(&key).cloned())
    }
    fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.tick()?;
        if self.hook.is_none() {
            return Err(self.missing("slots.set"));
        }
        self.charge(key.len() + value.len())?;
        let old = self.ctx.slots.insert(key.clone(), value.clone());
        self.record(Undo::Slot(key.clone(), old), Edit::SlotSet { key, value });
        Ok(())
    }
    fn remove(&mut self, key: String) -> wasmtime::Result<()> {
        self.tick()?;
        if self.hook.is_none() {
            return Err(self.missing("slots.remove"));
        }
        if let Some(old) = self.ctx.slots.remove(&key) {
            self.record(Undo::Slot(key.clone(), Some(old)), Edit::SlotRemove { key });
        }
        Ok(())
    }
}

impl capabilities::Host for State {
    fn read_file(&mut self, path: String) -> wasmtime::Result<Result<Vec<u8>, types::CapError>> {
        self.tick()?;
        let p = std::path::Path::new(&path);
        let Some((dir, rel)) = self.grants.read.iter().find_map(|d| p.strip_prefix(d).ok().map(|r| (d.clone(), r.to_path_buf()))) else {
            let why = format!("read-file `{path}`: no read grant covers this path");
            self.denials.push(why.clone());
            return Ok(Err(types::CapError::Denied(why)));
        };
        // cap-std refuses `..` and symlinks that leave the granted directory.
        let result = cap_std::fs::Dir::open_ambient_dir(&dir, cap_std::ambient_authority()).and_then(|d| d.read(&rel));
        match result {
            Ok(bytes) => {
                if bytes.len() as u64 > self.limits.output_bytes.max(1 << 20) * 16 {
                    return Ok(Err(types::CapError::Failed(format!("`{path}` is too large"))));
                }
                Ok(Ok(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let why = format!("read-file `{path}`: escapes the granted directory {}", dir.display());
                self.denials.push(why.clone());
                Ok(Err(types::CapError::Denied(why)))
            }
            Err(e) => Ok(Err(types::CapError::Failed(format!("read-file `{path}`: {e}")))),
        }
    }

    fn http_get(&mut self, url: String) -> wasmtime::Result<Result<String, types::CapError>> {
        self.tick()?;
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .unwrap_or("")
            .rsplit('@')
            .next()
            .unwrap_or("")
            .to_string();
        let bare = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
        let allowed = self.grants.net.iter().any(|g| g == &host || g == bare);
        if host.is_empty() || !allowed {
            let why = format!("http-get `{url}`: host `{host}` is not on this processor's network allowlist");
            self.denials.push(why.clone());
            return Ok(Err(types::CapError::Denied(why)));
        }
        // Neither fuel nor epochs interrupt a host call: bound it here.
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_millis(self.limits.deadline_ms.max(1000))))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let cap = self.limits.output_bytes;
        match agent.get(&url).call() {
            Ok(mut resp) => {
                let status = resp.status();
                match resp.body_mut().with_config().limit(cap).read_to_string() {
                    Ok(body) if status.is_success() => Ok(Ok(body)),
                    Ok(body) => Ok(Err(types::CapError::Failed(format!("http-get `{url}`: HTTP {status}: {body}")))),
                    Err(e) => Ok(Err(types::CapError::Failed(format!("http-get `{url}`: {e}")))),
                }
            }
            Err(e) => Ok(Err(types::CapError::Failed(format!("http-get `{url}`: {e}")))),
        }
    }
}
