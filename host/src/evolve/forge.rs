//! Turning processor source into a loaded component, and smoke-testing it.
//!
//! **Crates.** Each template (and the model-written path) has one crate
//! directory beside the shared target dir (`<target>/evolve-crates/<name>/`), reused
//! from candidate to candidate: parameters go into the config JSON, so a
//! template's source, and so its component, is the same every time. The
//! crate points at the guest SDK by absolute path, copies the stock
//! processors' `Cargo.lock` so dependency versions match, uses the same
//! release profile, and builds into one shared target dir: dependencies are
//! compiled once, and a new processor costs about a second.
//!
//! **Build cache.** A successful build is remembered in the store's cache
//! (`evolve-builds/`) under the blake3 of its `Cargo.toml` and `lib.rs`, so a
//! resumed run never rebuilds; the component itself is a store object.
//!
//! **Smoke test.** A candidate processor is replayed on recorded traces at
//! the place it would hold in the pipeline ([`replay_at`]): level 1, every call returns without a fault
//! within its limits (a hang ends at its deadline) and two replays give the
//! same verdicts and edits; level 2, what it produces survives the trip to
//! the model (messages non-empty and at most 8,000 bytes, rewritten tool
//! calls with a name and JSON-object arguments, block reasons and advice
//! non-empty). It also reports on which traces the processor changed
//! anything, which the Critic uses to measure non-local effects.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::build::{build_processor, BuildError};
use crate::sandbox::{Edit, Limits, Loaded, Runtime, Verdict};
use crate::store::{ObjectId, Store};
use crate::trace::Event;

const BUILDS_NS: &str = "evolve-builds";
const CARGO_TOML: &str = include_str!("templates/Cargo.toml.tmpl");
const STOCK_LOCK: &str = include_str!("../../../processors/Cargo.lock");

/// The source of one template by name.
pub fn template_source(name: &str) -> Option<&'static str> {
    Some(match name {
        "final-answer-guard" => include_str!("templates/final-answer-guard/lib.rs"),
        "goal-reminder" => include_str!("templates/goal-reminder/lib.rs"),
        "tool-alias" => include_str!("templates/tool-alias/lib.rs"),
        _ => return None,
    })
}

/// Where processor source is built.
#[derive(Clone, Debug)]
pub struct Forge {
    pub store: Store,
    /// The shared cargo target dir for guest builds.
    pub target_dir: PathBuf,
    /// Absolute path of the `kiln-guest` crate.
    pub guest_sdk: PathBuf,
    /// Where the stock processor crates are (`processors/`).
    pub processors: PathBuf,
}

/// A built component.
#[derive(Clone, Debug)]
pub struct Built {
    /// blake3 hex of the component bytes.
    pub component: String,
    /// blake3 hex of the source (Cargo.toml + lib.rs).
    pub source: String,
    pub loaded: Arc<Loaded>,
}

/// Why source did not become a component.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForgeError {
    #[error("does not compile:\n{0}")]
    Compile(String),
    #[error("{0}")]
    Build(String),
    #[error("builds, but kiln refuses the component: {0}")]
    Load(String),
}

impl Forge {
    /// Crates live beside the build output, at a path that does not depend
    /// on the store: panic locations embed it, and the same source must give
    /// the same component bytes (and so the same harness id) in every store.
    fn crate_dir(&self, name: &str) -> PathBuf {
        self.target_dir.join("evolve-crates").join(name)
    }

    /// Build `lib_rs` as the crate `name` (one directory per name, reused).
    pub fn build(&self, rt: &Runtime, name: &str, lib_rs: &str) -> Result<Built, ForgeError> {
        let sdk = self.guest_sdk.canonicalize().unwrap_or_else(|_| self.guest_sdk.clone());
        let toml = CARGO_TOML
            .replace("{{TEMPLATE}}", name)
            .replace("{{CRATE}}", &format!("kiln-evolve-{name}"))
            .replace("{{GUEST_SDK}}", &sdk.display().to_string().replace('\\', "/"));
        let source = ObjectId::of(format!("{toml}\0{lib_rs}").as_bytes()).to_hex();
        if let Ok(Some(bytes)) = self.store.cache_get(BUILDS_NS, &source) {
            if let Ok(id) = String::from_utf8_lossy(&bytes).trim().parse::<ObjectId>() {
                if let Ok(component) = self.store.get(&id) {
                    let loaded = rt.load(&component).map_err(|e| ForgeError::Load(e.to_string()))?;
                    return Ok(Built { component: id.to_hex(), source, loaded });
                }
            }
        }
        let dir = self.crate_dir(name);
        // One crate dir per name is shared by every run that builds it: hold
        // an exclusive lock from writing the source to reading the artifact,
        // or a concurrent build could ship the other writer's source.
        std::fs::create_dir_all(&dir)
            .map_err(|e| ForgeError::Build(format!("cannot create {}: {e}", dir.display())))?;
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ForgeError::Build(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.lock().map_err(|e| ForgeError::Build(format!("cannot lock {}: {e}", lock_path.display())))?;
        let write = |path: &Path, text: &str| -> Result<(), ForgeError> {
            if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
                return Ok(()); // keep the mtime: cargo then has nothing to do
            }
            std::fs::create_dir_all(path.parent().expect("has a parent"))
                .map_err(|e| ForgeError::Build(format!("cannot create {}: {e}", path.display())))?;
            std::fs::write(path, text).map_err(|e| ForgeError::Build(format!("cannot write {}: {e}", path.display())))
        };
        write(&dir.join("Cargo.toml"), &toml)?;
        write(&dir.join("src/lib.rs"), lib_rs)?;
        if !dir.join("Cargo.lock").exists() {
            write(&dir.join("Cargo.lock"), STOCK_LOCK)?;
        }
        let bytes = build_processor(&dir, &self.target_dir).map_err(|e| match e {
            BuildError::Compile { errors, .. } => ForgeError::Compile(errors),
            other => ForgeError::Build(other.to_string()),
        })?;
        let id = self.store.put(&bytes).map_err(|e| ForgeError::Build(e.to_string()))?;
        let loaded = rt.load(&bytes).map_err(|e| ForgeError::Load(e.to_string()))?;
        let _ = self.store.cache_put(BUILDS_NS, &source, id.to_hex().as_bytes());
        Ok(Built { component: id.to_hex(), source, loaded })
    }

