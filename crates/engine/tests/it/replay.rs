//! Replays: which steps a replay runs, and what comparing it says.

use super::{pipeline, run, t0};
use weir_engine::{Attempt, AttemptState, Cause, Run, RunState, StepState, compare, replay_run};

const LIFECYCLE: &str = "name: m
defaults: { executor: process }
steps:
  ingest: { run: 'true', artifacts: [data.csv] }
  train: { needs: [ingest], run: 'true', artifacts: [model.bin] }
  gate: { needs: [train], gate: ['steps.train.state == \"succeeded\"'] }
  approve: { needs: [gate], approval: {} }
  register: { needs: [approve], register: { model: m, artifact: model.bin } }
  deploy: { needs: [register], run: 'true' }
  aside: { run: 'true' }
";

fn succeeded(number: u32, artifacts: &[(&str, &str)]) -> Attempt {
    Attempt {
        number,
        state: AttemptState::Succeeded,
        created_at: t0(),
        started_at: Some(t0()),
        finished_at: Some(t0()),
        deadline: None,
        stopping: None,
        exit_code: Some(0),
        metrics: Default::default(),
        outputs: Default::default(),
        image: Some("sha256:abc".into()),
        artifacts: artifacts
            .iter()
            .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
            .collect(),
        gpus: Vec::new(),
        reason: None,
    }
}

/// A finished run whose ingest wrote `data` and train `model`.
fn finished(id: &str, data: &str, model: &str) -> Run {
    let p = pipeline(LIFECYCLE);
    let mut r = run(&p);
    r.id = id.to_owned();
    for s in &mut r.steps {
        s.state = StepState::Succeeded;
        match s.id.as_str() {
            "ingest" => s.attempts.push(succeeded(1, &[("data.csv", data)])),
            "train" => s.attempts.push(succeeded(1, &[("model.bin", model)])),
            "approve" => s.reason = Some("approved by ana: looks right".into()),
            _ => {}
        }
    }
    r.state = RunState::Succeeded;
    r
}

fn cause() -> Cause {
    Cause::Replay {
        model: "m".into(),
        version: 1,
        of: "orig".into(),
        actor: "ana".into(),
        images: Default::default(),
    }
}

#[test]
fn a_replay_runs_what_led_to_the_version_and_keeps_the_approval_taken() {
    let p = pipeline(LIFECYCLE);
    let original = finished("orig", "d1", "m1");
    let replay = replay_run(&p, &original, "again", "register", cause(), t0()).expect("replays");
    let states: Vec<(&str, StepState, Option<&str>)> = replay
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.state, s.reason.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            ("ingest", StepState::Pending, None),
            ("train", StepState::Pending, None),
            ("gate", StepState::Pending, None),
            (
                "approve",
                StepState::Succeeded,
                Some("replay of m@1: approved by ana: looks right in run orig")
            ),
            (
                "register",
                StepState::Skipped,
                Some("replay of m@1: nothing is registered again")
            ),
            (
                "deploy",
                StepState::Skipped,
                Some("replay of m@1: not upstream of the register step")
            ),
            (
                "aside",
                StepState::Skipped,
                Some("replay of m@1: not upstream of the register step")
            ),
        ]
    );
    assert_eq!(replay.params, original.params);
    let error = replay_run(&p, &original, "again", "train", cause(), t0())
        .expect_err("not a register step");
    assert_eq!(error.to_string(), "run orig has no register step 'train'");
}

#[test]
fn comparing_names_the_first_step_that_differs_and_why() {
    let p = pipeline(LIFECYCLE);
    let original = finished("orig", "d1", "m1");
    let same = compare(&p, &original, &finished("a", "d1", "m1"));
    assert!(same.reproduced);
    assert_eq!(same.summary, "reproduced: 2 of 2 artifacts identical");

    let data = compare(&p, &original, &finished("b", "d2", "m2"));
    assert!(!data.reproduced);
    assert_eq!(
        data.summary,
        "not reproduced: 2 of 2 artifacts differ, from step ingest on (data.csv): step ingest has no upstream step: the data it reads changed"
    );

    let fit = compare(&p, &original, &finished("c", "d1", "m2"));
    let difference = fit.first_difference.expect("a difference");
    assert_eq!((difference.step.as_str(), fit.identical), ("train", 1));
    assert!(
        difference.cause.contains("is not deterministic"),
        "{}",
        difference.cause
    );

    let mut cancelled = finished("d", "d1", "m1");
    cancelled.state = RunState::Cancelled;
    cancelled.reason = Some("skipped: m already has its maximum of runs in progress".into());
    for s in &mut cancelled.steps {
        s.attempts.clear();
        s.state = StepState::Cancelled;
    }
    assert_eq!(
        compare(&p, &original, &cancelled).summary,
        "not reproduced: the replay cancelled (skipped: m already has its maximum of runs in progress); 0 of 2 artifacts identical"
    );
}
