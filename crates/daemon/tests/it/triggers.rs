//! Every way a run starts goes through `Daemon::start_run`: the same
//! admission for all of them, and each run's `run.triggered` audit entry
//! committed with it. Also: runs that cannot be driven any more, and what
//! a shutdown keeps.

use crate::{TestDaemon, at, run_of, sign, store, wait_for};
use weir_daemon::{Delivery, StartRun, Started};
use weir_engine::{Cause, Decision, RunState, StepState};
use weir_store::Store;

/// A pipeline every trigger can start: a webhook signed with the value of
/// `PATH` (a variable every test process has), a drift rule, a schedule.
const EVERY: &str = "name: every
on:
  webhook: { secret_env: PATH }
  drift:
    - { metric: psi, above: 0.2 }
  schedule:
    - { cron: \"0 3 * * *\" }
defaults: { executor: process }
params:
  fail: { default: \"no\" }
steps:
  a: { run: '[ \"$WEIR_PARAM_FAIL\" = no ]' }
";

/// One run at a time; another is skipped.
const ONCE: &str = "name: once
concurrency: { max_runs: 1, on_conflict: skip }
defaults: { executor: process }
params:
  fail: { default: \"no\" }
  wait: { default: \"0\" }
steps:
  a: { run: '[ \"$WEIR_PARAM_FAIL\" = no ] || exit 3; sleep $WEIR_PARAM_WAIT' }
";

/// Whether the audit log holds `run`'s trigger entry now.
async fn audited(store: &Store, run: &str) -> Option<weir_store::AuditEntry> {
    store
        .audit_entries(0, 10_000)
        .await
        .expect("audit")
        .into_iter()
        .find(|e| e.action == "run.triggered" && e.subject == run)
}

#[tokio::test]
async fn every_trigger_commits_its_audit_entry_with_its_run() {
    let t = TestDaemon::start(&[("every.yaml", EVERY)]).await;
    let d = &t.daemon;
    let store = d.store();

    let manual = run_of(
        d.start_run(StartRun {
            params: vec![("fail".to_owned(), "yes".to_owned())],
            ..StartRun::new("every", Cause::manual("alice"))
        })
        .await
        .expect("manual"),
    );
    let entry = audited(store, &manual).await.expect("manual audited");
    assert_eq!(entry.actor, "alice");

    let body = br#"{"after": "abc"}"#;
    let signature = sign(body, &std::env::var("PATH").expect("PATH"));
    let hook = d
        .deliver(Delivery {
            pipeline: "every",
            body,
            signature: Some(&signature),
            delivery: Some("d-1"),
        })
        .await
        .expect("delivered");
    let hook = run_of(hook);
    assert_eq!(
        audited(store, &hook).await.expect("webhook audited").actor,
        "webhook"
    );
    let bad = d
        .deliver(Delivery {
            pipeline: "every",
            body,
            signature: Some("sha256=00"),
            delivery: Some("d-2"),
        })
        .await;
    assert!(bad.is_err(), "a bad signature starts nothing");

    let (_, decision) = d
        .drift(weir_daemon::DriftReport {
            pipeline: "every".to_owned(),
            metric: "psi".to_owned(),
            measured: weir_daemon::Measured::Value(0.5),
        })
        .await
        .expect("drift");
    let Decision::Triggered { run: drift } = decision else {
        panic!("{decision:?}");
    };
    assert!(audited(store, &drift).await.is_some(), "drift audited");

    // Times after the daemon's own ticks (which mark where they looked).
    let slot = (chrono::Utc::now() + chrono::Duration::days(2))
        .date_naive()
        .and_hms_opt(3, 0, 0)
        .expect("03:00")
        .and_utc();
    let before = slot - chrono::Duration::seconds(1);
    assert_eq!(d.fire_schedules(before).await.expect("tick"), 0);
    assert_eq!(d.fire_schedules(slot).await.expect("tick"), 1);
    let (slots, skipped) = d
        .backfill(
            "every",
            at("2026-11-28T00:00:00Z"),
            at("2026-11-29T23:00:00Z"),
        )
        .await
        .expect("backfill");
    assert_eq!((slots.len(), skipped), (2, 0));

    t.finished(&manual).await;
    let retry = run_of(
        d.start_run(StartRun::new(
            "",
            Cause::Retry {
                of: manual.clone(),
                from: None,
                actor: "bob".to_owned(),
            },
        ))
        .await
        .expect("retry"),
    );
    let entry = audited(store, &retry).await.expect("retry audited at once");
    assert_eq!(entry.actor, "bob");

    // Every run has its entry, and each event its typed decision.
    let runs = store.list_runs(100).await.expect("runs");
    assert_eq!(runs.len(), 7, "{runs:?}");
    for run in &runs {
        assert!(audited(store, &run.id).await.is_some(), "{run:?}");
    }
    let mut kinds: Vec<String> = runs.iter().map(|r| r.trigger.clone()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "backfill", "backfill", "drift", "manual", "retry", "schedule", "webhook"
        ]
    );
    let events = store.events(100).await.expect("events");
    let outcomes: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("drift", "triggered"),
            ("webhook", "rejected"),
            ("webhook", "triggered")
        ]
    );
    assert_eq!(events[0].run_id.as_deref(), Some(drift.as_str()));
    for id in [hook, drift, retry] {
        t.finished(&id).await;
    }
}

#[tokio::test]
async fn a_retry_is_admitted_under_the_pipelines_concurrency() {
    let t = TestDaemon::start(&[("once.yaml", ONCE)]).await;
    let d = &t.daemon;
    let failed = run_of(
        d.start_run(StartRun {
            params: vec![("fail".to_owned(), "yes".to_owned())],
            ..StartRun::new("once", Cause::manual("alice"))
        })
        .await
        .expect("first"),
    );
    assert_eq!(t.finished(&failed).await.state, RunState::Failed);
    let long = run_of(
        d.start_run(StartRun {
            params: vec![("wait".to_owned(), "30".to_owned())],
            ..StartRun::new("once", Cause::manual("alice"))
        })
        .await
        .expect("second"),
    );
    wait_for(d, &long, |run| run.steps[0].state == StepState::Running).await;
    let retry = d
        .start_run(StartRun::new(
            "",
            Cause::Retry {
                of: failed.clone(),
                from: None,
                actor: "bob".to_owned(),
            },
        ))
        .await
        .expect("retry stored");
    let Started::Run(retry) = retry else {
        panic!("{retry:?}")
    };
    assert_eq!(retry.state, RunState::Cancelled, "{retry:#?}");
    assert_eq!(
        retry.reason.as_deref(),
        Some("skipped: once already has its maximum of runs in progress")
    );
    assert_eq!(
        d.store().load_run(&retry.id).await.expect("stored").state,
        RunState::Cancelled
    );
    assert!(d.cancel(&long, "done with it"));
    t.finished(&long).await;
}

#[tokio::test]
async fn a_run_whose_stored_pipeline_no_longer_validates_is_failed_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    {
        let store = store(&data).await;
        // A version an older weir accepted, which this one refuses.
        let source = "name: old\nsteps:\n  a: { executor: process, run: 'true', frobnicate: 1 }\n";
        let hash = store.save_pipeline("old", source).await.expect("saved");
        let good = weir_model::validate(&ONCE.replace("name: once", "name: old"))
            .pipeline
            .expect("valid");
        let run = weir_engine::new_run(
            &good,
            "r-old",
            Cause::manual("alice"),
            &[],
            serde_json::Value::Null,
            serde_json::json!({}),
            weir_daemon::now(),
        )
        .expect("run");
        store.create_run(&run, &hash).await.expect("created");
        store.close().await;
    }
    let t = TestDaemon::on(dir).await;
    let run = t.daemon.store().load_run("r-old").await.expect("run");
    assert_eq!(run.state, RunState::Failed, "{run:#?}");
    let reason = run.reason.clone().expect("a reason");
    assert!(
        reason.contains("no longer validates") && reason.contains("frobnicate"),
        "{reason}"
    );
    assert!(run.steps.iter().all(|s| s.state.is_terminal()), "{run:#?}");
    assert!(
        t.daemon
            .store()
            .unfinished_runs()
            .await
            .expect("runs")
            .is_empty()
    );
}