    /// A stock processor: `$KILN_GUEST_OUT/<name>.wasm` when `make guests`
    /// built it, else built from `processors/<name>` into the shared target dir.
    pub fn stock(&self, rt: &Runtime, name: &str) -> Result<Built, ForgeError> {
        let bytes = match std::env::var_os("KILN_GUEST_OUT")
            .map(|d| PathBuf::from(d).join(format!("{}.wasm", name.replace('-', "_"))))
        {
            Some(p) if p.is_file() => {
                std::fs::read(&p).map_err(|e| ForgeError::Build(format!("cannot read {}: {e}", p.display())))?
            }
            _ => build_processor(&self.processors.join(name), &self.target_dir)
                .map_err(|e| ForgeError::Build(e.to_string()))?,
        };
        let id = self.store.put(&bytes).map_err(|e| ForgeError::Build(e.to_string()))?;
        let loaded = rt.load(&bytes).map_err(|e| ForgeError::Load(e.to_string()))?;
        Ok(Built { component: id.to_hex(), source: format!("stock:{name}"), loaded })
    }
}

/// What a smoke test found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SmokeReport {
    pub traces: usize,
    pub calls: usize,
    /// `task: fault` per faulted call (first few).
    pub faults: Vec<String>,
    /// Tasks where two replays differed.
    pub nondeterministic: Vec<String>,
    /// Output that would not survive the trip to the model.
    pub malformed: Vec<String>,
    /// Tasks on which the processor changed anything (edits or a non-pass verdict).
    pub changed: Vec<String>,
    pub passed: bool,
    /// Why it failed, in one line.
    pub reason: Option<String>,
}

fn well_formed(edits: &[Edit], verdict: &Option<Verdict>) -> Result<(), String> {
    const MAX: usize = 8_000;
    for e in edits {
        let text = match e {
            Edit::Insert { message, .. } | Edit::Replace { message, .. } => Some(&message.content),
            Edit::AppendUser { content }
            | Edit::SetLastUser { content, .. }
            | Edit::Respond { content }
            | Edit::SetResult { content } => Some(content),
            Edit::Advise { text } | Edit::SetSystemPrompt { text } => Some(text),
            Edit::SetCalls { calls } => {
                for c in calls {
                    if c.name.trim().is_empty() {
                        return Err("a rewritten tool call has no name".into());
                    }
                    match serde_json::from_str::<serde_json::Value>(&c.arguments) {
                        Ok(serde_json::Value::Object(_)) => {}
                        _ => {
                            return Err(format!(
                                "rewritten call {} has arguments that are not a JSON object: {}",
                                c.name, c.arguments
                            ))
                        }
                    }
                }
                None
            }
            Edit::SetArguments { arguments } => {
                if !matches!(serde_json::from_str::<serde_json::Value>(arguments), Ok(serde_json::Value::Object(_))) {
                    return Err(format!("rewritten arguments are not a JSON object: {arguments}"));
                }
                None
            }
            _ => None,
        };
        if let Some(t) = text {
            if t.trim().is_empty() && !matches!(e, Edit::SetSystemPrompt { .. } | Edit::SetResult { .. }) {
                return Err(format!("empty text in {e:?}"));
            }
            if t.len() > MAX {
                return Err(format!("{} bytes of text in one edit (at most {MAX})", t.len()));
            }
        }
    }
    match verdict {
        Some(Verdict::Block(r)) | Some(Verdict::Interrupt(r)) if r.trim().is_empty() => {
            Err("a block or interrupt without a reason".into())
        }
        _ => Ok(()),
    }
}

/// One call of the candidate during a positional replay.
#[derive(Clone, Debug, PartialEq)]
pub struct Replayed {
    pub step: u32,
    pub hook: crate::sandbox::Hook,
    pub report: crate::sandbox::CallReport,
}

