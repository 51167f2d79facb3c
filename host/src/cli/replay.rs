//! `kiln replay`: run a processor on the recorded hook inputs of a trace.

use std::path::Path;

use super::run::component_bytes;
use super::trace::load_trace;
use super::{open_store, runtime, CliError, CliResult, Hint};
use crate::sandbox::Limits;
use crate::trace::Event;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// RUN/INDEX, RUN/TASK-ID, or a trace id (prefix).
    pub trace: String,
    /// The processor: a name recorded in the trace, a component file, a crate dir, or a component id.
    #[arg(long)]
    pub processor: String,
    /// Config JSON (default: the recorded config of the same-named processor, else `{}`).
    #[arg(long)]
    pub config: Option<String>,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(store_dir: &Path, args: Args) -> CliResult {
    let store = open_store(store_dir)?;
    let rt = runtime(&store)?;
    let t = load_trace(&store, &args.trace)?;
    let recorded = match t.events.first() {
        Some(Event::TaskStart { processors, .. }) => processors.iter().find(|m| m.name == args.processor).map(|m| m.component.clone()),
        _ => None,
    };
    let bytes = match recorded {
        Some(id) => store.get(&store.resolve(&id)?)?,
        None => component_bytes(&store, &args.processor).hint("give a processor name from the trace, a .wasm file, a crate dir or a component id")?,
    };
    let loaded = rt.load(&bytes)?;
    let report = crate::agent::replay::replay(&rt, loaded, args.config, Limits::default(), &t.events, t.truncated.clone())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &report.calls {
            let status = match c.identical {
                Some(true) => "identical",
                Some(false) => "DIFFERENT",
                None => "new",
            };
            let fault = c.replayed.fault.as_ref().map(|f| format!("  FAULT {f}")).unwrap_or_default();
            println!("{:>3} {:<12} {:<9} fuel {:>8} {:>7.1}µs{fault}", c.step, c.hook.name(), status, c.replayed.fuel, c.replayed.nanos as f64 / 1e3);
            if c.identical == Some(false) {
                if let Some(rec) = &c.recorded {
                    println!("      recorded: {:?} {}", rec.verdict, serde_json::to_string(&rec.edits)?);
                    println!("      replayed: {:?} {}", c.replayed.verdict, serde_json::to_string(&c.replayed.edits)?);
                }
            }
        }
        println!(
            "{}: {} calls, {}/{} compared calls identical, {} faults",
            report.processor,
            report.calls.len(),
            report.identical,
            report.compared,
            report.faults
        );
    }
    if let Some(why) = &t.truncated {
        eprintln!("warning: the trace is incomplete ({why}); replayed what was whole");
    }
    if report.compared > report.identical {
        return Err(CliError { error: anyhow::anyhow!("{} of {} calls differ from the recording", report.compared - report.identical, report.compared), hint: None });
    }
    Ok(())
}
