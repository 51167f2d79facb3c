//! The functions [`export!`](crate::export) expands to: each enters the guest
//! (installing the panic hook once), borrows the instance, wraps the borrowed
//! resources, runs the [`Processor`] method and converts the answer back.

#![allow(missing_docs)] // each function mirrors one export of `hooks`

use std::cell::RefCell;
use std::sync::Once;
use std::thread::LocalKey;

use crate::backend::{self, hook_to_wit, tool_spec_to_wit};
use crate::context::{Conversation, Response, ToolCall, ToolResult, Toolset};
use crate::types::{Band, Info, Level, Verdict};
use crate::wit::kiln::harness::{context as c, types as w};
use crate::Processor;

/// The per-instance processor value the export macro declares.
pub type Instance<P> = LocalKey<RefCell<P>>;

static PANIC_HOOK: Once = Once::new();

/// Installs (once) a panic hook that logs the panic message at error level,
/// so the host can show why the call trapped.
pub fn enter() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(a panic without a message)");
            let location = info
                .location()
                .map(|at| format!(" at {}:{}:{}", at.file(), at.line(), at.column()))
                .unwrap_or_default();
            crate::log(Level::Error, &format!("panic: {message}{location}"));
        }));
    });
}

fn verdict_to_wit(verdict: Verdict) -> w::Verdict {
    match verdict {
        Verdict::Pass => w::Verdict::Pass,
        Verdict::Block(reason) => w::Verdict::Block(reason),
        Verdict::Interrupt(reason) => w::Verdict::Interrupt(reason),
    }
}

fn info_to_wit(info: Info) -> w::Info {
    w::Info {
        name: info.name,
        version: info.version,
        hooks: info.hooks.into_iter().map(hook_to_wit).collect(),
        group: info.group,
        band: match info.band {
            Band::Pre => w::Band::Pre,
            Band::Normal => w::Band::Normal,
            Band::Post => w::Band::Post,
        },
        after: info.after,
    }
}

fn conversation(conv: &c::Conversation) -> Conversation<'_> {
    Conversation(backend::Conversation(conv))
}

pub fn describe<P: Processor>() -> w::Info {
    enter();
    info_to_wit(P::describe())
}

pub fn configure<P: Processor>(
    instance: &'static Instance<P>,
    config: String,
) -> Result<(), String> {
    enter();
    instance.with_borrow_mut(|p| p.configure(&config))
}

pub fn save_state<P: Processor>(instance: &'static Instance<P>) -> Vec<u8> {
    enter();
    instance.with_borrow(|p| p.save_state())
}

pub fn load_state<P: Processor>(
    instance: &'static Instance<P>,
    state: Vec<u8>,
) -> Result<(), String> {
    enter();
    instance.with_borrow_mut(|p| p.load_state(&state))
}

pub fn list_tools<P: Processor>(instance: &'static Instance<P>) -> Vec<w::ToolSpec> {
    enter();
    instance
        .with_borrow(|p| p.list_tools())
        .into_iter()
        .map(tool_spec_to_wit)
        .collect()
}

pub fn call_tool<P: Processor>(
    instance: &'static Instance<P>,
    name: String,
    arguments: String,
) -> Result<String, String> {
    enter();
    instance.with_borrow_mut(|p| p.call_tool(&name, &arguments))
}

pub fn on_task_start<P: Processor>(
    instance: &'static Instance<P>,
    conv: &c::Conversation,
    tools: &c::Toolset,
) -> w::Verdict {
    enter();
    let tools = Toolset(backend::Toolset(tools));
    verdict_to_wit(instance.with_borrow_mut(|p| p.on_task_start(&conversation(conv), &tools)))
}

pub fn on_step_start<P: Processor>(
    instance: &'static Instance<P>,
    conv: &c::Conversation,
) -> w::Verdict {
    enter();
    verdict_to_wit(instance.with_borrow_mut(|p| p.on_step_start(&conversation(conv))))
}

pub fn on_before_model<P: Processor>(
    instance: &'static Instance<P>,
    conv: &c::Conversation,
) -> w::Verdict {
    enter();
    verdict_to_wit(instance.with_borrow_mut(|p| p.on_before_model(&conversation(conv))))
}

pub fn on_after_model<P: Processor>(
    instance: &'static Instance<P>,
    conv: &c::Conversation,
    resp: &c::Response,
) -> w::Verdict {
    enter();
    let response = Response(backend::Response(resp));
    verdict_to_wit(instance.with_borrow_mut(|p| p.on_after_model(&conversation(conv), &response)))
}

pub fn on_before_tool<P: Processor>(
    instance: &'static Instance<P>,
    conv: &c::Conversation,
    call: &c::ToolCall,
) -> w::Verdict {
    enter();
    let call = ToolCall(backend::ToolCall(call));
    verdict_to_wit(instance.with_borrow_mut(|p| p.on_before_tool(&conversation(conv), &call)))
}

pub fn on_after_tool<P: Processor>(
    instance: &'static Instance<P>,
    conv: &c::Conversation,
    call: &c::ToolCall,
    result: &c::ToolResult,
) -> w::Verdict {
    enter();
    let call = ToolCall(backend::ToolCall(call));
    let result = ToolResult(backend::ToolResult(result));
    verdict_to_wit(
        instance.with_borrow_mut(|p| p.on_after_tool(&conversation(conv), &call, &result)),
    )
}

pub fn on_step_end<P: Processor>(
    instance: &'static Instance<P>,
    conv: &c::Conversation,
) -> w::Verdict {
    enter();
    verdict_to_wit(instance.with_borrow_mut(|p| p.on_step_end(&conversation(conv))))
}

pub fn on_task_end<P: Processor>(
    instance: &'static Instance<P>,
    conv: &c::Conversation,
) -> w::Verdict {
    enter();
    verdict_to_wit(instance.with_borrow_mut(|p| p.on_task_end(&conversation(conv))))
}
