//! One live processor: its store, its bindings, and every call made into it
//! under limits.
//!
//! A call moves the task's [`Context`] into the store (O(1)), sets fuel and
//! the epoch deadline, calls the export, and moves the context back. If the
//! call returns normally its journal is committed; otherwise the journal is
//! rolled back and the fault classified. After a trap the instance is thrown
//! away and rebuilt (and reconfigured) before its next call: a trapped
//! component instance may not be entered again.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;
use wasmtime::{Store, Trap};

use super::bindings::kiln::harness::types as wit;
use super::bindings::Processor;
use super::context::{Context, Edit, Hook};
use super::limits::{Grants, Limits};
use super::runtime::{ComponentId, Loaded, Runtime, TICK_MS};
use super::state::{HostTrap, Level, State, TaskFacts, VirtualClock};
use crate::chat::ToolSpec;

/// What a processor decided at a hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Block(String),
    Interrupt(String),
}

/// What went wrong in a faulted call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Ran out of fuel.
    Fuel,
    /// Passed its wall-clock deadline.
    Deadline,
    /// Tried to grow its memory past its cap.
    Memory,
    /// Overflowed its stack (usually unbounded recursion).
    Stack,
    /// Wrote more than its output cap.
    Output,
    /// Made more host calls than its cap allows.
    HostCalls,
    /// Made an edit its hook may not make.
    Contract,
    /// Panicked (Rust guests report the message before trapping).
    Panic,
    /// Any other trap (unreachable, bad memory access, ...).
    Trap,
    /// Refused its configuration.
    Config,
    /// Could not be instantiated (e.g. the instance pool is full).
    Instantiate,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Fuel => "fuel",
            FaultKind::Deadline => "deadline",
            FaultKind::Memory => "memory",
            FaultKind::Stack => "stack",
            FaultKind::Output => "output",
            FaultKind::HostCalls => "host-calls",
            FaultKind::Contract => "contract",
            FaultKind::Panic => "panic",
            FaultKind::Trap => "trap",
            FaultKind::Config => "config",
            FaultKind::Instantiate => "instantiate",
        }
    }
}

/// A fault with its cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} fault: {}", self.kind.name(), self.message)
    }
}

/// Classify why a call into a guest failed.
pub(crate) fn classify(e: &wasmtime::Error, state: &State) -> Fault {
    let message = format!("{e}");
    if let Some(h) = e.downcast_ref::<HostTrap>() {
        let kind = match h {
            HostTrap::Contract { .. } => FaultKind::Contract,
            HostTrap::Output { .. } => FaultKind::Output,
            HostTrap::HostCalls { .. } => FaultKind::HostCalls,
        };
        return Fault { kind, message: h.to_string() };
    }
    let trap = e.downcast_ref::<Trap>().copied();
    let kind = match trap {
        Some(Trap::OutOfFuel) => FaultKind::Fuel,
        Some(Trap::Interrupt) => FaultKind::Deadline,
        Some(Trap::StackOverflow) => FaultKind::Stack,
        _ if state.memory_denied => FaultKind::Memory,
        _ if state.panic.is_some() => FaultKind::Panic,
        _ if message.contains("pool") && message.contains("limit") => FaultKind::Instantiate,
        _ => FaultKind::Trap,
    };
    let message = match kind {
        FaultKind::Fuel => format!("ran out of fuel ({} per call)", state.limits.fuel),
        FaultKind::Deadline => "passed its deadline".to_string(),
        FaultKind::Memory => format!("tried to grow its memory past its cap of {} bytes", state.limits.memory_bytes),
        FaultKind::Stack => "overflowed its stack".to_string(),
        FaultKind::Panic => format!("panicked: {}", state.panic.as_deref().unwrap_or("")),
        _ => format!("{e:#}"),
    };
    Fault { kind, message }
}

