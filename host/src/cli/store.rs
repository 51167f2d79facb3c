//! `kiln store ls|cat|verify|gc`.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::{open_store, CliError, CliResult};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List objects (id, size) and refs.
    Ls,
    /// Write one object's bytes (verified) to stdout; gzip objects such as
    /// traces are decompressed.
    Cat {
        /// An object id or a unique prefix of one.
        id: String,
    },
    /// Re-hash every object and report any whose bytes do not match its name.
    Verify,
    /// Delete every object no ref reaches.
    Gc,
}

pub fn execute(store_dir: &Path, cmd: Cmd) -> CliResult {
    let store = open_store(store_dir)?;
    match cmd {
        Cmd::Ls => {
            let mut ids: Vec<_> = store.list().collect::<Result<Vec<_>, _>>()?;
            ids.sort();
            for id in &ids {
                println!("{}  {:>10}", id, store.size(id).unwrap_or(0));
            }
            for (name, id) in store.refs("")? {
                println!("{}  -> {name}", id.short());
            }
            eprintln!("{} objects", ids.len());
        }
        Cmd::Cat { id } => {
            let id = store.resolve(&id)?;
            let bytes = store.get(&id)?;
            let mut out = std::io::stdout().lock();
            if bytes.starts_with(&[0x1f, 0x8b]) {
                std::io::copy(&mut flate2::read::GzDecoder::new(bytes.as_slice()), &mut out)?;
            } else {
                out.write_all(&bytes)?;
            }
        }
        Cmd::Verify => {
            let stop = AtomicBool::new(false);
            let report = store.verify(|_| {}, &stop)?;
            println!("checked {} objects ({} bytes): {} corrupt, {} unreadable", report.checked, report.bytes, report.corrupt.len(), report.unreadable.len());
            for c in &report.corrupt {
                println!("  corrupt: {c}");
            }
            for u in &report.unreadable {
                println!("  {u}");
            }
            if !report.is_clean() {
                return Err(CliError { error: anyhow::anyhow!("the store has corrupt objects"), hint: Some("rebuild or re-import them; `kiln store gc` never deletes what a ref reaches".into()) });
            }
        }
        Cmd::Gc => {
            let report = store.gc()?;
            let kept = report.kept();
            println!(
                "kept {} objects ({} bytes); removed {} ({} bytes) and {} stale temp files",
                kept.count, kept.bytes, report.removed.count, report.removed.bytes, report.tmp_removed.count
            );
            for (name, id) in &report.dangling_refs {
                println!("  dangling ref {name} -> {id}");
            }
        }
    }
    Ok(())
}