#[tokio::test]
async fn a_shutdown_right_after_approve_cancel_and_promote_keeps_every_entry() {
    let approval = "name: gated
defaults: { executor: process }
steps:
  train: { run: 'echo m > $WEIR_WORK/m.bin' }
  ok: { needs: [train], approval: {} }
  register: { needs: [ok], register: { model: m, artifact: m.bin } }
";
    let t = TestDaemon::start(&[("gated.yaml", approval), ("once.yaml", ONCE)]).await;
    let d = &t.daemon;
    let gated = run_of(
        d.start_run(StartRun::new("gated", Cause::manual("alice")))
            .await
            .expect("gated"),
    );
    wait_for(d, &gated, |run| run.steps[1].state == StepState::Waiting).await;
    d.decide(&gated, "ok", true, "carol", Some("fine".to_owned()))
        .await
        .expect("approved");
    let registered = t.finished(&gated).await;
    assert_eq!(registered.state, RunState::Succeeded);
    let long = run_of(
        d.start_run(StartRun {
            params: vec![("wait".to_owned(), "30".to_owned())],
            ..StartRun::new("once", Cause::manual("alice"))
        })
        .await
        .expect("long"),
    );
    wait_for(d, &long, |run| run.steps[0].state == StepState::Running).await;
    assert!(d.cancel_by(&long, "dave"));
    d.promote("m", 1, "production", "erin")
        .await
        .expect("promoted");
    // At once: what was recorded is appended before shutdown returns.
    assert!(d.shutdown(std::time::Duration::from_secs(10)).await);

    let store = store(&t.dir.path().join("data")).await;
    let entries = store.audit_entries(0, 10_000).await.expect("audit");
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    for expected in [
        ("approval.decided", "carol"),
        ("model.registered", ""),
        ("run.cancelled", "dave"),
        ("alias.moved", "erin"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, who)| *a == expected.0 && (expected.1.is_empty() || *who == expected.1)),
            "{expected:?} missing from {actions:?}"
        );
    }
    let key = weir_store::signing_key(&t.dir.path().join("data")).expect("key");
    weir_store::verify(&entries, &key.verifying_key()).expect("the chain verifies");
    // The cancelled run was let go of, not left half-written: a new daemon
    // drives it to its end.
    let again = t.restart().await;
    let run = wait_for(&again, &long, |run| run.state.is_terminal()).await;
    assert_eq!(run.state, RunState::Cancelled, "{run:#?}");
    assert!(again.shutdown(std::time::Duration::from_secs(10)).await);
}
