//! The engine driven event by event with made-up times: scenarios of every
//! rule, and a property test over random pipelines and outcomes.

mod machine;
mod props;
mod replay;

use chrono::{TimeZone, Utc};
use serde_json::{Value as Json, json};
use weir_engine::{Action, Event, Outcome, Run, Time, advance, new_run};
use weir_model::Pipeline;

/// A fixed start time.
fn t0() -> Time {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
}

/// `t0` plus `secs` seconds.
fn at(secs: i64) -> Time {
    t0() + chrono::Duration::seconds(secs)
}

/// Validates `yaml`, panicking with the diagnostics if it is invalid.
fn pipeline(yaml: &str) -> Pipeline {
    let validated = weir_model::validate(yaml);
    match validated.pipeline {
        Some(p) => p,
        None => panic!("invalid test pipeline: {:#?}", validated.diagnostics),
    }
}

/// A run of `pipeline` with default params and the given registry.
fn run_with(pipeline: &Pipeline, params: &[(&str, &str)], models: Json) -> Run {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    new_run(
        pipeline,
        "r1",
        weir_engine::Cause::manual("tester"),
        &params,
        Json::Null,
        models,
        t0(),
    )
    .expect("params resolve")
}

fn run(pipeline: &Pipeline) -> Run {
    run_with(pipeline, &[], json!({}))
}

/// Advances with plenty of slots, panicking on an engine error.
fn step(run: &mut Run, pipeline: &Pipeline, event: Event, now: Time) -> Vec<Action> {
    advance(run, pipeline, event, now, 100).expect("event fits the run")
}

/// The instance index of `id`.
fn idx(run: &Run, id: &str) -> usize {
    run.steps
        .iter()
        .position(|s| s.id == id)
        .unwrap_or_else(|| panic!("no step {id}"))
}

/// The `Start` actions, as instance ids with attempt numbers.
fn starts(run: &Run, actions: &[Action]) -> Vec<(String, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { step, attempt } => Some((run.steps[*step].id.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

/// An outcome with this exit code and nothing else.
fn exit(code: i32) -> Outcome {
    Outcome {
        exit_code: Some(code),
        ..Outcome::default()
    }
}

/// Starts and finishes attempt `attempt` of `id` with `outcome` at `now`.
fn finish(
    run: &mut Run,
    pipeline: &Pipeline,
    id: &str,
    attempt: u32,
    outcome: Outcome,
    now: Time,
) -> Vec<Action> {
    let s = idx(run, id);
    step(run, pipeline, Event::Started { step: s, attempt }, now);
    step(
        run,
        pipeline,
        Event::Exited {
            step: s,
            attempt,
            outcome,
        },
        now,
    )
}
