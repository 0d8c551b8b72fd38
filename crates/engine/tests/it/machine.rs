//! One scenario per rule of the state machine.

use crate::*;
use serde_json::json;
use weir_engine::{
    Action, Admission, AttemptState, Error, Event, Outcome, RunState, StepState, StopReason, admit,
    advance,
};

#[test]
fn a_chain_runs_in_order_and_succeeds() {
    let p = pipeline(
        "name: c\ndefaults: { executor: process }\nsteps:\n  a: { run: a }\n  b: { needs: [a], run: b }\n  c: { needs: [b], run: c }\n",
    );
    let mut r = run(&p);
    let actions = step(&mut r, &p, Event::Tick, t0());
    assert_eq!(starts(&r, &actions), [("a".to_owned(), 1)]);
    assert_eq!(r.state, RunState::Running);
    let actions = finish(&mut r, &p, "a", 1, exit(0), at(1));
    assert_eq!(starts(&r, &actions), [("b".to_owned(), 1)]);
    let actions = finish(&mut r, &p, "b", 1, exit(0), at(2));
    assert_eq!(starts(&r, &actions), [("c".to_owned(), 1)]);
    let actions = finish(&mut r, &p, "c", 1, exit(0), at(3));
    assert!(actions.is_empty());
    assert_eq!(r.state, RunState::Succeeded);
    assert_eq!(r.finished_at, Some(at(3)));
    assert_eq!(r.steps[0].attempts[0].started_at, Some(at(1)));
}

#[test]
fn retries_back_off_up_to_max_delay_then_fail_and_skip_dependants() {
    let p = pipeline(
        "name: r\ndefaults: { executor: process }\nsteps:\n  a:\n    run: a\n    retry: { limit: 2, delay: 10s, backoff: exponential, max_delay: 15s }\n  b: { needs: [a], run: b }\n",
    );
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    let actions = finish(&mut r, &p, "a", 1, exit(3), at(0));
    assert_eq!(actions, [Action::WakeAt(at(10))]);
    assert_eq!(r.steps[0].state, StepState::Pending);
    assert_eq!(
        r.steps[0].reason.as_deref(),
        Some("exit code 3; retry 1 of 2 after 10s")
    );
    assert!(
        step(&mut r, &p, Event::Tick, at(5))
            .iter()
            .all(|a| matches!(a, Action::WakeAt(_)))
    );
    let actions = step(&mut r, &p, Event::Tick, at(10));
    assert_eq!(starts(&r, &actions), [("a".to_owned(), 2)]);
    // Exponential: 20s, capped at 15s.
    let actions = finish(&mut r, &p, "a", 2, exit(3), at(11));
    assert_eq!(actions, [Action::WakeAt(at(26))]);
    let actions = step(&mut r, &p, Event::Tick, at(26));
    assert_eq!(starts(&r, &actions), [("a".to_owned(), 3)]);
    finish(&mut r, &p, "a", 3, exit(3), at(27));
    assert_eq!(r.steps[0].state, StepState::Failed);
    assert_eq!(
        r.steps[0].reason.as_deref(),
        Some("exit code 3 (after 3 attempts)")
    );
    assert_eq!(r.steps[1].state, StepState::Skipped);
    assert_eq!(r.steps[1].reason.as_deref(), Some("upstream 'a' failed"));
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(
        r.reason.as_deref(),
        Some("step 'a' failed: exit code 3 (after 3 attempts)")
    );
}

#[test]
fn an_error_outcome_fails_even_with_exit_code_zero() {
    let p = pipeline("name: e\nsteps:\n  a: { run: a, executor: process }\n");
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    let outcome = Outcome {
        exit_code: Some(0),
        error: Some("metrics.json: expected a JSON object of numbers".to_owned()),
        ..Outcome::default()
    };
    finish(&mut r, &p, "a", 1, outcome, at(1));
    assert_eq!(r.steps[0].state, StepState::Failed);
    assert_eq!(r.state, RunState::Failed);
}

