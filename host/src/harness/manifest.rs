//! Harness manifests: TOML in, spans kept, every mistake pointed at.
//!
//! Parsing is two phases, like ripgrep's low/high args. [`Manifest::parse`]
//! reads the text into a spanned tree (`toml::de::DeTable`) and walks it by
//! hand, checking every key and type; it does no I/O. [`Workshop::resolve`]
//! then builds sources, resolves component ids against the store, probes each
//! processor and composes them. Errors from either phase carry the span of
//! the key or value at fault and render as a snippet with a caret and a
//! `help:` line (see [`ManifestError`]).
//!
//! The walk is hand-written rather than serde-derived so that an unknown key
//! names the closest valid one, a wrong type says what was expected with an
//! example, and a rule broken at resolution (a group conflict, a refused
//! config) points at the entry that broke it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use super::error::{AssembleError, ProbeError};
use super::report::{line_col, render};
use super::{name_ref, Harness, ProcessorEntry, ToolPolicy, Workshop};
use crate::sandbox::{FailurePolicy, Grants, Limits};
use crate::store::{ResolveError, Store};

/// A manifest error, rendered against its source. `Display` is the whole
/// report (headline, snippet, label, `help:`), ready to print after `error: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file, as given.
    pub file: String,
    /// 1-based position of the span's start (0, 0 when the file is unreadable).
    pub line: usize,
    pub col: usize,
    /// What is wrong, in one line (the label under the span).
    pub message: String,
    pub help: Option<String>,
    rendered: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl std::error::Error for ManifestError {}

impl ManifestError {
    pub(crate) fn unreadable(path: &Path, e: &std::io::Error) -> ManifestError {
        let file = path.display().to_string();
        let message = format!("cannot read harness manifest `{file}`: {e}");
        ManifestError { file, line: 0, col: 0, rendered: message.clone(), message, help: None }
    }
}

/// How a manifest names a processor's component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorRef {
    /// A processor crate directory (resolved against the manifest's folder), built on the fly.
    Source(PathBuf),
    /// A component id or unique id prefix in the store.
    Component(String),
}

/// One `[[processors]]` entry, checked but not resolved.
#[derive(Clone, Debug)]
struct EntrySyntax {
    reference: ProcessorRef,
    /// The `source`/`component` value as written, and its span.
    written: String,
    ref_span: Range<usize>,
    config: Map<String, Value>,
    config_span: Option<Range<usize>>,
    limits: Limits,
    grants: Grants,
    on_fault: FailurePolicy,
}

/// A parsed manifest: every key and type checked, nothing resolved yet.
#[derive(Clone, Debug)]
pub struct Manifest {
    file: String,
    dir: PathBuf,
    text: String,
    name: Option<(String, Range<usize>)>,
    system: String,
    deny: Vec<String>,
    deny_span: Option<Range<usize>>,
    text_actions: bool,
    entries: Vec<EntrySyntax>,
}

/// A resolved manifest: the harness and its display name.
#[derive(Clone, Debug)]
pub struct Authored {
    /// `name` from the manifest, or the file's stem.
    pub name: String,
    pub harness: Harness,
}

const TOP_KEYS: &[&str] = &["name", "system", "tools", "processors"];
const TOOLS_KEYS: &[&str] = &["deny", "text_actions"];
const ENTRY_KEYS: &[&str] = &["source", "component", "config", "limits", "grants", "on-fault", "after"];
const LIMIT_KEYS: &[&str] = &["fuel", "init_fuel", "deadline_ms", "init_deadline_ms", "memory_bytes", "output_bytes", "host_calls"];
const GRANT_KEYS: &[&str] = &["read", "net"];
const POLICIES: &[&str] = &["skip", "abort", "disable"];

type Entry<'a, 'i> = (&'a Spanned<DeString<'i>>, &'a Spanned<DeValue<'i>>);

/// The source text and file name errors are rendered against.
struct Doc<'t> {
    file: &'t str,
    text: &'t str,
}