/// Everything one hook call did, for the trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallReport {
    /// The processor's name (from `describe`). Shared, not copied: a report is
    /// made for every call, and the hot path should not allocate for it.
    pub processor: Arc<str>,
    /// The component's id (blake3 hex), shared like `processor`.
    pub component: ComponentId,
    pub hook: Hook,
    pub nanos: u64,
    pub fuel: u64,
    /// `None` when the call faulted.
    pub verdict: Option<Verdict>,
    /// Committed edits (empty when the call faulted).
    pub edits: Vec<Edit>,
    pub fault: Option<Fault>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<(Level, String)>,
    /// Capability uses the host refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<String>,
}

impl CallReport {
    /// Advice the call left for the next step, if any.
    pub fn advice(&self) -> Option<&str> {
        self.edits.iter().rev().find_map(|e| match e {
            Edit::Advise { text } => Some(text.as_str()),
            _ => None,
        })
    }
}

/// How to configure one processor instance.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// JSON config handed to `configure`.
    pub config: String,
    pub limits: Limits,
    pub grants: Arc<Grants>,
}

impl Default for InstanceSpec {
    fn default() -> Self {
        InstanceSpec { config: "{}".into(), limits: Limits::default(), grants: Arc::new(Grants::default()) }
    }
}

/// A live processor within one task.
pub struct Instance {
    rt: Runtime,
    loaded: Arc<Loaded>,
    spec: InstanceSpec,
    rng_seed: [u8; 32],
    clock: VirtualClock,
    store: Store<State>,
    bindings: Processor,
    /// The instance trapped and must be rebuilt before its next call.
    poisoned: bool,
    tools: Vec<ToolSpec>,
}

impl Instance {
    /// Instantiate and configure. `task_seed` and the component id seed its randomness.
    pub fn new(rt: &Runtime, loaded: Arc<Loaded>, spec: InstanceSpec, task_seed: u64, clock: VirtualClock) -> Result<Instance, Fault> {
        let mut h = blake3::Hasher::new();
        h.update(&task_seed.to_le_bytes()).update(loaded.id.as_bytes());
        let rng_seed = *h.finalize().as_bytes();
        let (store, bindings, tools) = Self::build(rt, &loaded, &spec, rng_seed, clock.clone())?;
        Ok(Instance { rt: rt.clone(), loaded, spec, rng_seed, clock, store, bindings, poisoned: false, tools })
    }

