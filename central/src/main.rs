//! `crvs-central` binary: parses the command line and dispatches; the registry itself is future work.

use clap::{Parser, Subcommand};

/// Central registry of the offline-first civil registration system.
#[derive(Debug, Parser)]
#[command(name = "crvs-central", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what this build supports.
    Status,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Status => {
            let types = crvs_central::builtin_event_types().join(", ");
            eprintln!("{}; event types: {types}", crvs_central::capabilities());
        }
    }
    Ok(())
}
