//! `weir models list|show|promote|history` and `weir lineage`: the model
//! registry, through the daemon's API.

use crate::client::{Client, ClientArgs};
use crate::output::Output;
use crate::remote::encode;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::ExitCode;

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
        let answer = match &args.command {
            Command::List => client.call(Method::GET, "/models", None).await?,
            Command::Show { model, alias, at } => {
                if model.contains('@') {
                    let (name, version) = model_at(model)?;
                    let path = format!("/models/{}/versions/{version}", encode(name));
                    client.call(Method::GET, &path, None).await?
                } else {
                    let mut path = format!("/models/{}", encode(model));
                    if let Some(alias) = alias {
                        path.push_str(&format!("?alias={}", encode(alias)));
                        if let Some(at) = at {
                            path.push_str(&format!("&at={}", encode(&at.to_rfc3339())));
                        }
                    }
                    client.call(Method::GET, &path, None).await?
                }
            }
            Command::Promote { target, alias } => {
                let (name, version) = model_at(target)?;
                let path = format!("/models/{}/aliases/{}", encode(name), encode(alias));
                let body = json!({ "version": version });
                client.call(Method::POST, &path, Some(body)).await?
            }
            Command::History { model } => {
                let path = format!("/models/{}/history", encode(model));
                client.call(Method::GET, &path, None).await?
            }
        };
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
            Output::Table => print_table(&args.command, &answer),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn aliases(value: &Value) -> String {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(a, v)| format!("{a}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn print_version(v: &Value) {
    println!(
        "{}@{}  sha256:{}  run {}  {}",
        text(&v["model"]),
        text(&v["version"]),
        text(&v["sha256"]),
        text(&v["run_id"]),
        text(&v["created_at"])
    );
    for (name, value) in v["metrics"].as_object().into_iter().flatten() {
        println!("  {name} = {value}");
    }
}

fn print_table(command: &Command, answer: &Value) {
    match command {
        Command::List => {
            println!("{:<24} {:>7} {:>8}  ALIASES", "MODEL", "LATEST", "VERSIONS");
            for m in answer.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:>7} {:>8}  {}",
                    text(&m["model"]),
                    text(&m["latest"]),
                    text(&m["versions"]),
                    aliases(&m["aliases"])
                );
            }
        }
        Command::Show { .. } if answer.get("versions").is_some() => {
            println!(
                "{}  aliases: {}",
                text(&answer["model"]),
                aliases(&answer["aliases"])
            );
            for v in answer["versions"].as_array().into_iter().flatten() {
                print_version(v);
            }
        }
        Command::Show { .. } => print_version(answer),
        Command::Promote { .. } => println!(
            "{} {} -> {} (was {}), by {}",
            text(&answer["model"]),
            text(&answer["alias"]),
            text(&answer["version"]),
            text(&answer["from_version"]),
            text(&answer["actor"])
        ),
        Command::History { .. } => {
            println!(
                "{:<32} {:<12} {:>4} {:>4}  BY",
                "WHEN", "ALIAS", "FROM", "TO"
            );
            for m in answer.as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<12} {:>4} {:>4}  {}",
                    text(&m["moved_at"]),
                    text(&m["alias"]),
                    text(&m["from_version"]),
                    text(&m["version"]),
                    text(&m["actor"])
                );
            }
        }
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
        let answer = client.call(Method::GET, &path, None).await?;
        match args.output {
            _ if args.openlineage => {
                println!("{}", serde_json::to_string_pretty(&openlineage(&answer))?);
            }
            Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
            Output::Table => print_lineage(&answer),
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
fn openlineage(l: &Value) -> Value {
    let run = &l["run"];
    let id = text(&run["id"]);
    // weir's run ids are UUIDs written without hyphens.
    let run_id = match uuid::Uuid::parse_str(&id) {
        Ok(uuid) => uuid.hyphenated().to_string(),
        Err(_) => id.clone(),
    };
    let inputs: Vec<Value> = l["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|step| {
            let step_id = text(&step["id"]);
            let image = step["image"].clone();
            step["artifacts"]
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(path, sha)| {
                    json!({
                        "namespace": "weir",
                        "name": format!("runs/{}/work/{path}", text(&l["run"]["id"])),
                        "facets": {
                            "weir_artifact": facet("weir_artifact", json!({
                                "sha256": sha, "step": step_id, "image": image,
                            })),
                        },
                    })
                })
        })
        .collect();
    json!({
        "eventType": "COMPLETE",
        "eventTime": l["registered_at"],
        "producer": PRODUCER,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {
            "runId": run_id,
            "facets": {
                "weir_run": facet("weir_run", json!({
                    "trigger": run["trigger"],
                    "params": run["params"],
                    "pipeline_hash": run["pipeline_hash"],
                    "source_commit": run["source_commit"],
                    "event": run["event"],
                    "event_commit": run["event_commit"],
                })),
            },
        },
        "job": { "namespace": "weir", "name": run["pipeline"] },
        "inputs": inputs,
        "outputs": [{
            "namespace": "weir-registry",
            "name": format!("{}@{}", text(&l["model"]), text(&l["version"])),
            "facets": {
                "weir_model_version": facet("weir_model_version", json!({
                    "artifact": l["artifact"],
                    "sha256": l["sha256"],
                    "metrics": l["metrics"],
                })),
            },
        }],
    })
}

