//! The two implementations behind the public wrappers and host functions:
//! the generated bindings on wasm, an in-memory fake everywhere else. Both
//! offer the same items with the same signatures; the public API delegates.

#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::*;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::*;
