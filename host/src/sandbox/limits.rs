//! Per-processor limits, capability grants and failure policy.
//!
//! Every field has a sane default so a manifest can leave them out; every
//! value is range-checked so a typo cannot switch a limit off.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Resource limits for one processor. The `init_*` budgets apply to a
/// component's first calls (instantiation and `configure`), which some guest
/// runtimes need far more for than any hook call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Fuel per hook call (deterministic instruction accounting).
    pub fuel: u64,
    /// Fuel for instantiation plus `configure`.
    pub init_fuel: u64,
    /// Wall-clock deadline per hook call, in milliseconds.
    pub deadline_ms: u64,
    /// Deadline for instantiation plus `configure`, in milliseconds.
    pub init_deadline_ms: u64,
    /// Cap on the processor's linear memory, in bytes.
    pub memory_bytes: u64,
    /// Cap on the bytes a call returns or writes through edits, advice and slots.
    pub output_bytes: u64,
    /// Cap on host calls per hook call.
    pub host_calls: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            init_fuel: 200_000_000,
            deadline_ms: 200,
            init_deadline_ms: 5_000,
            memory_bytes: 32 << 20,
            output_bytes: 1 << 20,
            host_calls: 100_000,
        }
    }
}

/// The largest memory cap a manifest may ask for; the pooling allocator
/// reserves slots of this size.
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;

/// A limit outside its allowed range.
#[derive(Debug, thiserror::Error)]
#[error("limit `{name}` = {value} is out of range: {expected}")]
pub struct LimitError {
    pub name: &'static str,
    pub value: u64,
    pub expected: &'static str,
}

impl Limits {
    /// Check every limit against its allowed range.
    pub fn validate(&self) -> Result<(), LimitError> {
        let check = |name, value: u64, lo: u64, hi: u64, expected| {
            if value < lo || value > hi {
                Err(LimitError { name, value, expected })
            } else {
                Ok(())
            }
        };
        check("fuel", self.fuel, 1_000, 100_000_000_000, "between 1,000 and 10^11")?;
        check("init_fuel", self.init_fuel, 1_000, 1_000_000_000_000, "between 1,000 and 10^12")?;
        check("deadline_ms", self.deadline_ms, 1, 60_000, "between 1 ms and 60 s")?;
        check("init_deadline_ms", self.init_deadline_ms, 1, 600_000, "between 1 ms and 10 min")?;
        check("memory_bytes", self.memory_bytes, 1 << 16, MAX_MEMORY_BYTES, "between 64 KiB and 1 GiB")?;
        check("output_bytes", self.output_bytes, 1 << 10, 1 << 30, "between 1 KiB and 1 GiB")?;
        check("host_calls", self.host_calls, 1, 100_000_000, "between 1 and 10^8")?;
        Ok(())
    }
}

/// Capabilities beyond the defaults. Empty means none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Directories the processor may read (read-only), by host path.
    pub read: Vec<PathBuf>,
    /// Hosts (`example.com` or `127.0.0.1:8080`) the processor may GET from.
    pub net: Vec<String>,
}

/// What happens when a processor faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "on-fault")]
pub enum FailurePolicy {
    /// Drop the call's edits and go on.
    #[default]
    Skip,
    /// End the task as faulted.
    Abort,
    /// Skip, and take the processor out for the rest of the task after `after` faults.
    Disable { after: u32 },
}