fn short(hash: &Value) -> String {
    let text = text(hash);
    let bare = text.strip_prefix("sha256:").unwrap_or(&text);
    bare.get(..12).unwrap_or(bare).to_owned()
}

/// The lineage as a tree: the version, its run, and the steps before it.
fn print_lineage(l: &Value) {
    let run = &l["run"];
    println!(
        "{}@{}  {} sha256:{}",
        text(&l["model"]),
        text(&l["version"]),
        text(&l["artifact"]),
        short(&l["sha256"])
    );
    for (name, value) in l["metrics"].as_object().into_iter().flatten() {
        println!("│ {name} = {value}");
    }
    println!(
        "└─ run {}  ({})",
        text(&run["id"]),
        text(&run["created_at"])
    );
    let mut lines = vec![format!(
        "pipeline {}  file sha256:{}{}",
        text(&run["pipeline"]),
        short(&run["pipeline_hash"]),
        match run["source_commit"].as_str() {
            Some(c) => format!("  git {}", c.get(..12).unwrap_or(c)),
            None => String::new(),
        }
    )];
    let mut trigger = format!("trigger {}", text(&run["trigger"]));
    if let Some(event) = run["event"].as_object() {
        trigger.push_str(&format!(
            "  event #{} ({})",
            event["id"],
            text(&event["kind"])
        ));
    }
    if let Some(commit) = run["event_commit"].as_str() {
        trigger.push_str(&format!("  commit {}", commit.get(..12).unwrap_or(commit)));
    }
    if let Some(of) = run["retry_of"].as_str() {
        trigger.push_str(&format!("  retry of {of}"));
    }
    lines.push(trigger);
    let params: Vec<String> = run["params"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    if !params.is_empty() {
        lines.push(format!("params {}", params.join(" ")));
    }
    let steps = l["steps"].as_array().cloned().unwrap_or_default();
    let total = lines.len() + steps.len();
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
    for step in &steps {
        let (head, rest) = branch(&mut index);
        let mut line = format!(
            "step {} ({}, {})",
            text(&step["id"]),
            text(&step["kind"]),
            text(&step["state"])
        );
        if step["image"].is_string() {
            line.push_str(&format!("  image sha256:{}", short(&step["image"])));
        }
        println!("{head}{line}");
        for (path, sha) in step["artifacts"].as_object().into_iter().flatten() {
            println!("{rest}artifact {path} sha256:{}", short(sha));
        }
    }
}
