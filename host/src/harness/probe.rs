//! Finding out what a processor entry is: its component's `describe` and the
//! tools it provides under its config.
//!
//! The harness model needs these facts to compose (groups, bands, `after`)
//! and to refuse colliding tools, but it should not need a Wasm engine to be
//! tested, so they come through the [`Probe`] trait. [`ComponentProbe`] is
//! the real one: it loads the component from the store and configures a
//! throwaway instance, so a config the processor refuses is caught when the
//! harness is made, not when a task starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::canonical::{entry_to_json, to_canonical};
use super::error::ProbeError;
use super::{Facts, ProcessorEntry};
use crate::sandbox::{Instance, Runtime, VirtualClock};
use crate::store::{GetError, ObjectId, Store};

/// Tells what a processor entry is. Implementations must be deterministic:
/// the same entry always gives the same facts.
pub trait Probe: Send + Sync {
    /// Describe `entry`'s component and list the tools it provides when
    /// configured with `entry.config` (under `entry`'s limits and grants).
    fn probe(&self, entry: &ProcessorEntry) -> Result<Facts, ProbeError>;
}

/// The real probe: components from a store, run in a runtime. Facts are
/// memoized per entry, so re-assembling a harness after an edit only probes
/// what the edit changed.
pub struct ComponentProbe {
    rt: Runtime,
    store: Store,
    memo: Mutex<HashMap<ObjectId, Facts>>,
}

impl ComponentProbe {
    pub fn new(rt: Runtime, store: Store) -> Arc<ComponentProbe> {
        Arc::new(ComponentProbe { rt, store, memo: Mutex::new(HashMap::new()) })
    }
}

impl Probe for ComponentProbe {
    fn probe(&self, entry: &ProcessorEntry) -> Result<Facts, ProbeError> {
        let key = ObjectId::of(&to_canonical(&entry_to_json(entry)));
        if let Some(facts) = self.memo.lock().unwrap().get(&key) {
            return Ok(facts.clone());
        }
        let component = entry.component;
        let bytes = self.store.get(&component).map_err(|e| match e {
            GetError::NotFound { .. } => ProbeError::Missing { component },
            other => ProbeError::Store { component, reason: other.to_string() },
        })?;
        let loaded = self.rt.load(&bytes).map_err(|e| ProbeError::NotAProcessor { component, reason: e.to_string() })?;
        let spec = entry.instance_spec();
        let instance = Instance::new(&self.rt, loaded.clone(), spec, 0, VirtualClock::default())
            .map_err(|fault| ProbeError::Rejected { processor: loaded.info.name.clone(), reason: fault.to_string() })?;
        let facts = Facts { info: loaded.info.clone(), tools: instance.tools().iter().map(|t| t.name.clone()).collect() };
        self.memo.lock().unwrap().insert(key, facts.clone());
        Ok(facts)
    }
}