#[test]
fn a_false_if_skips_the_step_and_its_dependants_but_not_others() {
    let p = pipeline(
        "name: i\nparams: { deploy: \"no\" }\ndefaults: { executor: process }\nsteps:\n  build: { run: b }\n  deploy: { needs: [build], if: params.deploy == 'yes', run: d }\n  notify: { needs: [deploy], run: n }\n  report: { needs: [build], run: r }\n",
    );
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    let actions = finish(&mut r, &p, "build", 1, exit(0), at(1));
    assert_eq!(starts(&r, &actions), [("report".to_owned(), 1)]);
    assert_eq!(r.steps[1].state, StepState::Skipped);
    assert_eq!(
        r.steps[1].reason.as_deref(),
        Some("if is false: \"no\" == \"yes\" is false")
    );
    assert_eq!(r.steps[2].state, StepState::Skipped);
    finish(&mut r, &p, "report", 1, exit(0), at(2));
    assert_eq!(r.state, RunState::Succeeded);
}

#[test]
fn an_if_that_cannot_be_evaluated_fails_the_step_naming_what_is_missing() {
    let p = pipeline(
        "name: i\ndefaults: { executor: process }\nsteps:\n  a: { run: a }\n  b: { needs: [a], if: steps.a.outputs.tag == 'x', run: b }\n",
    );
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    finish(&mut r, &p, "a", 1, exit(0), at(1));
    assert_eq!(r.steps[1].state, StepState::Failed);
    assert_eq!(
        r.steps[1].reason.as_deref(),
        Some("if: steps.a.outputs.tag == 'x': no such key 'tag'")
    );
}

#[test]
fn matrix_instances_respect_max_parallel_and_dependants_wait_for_all() {
    let p = pipeline(
        "name: m\ndefaults: { executor: process }\nsteps:\n  train:\n    matrix: { lr: [1, 2, 3] }\n    max_parallel: 2\n    run: t\n  pick: { needs: [train], run: p }\n",
    );
    let mut r = run(&p);
    let actions = step(&mut r, &p, Event::Tick, t0());
    assert_eq!(
        starts(&r, &actions),
        [("train[lr=1]".to_owned(), 1), ("train[lr=2]".to_owned(), 1)]
    );
    let actions = finish(&mut r, &p, "train[lr=1]", 1, exit(0), at(1));
    assert_eq!(starts(&r, &actions), [("train[lr=3]".to_owned(), 1)]);
    let actions = finish(&mut r, &p, "train[lr=2]", 1, exit(0), at(2));
    assert!(
        starts(&r, &actions).is_empty(),
        "pick waits for train[lr=3]"
    );
    let actions = finish(&mut r, &p, "train[lr=3]", 1, exit(0), at(3));
    assert_eq!(starts(&r, &actions), [("pick".to_owned(), 1)]);
}

#[test]
fn no_more_attempts_start_than_the_free_slots() {
    let p = pipeline(
        "name: s\ndefaults: { executor: process }\nsteps:\n  a: { run: a }\n  b: { run: b }\n  c: { run: c }\n",
    );
    let mut r = run(&p);
    let actions = advance(&mut r, &p, Event::Tick, t0(), 1).expect("fits");
    assert_eq!(starts(&r, &actions), [("a".to_owned(), 1)]);
    let actions = advance(&mut r, &p, Event::Tick, t0(), 0).expect("fits");
    assert!(starts(&r, &actions).is_empty());
    let actions = advance(&mut r, &p, Event::Tick, t0(), 2).expect("fits");
    assert_eq!(
        starts(&r, &actions),
        [("b".to_owned(), 1), ("c".to_owned(), 1)]
    );
}

#[test]
fn a_step_past_its_timeout_is_stopped_once_and_fails_or_retries() {
    let p =
        pipeline("name: t\nsteps:\n  a: { run: a, executor: process, timeout: 1m, retry: 1 }\n");
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    let actions = step(
        &mut r,
        &p,
        Event::Started {
            step: 0,
            attempt: 1,
        },
        at(5),
    );
    assert_eq!(actions, [Action::WakeAt(at(65))]);
    let actions = step(&mut r, &p, Event::Tick, at(65));
    assert_eq!(
        actions,
        [Action::Stop {
            step: 0,
            attempt: 1,
            reason: StopReason::Timeout
        }]
    );
    assert!(
        step(&mut r, &p, Event::Tick, at(66)).is_empty(),
        "one stop only"
    );
    let outcome = Outcome {
        exit_code: Some(143),
        error: Some("timed out after 1m".to_owned()),
        ..Outcome::default()
    };
    let actions = step(
        &mut r,
        &p,
        Event::Exited {
            step: 0,
            attempt: 1,
            outcome,
        },
        at(70),
    );
    assert_eq!(actions, [Action::WakeAt(at(80))]);
    assert_eq!(
        r.steps[0].attempts[0].reason.as_deref(),
        Some("timed out after 1m")
    );
}

