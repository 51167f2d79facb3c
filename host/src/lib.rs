//! kiln: a harness foundry for AI agents.
//!
//! The harness around a model is built from small processors, each a
//! sandboxed WebAssembly component attached to lifecycle hooks. Rooms, from
//! the bottom up (each depends only on rooms listed before it):
//!
//! - [`chat`]: messages, tool calls and tool specs, shared by everything.
//! - [`store`]: the content-addressed object store in `.kiln/`.
//! - [`sandbox`]: the Wasm runtime that runs processors under limits.

pub mod agent;
pub mod build;
pub mod chat;
pub mod cli;
pub mod env;
pub mod evolve;
pub mod mcp;
pub mod harness;
pub mod models;
pub mod sandbox;
pub mod store;
pub mod trace;