impl Doc<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>, help: Option<String>) -> ManifestError {
        let message = message.into();
        let (line, col) = line_col(self.text, span.start);
        let rendered = render(self.file, self.text, span, &message, help.as_deref());
        ManifestError { file: self.file.to_string(), line, col, message, help, rendered }
    }

    /// Keys in document order, each checked against `allowed`.
    fn keys<'a, 'i>(&self, table: &'a DeTable<'i>, allowed: &[&str], place: &str) -> Result<Vec<Entry<'a, 'i>>, ManifestError> {
        let mut entries: Vec<Entry<'a, 'i>> = table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (key, _) in &entries {
            let name = key.get_ref().as_ref();
            if !allowed.contains(&name) {
                let valid = allowed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
                let help = match closest(name, allowed) {
                    Some(best) => format!("did you mean `{best}`? the keys allowed in {place} are {valid}"),
                    None => format!("the keys allowed in {place} are {valid}"),
                };
                return Err(self.err(key.span(), format!("unknown key `{name}` in {place}"), Some(help)));
            }
        }
        Ok(entries)
    }

    fn type_err(&self, key: &str, value: &Spanned<DeValue<'_>>, expected: &str, example: &str) -> ManifestError {
        let found = value.get_ref().type_str();
        self.err(value.span(), format!("`{key}` must be {expected}, found {} {found}", article(found)), Some(format!("for example: {example}")))
    }

    fn string<'a>(&self, key: &str, value: &'a Spanned<DeValue<'_>>, example: &str) -> Result<&'a str, ManifestError> {
        value.get_ref().as_str().ok_or_else(|| self.type_err(key, value, "a string", example))
    }

    fn table<'a, 'i>(&self, key: &str, value: &'a Spanned<DeValue<'i>>, example: &str) -> Result<&'a DeTable<'i>, ManifestError> {
        value.get_ref().as_table().ok_or_else(|| self.type_err(key, value, "a table", example))
    }

    fn strings(&self, key: &str, value: &Spanned<DeValue<'_>>, example: &str) -> Result<Vec<String>, ManifestError> {
        let items = value.get_ref().as_array().ok_or_else(|| self.type_err(key, value, "an array of strings", example))?;
        items
            .iter()
            .map(|item| match item.get_ref().as_str() {
                Some("") => Err(self.err(item.span(), format!("`{key}` holds an empty string"), Some("remove it".into()))),
                Some(s) => Ok(s.to_string()),
                None => Err(self.type_err(&format!("each item of `{key}`"), item, "a string", example)),
            })
            .collect()
    }

    fn integer(&self, key: &str, value: &Spanned<DeValue<'_>>, example: &str) -> Result<u64, ManifestError> {
        let int = value.get_ref().as_integer().ok_or_else(|| self.type_err(key, value, "a whole number", example))?;
        let n = i128::from_str_radix(int.as_str(), int.radix()).ok();
        match n {
            Some(n) if n < 0 => Err(self.err(value.span(), format!("`{key}` must not be negative"), Some(format!("for example: {example}")))),
            Some(n) => u64::try_from(n).map_err(|_| self.err(value.span(), format!("`{key}` is too large"), Some(format!("for example: {example}")))),
            None => Err(self.err(value.span(), format!("`{key}` is too large"), Some(format!("for example: {example}")))),
        }
    }

    /// A TOML value as JSON (for processor config).
    fn json(&self, key: &str, value: &Spanned<DeValue<'_>>) -> Result<Value, ManifestError> {
        Ok(match value.get_ref() {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Value::from(n),
                Err(_) => return Err(self.err(value.span(), format!("config value `{key}` does not fit in a 64-bit integer"), Some("write it as a string and parse it in the processor".into()))),
            },
            DeValue::Float(f) => match f.as_str().parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Some(n) => Value::Number(n),
                None => return Err(self.err(value.span(), format!("config value `{key}` is not a finite number, which JSON cannot hold"), Some("use a finite number, or a string".into()))),
            },
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(_) => {
                return Err(self.err(value.span(), format!("config value `{key}` is a TOML datetime, which JSON cannot hold"), Some(format!("quote it: {key} = \"...\""))))
            }
            DeValue::Array(items) => Value::Array(items.iter().map(|item| self.json(key, item)).collect::<Result<_, _>>()?),
            DeValue::Table(t) => Value::Object(self.json_table(t)?),
        })
    }

    fn json_table(&self, table: &DeTable<'_>) -> Result<Map<String, Value>, ManifestError> {
        let mut map = Map::new();
        for (k, v) in table.iter() {
            map.insert(k.get_ref().to_string(), self.json(k.get_ref(), v)?);
        }
        Ok(map)
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The allowed key closest to `key`, if any is close enough to be a typo.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    allowed
        .iter()
        .map(|k| (*k, strsim::jaro_winkler(&norm(key), &norm(k))))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

impl Manifest {
    /// Parse and check `text`, the contents of the manifest at `path`. No I/O.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let file = path.display().to_string();
        let doc = Doc { file: &file, text };
        let root = DeTable::parse(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            doc.err(span, format!("invalid TOML: {}", e.message().trim()), Some("fix the syntax here; see https://toml.io for the format".into()))
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut m = Manifest {
            file: file.clone(),
            dir,
            text: text.to_string(),
            name: None,
            system: String::new(),
            deny: Vec::new(),
            deny_span: None,
            text_actions: false,
            entries: Vec::new(),
        };
        for (key, value) in doc.keys(root.get_ref(), TOP_KEYS, "a harness manifest")? {
            match key.get_ref().as_ref() {
                "name" => m.name = Some((doc.string("name", value, "name = \"stock\"")?.to_string(), value.span())),
                "system" => m.system = doc.string("system", value, "system = \"You are a careful agent. {tools}\"")?.to_string(),
                "tools" => {
                    let example = "[tools] with deny = [\"buy_now\"] and text_actions = false";
                    for (k, v) in doc.keys(doc.table("tools", value, example)?, TOOLS_KEYS, "[tools]")? {
                        match k.get_ref().as_ref() {
                            "deny" => {
                                m.deny = doc.strings("deny", v, "deny = [\"buy_now\"]")?;
                                m.deny_span = Some(v.span());
                            }
                            _ => m.text_actions = v.get_ref().as_bool().ok_or_else(|| doc.type_err("text_actions", v, "true or false", "text_actions = false"))?,
                        }
                    }
                }
                _ => {
                    let example = "[[processors]] followed by source = \"../processors/loop-guard\"";
                    let items = value.get_ref().as_array().ok_or_else(|| doc.type_err("processors", value, "an array of tables ([[processors]])", example))?;
                    for item in items.iter() {
                        m.entries.push(parse_entry(&doc, &m.dir, item)?);
                    }
                }
            }
        }
        Ok(m)
    }

    /// The display name: `name`, or the file's stem.
    pub fn name(&self) -> String {
        match &self.name {
            Some((name, _)) => name.clone(),
            None => Path::new(&self.file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "harness".into()),
        }
    }

    /// The system prompt template.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// How each processor is named, in manifest order.
    pub fn processors(&self) -> impl Iterator<Item = &ProcessorRef> {
        self.entries.iter().map(|e| &e.reference)
    }

    fn doc(&self) -> Doc<'_> {
        Doc { file: &self.file, text: &self.text }
    }
}

