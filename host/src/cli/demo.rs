pub fn execute(_: &std::path::Path, _: Args) -> super::CliResult { Ok(()) }
#[derive(Debug, clap::Args)] pub struct Args {}
