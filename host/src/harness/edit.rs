//! Edits and lineage.
//!
//! Every edit re-assembles the harness from entries, so it is refused by the
//! same composition rules as a manifest, with the rule named. A derived
//! harness keeps its parent and the [`Edit`] in memory; [`Harness::save`]
//! writes a lineage record `{child, parent, edit}` as an object and points
//! the ref `lineage/<child id>` at it. `gc` follows the ids the record
//! mentions, so the parent (and, for a merge, the other harness) stays as
//! long as the child is reachable from a ref. An edit that changes nothing
//! returns the same harness and records nothing.
//!
//! A tool that derives harnesses may say why with [`Harness::with_reason`]:
//! the id of a stored object that explains the edit (the evolution engine
//! stores the candidate's change manifest and gate verdict there). The
//! record then carries `reason`, which `gc` follows like the other ids;
//! records without one keep the bytes, and so the ids, they always had.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::canonical::{to_canonical, LINEAGE_FORMAT};
use super::error::{AssembleError, EditError, HarnessError};
use super::{Harness, ProcessorEntry, ToolPolicy};
use crate::store::{ObjectId, Store};

/// One edit of a harness, as recorded in its child's lineage.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    /// Add a processor; `name` is what it describes itself as (for readers).
    Insert { name: String, processor: ProcessorEntry },
    /// Swap the processor with this name (or in this singleton group) for another.
    Replace { target: String, name: String, processor: ProcessorEntry },
    /// Take out the processor with this name (or in this singleton group).
    Remove { target: String },
    /// Unite with another harness.
    Merge { other: ObjectId },
    /// Give a processor a new config.
    SetConfig { target: String, config: Map<String, Value> },
    /// Give the harness a new system prompt template.
    SetSystem { text: String },
    /// Add one line at the end of the system prompt template.
    AppendSystemLine { line: String },
}

impl Edit {
    /// The edit as JSON: `{"op": "insert" | "replace" | ..., ...}`.
    pub fn to_json(&self) -> Value {
        match self {
            Edit::Insert { name, processor } => serde_json::json!({"op": "insert", "name": name, "processor": processor.to_json()}),
            Edit::Replace { target, name, processor } => serde_json::json!({"op": "replace", "target": target, "name": name, "processor": processor.to_json()}),
            Edit::Remove { target } => serde_json::json!({"op": "remove", "target": target}),
            Edit::Merge { other } => serde_json::json!({"op": "merge", "other": other.to_hex()}),
            Edit::SetConfig { target, config } => serde_json::json!({"op": "set-config", "target": target, "config": config}),
            Edit::SetSystem { text } => serde_json::json!({"op": "set-system", "text": text}),
            Edit::AppendSystemLine { line } => serde_json::json!({"op": "append-system-line", "line": line}),
        }
    }

    /// Read an edit from [`Edit::to_json`]'s form.
    pub fn from_json(value: &Value) -> Result<Edit, String> {
        let field = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_string).ok_or(format!("the edit has no string `{k}`"));
        let entry = || ProcessorEntry::from_json(value.get("processor").unwrap_or(&Value::Null));
        Ok(match field("op")?.as_str() {
            "insert" => Edit::Insert { name: field("name")?, processor: entry()? },
            "replace" => Edit::Replace { target: field("target")?, name: field("name")?, processor: entry()? },
            "remove" => Edit::Remove { target: field("target")? },
            "merge" => Edit::Merge { other: field("other")?.parse().map_err(|e: crate::store::IdParseError| e.to_string())? },
            "set-config" => Edit::SetConfig { target: field("target")?, config: value.get("config").and_then(Value::as_object).cloned().ok_or("the edit has no object `config`")? },
            "set-system" => Edit::SetSystem { text: field("text")? },
            "append-system-line" => Edit::AppendSystemLine { line: field("line")? },
            other => return Err(format!("unknown edit `{other}`")),
        })
    }

    /// One line for people, e.g. `insert loop-guard (component 4a69305b1c2d)`.
    pub fn summary(&self) -> String {
        match self {
            Edit::Insert { name, processor } => format!("insert {name} (component {})", processor.component.short()),
            Edit::Replace { target, name, processor } => format!("replace {target} with {name} (component {})", processor.component.short()),
            Edit::Remove { target } => format!("remove {target}"),
            Edit::Merge { other } => format!("merge {}", other.short()),
            Edit::SetConfig { target, config } => format!("set config of {target} to {}", String::from_utf8_lossy(&to_canonical(&Value::Object(config.clone())))),
            Edit::SetSystem { text } => {
                let first: String = text.lines().next().unwrap_or("").chars().take(60).collect();
                format!("set system prompt to \"{first}{}\"", if first.len() < text.len() { "…" } else { "" })
            }
            Edit::AppendSystemLine { line } => {
                let shown: String = line.chars().take(60).collect();
                format!("append to system prompt \"{shown}{}\"", if shown.len() < line.len() { "…" } else { "" })
            }
        }
    }
}

