//! The harness configuration C: which processors run, in what order, with
//! what config, limits, grants and failure policy, plus the system prompt and
//! the tool policy. The model configuration M lives in [`models`](crate::models)
//! and is never part of a harness id.
//!
//! - **Authored in TOML, stored as canonical JSON.** [`Manifest`] parses a
//!   file keeping every span, so each mistake is reported at file:line:col
//!   with a `help:` line. [`Workshop::resolve`] turns it into a [`Harness`]:
//!   sources are built and stored, ids and prefixes resolved to full
//!   component ids, defaults written out. The harness id is the blake3 of the
//!   canonical JSON (sorted keys, no whitespace), so key order, formatting
//!   and written-out defaults never change it. The display name is not part
//!   of the id; it lives in a ref `harness/<name>`.
//! - **Stored in pipeline order.** Composition ([`compose()`])
//!   is a pure function of the processors' [`Facts`]; the stored list is its
//!   output, so two manifests that differ only in the order of processors
//!   whose order is forced anyway (different bands) get the same id.
//! - **Facts come through a [`Probe`].** A processor's `describe` and the
//!   tools it provides under its config are what composition needs; the real
//!   [`ComponentProbe`] loads and configures the component, tests use a fake.
//! - **Edits are values.** [`Harness::insert`], `replace`, `remove`,
//!   `merge`, `set_config` and `set_system` return a new harness or an
//!   [`EditError`] naming the broken rule; the child remembers its parent and
//!   the [`Edit`], and [`Harness::save`] stores that lineage as an object
//!   reachable from the ref `lineage/<child id>`, so `gc` keeps it.

mod canonical;
mod compose;
mod diff;
mod edit;
mod error;
mod manifest;
mod probe;
mod report;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

pub use canonical::{to_canonical, HARNESS_FORMAT, LINEAGE_FORMAT};
pub use compose::compose;
pub use diff::{diff, Change, HarnessDiff};
pub use edit::{lineage, Edit, Lineage, LineageRecord};
pub use error::{AssembleError, ComposeError, EditError, HarnessError, ProbeError};
pub use manifest::{Authored, Manifest, ManifestError, ProcessorRef};
pub use probe::{ComponentProbe, Probe};

use crate::sandbox::{FailurePolicy, Grants, Info, InstanceSpec, Limits, ProcessorSpec, Runtime};
use crate::store::{ObjectId, Store};

/// Which tools the model sees, and how it is asked to call them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolPolicy {
    /// Tools hidden from the model, sorted and without repeats.
    pub deny: Vec<String>,
    /// Ask the model for text actions instead of native tool calls.
    pub text_actions: bool,
}

impl ToolPolicy {
    /// A policy with `deny` sorted and deduplicated (it is a set).
    pub fn new(mut deny: Vec<String>, text_actions: bool) -> ToolPolicy {
        deny.sort();
        deny.dedup();
        ToolPolicy { deny, text_actions }
    }
}

/// One processor as a harness names it: a component and how to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessorEntry {
    /// The blake3 id of the component's bytes (an object in the store).
    pub component: ObjectId,
    /// JSON handed to the processor's `configure`. Default: `{}`.
    pub config: Map<String, Value>,
    pub limits: Limits,
    /// Read-only directories and network hosts; sets, kept sorted.
    pub grants: Grants,
    pub on_fault: FailurePolicy,
}

impl ProcessorEntry {
    /// `component` with every default: empty config, default limits, no grants, `skip`.
    pub fn new(component: ObjectId) -> ProcessorEntry {
        ProcessorEntry { component, config: Map::new(), limits: Limits::default(), grants: Grants::default(), on_fault: FailurePolicy::Skip }
    }

    /// The same entry with `config` as its config.
    pub fn with_config(mut self, config: Map<String, Value>) -> ProcessorEntry {
        self.config = config;
        self
    }

    /// Sort and deduplicate the grant lists (they are sets).
    fn normalize(&mut self) {
        self.grants.read.sort();
        self.grants.read.dedup();
        self.grants.net.sort();
        self.grants.net.dedup();
    }

    /// The config as canonical JSON text, as `configure` receives it.
    pub fn config_text(&self) -> String {
        String::from_utf8(to_canonical(&Value::Object(self.config.clone()))).expect("JSON is UTF-8")
    }

