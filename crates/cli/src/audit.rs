//! `weir audit verify|export|key`: the daemon's audit log, checked through
//! its API or offline from an export and the public key.

use crate::client::{Client, ClientArgs};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use weir_api as api;

/// Arguments of `weir audit`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check the chain and its signatures: exit 0 with the count, or 1
    /// naming the first bad entry. With --file and --pubkey, offline.
    Verify {
        /// An export (`weir audit export`) to check instead of the daemon's log.
        #[arg(long, requires = "pubkey")]
        file: Option<PathBuf>,
        /// The public key (hex, `weir audit key`) to check the export with.
        #[arg(long, requires = "file")]
        pubkey: Option<String>,
    },
    /// Write every entry as JSON lines, for an auditor to verify offline.
    Export {
        /// Where to write (default: stdout).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// The daemon's public key, hex.
    Key,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if let Command::Verify {
        file: Some(file),
        pubkey: Some(pubkey),
    } = &args.command
    {
        return verify_file(file, pubkey);
    }
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        match &args.command {
            Command::Verify { .. } => Ok(report(&client.get("/audit/verify").await?)),
            Command::Export { file } => {
                let mut out: Box<dyn std::io::Write> = match file {
                    Some(path) => Box::new(std::io::BufWriter::new(
                        std::fs::File::create(path)
                            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                    )),
                    None => Box::new(std::io::stdout().lock()),
                };
                let mut after = 0;
                let mut count = 0;
                loop {
                    let entries: Vec<api::AuditEntry> = client
                        .get(&format!("/audit?after={after}&limit=1000"))
                        .await?;
                    let Some(last) = entries.last() else { break };
                    after = last.seq;
                    for entry in &entries {
                        writeln!(out, "{}", serde_json::to_string(entry)?)?;
                    }
                    count += entries.len();
                }
                out.flush()?;
                if file.is_some() {
                    eprintln!("exported {count} entries");
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Key => {
                let key: api::AuditKey = client.get("/audit/key").await?;
                println!("{}", key.public_key);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Prints a check of the chain; exits 0 when it verifies, else 1.
fn report(check: &api::Verification) -> ExitCode {
    if check.verified {
        println!("audit chain verifies: {} entries", check.entries);
        return ExitCode::SUCCESS;
    }
    let seq = check.seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
    let reason = check.reason.as_deref().unwrap_or_default();
    println!("audit chain broken at entry {seq}: {reason}");
    ExitCode::FAILURE
}

/// Verifies an export offline.
fn verify_file(file: &Path, pubkey: &str) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let checked = weir_daemon::verify_export(&text, pubkey).map_err(|e| match e {
        weir_daemon::ExportError::Line { line, error } => {
            anyhow::anyhow!("{}:{line}: not an audit entry: {error}", file.display())
        }
        weir_daemon::ExportError::Key(_) => anyhow::anyhow!("{e}"),
    })?;
    Ok(report(&weir_server::wire::verification(checked)))
}