#[test]
fn cancel_stops_running_attempts_and_cancels_the_rest() {
    let p = pipeline(
        "name: x\ndefaults: { executor: process }\nsteps:\n  a: { run: a }\n  b: { needs: [a], run: b }\n",
    );
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    step(
        &mut r,
        &p,
        Event::Started {
            step: 0,
            attempt: 1,
        },
        at(1),
    );
    let actions = step(
        &mut r,
        &p,
        Event::Cancel {
            reason: "cancelled by ana".to_owned(),
        },
        at(2),
    );
    assert_eq!(
        actions,
        [Action::Stop {
            step: 0,
            attempt: 1,
            reason: StopReason::Cancel
        }]
    );
    assert_eq!(r.steps[1].state, StepState::Cancelled);
    assert_eq!(
        r.state,
        RunState::Running,
        "still running until the attempt is gone"
    );
    step(
        &mut r,
        &p,
        Event::Exited {
            step: 0,
            attempt: 1,
            outcome: exit(143),
        },
        at(3),
    );
    assert_eq!(r.steps[0].attempts[0].state, AttemptState::Cancelled);
    assert_eq!(r.steps[0].state, StepState::Cancelled);
    assert_eq!(r.state, RunState::Cancelled);
    assert_eq!(r.reason.as_deref(), Some("cancelled by ana"));
}

#[test]
fn lost_attempts_restart_without_using_retries_at_most_three_times() {
    let p = pipeline("name: l\nsteps:\n  a: { run: a, executor: process }\n");
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    for attempt in 1..=3 {
        step(&mut r, &p, Event::Started { step: 0, attempt }, at(1));
        let actions = step(&mut r, &p, Event::Lost { step: 0, attempt }, at(2));
        assert_eq!(starts(&r, &actions), [("a".to_owned(), attempt + 1)]);
    }
    step(
        &mut r,
        &p,
        Event::Lost {
            step: 0,
            attempt: 4,
        },
        at(3),
    );
    assert_eq!(r.steps[0].state, StepState::Failed);
    assert_eq!(
        r.steps[0].reason.as_deref(),
        Some("lost 4 times; giving up")
    );
    assert_eq!(
        r.steps[0]
            .attempts
            .iter()
            .filter(|a| a.state == AttemptState::Lost)
            .count(),
        4
    );
}

#[test]
fn approvals_wait_for_a_decision_or_time_out() {
    let yaml = "name: a\ndefaults: { executor: process }\nsteps:\n  approve: { approval: { timeout: 1h } }\n  ship: { needs: [approve], run: s }\n";
    let p = pipeline(yaml);
    let mut r = run(&p);
    let actions = step(&mut r, &p, Event::Tick, t0());
    assert_eq!(actions, [Action::WakeAt(at(3600))]);
    assert_eq!(r.steps[0].state, StepState::Waiting);
    let decide = Event::Decide {
        step: 0,
        approved: true,
        by: "ana".to_owned(),
        comment: Some("looks good".to_owned()),
    };
    let actions = step(&mut r, &p, decide, at(60));
    assert_eq!(starts(&r, &actions), [("ship".to_owned(), 1)]);
    assert_eq!(
        r.steps[0].reason.as_deref(),
        Some("approved by ana: looks good")
    );

    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    step(
        &mut r,
        &p,
        Event::Decide {
            step: 0,
            approved: false,
            by: "bo".to_owned(),
            comment: None,
        },
        at(60),
    );
    assert_eq!(r.steps[0].state, StepState::Failed);
    assert_eq!(
        r.reason.as_deref(),
        Some("step 'approve' failed: rejected by bo")
    );

    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    step(&mut r, &p, Event::Tick, at(3600));
    assert_eq!(r.steps[0].reason.as_deref(), Some("no decision within 1h"));
    assert_eq!(r.state, RunState::Failed);
}

const GATED: &str = "name: churn\ndefaults: { executor: process }\nsteps:\n  validate: { run: v }\n  gate:\n    needs: [validate]\n    gate:\n      - \"!has(models.churn.production) || steps.validate.metrics.accuracy >= models.churn.production.metrics.accuracy\"\n      - steps.validate.metrics.bias_delta <= 0.01\n";

