//! Events from outside, decided in-process: signed webhook deliveries
//! (their payload reaching a step as data, replays, bad signatures), drift
//! reports (thresholds, cooldown, histograms), schedule slots across a
//! restart and backfills, and the daemon-wide slot limit.

use crate::{TestDaemon, at, sign, wait_for};
use weir_daemon::{Delivery, DeliveryError, DriftReport, Measured, Started, TriggerError};
use weir_engine::{Cause, Decision, RunState};

/// Signed with the value of `PATH`, which every test process has.
const HOOKED: &str = "name: hooked
on:
  webhook: { secret_env: PATH }
defaults: { executor: process }
steps:
  fetch:
    env:
      COMMIT: \"${{ event.head_commit.id }}\"
      MESSAGE: \"${{ event.head_commit.message }}\"
    run: echo \"$COMMIT\" && echo \"$MESSAGE\"
";

const MANUAL: &str = "name: manual
defaults: { executor: process }
steps:
  a: { run: 'true' }
";

/// The delivery id is not signed. A delivery without one is refused (and
/// recorded), and a signed body sent again under a fresh id within the
/// dedupe window starts nothing: both found by replaying captured
/// deliveries. A pipeline may turn either off.
#[tokio::test]
async fn a_delivery_without_an_id_is_refused_and_a_replayed_body_starts_nothing() {
    let lenient = "name: lenient
on:
  webhook: { secret_env: PATH, require_delivery_id: false, dedupe: 0s }
defaults: { executor: process }
steps:
  a: { run: 'true' }
";
    let t = TestDaemon::start(&[("hooked.yaml", HOOKED), ("lenient.yaml", lenient)]).await;
    let d = &t.daemon;
    let body = br#"{"head_commit": {"id": "abc", "message": "m"}}"#;
    let signature = sign(body, &std::env::var("PATH").expect("PATH"));
    let delivery = |pipeline, id| Delivery {
        pipeline,
        body,
        signature: Some(&signature),
        delivery: id,
    };
    let refused = d.deliver(delivery("hooked", None)).await;
    assert!(
        matches!(refused, Err(DeliveryError::NoDeliveryId)),
        "{refused:?}"
    );
    assert_eq!(
        refused.expect_err("refused").to_string(),
        "no delivery id: send X-Weir-Delivery (or X-GitHub-Delivery) with an id unique to this delivery, or set on.webhook.require_delivery_id: false"
    );
    let Started::Run(first) = d
        .deliver(delivery("hooked", Some("d-1")))
        .await
        .expect("delivered")
    else {
        panic!("a first delivery is no replay");
    };
    match d.deliver(delivery("hooked", Some("d-2-fresh"))).await {
        Ok(Started::Replay(Some(id))) => assert_eq!(id, first.id, "the first delivery's run"),
        other => panic!("a replayed body under a fresh id started something: {other:?}"),
    }
    // Turned off: no id needed, and the same body twice is two runs.
    for _ in 0..2 {
        let started = d
            .deliver(delivery("lenient", None))
            .await
            .expect("delivered");
        assert!(matches!(started, Started::Run(_)), "{started:?}");
    }
    let store = d.store();
    assert_eq!(store.list_runs(10).await.expect("runs").len(), 3);
    let decisions: Vec<(Option<String>, String)> =
        (store.events(10).await.expect("events").into_iter())
            .map(|e| (e.pipeline, e.outcome))
            .collect();
    let hooked: Vec<&str> = decisions
        .iter()
        .filter(|(p, _)| p.as_deref() == Some("hooked"))
        .map(|(_, o)| o.as_str())
        .collect();
    assert_eq!(
        hooked,
        ["triggered", "rejected"],
        "newest first; the replay added none"
    );
}

