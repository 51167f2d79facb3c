//! The harness as the evolution engine edits it, and the one adapter to the
//! sandbox.
//!
//! A [`Genome`] is a harness configuration C reduced to what evolution
//! changes: the system prompt, the hidden tools, and the processors in
//! pipeline order, each a stored component with its JSON config. Its id is
//! the blake3 of its canonical JSON (keys sorted, no whitespace), so two
//! genomes that mean the same thing share an id and every cached rollout.
//! The edit operations keep the pipeline well-formed: one processor per
//! singleton group, bands in order (pre, normal, post).
//!
//! This is deliberately the only place that knows how a harness becomes
//! [`ProcessorSpec`]s; when the harness room's `Harness` takes over, only
//! this file changes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sandbox::{Band, FailurePolicy, Limits, ProcessorSpec, Runtime};
use crate::store::{ObjectId, Store};

/// One processor of a genome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The processor's name (from its `describe`).
    pub name: String,
    /// Its singleton group, if any (from `describe`).
    #[serde(default)]
    pub group: Option<String>,
    pub band: Band,
    /// blake3 hex of the component bytes, an object in the store.
    pub component: String,
    /// The JSON config handed to `configure`.
    pub config: Value,
    /// Per-call limits (default: the sandbox's).
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub policy: FailurePolicy,
}

/// A harness configuration as evolution sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Genome {
    /// The system prompt template (`{tools}` becomes the tool names).
    pub system: String,
    /// Tools hidden from the model.
    pub deny: Vec<String>,
    /// Processors in pipeline order.
    pub processors: Vec<Part>,
}

/// A typed edit of a genome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum EditOp {
    /// Add a processor (placed by its band).
    Insert { part: Part },
    /// Put a processor in the place of the one named `target`.
    Replace { target: String, part: Part },
    /// Take the processor named `target` out.
    Remove { target: String },
    /// Change the config of the processor named `target`.
    SetConfig { target: String, config: Value },
    /// Append a line to the system prompt.
    AddPromptLine { line: String },
}

impl EditOp {
    /// A one-line description for ledgers.
    pub fn describe(&self) -> String {
        match self {
            EditOp::Insert { part } => format!("insert {} {}", part.name, canonical_text(&part.config)),
            EditOp::Replace { target, part } => {
                format!("replace {target} with {} {}", part.name, canonical_text(&part.config))
            }
            EditOp::Remove { target } => format!("remove {target}"),
            EditOp::SetConfig { target, config } => format!("set-config {target} {}", canonical_text(config)),
            EditOp::AddPromptLine { line } => format!("prompt line {line:?}"),
        }
    }
}

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenomeError {
    #[error("no processor named `{0}` in the harness")]
    NoSuchProcessor(String),
    #[error("`{new}` is in singleton group `{group}`, which `{existing}` already holds; use replace")]
    GroupTaken { new: String, group: String, existing: String },
    #[error("a processor named `{0}` is already in the harness")]
    NameTaken(String),
    #[error("the prompt already has the line {0:?}")]
    LineThere(String),
}

impl Genome {
    /// The id: blake3 of [`Genome::canonical`].
    pub fn id(&self) -> String {
        ObjectId::of(&self.canonical()).to_hex()
    }

    /// Canonical JSON: sorted keys, no whitespace. Names, groups and bands
    /// follow from the components, so they are left out.
    pub fn canonical(&self) -> Vec<u8> {
        let procs: Vec<Value> = self
            .processors
            .iter()
            .map(|p| serde_json::json!({ "component": p.component, "config": p.config }))
            .collect();
        let mut deny = self.deny.clone();
        deny.sort();
        deny.dedup();
        canonical_text(&serde_json::json!({ "format": "kiln-evolve-genome/1", "system": self.system, "deny": deny, "processors": procs })).into_bytes()
    }

    /// The processor named `name`.
    pub fn get(&self, name: &str) -> Option<&Part> {
        self.processors.iter().find(|p| p.name == name)
    }

    /// Apply an edit; the result is well-formed or the edit is refused.
    pub fn apply(&self, op: &EditOp) -> Result<Genome, GenomeError> {
        let mut g = self.clone();
        match op {
            EditOp::Insert { part } => {
                if g.get(&part.name).is_some() {
                    return Err(GenomeError::NameTaken(part.name.clone()));
                }
                if let Some(group) = &part.group {
                    if let Some(existing) = g.processors.iter().find(|p| p.group.as_ref() == Some(group)) {
                        return Err(GenomeError::GroupTaken {
                            new: part.name.clone(),
                            group: group.clone(),
                            existing: existing.name.clone(),
                        });
                    }
                }
                let at = g.processors.iter().position(|p| p.band > part.band).unwrap_or(g.processors.len());
                g.processors.insert(at, part.clone());
            }
            EditOp::Replace { target, part } => {
                let i = g
                    .processors
                    .iter()
                    .position(|p| &p.name == target)
                    .ok_or_else(|| GenomeError::NoSuchProcessor(target.clone()))?;
                g.processors[i] = part.clone();
                g.processors.sort_by_key(|p| p.band);
            }
            EditOp::Remove { target } => {
                let i = g
                    .processors
                    .iter()
                    .position(|p| &p.name == target)
                    .ok_or_else(|| GenomeError::NoSuchProcessor(target.clone()))?;
                g.processors.remove(i);
            }
            EditOp::SetConfig { target, config } => {
                let p = g
                    .processors
                    .iter_mut()
                    .find(|p| &p.name == target)
                    .ok_or_else(|| GenomeError::NoSuchProcessor(target.clone()))?;
                p.config = config.clone();
            }
            EditOp::AddPromptLine { line } => {
                if g.system.lines().any(|l| l.trim() == line.trim()) {
                    return Err(GenomeError::LineThere(line.clone()));
                }
                if !g.system.is_empty() {
                    g.system.push('\n');
                }
                g.system.push_str(line.trim());
            }
        }
        Ok(g)
    }

