//! Write kiln processors in Rust.
//!
//! A processor is a WebAssembly component built against `wit/harness.wit`
//! (package `kiln:harness@0.1.0`, world `processor`). This crate hides the
//! generated bindings behind plain types, wrappers for the host-owned
//! resources, a [`Processor`] trait with one method per hook, and an
//! [`export!`] macro. The same processor code also compiles natively, where
//! the wrappers are backed by the in-memory host of [`testing`], so its logic
//! is unit-tested with plain `cargo test`.
//!
//! # A complete processor
//!
//! ```
//! use kiln_guest::{advise, config, Conversation, Hook, Info, Processor, Verdict};
//!
//! /// Appends a reminder before every model call once the conversation is long.
//! ///
//! /// Config: `{"after": 8}` (messages before the reminder starts; default 8).
//! #[derive(Default)]
//! pub struct Reminder {
//!     after: u32,
//! }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Config {
//!     after: u32,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Self {
//!         Config { after: 8 }
//!     }
//! }
//!
//! impl Processor for Reminder {
//!     fn describe() -> Info {
//!         Info::new("reminder", "0.1.0").hooks([Hook::BeforeModel]).group("reminder")
//!     }
//!
//!     fn configure(&mut self, text: &str) -> Result<(), String> {
//!         let parsed: Config = config::parse("reminder", text)?;
//!         self.after = parsed.after;
//!         Ok(())
//!     }
//!
//!     fn on_before_model(&mut self, conv: &Conversation<'_>) -> Verdict {
//!         if conv.len() > self.after {
//!             // One host call, whatever the length of the conversation.
//!             conv.append_user("Reminder: stay on the goal.").ok();
//!             advise("the conversation is getting long");
//!         }
//!         Verdict::Pass
//!     }
//! }
//!
//! // On wasm32 this exports the component's `hooks`; natively it only checks
//! // that `Reminder` is a `Processor`.
//! kiln_guest::export!(Reminder);
//!
//! // Natively, drive it through the in-memory host:
//! use kiln_guest::testing::TestHost;
//! let mut host = TestHost::new();
//! let mut reminder = Reminder::default();
//! host.configure(&mut reminder, r#"{"after": 1}"#).unwrap();
//! host.user("Goal: find red shoes").assistant("Looking.");
//! assert_eq!(host.before_model(&mut reminder), Verdict::Pass);
//! assert_eq!(host.messages().last().unwrap().content, "Reminder: stay on the goal.");
//! assert_eq!(host.advice().as_deref(), Some("the conversation is getting long"));
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! component is `target/wasm32-wasip2/release/<crate>.wasm` (the crate must
//! be a `cdylib`). See the README for a full walk-through.
//!
//! # Rules the host enforces
//!
//! * Each hook may make only its own edits (see [`Hook`] and the method docs
//!   of [`Conversation`] and friends); another edit traps the call.
//! * Edits and slot writes are committed only when the hook returns normally.
//! * One processor value lives per component instance: the host may call it
//!   many times per task, and hands its state to a successor on hot swap
//!   through [`Processor::save_state`] / [`Processor::load_state`].
//! * A panic is reported through `log(Level::Error, "panic: ...")` and then
//!   traps the call.

#![deny(missing_docs)]

extern crate self as kiln_guest;

mod backend;
pub mod config;
mod context;
mod host;
mod types;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[cfg(target_arch = "wasm32")]
mod export_support;

pub use context::{Conversation, Response, ToolCall, ToolResult, Toolset};
pub use host::{advise, capabilities, log, slots, task};
pub use types::{
    Band, Call, CapError, EditError, Hook, Info, Level, Message, Role, TaskFacts, ToolSpec, Verdict,
};

/// The generated bindings of the `processor` world. Not part of the API.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "processor",
        pub_export_macro: true,
        export_macro_name: "__kiln_wit_export",
        default_bindings_module: "kiln_guest::wit",
        runtime_path: "kiln_guest::__private::wit_bindgen::rt",
    });
}

/// Support for [`export!`]. Not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::export_support::*;
    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;
}