#[tokio::test]
async fn a_signed_push_starts_one_run_with_its_payload_as_data_and_bad_ones_start_none() {
    let t = TestDaemon::start(&[("hooked.yaml", HOOKED), ("manual.yaml", MANUAL)]).await;
    let d = &t.daemon;
    let payload = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/data/github-push.json"
    ))
    .expect("fixture");
    let secret = std::env::var("PATH").expect("PATH");
    let signature = sign(&payload, &secret);
    let wrong = sign(&payload, "wrong");
    let delivery = |signature, id| Delivery {
        pipeline: "hooked",
        body: &payload,
        signature,
        delivery: Some(id),
    };
    let first = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let Started::Run(run) = d
        .deliver(delivery(Some(&signature), first))
        .await
        .expect("delivered")
    else {
        panic!("a first delivery is no replay");
    };
    let finished = t.finished(&run.id).await;
    assert_eq!(finished.state, RunState::Succeeded, "{finished:#?}");
    assert!(matches!(finished.cause, Cause::Webhook { .. }));
    let log = d.log(&run.id, "fetch", None, 0).await.expect("log");
    assert_eq!(
        String::from_utf8_lossy(&log.data),
        "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c\nUpdate churn features; $(rm -rf /) is just text\n",
        "the payload reached the step as data, not shell text"
    );

    // The same delivery again starts nothing and names the first run.
    match d.deliver(delivery(Some(&signature), first)).await {
        Ok(Started::Replay(Some(id))) => assert_eq!(id, run.id),
        other => panic!("{other:?}"),
    }
    for bad in [delivery(Some(&wrong), "other"), delivery(None, "another")] {
        let refused = d.deliver(bad).await;
        assert!(
            matches!(refused, Err(DeliveryError::BadSignature)),
            "{refused:?}"
        );
    }
    let not_hooked = Delivery {
        pipeline: "manual",
        ..delivery(Some(&signature), "x")
    };
    assert!(matches!(
        d.deliver(not_hooked).await,
        Err(DeliveryError::NoWebhook(_))
    ));
    let unknown = Delivery {
        pipeline: "nope",
        ..delivery(Some(&signature), "y")
    };
    assert!(matches!(
        d.deliver(unknown).await,
        Err(DeliveryError::UnknownPipeline(_))
    ));

    let store = d.store();
    assert_eq!(store.list_runs(10).await.expect("runs").len(), 1);
    let decisions: Vec<String> = (store.events(10).await.expect("events").into_iter())
        .map(|e| e.decision)
        .collect();
    assert_eq!(
        decisions,
        [
            "rejected: missing or bad signature".to_owned(),
            "rejected: missing or bad signature".to_owned(),
            format!("triggered {}", run.id)
        ],
        "newest first; the replay and the refusals before a pipeline added none"
    );
}

