//! `kiln build <dir>`: build a processor crate, store the component, print its id.

use std::path::{Path, PathBuf};

use super::{open_store, runtime, CliResult, Hint};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The processor crate's directory (it has a Cargo.toml).
    pub dir: PathBuf,
    /// Where cargo builds guests (default: target/guest here, or $KILN_GUEST_TARGET_DIR).
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
}

pub fn execute(store_dir: &Path, args: Args) -> CliResult {
    let target = args.target_dir.unwrap_or_else(crate::build::default_target_dir);
    let bytes = crate::build::build_processor(&args.dir, &target)?;
    let store = open_store(store_dir)?;
    // Refuse to store what is not a processor: say why now, not at run time.
    let rt = runtime(&store)?;
    let loaded = rt.load(&bytes).hint("build the crate against kiln-guest (guest-sdk/) so it exports kiln:harness/hooks")?;
    let id = store.put(&bytes)?;
    store.set_ref(&format!("processors/{}", loaded.info.name), &id)?;
    eprintln!("   Built {} {} ({} bytes)", loaded.info.name, loaded.info.version, bytes.len());
    println!("{id}");
    Ok(())
}