/// How a harness was derived in this process: its parent and the edit.
#[derive(Clone, Debug)]
pub struct Lineage {
    pub parent: Harness,
    pub edit: Edit,
    /// For a merge: the other harness (saved along with the child).
    pub merged: Option<Harness>,
    /// A stored object that says why the edit was made (see [`Harness::with_reason`]).
    pub reason: Option<ObjectId>,
}

/// A lineage record read back from the store.
#[derive(Clone, Debug, PartialEq)]
pub struct LineageRecord {
    /// The record's own object id.
    pub record: ObjectId,
    pub child: ObjectId,
    pub parent: ObjectId,
    pub edit: Edit,
    /// The object that says why the edit was made, when the deriver gave one.
    pub reason: Option<ObjectId>,
}

fn lineage_ref(child: &ObjectId) -> String {
    format!("lineage/{child}")
}

impl Harness {
    /// Add a processor. Refused if it breaks a composition rule (a second
    /// processor in a singleton group, a duplicate name, a colliding tool,
    /// an `after` cycle).
    pub fn insert(&self, entry: ProcessorEntry) -> Result<Harness, EditError> {
        let mut entries = self.entries();
        entries.push(entry.clone());
        let child = self.derive(self.system.clone(), self.tools.clone(), entries, None, |h| {
            let name = h.processors.iter().find(|p| p.entry == normalized(&entry)).map(|p| p.name().to_string()).unwrap_or_default();
            Edit::Insert { name, processor: entry.clone() }
        })?;
        Ok(child)
    }

    /// Swap the processor named `target` (or the one in singleton group
    /// `target`) for `entry`, in the same place.
    pub fn replace(&self, target: &str, entry: ProcessorEntry) -> Result<Harness, EditError> {
        let i = self.position(target)?;
        let mut entries = self.entries();
        entries[i] = entry.clone();
        self.derive(self.system.clone(), self.tools.clone(), entries, None, |h| {
            let name = h.processors.iter().find(|p| p.entry == normalized(&entry)).map(|p| p.name().to_string()).unwrap_or_default();
            Edit::Replace { target: target.to_string(), name, processor: entry.clone() }
        })
    }

    /// Take out the processor named `target` (or the one in singleton group `target`).
    pub fn remove(&self, target: &str) -> Result<Harness, EditError> {
        let i = self.position(target)?;
        let mut entries = self.entries();
        entries.remove(i);
        self.derive(self.system.clone(), self.tools.clone(), entries, None, |_| Edit::Remove { target: target.to_string() })
    }