fn metrics(accuracy: f64, bias: f64) -> Outcome {
    let mut outcome = exit(0);
    outcome.metrics.insert("accuracy".into(), json!(accuracy));
    outcome.metrics.insert("bias_delta".into(), json!(bias));
    outcome
}

#[test]
fn a_gate_that_does_not_hold_fails_with_its_evidence() {
    let p = pipeline(GATED);
    let models = json!({"churn": {"production": {"version": 3, "metrics": {"accuracy": 0.84}}}});
    let mut r = run_with(&p, &[], models);
    step(&mut r, &p, Event::Tick, t0());
    finish(&mut r, &p, "validate", 1, metrics(0.81, 0.0), at(1));
    let gate = &r.steps[1];
    assert_eq!(gate.state, StepState::Failed);
    assert_eq!(
        gate.reason.as_deref(),
        Some("gate does not hold: !has(models.churn.production) is false, 0.81 >= 0.84 is false")
    );
    assert!(!gate.evidence[0].holds);
    assert!(gate.evidence[1].holds);
    let reads: Vec<(&str, Option<&serde_json::Value>)> = gate.evidence[0]
        .reads
        .iter()
        .map(|r| (r.path.as_str(), r.value.as_ref()))
        .collect();
    assert_eq!(
        reads,
        [
            (
                "models.churn.production",
                Some(&json!({"version": 3, "metrics": {"accuracy": 0.84}}))
            ),
            ("steps.validate.metrics.accuracy", Some(&json!(0.81))),
            (
                "models.churn.production.metrics.accuracy",
                Some(&json!(0.84))
            ),
        ]
    );
}

#[test]
fn the_first_model_passes_a_gate_guarded_by_has() {
    let p = pipeline(GATED);
    let mut r = run_with(&p, &[], json!({"churn": {}}));
    step(&mut r, &p, Event::Tick, t0());
    finish(&mut r, &p, "validate", 1, metrics(0.5, 0.001), at(1));
    assert_eq!(r.steps[1].state, StepState::Succeeded);
    assert_eq!(r.steps[1].evidence[0].reads[0].value, None);
    assert_eq!(r.state, RunState::Succeeded);
}

#[test]
fn register_steps_are_started_by_the_caller_and_feed_their_outputs_on() {
    let p = pipeline(
        "name: reg\ndefaults: { executor: process }\nsteps:\n  train: { run: t, artifacts: [m.pkl] }\n  register: { needs: [train], register: { model: churn, artifact: m.pkl } }\n  deploy: { needs: [register], if: steps.register.outputs.version == '4', run: d }\n",
    );
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    let actions = finish(&mut r, &p, "train", 1, exit(0), at(1));
    assert_eq!(starts(&r, &actions), [("register".to_owned(), 1)]);
    let mut outcome = exit(0);
    outcome.outputs.insert("version".into(), json!("4"));
    let actions = finish(&mut r, &p, "register", 1, outcome, at(2));
    assert_eq!(starts(&r, &actions), [("deploy".to_owned(), 1)]);
}

#[test]
fn the_run_deadline_stops_everything_and_fails_the_run() {
    let p = pipeline("name: d\nsteps:\n  a: { run: a, executor: process }\n");
    let mut r = run(&p);
    r.deadline = Some(at(600));
    let actions = step(&mut r, &p, Event::Tick, t0());
    assert_eq!(actions.last(), Some(&Action::WakeAt(at(600))));
    step(
        &mut r,
        &p,
        Event::Started {
            step: 0,
            attempt: 1,
        },
        at(1),
    );
    let actions = step(&mut r, &p, Event::Tick, at(600));
    assert_eq!(
        actions,
        [Action::Stop {
            step: 0,
            attempt: 1,
            reason: StopReason::Cancel
        }]
    );
    step(
        &mut r,
        &p,
        Event::Exited {
            step: 0,
            attempt: 1,
            outcome: exit(143),
        },
        at(601),
    );
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(r.reason.as_deref(), Some("the run timed out after 600s"));
}

