//! `weir trigger`, `weir status`, `weir runs` and `weir cancel`: the
//! daemon's runs, through its HTTP API.

use crate::client::{Client, ClientArgs};
use crate::output::Output;
use crate::plan::parse_param;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;
use weir_api as api;

/// Arguments of `weir trigger`.
#[derive(clap::Args)]
pub(crate) struct TriggerArgs {
    /// The pipeline to run.
    pipeline: String,
    /// A param value, `name=value`; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Follow the run and exit with its outcome (0 succeeded, 1 failed).
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print the run.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Arguments of `weir retry`.
#[derive(clap::Args)]
pub(crate) struct RetryArgs {
    /// The finished run to retry.
    run: String,
    /// Run this step and everything that needs it again (default: the
    /// steps that did not succeed); steps that succeeded before it are reused.
    #[arg(long, value_name = "STEP")]
    from: Option<String>,
    /// Follow the new run and exit with its outcome.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print the run.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Arguments of `weir approve`.
#[derive(clap::Args)]
pub(crate) struct ApproveArgs {
    /// The run.
    run: String,
    /// The approval step waiting for a decision.
    step: String,
    /// Reject rather than approve: the step fails, and the run with it.
    #[arg(long)]
    reject: bool,
    /// Why; kept with the decision.
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print the run.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub(crate) fn retry(args: &RetryArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let retry = api::Retry {
            from: args.from.clone(),
        };
        let run: api::Run = client
            .post(&format!("/runs/{}/retry", encode(&args.run)), Some(&retry))
            .await?;
        if !args.wait {
            print_run(&run, args.output, false)?;
            return Ok(ExitCode::SUCCESS);
        }
        if args.output == Output::Table {
            println!("run {} retries {}", run.id, args.run);
        }
        follow(&client, &run.id, args.output).await
    })
}

pub(crate) fn approve(args: &ApproveArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let path = format!(
            "/runs/{}/steps/{}/approval",
            encode(&args.run),
            encode(&args.step)
        );
        let approval = api::Approval {
            approved: !args.reject,
            comment: args.comment.clone(),
        };
        let run: api::Run = client.post(&path, Some(&approval)).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&run)?),
            Output::Table => {
                let reason = run.step(&args.step).and_then(|s| s.reason.as_deref());
                println!("{} {}: {}", args.run, args.step, reason.unwrap_or_default());
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Arguments of `weir status` and `weir cancel`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The run.
    run: String,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print it.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Arguments of `weir logs`.
#[derive(clap::Args)]
pub(crate) struct LogsArgs {
    /// The run.
    run: String,
    /// One step instance (`train[lr=0.1]`); every step when left out.
    step: Option<String>,
    /// An attempt of the step; its latest when left out.
    #[arg(long)]
    attempt: Option<u32>,
    /// Keep printing as the steps write, until they end.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `weir backfill`.
#[derive(clap::Args)]
pub(crate) struct BackfillArgs {
    /// The pipeline whose schedule slots to run.
    pipeline: String,
    /// The first instant of the range (RFC 3339, like 2026-03-01T00:00:00Z).
    #[arg(long)]
    from: chrono::DateTime<chrono::Utc>,
    /// The last instant of the range, included.
    #[arg(long)]
    to: chrono::DateTime<chrono::Utc>,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print the runs started.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Arguments of `weir runs`.
#[derive(clap::Args)]
pub(crate) struct RunsArgs {
    /// How many of the latest runs.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print them.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Arguments of `weir runs`.
#[derive(clap::Args)]
pub(crate) struct RunListArgs {
    /// How many of the latest runs.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Only runs created before this run (the last of the page before).
    #[arg(long, value_name = "RUN")]
    after: Option<String>,
    /// Only this pipeline's runs.
    #[arg(long)]
    pipeline: Option<String>,
    /// Only runs in this state (queued, running, succeeded, failed, cancelled).
    #[arg(long)]
    state: Option<String>,
    /// Only runs of this cause (manual, webhook, schedule, backfill, drift, retry, replay).
    #[arg(long)]
    trigger: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print them.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub(crate) fn trigger(args: &TriggerArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let new = api::NewRun {
            pipeline: args.pipeline.clone(),
            params: args.params.iter().cloned().collect(),
        };
        let run: api::Run = client.post("/runs", Some(&new)).await?;
        if !args.wait {
            print_run(&run, args.output, false)?;
            return Ok(ExitCode::SUCCESS);
        }
        if args.output == Output::Table {
            println!("run {} of {}", run.id, args.pipeline);
        }
        follow(&client, &run.id, args.output).await
    })
}

/// Follows run `id`, a line per step state change, until it ends; exits
/// with its outcome (0 succeeded, 1 failed, 130 cancelled).
async fn follow(client: &Client, id: &str, output: Output) -> anyhow::Result<ExitCode> {
    use api::StepState;
    let mut shown: BTreeMap<String, StepState> = BTreeMap::new();
    loop {
        let run: api::Run = client.get(&format!("/runs/{id}")).await?;
        for step in &run.steps {
            if shown.get(&step.id) != Some(&step.state) && step.state != StepState::Pending {
                let (name, state) = (&step.id, step.state);
                let line = match &step.reason {
                    Some(reason) if !matches!(state, StepState::Running | StepState::Succeeded) => {
                        format!("{name}: {state} ({reason})")
                    }
                    _ => format!("{name}: {state}"),
                };
                if output == Output::Table {
                    println!("{line}");
                } else {
                    eprintln!("{line}");
                }
                shown.insert(step.id.clone(), step.state);
            }
        }
        if run.state.is_terminal() {
            print_run(&run, output, true)?;
            return Ok(crate::local::exit_code(run.state));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn status(args: &RunArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let run: api::Run = client.get(&format!("/runs/{}", encode(&args.run))).await?;
        print_run(&run, args.output, false)?;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn cancel(args: &RunArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let path = format!("/runs/{}/cancel", encode(&args.run));
        let answer: api::Cancelling = client.post(&path, None::<&()>).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string(&answer)?),
            Output::Table => println!("run {} is being cancelled", args.run),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Arguments of the listings that take no filter (`weir pipelines`).
#[derive(clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// How to print them.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub(crate) fn pipelines(args: &ListArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let list: Vec<api::Pipeline> = client.get("/pipelines").await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
            Output::Table => {
                println!("{:<24} {:>5}  {:<12} FILE", "PIPELINE", "STEPS", "VERSION");
                for p in &list {
                    println!(
                        "{:<24} {:>5}  {:<12} {}",
                        p.name,
                        p.steps,
                        p.hash.get(..12).unwrap_or_default(),
                        p.file,
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn runs(args: &RunListArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let mut path = format!("/runs?limit={}", args.limit);
        for (key, value) in [
            ("after", &args.after),
            ("pipeline", &args.pipeline),
            ("state", &args.state),
            ("trigger", &args.trigger),
        ] {
            if let Some(value) = value {
                path.push_str(&format!("&{key}={}", encode(value)));
            }
        }
        let runs: Vec<api::RunSummary> = client.get(&path).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
            Output::Table => {
                println!(
                    "{:<34} {:<20} {:<10} {:<10} CREATED",
                    "RUN", "PIPELINE", "TRIGGER", "STATE"
                );
                for run in &runs {
                    println!(
                        "{:<34} {:<20} {:<10} {:<10} {}",
                        run.id,
                        run.pipeline,
                        run.trigger,
                        run.state,
                        crate::output::time(&run.created_at),
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints a run: JSON, or its state with one line per step (with gate
/// evidence); `brief` prints the state line only.
fn print_run(run: &api::Run, output: Output, brief: bool) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(run)?);
        return Ok(());
    }
    let reason = run
        .reason
        .as_ref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    println!("run {} of {} {}{reason}", run.id, run.pipeline, run.state);
    if brief {
        return Ok(());
    }
    for step in &run.steps {
        let reason = step
            .reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        println!(
            "  {:<28} {:<10} attempts {}{reason}",
            step.id,
            step.state.as_str(),
            step.attempts.len()
        );
        for evidence in &step.evidence {
            let verdict = if evidence.holds { "holds" } else { "fails" };
            println!(
                "    {verdict}: {} — {}",
                evidence.expression, evidence.explanation
            );
        }
    }
    Ok(())
}

pub(crate) fn logs(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let run: api::Run = client.get(&format!("/runs/{}", encode(&args.run))).await?;
        let steps: Vec<String> = match &args.step {
            Some(step) => vec![step.clone()],
            None => (run.steps.into_iter())
                .filter(|s| !s.attempts.is_empty() || args.follow)
                .map(|s| s.id)
                .collect(),
        };
        let several = steps.len() > 1;
        for step in steps {
            let mut offset = 0u64;
            let mut header = several;
            loop {
                let attempt = args
                    .attempt
                    .map(|a| format!("&attempt={a}"))
                    .unwrap_or_default();
                let path = format!(
                    "/runs/{}/steps/{}/logs?offset={offset}{attempt}",
                    encode(&args.run),
                    encode(&step)
                );
                let chunk: api::LogChunk = client.get(&path).await?;
                if header && (!chunk.data.is_empty() || chunk.done) {
                    println!("== {step} (attempt {}) ==", chunk.attempt);
                    header = false;
                }
                print!("{}", chunk.data);
                let _ = std::io::stdout().flush();
                offset = chunk.next;
                if !args.follow || chunk.done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Percent-encodes a step instance id for a URL path.
pub(crate) fn encode(step: &str) -> String {
    step.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(crate) fn events(args: &RunsArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let events: Vec<api::Event> = client.get(&format!("/events?limit={}", args.limit)).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&events)?),
            Output::Table => {
                println!(
                    "{:<6} {:<8} {:<16} {:<30} DECISION",
                    "ID", "KIND", "PIPELINE", "TIME"
                );
                for event in &events {
                    println!(
                        "{:<6} {:<8} {:<16} {:<30} {}",
                        event.id,
                        event.kind,
                        event.pipeline.as_deref().unwrap_or("-"),
                        crate::output::time(&event.created_at),
                        event.decision,
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn backfill(args: &BackfillArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let path = format!("/pipelines/{}/backfill", encode(&args.pipeline));
        let range = api::Backfill {
            from: args.from,
            to: args.to,
        };
        let answer: api::Backfilled = client.post(&path, Some(&range)).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
            Output::Table => {
                for run in &answer.runs {
                    println!("{}  run {}", crate::output::time(&run.slot), run.run);
                }
                println!(
                    "{} run(s) started, {} slot(s) already run",
                    answer.runs.len(),
                    answer.skipped
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