/// Replay `loaded` (with `config`) on a recorded trace at the place it would
/// hold in the pipeline: at each hook it wants, it sees the context after the
/// recorded calls of the processors in `before` (those ahead of it in the
/// candidate harness) and before everyone else's; a hook a predecessor
/// blocked or interrupted never reaches it. Processor tools it provides are
/// called as recorded, to keep its state in step. The recording is never
/// changed by the candidate.
pub fn replay_at(
    rt: &Runtime,
    loaded: &Arc<Loaded>,
    config: &str,
    before: &[String],
    events: &[Event],
) -> Result<Vec<Replayed>, String> {
    use crate::sandbox::{Grants, Instance, InstanceSpec, TaskFacts, VirtualClock};
    let Some(Event::TaskStart { task, seed, max_steps, .. }) = events.first() else {
        return Err("the trace has no task-start event".into());
    };
    let clock = VirtualClock::default();
    let spec =
        InstanceSpec { config: config.to_string(), limits: Limits::default(), grants: Arc::new(Grants::default()) };
    let mut inst = Instance::new(rt, loaded.clone(), spec, *seed, clock.clone())
        .map_err(|f| format!("the processor could not start: {f}"))?;
    let name = loaded.info.name.clone();
    let mut facts = TaskFacts { task_id: task.clone(), step: 0, max_steps: *max_steps, seed: *seed };
    let mut fold = crate::trace::Fold::default();
    let mut out = Vec::new();
    // The hook waiting for the candidate's turn, if any.
    let mut pending: Option<crate::sandbox::Hook> = None;
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Hook { step, hook } => {
                facts.step = *step;
                clock.set(*step as u64 * 1_000_000_000);
                pending = inst.wants(*hook).then_some(*hook);
            }
            Event::Call { report, .. }
                if pending.is_some()
                    && *report.processor != *name
                    && before.iter().any(|b| **b == *report.processor)
                    && matches!(report.verdict, Some(Verdict::Block(_)) | Some(Verdict::Interrupt(_))) =>
            {
                pending = None; // the hook ended before the candidate's turn
            }
            Event::ProcessorTool { name: tool, arguments, report, .. } if *report.processor == *name => {
                let mut ctx = fold.ctx.clone();
                let _ = inst.call_tool(tool, arguments, &mut ctx, &facts);
            }
            _ => {}
        }
        fold.apply(e)?;
        // The candidate's turn: after the last recorded call of a predecessor.
        if let Some(hook) = pending {
            let next_is_predecessor = matches!(events.get(i + 1), Some(Event::Call { report, .. }) if before.iter().any(|b| **b == *report.processor));
            let at_hook_start = matches!(e, Event::Hook { .. });
            let after_call = matches!(e, Event::Call { .. });
            if (at_hook_start || after_call) && !next_is_predecessor {
                let mut ctx = fold.ctx.clone();
                let report = inst.call_hook(hook, &mut ctx, &facts);
                out.push(Replayed { step: facts.step, hook, report });
                pending = None;
            }
        }
    }
    Ok(out)
}

/// Replay `loaded` with `config`, at its place after `before`, on each
/// `(task, events)`, twice.
pub fn smoke(
    rt: &Runtime,
    loaded: &Arc<Loaded>,
    config: &str,
    before: &[String],
    traces: &[(String, Vec<Event>)],
) -> SmokeReport {
    let mut r = SmokeReport { traces: traces.len(), ..Default::default() };
    for (task, events) in traces {
        let run = || replay_at(rt, loaded, config, before, events);
        let (a, b) = match (run(), run()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                r.faults.push(format!("{task}: {e}"));
                continue;
            }
        };
        r.calls += a.len();
        let mut changed = false;
        for (x, y) in a.iter().zip(&b) {
            if let Some(f) = &x.report.fault {
                if r.faults.len() < 5 {
                    r.faults.push(format!("{task} step {} {}: {f}", x.step, x.hook));
                }
            }
            if x.report.verdict != y.report.verdict || x.report.edits != y.report.edits {
                r.nondeterministic.push(task.clone());
            }
            if let Err(m) = well_formed(&x.report.edits, &x.report.verdict) {
                if r.malformed.len() < 5 {
                    r.malformed.push(format!("{task} step {} {}: {m}", x.step, x.hook));
                }
            }
            let acted = x.report.edits.iter().any(|e| !matches!(e, Edit::SlotSet { .. } | Edit::SlotRemove { .. }))
                || matches!(x.report.verdict, Some(Verdict::Block(_)) | Some(Verdict::Interrupt(_)));
            changed |= acted;
        }
        if a.len() != b.len() {
            r.nondeterministic.push(task.clone());
        }
        if changed {
            r.changed.push(task.clone());
        }
    }
    r.nondeterministic.dedup();
    r.reason = r
        .faults
        .first()
        .map(|f| format!("faulted in replay: {f}"))
        .or_else(|| r.nondeterministic.first().map(|t| format!("two replays on {t} differ")))
        .or_else(|| r.malformed.first().map(|m| format!("output not well-formed for the model: {m}")));
    r.passed = r.reason.is_none();
    r
}
