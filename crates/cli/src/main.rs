//! `portrait`: the one binary. Every subcommand works on a data directory (`--data DIR`).

mod commands;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Portrait: a user profile engine.
#[derive(Parser)]
#[command(name = "portrait", version, about = "Portrait: a user profile engine (用户画像引擎)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (ingest API + admin API) on embedded storage under DIR.
    Serve {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Largest request body in bytes (after decompression).
        #[arg(long, default_value_t = 500 * 1024)]
        max_batch_bytes: usize,
        /// Largest single message in bytes.
        #[arg(long, default_value_t = 32 * 1024)]
        max_message_bytes: usize,
    },
    /// Manage sources (channels with write keys).
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// Import CSV (UTF-8/GBK), JSON lines or Parquet files into a source through a mapping.
    Import {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Source to import into.
        #[arg(long)]
        source: String,
        /// Mapping file (YAML; see docs/import-mapping.md).
        #[arg(long)]
        mapping: PathBuf,
        /// Folder for reject files (default: next to each input, `FILE.rejects.csv`).
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// Files to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show a profile, found by id or by identifier.
    Profile {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Identifier as `type:value`, e.g. `phone:+8613800000000`.
        #[arg(long, conflicts_with = "id")]
        identifier: Option<String>,
        /// Profile id.
        #[arg(long)]
        id: Option<u32>,
        /// Also print the newest N events.
        #[arg(long, default_value_t = 10)]
        events: usize,
    },
    /// Split a wrongly merged profile by unlinking one identifier.
    Unmerge {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Profile id.
        #[arg(long)]
        id: u32,
        /// Identifier to unlink, as `type:value`.
        #[arg(long)]
        identifier: String,
    },
    /// Print counters: profiles, identifiers, merges, events per source.
    Stats {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Add a source and print its write key.
    Add {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Source name.
        name: String,
        /// Kind: crm, wechat, ecommerce, pos, app, web, ma, service, other.
        #[arg(long)]
        kind: String,
        /// Use this write key instead of a generated one.
        #[arg(long)]
        write_key: Option<String>,
    },
    /// List sources.
    List {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Serve { .. });
    let filter = std::env::var("PORTRAIT_LOG").unwrap_or_else(|_| {
        if quiet { "warn".into() } else { "info".into() }
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { data, listen, max_batch_bytes, max_message_bytes } => {
            let limits = portrait_server::Limits {
                message_bytes: max_message_bytes,
                batch_bytes: max_batch_bytes,
            };
            commands::serve(&data, listen, limits)
        }
        Command::Source { command: SourceCommand::Add { data, name, kind, write_key } } => {
            commands::source_add(&data, &name, &kind, write_key.as_deref())
        }
        Command::Source { command: SourceCommand::List { data } } => commands::source_list(&data),
        Command::Profile { data, identifier, id, events } => {
            commands::profile(&data, identifier.as_deref(), id, events)
        }
        Command::Unmerge { data, id, identifier } => commands::unmerge(&data, id, &identifier),
        Command::Stats { data } => commands::stats(&data),
        Command::Import { data, source, mapping, rejects, files } => {
            let engine = commands::open(&data)?;
            commands::import(&engine, &source, &mapping, rejects.as_deref(), &files, true)
                .map(|_| ())
        }
    }
}
