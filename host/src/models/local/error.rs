//! What can go wrong with a local model, in words that say which file and
//! what to do. [`LocalError`] becomes a [`ModelError`] at the backend's edge.

use std::path::{Path, PathBuf};

use crate::models::ModelError;

/// The command that fetches the default model.
pub const SETUP_COMMAND: &str = "make setup-model";

/// Why a local model could not be loaded or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The spec after `local:` is malformed.
    #[error("local model spec `{spec}`: {reason}")]
    Spec { spec: String, reason: String },
    /// No file at the path.
    #[error("model file {} does not exist{hint}", path.display())]
    Missing { path: PathBuf, hint: String },
    /// The file exists but the operating system would not let us read it.
    #[error("model file {} cannot be read: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    /// The file is not a GGUF file at all.
    #[error("model file {} is not a GGUF file: {reason}", path.display())]
    NotGguf { path: PathBuf, reason: String },
    /// The file is a GGUF file but it is damaged or incomplete.
    #[error("model file {} is corrupt: {reason}{hint}", path.display())]
    Corrupt { path: PathBuf, reason: String, hint: String },
    /// The file is intact but describes something this backend cannot run.
    #[error("model file {} needs {what}, which the local backend does not support ({supported})", path.display())]
    Unsupported { path: PathBuf, what: String, supported: String },
    /// The conversation does not fit the model's context window.
    #[error(
        "the prompt is {prompt_tokens} tokens but the context window of {} is {window} tokens; \
         the request must be shortened (compact the history) or the window raised with `?context=N`",
        path.display()
    )]
    ContextOverflow { path: PathBuf, prompt_tokens: usize, window: usize },
    /// The model's chat template could not render the conversation.
    #[error("the chat template of {} cannot render this conversation: {reason}", path.display())]
    Template { path: PathBuf, reason: String },
    /// The tensor library failed while running the model.
    #[error("running {} failed: {reason}", path.display())]
    Inference { path: PathBuf, reason: String },
}

impl LocalError {
    /// A [`LocalError::Corrupt`] for `path`, with the fetch hint when `path`
    /// is the default model.
    pub fn corrupt(path: &Path, reason: impl Into<String>, is_default: bool) -> LocalError {
        let hint = if is_default {
            format!("; run `{SETUP_COMMAND}` to fetch it again")
        } else {
            "; fetch or convert the file again".to_owned()
        };
        LocalError::Corrupt { path: path.to_owned(), reason: reason.into(), hint }
    }
}

impl From<LocalError> for ModelError {
    fn from(error: LocalError) -> ModelError {
        match &error {
            // A request too long for the window is a refusal of the request,
            // like the 4xx an HTTP server answers: a fallback chain does not
            // hide it by sending the same request elsewhere.
            LocalError::ContextOverflow { path, .. } | LocalError::Template { path, .. } => {
                ModelError::Refused { url: format!("local:{}", path.display()), status: 400, body: error.to_string() }
            }
            LocalError::Inference { path, .. } => {
                ModelError::Malformed { url: format!("local:{}", path.display()), reason: error.to_string() }
            }
            _ => ModelError::Config(error.to_string()),
        }
    }
}
