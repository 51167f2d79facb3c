//! `kiln harness show|hash|diff|lineage`: harness manifests and stored harnesses.
//!
//! Every verb that takes a harness accepts a manifest file (resolved on the
//! spot: sources built, components stored, processors probed), a name (the
//! ref `harness/<name>`), a full id or a unique id prefix.

use std::path::{Path, PathBuf};

use super::{open_store, runtime, CliResult, Hint};
use crate::harness::{self, Harness, Workshop};
use crate::sandbox::Limits;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Show a harness: its processors in pipeline order (hooks, group, band),
    /// config, limits, grants and tools.
    Show {
        /// A manifest file, a harness name, or an id (prefix).
        harness: String,
        /// Print JSON: the canonical form plus each processor's description.
        #[arg(long)]
        json: bool,
        /// Where cargo builds processor sources (default: target/guest here, or $KILN_GUEST_TARGET_DIR).
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Resolve a manifest, store the harness under its name, print its id.
    Hash {
        /// The manifest file.
        file: PathBuf,
        /// Where cargo builds processor sources (default: target/guest here, or $KILN_GUEST_TARGET_DIR).
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// What differs between two harnesses: processors added, removed or
    /// changed (config, limits, grants, policy), order, tools, system prompt.
    Diff {
        /// The old harness: a manifest file, a name, or an id (prefix).
        a: String,
        /// The new harness.
        b: String,
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// The chain of parents of a stored harness, newest first, with each edit.
    Lineage {
        /// A harness name or id (prefix).
        harness: String,
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn execute(store_dir: &Path, cmd: Cmd) -> CliResult {
    let store = open_store(store_dir)?;
    match cmd {
        Cmd::Show { harness, json, target_dir } => {
            let rt = runtime(&store)?;
            let workshop = Workshop::new(&rt, &store, target_dir.unwrap_or_else(crate::build::default_target_dir));
            let (name, h) = open(&workshop, &harness)?;
            if json {
                let canonical: serde_json::Value = serde_json::from_slice(h.canonical_json())?;
                let pipeline: Vec<_> = h
                    .processors()
                    .iter()
                    .map(|p| serde_json::json!({ "info": p.facts.info, "tools": p.facts.tools, "component": p.entry.component }))
                    .collect();
                let v = serde_json::json!({ "id": h.id(), "name": name, "harness": canonical, "pipeline": pipeline });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", render_show(name.as_deref(), &h));
            }
        }
        Cmd::Hash { file, target_dir } => {
            let rt = runtime(&store)?;
            let workshop = Workshop::new(&rt, &store, target_dir.unwrap_or_else(crate::build::default_target_dir));
            let authored = workshop.open(&file)?;
            let id = authored.harness.save(&store, Some(&authored.name))?;
            eprintln!("  Stored harness `{}` ({} processors) as ref harness/{}", authored.name, authored.harness.processors().len(), authored.name);
            println!("{id}");
        }
        Cmd::Diff { a, b, target_dir } => {
            let rt = runtime(&store)?;
            let workshop = Workshop::new(&rt, &store, target_dir.unwrap_or_else(crate::build::default_target_dir));
            let (_, ha) = open(&workshop, &a)?;
            let (_, hb) = open(&workshop, &b)?;
            print!("{}", harness::diff(&ha, &hb));
        }
        Cmd::Lineage { harness, json } => {
            let id = harness::find(&store, &harness).hint(FIND_HINT)?;
            let chain = harness::lineage(&store, &id)?;
            if json {
                let v: Vec<_> = chain
                    .iter()
                    .map(|r| {
                        serde_json::json!({ "record": r.record, "child": r.child, "parent": r.parent, "edit": r.edit.to_json(), "reason": r.reason })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            for r in &chain {
                println!("{}  ← {}  {}", r.child.short(), r.parent.short(), r.edit.summary());
                if let Some(reason) = r.reason {
                    // e.g. the evolution ledger's record of the candidate that shipped
                    println!("      why: `kiln store cat {reason}`");
                }
            }
            let root = chain.last().map(|r| r.parent).unwrap_or(id);
            println!("{}  (no recorded parent)", root.short());
        }
    }
    Ok(())
}

const FIND_HINT: &str = "give a manifest file, a harness name (refs under harness/ in `kiln store ls`), or an id prefix from `kiln harness hash`";

/// A harness from a manifest file, a name, or an id; with its name when known.
fn open(workshop: &Workshop, what: &str) -> Result<(Option<String>, Harness), super::CliError> {
    if Path::new(what).is_file() {
        let authored = workshop.open(Path::new(what))?;
        return Ok((Some(authored.name), authored.harness));
    }
    let id = harness::find(&workshop.store, what).hint(FIND_HINT)?;
    let names: Vec<String> = workshop
        .store
        .refs("harness/")?
        .into_iter()
        .filter(|(_, target)| *target == id)
        .map(|(n, _)| n.trim_start_matches("harness/").to_string())
        .collect();
    let h = workshop.load(&id).hint("the harness names a component that is missing or no longer loads; `kiln store verify` checks the store")?;
    Ok(((!names.is_empty()).then(|| names.join(", ")), h))
}

/// The text `kiln harness show` prints.
fn render_show(name: Option<&str>, h: &Harness) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("harness     {}{}", h.id(), name.map(|n| format!("  ({n})")).unwrap_or_default()));
    if h.system().is_empty() {
        line("system      (empty)".into());
    } else {
        let mut lines = h.system().lines();
        line(format!("system      {}", lines.next().unwrap_or("")));
        for l in lines {
            line(format!("            {l}"));
        }
    }
    let deny = if h.tools().deny.is_empty() { "nothing".to_string() } else { h.tools().deny.join(", ") };
    line(format!("tools       deny {deny}; {}", if h.tools().text_actions { "text actions" } else { "native tool calls" }));
    if h.processors().is_empty() {
        line("processors  none".into());
        return out;
    }
    line(format!("processors  {} in pipeline order", h.processors().len()));
    let defaults = Limits::default();
    for (i, p) in h.processors().iter().enumerate() {
        let info = &p.facts.info;
        let band = serde_json::to_value(info.band).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        line(format!("  {}. {} {}  [{band}]  group {}", i + 1, info.name, info.version, info.group.as_deref().unwrap_or("-")));
        line(format!("       component  {}", p.entry.component));
        line(format!("       hooks      {}", info.hooks.iter().map(|h| h.name()).collect::<Vec<_>>().join(", ")));
        if !info.after.is_empty() {
            line(format!("       after      {}", info.after.join(", ")));
        }
        line(format!("       config     {}", p.entry.config_text()));
        line(format!("       limits     {}", limits_text(&p.entry.limits, &defaults)));
        let g = &p.entry.grants;
        let grants = match (g.read.is_empty(), g.net.is_empty()) {
            (true, true) => "none".to_string(),
            _ => format!(
                "read [{}] net [{}]",
                g.read.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
                g.net.join(", ")
            ),
        };
        line(format!("       grants     {grants}"));
        let policy = match p.entry.on_fault {
            crate::sandbox::FailurePolicy::Skip => "skip".to_string(),
            crate::sandbox::FailurePolicy::Abort => "abort".to_string(),
            crate::sandbox::FailurePolicy::Disable { after } => format!("disable after {after} faults"),
        };
        line(format!("       on-fault   {policy}"));
        if !p.facts.tools.is_empty() {
            line(format!("       tools      {}", p.facts.tools.join(", ")));
        }
    }
    out
}

/// The limits that differ from the defaults, or `defaults`.
fn limits_text(l: &Limits, d: &Limits) -> String {
    let changed: Vec<String> = [
        ("fuel", l.fuel, d.fuel),
        ("init_fuel", l.init_fuel, d.init_fuel),
        ("deadline_ms", l.deadline_ms, d.deadline_ms),
        ("init_deadline_ms", l.init_deadline_ms, d.init_deadline_ms),
        ("memory_bytes", l.memory_bytes, d.memory_bytes),
        ("output_bytes", l.output_bytes, d.output_bytes),
        ("host_calls", l.host_calls, d.host_calls),
    ]
    .into_iter()
    .filter(|(_, v, dv)| v != dv)
    .map(|(name, v, dv)| format!("{name} {v} (default {dv})"))
    .collect();
    if changed.is_empty() {
        "defaults".into()
    } else {
        format!("{}; others default", changed.join(", "))
    }
}