    /// The processors as the sandbox runs them: components loaded once per
    /// runtime from the store, default limits, the `skip` failure policy.
    pub fn specs(&self, rt: &Runtime, store: &Store) -> Result<Vec<ProcessorSpec>, String> {
        self.processors
            .iter()
            .map(|p| {
                let loaded = match rt.get(&p.component) {
                    Some(l) => l,
                    None => {
                        let id: ObjectId =
                            p.component.parse().map_err(|e| format!("processor {}: bad component id: {e}", p.name))?;
                        let bytes = store.get(&id).map_err(|e| format!("processor {}: {e}", p.name))?;
                        rt.load(&bytes).map_err(|e| format!("processor {}: {e}", p.name))?
                    }
                };
                Ok(ProcessorSpec {
                    loaded,
                    instance: crate::sandbox::InstanceSpec {
                        config: canonical_text(&p.config),
                        limits: p.limits.clone(),
                        grants: Default::default(),
                    },
                    policy: p.policy,
                })
            })
            .collect()
    }

    /// Store the genome's canonical bytes; returns the id.
    pub fn save(&self, store: &Store) -> Result<String, crate::store::PutError> {
        Ok(store.put(&self.canonical())?.to_hex())
    }
}

/// A genome from a resolved harness manifest (the harness room's
/// [`crate::harness::Harness`]): system prompt, denied tools, processors in
/// pipeline order with their configs, limits and failure policies. Evolved
/// harnesses grant no capabilities, so a harness with grants is refused
/// rather than silently changed.
pub fn from_harness(h: &crate::harness::Harness) -> Result<Genome, String> {
    let mut processors = Vec::new();
    for p in h.processors() {
        let e = &p.entry;
        if e.grants != Default::default() {
            return Err(format!("processor {} has capability grants, which evolution does not carry", p.name()));
        }
        let info = &p.facts.info;
        processors.push(Part {
            name: info.name.clone(),
            group: info.group.clone(),
            band: info.band,
            component: e.component.to_hex(),
            config: Value::Object(e.config.clone()),
            limits: e.limits.clone(),
            policy: e.on_fault,
        });
    }
    if h.tools().text_actions {
        return Err("the harness asks for text actions, which evolution does not carry yet".into());
    }
    Ok(Genome { system: h.system().to_string(), deny: h.tools().deny.clone(), processors })
}

/// Canonical JSON text: object keys sorted at every level, no whitespace.
pub fn canonical_text(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    // serde_json's map keeps insertion order only with `preserve_order`;
    // writing keys by hand in sorted order is right either way.
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("string serializes"));
                    out.push(':');
                    write(&m[*k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&serde_json::to_string(other).expect("value serializes")),
        }
    }
    let mut out = String::new();
    write(&sort(v), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, group: Option<&str>, band: Band) -> Part {
        Part {
            name: name.into(),
            group: group.map(Into::into),
            band,
            component: format!("{:0>64}", name.len()),
            config: serde_json::json!({}),
            limits: Default::default(),
            policy: Default::default(),
        }
    }

    #[test]
    fn canonical_ignores_key_order_and_names() {
        let a = serde_json::json!({"b": 1, "a": {"d": 2, "c": 3}});
        let b: Value = serde_json::from_str(r#"{"a":{"c":3,"d":2},"b":1}"#).unwrap();
        assert_eq!(canonical_text(&a), canonical_text(&b));
        assert_eq!(canonical_text(&a), r#"{"a":{"c":3,"d":2},"b":1}"#);
        let g = Genome { system: "s".into(), deny: vec!["b".into(), "a".into()], processors: vec![] };
        let h = Genome { deny: vec!["a".into(), "b".into(), "a".into()], ..g.clone() };
        assert_eq!(g.id(), h.id());
    }

    #[test]
    fn edits_keep_groups_and_bands() {
        let g = Genome { system: "s".into(), deny: vec![], processors: vec![part("post", None, Band::Post)] };
        let g = g.apply(&EditOp::Insert { part: part("pre", Some("x"), Band::Pre) }).unwrap();
        let g = g.apply(&EditOp::Insert { part: part("mid", None, Band::Normal) }).unwrap();
        assert_eq!(g.processors.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["pre", "mid", "post"]);
        let e = g.apply(&EditOp::Insert { part: part("other", Some("x"), Band::Normal) }).unwrap_err();
        assert!(e.to_string().contains("singleton group `x`") && e.to_string().contains("`pre`"), "{e}");
        assert!(matches!(g.apply(&EditOp::Remove { target: "nope".into() }), Err(GenomeError::NoSuchProcessor(_))));
        let g2 = g.apply(&EditOp::AddPromptLine { line: "Be careful.".into() }).unwrap();
        assert_eq!(g2.system, "s\nBe careful.");
        assert!(g2.apply(&EditOp::AddPromptLine { line: "Be careful.".into() }).is_err());
        assert_ne!(g.id(), g2.id());
        let g3 = g.apply(&EditOp::SetConfig { target: "mid".into(), config: serde_json::json!({"k": 1}) }).unwrap();
        assert_ne!(g3.id(), g.id());
    }
}