    /// Unite with `other`: its processors join (one configured identically
    /// in both appears once), denied tools are united, and a setting left at
    /// its default (empty system prompt, `text_actions = false`) yields to
    /// the other side's. Refused when both set something differently, or
    /// when the union breaks a composition rule.
    pub fn merge(&self, other: &Harness) -> Result<Harness, EditError> {
        let system = match (self.system.as_str(), other.system.as_str()) {
            (a, b) if a == b || b.is_empty() => a.to_string(),
            ("", b) => b.to_string(),
            _ => return Err(EditError::MergeSettingConflict { what: "the system prompt" }),
        };
        let mut deny = self.tools.deny.clone();
        deny.extend(other.tools.deny.iter().cloned());
        let tools = ToolPolicy::new(deny, self.tools.text_actions || other.tools.text_actions);
        let mut entries = self.entries();
        for p in other.processors.iter() {
            match self.processors.iter().find(|mine| mine.name() == p.name()) {
                Some(mine) if mine.entry == p.entry => {}
                Some(_) => return Err(EditError::MergeConflict { name: p.name().to_string() }),
                None => entries.push(p.entry.clone()),
            }
        }
        self.derive(system, tools, entries, Some(other.clone()), |_| Edit::Merge { other: other.id })
    }

    /// Give the processor named `target` (or in singleton group `target`) a
    /// new config, which must be a JSON object. The processor is configured
    /// with it right away, so a config it refuses is refused here.
    pub fn set_config(&self, target: &str, config: Value) -> Result<Harness, EditError> {
        let config = match config {
            Value::Object(map) => map,
            other => return Err(EditError::ConfigNotObject { found: json_kind(&other) }),
        };
        let i = self.position(target)?;
        let mut entries = self.entries();
        entries[i].config = config.clone();
        self.derive(self.system.clone(), self.tools.clone(), entries, None, |_| Edit::SetConfig { target: target.to_string(), config: config.clone() })
    }

    /// Give the harness a new system prompt template.
    pub fn set_system(&self, text: impl Into<String>) -> Result<Harness, EditError> {
        let text = text.into();
        self.derive(text.clone(), self.tools.clone(), self.entries(), None, |_| Edit::SetSystem { text: text.clone() })
    }

    /// Add `line` (trimmed) as the last line of the system prompt. A prompt
    /// that already has that line, or a blank `line`, changes nothing: the
    /// same harness comes back and nothing is recorded.
    pub fn append_system_line(&self, line: &str) -> Result<Harness, EditError> {
        let line = line.trim();
        if line.is_empty() || self.system.lines().any(|l| l.trim() == line) {
            return Ok(self.clone());
        }
        let text = if self.system.is_empty() { line.to_string() } else { format!("{}\n{line}", self.system) };
        self.derive(text, self.tools.clone(), self.entries(), None, |_| Edit::AppendSystemLine { line: line.to_string() })
    }

    /// This harness with `reason` recorded as why its last edit was made:
    /// the id of a stored object that explains it (for an evolved harness,
    /// the candidate's change manifest and gate verdict). [`Harness::save`]
    /// writes it into the lineage record. A harness that was not derived in
    /// this process has no edit to explain and comes back unchanged.
    pub fn with_reason(&self, reason: ObjectId) -> Harness {
        let mut explained = self.clone();
        if let Some(link) = &self.lineage {
            let mut link = (**link).clone();
            link.reason = Some(reason);
            explained.lineage = Some(std::sync::Arc::new(link));
        }
        explained
    }

    /// Apply a recorded edit (a merge loads the other harness from `store`).
    pub fn apply(&self, edit: &Edit, store: &Store) -> Result<Harness, HarnessError> {
        let edited = match edit {
            Edit::Insert { processor, .. } => self.insert(processor.clone()),
            Edit::Replace { target, processor, .. } => self.replace(target, processor.clone()),
            Edit::Remove { target } => self.remove(target),
            Edit::Merge { other } => self.merge(&Harness::load(store, other, self.probe.clone())?),
            Edit::SetConfig { target, config } => self.set_config(target, Value::Object(config.clone())),
            Edit::SetSystem { text } => self.set_system(text.clone()),
            Edit::AppendSystemLine { line } => self.append_system_line(line),
        };
        edited.map_err(|e| HarnessError::Edit { parent: self.id, source: Box::new(e) })
    }

