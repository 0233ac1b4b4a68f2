//! The `portrait history` subcommands as a stand-alone binary, so they can be built and run
//! from this crate: it compiles `crates/cli/src/history.rs` itself (the `portrait` binary
//! wires the same file). `cargo run -p portrait-history --example history_cli -- transitions --data DIR …`

#![allow(missing_docs)]

use clap::Parser;

#[path = "../../cli/src/history.rs"]
mod history;

mod commands {
    use std::path::Path;

    use anyhow::{Context, Result};
    use portrait_store::{Engine, EngineOptions};

    /// Opens the engine (without a keyring: plain data directories only).
    pub fn open(data: &Path) -> Result<Engine> {
        Engine::open(data, EngineOptions::default())
            .with_context(|| format!("cannot open data directory {}", data.display()))
    }
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: history::HistoryCommand,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = history::run(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
