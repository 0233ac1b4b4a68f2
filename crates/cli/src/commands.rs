//! Subcommand implementations.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use portrait_core::{Identifier, ProfileId};
use portrait_store::views::{merges_json, profile_json};
use portrait_store::{Engine, EngineOptions, SourceKind};

/// Opens the engine on a data directory.
pub fn open(data: &Path) -> Result<Engine> {
    open_with(data, None).map(|(engine, _)| engine)
}

/// Opens the engine with the data directory's keyring (found or created by [`crate::keys`]).
pub fn open_with(
    data: &Path,
    key_file: Option<&Path>,
) -> Result<(Engine, Arc<portrait_store::crypto::Keyring>)> {
    let keyring = crate::keys::keyring(data, key_file)?;
    let options = EngineOptions {
        keyring: Some(keyring.clone()),
        ..EngineOptions::default()
    };
    let engine = Engine::open(data, options)
        .with_context(|| format!("cannot open data directory {}", data.display()))?;
    Ok((engine, keyring))
}

/// A server running on its own runtime thread.
pub struct ServerHandle {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl ServerHandle {
    /// Blocks until Ctrl-C, then stops the server.
    pub fn wait_ctrl_c(mut self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stop) = self.stop.take() {
            let _ = tx.send(stop);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
        }
        if let Ok(stop) = rx.recv() {
            let _ = stop.send(());
        }
        self.join();
    }

