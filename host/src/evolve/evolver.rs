//! The Evolver: directions in, candidates out, each a typed edit with a
//! change manifest, built and smoke-tested.
//!
//! Without a `meta` model, code comes from the template catalog
//! (`templates/`), with parameters fitted to the evidence and passed as
//! config: the final-answer guard's message follows the failure it answers,
//! the tool-alias table maps exactly the invented names seen in traces to
//! the nearest real tool, tuned stock configs step from the current value.
//! With one, the model writes each processor (see [`super::meta`]) and
//! compile errors go back to it for a bounded number of repairs. Either
//! way the source is compiled by kiln and replayed on recorded traces before
//! anything else looks at it.
//!
//! Every candidate is a harness room [`Edit`] of the incumbent [`Harness`],
//! applied through the harness room's own edits, so a candidate that would
//! break a composition rule (a second processor in a singleton group, a
//! colliding tool) is refused with that rule's message, and the candidate
//! harness carries its parent and edit as lineage.
//!
//! A `judge` may ask for one revision of a candidate ([`Workbench::rewrite`],
//! [`Workbench::narrow`]). A model-written candidate keeps its writer's
//! conversation, so the request goes back to the same conversation and the
//! reply takes the same road: compile, repair, smoke. A template has no
//! writer: the offline planner can only narrow its parameters, and only in
//! ways that cannot widen what it does (drop the aliases or predicted
//! targets the request names); any other request is left unanswered.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::digest::{Category, Digest, Pointer};
use super::forge::{smoke, template_source, Built, Forge, ForgeError, SmokeReport};
use super::meta;
use super::plan::{lever, Bucket, Direction, LeverKind};
use super::rollout::{Lab, TaskResult};
use crate::chat::Message;
use crate::harness::{to_canonical, Edit, Harness, ProcessorEntry};
use crate::models::Model;
use crate::sandbox::Loaded;
use crate::store::ObjectId;
use crate::trace::Event;

/// What a candidate predicts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    pub tasks_will_unlock: Vec<String>,
    pub tasks_will_stabilize: Vec<String>,
    pub tasks_at_risk: Vec<String>,
}

/// What must fire for a flip to count as this candidate's doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// `processor_invocation`, `prompt_feature` or `processor_absent`.
    pub kind: String,
    pub name: String,
    pub expected_min_calls: u32,
}

/// The change manifest (paper Table 9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub candidate_id: String,
    pub lever: String,
    pub bucket: Bucket,
    pub dimension: String,
    pub theme: Category,
    /// The harness room's edit of the parent, in [`Edit::to_json`]'s form
    /// (`{"op": "insert", "name", "processor": {...}}`, `set-config`,
    /// `append-system-line`, `remove`, ...); `null` when the lever never got
    /// as far as an edit (its code did not build).
    #[serde(with = "edit_json")]
    pub edit: Option<Edit>,
    /// Trace pointers the edit answers (observed, not assumed).
    pub capability_evidence: Vec<Pointer>,
    pub file_changes: Vec<String>,
    pub predicted_impact: Impact,
    pub attribution_signature: Attribution,
    /// The incumbent's id and the candidate harness's id (harness room
    /// canonical ids, hex; empty when there is no candidate harness).
    pub parent: String,
    pub harness: String,
}

impl Manifest {
    /// The edit in one line, for ledgers and the Critic's reading: the
    /// config or prompt text is written out in full (the Critic scans it).
    pub fn describe_edit(&self) -> String {
        match &self.edit {
            Some(Edit::Insert { name, processor }) => format!("insert {name} {}", processor.config_text()),
            Some(Edit::Replace { target, name, processor }) => {
                format!("replace {target} with {name} {}", processor.config_text())
            }
            Some(Edit::Remove { target }) => format!("remove {target}"),
            Some(Edit::SetConfig { target, config }) => format!("set-config {target} {}", canonical_text(config)),
            Some(Edit::AppendSystemLine { line }) => format!("prompt line {line:?}"),
            Some(Edit::SetSystem { text }) => format!("system prompt {text:?}"),
            Some(other @ Edit::Merge { .. }) => other.summary(),
            None => format!("no edit: {} was not built", self.attribution_signature.name),
        }
    }
}

/// Canonical JSON text of a config object (sorted keys, no whitespace).
fn canonical_text(config: &serde_json::Map<String, Value>) -> String {
    String::from_utf8(to_canonical(&Value::Object(config.clone()))).expect("JSON is UTF-8")
}

