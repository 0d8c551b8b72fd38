//! What an attempt runs, with its templates rendered against the run as it
//! is when the attempt starts: the command line or argv, the image, the
//! environment. An executor adds the step contract (DESIGN.md §2) on top.

use crate::context;
use crate::run::Run;
use weir_model::Pipeline;
use weir_model::pipeline::{Container, Executor, Gpus, Invocation, Pull, StepKind};

/// A container step's attempt, ready to hand to an executor.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// `sh -c LINE` or an argv.
    pub command: Program,
    /// The image (docker executor only).
    pub image: Option<String>,
    /// When to pull it.
    pub pull: Pull,
    /// Docker or process.
    pub executor: Executor,
    /// The pipeline's env then the step's, rendered, in file order.
    pub env: Vec<(String, String)>,
    /// Names of the daemon's environment variables to hand over, masked in logs.
    pub secrets: Vec<String>,
    /// GPUs asked for.
    pub gpus: Option<Gpus>,
    /// CPU limit, in cores.
    pub cpus: Option<f64>,
    /// Memory limit, in bytes.
    pub memory: Option<u64>,
    /// Artifacts to hash, relative to the work folder.
    pub artifacts: Vec<String>,
}

/// The program of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A shell line, run with `sh -c`.
    Shell(String),
    /// An argv, no shell.
    Argv(Vec<String>),
}

impl Program {
    /// The argv to execute: `["sh", "-c", line]` for a shell line.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Program::Shell(line) => vec!["sh".to_owned(), "-c".to_owned(), line.clone()],
            Program::Argv(argv) => argv.clone(),
        }
    }
}

/// Why an attempt could not be prepared; it fails with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// The step runs no program.
    #[error("step '{step}' is a {kind} step, not a container step")]
    NotAContainer {
        /// The step's id.
        step: String,
        /// Its kind.
        kind: &'static str,
    },
    /// A template read something absent.
    #[error("{template}: {reason}")]
    Template {
        /// Which template (`run`, `env MODE`, …).
        template: String,
        /// What was missing.
        reason: String,
    },
}

/// Renders the container step of instance `index` of `run`. An error (a
/// template reading something absent) names the template and the missing
/// key, and fails the attempt.
pub fn prepare(run: &Run, pipeline: &Pipeline, index: usize) -> Result<Prepared, PrepareError> {
    let step = &pipeline.steps[run.steps[index].step];
    let StepKind::Container(container) = &step.kind else {
        return Err(PrepareError::NotAContainer {
            step: step.id.value.clone(),
            kind: step.kind.name(),
        });
    };
    // Most templates are plain text: the context, which holds every
    // step's results, is built only for one that reads something.
    let ctx = std::cell::LazyCell::new(|| context::for_instance(run, pipeline, index));
    let plain = weir_expr::Context::new();
    let render = |t: &weir_expr::Template, what: &str| {
        let ctx = if t.is_literal() { &plain } else { &*ctx };
        t.render(ctx).map_err(|e| PrepareError::Template {
            template: what.to_owned(),
            reason: e.to_string(),
        })
    };
    let Container {
        action,
        image,
        executor,
        pull,
        resources,
        env,
        secrets,
        artifacts,
        ..
    } = container.as_ref();
    let command = match action {
        Invocation::Run(line) => Program::Shell(render(&line.value, "run")?),
        Invocation::Command(argv) => Program::Argv(
            argv.iter()
                .map(|a| render(&a.value, "command"))
                .collect::<Result<_, _>>()?,
        ),
    };
    // A replay runs each step on the image id the original ran, which is
    // local by definition: never pulled, and a missing one fails the step.
    let pinned = match &run.cause {
        crate::Cause::Replay { images, .. } => images.get(&run.steps[index].id),
        _ => None,
    };
    let image = match (image, executor, pinned) {
        (Some(_), Executor::Docker, Some(pinned)) => Some(pinned.clone()),
        (Some(image), Executor::Docker, None) => Some(render(&image.value, "image")?),
        _ => None,
    };
    let pull = if pinned.is_some() { Pull::Never } else { *pull };
    let mut rendered_env = Vec::new();
    for var in pipeline.env.iter().chain(env) {
        let value = render(&var.value, &format!("env {}", var.name.value))?;
        rendered_env.retain(|(name, _): &(String, String)| name != &var.name.value);
        rendered_env.push((var.name.value.clone(), value));
    }
    Ok(Prepared {
        command,
        image,
        pull,
        executor: *executor,
        env: rendered_env,
        secrets: secrets.iter().map(|s| s.value.clone()).collect(),
        gpus: resources.gpus.clone(),
        cpus: resources.cpus,
        memory: resources.memory.map(|m| m.bytes()),
        artifacts: artifacts.iter().map(|a| a.value.clone()).collect(),
    })
}

/// The `model_card:` fields of `pipeline`, rendered against `run` as its
/// register step instance `index` sees it (`None` when it has no card).
pub fn model_card(
    run: &Run,
    pipeline: &Pipeline,
    index: usize,
) -> Result<Option<Vec<(String, String)>>, PrepareError> {
    let Some(card) = &pipeline.model_card else {
        return Ok(None);
    };
    let ctx = context::for_instance(run, pipeline, index);
    let fields = card
        .fields
        .iter()
        .map(|(key, template)| {
            let text = template
                .value
                .render(&ctx)
                .map_err(|e| PrepareError::Template {
                    template: format!("model_card.{}", key.value),
                    reason: e.to_string(),
                })?;
            Ok((key.value.clone(), text))
        })
        .collect::<Result<_, PrepareError>>()?;
    Ok(Some(fields))
}