fn parse_entry(doc: &Doc<'_>, dir: &Path, item: &Spanned<DeValue<'_>>) -> Result<EntrySyntax, ManifestError> {
    let place = "a [[processors]] entry";
    let table = item.get_ref().as_table().ok_or_else(|| doc.type_err("each item of `processors`", item, "a table", "[[processors]] followed by source = \"../processors/loop-guard\""))?;
    let mut reference: Option<(ProcessorRef, String, Range<usize>)> = None;
    let mut config = Map::new();
    let mut config_span = None;
    let mut limits = Limits::default();
    let mut limit_spans: Vec<(String, Range<usize>)> = Vec::new();
    let mut grants = Grants::default();
    let mut policy: Option<(String, Range<usize>)> = None;
    let mut after: Option<(u64, Range<usize>)> = None;
    for (key, value) in doc.keys(table, ENTRY_KEYS, place)? {
        let k = key.get_ref().as_ref();
        match k {
            "source" | "component" => {
                if let Some((_, _, first)) = &reference {
                    let (l, c) = line_col(doc.text, first.start);
                    return Err(doc.err(key.span(), "a processor entry names its component twice", Some(format!("keep either `source` or `component` (the other is at line {l}, column {c})"))));
                }
                let example = if k == "source" { "source = \"../processors/loop-guard\"" } else { "component = \"4a69305b\"" };
                let written = doc.string(k, value, example)?.to_string();
                let r = if k == "source" { ProcessorRef::Source(dir.join(&written)) } else { ProcessorRef::Component(written.clone()) };
                reference = Some((r, written, value.span()));
            }
            "config" => {
                let t = doc.table("config", value, "config = { window = 8, block_after = 3 }")?;
                config = doc.json_table(t)?;
                config_span = Some(value.span());
            }
            "limits" => {
                for (lk, lv) in doc.keys(doc.table("limits", value, "limits = { fuel = 5000000 }")?, LIMIT_KEYS, "limits")? {
                    let name = lk.get_ref().as_ref();
                    let n = doc.integer(name, lv, &format!("{name} = {}", limit_default(name)))?;
                    set_limit(&mut limits, name, n);
                    limit_spans.push((name.to_string(), lv.span()));
                }
            }
            "grants" => {
                for (gk, gv) in doc.keys(doc.table("grants", value, "grants = { read = [\"data\"], net = [\"example.com\"] }")?, GRANT_KEYS, "grants")? {
                    if gk.get_ref().as_ref() == "read" {
                        grants.read = doc.strings("read", gv, "read = [\"data\"]")?.into_iter().map(PathBuf::from).collect();
                    } else {
                        grants.net = doc.strings("net", gv, "net = [\"example.com\"]")?;
                    }
                }
            }
            "on-fault" => policy = Some((doc.string("on-fault", value, "on-fault = \"skip\"")?.to_string(), value.span())),
            _ => after = Some((doc.integer("after", value, "after = 3")?, value.span())),
        }
    }
    let Some((reference, written, ref_span)) = reference else {
        return Err(doc.err(
            entry_head(doc.text, item.span()),
            "this processor entry names no component",
            Some("add `source = \"<crate dir>\"` (built on the fly) or `component = \"<id or prefix>\"` (already in the store)".into()),
        ));
    };
    if let Err(e) = limits.validate() {
        let span = limit_spans.iter().find(|(n, _)| n == e.name).map(|(_, s)| s.clone()).unwrap_or(ref_span.clone());
        return Err(doc.err(span, format!("`{}` = {} is out of range: {}", e.name, e.value, e.expected), Some(format!("set `{}` within range, or leave it out for the default ({})", e.name, limit_default(e.name)))));
    }
    let on_fault = match (policy, after) {
        (None, None) => FailurePolicy::Skip,
        (Some((p, span)), after) => match (p.as_str(), after) {
            ("skip", None) => FailurePolicy::Skip,
            ("abort", None) => FailurePolicy::Abort,
            ("disable", Some((n, span))) => {
                if n == 0 || n > u32::MAX as u64 {
                    return Err(doc.err(span, "`after` must be at least 1 (faults before the processor is taken out)", Some("for example: after = 3".into())));
                }
                FailurePolicy::Disable { after: n as u32 }
            }
            ("disable", None) => {
                return Err(doc.err(span, "`on-fault = \"disable\"` needs `after`: how many faults before the processor is taken out", Some("add `after = 3` to this [[processors]] entry".into())))
            }
            ("skip" | "abort", Some((_, after_span))) => {
                return Err(doc.err(after_span, format!("`after` applies only with `on-fault = \"disable\"`, not \"{p}\""), Some("remove `after`, or set `on-fault = \"disable\"`".into())))
            }
            (other, _) => {
                let help = match closest(other, POLICIES) {
                    Some(best) => format!("did you mean \"{best}\"? skip drops the call's edits and goes on; abort ends the task; disable skips and takes the processor out after `after` faults"),
                    None => "skip drops the call's edits and goes on; abort ends the task; disable skips and takes the processor out after `after` faults".into(),
                };
                return Err(doc.err(span, format!("`on-fault` must be \"skip\", \"abort\" or \"disable\", found \"{other}\""), Some(help)));
            }
        },
        (None, Some((_, after_span))) => {
            return Err(doc.err(after_span, "`after` applies only with `on-fault = \"disable\"` (the default is \"skip\")", Some("remove `after`, or set `on-fault = \"disable\"`".into())))
        }
    };
    Ok(EntrySyntax { reference, written, ref_span, config, config_span, limits, grants, on_fault })
}