    /// How to instantiate this entry.
    pub fn instance_spec(&self) -> InstanceSpec {
        InstanceSpec { config: self.config_text(), limits: self.limits.clone(), grants: Arc::new(self.grants.clone()) }
    }

    /// The entry as JSON, every default written out (the form used inside
    /// canonical harnesses and edits).
    pub fn to_json(&self) -> Value {
        canonical::entry_to_json(self)
    }

    /// Read an entry from JSON; missing fields take their defaults.
    pub fn from_json(value: &Value) -> Result<ProcessorEntry, String> {
        canonical::entry_from_json(value)
    }
}

/// What a processor entry is: its component's own description, and the
/// tools it provides under its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub info: Info,
    /// Names of the tools it provides, in its order.
    pub tools: Vec<String>,
}

/// A processor of a harness: its entry and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Processor {
    pub entry: ProcessorEntry,
    pub facts: Facts,
}

impl Processor {
    /// The processor's name (from `describe`); unique within a harness.
    pub fn name(&self) -> &str {
        &self.facts.info.name
    }

    /// Whether `target` is this processor's name or its singleton group.
    fn answers_to(&self, target: &str) -> bool {
        self.name() == target || self.facts.info.group.as_deref() == Some(target)
    }
}

/// A well-formed harness configuration with its id.
///
/// Immutable: edits return a new harness. Cheap to clone.
#[derive(Clone)]
pub struct Harness {
    system: String,
    tools: ToolPolicy,
    processors: Arc<[Processor]>,
    canonical: Arc<[u8]>,
    id: ObjectId,
    lineage: Option<Arc<Lineage>>,
    probe: Arc<dyn Probe>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("id", &self.id)
            .field("processors", &self.processors.iter().map(Processor::name).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Two harnesses are equal when their ids are (lineage is history, not meaning).
impl PartialEq for Harness {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Harness {
    /// Assemble a harness from entries in the author's order: probe each,
    /// check the composition rules, put them in pipeline order.
    pub fn assemble(probe: Arc<dyn Probe>, system: String, tools: ToolPolicy, entries: Vec<ProcessorEntry>) -> Result<Harness, AssembleError> {
        let tools = ToolPolicy::new(tools.deny, tools.text_actions);
        if tools.deny.iter().any(|t| t.is_empty()) {
            return Err(AssembleError::EmptyDeny);
        }
        let mut processors = Vec::with_capacity(entries.len());
        for (index, mut entry) in entries.into_iter().enumerate() {
            entry.normalize();
            let facts = probe.probe(&entry).map_err(|source| AssembleError::Probe { index, source })?;
            processors.push(Processor { entry, facts });
        }
        let order = compose(&processors.iter().map(|p| &p.facts).collect::<Vec<_>>())?;
        let processors: Vec<Processor> = order.into_iter().map(|i| processors[i].clone()).collect();
        let canonical = to_canonical(&canonical::harness_to_json(&system, &tools, processors.iter().map(|p| &p.entry)));
        let id = ObjectId::of(&canonical);
        Ok(Harness { system, tools, processors: processors.into(), canonical: canonical.into(), id, lineage: None, probe })
    }

    /// A harness with no processors and no system prompt.
    pub fn empty(probe: Arc<dyn Probe>) -> Harness {
        Harness::assemble(probe, String::new(), ToolPolicy::default(), Vec::new()).expect("an empty harness is well-formed")
    }

    /// The id: blake3 of [`Harness::canonical_json`].
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The canonical JSON bytes this harness is stored as.
    pub fn canonical_json(&self) -> &[u8] {
        &self.canonical
    }

    /// The system prompt template (`{tools}` and the like are filled in by the agent loop).
    pub fn system(&self) -> &str {
        &self.system
    }

    pub fn tools(&self) -> &ToolPolicy {
        &self.tools
    }

    /// The processors in pipeline order.
    pub fn processors(&self) -> &[Processor] {
        &self.processors
    }

    /// The processor named `name`, or whose singleton group is `name`.
    pub fn processor(&self, name: &str) -> Option<&Processor> {
        self.processors.iter().find(|p| p.name() == name).or_else(|| self.processors.iter().find(|p| p.answers_to(name)))
    }

    /// The parent and edit this harness was derived by, if it was derived in this process.
    pub fn lineage(&self) -> Option<&Lineage> {
        self.lineage.as_deref()
    }

    /// The probe this harness was assembled with (edits use it too).
    pub fn probe(&self) -> &Arc<dyn Probe> {
        &self.probe
    }

    /// Load the harness stored as `id`, checking that it is canonical and
    /// still assembles.
    pub fn load(store: &Store, id: &ObjectId, probe: Arc<dyn Probe>) -> Result<Harness, HarnessError> {
        let bytes = store.get(id)?;
        let parts = canonical::harness_from_json(&bytes).map_err(|reason| HarnessError::NotAHarness { id: *id, reason })?;
        let harness = Harness::assemble(probe, parts.system, parts.tools, parts.entries).map_err(|source| HarnessError::Assemble { id: *id, source: Box::new(source) })?;
        if harness.id != *id {
            return Err(HarnessError::NotCanonical { id: *id, actual: harness.id });
        }
        Ok(harness)
    }

    /// Store this harness (and, if it was derived here, every unsaved
    /// ancestor and its lineage record), and point `harness/<name>` at it
    /// when a name is given. Returns the id.
    pub fn save(&self, store: &Store, name: Option<&str>) -> Result<ObjectId, HarnessError> {
        store.put(&self.canonical)?;
        edit::save_lineage(self, store)?;
        if let Some(name) = name {
            store.set_ref(&name_ref(name), &self.id)?;
        }
        Ok(self.id)
    }

    /// The processors as the sandbox runs them, in pipeline order: each
    /// component loaded (once per runtime) from the store, with its config,
    /// limits, grants and failure policy. The agent loop calls this per task.
    pub fn processor_specs(&self, rt: &Runtime, store: &Store) -> Result<Vec<ProcessorSpec>, HarnessError> {
        self.processors
            .iter()
            .map(|p| {
                let component = p.entry.component;
                let loaded = match rt.get(&component.to_hex()) {
                    Some(loaded) => loaded,
                    None => rt.load(&store.get(&component)?).map_err(|source| HarnessError::Component { processor: p.name().to_string(), component, source: Box::new(source) })?,
                };
                Ok(ProcessorSpec { loaded, instance: p.entry.instance_spec(), policy: p.entry.on_fault })
            })
            .collect()
    }
}

/// The ref that holds the harness named `name`.
pub fn name_ref(name: &str) -> String {
    format!("harness/{name}")
}

/// Find a stored harness by name (`harness/<name>` ref), full id or unique id prefix.
pub fn find(store: &Store, what: &str) -> Result<ObjectId, HarnessError> {
    if Store::check_ref_name(&name_ref(what)).is_ok() {
        if let Some(id) = store.get_ref(&name_ref(what))? {
            return Ok(id);
        }
    }
    if what.len() >= crate::store::MIN_PREFIX_LEN && what.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(store.resolve(what)?);
    }
    let names: Vec<String> = store.refs("harness/")?.into_iter().map(|(n, _)| n.trim_start_matches("harness/").to_string()).collect();
    Err(HarnessError::Unknown {
        name: what.to_string(),
        reason: if names.is_empty() { "the store names no harnesses yet".into() } else { format!("known names: {}", names.join(", ")) },
    })
}

/// Resolves manifests against a store: builds sources, stores components,
/// probes entries. One per command or task batch.
pub struct Workshop {
    pub store: Store,
    pub probe: Arc<dyn Probe>,
    /// Where cargo builds processor sources (see [`crate::build::default_target_dir`]).
    pub build_dir: PathBuf,
}

impl Workshop {
    /// A workshop whose probe loads components into `rt`.
    pub fn new(rt: &Runtime, store: &Store, build_dir: PathBuf) -> Workshop {
        Workshop { store: store.clone(), probe: ComponentProbe::new(rt.clone(), store.clone()), build_dir }
    }

    /// Read, parse and resolve the manifest at `path`.
    pub fn open(&self, path: &Path) -> Result<Authored, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::unreadable(path, &e))?;
        let manifest = Manifest::parse(path, &text)?;
        self.resolve(&manifest)
    }

    /// Load a stored harness by id.
    pub fn load(&self, id: &ObjectId) -> Result<Harness, HarnessError> {
        Harness::load(&self.store, id, self.probe.clone())
    }
}