#[test]
fn events_that_do_not_fit_are_refused_and_change_nothing() {
    let p = pipeline(
        "name: e\ndefaults: { executor: process }\nsteps:\n  a: { run: a }\n  b: { approval: }\n",
    );
    let mut r = run(&p);
    step(&mut r, &p, Event::Tick, t0());
    let before = r.clone();
    let err = advance(
        &mut r,
        &p,
        Event::Started {
            step: 0,
            attempt: 7,
        },
        at(1),
        10,
    )
    .expect_err("no attempt 7");
    assert_eq!(
        err,
        Error::NoSuchAttempt {
            run: "r1".to_owned(),
            step: 0,
            attempt: 7
        }
    );
    assert_eq!(r, before);
    finish(&mut r, &p, "a", 1, exit(0), at(1));
    let err = advance(
        &mut r,
        &p,
        Event::Exited {
            step: 0,
            attempt: 1,
            outcome: exit(0),
        },
        at(2),
        10,
    )
    .expect_err("reported twice");
    assert_eq!(
        err.to_string(),
        "attempt 1 of step 'a' already ended as succeeded"
    );
    let err = advance(
        &mut r,
        &p,
        Event::Decide {
            step: 0,
            approved: true,
            by: "x".into(),
            comment: None,
        },
        at(2),
        10,
    )
    .expect_err("not an approval");
    assert_eq!(
        err.to_string(),
        "step 'a' is not waiting for approval (it is succeeded)"
    );
    step(
        &mut r,
        &p,
        Event::Decide {
            step: 1,
            approved: true,
            by: "x".into(),
            comment: None,
        },
        at(3),
    );
    assert_eq!(r.state, RunState::Succeeded);
    let err = advance(
        &mut r,
        &p,
        Event::Cancel {
            reason: "late".into(),
        },
        at(4),
        10,
    )
    .expect_err("over");
    assert_eq!(err.to_string(), "run r1 already succeeded");
}

#[test]
fn concurrency_admits_queues_skips_or_cancels() {
    let yaml = |policy: &str| {
        format!(
            "name: c\nconcurrency: {{ max_runs: 1, on_conflict: {policy} }}\nsteps:\n  a: {{ run: a, executor: process }}\n"
        )
    };
    let active = vec!["r0".to_owned()];
    assert_eq!(admit(&pipeline(&yaml("queue")), &[]), Admission::Start);
    assert_eq!(admit(&pipeline(&yaml("queue")), &active), Admission::Queue);
    assert_eq!(admit(&pipeline(&yaml("skip")), &active), Admission::Skip);
    assert_eq!(
        admit(&pipeline(&yaml("cancel-running")), &active),
        Admission::CancelThenStart(active.clone())
    );
    let unbounded = pipeline("name: u\nsteps:\n  a: { run: a, executor: process }\n");
    assert_eq!(admit(&unbounded, &active), Admission::Start);
}

/// A host with the GPUs `all`, none held by other runs.
fn gpu_capacity(all: &[&str]) -> weir_engine::Capacity {
    weir_engine::Capacity {
        slots: 10,
        gpus: all.iter().map(|g| (*g).to_owned()).collect(),
        busy_gpus: Vec::new(),
    }
}

/// The GPUs no unfinished attempt of `run` holds.
fn free_gpus(run: &weir_engine::Run, all: &[&str]) -> Vec<String> {
    let held: Vec<String> = run
        .steps
        .iter()
        .flat_map(|s| &s.attempts)
        .filter(|a| !a.state.is_terminal())
        .flat_map(|a| a.gpus.clone())
        .collect();
    all.iter()
        .filter(|g| !held.iter().any(|h| h == **g))
        .map(|g| (*g).to_owned())
        .collect()
}

fn gpu_step(
    run: &mut weir_engine::Run,
    p: &weir_model::Pipeline,
    event: Event,
    now_secs: i64,
    all: &[&str],
) -> Vec<Action> {
    advance(run, p, event, at(now_secs), gpu_capacity(all)).expect("fits")
}

fn granted(run: &weir_engine::Run, id: &str) -> Vec<String> {
    run.steps[idx(run, id)]
        .attempts
        .last()
        .map(|a| a.gpus.clone())
        .unwrap_or_default()
}

