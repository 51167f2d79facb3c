//! What the host lends every processor without a grant (`kiln:harness/host`
//! and `kiln:harness/slots`), and the granted capabilities.

use crate::backend;
use crate::types::{CapError, Level, TaskFacts};

/// Writes a line to the trace. See also [`debug!`](crate::debug),
/// [`info!`](crate::info), [`warn!`](crate::warn) and [`error!`](crate::error).
pub fn log(level: Level, message: &str) {
    backend::log(level, message)
}

/// Facts about the running task: id, step, step budget, seed and the hook
/// being called. None of them reveals the score.
pub fn task() -> TaskFacts {
    backend::task()
}

/// Advice for the model at the next step. The host shows it before the next
/// model call as the user message `[advice from <processor>] <text>`. The
/// last advice of a hook call wins.
pub fn advise(text: &str) {
    backend::advise(text)
}

/// Shared key/value state owned by the host and visible to every processor of
/// the task. Writes are buffered with the call's other edits: a call that
/// faults leaves no slot write behind. Prefix your keys (`"notes/..."`) so
/// processors do not collide.
pub mod slots {
    use crate::backend;

    /// The value under `key`, if any.
    pub fn get(key: &str) -> Option<String> {
        backend::slot_get(key)
    }

    /// Stores `value` under `key`.
    pub fn set(key: &str, value: &str) {
        backend::slot_set(key, value)
    }

    /// Removes `key` (nothing happens when it is absent).
    pub fn remove(key: &str) {
        backend::slot_remove(key)
    }
}

/// Capabilities beyond the defaults. Each is denied unless the harness
/// manifest grants it to this processor; a denial is an [`CapError::Denied`]
/// here and an event in the trace.
pub mod capabilities {
    use super::{backend, CapError};

    /// Reads a file under a directory granted read-only to this processor.
    pub fn read_file(path: &str) -> Result<Vec<u8>, CapError> {
        backend::read_file(path)
    }

    /// GETs a URL whose host is on this processor's network allowlist.
    pub fn http_get(url: &str) -> Result<String, CapError> {
        backend::http_get(url)
    }
}
