//! `weir audit verify|export|key`: the daemon's audit log, checked through
//! its API or offline from an export and the public key.

use crate::client::{Client, ClientArgs};
use reqwest::Method;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_store::AuditEntry;

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
            Command::Verify { .. } => {
                let answer = client.call(Method::GET, "/audit/verify", None).await?;
                if answer["verified"] == true {
                    println!("audit chain verifies: {} entries", answer["entries"]);
                    Ok(ExitCode::SUCCESS)
                } else {
                    println!(
                        "audit chain broken at entry {}: {}",
                        answer["seq"],
                        answer["reason"].as_str().unwrap_or_default()
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
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
                    let page = client
                        .call(
                            Method::GET,
                            &format!("/audit?after={after}&limit=1000"),
                            None,
                        )
                        .await?;
                    let entries: Vec<AuditEntry> = serde_json::from_value(page)?;
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
                let answer = client.call(Method::GET, "/audit/key", None).await?;
                println!("{}", answer["public_key"].as_str().unwrap_or_default());
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Verifies an export offline.
fn verify_file(file: &PathBuf, pubkey: &str) -> anyhow::Result<ExitCode> {
    let key = weir_store::public_key(pubkey).map_err(|e| anyhow::anyhow!("--pubkey: {e}"))?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let mut entries = Vec::new();
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let entry: AuditEntry = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!("{}:{}: not an audit entry: {e}", file.display(), number + 1)
        })?;
        entries.push(entry);
    }
    match weir_store::verify(&entries, &key) {
        Ok(count) => {
            println!("audit chain verifies: {count} entries");
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            println!("audit chain broken at {broken}");
            Ok(ExitCode::FAILURE)
        }
    }
}
