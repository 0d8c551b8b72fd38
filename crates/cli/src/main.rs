//! `weir`: the command line of the weir pipeline orchestrator. Each
//! subcommand lives in its own module; this file only parses arguments and
//! maps outcomes to exit codes.

mod audit;
mod client;
mod config;
mod files;
mod gc;
mod local;
mod models;
mod output;
mod plan;
mod remote;
mod resume;
mod run;
mod schema;
mod serve;
mod validate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// weir: pipelines for machine-learning operations, from YAML in your repo.
#[derive(Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check pipeline files and folders; print every problem as file:line:col.
    Validate(validate::Args),
    /// Show what a run would do: the DAG in layers, matrix expanded, params resolved.
    Plan(plan::Args),
    /// Print the JSON Schema of the pipeline format, for editors.
    Schema,
    /// Run one pipeline now, in this process; exit 0 on success, 1 on failure.
    Run(run::Args),
    /// Drive interrupted runs of the local store to their end.
    Resume(resume::Args),
    /// The daemon: pipelines from a folder, the HTTP API, runs driven to their end.
    Serve(serve::Args),
    /// The settings `weir serve` would use, each with where it came from.
    Config(serve::Args),
    /// Start a run on the daemon; --wait follows it and exits with its outcome.
    Trigger(remote::TriggerArgs),
    /// A run of the daemon, with its steps and gate evidence.
    Status(remote::RunArgs),
    /// The pipelines the daemon serves, with their version.
    Pipelines(remote::ListArgs),
    /// The daemon's latest runs.
    Runs(remote::RunListArgs),
    /// Cancel a run of the daemon.
    Cancel(remote::RunArgs),
    /// A new run retrying a finished one, reusing the steps that succeeded.
    Retry(remote::RetryArgs),
    /// Decide an approval step: approve it, or --reject it.
    Approve(remote::ApproveArgs),
    /// A run's step logs; --follow streams them while the steps run.
    Logs(remote::LogsArgs),
    /// The model registry: list, show, promote, history.
    Models(models::Args),
    /// Where a model version came from: run, pipeline file, commit, params,
    /// images and artifact hashes, as a tree (--output json: as data).
    Lineage(models::LineageArgs),
    /// Run again what produced a model version (same pipeline version,
    /// params, event and image ids) and compare every artifact's sha256.
    Replay(models::ReplayArgs),
    /// The audit log: verify the chain, export it, show the public key.
    Audit(audit::Args),
    /// Webhook deliveries and other events, with what weir decided for each.
    Events(remote::RunsArgs),
    /// One run per schedule slot in a range, each slot run at most once.
    Backfill(remote::BackfillArgs),
    /// Prune finished runs older than a retention (their attempts, logs and
    /// folders); runs that registered a model version and the audit log stay.
    Gc(gc::Args),
    /// What weir starts to run process steps so they outlive it (internal).
    #[command(hide = true)]
    Supervise,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Schema => schema::run(),
        Command::Run(args) => run::run(&args),
        Command::Resume(args) => resume::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Config(args) => serve::show(&args),
        Command::Trigger(args) => remote::trigger(&args),
        Command::Status(args) => remote::status(&args),
        Command::Pipelines(args) => remote::pipelines(&args),
        Command::Runs(args) => remote::runs(&args),
        Command::Cancel(args) => remote::cancel(&args),
        Command::Retry(args) => remote::retry(&args),
        Command::Approve(args) => remote::approve(&args),
        Command::Logs(args) => remote::logs(&args),
        Command::Models(args) => models::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Lineage(args) => models::lineage(&args),
        Command::Replay(args) => models::replay(&args),
        Command::Events(args) => remote::events(&args),
        Command::Backfill(args) => remote::backfill(&args),
        Command::Gc(args) => gc::run(&args),
        Command::Supervise => weir_daemon::supervise()
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
