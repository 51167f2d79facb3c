//! `kiln inspect <id|file>`: what a component is and what it asks for.

use std::path::Path;

use super::{open_store, runtime, CliResult, Hint};
use crate::sandbox::WIT_VERSION;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A component file, or a store id (or unique prefix).
    pub component: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(store_dir: &Path, args: Args) -> CliResult {
    let store = open_store(store_dir)?;
    let bytes = if Path::new(&args.component).is_file() {
        std::fs::read(&args.component)?
    } else {
        let id = store.resolve(&args.component).hint("give a component file path, or an id from `kiln store ls`")?;
        store.get(&id)?
    };
    let rt = runtime(&store)?;
    let loaded = rt.load(&bytes)?;
    let info = &loaded.info;
    let asks: Vec<&str> = [
        ("kiln:harness/capabilities", "capabilities (read-file, http-get; each needs a manifest grant)"),
        ("wasi:filesystem", "WASI filesystem (sees only granted read-only directories)"),
        ("wasi:sockets", "WASI sockets (always denied)"),
    ]
    .iter()
    .filter(|(prefix, _)| loaded.imports.iter().any(|i| i.starts_with(prefix)))
    .map(|(_, what)| *what)
    .collect();
    if args.json {
        let v = serde_json::json!({
            "id": loaded.id, "size": loaded.size, "wit": format!("kiln:harness@{WIT_VERSION}"),
            "info": info, "imports": loaded.imports, "exports": loaded.exports, "asks": asks,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("component  {}", loaded.id);
    println!("size       {} bytes", loaded.size);
    println!("world      kiln:harness/processor@{WIT_VERSION}");
    println!("processor  {} {}", info.name, info.version);
    println!("hooks      {}", info.hooks.iter().map(|h| h.name()).collect::<Vec<_>>().join(", "));
    println!("group      {}", info.group.as_deref().unwrap_or("-"));
    println!("band       {:?}", info.band);
    println!("after      {}", if info.after.is_empty() { "-".to_string() } else { info.after.join(", ") });
    println!("asks for   {}", if asks.is_empty() { "nothing beyond the defaults".to_string() } else { asks.join("; ") });
    println!("imports    {}", loaded.imports.join("\n           "));
    println!("exports    {}", loaded.exports.join(", "));
    Ok(())
}
