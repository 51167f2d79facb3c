//! The sandbox: runs processors, each a WebAssembly component, under limits.
//!
//! - [`Runtime`]: one engine per process (pooling allocator, copy-on-write
//!   memory images, epoch deadlines, fuel), components loaded once per blake3
//!   id and pre-instantiated, compiled code cached on disk and authenticated.
//! - [`Instance`]: one processor within one task. Every call runs under fuel,
//!   a deadline, a memory cap, an output cap and a host-call cap; its edits
//!   commit only if it returns normally; a fault is classified exactly.
//! - [`Pipeline`]: the processors of one task in order, with failure
//!   policies and hot swap at step boundaries.
//!
//! The sandbox knows nothing of models, environments or manifests.

mod bindings;
mod context;
mod instance;
mod limits;
mod pipeline;
mod runtime;
mod state;

pub use context::{apply_edits, Context, Edit, Hook, Reply, ToolOutcome};
pub use instance::{CallReport, Fault, FaultKind, Instance, InstanceSpec, Verdict};
pub use limits::{FailurePolicy, Grants, LimitError, Limits, MAX_MEMORY_BYTES};
pub use pipeline::{HookOutcome, Member, Pipeline, ProcessorSpec, Swap, SwapReport};
pub use runtime::{Band, ComponentId, Info, LoadError, Loaded, Runtime, RuntimeConfig, HOOKS_EXPORT, WIT_VERSION};
pub use state::{Level, TaskFacts, VirtualClock};