#[test]
fn gpu_steps_get_disjoint_devices_and_wait_when_none_are_free() {
    let p = pipeline(
        "name: g\ndefaults: { executor: process }\nsteps:\n  a: { run: a, resources: { gpus: 1 } }\n  b: { run: b, resources: { gpus: 1 } }\n  c: { run: c, resources: { gpus: 1 } }\n",
    );
    let mut r = run(&p);
    let actions = gpu_step(&mut r, &p, Event::Tick, 0, &["0", "1"]);
    assert_eq!(
        starts(&r, &actions),
        [("a".to_owned(), 1), ("b".to_owned(), 1)]
    );
    assert_eq!(
        (granted(&r, "a"), granted(&r, "b")),
        (vec!["0".to_owned()], vec!["1".to_owned()])
    );
    assert_eq!(r.steps[2].state, StepState::Pending);
    assert_eq!(
        r.steps[2].reason.as_deref(),
        Some("waiting for 1 GPU (0 free)")
    );
    // b fails: its device goes to c.
    gpu_step(
        &mut r,
        &p,
        Event::Started {
            step: 1,
            attempt: 1,
        },
        1,
        &["0", "1"],
    );
    let actions = gpu_step(
        &mut r,
        &p,
        Event::Exited {
            step: 1,
            attempt: 1,
            outcome: exit(1),
        },
        2,
        &["0", "1"],
    );
    assert_eq!(starts(&r, &actions), [("c".to_owned(), 1)]);
    assert_eq!(granted(&r, "c"), ["1"]);
    assert_eq!(r.steps[2].reason, None);
}

#[test]
fn a_gpu_request_larger_than_the_host_fails_at_once() {
    let p = pipeline(
        "name: g\ndefaults: { executor: process }\nsteps:\n  big: { run: a, resources: { gpus: 4 } }\n  named: { run: b, resources: { gpus: [7] } }\n  every: { run: c, resources: { gpus: all } }\n",
    );
    let mut r = run(&p);
    gpu_step(&mut r, &p, Event::Tick, 0, &["0", "1"]);
    assert_eq!(
        r.steps[0].reason.as_deref(),
        Some("asks for 4 GPUs; this host has 2")
    );
    assert_eq!(
        r.steps[1].reason.as_deref(),
        Some("asks for GPU 7; this host has 0, 1")
    );
    assert_eq!(granted(&r, "every"), ["0", "1"]);
    let mut none = run(&p);
    gpu_step(&mut none, &p, Event::Tick, 0, &[]);
    assert_eq!(
        none.steps[2].reason.as_deref(),
        Some("asks for all GPUs; this host has none")
    );
}

#[test]
fn a_waiting_large_request_is_not_overtaken_and_devices_come_back_on_every_exit() {
    let p = pipeline(
        "name: g\ndefaults: { executor: process }\nsteps:\n  first: { run: a, resources: { gpus: 1 } }\n  big: { run: b, resources: { gpus: 2 } }\n  small: { run: c, resources: { gpus: 1 } }\n",
    );
    let mut r = run(&p);
    gpu_step(&mut r, &p, Event::Tick, 0, &["0", "1"]);
    assert_eq!(granted(&r, "first"), ["0"]);
    assert_eq!(
        r.steps[1].reason.as_deref(),
        Some("waiting for 2 GPUs (1 free)")
    );
    assert_eq!(
        r.steps[2].state,
        StepState::Pending,
        "small must not take the device big waits for"
    );
    // first is lost in a crash: its device is free again, big gets both.
    let actions = gpu_step(
        &mut r,
        &p,
        Event::Lost {
            step: 0,
            attempt: 1,
        },
        1,
        &["0", "1"],
    );
    assert_eq!(starts(&r, &actions), [("first".to_owned(), 2)]);
    assert_eq!(granted(&r, "first"), ["0"]);
    // Cancelling releases everything.
    gpu_step(
        &mut r,
        &p,
        Event::Cancel {
            reason: "stop".into(),
        },
        2,
        &["0", "1"],
    );
    gpu_step(
        &mut r,
        &p,
        Event::Exited {
            step: 0,
            attempt: 2,
            outcome: exit(143),
        },
        3,
        &["0", "1"],
    );
    assert_eq!(r.state, weir_engine::RunState::Cancelled);
    assert_eq!(free_gpus(&r, &["0", "1"]), ["0", "1"]);
}

#[test]
fn gpus_held_by_other_runs_are_not_granted() {
    let p =
        pipeline("name: g\nsteps:\n  a: { run: a, executor: process, resources: { gpus: 1 } }\n");
    let mut r = run(&p);
    let capacity = weir_engine::Capacity {
        slots: 1,
        gpus: vec!["0".into(), "1".into()],
        busy_gpus: vec!["0".into()],
    };
    advance(&mut r, &p, Event::Tick, at(0), capacity).expect("fits");
    assert_eq!(granted(&r, "a"), ["1"]);
}