    /// Stops the server now.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => eprintln!("error: server: {e:#}"),
                Err(_) => eprintln!("error: server thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// Starts the HTTP server on `listen` (or, if that address is taken, on a free loopback port)
/// in a background thread.
pub fn spawn_server(
    engine: Arc<Engine>,
    tagging: Arc<portrait_tagging::service::Tagging>,
    listen: SocketAddr,
    token: String,
) -> Result<ServerHandle> {
    start_server(
        engine,
        tagging,
        listen,
        &token,
        portrait_server::Limits::default(),
        true,
    )
}

/// Starts the HTTP server in a background thread; with `fallback`, a taken address falls back
/// to a free loopback port (the demo), otherwise it is an error (`serve`).
fn start_server(
    engine: Arc<Engine>,
    tagging: Arc<portrait_tagging::service::Tagging>,
    listen: SocketAddr,
    token: &str,
    limits: portrait_server::Limits,
    fallback: bool,
) -> Result<ServerHandle> {
    let listener = std::net::TcpListener::bind(listen)
        .or_else(|e| {
            if !fallback {
                return Err(e);
            }
            eprintln!("note: {listen} is taken ({e}); using a free port instead");
            std::net::TcpListener::bind("127.0.0.1:0")
        })
        .with_context(|| format!("cannot listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = Arc::new(
        portrait_server::App::new(engine, tagging, limits, token)
            .context("cannot load the API tokens")?,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("portrait-http".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                portrait_server::serve(app, listener, shutdown).await?;
                anyhow::Ok(())
            })
        })?;
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Compacts new events into the lake every `every` seconds until `stop` is set.
/// The background thread of `serve`: compacts the log into the lake every `every` seconds and,
/// every minute, computes the tags due by their refresh policy.
/// The daily retention run of `serve` (nothing without a policy).
fn apply_retention(tagging: &portrait_tagging::service::Tagging) {
    let engine = tagging.engine();
    match portrait_store::retention::Policy::load(engine.dir()) {
        Ok(p) if p.rules.is_empty() => {}
        Ok(_) => match tagging.with_lake_lock(|| {
            portrait_server::retention::apply(engine, portrait_core::time::now())
        }) {
            Ok(run) => tracing::info!(expired = run.expired, "scheduled retention run"),
            Err(e) => tracing::error!(error = %e, "scheduled retention run failed"),
        },
        Err(e) => tracing::error!(error = %e, "retention policy unreadable"),
    }
}

fn spawn_compactor(
    tagging: Arc<portrait_tagging::service::Tagging>,
    every: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    let handle = std::thread::Builder::new()
        .name("portrait-compactor".into())
        .spawn(move || {
            let mut waited = 0;
            let mut ticks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_secs(1));
                waited += 1;
                ticks += 1;
                if ticks.is_multiple_of(60) {
                    match tagging.refresh_due() {
                        Ok(Some(r)) => {
                            tracing::info!(
                                tags = r.tags.len(),
                                ms = r.duration_ms,
                                "scheduled tag refresh"
                            );
                            // Every refresh leaves a snapshot for its date (the tag history).
                            let recorded = portrait_history::record_computation(&tagging, r.as_of);
                            if let Err(e) = recorded {
                                tracing::error!(error = %e, "tag history snapshot failed");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "scheduled tag refresh failed"),
                    }
                }
                // Retention periods: ten minutes after the start, then once a day.
                if ticks % 86_400 == 600 {
                    apply_retention(&tagging);
                }
                if every == 0 || waited < every {
                    continue;
                }
                waited = 0;
                match tagging.compact() {
                    Ok(r) if r.events > 0 => {
                        tracing::info!(
                            events = r.events,
                            files = r.files.len(),
                            "compacted into the lake"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "compaction failed"),
                }
            }
        })?;
    Ok(handle)
}

/// `portrait compact`.
pub fn compact(data: &Path, rebuild: bool) -> Result<()> {
    let engine = open(data)?;
    let total = engine.state().stats.events;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("compacting {bar:30} {pos}/{len} events {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut progress = |n| bar.set_position(n);
    let report = if rebuild {
        portrait_lake::rebuild(&engine, &mut progress)?
    } else {
        portrait_lake::compact(&engine, &mut progress)?
    };
    bar.finish_and_clear();
    println!(
        "compacted {} events into {} files ({:.1} MB) under {}",
        report.events,
        report.files.len(),
        report.bytes as f64 / 1e6,
        portrait_lake::lake_dir(data).display()
    );
    Ok(())
}

/// `portrait serve`.
pub fn serve(
    data: &Path,
    listen: SocketAddr,
    limits: portrait_server::Limits,
    compact_every: u64,
    key_file: Option<&Path>,
) -> Result<()> {
    let engine = Arc::new(open_with(data, key_file)?.0);
    let tagging = Arc::new(
        portrait_tagging::service::Tagging::open(engine.clone())
            .context("cannot open the tag store")?,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactor = spawn_compactor(tagging.clone(), compact_every, stop.clone())?;
    let (token, created) =
        portrait_server::admin_token(data, std::env::var("PORTRAIT_ADMIN_TOKEN").ok())
            .context("cannot read or create the admin token")?;
    let server = start_server(engine.clone(), tagging, listen, &token, limits, false)?;
    eprintln!(
        "Portrait is serving {} on http://{}",
        data.display(),
        server.addr
    );
    if created {
        eprintln!(
            "Admin token (shown once; stored in {}/admin_token): {token}",
            data.display()
        );
    }
    server.wait_ctrl_c();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = compactor.join();
    engine.close();
    eprintln!("Portrait stopped; state saved.");
    Ok(())
}

/// `portrait source add`.
pub fn source_add(data: &Path, name: &str, kind: &str, key: Option<&str>) -> Result<()> {
    let kind = SourceKind::parse(kind)?;
    let _lock = portrait_store::engine::lock_dir(data)?;
    let mut reg = portrait_store::SourceRegistry::open(data)?;
    let source = reg.add(name, kind, key)?;
    println!("{}", source.write_keys[0]);
    Ok(())
}

/// `portrait source list`.
pub fn source_list(data: &Path) -> Result<()> {
    let reg = portrait_store::SourceRegistry::open(data)?;
    for s in reg.list() {
        let kind = serde_json::to_value(s.kind)?;
        println!(
            "{}\t{}\t{}",
            s.name,
            kind.as_str().unwrap_or("?"),
            s.write_keys.join(",")
        );
    }
    Ok(())
}

/// `portrait token add`: prints the new token (its only showing).
pub fn token_add(data: &Path, role: &str, name: Option<&str>) -> Result<()> {
    let role = portrait_server::Role::parse(role)?;
    let _lock = portrait_store::engine::lock_dir(data)?;
    let mut tokens = portrait_server::access::Tokens::open(data)?;
    let (entry, secret) = tokens.add(name, role)?;
    eprintln!(
        "token `{}` ({}) created; it is shown once and only its hash is kept",
        entry.name, entry.role
    );
    println!("{secret}");
    Ok(())
}

/// `portrait token list`.
pub fn token_list(data: &Path) -> Result<()> {
    let tokens = portrait_server::access::Tokens::open(data)?;
    for t in tokens.list() {
        println!("{}\t{}\t{}", t.name, t.role, t.created_at);
    }
    Ok(())
}

/// `portrait token remove`.
pub fn token_remove(data: &Path, name: &str) -> Result<()> {
    let _lock = portrait_store::engine::lock_dir(data)?;
    let mut tokens = portrait_server::access::Tokens::open(data)?;
    tokens.remove(name)?;
    println!("token `{name}` revoked");
    Ok(())
}

/// Parses and normalises `type:value`.
pub fn parse_identifier(engine: &Engine, text: &str) -> Result<Identifier> {
    let (kind, value) = text.split_once(':').ok_or_else(|| {
        anyhow!("identifier `{text}` must be `type:value`, e.g. phone:13800000000")
    })?;
    engine
        .identity()
        .lookup_identifier(kind, value)
        .map_err(|e| match e {
            portrait_core::identity::LookupError::Invalid(reason) => {
                anyhow!("{kind} `{value}`: {reason}")
            }
            other => anyhow!("{other}"),
        })
}

/// `portrait profile`.
pub fn profile(
    data: &Path,
    identifier: Option<&str>,
    id: Option<u32>,
    events: usize,
) -> Result<()> {
    let engine = open(data)?;
    let id: ProfileId = match (identifier, id) {
        (Some(text), _) => {
            let ident = parse_identifier(&engine, text)?;
            engine
                .state()
                .book
                .by_identifier(&ident)
                .ok_or_else(|| anyhow!("no profile has {ident}"))?
        }
        (None, Some(id)) => id,
        (None, None) => bail!("give --identifier type:value or --id N"),
    };
    let sources = engine.sources();
    let (mut view, history) = {
        let state = engine.state();
        let p = state
            .book
            .get(id)
            .ok_or_else(|| anyhow!("no profile {id}"))?;
        (profile_json(p, &sources), merges_json(&p.history, &sources))
    };
    let (timeline, _) = engine.timeline(id, 0, events)?.unwrap_or_default();
    view["merges"] = history;
    view["events"] = timeline
        .iter()
        .map(|(_, m)| m.to_json(sources.name(m.source)))
        .collect::<Vec<_>>()
        .into();
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}

/// `portrait unmerge`.
pub fn unmerge(data: &Path, id: u32, identifier: &str) -> Result<()> {
    let engine = open(data)?;
    let ident = parse_identifier(&engine, identifier)?;
    let parts = engine.unmerge(id, ident)?;
    println!("profile {id} split into {parts:?}");
    Ok(())
}

/// `portrait stats`.
pub fn stats(data: &Path) -> Result<()> {
    let engine = open(data)?;
    let state = engine.state();
    let sources = engine.sources();
    println!("profiles     {}", state.book.live());
    println!("identifiers  {}", state.book.identifiers());
    println!("merges       {}", state.book.merges());
    println!("events       {}", state.stats.events);
    println!("duplicates   {}", state.stats.duplicates);
    for (s, n) in &state.stats.per_source {
        println!("  {:<12} {n}", sources.name(*s));
    }
    Ok(())
}

/// `portrait import`: imports `files` into `source`; prints one summary line per file.
pub fn import(
    engine: &Engine,
    source: &str,
    mapping_path: &Path,
    rejects_dir: Option<&Path>,
    files: &[std::path::PathBuf],
    show_progress: bool,
) -> Result<portrait_server::imports::ImportSummary> {
    use portrait_import::{Mapping, RejectWriter, RowContext};
    let source_id = engine.sources().by_name(source).map(|s| s.id).ok_or_else(|| {
        anyhow!("no source named `{source}`; add it with `portrait source add --data DIR {source} --kind KIND`")
    })?;
    let mapping = Mapping::load(mapping_path)?;
    mapping.validate(engine.identity())?;
    let mut total = portrait_server::imports::ImportSummary::default();
    for file in files {
        let ctx = RowContext {
            config: engine.identity().clone(),
            source: source_id,
            received_at: portrait_core::time::now(),
        };
        let rows = portrait_import::read_file(file, &mapping, &ctx)?;
        let name = file
            .file_name()
            .map_or_else(|| "input".into(), |n| n.to_string_lossy().to_string());
        let reject_path = match rejects_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                dir.join(format!("{name}.rejects.csv"))
            }
            None => file.with_file_name(format!("{name}.rejects.csv")),
        };
        let bar = if show_progress {
            let bar = indicatif::ProgressBar::new(rows.total_bytes());
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(name.clone());
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut rejects = RejectWriter::new(&reject_path);
        let summary = portrait_server::imports::run_import(engine, rows, &mut rejects, &mut |b| {
            bar.set_position(b)
        })?;
        rejects.finish()?;
        bar.finish_and_clear();
        if show_progress && files.len() > 1 && (summary.rejected > 0 || summary.interrupted) {
            let mut line = format!(
                "{name}: {} rows, {} imported, {} duplicates, {} rejected",
                summary.rows, summary.imported, summary.duplicates, summary.rejected
            );
            if summary.rejected > 0 {
                line.push_str(&format!(" (see {})", reject_path.display()));
            }
            if summary.interrupted {
                line.push_str("; the file ended early: see the last reject");
            }
            println!("{line}");
        }
        total.rows += summary.rows;
        total.imported += summary.imported;
        total.duplicates += summary.duplicates;
        total.rejected += summary.rejected;
        total.interrupted |= summary.interrupted;
    }
    if show_progress {
        let what = if files.len() == 1 {
            files[0].display().to_string()
        } else {
            format!("{source} ({} files)", files.len())
        };
        let mut line = format!(
            "{what}: {} rows, {} imported, {} duplicates, {} rejected",
            total.rows, total.imported, total.duplicates, total.rejected
        );
        if total.rejected > 0 {
            line.push_str(&format!(
                " (reject files: {})",
                rejects_dir
                    .map_or_else(|| "next to the inputs".into(), |d| d.display().to_string())
            ));
        }
        println!("{line}");
    }
    Ok(total)
}

/// `portrait erase`.
pub fn erase(
    data: &Path,
    id: Option<u32>,
    identifier: Option<&str>,
    file: Option<&Path>,
) -> Result<()> {
    let engine = Arc::new(open(data)?);
    let tagging = portrait_tagging::service::Tagging::open(engine.clone())
        .context("cannot open the tag store")?;
    let mut targets: Vec<ProfileId> = id.into_iter().collect();
    let mut texts: Vec<String> = identifier.map(str::to_string).into_iter().collect();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        texts.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    if targets.is_empty() && texts.is_empty() {
        bail!("give --id N, --identifier type:value or --file FILE");
    }
    let mut not_found = 0;
    for (line, text) in texts.iter().enumerate() {
        let ident =
            parse_identifier(&engine, text).with_context(|| format!("entry {}", line + 1))?;
        match engine.state().book.by_identifier(&ident) {
            Some(p) => targets.push(p),
            None => not_found += 1,
        }
    }
    targets.sort_unstable();
    targets.dedup();
    for profile in targets {
        let r = portrait_server::erasure::erase(&engine, Some(&tagging), None, profile)?;
        println!(
            "erased profile {} ({}): {} events, {} identifiers suppressed, {} lake rows, {} reject lines",
            r.profile, r.id, r.events, r.identifiers, r.lake_rows, r.reject_lines
        );
    }
    if not_found > 0 {
        println!("{not_found} identifiers matched no profile");
    }
    Ok(())
}

/// `portrait keys rotate`.
pub fn rotate_keys(data: &Path, new_master: Option<&Path>) -> Result<()> {
    let (engine, keyring) = open_with(data, None)?;
    let n = engine.rotate_data_key()?;
    println!(
        "re-encrypted {n} records under data key {:08x}",
        keyring.active()
    );
    if let Some(path) = new_master {
        let master = portrait_store::crypto::MasterKey::from_file(path)?;
        keyring.rewrap(master)?;
        println!(
            "the keyring is now wrapped by the master key in {}; the old key no longer opens it",
            path.display()
        );
    }
    Ok(())
}