    fn entries(&self) -> Vec<ProcessorEntry> {
        self.processors.iter().map(|p| p.entry.clone()).collect()
    }

    fn position(&self, target: &str) -> Result<usize, EditError> {
        self.processors
            .iter()
            .position(|p| p.name() == target)
            .or_else(|| self.processors.iter().position(|p| p.answers_to(target)))
            .ok_or_else(|| EditError::NoSuchProcessor { target: target.to_string(), known: self.processors.iter().map(|p| p.name().to_string()).collect() })
    }

    /// Assemble a child; record the edit unless nothing changed.
    fn derive(&self, system: String, tools: ToolPolicy, entries: Vec<ProcessorEntry>, merged: Option<Harness>, edit: impl FnOnce(&Harness) -> Edit) -> Result<Harness, EditError> {
        let mut child = Harness::assemble(self.probe.clone(), system, tools, entries).map_err(|e| match e {
            AssembleError::Compose(c) => EditError::Compose(c),
            other => EditError::Assemble(other),
        })?;
        if child.id == self.id {
            return Ok(self.clone());
        }
        let edit = edit(&child);
        child.lineage = Some(std::sync::Arc::new(Lineage { parent: self.clone(), edit, merged, reason: None }));
        Ok(child)
    }
}

fn normalized(entry: &ProcessorEntry) -> ProcessorEntry {
    let mut e = entry.clone();
    e.normalize();
    e
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Store the lineage of `harness` (already stored itself): for each link up
/// the chain, the parent, the merged harness if any, the record, and the ref
/// `lineage/<child>`. Stops at a link already recorded.
pub(super) fn save_lineage(harness: &Harness, store: &Store) -> Result<(), HarnessError> {
    let mut child = harness;
    while let Some(link) = child.lineage() {
        let mut record = serde_json::json!({
            "format": LINEAGE_FORMAT,
            "child": child.id.to_hex(),
            "parent": link.parent.id.to_hex(),
            "edit": link.edit.to_json(),
        });
        if let Some(reason) = link.reason {
            record["reason"] = Value::String(reason.to_hex());
        }
        let record = to_canonical(&record);
        let record_id = ObjectId::of(&record);
        if store.get_ref(&lineage_ref(&child.id))? == Some(record_id) {
            break;
        }
        store.put(link.parent.canonical_json())?;
        if let Some(merged) = &link.merged {
            store.put(merged.canonical_json())?;
            save_lineage(merged, store)?;
        }
        store.put(&record)?;
        store.set_ref(&lineage_ref(&child.id), &record_id)?;
        child = &link.parent;
    }
    Ok(())
}

/// The recorded lineage of harness `id`, newest first: its parent and edit,
/// the parent's parent, and so on, until a harness with no record.
pub fn lineage(store: &Store, id: &ObjectId) -> Result<Vec<LineageRecord>, HarnessError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut current = *id;
    while seen.insert(current) {
        let Some(record) = store.get_ref(&lineage_ref(&current))? else { break };
        let bytes = store.get(&record)?;
        let bad = |reason: String| HarnessError::NotALineage { id: record, reason };
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if value.get("format").and_then(Value::as_str) != Some(LINEAGE_FORMAT) {
            return Err(bad(format!("its `format` is not `{LINEAGE_FORMAT}`")));
        }
        let id_field = |k: &str| -> Result<ObjectId, HarnessError> {
            value.get(k).and_then(Value::as_str).ok_or_else(|| bad(format!("no `{k}`")))?.parse().map_err(|e: crate::store::IdParseError| bad(e.to_string()))
        };
        let (child, parent) = (id_field("child")?, id_field("parent")?);
        let edit = Edit::from_json(value.get("edit").unwrap_or(&Value::Null)).map_err(bad)?;
        let reason = match value.get("reason") {
            None => None,
            Some(_) => Some(id_field("reason")?),
        };
        out.push(LineageRecord { record, child, parent, edit, reason });
        current = parent;
    }
    Ok(out)
}