/// The first line of an entry's span (its `[[processors]]` header, when it has one).
fn entry_head(text: &str, span: Range<usize>) -> Range<usize> {
    let start = span.start.min(text.len());
    let end = text[start..span.end.min(text.len())].find('\n').map(|i| start + i).unwrap_or(span.end.min(text.len()));
    start..end
}

fn set_limit(limits: &mut Limits, name: &str, n: u64) {
    match name {
        "fuel" => limits.fuel = n,
        "init_fuel" => limits.init_fuel = n,
        "deadline_ms" => limits.deadline_ms = n,
        "init_deadline_ms" => limits.init_deadline_ms = n,
        "memory_bytes" => limits.memory_bytes = n,
        "output_bytes" => limits.output_bytes = n,
        "host_calls" => limits.host_calls = n,
        other => unreachable!("`{other}` was checked against LIMIT_KEYS"),
    }
}

fn limit_default(name: &str) -> u64 {
    let d = Limits::default();
    match name {
        "fuel" => d.fuel,
        "init_fuel" => d.init_fuel,
        "deadline_ms" => d.deadline_ms,
        "init_deadline_ms" => d.init_deadline_ms,
        "memory_bytes" => d.memory_bytes,
        "output_bytes" => d.output_bytes,
        _ => d.host_calls,
    }
}

