//! What people decide about runs, in-process: approvals (who, why, and the
//! refusals that say what is wrong) and retries (what is reused, what runs
//! again from a step, and when a retry is refused).

use crate::{TestDaemon, run_of, wait_for};
use weir_daemon::{DecideError, StartRun, TriggerError};
use weir_engine::{Cause, RetryError, RunState, StepState};

const GATED: &str = "name: gated
defaults: { executor: process }
steps:
  build: { run: echo built }
  approve: { needs: [build], approval: {} }
  ship: { needs: [approve], run: echo shipped }
";

#[tokio::test]
async fn approvals_are_decided_by_their_actor_and_refused_when_nothing_waits() {
    let t = TestDaemon::start(&[("gated.yaml", GATED)]).await;
    let d = &t.daemon;
    let start = || StartRun::new("gated", Cause::manual("alice"));
    let waiting = |run: &weir_engine::Run| run.steps[1].state == StepState::Waiting;

    let id = run_of(d.start_run(start()).await.expect("started"));
    wait_for(d, &id, waiting).await;
    let comment = Some("metrics look right".to_owned());
    let run = (d.decide(&id, "approve", true, "carol", comment).await).expect("approved");
    assert_eq!(
        run.steps[1].reason.as_deref(),
        Some("approved by carol: metrics look right")
    );
    let run = t.finished(&id).await;
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    assert_eq!(run.steps[2].state, StepState::Succeeded);
    match d.decide(&id, "approve", true, "carol", None).await {
        Err(e @ DecideError::NotRunning { .. }) => assert_eq!(
            e.to_string(),
            format!("run {id} is succeeded: only a running run's approvals can be decided")
        ),
        other => panic!("{other:?}"),
    }

    let id = run_of(d.start_run(start()).await.expect("started"));
    wait_for(d, &id, waiting).await;
    match d.decide(&id, "build", true, "carol", None).await {
        Err(e @ DecideError::NotWaiting { .. }) => assert_eq!(
            e.to_string(),
            "step 'build' is not waiting for approval (it is succeeded)"
        ),
        other => panic!("{other:?}"),
    }
    match d.decide(&id, "nope", true, "carol", None).await {
        Err(e @ DecideError::NoStep { .. }) => {
            assert_eq!(e.to_string(), format!("run {id} has no step 'nope'"));
        }
        other => panic!("{other:?}"),
    }
    let comment = Some("not now".to_owned());
    (d.decide(&id, "approve", false, "dave", comment).await).expect("rejected");
    let run = t.finished(&id).await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.steps[1].state, StepState::Failed);
    assert!(
        (run.steps[1].reason.as_deref()).is_some_and(|r| r.contains("rejected by dave")),
        "{run:#?}"
    );
    assert_eq!(run.steps[2].state, StepState::Skipped);
}

#[tokio::test]
async fn a_retry_reuses_the_steps_that_succeeded_and_their_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).expect("marks");
    let flaky = format!(
        "name: flaky
defaults: {{ executor: process }}
steps:
  make:
    run: echo made > made.txt && echo start >> {marks}/starts
  use:
    needs: [make]
    run: cat made.txt && test -f {marks}/fixed
",
        marks = marks.display()
    );
    std::fs::create_dir(dir.path().join("pipelines")).expect("pipelines");
    std::fs::write(dir.path().join("pipelines/flaky.yaml"), flaky).expect("pipeline");
    let t = TestDaemon::on(dir).await;
    let d = &t.daemon;
    let retry = |of: &str, from: Option<&str>| {
        StartRun::new(
            "",
            Cause::Retry {
                of: of.to_owned(),
                from: from.map(str::to_owned),
                actor: "bob".to_owned(),
            },
        )
    };
    let starts = || std::fs::read_to_string(marks.join("starts")).expect("starts");

    let first = run_of(
        (d.start_run(StartRun::new("flaky", Cause::manual("alice")))
            .await)
            .expect("started"),
    );
    assert_eq!(t.finished(&first).await.state, RunState::Failed);
    match d.start_run(retry(&first, Some("mak"))).await {
        Err(TriggerError::Retry(e @ RetryError::NoStep { .. })) => assert_eq!(
            e.to_string(),
            "pipeline 'flaky' has no step 'mak' (did you mean 'make'?); its steps: make, use"
        ),
        other => panic!("{other:?}"),
    }

    std::fs::write(marks.join("fixed"), "").expect("fixed");
    let second = run_of(d.start_run(retry(&first, None)).await.expect("retried"));
    let run = t.finished(&second).await;
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    assert_eq!(run.retry_of(), Some(first.as_str()));
    assert_eq!(
        run.steps[0].reason,
        Some(format!("reused from run {first}"))
    );
    let log = d.log(&second, "use", None, 0).await.expect("log");
    assert_eq!(
        String::from_utf8_lossy(&log.data),
        "made\n",
        "the reused step's files are in the retry's work folder"
    );
    assert_eq!(starts(), "start\n", "make was reused, not run again");

    // `from` runs the named step and what needs it again.
    let third = run_of(
        d.start_run(retry(&second, Some("make")))
            .await
            .expect("retried"),
    );
    assert_eq!(t.finished(&third).await.state, RunState::Succeeded);
    assert_eq!(starts(), "start\nstart\n");

    match d.start_run(retry(&third, None)).await {
        Err(TriggerError::Retry(e @ RetryError::NothingToRetry { .. })) => assert_eq!(
            e.to_string(),
            format!("run {third} succeeded: name the step to run again from with --from")
        ),
        other => panic!("{other:?}"),
    }
}
