//! `weir serve`: the daemon — pipelines from a folder, the HTTP API, and
//! every unfinished run driven to its end.

use crate::local::StoreArgs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `weir serve`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The folder of pipeline files (*.yaml, *.yml, searched recursively).
    #[arg(long, env = "WEIR_PIPELINES", default_value = "pipelines")]
    pipelines: PathBuf,
    /// Where the HTTP API listens.
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:8765")]
    listen: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// The API token: `WEIR_TOKEN`, else the one in the data folder, made at
/// the first start (mode 0600).
pub(crate) fn token(data: &Path) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("WEIR_TOKEN")
        && !token.is_empty()
    {
        return Ok(token);
    }
    let path = data.join("token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    use sha2::Digest as _;
    std::fs::create_dir_all(data)?;
    // Two random v4 UUIDs: 244 bits from the OS random source.
    let seed = format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let token = hex::encode(sha2::Sha256::digest(seed.as_bytes()));
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    Ok(token)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let store = args.store.store().await?;
        let options = args.store.daemon_options().await?;
        let token = token(&args.store.data)?;
        let (daemon, problems) =
            weir_daemon::Daemon::start(store, &args.pipelines, options).await?;
        for problem in &problems {
            eprintln!("{problem}");
        }
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let address = listener.local_addr()?;
        println!(
            "weir serving {} pipeline(s) from {} on http://{address}",
            daemon.pipelines().len(),
            args.pipelines.display()
        );
        let state = weir_server::State {
            daemon,
            token: Arc::from(token),
        };
        axum::serve(listener, weir_server::router(state))
            .with_graceful_shutdown(shutdown())
            .await?;
        // Returning drops the runs' tasks: every decision is committed, and
        // the next start takes up the containers that still run.
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on the first SIGTERM or SIGINT: weir stops taking requests
/// and exits, leaving running containers to the next start. Another signal,
/// or 10 seconds, and it exits at once.
async fn shutdown() {
    signal().await;
    eprintln!(
        "weir: shutting down; running containers are taken up at the next start (a second signal exits at once)"
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
