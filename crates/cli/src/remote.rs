//! `weir trigger`, `weir status`, `weir runs` and `weir cancel`: the
//! daemon's runs, through its HTTP API.

use crate::client::{Client, ClientArgs};
use crate::output::Output;
use crate::plan::parse_param;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

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
        let run = client
            .call(
                Method::POST,
                &format!("/runs/{}/retry", encode(&args.run)),
                Some(json!({ "from": args.from })),
            )
            .await?;
        let id = run["id"].as_str().unwrap_or_default().to_owned();
        if !args.wait {
            print_run(&run, args.output, false)?;
            return Ok(ExitCode::SUCCESS);
        }
        if args.output == Output::Table {
            println!("run {id} retries {}", args.run);
        }
        follow(&client, &id, args.output).await
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
        let body = json!({ "approved": !args.reject, "comment": args.comment });
        let run = client.call(Method::POST, &path, Some(body)).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&run)?),
            Output::Table => {
                let step = run["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["id"] == args.step.as_str());
                let reason = step.and_then(|s| s["reason"].as_str()).unwrap_or_default();
                println!("{} {}: {reason}", args.run, args.step);
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
    from: String,
    /// The last instant of the range, included.
    #[arg(long)]
    to: String,
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

pub(crate) fn trigger(args: &TriggerArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let params: BTreeMap<&str, &str> = args
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let run = client
            .call(
                Method::POST,
                "/runs",
                Some(json!({ "pipeline": args.pipeline, "params": params })),
            )
            .await?;
        let id = run["id"].as_str().unwrap_or_default().to_owned();
        if !args.wait {
            print_run(&run, args.output, false)?;
            return Ok(ExitCode::SUCCESS);
        }
        if args.output == Output::Table {
            println!("run {id} of {}", args.pipeline);
        }
        follow(&client, &id, args.output).await
    })
}