    fn build(
        rt: &Runtime,
        loaded: &Loaded,
        spec: &InstanceSpec,
        rng_seed: [u8; 32],
        clock: VirtualClock,
    ) -> Result<(Store<State>, Processor, Vec<ToolSpec>), Fault> {
        let mut store = rt.store(&spec.limits, spec.grants.clone(), rng_seed, clock);
        if rt.fuel_enabled() {
            store.set_fuel(spec.limits.init_fuel).ok();
        }
        store.set_epoch_deadline(spec.limits.init_deadline_ms / TICK_MS + 1);
        store.data_mut().begin(None);
        let bindings = loaded.pre.instantiate(&mut store).map_err(|e| {
            let mut f = classify(&e, store.data());
            if f.kind == FaultKind::Trap && format!("{e:#}").contains("limit") {
                f = Fault { kind: FaultKind::Instantiate, message: format!("{e:#}; hint: the runtime's instance pool is full: it must hold tasks at once × processors per task (RuntimeConfig::max_instances; `kiln run` sizes it from -j)") };
            }
            f
        })?;
        let hooks = bindings.kiln_harness_hooks();
        match hooks.call_configure(&mut store, &spec.config) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(Fault { kind: FaultKind::Config, message: format!("{} rejected its config: {msg}", loaded.info.name) }),
            Err(e) => return Err(classify(&e, store.data())),
        }
        let tools = hooks.call_list_tools(&mut store).map_err(|e| classify(&e, store.data()))?;
        let tools = tools
            .into_iter()
            .map(|t| {
                let parameters = serde_json::from_str(&t.parameters).unwrap_or(serde_json::json!({"type": "object"}));
                ToolSpec { name: t.name, description: t.description, parameters }
            })
            .collect();
        Ok((store, bindings, tools))
    }

    pub fn loaded(&self) -> &Arc<Loaded> {
        &self.loaded
    }
    pub fn name(&self) -> &str {
        &self.loaded.info.name
    }
    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }
    /// Tools this processor provides.
    pub fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }
    /// Whether it wants to be called at `hook`.
    pub fn wants(&self, hook: Hook) -> bool {
        self.loaded.info.hooks.contains(&hook)
    }

    fn revive(&mut self) -> Result<(), Fault> {
        if self.poisoned {
            let (store, bindings, tools) = Self::build(&self.rt, &self.loaded, &self.spec, self.rng_seed, self.clock.clone())?;
            self.store = store;
            self.bindings = bindings;
            self.tools = tools;
            self.poisoned = false;
        }
        Ok(())
    }

    fn arm(&mut self, hook: Option<Hook>) {
        if self.rt.fuel_enabled() {
            self.store.set_fuel(self.spec.limits.fuel).ok();
        }
        self.store.set_epoch_deadline(self.spec.limits.deadline_ms / TICK_MS + 1);
        self.store.data_mut().begin(hook);
    }

    fn fuel_used(&self) -> u64 {
        if self.rt.fuel_enabled() {
            self.spec.limits.fuel.saturating_sub(self.store.get_fuel().unwrap_or(0))
        } else {
            0
        }
    }

    /// Call the processor at `hook` on `ctx`. Edits are committed to `ctx`
    /// only if the call returns normally.
    pub fn call_hook(&mut self, hook: Hook, ctx: &mut Context, facts: &TaskFacts) -> CallReport {
        let start = Instant::now();
        let mut report = CallReport {
            processor: self.loaded.report_name.clone(),
            component: self.loaded.id.clone(),
            hook,
            nanos: 0,
            fuel: 0,
            verdict: None,
            edits: Vec::new(),
            fault: None,
            logs: Vec::new(),
            denials: Vec::new(),
        };
        if let Err(f) = self.revive() {
            report.fault = Some(f);
            report.nanos = start.elapsed().as_nanos() as u64;
            return report;
        }
        self.arm(Some(hook));
        let state = self.store.data_mut();
        // Swapped in and back out: the store holds an empty context between
        // calls, so neither swap builds or drops one.
        std::mem::swap(ctx, &mut state.ctx);
        if state.facts != *facts {
            state.facts = facts.clone();
        }
        let result = self.dispatch(hook);
        let trapped = result.is_err();
        report.fuel = self.fuel_used();
        let state = self.store.data_mut();
        let result = result.and_then(|v| {
            let reason_len = match &v {
                wit::Verdict::Pass => 0,
                wit::Verdict::Block(r) | wit::Verdict::Interrupt(r) => r.len(),
            };
            state.charge(reason_len).map(|_| v)
        });
        match result {
            Ok(v) => {
                if let Some(text) = state.advice.take() {
                    state.journal.edits.push(Edit::Advise { text });
                }
                report.edits = std::mem::take(&mut state.journal.edits);
                state.journal.undo.clear();
                report.verdict = Some(match v {
                    wit::Verdict::Pass => Verdict::Pass,
                    wit::Verdict::Block(r) => Verdict::Block(r),
                    wit::Verdict::Interrupt(r) => Verdict::Interrupt(r),
                });
            }
            Err(e) => {
                report.fault = Some(classify(&e, state));
                let mut journal = std::mem::take(&mut state.journal);
                journal.rollback(&mut state.ctx);
                state.journal = journal;
                // A verdict refused for its size came from a call that returned
                // normally: the instance is intact. A trap poisons it.
                self.poisoned = trapped;
            }
        }
        let state = self.store.data_mut();
        std::mem::swap(ctx, &mut state.ctx);
        report.logs = std::mem::take(&mut state.logs);
        report.denials = std::mem::take(&mut state.denials);
        report.nanos = start.elapsed().as_nanos() as u64;
        report
    }

    fn dispatch(&mut self, hook: Hook) -> wasmtime::Result<wit::Verdict> {
        let h = self.bindings.kiln_harness_hooks();
        let s = &mut self.store;
        let conv = Resource::new_borrow(0);
        match hook {
            Hook::TaskStart => h.call_on_task_start(s, conv, Resource::new_borrow(0)),
            Hook::StepStart => h.call_on_step_start(s, conv),
            Hook::BeforeModel => h.call_on_before_model(s, conv),
            Hook::AfterModel => h.call_on_after_model(s, conv, Resource::new_borrow(0)),
            Hook::BeforeTool => h.call_on_before_tool(s, conv, Resource::new_borrow(0)),
            Hook::AfterTool => h.call_on_after_tool(s, conv, Resource::new_borrow(0), Resource::new_borrow(0)),
            Hook::StepEnd => h.call_on_step_end(s, conv),
            Hook::TaskEnd => h.call_on_task_end(s, conv),
        }
    }

    /// Run one of this processor's tools. Slot writes made by the tool are
    /// committed to `ctx` like a hook call's.
    pub fn call_tool(&mut self, name: &str, arguments: &str, ctx: &mut Context, facts: &TaskFacts) -> (Result<String, String>, CallReport) {
        let start = Instant::now();
        let mut report = CallReport {
            processor: self.loaded.report_name.clone(),
            component: self.loaded.id.clone(),
            hook: Hook::BeforeTool,
            nanos: 0,
            fuel: 0,
            verdict: None,
            edits: Vec::new(),
            fault: None,
            logs: Vec::new(),
            denials: Vec::new(),
        };
        if let Err(f) = self.revive() {
            let msg = f.to_string();
            report.fault = Some(f);
            return (Err(msg), report);
        }
        // Tools run as at before-tool: they may use slots but edit nothing else.
        self.arm(Some(Hook::BeforeTool));
        let state = self.store.data_mut();
        state.ctx = std::mem::take(ctx);
        state.facts = facts.clone();
        let r = self.bindings.kiln_harness_hooks().call_call_tool(&mut self.store, name, arguments);
        report.fuel = self.fuel_used();
        let state = self.store.data_mut();
        let out = match r.and_then(|r| {
            let n = match &r {
                Ok(s) | Err(s) => s.len(),
            };
            state.charge(n).map(|_| r)
        }) {
            Ok(r) => {
                report.edits = std::mem::take(&mut state.journal.edits);
                state.journal.undo.clear();
                report.verdict = Some(Verdict::Pass);
                r
            }
            Err(e) => {
                let f = classify(&e, state);
                let mut journal = std::mem::take(&mut state.journal);
                journal.rollback(&mut state.ctx);
                let msg = format!("tool `{name}` of processor {} faulted: {f}", self.loaded.info.name);
                report.fault = Some(f);
                self.poisoned = true;
                Err(msg)
            }
        };
        let state = self.store.data_mut();
        *ctx = std::mem::take(&mut state.ctx);
        report.logs = std::mem::take(&mut state.logs);
        report.denials = std::mem::take(&mut state.denials);
        report.nanos = start.elapsed().as_nanos() as u64;
        (out, report)
    }

    /// Hot swap, outgoing side: the processor's state.
    pub fn save_state(&mut self) -> Result<Vec<u8>, Fault> {
        self.revive()?;
        self.arm(None);
        let r = self.bindings.kiln_harness_hooks().call_save_state(&mut self.store);
        r.map_err(|e| {
            self.poisoned = true;
            classify(&e, self.store.data())
        })
    }

    /// Hot swap, incoming side: accept a predecessor's state.
    pub fn load_state(&mut self, state: &[u8]) -> Result<(), Fault> {
        self.revive()?;
        self.arm(None);
        match self.bindings.kiln_harness_hooks().call_load_state(&mut self.store, state) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(Fault { kind: FaultKind::Config, message: format!("{} refused the handed-over state: {msg}", self.name()) }),
            Err(e) => {
                self.poisoned = true;
                Err(classify(&e, self.store.data()))
            }
        }
    }
}