impl Workshop {
    /// Resolve a parsed manifest: build sources and store their components,
    /// resolve component ids, probe every processor and compose them.
    /// Errors point at the entry (or key) responsible.
    pub fn resolve(&self, m: &Manifest) -> Result<Authored, ManifestError> {
        let doc = m.doc();
        let name = m.name();
        if let Err(e) = Store::check_ref_name(&name_ref(&name)) {
            let reason = e.to_string();
            let span = m.name.as_ref().map(|(_, s)| s.clone()).unwrap_or(0..0);
            return Err(doc.err(span, format!("`{name}` cannot name a harness: {}", reason.rsplit(": ").next().unwrap_or(&reason)), Some("use letters, digits, `.`, `_`, `-` and `/`, e.g. name = \"stock\"".into())));
        }
        let mut entries = Vec::with_capacity(m.entries.len());
        for e in &m.entries {
            let component = match &e.reference {
                ProcessorRef::Component(prefix) => self.store.resolve(prefix).map_err(|err| {
                    let help = match &err {
                        ResolveError::Unknown { .. } => "store it first with `kiln build <crate dir>`, or name its crate with `source = \"<dir>\"`".to_string(),
                        ResolveError::Ambiguous { .. } => "give more digits of the id".to_string(),
                        _ => "give a component id (64 hex digits) or a unique prefix of at least 4, from `kiln store ls`".to_string(),
                    };
                    doc.err(e.ref_span.clone(), format!("no such component: {err}"), Some(help))
                })?,
                ProcessorRef::Source(dir) => {
                    if !dir.join("Cargo.toml").is_file() {
                        return Err(doc.err(
                            e.ref_span.clone(),
                            format!("no Cargo.toml at `{}` (looked in {})", e.written, dir.display()),
                            Some("`source` is a processor crate directory, relative to this manifest's folder".into()),
                        ));
                    }
                    let bytes = crate::build::build_processor(dir, &self.build_dir)
                        .map_err(|err| doc.err(e.ref_span.clone(), format!("cannot build `{}`", e.written), Some(err.to_string())))?;
                    self.store.put(&bytes).map_err(|err| doc.err(e.ref_span.clone(), format!("cannot store the component built from `{}`: {err}", e.written), err.hint().map(str::to_string)))?
                }
            };
            entries.push(ProcessorEntry { component, config: e.config.clone(), limits: e.limits.clone(), grants: e.grants.clone(), on_fault: e.on_fault });
        }
        let tools = ToolPolicy::new(m.deny.clone(), m.text_actions);
        let harness = Harness::assemble(self.probe.clone(), m.system.clone(), tools, entries).map_err(|err| match err {
            AssembleError::Probe { index, source } => {
                let e = &m.entries[index];
                match &source {
                    ProbeError::Rejected { processor, reason } => {
                        doc.err(e.config_span.clone().unwrap_or(e.ref_span.clone()), format!("`{processor}` refused this config"), Some(reason.clone()))
                    }
                    ProbeError::NotAProcessor { reason, .. } => {
                        doc.err(e.ref_span.clone(), format!("`{}` is not a kiln processor", e.written), Some(reason.clone()))
                    }
                    other => doc.err(e.ref_span.clone(), other.to_string(), Some("check the store with `kiln store verify`".into())),
                }
            }
            AssembleError::Compose(c) => doc.err(m.entries[c.at()].ref_span.clone(), c.to_string(), Some(c.hint())),
            AssembleError::EmptyDeny => doc.err(m.deny_span.clone().unwrap_or(0..0), "`deny` holds an empty tool name", Some("remove it".into())),
        })?;
        Ok(Authored { name, harness })
    }
}
