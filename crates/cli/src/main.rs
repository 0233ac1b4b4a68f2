//! `portrait`: the one binary. Every subcommand works on a data directory (`--data DIR`).

mod commands;
mod demo;
mod history;
mod http;
mod keys;
mod retention;
mod tags;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: the engine allocates many small strings per message; measured faster than glibc's
/// allocator on the ingest benchmark (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Portrait: a user profile engine.
#[derive(Parser)]
#[command(
    name = "portrait",
    version,
    about = "Portrait: a user profile engine (用户画像引擎)"
)]
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
        /// Compact new events into the Parquet lake every N seconds (0: never).
        #[arg(long, default_value_t = 300)]
        compact_every: u64,
        /// Master key file (default: PORTRAIT_MASTER_KEY, PORTRAIT_KEY_FILE, or DIR.key beside
        /// the data directory, created on first start).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Tag definitions: apply, list, show, impact, publish, archive, explain, load.
    Tags {
        #[command(subcommand)]
        command: tags::TagsCommand,
    },
    /// Compute tags over the lake (compacting new events first) and store their values.
    Compute {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// The instant to compute at: RFC 3339, or a date (its end in Asia/Shanghai). Default now.
        #[arg(long)]
        as_of: Option<String>,
        /// Only these tags (comma-separated) and what they read.
        #[arg(long)]
        tags: Option<String>,
        /// Back end: kernel (the fused scan) or datafusion (the same plan as SQL).
        #[arg(long, default_value = "kernel")]
        engine: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tag history (标签演化轨迹): backfill, transitions, population, paths, trails, retention.
    History {
        #[command(subcommand)]
        command: history::HistoryCommand,
    },
    /// Audiences (人群): preview, save, list, export.
    Audience {
        #[command(subcommand)]
        command: tags::AudienceCommand,
    },
    /// Retention periods per event, source or type: set, show, apply (expire old events).
    Retention {
        #[command(subcommand)]
        command: retention::RetentionCommand,
    },
    /// Erase people from every store (log, profile, identity links, lake, reject files).
    Erase {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Profile id.
        #[arg(long)]
        id: Option<u32>,
        /// Identifier as `type:value`.
        #[arg(long)]
        identifier: Option<String>,
        /// A file with one `type:value` identifier per line.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Encryption keys of a data directory.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Compact the event log into Parquet (DIR/lake) for the batch engine.
    Compact {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Rewrite the whole lake from the start of the log (after unmerges).
        #[arg(long)]
        rebuild: bool,
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
    /// Generate a realistic multi-source data set with ground truth.
    Gen {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// People to generate.
        #[arg(long, default_value_t = 10_000)]
        people: u64,
        /// Days of history.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Seed (same seed, same bytes).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Activity multiplier (1.0 ≈ 10 events per person).
        #[arg(long, default_value_t = 1.0)]
        scale_events: f64,
        /// Noise level (0 = clean data, 1 = realistic).
        #[arg(long, default_value_t = 1.0)]
        noise: f64,
    },
    /// Score identity resolution of a data directory against a generated data set's truth.
    Score {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// The folder `portrait gen` wrote.
        #[arg(long)]
        truth: PathBuf,
    },
    /// The main job: generate a population, ingest it through files and HTTP, report, and serve.
    Demo {
        /// Folder for the generated input and the data directory.
        #[arg(long, default_value = "portrait-demo")]
        dir: PathBuf,
        /// People to generate.
        #[arg(long, default_value_t = 20_000)]
        people: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Address to serve on after the report.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Exit after the report instead of serving.
        #[arg(long)]
        no_serve: bool,
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
    /// Manage API tokens of the admin API (roles: admin, operator, analyst; see docs/access.md).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: only its hash is stored, in DIR/tokens.json).
    Add {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Role: admin, operator or analyst.
        #[arg(long)]
        role: String,
        /// Unique name, recorded in the audit log (default: ROLE-xxxx).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens: name, role, creation time (never the secrets).
    List {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Revoke a token.
    Remove {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Token name.
        name: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Start a new data key and re-encrypt every record under it; optionally rewrap the
    /// keyring under a new master key.
    Rotate {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Also move to this new master key file (64 hex characters; create one with
        /// `portrait keys new --out FILE`).
        #[arg(long)]
        new_master_key_file: Option<PathBuf>,
    },
    /// Write a new random master key file (mode 0600).
    New {
        /// Where to write it (outside the data directory).
        #[arg(long)]
        out: PathBuf,
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
        if quiet {
            "warn".into()
        } else {
            "info".into()
        }
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
        Command::Serve {
            data,
            listen,
            max_batch_bytes,
            max_message_bytes,
            compact_every,
            key_file,
        } => {
            let limits = portrait_server::Limits {
                message_bytes: max_message_bytes,
                batch_bytes: max_batch_bytes,
            };
            commands::serve(&data, listen, limits, compact_every, key_file.as_deref())
        }
        Command::Retention { command } => retention::run(command),
        Command::Erase {
            data,
            id,
            identifier,
            file,
        } => commands::erase(&data, id, identifier.as_deref(), file.as_deref()),
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    data,
                    new_master_key_file,
                },
        } => commands::rotate_keys(&data, new_master_key_file.as_deref()),
        Command::Keys {
            command: KeysCommand::New { out },
        } => {
            portrait_store::crypto::MasterKey::generate().write_new_file(&out)?;
            println!("{}", out.display());
            Ok(())
        }
        Command::Compact { data, rebuild } => commands::compact(&data, rebuild),
        Command::Tags { command } => tags::tags(command),
        Command::Audience { command } => tags::audience(command),
        Command::History { command } => history::run(command),
        Command::Compute {
            data,
            as_of,
            tags,
            engine,
            json,
        } => tags::compute(&data, as_of.as_deref(), tags.as_deref(), &engine, json),
        Command::Source {
            command:
                SourceCommand::Add {
                    data,
                    name,
                    kind,
                    write_key,
                },
        } => commands::source_add(&data, &name, &kind, write_key.as_deref()),
        Command::Source {
            command: SourceCommand::List { data },
        } => commands::source_list(&data),
        Command::Profile {
            data,
            identifier,
            id,
            events,
        } => commands::profile(&data, identifier.as_deref(), id, events),
        Command::Unmerge {
            data,
            id,
            identifier,
        } => commands::unmerge(&data, id, &identifier),
        Command::Stats { data } => commands::stats(&data),
        Command::Token {
            command: TokenCommand::Add { data, role, name },
        } => commands::token_add(&data, &role, name.as_deref()),
        Command::Token {
            command: TokenCommand::List { data },
        } => commands::token_list(&data),
        Command::Token {
            command: TokenCommand::Remove { data, name },
        } => commands::token_remove(&data, &name),
        Command::Gen {
            out,
            people,
            days,
            seed,
            scale_events,
            noise,
        } => {
            let opts = portrait_gen::GenOptions {
                people,
                days,
                seed,
                scale_events,
                noise,
                ..Default::default()
            };
            demo::generate(&out, &opts).map(|_| ())
        }
        Command::Score { data, truth } => demo::score(&data, &truth),
        Command::Demo {
            dir,
            people,
            seed,
            listen,
            no_serve,
        } => demo::demo(&demo::DemoOptions {
            dir,
            people,
            seed,
            listen,
            serve: !no_serve,
        }),
        Command::Import {
            data,
            source,
            mapping,
            rejects,
            files,
        } => {
            let engine = commands::open(&data)?;
            commands::import(&engine, &source, &mapping, rejects.as_deref(), &files, true)
                .map(|_| ())
        }
    }
}