/// `Option<Edit>` as [`Edit::to_json`]'s form, or `null`.
mod edit_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::harness::Edit;

    pub fn serialize<S: Serializer>(edit: &Option<Edit>, s: S) -> Result<S::Ok, S::Error> {
        edit.as_ref().map(Edit::to_json).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Edit>, D::Error> {
        match Option::<serde_json::Value>::deserialize(d)? {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => Edit::from_json(&v).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// How the code of a candidate came to be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Compile attempts (0: no code to build, or a cached component).
    pub attempts: u32,
    /// Compile errors, first lines, one per failed attempt.
    pub errors: Vec<String>,
    pub component: Option<String>,
    /// blake3 of the source that built.
    pub source: Option<String>,
    pub meta_tokens: u64,
}

/// A candidate as the Critic and the Gate see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    pub manifest: Manifest,
    pub build: BuildRecord,
    pub smoke: Option<SmokeReport>,
    /// Set when the Evolver itself ended the candidate: (stage, reason).
    pub failed: Option<(String, String)>,
    /// The model-written or template source, for the Critic's reading.
    #[serde(skip)]
    pub source_text: Option<String>,
    /// The candidate harness: the incumbent with the edit applied.
    #[serde(skip)]
    pub harness: Option<Harness>,
    #[serde(skip)]
    pub loaded: Option<Arc<Loaded>>,
    /// The config the new or changed processor runs with.
    #[serde(skip)]
    pub config_text: Option<String>,
    /// The processors ahead of it in the candidate harness.
    #[serde(skip)]
    pub before: Vec<String>,
    /// The meta writer's conversation that produced `source_text` (prompts
    /// and replies, the last reply included); empty for templates, stock
    /// processors, and config or prompt edits. A judge's revision request
    /// continues it.
    #[serde(skip)]
    pub conversation: Vec<Message>,
}

/// Inputs the Evolver shares across a round.
pub struct Workbench<'a> {
    pub lab: &'a Lab,
    pub forge: &'a Forge,
    pub meta: Option<&'a dyn Model>,
    pub repairs: u32,
    /// Meta-model tokens still allowed.
    pub meta_tokens_left: u64,
    pub digest: &'a Digest,
    pub results: &'a [TaskResult],
    pub incumbent: &'a Harness,
    pub round: u32,
    /// Harness ids already tried (with the candidate that had them): a
    /// direction that would only repeat one is skipped, not proposed again.
    pub tried: &'a std::collections::BTreeMap<String, String>,
    /// What was skipped that way, as `lever (same as C-Rn-NN)`.
    pub skipped: Vec<String>,
}

fn prompt_line(theme: Category) -> &'static str {
    match theme {
        Category::PrematureStop => "Do not give a final answer until the task is done; keep using the tools.",
        Category::InvalidAction => {
            "If an action gives `Nothing happens.`, look around and choose a different, valid action."
        }
        Category::ToolError => "Read every tool error and fix the call before you try again.",
        _ => "Before you finish, check the result against every requirement of the goal.",
    }
}

/// Fit a tool-alias table: each invented name to the one real tool it most
/// plausibly meant (one contains the other, or Jaro-Winkler similarity of at
/// least 0.8); names with no or two equally good matches are left out.
pub fn fit_aliases(digest: &Digest) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for t in &digest.tasks {
        for bad in &t.unknown_tools {
            let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '_', ' '], "");
            let mut scored: Vec<(f64, &String)> = t
                .known_tools
                .iter()
                .map(|k| {
                    let (a, b) = (norm(bad), norm(k));
                    let s = if a.contains(&b) || b.contains(&a) { 1.0 } else { strsim::jaro_winkler(&a, &b) };
                    (s, k)
                })
                .filter(|(s, _)| *s >= 0.8)
                .collect();
            scored.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal).then(x.1.cmp(y.1)));
            if let Some((best, name)) = scored.first() {
                if scored.get(1).map(|(s, _)| s < best).unwrap_or(true) {
                    out.insert(bad.clone(), Value::String((*name).clone()));
                }
            }
        }
    }
    out
}

