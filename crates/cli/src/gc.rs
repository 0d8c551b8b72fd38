//! `weir gc`: the daemon prunes finished runs older than a retention.

use crate::client::{Client, ClientArgs};
use crate::output::Output;
use std::process::ExitCode;
use weir_api as api;

/// Arguments of `weir gc`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Prune runs that finished longer ago than this (`30d`, `12h`; at
    /// least `1m`) [default: the daemon's retention].
    #[arg(long, value_name = "DURATION")]
    older_than: Option<String>,
    /// Count what would be pruned; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print the answer.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let asked = api::Gc {
            older_than: args.older_than.clone(),
            dry_run: args.dry_run,
        };
        let done: api::Collected = client.post("/gc", Some(&asked)).await?;
        if args.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&done)?);
            return Ok(ExitCode::SUCCESS);
        }
        let verb = if done.dry_run { "would prune" } else { "pruned" };
        println!(
            "{verb} {} runs finished before {} ({} attempts, {} log bytes{}); runs that registered a model version and the audit log are kept",
            done.runs,
            crate::output::time(&done.before),
            done.attempts,
            done.log_bytes,
            if done.dry_run {
                String::new()
            } else {
                format!(", {} folders", done.folders)
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}