/// A kiln processor: one value per component instance, called at the hooks
/// its [`Info`] lists.
///
/// Every method but [`describe`](Processor::describe) has a default: config
/// must be JSON, there is no state to hand over, no tools, and every hook
/// passes. Implement the hooks you named in `describe`.
pub trait Processor: Default + 'static {
    /// Name, version, hooks, group, band and ordering. Must not depend on config.
    fn describe() -> Info;

    /// Receives the manifest's JSON config (`{}` when none). An error is
    /// shown to the user verbatim and the processor is not used. Use
    /// [`config::parse`] for typed config. Default: any JSON is accepted.
    fn configure(&mut self, config: &str) -> Result<(), String> {
        config::accept_any_json(&Self::describe().name, config)
    }

    /// Hot swap: this processor's state, handed to its successor. Default: empty.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Hot swap: accepts (or refuses, saying why) a predecessor's state.
    /// Default: accepts anything and keeps nothing.
    fn load_state(&mut self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Ok(())
    }

    /// Tools this processor provides; they join the task's tool registry.
    fn list_tools(&self) -> Vec<ToolSpec> {
        Vec::new()
    }

    /// Runs one of this processor's tools with JSON `arguments`.
    fn call_tool(&mut self, name: &str, arguments: &str) -> Result<String, String> {
        let _ = arguments;
        Err(format!(
            "processor `{}` provides no tool named `{name}`",
            Self::describe().name
        ))
    }

    /// task-start: may change the system prompt and hide tools.
    fn on_task_start(&mut self, conv: &Conversation<'_>, tools: &Toolset<'_>) -> Verdict {
        let _ = (conv, tools);
        Verdict::Pass
    }

    /// step-start: may remove, insert and replace messages.
    fn on_step_start(&mut self, conv: &Conversation<'_>) -> Verdict {
        let _ = conv;
        Verdict::Pass
    }

    /// before-model: may change the last user message and append one user message.
    fn on_before_model(&mut self, conv: &Conversation<'_>) -> Verdict {
        let _ = conv;
        Verdict::Pass
    }

    /// after-model: may rewrite the response text and its tool calls.
    fn on_after_model(&mut self, conv: &Conversation<'_>, response: &Response<'_>) -> Verdict {
        let _ = (conv, response);
        Verdict::Pass
    }

    /// before-tool: may change the arguments, answer the call, or block it.
    fn on_before_tool(&mut self, conv: &Conversation<'_>, call: &ToolCall<'_>) -> Verdict {
        let _ = (conv, call);
        Verdict::Pass
    }

    /// after-tool: may change the tool result.
    fn on_after_tool(
        &mut self,
        conv: &Conversation<'_>,
        call: &ToolCall<'_>,
        result: &ToolResult<'_>,
    ) -> Verdict {
        let _ = (conv, call, result);
        Verdict::Pass
    }

    /// step-end: read-only; may advise for the next step.
    fn on_step_end(&mut self, conv: &Conversation<'_>) -> Verdict {
        let _ = conv;
        Verdict::Pass
    }

    /// task-end: read-only.
    fn on_task_end(&mut self, conv: &Conversation<'_>) -> Verdict {
        let _ = conv;
        Verdict::Pass
    }
}

/// Exports a [`Processor`] type as the component's `hooks`.
///
/// Use it once per crate, at the top level: `kiln_guest::export!(MyProcessor);`.
/// On wasm32 it keeps one `MyProcessor::default()` per component instance,
/// implements the generated export trait on top of it, and installs a panic
/// hook that logs `panic: <message> at <file:line:col>` at error level before
/// the trap. Natively it only checks that the type is a `Processor`, so the
/// crate still builds for `cargo test`.
#[macro_export]
macro_rules! export {
    ($processor:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::wit::kiln::harness::context as __context;
            use $crate::wit::kiln::harness::types as __types;

            ::std::thread_local! {
                static __KILN_INSTANCE: ::core::cell::RefCell<$processor> =
                    ::core::cell::RefCell::new(<$processor as ::core::default::Default>::default());
            }

            struct __KilnExport;

            impl $crate::wit::exports::kiln::harness::hooks::Guest for __KilnExport {
                fn describe() -> __types::Info {
                    $crate::__private::describe::<$processor>()
                }
                fn configure(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::configure(&__KILN_INSTANCE, config)
                }
                fn save_state() -> ::std::vec::Vec<u8> {
                    $crate::__private::save_state(&__KILN_INSTANCE)
                }
                fn load_state(
                    state: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::load_state(&__KILN_INSTANCE, state)
                }
                fn list_tools() -> ::std::vec::Vec<__types::ToolSpec> {
                    $crate::__private::list_tools(&__KILN_INSTANCE)
                }
                fn call_tool(
                    name: ::std::string::String,
                    arguments: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__private::call_tool(&__KILN_INSTANCE, name, arguments)
                }
                fn on_task_start(
                    conv: &__context::Conversation,
                    tools: &__context::Toolset,
                ) -> __types::Verdict {
                    $crate::__private::on_task_start(&__KILN_INSTANCE, conv, tools)
                }
                fn on_step_start(conv: &__context::Conversation) -> __types::Verdict {
                    $crate::__private::on_step_start(&__KILN_INSTANCE, conv)
                }
                fn on_before_model(conv: &__context::Conversation) -> __types::Verdict {
                    $crate::__private::on_before_model(&__KILN_INSTANCE, conv)
                }
                fn on_after_model(
                    conv: &__context::Conversation,
                    resp: &__context::Response,
                ) -> __types::Verdict {
                    $crate::__private::on_after_model(&__KILN_INSTANCE, conv, resp)
                }
                fn on_before_tool(
                    conv: &__context::Conversation,
                    call: &__context::ToolCall,
                ) -> __types::Verdict {
                    $crate::__private::on_before_tool(&__KILN_INSTANCE, conv, call)
                }
                fn on_after_tool(
                    conv: &__context::Conversation,
            call: &__context::ToolCall,
                    result: &__context::ToolResult,
                ) -> __types::Verdict {
                    $crate::__private::on_after_tool(&__KILN_INSTANCE, conv, call, result)
                }
                fn on_step_end(conv: &__context::Conversation) -> __types::Verdict {
                    $crate::__private::on_step_end(&__KILN_INSTANCE, conv)
                }
                fn on_task_end(conv: &__context::Conversation) -> __types::Verdict {
                    $crate::__private::on_task_end(&__KILN_INSTANCE, conv)
                }
            }

            $crate::wit::__kiln_wit_export!(__KilnExport with_types_in $crate::wit);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __assert_processor<P: $crate::Processor>() {}
            let _ = __assert_processor::<$processor>;
        };
    };
}

/// Logs at debug level: `kiln_guest::debug!("saw {} calls", n)`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)*)) };
}

/// Logs at info level: `kiln_guest::info!("configured window={}", w)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, &::std::format!($($arg)*)) };
}

/// Logs at warn level: `kiln_guest::warn!("ignoring {}", what)`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)*)) };
}

/// Logs at error level: `kiln_guest::error!("cannot parse {}", what)`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::Level::Error, &::std::format!($($arg)*)) };
}
