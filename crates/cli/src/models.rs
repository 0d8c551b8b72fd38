//! `weir models list|show|promote|history` and `weir lineage`: the model
//! registry, through the daemon's API.

use crate::client::{Client, ClientArgs};
use crate::output::Output;
use crate::remote::encode;
use indexmap::IndexMap;
use serde_json::{Value, json};
use std::process::ExitCode;
use weir_api as api;

/// Arguments of `weir models`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print the answer.
    #[arg(long, value_enum, default_value_t, global = true)]
    output: Output,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Every model with its latest version and aliases.
    List,
    /// A model's versions (MODEL), one version (MODEL@N), or the version an
    /// alias points at, now or at a past time (--alias, --at).
    Show {
        /// MODEL or MODEL@VERSION.
        model: String,
        /// The version this alias points at.
        #[arg(long)]
        alias: Option<String>,
        /// With --alias: the version it pointed at then (RFC 3339 time).
        #[arg(long, requires = "alias")]
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Point an alias at a version: MODEL@N --alias production.
    Promote {
        /// MODEL@VERSION.
        #[arg(value_name = "MODEL@VERSION")]
        target: String,
        /// The alias to move (`production`, `staging`, any name).
        #[arg(long)]
        alias: String,
    },
    /// Every alias move of a model, with when and who.
    History {
        /// The model.
        model: String,
    },
    /// A version's model card (MODEL@N), checked against the audit entry
    /// of its registration: exits 1 when the card was changed since.
    Card {
        /// MODEL@VERSION.
        #[arg(value_name = "MODEL@VERSION")]
        target: String,
        /// Markdown, JSON (the card with its check) or a standalone HTML page.
        #[arg(long, value_enum, default_value_t = CardFormat::Md)]
        format: CardFormat,
    },
}

/// How `weir models card` writes the card.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CardFormat {
    Md,
    Json,
    Html,
}