/// Insert a built component with `config` (an object), default limits, no
/// grants, the `skip` failure policy.
fn insert_edit(built: &Built, config: Value) -> Edit {
    let component: ObjectId = built.component.parse().expect("a built component's id is a 64-digit hex id");
    let config = match config {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    Edit::Insert { name: built.loaded.info.name.clone(), processor: ProcessorEntry::new(component).with_config(config) }
}

/// Traces to smoke-test on: up to four of the theme's failing tasks, then up
/// to four solved ones.
pub fn smoke_traces(lab: &Lab, results: &[TaskResult], targets: &[String]) -> Vec<(String, Vec<Event>)> {
    let failing = results.iter().filter(|r| targets.contains(&r.task)).take(4);
    let solved = results.iter().filter(|r| r.success).take(4);
    failing.chain(solved).filter_map(|r| lab.events(&r.trace).ok().map(|e| (r.task.clone(), e))).collect()
}

/// What an edit means for its manifest.
struct EditFacts {
    /// The attribution signature: what must fire, and its name.
    attr_kind: &'static str,
    attr_name: String,
    /// The config the new or changed processor runs with (canonical text).
    config_text: Option<String>,
    file_changes: Vec<String>,
}

/// The attribution signature, config text and file changes of `edit`.
/// `source` is the build's source hash (`stock:<name>` for a stock
/// processor), `intended` the processor a failed lever meant to add, and
/// `crate_name` the crate generated source is built in.
fn edit_facts(edit: Option<&Edit>, source: Option<&str>, intended: Option<String>, crate_name: &str) -> EditFacts {
    let (attr_kind, attr_name) = match edit {
        Some(Edit::Insert { name, .. } | Edit::Replace { name, .. }) => ("processor_invocation", name.clone()),
        Some(Edit::SetConfig { target, .. }) => ("processor_invocation", target.clone()),
        Some(Edit::Remove { target }) => ("processor_absent", target.clone()),
        Some(Edit::AppendSystemLine { line }) => ("prompt_feature", line.clone()),
        Some(Edit::SetSystem { text }) => ("prompt_feature", text.clone()),
        Some(Edit::Merge { other }) => ("processor_invocation", other.to_hex()),
        None => ("processor_invocation", intended.unwrap_or_default()),
    };
    let config_text = match edit {
        Some(Edit::Insert { processor, .. } | Edit::Replace { processor, .. }) => Some(processor.config_text()),
        Some(Edit::SetConfig { config, .. }) => Some(canonical_text(config)),
        _ => None,
    };
    let file_changes = match (edit, source) {
        (Some(Edit::AppendSystemLine { .. } | Edit::SetSystem { .. }), _) => vec!["harness.system".to_string()],
        (Some(Edit::SetConfig { target, .. }), _) => vec![format!("processors.{target}.config")],
        (Some(Edit::Remove { target }), _) => vec![format!("processors.{target}")],
        (_, Some(src)) if src.starts_with("stock:") => vec![format!("processors.{}", &src[6..])],
        (_, Some(src)) => vec![
            format!("processors.{} (source {})", attr_name, &src[..12.min(src.len())]),
            format!("cache/evolve-crates/{crate_name}/src/lib.rs"),
        ],
        _ => vec![format!("processors.{attr_name}")],
    };
    EditFacts { attr_kind, attr_name, config_text, file_changes }
}

/// The narrowing [`Workbench::narrow`] makes: drop from a tool-alias
/// table the invented names `asked` names (some alias must remain), and from
/// `impact` the task ids it names (some target to unlock must remain).
/// Returns what was dropped in one line, or why nothing could be.
fn narrow_by_names(edit: &mut Option<Edit>, impact: &mut Impact, asked: &str) -> Result<String, String> {
    let named: std::collections::BTreeSet<&str> = asked
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '/')))
        .filter(|t| !t.is_empty())
        .collect();
    let mut did = Vec::new();
    if let Some(Edit::Insert { processor, name }) = edit {
        if let Some(Value::Object(aliases)) = processor.config.get("aliases").cloned() {
            let (dropped, kept): (Vec<_>, Vec<_>) = aliases.into_iter().partition(|(k, _)| named.contains(k.as_str()));
            if !dropped.is_empty() && kept.is_empty() {
                return Err(format!(
                    "the request names every alias of {name}; dropping them all would leave nothing to revise"
                ));
            }
            if !dropped.is_empty() {
                did.push(format!(
                    "dropped the alias(es) {} from {name}",
                    dropped.iter().map(|(k, _)| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ));
                processor.config.insert("aliases".into(), Value::Object(kept.into_iter().collect()));
            }
        }
    }
    let keep =
        |ids: &[String]| -> Vec<String> { ids.iter().filter(|t| !named.contains(t.as_str())).cloned().collect() };
    let unlock = keep(&impact.tasks_will_unlock);
    if unlock.len() < impact.tasks_will_unlock.len() && !unlock.is_empty() {
        did.push(format!("dropped {} task(s) from the tasks to unlock", impact.tasks_will_unlock.len() - unlock.len()));
        impact.tasks_will_unlock = unlock;
    }
    let stabilize = keep(&impact.tasks_will_stabilize);
    if stabilize.len() < impact.tasks_will_stabilize.len() {
        did.push(format!(
            "dropped {} task(s) from the tasks to stabilize",
            impact.tasks_will_stabilize.len() - stabilize.len()
        ));
        impact.tasks_will_stabilize = stabilize;
    }
    if did.is_empty() {
        return Err("the offline planner can only narrow a candidate (drop the tool aliases or predicted targets \
                    a request names), and this request names none of this candidate's"
            .into());
    }
    Ok(did.join("; "))
}

