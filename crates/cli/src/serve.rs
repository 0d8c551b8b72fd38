//! `weir serve`: the daemon — pipelines from a folder, the HTTP API, and
//! every unfinished run driven to its end.

use crate::config::{Layers, LogFormat, Source};
use crate::local::StoreArgs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `weir serve`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The folder of pipeline files (*.yaml, *.yml, searched recursively) [default: pipelines].
    #[arg(long, env = "WEIR_PIPELINES")]
    pipelines: Option<PathBuf>,
    /// Where the HTTP API listens [default: 127.0.0.1:8765].
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<String>,
    /// Serve the API over TLS with this certificate chain (PEM); with --tls-key.
    #[arg(long, env = "WEIR_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "WEIR_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// How log lines on stderr are written [default: text].
    #[arg(long, env = "WEIR_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(flatten)]
    store: StoreArgs,
}

/// The daemon's resolved settings.
pub(crate) struct Settings {
    pub(crate) pipelines: PathBuf,
    pub(crate) listen: String,
    /// The certificate and key to serve TLS with, when given.
    pub(crate) tls: Option<weir_server::Tls>,
    pub(crate) log_format: LogFormat,
    /// The daemon's own settings.
    pub(crate) daemon: weir_daemon::Config,
    /// How `weir config` prints.
    pub(crate) output: crate::output::Output,
    /// Named tokens besides the daemon's own (`admin`), from `weir.toml`.
    pub(crate) tokens: Vec<(String, String)>,
    /// Each setting with its value and where it came from.
    pub(crate) picked: Vec<(&'static str, String, Source)>,
}

impl Args {
    /// Defaults, then `weir.toml`, then `WEIR_*`, then flags.
    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        let mut layers = Layers::read(&self.store.config)?;
        let pipelines = layers.pick(
            "pipelines",
            Some("WEIR_PIPELINES"),
            self.pipelines.clone(),
            |f| f.pipelines.clone(),
            PathBuf::from("pipelines"),
        );
        let listen = layers.pick(
            "listen",
            Some("WEIR_LISTEN"),
            self.listen.clone(),
            |f| f.listen.clone(),
            "127.0.0.1:8765".to_owned(),
        );
        let tls_cert = layers.pick(
            "tls_cert",
            Some("WEIR_TLS_CERT"),
            self.tls_cert.clone().map(Some),
            |f| Some(f.tls_cert.clone()),
            None,
        );
        let tls_key = layers.pick(
            "tls_key",
            Some("WEIR_TLS_KEY"),
            self.tls_key.clone().map(Some),
            |f| Some(f.tls_key.clone()),
            None,
        );
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(weir_server::Tls { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                anyhow::bail!("tls_cert is set but tls_key is not: give both, or neither")
            }
            (None, Some(_)) => {
                anyhow::bail!("tls_key is set but tls_cert is not: give both, or neither")
            }
        };
        let log_format = layers.pick(
            "log_format",
            Some("WEIR_LOG_FORMAT"),
            self.log_format,
            |f| f.log_format,
            LogFormat::Text,
        );
        let (daemon, output) = self.store.resolve(&mut layers)?;
        let mut tokens = Vec::new();
        for (name, var) in layers.file.tokens.iter().flatten() {
            match std::env::var(var) {
                Ok(token) if !token.is_empty() => tokens.push((name.clone(), token)),
                _ => anyhow::bail!(
                    "token '{name}' of the settings file: its variable {var} is not set"
                ),
            }
        }
        Ok(Settings {
            tokens,
            pipelines,
            listen,
            tls,
            log_format,
            daemon,
            output,
            picked: layers.picked,
        })
    }
}

/// `weir config`: each setting `weir serve` would use, and where it came from.
pub(crate) fn show(args: &Args) -> anyhow::Result<ExitCode> {
    let settings = args.settings()?;
    match settings.output {
        crate::output::Output::Json => {
            let map: serde_json::Map<String, serde_json::Value> = settings
                .picked
                .iter()
                .map(|(key, value, source)| {
                    let entry = serde_json::json!({"value": value, "source": source.to_string()});
                    ((*key).to_owned(), entry)
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&map)?);
        }
        crate::output::Output::Table => {
            let width = settings
                .picked
                .iter()
                .map(|(_, v, _)| v.len())
                .max()
                .unwrap_or(0);
            for (key, value, source) in &settings.picked {
                println!("{key:<16} {value:<width$}  {source}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let settings = args.settings()?;
    crate::config::init_logging(settings.log_format, "info");
    // TLS (and the store's connections to PostgreSQL) speak rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::local::runtime()?.block_on(async {
        let store = settings.daemon.store().await?;
        let options = settings.daemon.daemon_options().await?;
        let token = settings.daemon.token()?;
        let (daemon, problems) =
            weir_daemon::Daemon::start(store, &settings.pipelines, options).await?;
        for problem in &problems {
            tracing::warn!(problem = %problem, "pipeline file does not validate");
        }
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let address = listener.local_addr()?;
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!(
            "weir serving {} pipeline(s) from {} on {scheme}://{address}",
            daemon.pipelines().len(),
            settings.pipelines.display()
        );
        if settings.tls.is_none() && !address.ip().is_loopback() {
            // Said on stderr as well as in the log: it is the operator's
            // token that crosses the network.
            eprintln!("{}", plain_http_warning(address));
            tracing::warn!(%address, "{}", plain_http_warning(address));
        }
        tracing::info!(
            pipelines = daemon.pipelines().len(),
            folder = %settings.pipelines.display(),
            %address,
            "serving"
        );
        let mut tokens = vec![("admin".to_owned(), token)];
        tokens.extend(settings.tokens.iter().cloned());
        let state = weir_server::State {
            daemon: Arc::clone(&daemon),
            tokens: Arc::from(tokens),
        };
        match &settings.tls {
            Some(tls) => weir_server::serve_tls(state, listener, tls, shutdown()).await?,
            None => weir_server::serve(state, listener, shutdown()).await?,
        }
        // Every run loop commits its last decision and lets go of its run
        // (the next start takes up the containers that still run), and the
        // audit queue is appended, before weir exits.
        if !daemon.shutdown(std::time::Duration::from_secs(8)).await {
            tracing::warn!("some tasks were still running at exit");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What `weir serve` says when it listens beyond loopback without TLS.
fn plain_http_warning(address: std::net::SocketAddr) -> String {
    format!(
        "weir: warning: serving {address} over plain HTTP: API tokens and webhook payloads cross the network in the clear; give --tls-cert and --tls-key (or tls_cert and tls_key in weir.toml), or listen on 127.0.0.1"
    )
}

/// Completes on the first SIGTERM or SIGINT: weir stops taking requests
/// and exits, leaving running containers to the next start. Another signal,
/// or 10 seconds, and it exits at once.
async fn shutdown() {
    signal().await;
    eprintln!(
        "weir: shutting down; running steps are taken up at the next start (a second signal exits at once)"
    );
    tokio::spawn(async {
        tokio::select! {
            () = signal() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
        std::process::exit(130);
    });
}

async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
