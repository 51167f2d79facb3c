//! The `kiln` command line: one file per verb.
//!
//! Each verb has a clap `Args` struct and an `execute` that turns it into a
//! library call. Parsing opens no store and loads no component; that happens
//! in `execute`. Errors print as a `Caused by:` chain and end with a `hint:`.

mod build;
mod demo;
mod evolve;
mod harness;
mod inspect;
mod replay;
mod run;
mod store;
mod trace;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kiln: a harness foundry for AI agents.
///
/// Processors are WebAssembly components that run at the hooks of an agent
/// loop, inside a sandbox with fuel, memory and deadline limits.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// The store directory (default: `.kiln` here, or $KILN_STORE).
    #[arg(long, global = true, env = "KILN_STORE", default_value = ".kiln")]
    pub store: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a processor crate into a component and store it; prints its id.
    Build(build::Args),
    /// Show what a component is: WIT version, hooks, imports, exports, size.
    Inspect(inspect::Args),
    /// List, verify or garbage-collect the store.
    #[command(subcommand)]
    Store(store::Cmd),
    /// Show, hash and diff harnesses, and trace their lineage.
    #[command(subcommand)]
    Harness(harness::Cmd),
    /// Run a harness on a batch of tasks; keep the traces; print a summary.
    Run(run::Args),
    /// List runs and read traces.
    #[command(subcommand)]
    Trace(trace::Cmd),
    /// Run a processor on the recorded hook inputs of a trace and compare.
    Replay(replay::Args),
    /// Evolve a harness from traces (AEGIS); `kiln evolve resume NAME` picks a run up.
    Evolve(evolve::Args),
    /// The stock processors at work on built-in defaults (what `make demo` runs).
    Demo(demo::Args),
}

/// Run the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => build::execute(&cli.store, a),
        Command::Inspect(a) => inspect::execute(&cli.store, a),
        Command::Store(c) => store::execute(&cli.store, c),
        Command::Harness(c) => harness::execute(&cli.store, c),
        Command::Run(a) => run::execute(&cli.store, a),
        Command::Trace(c) => trace::execute(&cli.store, c),
        Command::Replay(a) => replay::execute(&cli.store, a),
        Command::Evolve(a) => evolve::execute(&cli.store, a),
        Command::Demo(a) => demo::execute(&cli.store, a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            1
        }
    }
}

/// An error for the user: a chain of causes and an optional hint.
#[derive(Debug)]
pub struct CliError {
    pub error: anyhow::Error,
    pub hint: Option<String>,
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError { error: e.into(), hint: None }
    }
}

/// Attach a hint to a result's error.
pub trait Hint<T> {
    fn hint(self, hint: impl Into<String>) -> Result<T, CliError>;
}

impl<T, E: Into<anyhow::Error>> Hint<T> for Result<T, E> {
    fn hint(self, hint: impl Into<String>) -> Result<T, CliError> {
        self.map_err(|e| CliError { error: e.into(), hint: Some(hint.into()) })
    }
}

pub type CliResult = Result<(), CliError>;

fn report(e: &CliError) {
    eprintln!("error: {}", e.error);
    let mut causes = e.error.chain().skip(1).peekable();
    if causes.peek().is_some() {
        eprintln!("\nCaused by:");
        for c in causes {
            eprintln!("    {c}");
        }
    }
    if let Some(h) = &e.hint {
        eprintln!("hint: {h}");
    }
}

/// Open the store, creating it if needed.
pub(crate) fn open_store(path: &std::path::Path) -> Result<crate::store::Store, CliError> {
    crate::store::Store::open(path).hint(format!("kiln keeps its objects in {}; pass --store DIR to use another", path.display()))
}

/// A runtime whose compiled-code cache lives in the store, with the default
/// instance pool (1,000 processor instances live at once).
pub(crate) fn runtime(store: &crate::store::Store) -> Result<crate::sandbox::Runtime, CliError> {
    runtime_for(store, crate::sandbox::RuntimeConfig::default().max_instances)
}

/// The same with a pool of `instances` (tasks at once × processors per task).
pub(crate) fn runtime_for(store: &crate::store::Store, instances: u32) -> Result<crate::sandbox::Runtime, CliError> {
    let cfg = crate::sandbox::RuntimeConfig {
        cache_dir: Some(store.root().join("cache").join("compiled")),
        max_instances: instances,
        ..Default::default()
    };
    crate::sandbox::Runtime::new(cfg).map_err(|e| CliError { error: anyhow::anyhow!(e), hint: Some("run fewer tasks at once (-j)".into()) })
}