#[test]
fn a_retry_reuses_what_succeeded_and_runs_the_failed_step_and_its_dependants_again() {
    let p = pipeline(
        "name: re\nparams: { who: { default: x } }\ndefaults: { executor: process }\nsteps:\n  a: { run: a }\n  side: { run: s }\n  b: { needs: [a], run: b }\n  c: { needs: [b], run: c }\n",
    );
    let mut r = run_with(&p, &[("who", "y")], json!({}));
    step(&mut r, &p, Event::Tick, t0());
    let ok = Outcome {
        outputs: json!({"path": "/data/a"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..exit(0)
    };
    finish(&mut r, &p, "a", 1, ok, at(1));
    finish(&mut r, &p, "side", 1, exit(0), at(1));
    finish(&mut r, &p, "b", 1, exit(3), at(2));
    assert_eq!(r.state, RunState::Failed);

    let mut again = weir_engine::retry_run(&p, &r, "r2", None, "tester", at(10)).expect("retry");
    assert_eq!(again.retry_of(), Some("r1"));
    assert_eq!(
        again.cause,
        weir_engine::Cause::Retry {
            of: "r1".to_owned(),
            from: None,
            actor: "tester".to_owned()
        }
    );
    assert_eq!(again.params, r.params, "same params");
    assert_eq!(again.steps[idx(&again, "a")].state, StepState::Succeeded);
    assert_eq!(
        again.steps[idx(&again, "a")].attempts,
        r.steps[idx(&r, "a")].attempts
    );
    assert_eq!(
        again.steps[idx(&again, "a")].reason.as_deref(),
        Some("reused from run r1")
    );
    assert_eq!(again.steps[idx(&again, "b")].state, StepState::Pending);
    assert_eq!(again.steps[idx(&again, "c")].state, StepState::Pending);
    // Only the failed step starts; it reads the reused step's outputs.
    let actions = step(&mut again, &p, Event::Tick, at(10));
    assert_eq!(starts(&again, &actions), [("b".to_owned(), 1)]);
    finish(&mut again, &p, "b", 1, exit(0), at(11));
    finish(&mut again, &p, "c", 1, exit(0), at(12));
    assert_eq!(again.state, RunState::Succeeded);

    // --from a: a and what needs it run again; `side` is reused.
    let from =
        weir_engine::retry_run(&p, &again, "r3", Some("a"), "tester", at(20)).expect("retry");
    let states: Vec<(&str, StepState)> = from
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a", StepState::Pending),
            ("side", StepState::Succeeded),
            ("b", StepState::Pending),
            ("c", StepState::Pending)
        ]
    );

    // What cannot be retried says why.
    let e = weir_engine::retry_run(&p, &again, "r4", None, "tester", at(20))
        .expect_err("succeeded")
        .to_string();
    assert!(e.contains("succeeded: name the step"), "{e}");
    let e = weir_engine::retry_run(&p, &again, "r4", Some("sde"), "tester", at(20))
        .expect_err("unknown")
        .to_string();
    assert_eq!(
        e,
        "pipeline 're' has no step 'sde' (did you mean 'side'?); its steps: a, side, b, c"
    );
    let running = run(&p);
    let e = weir_engine::retry_run(&p, &running, "r4", None, "tester", at(20))
        .expect_err("running")
        .to_string();
    assert!(e.contains("is still queued"), "{e}");
}

#[test]
fn a_gate_guarding_an_alias_with_has_holds_before_the_first_registration() {
    let p = pipeline(
        "name: first\ndefaults: { executor: process }\nsteps:\n  gate:\n    gate: [\"!has(models.churn.production) || models.churn.production.metrics.accuracy < 1.0\"]\n  register:\n    needs: [gate]\n    register: { model: churn, artifact: model.bin }\n",
    );
    let mut r = run(&p);
    assert_eq!(
        r.models,
        json!({"churn": {}}),
        "the registered model is present, without aliases"
    );
    let actions = step(&mut r, &p, Event::Tick, t0());
    assert_eq!(
        r.steps[0].state,
        StepState::Succeeded,
        "{:?}",
        r.steps[0].reason
    );
    assert_eq!(starts(&r, &actions), [("register".to_owned(), 1)]);
}