/// Follows run `id`, a line per step state change, until it ends; exits
/// with its outcome (0 succeeded, 1 failed, 130 cancelled).
async fn follow(client: &Client, id: &str, output: Output) -> anyhow::Result<ExitCode> {
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let run = client
            .call(Method::GET, &format!("/runs/{id}"), None)
            .await?;
        for step in run["steps"].as_array().into_iter().flatten() {
            let name = step["id"].as_str().unwrap_or_default().to_owned();
            let state = step["state"].as_str().unwrap_or_default().to_owned();
            if shown.get(&name) != Some(&state) && state != "pending" {
                let line = match step["reason"].as_str() {
                    Some(reason) if state != "running" && state != "succeeded" => {
                        format!("{name}: {state} ({reason})")
                    }
                    _ => format!("{name}: {state}"),
                };
                if output == Output::Table {
                    println!("{line}");
                } else {
                    eprintln!("{line}");
                }
                shown.insert(name, state);
            }
        }
        if matches!(
            run["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            print_run(&run, output, true)?;
            return Ok(match run["state"].as_str() {
                Some("succeeded") => ExitCode::SUCCESS,
                Some("cancelled") => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn status(args: &RunArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let run = client
            .call(Method::GET, &format!("/runs/{}", args.run), None)
            .await?;
        print_run(&run, args.output, false)?;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn cancel(args: &RunArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let answer = client
            .call(Method::POST, &format!("/runs/{}/cancel", args.run), None)
            .await?;
        match args.output {
            Output::Json => println!("{answer}"),
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
        let list = client.call(Method::GET, "/pipelines", None).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
            Output::Table => {
                println!("{:<24} {:>5}  {:<12} FILE", "PIPELINE", "STEPS", "VERSION");
                for p in list.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:>5}  {:<12} {}",
                        p["name"].as_str().unwrap_or_default(),
                        p["steps"],
                        p["hash"]
                            .as_str()
                            .unwrap_or_default()
                            .get(..12)
                            .unwrap_or_default(),
                        p["file"].as_str().unwrap_or_default(),
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn runs(args: &RunsArgs) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let runs = client
            .call(Method::GET, &format!("/runs?limit={}", args.limit), None)
            .await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
            Output::Table => {
                println!(
                    "{:<34} {:<20} {:<10} {:<10} CREATED",
                    "RUN", "PIPELINE", "TRIGGER", "STATE"
                );
                for run in runs.as_array().into_iter().flatten() {
                    println!(
                        "{:<34} {:<20} {:<10} {:<10} {}",
                        run["id"].as_str().unwrap_or_default(),
                        run["pipeline"].as_str().unwrap_or_default(),
                        run["trigger"].as_str().unwrap_or_default(),
                        run["state"].as_str().unwrap_or_default(),
                        run["created_at"].as_str().unwrap_or_default(),
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints a run: JSON, or its state with one line per step (with gate
/// evidence); `brief` prints the state line only.
fn print_run(run: &Value, output: Output, brief: bool) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(run)?);
        return Ok(());
    }
    let reason = run["reason"]
        .as_str()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    println!(
        "run {} of {} {}{reason}",
        run["id"].as_str().unwrap_or_default(),
        run["pipeline"].as_str().unwrap_or_default(),
        run["state"].as_str().unwrap_or_default()
    );
    if brief {
        return Ok(());
    }
    for step in run["steps"].as_array().into_iter().flatten() {
        let attempts = step["attempts"].as_array().map_or(0, Vec::len);
        let reason = step["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        println!(
            "  {:<28} {:<10} attempts {attempts}{reason}",
            step["id"].as_str().unwrap_or_default(),
            step["state"].as_str().unwrap_or_default()
        );
        for evidence in step["evidence"].as_array().into_iter().flatten() {
            let verdict = if evidence["holds"] == Value::Bool(true) {
                "holds"
            } else {
                "fails"
            };
            println!(
                "    {verdict}: {} — {}",
                evidence["expression"].as_str().unwrap_or_default(),
                evidence["explanation"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

pub(crate) fn logs(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let run = client
            .call(Method::GET, &format!("/runs/{}", args.run), None)
            .await?;
        let steps: Vec<String> = match &args.step {
            Some(step) => vec![step.clone()],
            None => run["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["attempts"].as_array().is_some_and(|a| !a.is_empty()) || args.follow)
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
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
                    args.run,
                    encode(&step)
                );
                let chunk = client.call(Method::GET, &path, None).await?;
                let data = chunk["data"].as_str().unwrap_or_default();
                if header && (!data.is_empty() || chunk["done"] == Value::Bool(true)) {
                    println!("== {step} (attempt {}) ==", chunk["attempt"]);
                    header = false;
                }
                print!("{data}");
                let _ = std::io::stdout().flush();
                offset = chunk["next"].as_u64().unwrap_or(offset);
                if !args.follow || chunk["done"] == Value::Bool(true) {
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
        let events = client
            .call(Method::GET, &format!("/events?limit={}", args.limit), None)
            .await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&events)?),
            Output::Table => {
                println!(
                    "{:<6} {:<8} {:<16} {:<30} DECISION",
                    "ID", "KIND", "PIPELINE", "TIME"
                );
                for event in events.as_array().into_iter().flatten() {
                    println!(
                        "{:<6} {:<8} {:<16} {:<30} {}",
                        event["id"].to_string(),
                        event["kind"].as_str().unwrap_or_default(),
                        event["pipeline"].as_str().unwrap_or("-"),
                        event["created_at"].as_str().unwrap_or_default(),
                        event["decision"].as_str().unwrap_or_default(),
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
        let answer = client
            .call(
                Method::POST,
                &path,
                Some(json!({ "from": args.from, "to": args.to })),
            )
            .await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
            Output::Table => {
                for run in answer["runs"].as_array().into_iter().flatten() {
                    println!(
                        "{}  run {}",
                        run["slot"].as_str().unwrap_or_default(),
                        run["run"].as_str().unwrap_or_default()
                    );
                }
                println!(
                    "{} run(s) started, {} slot(s) already run",
                    answer["runs"].as_array().map_or(0, Vec::len),
                    answer["skipped"]
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