/// The processors ahead of the one that must fire, in `harness`'s pipeline
/// (what a smoke test replays it behind).
fn ahead_of(harness: Option<&Harness>, a: &Attribution) -> Vec<String> {
    match harness {
        Some(h) if a.kind == "processor_invocation" => {
            h.processors().iter().map(|p| p.name().to_string()).take_while(|n| *n != a.name).collect()
        }
        _ => vec![],
    }
}

impl Workbench<'_> {
    fn excerpts(&self, theme: Category) -> String {
        let mut s = String::new();
        for t in self.digest.tasks.iter().filter(|t| t.category == theme).take(3) {
            let Ok(events) = self.lab.events(&t.trace) else { continue };
            let at = t
                .symptoms
                .iter()
                .find(|x| x.category == theme)
                .and_then(|x| x.evidence.first())
                .map(|p| p.event)
                .unwrap_or(0);
            s.push_str(&format!(
                "## {} (trace {}, events {}..={})\n",
                t.task,
                &t.trace[..12.min(t.trace.len())],
                at.saturating_sub(4),
                at
            ));
            for (i, e) in events.iter().enumerate().take(at + 1).skip(at.saturating_sub(4)) {
                let line = serde_json::to_string(e).unwrap_or_default();
                let line: String = line.chars().take(400).collect();
                s.push_str(&format!("{i}: {line}\n"));
            }
        }
        s
    }

    /// Ask the meta model for a processor, repairing compile errors.
    async fn model_written(
        &mut self,
        theme: Category,
        build: &mut BuildRecord,
    ) -> Result<(Built, String, Vec<Message>), (String, String)> {
        let messages =
            vec![Message::user(meta::first_prompt(theme.name(), &self.digest.summary(12), &self.excerpts(theme)))];
        self.write(messages, build).await
    }

    /// Go on with the meta writer's conversation `messages` (its last
    /// message is a request) until its reply compiles or the repairs run
    /// out. Returns the build, the source, and the conversation with the
    /// reply that built appended.
    async fn write(
        &mut self,
        mut messages: Vec<Message>,
        build: &mut BuildRecord,
    ) -> Result<(Built, String, Vec<Message>), (String, String)> {
        let model = self.meta.expect("only called with a meta model");
        loop {
            if self.meta_tokens_left == 0 {
                return Err(("evolver:budget".into(), "the meta-model token budget is spent".into()));
            }
            let x = meta::ask(model, &self.lab.store, &messages).await.map_err(|e| ("evolver:meta".to_string(), e))?;
            build.meta_tokens += x.tokens;
            self.meta_tokens_left = self.meta_tokens_left.saturating_sub(x.tokens);
            let Some(code) = meta::code_block(&x.reply) else {
                return Err((
                    "evolver:no-code".into(),
                    format!(
                        "the meta model's reply has no code block: {:?}",
                        x.reply.chars().take(120).collect::<String>()
                    ),
                ));
            };
            build.attempts += 1;
            match self.forge.build(&self.lab.rt, "model-written", &code) {
                Ok(b) => {
                    messages.push(Message::assistant(x.reply, vec![]));
                    return Ok((b, code, messages));
                }
                Err(ForgeError::Compile(errors)) => {
                    build
                        .errors
                        .push(errors.lines().filter(|l| l.contains("error")).take(3).collect::<Vec<_>>().join(" | "));
                    if build.attempts > self.repairs {
                        return Err((
                            "evolver:build".into(),
                            format!(
                                "still does not compile after {} repairs: {}",
                                self.repairs,
                                build.errors.last().cloned().unwrap_or_default()
                            ),
                        ));
                    }
                    messages.push(Message::assistant(x.reply, vec![]));
                    messages.push(Message::user(meta::repair_prompt(&errors)));
                }
                Err(e) => return Err(("evolver:build".into(), e.to_string())),
            }
        }
    }

    /// Make the candidate for one direction, or say why there is none to make.
    pub async fn propose(&mut self, d: &Direction, index: usize) -> Option<Candidate> {
        let l = lever(&d.lever)?;
        let theme_tasks: Vec<String> = d.tasks.clone();
        let solved: Vec<String> = self.results.iter().filter(|r| r.success).map(|r| r.task.clone()).collect();
        let stabilize: Vec<String> = self
            .digest
            .tasks
            .iter()
            .filter(|t| t.success && t.symptoms.iter().any(|s| s.category == d.theme))
            .map(|t| t.task.clone())
            .collect();
        let evidence: Vec<Pointer> = self
            .digest
            .tasks
            .iter()
            .filter(|t| t.category == d.theme)
            .flat_map(|t| t.symptoms.iter().filter(|s| s.category == d.theme).flat_map(|s| s.evidence.first().cloned()))
            .take(6)
            .collect();
        let mut build = BuildRecord::default();
        let mut source_text = None;
        let mut global = false;
        let mut built: Option<Built> = None;
        let mut conversation = Vec::new();
        // The edit, or (stage, reason) when the lever could not make one, with
        // the name of the processor it meant to add.
        let made: Result<Edit, (String, String, String)> = match l.kind {
            LeverKind::Template(name) => {
                let config = match name {
                    "final-answer-guard" => {
                        let reason = if d.theme == Category::MalformedCall {
                            "that was a tool call written as text, which ends the task: make it a real tool call"
                        } else {
                            "the task is not finished yet: keep working with the tools instead of answering"
                        };
                        json!({ "max_blocks": 2, "reason": reason })
                    }
                    "tool-alias" => {
                        let aliases = fit_aliases(self.digest);
                        if aliases.is_empty() {
                            return None; // nothing in the evidence to fit
                        }
                        json!({ "aliases": aliases })
                    }
                    _ => {
                        global = true;
                        json!({})
                    }
                };
                let src = template_source(name)?;
                source_text = Some(src.to_string());
                build.attempts = 1;
                match self.forge.build(&self.lab.rt, name, src) {
                    Ok(b) => {
                        build.component = Some(b.component.clone());
                        build.source = Some(b.source.clone());
                        let edit = insert_edit(&b, config);
                        built = Some(b);
                        Ok(edit)
                    }
                    Err(e) => {
                        build.errors.push(e.to_string());
                        Err(("evolver:build".into(), format!("template {name}: {e}"), name.into()))
                    }
                }
            }
            LeverKind::Stock(name) => {
                global = matches!(name, "goal-pin" | "observation-trim" | "history-compactor");
                match self.forge.stock(&self.lab.rt, name) {
                    Ok(b) => {
                        build.component = Some(b.component.clone());
                        build.source = Some(b.source.clone());
                        let edit = insert_edit(&b, json!({}));
                        built = Some(b);
                        Ok(edit)
                    }
                    Err(e) => Err(("evolver:build".into(), format!("stock processor {name}: {e}"), name.into())),
                }
            }
            LeverKind::Tune(name) => {
                let entry = &self.incumbent.processor(name)?.entry;
                let cur = entry.config.clone();
                let get = |k: &str, d: u64| cur.get(k).and_then(Value::as_u64).unwrap_or(d);
                let mut next = cur.clone();
                match name {
                    "loop-guard" => {
                        let (a, b) = (get("advise_after", 2), get("block_after", 4));
                        let (na, nb) =
                            (a.saturating_sub(1).max(1), b.saturating_sub(1).max(a.saturating_sub(1).max(1)));
                        if (na, nb) == (a, b) {
                            return None;
                        }
                        next.insert("advise_after".into(), json!(na));
                        next.insert("block_after".into(), json!(nb));
                    }
                    "step-budget" => {
                        let w = get("warn_at", 3);
                        if w >= 10 {
                            return None;
                        }
                        next.insert("warn_at".into(), json!((w + 2).min(10)));
                    }
                    _ => return None,
                }
                let component = entry.component;
                let loaded = match self.lab.rt.get(&component.to_hex()) {
                    Some(l) => l,
                    None => self.lab.rt.load(&self.lab.store.get(&component).ok()?).ok()?,
                };
                built = Some(Built { component: component.to_hex(), source: format!("config:{name}"), loaded });
                Ok(Edit::SetConfig { target: name.into(), config: next })
            }
            LeverKind::PromptLine => {
                global = true;
                Ok(Edit::AppendSystemLine { line: prompt_line(d.theme).into() })
            }
            LeverKind::RemoveFaulty => {
                let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
                for r in self.results {
                    for (p, _) in &r.faults {
                        *counts.entry(p.clone()).or_default() += 1;
                    }
                }
                let (target, _) = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
                self.incumbent.processor(&target)?;
                Ok(Edit::Remove { target })
            }
            LeverKind::ModelWritten => match self.model_written(d.theme, &mut build).await {
                Ok((b, code, messages)) => {
                    build.component = Some(b.component.clone());
                    build.source = Some(b.source.clone());
                    source_text = Some(code);
                    conversation = messages;
                    let edit = insert_edit(&b, json!({}));
                    built = Some(b);
                    Ok(edit)
                }
                Err((stage, reason)) => Err((stage, reason, "model-written".into())),
            },
        };
        let (edit, mut failed, intended) = match made {
            Ok(edit) => (Some(edit), None, None),
            Err((stage, reason, name)) => (None, Some((stage, reason)), Some(name)),
        };
        let harness = match (&edit, &failed) {
            (Some(edit), None) => match self.derive(edit) {
                Ok(h) => {
                    if let Some(prev) = self.tried.get(&h.id().to_hex()) {
                        self.skipped.push(format!("{} (same harness as {prev})", l.id));
                        return None;
                    }
                    Some(h)
                }
                Err(reason) => {
                    failed = Some(("evolver:edit".into(), reason));
                    None
                }
            },
            _ => None,
        };
        let crate_name = if l.kind == LeverKind::ModelWritten { "model-written" } else { l.id };
        let facts = edit_facts(edit.as_ref(), build.source.as_deref(), intended, crate_name);
        let manifest = Manifest {
            candidate_id: format!("C-R{}-{:02}", self.round, index + 1),
            lever: l.id.to_string(),
            bucket: l.bucket,
            dimension: l.dimension.to_string(),
            theme: d.theme,
            edit,
            capability_evidence: evidence,
            file_changes: facts.file_changes,
            predicted_impact: Impact {
                tasks_will_unlock: theme_tasks.clone(),
                tasks_will_stabilize: stabilize,
                tasks_at_risk: if global { solved } else { vec![] },
            },
            attribution_signature: Attribution {
                kind: facts.attr_kind.into(),
                name: facts.attr_name,
                expected_min_calls: 1,
            },
            parent: self.incumbent.id().to_hex(),
            harness: harness.as_ref().map(|h| h.id().to_hex()).unwrap_or_default(),
        };
        let mut cand = self.checked(manifest, build, failed, harness, built.as_ref(), facts.config_text);
        cand.source_text = source_text;
        cand.conversation = conversation;
        Some(cand)
    }

    /// Replay a candidate that is still standing on the traces of the tasks
    /// it targets and on solved ones; a failure ends it at `evolver:smoke`.
    fn smoke_test(&self, cand: &mut Candidate) {
        if cand.failed.is_none() {
            if let (Some(loaded), Some(cfg)) = (&cand.loaded, &cand.config_text) {
                let traces = smoke_traces(self.lab, self.results, &cand.manifest.predicted_impact.tasks_will_unlock);
                let report = smoke(&self.lab.rt, loaded, cfg, &cand.before, &traces);
                if !report.passed {
                    cand.failed = Some(("evolver:smoke".into(), report.reason.clone().unwrap_or_default()));
                }
                cand.smoke = Some(report);
            }
        }
    }

    /// Answer a judge's revision request for a model-written candidate:
    /// the writer's conversation goes on with `follow_up` (see
    /// [`super::judge::writer_follow_up`]) and the reply goes through the
    /// same compile, repair and smoke steps as the first proposal, with the
    /// same repair budget. The revision keeps the original's id, lever and
    /// predicted impact and runs with the original's config; its build
    /// record counts only the revision's attempts and tokens. A revision
    /// that comes out as the original harness again is ended at
    /// `evolver:unchanged`. `None` when `original` has no writer's
    /// conversation to continue (see [`Workbench::narrow`]).
    pub async fn rewrite(&mut self, original: &Candidate, follow_up: String) -> Option<Candidate> {
        if original.conversation.is_empty() || self.meta.is_none() {
            return None;
        }
        let config = match &original.manifest.edit {
            Some(Edit::Insert { processor, .. } | Edit::Replace { processor, .. }) => {
                Value::Object(processor.config.clone())
            }
            _ => json!({}),
        };
        let mut messages = original.conversation.clone();
        messages.push(Message::user(follow_up));
        let mut build = BuildRecord::default();
        let mut revised = match self.write(messages, &mut build).await {
            Ok((b, code, conversation)) => {
                build.component = Some(b.component.clone());
                build.source = Some(b.source.clone());
                let edit = insert_edit(&b, config);
                let mut c = self.revised(original, original.manifest.clone(), Some(edit), build, Some(&b), None);
                c.source_text = Some(code);
                c.conversation = conversation;
                c
            }
            Err(failed) => self.revised(original, original.manifest.clone(), None, build, None, Some(failed)),
        };
        if revised.failed.is_none() && revised.manifest.harness == original.manifest.harness {
            revised.failed = Some((
                "evolver:unchanged".into(),
                "the revised source builds the same harness as the original: the request was not answered".into(),
            ));
        }
        Some(revised)
    }

    /// Answer a judge's revision request for a candidate without a writer
    /// (a template, a stock processor, a config or prompt edit). The
    /// offline planner cannot rewrite code, so it only narrows, and only
    /// where narrowing cannot widen what the edit does or claims:
    /// - a tool-alias table drops the invented names `asked` names (at
    ///   least one alias must remain);
    /// - the predicted impact drops the task ids `asked` names from the
    ///   tasks to unlock (at least one must remain: the Gate needs a
    ///   target) and from the tasks to stabilize.
    ///
    /// A name counts when it appears in `asked` as a whole token (letters,
    /// digits, `_`, `-`, `/`). The narrowed candidate is derived, smoke-tested
    /// and (by the caller) reviewed again like any other. `Err` says why the
    /// request could not be answered; the caller then lets the original go
    /// on unchanged.
    pub fn narrow(&mut self, original: &Candidate, asked: &str) -> Result<(Candidate, String), String> {
        let mut edit = original.manifest.edit.clone();
        let mut manifest = original.manifest.clone();
        let did = narrow_by_names(&mut edit, &mut manifest.predicted_impact, asked)?;
        let built = original.loaded.as_ref().map(|loaded| Built {
            component: original.build.component.clone().unwrap_or_default(),
            source: original.build.source.clone().unwrap_or_default(),
            loaded: loaded.clone(),
        });
        // Same code, so the same build: the record is the original's (the
        // ledgers count it once).
        let mut c = self.revised(original, manifest, edit, original.build.clone(), built.as_ref(), None);
        c.source_text = original.source_text.clone();
        Ok((c, did))
    }

    /// A revision of `original` from `manifest` (its claims, possibly
    /// narrowed) and a new `edit`: derived from the incumbent, described,
    /// and smoke-tested like a first proposal. `failed` ends it where it
    /// stands.
    fn revised(
        &self,
        original: &Candidate,
        mut manifest: Manifest,
        edit: Option<Edit>,
        build: BuildRecord,
        built: Option<&Built>,
        mut failed: Option<(String, String)>,
    ) -> Candidate {
        let harness = match (&edit, &failed) {
            (Some(edit), None) => match self.derive(edit) {
                Ok(h) => Some(h),
                Err(reason) => {
                    failed = Some(("evolver:edit".into(), reason));
                    None
                }
            },
            _ => None,
        };
        let crate_name = match lever(&original.manifest.lever) {
            Some(l) if l.kind != LeverKind::ModelWritten => l.id,
            _ => "model-written",
        };
        let intended = Some(original.manifest.attribution_signature.name.clone());
        let facts = edit_facts(edit.as_ref(), build.source.as_deref(), intended, crate_name);
        manifest.edit = edit;
        manifest.file_changes = facts.file_changes;
        manifest.attribution_signature.kind = facts.attr_kind.into();
        manifest.attribution_signature.name = facts.attr_name;
        manifest.harness = harness.as_ref().map(|h| h.id().to_hex()).unwrap_or_default();
        self.checked(manifest, build, failed, harness, built, facts.config_text)
    }

    /// A candidate from its parts, smoke-tested unless it already failed;
    /// the caller adds the source text and the writer's conversation.
    fn checked(
        &self,
        manifest: Manifest,
        build: BuildRecord,
        failed: Option<(String, String)>,
        harness: Option<Harness>,
        built: Option<&Built>,
        config_text: Option<String>,
    ) -> Candidate {
        let mut cand = Candidate {
            before: ahead_of(harness.as_ref(), &manifest.attribution_signature),
            manifest,
            build,
            smoke: None,
            failed,
            source_text: None,
            harness,
            loaded: built.map(|b| b.loaded.clone()),
            config_text,
            conversation: vec![],
        };
        self.smoke_test(&mut cand);
        cand
    }

    /// The incumbent with `edit` applied, through the harness room's edits
    /// (so every composition rule holds), or why not. A prompt line the
    /// prompt already has is refused here: the edit would change nothing.
    fn derive(&self, edit: &Edit) -> Result<Harness, String> {
        let child = self.incumbent.apply(edit, &self.lab.store).map_err(|e| match e {
            crate::harness::HarnessError::Edit { source, .. } => source.to_string(),
            other => other.to_string(),
        })?;
        match edit {
            Edit::AppendSystemLine { line } if child.id() == self.incumbent.id() => {
                Err(format!("the prompt already has the line {line:?}"))
            }
            _ => Ok(child),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolve::digest::{aggregate, TaskDigest};
    use crate::trace::EndReason;

    #[test]
    fn narrowing_drops_only_what_the_request_names() {
        let aliases = json!({ "aliases": { "buy_now": "buy", "search_products": "search" } });
        let insert = || {
            Some(Edit::Insert {
                name: "tool-alias".into(),
                processor: ProcessorEntry::new(ObjectId::of(b"c")).with_config(aliases.as_object().unwrap().clone()),
            })
        };
        let impact = || Impact {
            tasks_will_unlock: vec!["shop/train/3".into(), "shop/train/31".into()],
            tasks_will_stabilize: vec!["shop/train/4".into()],
            tasks_at_risk: vec!["shop/train/5".into()],
        };
        let (mut edit, mut claims) = (insert(), impact());
        let did = narrow_by_names(
            &mut edit,
            &mut claims,
            "Drop the `buy_now` alias; shop/train/3, shop/train/4 and shop/train/5 are not supported.",
        )
        .unwrap();
        assert_eq!(did, "dropped the alias(es) `buy_now` from tool-alias; dropped 1 task(s) from the tasks to unlock; dropped 1 task(s) from the tasks to stabilize");
        let Some(Edit::Insert { processor, .. }) = &edit else { panic!() };
        assert_eq!(processor.config["aliases"], json!({ "search_products": "search" }));
        assert_eq!(claims.tasks_will_unlock, ["shop/train/31"], "a whole id only: shop/train/31 stays");
        assert!(claims.tasks_will_stabilize.is_empty());
        assert_eq!(claims.tasks_at_risk, ["shop/train/5"], "tasks at risk are never narrowed away");

        // Nothing named: unanswered. Everything named: nothing is left to revise.
        let e = narrow_by_names(&mut insert(), &mut impact(), "Make it smarter.").unwrap_err();
        assert!(e.contains("names none of this candidate's"), "{e}");
        let e = narrow_by_names(&mut insert(), &mut impact(), "buy_now and search_products are wrong").unwrap_err();
        assert!(e.contains("every alias"), "{e}");
        // The last target to unlock is kept: the Gate needs one.
        let mut one = Impact { tasks_will_unlock: vec!["shop/train/3".into()], ..Default::default() };
        assert!(narrow_by_names(&mut None, &mut one, "shop/train/3").is_err());
        assert_eq!(one.tasks_will_unlock, ["shop/train/3"]);
    }

    #[test]
    fn aliases_fit_the_invented_names_only() {
        let t = TaskDigest {
            task: "t".into(),
            seed: 1,
            trace: "00".into(),
            success: false,
            reason: EndReason::Done,
            steps: 1,
            category: Category::UnknownTool,
            step: None,
            implicated: vec![],
            symptoms: vec![],
            goal: None,
            unknown_tools: vec!["search_products".into(), "buy_now".into(), "zzz".into()],
            known_tools: vec!["search".into(), "buy".into(), "back".into(), "view".into()],
        };
        let a = fit_aliases(&aggregate(vec![t]));
        assert_eq!(a.get("search_products"), Some(&json!("search")));
        assert_eq!(a.get("buy_now"), Some(&json!("buy")));
        assert!(!a.contains_key("zzz"));
    }
}