/// `MODEL@N` split, or an error that shows the form.
fn model_at(text: &str) -> anyhow::Result<(&str, i64)> {
    text.split_once('@')
        .and_then(|(m, v)| Some((m, v.parse().ok()?)))
        .filter(|(m, _)| !m.is_empty())
        .ok_or_else(|| anyhow::anyhow!("'{text}' is not MODEL@VERSION (for instance churn@3)"))
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let json = args.output == Output::Json;
        match &args.command {
            Command::List => {
                let models: Vec<api::ModelSummary> = client.get("/models").await?;
                if json {
                    return print_json(&models);
                }
                println!("{:<24} {:>7} {:>8}  ALIASES", "MODEL", "LATEST", "VERSIONS");
                for m in &models {
                    println!(
                        "{:<24} {:>7} {:>8}  {}",
                        m.model,
                        m.latest,
                        m.versions,
                        aliases(&m.aliases)
                    );
                }
            }
            Command::Show { model, alias, at } if model.contains('@') || alias.is_some() => {
                let path = if model.contains('@') {
                    let (name, version) = model_at(model)?;
                    format!("/models/{}/versions/{version}", encode(name))
                } else {
                    let mut path = format!("/models/{}", encode(model));
                    if let Some(alias) = alias {
                        path.push_str(&format!("?alias={}", encode(alias)));
                        if let Some(at) = at {
                            path.push_str(&format!("&at={}", encode(&at.to_rfc3339())));
                        }
                    }
                    path
                };
                let version: api::ModelVersion = client.get(&path).await?;
                if json {
                    return print_json(&version);
                }
                print_version(&version);
            }
            Command::Show { model, .. } => {
                let model: api::Model = client.get(&format!("/models/{}", encode(model))).await?;
                if json {
                    return print_json(&model);
                }
                println!("{}  aliases: {}", model.model, aliases(&model.aliases));
                model.versions.iter().for_each(print_version);
            }
            Command::Promote { target, alias } => {
                let (name, version) = model_at(target)?;
                let path = format!("/models/{}/aliases/{}", encode(name), encode(alias));
                let promoted: api::Promoted = client
                    .post(&path, Some(&api::Promotion { version }))
                    .await?;
                if json {
                    return print_json(&promoted);
                }
                println!(
                    "{} {} -> {} (was {}), by {}",
                    promoted.model,
                    promoted.alias,
                    promoted.version,
                    or_dash(promoted.from_version),
                    promoted.actor
                );
            }
            Command::Card { target, format } => {
                let (name, version) = model_at(target)?;
                let path = format!("/models/{}/versions/{version}/card", encode(name));
                let card: api::ModelCard = client.get(&path).await?;
                match format {
                    CardFormat::Json => println!("{}", serde_json::to_string_pretty(&card)?),
                    CardFormat::Md => print!("{}", weir_daemon::card::markdown(&card.card)),
                    CardFormat::Html => print!("{}", weir_daemon::card::html(&card.card)),
                }
                match (card.verified, card.audit_seq) {
                    (true, Some(seq)) => eprintln!(
                        "card sha256 {} matches audit entry {seq} (model.registered {target})",
                        card.sha256
                    ),
                    (_, Some(seq)) => {
                        eprintln!(
                            "error: card sha256 {} does not match the {} recorded by audit entry {seq}: the card was changed after {target} was registered",
                            card.sha256,
                            card.recorded_sha256.as_deref().unwrap_or("nothing"),
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    (_, None) => {
                        eprintln!(
                            "error: no audit entry records the registration of {target}: the card cannot be checked"
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Command::History { model } => {
                let path = format!("/models/{}/history", encode(model));
                let moves: Vec<api::AliasMove> = client.get(&path).await?;
                if json {
                    return print_json(&moves);
                }
                println!(
                    "{:<32} {:<12} {:>4} {:>4}  BY",
                    "WHEN", "ALIAS", "FROM", "TO"
                );
                for m in &moves {
                    println!(
                        "{:<32} {:<12} {:>4} {:>4}  {}",
                        crate::output::time(&m.moved_at),
                        m.alias,
                        or_dash(m.from_version),
                        m.version,
                        m.actor
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// A value, or `-` for none.
fn or_dash(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn aliases(aliases: &IndexMap<String, i64>) -> String {
    (aliases.iter())
        .map(|(a, v)| format!("{a}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_version(v: &api::ModelVersion) {
    println!(
        "{}@{}  sha256:{}  run {}  {}",
        v.model,
        v.version,
        v.sha256,
        v.run_id,
        crate::output::time(&v.created_at)
    );
    for (name, value) in &v.metrics {
        println!("  {name} = {value}");
    }
    if let Some(m) = &v.mlflow {
        let line = match (m.state.as_str(), &m.version) {
            ("done", Some(version)) => {
                format!(
                    "mirrored to MLflow as version {version} ({})",
                    m.tracking_uri
                )
            }
            ("failed", _) => format!(
                "not mirrored to MLflow ({}): {}",
                m.tracking_uri,
                m.error.as_deref().unwrap_or("refused")
            ),
            _ => match &m.error {
                Some(error) => format!(
                    "not mirrored to MLflow yet ({} tries; next {}): {error}",
                    m.attempts,
                    m.next_at
                        .as_ref()
                        .map_or("soon".to_owned(), crate::output::time)
                ),
                None => format!("queued for MLflow ({})", m.tracking_uri),
            },
        };
        println!("  {line}");
    }
}

/// Arguments of `weir lineage`.
#[derive(clap::Args)]
pub(crate) struct LineageArgs {
    /// MODEL@VERSION.
    #[arg(value_name = "MODEL@VERSION")]
    target: String,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print it: a tree, or the data.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
    /// Print it as an OpenLineage run event instead (JSON), for lineage
    /// tools such as Marquez.
    #[arg(long, conflicts_with = "output")]
    openlineage: bool,
}

pub(crate) fn lineage(args: &LineageArgs) -> anyhow::Result<ExitCode> {
    let (name, version) = model_at(&args.target)?;
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let path = format!("/models/{}/versions/{version}/lineage", encode(name));
        let lineage: api::Lineage = client.get(&path).await?;
        match args.output {
            _ if args.openlineage => {
                println!("{}", serde_json::to_string_pretty(&openlineage(&lineage))?);
            }
            Output::Json => println!("{}", serde_json::to_string_pretty(&lineage)?),
            Output::Table => print_lineage(&lineage),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Where weir's own OpenLineage facets are described.
const PRODUCER: &str = "https://github.com/weir-dev/weir";

/// A custom OpenLineage facet: its fields with the two every facet carries.
fn facet(name: &str, fields: Value) -> Value {
    let mut facet = json!({
        "_producer": PRODUCER,
        "_schemaURL": format!("{PRODUCER}/blob/main/docs/mlops.md#{name}"),
    });
    if let (Some(facet), Value::Object(fields)) = (facet.as_object_mut(), fields) {
        facet.extend(fields);
    }
    facet
}

/// The lineage as an OpenLineage `RunEvent` (spec 2-0-2): the run of the
/// pipeline as job run, every declared artifact of the steps before the
/// register step as an input dataset, and the model version as output.
fn openlineage(l: &api::Lineage) -> Value {
    let run = &l.run;
    // weir's run ids are UUIDs written without hyphens.
    let run_id = match uuid::Uuid::parse_str(&run.id) {
        Ok(uuid) => uuid.hyphenated().to_string(),
        Err(_) => run.id.clone(),
    };
    let inputs: Vec<Value> = (l.steps.iter())
        .flat_map(|step| {
            step.artifacts.iter().map(move |(path, sha)| {
                json!({
                    "namespace": "weir",
                    "name": format!("runs/{}/work/{path}", run.id),
                    "facets": {
                        "weir_artifact": facet("weir_artifact", json!({
                            "sha256": sha, "step": step.id, "image": step.image,
                        })),
                    },
                })
            })
        })
        .collect();
    json!({
        "eventType": "COMPLETE",
        "eventTime": l.registered_at,
        "producer": PRODUCER,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {
            "runId": run_id,
            "facets": {
                "weir_run": facet("weir_run", json!({
                    "trigger": run.trigger,
                    "params": run.params,
                    "pipeline_hash": run.pipeline_hash,
                    "source_commit": run.source_commit,
                    "event": run.event,
                    "event_commit": run.event_commit,
                })),
            },
        },
        "job": { "namespace": "weir", "name": run.pipeline },
        "inputs": inputs,
        "outputs": [{
            "namespace": "weir-registry",
            "name": format!("{}@{}", l.model, l.version),
            "facets": {
                "weir_model_version": facet("weir_model_version", json!({
                    "artifact": l.artifact,
                    "sha256": l.sha256,
                    "metrics": l.metrics,
                })),
            },
        }],
    })
}

/// The first 12 hex digits of a hash, with no `sha256:` prefix.
fn short(hash: &str) -> &str {
    let bare = hash.strip_prefix("sha256:").unwrap_or(hash);
    bare.get(..12).unwrap_or(bare)
}

/// The lineage as a tree: the version, its run, and the steps before it.
fn print_lineage(l: &api::Lineage) {
    let run = &l.run;
    println!(
        "{}@{}  {} sha256:{}",
        l.model,
        l.version,
        l.artifact,
        short(&l.sha256)
    );
    for (name, value) in &l.metrics {
        println!("│ {name} = {value}");
    }
    println!(
        "└─ run {}  ({})",
        run.id,
        crate::output::time(&run.created_at)
    );
    let mut lines = vec![format!(
        "pipeline {}  file sha256:{}{}",
        run.pipeline,
        short(&run.pipeline_hash),
        match &run.source_commit {
            Some(c) => format!("  git {}", short(c)),
            None => String::new(),
        }
    )];
    let mut trigger = format!("trigger {}", run.trigger);
    if let Some(event) = &run.event {
        trigger.push_str(&format!("  event #{} ({})", event.id, event.kind));
    }
    if let Some(commit) = &run.event_commit {
        trigger.push_str(&format!("  commit {}", short(commit)));
    }
    if let Some(of) = &run.retry_of {
        trigger.push_str(&format!("  retry of {of}"));
    }
    lines.push(trigger);
    let params: Vec<String> = (run.params.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !params.is_empty() {
        lines.push(format!("params {}", params.join(" ")));
    }
    let total = lines.len() + l.steps.len();
    let mut index = 0;
    let branch = |index: &mut usize| {
        *index += 1;
        if *index == total {
            ("   └─ ", "      ")
        } else {
            ("   ├─ ", "   │  ")
        }
    };
    for line in lines {
        let (head, _) = branch(&mut index);
        println!("{head}{line}");
    }
    for step in &l.steps {
        let (head, rest) = branch(&mut index);
        let mut line = format!("step {} ({}, {})", step.id, step.kind, step.state);
        if let Some(image) = &step.image {
            line.push_str(&format!("  image sha256:{}", short(image)));
        }
        println!("{head}{line}");
        for (path, sha) in &step.artifacts {
            println!("{rest}artifact {path} sha256:{}", short(sha));
        }
    }
    for replay in &l.replays {
        println!(
            "replayed by run {} ({})  {}",
            replay.run,
            crate::output::time(&replay.created_at),
            replay.summary
        );
    }
}

/// Arguments of `weir replay`.
#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// MODEL@VERSION.
    #[arg(value_name = "MODEL@VERSION")]
    target: String,
    /// Follow the replay to its end and print what it found; exits 0 when
    /// it reproduced the version, 1 when not.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    client: ClientArgs,
    /// How to print the answer.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub(crate) fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let (name, version) = model_at(&args.target)?;
    crate::local::runtime()?.block_on(async {
        let client = Client::new(&args.client)?;
        let path = format!("/models/{}/versions/{version}", encode(name));
        let run: api::Run = client.post(&format!("{path}/replay"), None::<&()>).await?;
        if !args.wait {
            if args.output == Output::Json {
                return print_json(&run);
            }
            println!("run {} replays {} ({})", run.id, args.target, run.state);
            return Ok(ExitCode::SUCCESS);
        }
        if args.output == Output::Table {
            println!("run {} replays {}", run.id, args.target);
        }
        // The finding is kept just after the run ends.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(24 * 3600);
        let found = loop {
            let replays: Vec<api::Replay> = client.get(&format!("{path}/replays")).await?;
            if let Some(found) = replays.into_iter().find(|r| r.run == run.id) {
                break found;
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("replay run {} did not end within a day", run.id);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        if args.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            for a in &found.artifacts {
                let replayed = a.replayed.as_deref().map_or("-", short);
                let mark = if a.identical { "identical" } else { "DIFFERS" };
                println!(
                    "  {:<12} {:<24} {}  {}  {mark}",
                    a.step,
                    a.path,
                    short(&a.original),
                    replayed
                );
            }
            println!("{}", found.summary);
        }
        Ok(if found.reproduced {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
