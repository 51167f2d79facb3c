//! Model backends behind one trait.
//!
//! A [`Model`] turns a provider-neutral [`ModelRequest`] into a
//! [`ModelResponse`]. The manifest picks the backend at run time, so the trait
//! is object safe (boxed futures). `sim` is one more implementation, not a
//! special case.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::chat::{Message, ToolCall, ToolSpec};

/// A boxed future, so [`Model`] can be used as `dyn Model`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the agent loop asks a model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ModelRequest {
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// Sampling parameters; `None` leaves the backend's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Seed for backends that sample deterministically (sim, local).
    #[serde(default)]
    pub seed: u64,
}

/// Token counts as the backend reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// What a model answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub usage: Usage,
    /// The raw reply body, kept as an escape hatch for traces and debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Why a model call failed. `retryable` failures were already retried by the
/// backend as far as its policy allows; what reaches the caller is final.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot reach model endpoint {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("model endpoint {url} timed out after {secs:.1}s")]
    Timeout { url: String, secs: f64 },
    #[error("model endpoint {url} refused the request (HTTP {status}): {body}")]
    Refused { url: String, status: u16, body: String },
    #[error("model endpoint {url} kept failing (HTTP {status}) after {attempts} attempts: {body}")]
    Unavailable { url: String, status: u16, attempts: u32, body: String },
    #[error("model endpoint {url} returned a malformed reply: {reason}")]
    Malformed { url: String, reason: String },
    #[error("model configuration: {0}")]
    Config(String),
}

/// A model backend.
pub trait Model: Send + Sync {
    /// A short description for traces, e.g. `openai:gpt-4o-mini@http://...`.
    fn describe(&self) -> String;
    /// Answer one request.
    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>>;
}
pub mod http;
pub mod openai;
pub mod anthropic;
pub mod text_actions;
pub mod cache;
pub mod fallback;
pub mod spec;
pub mod sim;
pub mod roles;
pub mod local;

/// A shared model is a model, so wrappers (text actions, caches) can hold one.
impl<M: Model + ?Sized> Model for std::sync::Arc<M> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
        (**self).complete(request)
    }
}
