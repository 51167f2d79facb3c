//! What differs between two harnesses, for people (`kiln harness diff`) and
//! for the evolution engine's change manifests.
//!
//! Processors are matched by name (names are unique within a harness).
//! Config, limits and grants are compared key by key along JSON paths, so a
//! changed `config.window` shows as one line, not as two whole objects.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::compose::band_name;
use super::{Harness, Processor};
use crate::sandbox::FailurePolicy;
use crate::store::ObjectId;

/// How one processor differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added { name: String, component: ObjectId },
    Removed { name: String, component: ObjectId },
    /// Present in both; one line per difference (`config.window: 12 → 8`).
    Changed { name: String, details: Vec<String> },
}

/// Everything that differs between harness `a` and harness `b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HarnessDiff {
    pub a: ObjectId,
    pub b: ObjectId,
    pub processors: Vec<Change>,
    /// The pipeline order of the processors both have, when it changed.
    pub order: Option<(Vec<String>, Vec<String>)>,
    /// Tool policy differences, one line each.
    pub tools: Vec<String>,
    /// A unified line diff of the system prompt, when it changed.
    pub system: Option<String>,
}

impl HarnessDiff {
    /// Whether the two harnesses are the same.
    pub fn is_empty(&self) -> bool {
        self.a == self.b
    }
}

/// Compare two harnesses.
pub fn diff(a: &Harness, b: &Harness) -> HarnessDiff {
    let mut processors = Vec::new();
    for pa in a.processors() {
        match b.processors().iter().find(|pb| pb.name() == pa.name()) {
            None => processors.push(Change::Removed { name: pa.name().to_string(), component: pa.entry.component }),
            Some(pb) => {
                let details = processor_details(pa, pb);
                if !details.is_empty() {
                    processors.push(Change::Changed { name: pa.name().to_string(), details });
                }
            }
        }
    }
    for pb in b.processors() {
        if !a.processors().iter().any(|pa| pa.name() == pb.name()) {
            processors.push(Change::Added { name: pb.name().to_string(), component: pb.entry.component });
        }
    }
    let common = |h: &Harness, other: &Harness| -> Vec<String> {
        h.processors().iter().filter(|p| other.processors().iter().any(|o| o.name() == p.name())).map(|p| p.name().to_string()).collect()
    };
    let (order_a, order_b) = (common(a, b), common(b, a));
    let order = (order_a != order_b).then_some((order_a, order_b));
    let mut tools = Vec::new();
    for t in &b.tools().deny {
        if !a.tools().deny.contains(t) {
            tools.push(format!("deny + {t}"));
        }
    }
    for t in &a.tools().deny {
        if !b.tools().deny.contains(t) {
            tools.push(format!("deny - {t}"));
        }
    }
    if a.tools().text_actions != b.tools().text_actions {
        tools.push(format!("text_actions: {} → {}", a.tools().text_actions, b.tools().text_actions));
    }
    let system = (a.system() != b.system()).then(|| {
        similar::TextDiff::from_lines(a.system(), b.system()).unified_diff().context_radius(2).header("a/system", "b/system").to_string()
    });
    HarnessDiff { a: a.id(), b: b.id(), processors, order, tools, system }
}

fn processor_details(a: &Processor, b: &Processor) -> Vec<String> {
    let mut out = Vec::new();
    if a.entry.component != b.entry.component {
        let (va, vb) = (&a.facts.info.version, &b.facts.info.version);
        out.push(format!("component: {} ({va}) → {} ({vb})", a.entry.component.short(), b.entry.component.short()));
        if a.facts.info.band != b.facts.info.band {
            out.push(format!("band: {} → {}", band_name(a.facts.info.band), band_name(b.facts.info.band)));
        }
        if a.facts.info.group != b.facts.info.group {
            out.push(format!("group: {} → {}", a.facts.info.group.as_deref().unwrap_or("-"), b.facts.info.group.as_deref().unwrap_or("-")));
        }
    }
    let config = |p: &Processor| Value::Object(p.entry.config.clone());
    value_diff("config", &config(a), &config(b), &mut out);
    let limits = |p: &Processor| serde_json::to_value(&p.entry.limits).expect("limits serialize");
    value_diff("limits", &limits(a), &limits(b), &mut out);
    for (what, xa, xb) in [
        ("grants.read", a.entry.grants.read.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(), b.entry.grants.read.iter().map(|p| p.display().to_string()).collect()),
        ("grants.net", a.entry.grants.net.clone(), b.entry.grants.net.clone()),
    ] {
        for x in xb.iter().filter(|x| !xa.contains(x)) {
            out.push(format!("{what} + {x}"));
        }
        for x in xa.iter().filter(|x| !xb.contains(x)) {
            out.push(format!("{what} - {x}"));
        }
    }
    if a.entry.on_fault != b.entry.on_fault {
        out.push(format!("on-fault: {} → {}", policy(a.entry.on_fault), policy(b.entry.on_fault)));
    }
    if a.facts.tools != b.facts.tools {
        out.push(format!("tools: [{}] → [{}]", a.facts.tools.join(", "), b.facts.tools.join(", ")));
    }
    out
}

fn policy(p: FailurePolicy) -> String {
    match p {
        FailurePolicy::Skip => "skip".into(),
        FailurePolicy::Abort => "abort".into(),
        FailurePolicy::Disable { after } => format!("disable (after {after})"),
    }
}

/// Leaves of a JSON value by dotted path; arrays and scalars are leaves.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                leaves(&format!("{prefix}.{k}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn value_diff(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    let (mut la, mut lb) = (BTreeMap::new(), BTreeMap::new());
    leaves(prefix, a, &mut la);
    leaves(prefix, b, &mut lb);
    let empty = |m: &BTreeMap<String, Value>| m.len() == 1 && m.get(prefix).is_some_and(|v| v == &Value::Object(Default::default()));
    if empty(&la) {
        la.clear();
    }
    if empty(&lb) {
        lb.clear();
    }
    let keys: std::collections::BTreeSet<&String> = la.keys().chain(lb.keys()).collect();
    for k in keys {
        match (la.get(k), lb.get(k)) {
            (Some(x), Some(y)) if x != y => out.push(format!("{k}: {x} → {y}")),
            (Some(x), None) => out.push(format!("{k}: {x} → (unset)")),
            (None, Some(y)) => out.push(format!("{k}: (unset) → {y}")),
            _ => {}
        }
    }
}

impl fmt::Display for HarnessDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "a {}", self.a)?;
        writeln!(f, "b {}", self.b)?;
        if self.is_empty() {
            return writeln!(f, "the same harness");
        }
        for change in &self.processors {
            match change {
                Change::Added { name, component } => writeln!(f, "+ {name} ({})", component.short())?,
                Change::Removed { name, component } => writeln!(f, "- {name} ({})", component.short())?,
                Change::Changed { name, details } => {
                    writeln!(f, "~ {name}")?;
                    for d in details {
                        writeln!(f, "    {d}")?;
                    }
                }
            }
        }
        if let Some((a, b)) = &self.order {
            writeln!(f, "order: {} → {}", a.join(", "), b.join(", "))?;
        }
        for t in &self.tools {
            writeln!(f, "tools: {t}")?;
        }
        if let Some(system) = &self.system {
            writeln!(f, "system prompt:")?;
            write!(f, "{system}")?;
        }
        Ok(())
    }
}