#[tokio::test]
async fn drift_above_threshold_retrains_once_per_cooldown() {
    let retrain = "name: retrain
on:
  manual: false
  drift:
    - { metric: psi, above: 0.2, cooldown: 1h }
    - { metric: accuracy_drop, above: 0.05 }
defaults: { executor: process }
steps:
  train: { env: { WHY: \"${{ event.metric }}\" }, run: 'echo retraining on $WHY' }
";
    let t = TestDaemon::start(&[("retrain.yaml", retrain)]).await;
    let d = &t.daemon;
    let report = |metric: &str, measured: Measured| DriftReport {
        pipeline: "retrain".to_owned(),
        metric: metric.to_owned(),
        measured,
    };
    let histograms = || Measured::Histograms {
        reference: vec![50.0, 50.0],
        current: vec![80.0, 20.0],
    };
    let (psi, decision) = d.drift(report("psi", histograms())).await.expect("drift");
    assert!((psi - 0.4159).abs() < 1e-3, "{psi}");
    let Decision::Triggered { run } = decision else {
        panic!("{decision:?}");
    };
    let finished = t.finished(&run).await;
    assert_eq!(finished.state, RunState::Succeeded, "{finished:#?}");
    assert!(matches!(finished.cause, Cause::Drift { .. }));
    let log = d.log(&run, "train", None, 0).await.expect("log");
    assert_eq!(String::from_utf8_lossy(&log.data), "retraining on psi\n");

    let (_, again) = d.drift(report("psi", histograms())).await.expect("drift");
    assert!(
        matches!(&again, Decision::Cooldown { run: of, .. } if *of == run),
        "{again:?}"
    );
    let (_, low) = (d.drift(report("psi", Measured::Value(0.1))).await).expect("drift");
    assert!(
        matches!(low, Decision::BelowThreshold { value, threshold, .. } if value == 0.1 && threshold == 0.2),
        "{low:?}"
    );
    let (_, other) = (d.drift(report("kl", Measured::Value(9.0))).await).expect("drift");
    assert!(matches!(other, Decision::NoRule { .. }), "{other:?}");
    let uneven = Measured::Histograms {
        reference: vec![1.0, 2.0],
        current: vec![1.0],
    };
    match d.drift(report("psi", uneven)).await {
        Err(TriggerError::BadReport(message)) => assert_eq!(
            message,
            "reference has 2 bins and current has 1: give both the same bins"
        ),
        other => panic!("{other:?}"),
    }

    let events = d.store().events(10).await.expect("events");
    let decisions: Vec<&str> = events.iter().map(|e| e.decision.as_str()).collect();
    assert_eq!(decisions.len(), 4, "every report stored, the bad one not");
    assert_eq!(decisions[0], "no rule for metric 'kl'");
    assert_eq!(decisions[1], "below threshold (psi 0.1 <= 0.2)");
    assert!(
        decisions[2].starts_with(&format!("cooldown: {run} started ")),
        "{decisions:?}"
    );
}

#[tokio::test]
async fn a_slot_fires_once_across_a_restart_and_backfill_adds_none_twice() {
    let nightly = "name: nightly
on:
  manual: false
  schedule:
    - cron: \"0 3 * * *\"
      timezone: Europe/Berlin
defaults: { executor: process }
steps:
  a: { run: 'true' }
";
    let t = TestDaemon::start(&[("nightly.yaml", nightly), ("manual.yaml", MANUAL)]).await;
    // Slots after the daemon's own ticks, which mark where they looked.
    let day = (chrono::Utc::now() + chrono::Duration::days(3)).date_naive();
    let slot = |day: chrono::NaiveDate| {
        let local = day.and_hms_opt(3, 0, 0).expect("03:00");
        let berlin = chrono_tz::Europe::Berlin;
        chrono::TimeZone::from_local_datetime(&berlin, &local)
            .single()
            .expect("one 03:00")
            .with_timezone(&chrono::Utc)
    };
    // With `catchup: none` a slot fires when a tick reaches it from just
    // before; what a tick jumps over is missed on purpose.
    let second = chrono::Duration::seconds(1);
    let first = slot(day);
    assert_eq!(
        t.daemon.fire_schedules(first - second).await.expect("tick"),
        0
    );
    assert_eq!(t.daemon.fire_schedules(first).await.expect("tick"), 1);
    assert_eq!(t.daemon.fire_schedules(first).await.expect("tick"), 0);
    assert!(t.daemon.shutdown(std::time::Duration::from_secs(10)).await);

    let d = t.restart().await;
    assert_eq!(
        d.fire_schedules(first).await.expect("tick"),
        0,
        "fired again"
    );
    let next = slot(day.succ_opt().expect("a next day"));
    assert_eq!(d.fire_schedules(next - second).await.expect("tick"), 0);
    assert_eq!(d.fire_schedules(next).await.expect("tick"), 1);
    let runs = d.store().list_runs(10).await.expect("runs");
    let mut slots: Vec<weir_engine::Time> = Vec::new();
    for summary in &runs {
        let run = wait_for(&d, &summary.id, |run| run.state.is_terminal()).await;
        let Cause::Schedule { slot } = run.cause else {
            panic!("{:?}", run.cause);
        };
        slots.push(slot);
    }
    assert_eq!(slots, [next, first]);

    let (from, to) = (at("2026-01-01T00:00:00Z"), at("2026-01-03T23:00:00Z"));
    let (started, skipped) = d.backfill("nightly", from, to).await.expect("backfill");
    let started: Vec<weir_engine::Time> = started.into_iter().map(|(slot, _)| slot).collect();
    assert_eq!(
        (started, skipped),
        (
            vec![
                at("2026-01-01T02:00:00Z"),
                at("2026-01-02T02:00:00Z"),
                at("2026-01-03T02:00:00Z")
            ],
            0
        ),
        "03:00 in Berlin is 02:00 UTC in winter"
    );
    let (again, skipped) = d.backfill("nightly", from, to).await.expect("backfill");
    assert_eq!((again.len(), skipped), (0, 3));
    match d.backfill("manual", from, to).await {
        Err(e @ TriggerError::NoSchedule(_)) => {
            assert_eq!(
                e.to_string(),
                "pipeline 'manual' has no schedule to backfill"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(d.shutdown(std::time::Duration::from_secs(10)).await);
}

#[tokio::test]
async fn runs_waiting_for_a_daemon_wide_slot_are_woken_when_one_frees() {
    let nap = "name: nap
defaults: { executor: process }
steps:
  a: { run: 'sleep 0.2' }
";
    let t = TestDaemon::with_max_running(&[("nap.yaml", nap)], 1).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        match t
            .daemon
            .start_run(weir_daemon::StartRun::new("nap", Cause::manual("alice")))
            .await
            .expect("started")
        {
            Started::Run(run) => ids.push(run.id),
            Started::Replay(run) => panic!("{run:?}"),
        }
    }
    for id in &ids {
        let run = t.finished(id).await;
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    }
}
