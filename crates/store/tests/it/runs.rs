//! Runs, steps and attempts round-trip; changes are saved; unfinished runs
//! are found; pipeline versions are kept by hash.

use crate::{at, stores};
use serde_json::json;
use weir_engine::{Cause, Decision, Event, Outcome, RunState, advance, new_run};
use weir_store::{Error, Store};

const PIPELINE: &str = "name: stored\nparams: { lr: \"0.1\" }\ndefaults: { executor: process }\nsteps:\n  train:\n    matrix: { seed: [1, 2] }\n    run: train\n    retry: { limit: 1, delay: 5s }\n  gate:\n    needs: [train]\n    gate: [\"steps.train.all(t, t.metrics.acc > 0.5)\"]\n  ship: { needs: [gate], run: ship }\n";

fn pipeline() -> weir_model::Pipeline {
    weir_model::validate(PIPELINE).pipeline.expect("valid")
}

async fn saved(store: &Store, run: &mut weir_engine::Run, event: Event, now: i64) {
    let before = run.clone();
    advance(run, &pipeline(), event, at(now), 10).expect("event fits");
    store.save_run(&before, run).await.expect("saved");
}

#[tokio::test]
async fn every_transition_reads_back_exactly() {
    for (db, store, _dir) in stores().await {
        let p = pipeline();
        let hash = store
            .save_pipeline("stored", PIPELINE)
            .await
            .expect("pipeline saved");
        let mut run = new_run(
            &p,
            "run-1",
            Cause::manual("tester"),
            &[],
            json!({"k": "v"}),
            json!({"m": {}}),
            at(0),
        )
        .expect("run");
        store.create_run(&run, &hash).await.expect("created");
        assert_eq!(
            store.load_run("run-1").await.expect("loads"),
            run,
            "{db}: fresh run"
        );

        saved(&store, &mut run, Event::Tick, 1).await;
        saved(
            &store,
            &mut run,
            Event::Started {
                step: 0,
                attempt: 1,
            },
            2,
        )
        .await;
        let mut ok = Outcome {
            exit_code: Some(0),
            ..Outcome::default()
        };
        ok.metrics.insert("acc".into(), json!(0.9));
        ok.outputs.insert("path".into(), json!("m.pkl"));
        saved(
            &store,
            &mut run,
            Event::Exited {
                step: 0,
                attempt: 1,
                outcome: ok.clone(),
            },
            3,
        )
        .await;
        saved(
            &store,
            &mut run,
            Event::Started {
                step: 1,
                attempt: 1,
            },
            3,
        )
        .await;
        let failed = Outcome {
            exit_code: Some(2),
            ..Outcome::default()
        };
        saved(
            &store,
            &mut run,
            Event::Exited {
                step: 1,
                attempt: 1,
                outcome: failed,
            },
            4,
        )
        .await;
        assert_eq!(
            store.load_run("run-1").await.expect("loads"),
            run,
            "{db}: mid-run, a retry pending"
        );
        assert_eq!(
            store.unfinished_runs().await.expect("lists"),
            ["run-1"],
            "{db}"
        );

        saved(&store, &mut run, Event::Tick, 9).await;
        saved(
            &store,
            &mut run,
            Event::Started {
                step: 1,
                attempt: 2,
            },
            9,
        )
        .await;
        saved(
            &store,
            &mut run,
            Event::Exited {
                step: 1,
                attempt: 2,
                outcome: ok,
            },
            10,
        )
        .await;
        let loaded = store.load_run("run-1").await.expect("loads");
        assert_eq!(loaded, run, "{db}: gate evidence and the next attempt");
        assert_eq!(loaded.steps[2].evidence.len(), 1);
        assert!(loaded.steps[2].evidence[0].holds, "{db}");

        saved(
            &store,
            &mut run,
            Event::Cancel {
                reason: "stop".into(),
            },
            11,
        )
        .await;
        saved(
            &store,
            &mut run,
            Event::Exited {
                step: 3,
                attempt: 1,
                outcome: Outcome {
                    exit_code: Some(143),
                    ..Outcome::default()
                },
            },
            12,
        )
        .await;
        let loaded = store.load_run("run-1").await.expect("loads");
        assert_eq!(loaded.state, RunState::Cancelled, "{db}");
        assert_eq!(loaded, run, "{db}: finished");
        assert!(
            store.unfinished_runs().await.expect("lists").is_empty(),
            "{db}"
        );
        assert_eq!(store.run_pipeline_hash("run-1").await.expect("hash"), hash);
        store.close().await;
    }
}

#[tokio::test]
async fn a_new_connection_sees_what_was_committed() {
    for (db, store, dir) in stores().await {
        if db != "sqlite" {
            continue;
        }
        let p = pipeline();
        let hash = store
            .save_pipeline("stored", PIPELINE)
            .await
            .expect("saved");
        let mut run = new_run(
            &p,
            "r",
            Cause::manual("tester"),
            &[],
            json!(null),
            json!({}),
            at(0),
        )
        .expect("run");
        store.create_run(&run, &hash).await.expect("created");
        saved(&store, &mut run, Event::Tick, 1).await;
        store.close().await;
        let dir = dir.expect("sqlite has a folder");
        let reopened = Store::connect(&format!("sqlite://{}/weir.db", dir.path().display()))
            .await
            .expect("reopens");
        assert_eq!(reopened.load_run("r").await.expect("loads"), run);
    }
}

#[tokio::test]
async fn pipeline_versions_are_kept_by_content_hash() {
    for (db, store, _dir) in stores().await {
        let a = store.save_pipeline("p", "name: p\n").await.expect("saved");
        let again = store
            .save_pipeline("p", "name: p\n")
            .await
            .expect("saved again");
        let b = store
            .save_pipeline("p", "name: p\n# changed\n")
            .await
            .expect("saved");
        assert_eq!(a, again, "{db}");
        assert_ne!(a, b, "{db}");
        assert_eq!(a.len(), 64);
        assert_eq!(
            store.pipeline_source(&b).await.expect("reads").as_deref(),
            Some("name: p\n# changed\n")
        );
        assert_eq!(store.pipeline_source("nope").await.expect("reads"), None);
    }
}

#[tokio::test]
async fn events_are_kept_with_their_decision() {
    for (db, store, _dir) in stores().await {
        let first = store
            .record_event(
                "drift",
                Some("churn"),
                &json!({"metric": "psi", "value": 0.1}),
                &Decision::BelowThreshold {
                    metric: "psi".to_owned(),
                    value: 0.1,
                    threshold: 0.2,
                },
                at(0),
            )
            .await
            .expect("recorded");
        let second = store
            .record_event(
                "webhook",
                Some("churn"),
                &json!({"after": "abc"}),
                &Decision::Triggered {
                    run: "r9".to_owned(),
                },
                at(1),
            )
            .await
            .expect("recorded");
        assert!(second > first, "{db}");
        let events = store.events(10).await.expect("lists");
        assert_eq!(events.len(), 2, "{db}");
        assert_eq!(events[0].decision, "triggered r9");
        assert_eq!(events[0].outcome, "triggered");
        assert_eq!(
            events[0].detail,
            Decision::Triggered {
                run: "r9".to_owned()
            },
            "{db}"
        );
        assert_eq!(events[0].run_id.as_deref(), Some("r9"));
        assert_eq!(events[1].decision, "below threshold (psi 0.1 <= 0.2)");
        let counts = store.counts().await.expect("counts");
        assert_eq!(
            counts.events,
            [
                ("drift".to_owned(), "below-threshold".to_owned(), 1),
                ("webhook".to_owned(), "triggered".to_owned(), 1)
            ],
            "{db}"
        );
        assert_eq!(events[1].created_at, at(0), "{db}");
        let payload: serde_json::Value = serde_json::from_str(&events[1].payload).expect("JSON");
        assert_eq!(payload["value"], json!(0.1));
    }
}

#[tokio::test]
async fn a_delivery_and_its_run_commit_together_and_a_replay_writes_nothing() {
    for (db, store, _dir) in stores().await {
        let p = pipeline();
        let hash = store
            .save_pipeline("stored", PIPELINE)
            .await
            .expect("saved");
        let payload = json!({"after": "abc"});
        let triggered = Decision::Triggered {
            run: "r1".to_owned(),
        };
        let event = |delivery| weir_store::NewEvent {
            kind: "webhook",
            pipeline: "stored",
            delivery,
            payload: &payload,
            decision: &triggered,
            at: at(0),
            same_body: None,
        };
        let cause = Cause::Webhook {
            delivery: Some("d-1".to_owned()),
        };
        let run = |id| {
            new_run(
                &p,
                id,
                cause.clone(),
                &[],
                payload.clone(),
                json!({}),
                at(0),
            )
            .expect("run")
        };
        let key = weir_store::SigningKey::from_bytes(&[3; 32]);
        let entry = |subject| weir_store::NewEntry {
            actor: "webhook",
            action: "run.triggered",
            subject,
            payload: &payload,
            at: at(0),
        };
        let first = store
            .create_run_with(
                &run("r1"),
                &hash,
                Some(&event(Some("d-1"))),
                Some((&key, &entry("r1"))),
            )
            .await
            .expect("stored");
        assert_eq!(first, Ok(()), "{db}");
        let replay = store
            .create_run_with(
                &run("r2"),
                &hash,
                Some(&event(Some("d-1"))),
                Some((&key, &entry("r2"))),
            )
            .await
            .expect("answered");
        let audit = store.audit_entries(0, 10).await.expect("audit");
        assert_eq!(
            audit.len(),
            1,
            "{db}: the trigger's entry committed with its run, the replay's not at all"
        );
        assert_eq!(audit[0].subject, "r1");
        assert_eq!(
            replay,
            Err(Some("r1".to_owned())),
            "{db}: the first delivery's run"
        );
        assert!(
            matches!(store.load_run("r2").await, Err(Error::NoSuchRun(_))),
            "{db}: the replay wrote no run"
        );
        // Without a delivery id every event is new.
        for id in ["r3", "r4"] {
            let stored = store
                .create_run_with(&run(id), &hash, Some(&event(None)), None)
                .await
                .expect("stored");
            assert_eq!(stored, Ok(()), "{db}");
        }
        let events = store.events(10).await.expect("lists");
        assert_eq!(events.len(), 3, "{db}");
        assert_eq!(events[2].run_id.as_deref(), Some("r1"), "{db}");
        assert_eq!(
            store.load_run("r1").await.expect("r1").event,
            payload,
            "{db}"
        );
    }
}

/// The delivery id is not signed: the same signed body sent again under a
/// fresh id within the window is a replay of the first run, and writes
/// nothing; past the window it is a new delivery.
#[tokio::test]
async fn the_same_body_within_its_window_is_a_replay_whatever_its_id() {
    for (db, store, _dir) in stores().await {
        let p = pipeline();
        let hash = store
            .save_pipeline("stored", PIPELINE)
            .await
            .expect("saved");
        let payload = json!({"after": "abc"});
        let triggered = Decision::Triggered {
            run: "r1".to_owned(),
        };
        let body = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let event = |delivery, arrived, since| weir_store::NewEvent {
            kind: "webhook",
            pipeline: "stored",
            delivery: Some(delivery),
            payload: &payload,
            decision: &triggered,
            at: at(arrived),
            same_body: Some((body, at(since))),
        };
        let run = |id, arrived| {
            let cause = Cause::Webhook {
                delivery: Some(format!("d-{id}")),
            };
            new_run(&p, id, cause, &[], payload.clone(), json!({}), at(arrived)).expect("run")
        };
        let first = store
            .create_run_with(&run("r1", 0), &hash, Some(&event("d-1", 0, -600)), None)
            .await
            .expect("stored");
        assert_eq!(first, Ok(()), "{db}");
        let again = store
            .create_run_with(&run("r2", 60), &hash, Some(&event("d-2", 60, -540)), None)
            .await
            .expect("answered");
        assert_eq!(again, Err(Some("r1".to_owned())), "{db}");
        assert!(
            matches!(store.load_run("r2").await, Err(Error::NoSuchRun(_))),
            "{db}: the replay wrote no run"
        );
        // Past the window: a delivery like any other.
        let later = store
            .create_run_with(&run("r3", 700), &hash, Some(&event("d-3", 700, 100)), None)
            .await
            .expect("stored");
        assert_eq!(later, Ok(()), "{db}");
        assert_eq!(store.events(10).await.expect("lists").len(), 2, "{db}");
    }
}

/// Rejected deliveries are anyone's to send: a pipeline keeps the newest
/// REJECTED_KEPT, and the counts still say how many there were.
#[tokio::test]
async fn rejections_are_capped_and_still_counted() {
    for (db, store, _dir) in stores().await {
        let rejected = Decision::Rejected {
            reason: "missing or bad signature".to_owned(),
        };
        let extra = 5;
        for i in 0..weir_store::REJECTED_KEPT + extra {
            store
                .record_event("webhook", Some("p"), &json!({"n": i}), &rejected, at(i))
                .await
                .expect("recorded");
        }
        let kept = store.events(1000).await.expect("lists");
        assert_eq!(kept.len() as i64, weir_store::REJECTED_KEPT, "{db}");
        assert_eq!(
            kept.last().map(|e| e.payload.clone()),
            Some(json!({"n": extra}).to_string()),
            "{db}: the oldest went"
        );
        let counts = store.counts().await.expect("counts");
        assert_eq!(
            counts.events,
            vec![(
                "webhook".to_owned(),
                "rejected".to_owned(),
                weir_store::REJECTED_KEPT + extra
            )],
            "{db}"
        );
    }
}

#[tokio::test]
async fn missing_runs_and_bad_urls_are_clear_errors() {
    for (db, store, _dir) in stores().await {
        let err = store.load_run("nope").await.expect_err("no such run");
        assert_eq!(err.to_string(), "no run 'nope' in this store", "{db}");
    }
    let err = Store::connect("mysql://x").await.expect_err("unsupported");
    assert!(matches!(err, Error::BadUrl(_)));
    assert_eq!(
        err.to_string(),
        "unsupported database URL 'mysql://x': use sqlite://PATH or postgres://USER@HOST/DB"
    );
}

#[tokio::test]
async fn a_cron_slot_is_claimed_once_and_marks_move() {
    for (db, store, _dir) in stores().await {
        assert!(store.claim_slot("p", at(60)).await.expect("claims"), "{db}");
        assert!(
            !store.claim_slot("p", at(60)).await.expect("claims"),
            "{db}: twice"
        );
        assert!(
            store.claim_slot("q", at(60)).await.expect("claims"),
            "{db}: per pipeline"
        );
        store.slot_run("p", at(60), "r1").await.expect("recorded");
        assert_eq!(
            store.schedule_mark("p", "* * * * *").await.expect("reads"),
            None
        );
        store
            .set_schedule_mark("p", "* * * * *", at(61))
            .await
            .expect("set");
        store
            .set_schedule_mark("p", "* * * * *", at(62))
            .await
            .expect("moved");
        assert_eq!(
            store.schedule_mark("p", "* * * * *").await.expect("reads"),
            Some(at(62)),
            "{db}"
        );
    }
}

#[tokio::test]
async fn a_prune_takes_old_finished_runs_in_batches_and_keeps_registering_ones() {
    for (db, store, _dir) in stores().await {
        let p = pipeline();
        let hash = store
            .save_pipeline("stored", PIPELINE)
            .await
            .expect("saved");
        for (id, ended) in [("old-1", 0), ("old-2", 10), ("reg", 5), ("new", 1000)] {
            let before = new_run(
                &p,
                id,
                Cause::manual("t"),
                &[],
                json!(null),
                json!({}),
                at(0),
            )
            .expect("run");
            store.create_run(&before, &hash).await.expect("created");
            let mut after = before.clone();
            after.skip("done", at(ended));
            store.save_run(&before, &after).await.expect("ended");
        }
        let unfinished = new_run(
            &p,
            "running",
            Cause::manual("t"),
            &[],
            json!(null),
            json!({}),
            at(0),
        )
        .expect("run");
        store.create_run(&unfinished, &hash).await.expect("created");
        let m = serde_json::Map::new();
        store
            .register_model(&weir_store::NewVersion {
                model: "m",
                artifact: "m.bin",
                sha256: "ab",
                metrics: &m,
                run_id: "reg",
                step: "train[seed=1]",
                alias: None,
                at: at(5),
            })
            .await
            .expect("registered");

        let counted = store.prunable(at(500)).await.expect("counted");
        assert_eq!(counted.runs, 2, "{db}: {counted:?}");
        let (first, _) = store.prune_batch(at(500), 1).await.expect("pruned");
        assert_eq!(first, ["old-1"], "{db}: oldest first");
        let (second, _) = store.prune_batch(at(500), 1).await.expect("pruned");
        assert_eq!(second, ["old-2"], "{db}");
        let (none, pruned) = store.prune_batch(at(500), 1).await.expect("pruned");
        assert!(none.is_empty() && pruned.runs == 0, "{db}");
        for gone in ["old-1", "old-2"] {
            assert!(
                matches!(store.load_run(gone).await, Err(Error::NoSuchRun(_))),
                "{db}: {gone}"
            );
        }
        for kept in ["reg", "new", "running"] {
            store
                .load_run(kept)
                .await
                .unwrap_or_else(|e| panic!("{db}: {kept}: {e}"));
        }
    }
}

#[tokio::test]
async fn runs_list_a_page_at_a_time_from_a_cursor_and_by_filter() {
    for (db, store, _dir) in stores().await {
        let p = pipeline();
        let hash = store
            .save_pipeline("stored", PIPELINE)
            .await
            .expect("saved");
        for i in 0..5 {
            let cause = if i % 2 == 0 {
                Cause::manual("t")
            } else {
                Cause::Webhook { delivery: None }
            };
            let mut run = new_run(
                &p,
                &format!("r{i}"),
                cause,
                &[],
                json!(null),
                json!({}),
                at(i),
            )
            .expect("run");
            if i == 3 {
                run.pipeline = "other".into();
            }
            store.create_run(&run, &hash).await.expect("created");
            if i == 1 {
                let mut after = run.clone();
                after.skip("done", at(10));
                store.save_run(&run, &after).await.expect("ended");
            }
        }
        let ids =
            |runs: Vec<weir_store::RunSummary>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let all = weir_store::RunFilter::default();
        let cases: [(weir_store::RunFilter<'_>, i64, &[&str]); 6] = [
            (all, 2, &["r4", "r3"]),
            (
                weir_store::RunFilter {
                    after: Some("r3"),
                    ..all
                },
                2,
                &["r2", "r1"],
            ),
            (
                weir_store::RunFilter {
                    after: Some("r1"),
                    ..all
                },
                2,
                &["r0"],
            ),
            (
                weir_store::RunFilter {
                    pipeline: Some("other"),
                    ..all
                },
                10,
                &["r3"],
            ),
            (
                weir_store::RunFilter {
                    state: Some("cancelled"),
                    ..all
                },
                10,
                &["r1"],
            ),
            (
                weir_store::RunFilter {
                    trigger: Some("webhook"),
                    pipeline: Some("stored"),
                    ..all
                },
                10,
                &["r1"],
            ),
        ];
        for (filter, limit, expected) in cases {
            let page = store.list_runs_where(&filter, limit).await.expect("page");
            assert_eq!(ids(page), expected, "{db}: {filter:?}");
        }
    }
}

#[tokio::test]
async fn counts_follow_every_write_and_every_prune() {
    for (db, store, _dir) in stores().await {
        let p = pipeline();
        let hash = store
            .save_pipeline("stored", PIPELINE)
            .await
            .expect("saved");
        let mut runs = Vec::new();
        for i in 0..3 {
            let run = new_run(
                &p,
                &format!("tally-{i}"),
                Cause::manual("tester"),
                &[],
                json!({}),
                json!({}),
                at(0),
            )
            .expect("run");
            store.create_run(&run, &hash).await.expect("created");
            runs.push(run);
        }
        // One runs, one is cancelled (it finishes), one stays queued.
        saved(&store, &mut runs[0], Event::Tick, 1).await;
        let cancel = Event::Cancel {
            reason: "cancelled by tester".to_owned(),
        };
        saved(&store, &mut runs[1], cancel, 2).await;
        assert_eq!(runs[1].state, RunState::Cancelled, "{db}");
        let tally = |runs: &[weir_engine::Run]| {
            let mut by_run = std::collections::BTreeMap::<String, i64>::new();
            let mut by_step = std::collections::BTreeMap::<String, i64>::new();
            for run in runs {
                *by_run.entry(run.state.as_str().to_owned()).or_default() += 1;
                for step in &run.steps {
                    *by_step.entry(step.state.as_str().to_owned()).or_default() += 1;
                }
            }
            (by_run, by_step)
        };
        let counted = |counts: weir_store::Counts| {
            let keep = |rows: Vec<(String, i64)>| {
                rows.into_iter()
                    .filter(|(_, n)| *n != 0)
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            (keep(counts.runs), keep(counts.steps))
        };
        assert_eq!(
            counted(store.counts().await.expect("counts")),
            tally(&runs),
            "{db}: after writes"
        );
        let (pruned, _) = store.prune_batch(at(1_000_000), 10).await.expect("pruned");
        assert_eq!(pruned, ["tally-1"], "{db}");
        runs.remove(1);
        assert_eq!(
            counted(store.counts().await.expect("counts")),
            tally(&runs),
            "{db}: after the prune"
        );
        // A second read (on PostgreSQL, after the deltas were folded in)
        // says the same.
        assert_eq!(
            counted(store.counts().await.expect("counts")),
            tally(&runs),
            "{db}: read again"
        );
    }
}

/// Concurrent deliveries share commits: each still gets the answer it
/// would have had alone. Every delivery id comes twice and one body comes
/// under many ids; one run per id is written, one for the body, and the
/// audit chain holds exactly their entries, in one verifying chain.
#[tokio::test]
async fn concurrent_writes_share_commits_and_each_gets_its_own_answer() {
    for (db, store, _dir) in stores().await {
        let hash = store
            .save_pipeline("stored", PIPELINE)
            .await
            .expect("saved");
        let key = weir_store::SigningKey::from_bytes(&[5; 32]);
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..120 {
            let (store, hash, key) = (store.clone(), hash.clone(), key.clone());
            tasks.spawn(async move {
                let payload = json!({"n": n % 40});
                let id = format!("g{n}");
                // 0..80: ids d-0..d-39, each twice; 80..120: one body.
                let delivery = if n < 80 {
                    format!("d-{}", n % 40)
                } else {
                    format!("b-{n}")
                };
                let body = (n >= 80).then_some(("one-body", at(-600)));
                let decision = Decision::Triggered { run: id.clone() };
                let event = weir_store::NewEvent {
                    kind: "webhook",
                    pipeline: "stored",
                    delivery: Some(&delivery),
                    payload: &payload,
                    decision: &decision,
                    at: at(0),
                    same_body: body,
                };
                let run = new_run(
                    &pipeline(),
                    &id,
                    Cause::Webhook {
                        delivery: Some(delivery.clone()),
                    },
                    &[],
                    payload.clone(),
                    json!({}),
                    at(0),
                )
                .expect("run");
                let entry = weir_store::NewEntry {
                    actor: "webhook",
                    action: "run.triggered",
                    subject: &id,
                    payload: &payload,
                    at: at(0),
                };
                let answer = store
                    .create_run_with(&run, &hash, Some(&event), Some((&key, &entry)))
                    .await
                    .expect("answered");
                (n, id, delivery, answer)
            });
        }
        let mut created = std::collections::BTreeMap::new();
        let mut replays = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (n, id, delivery, answer) = done.expect("task");
            match answer {
                Ok(()) => {
                    let key = if n < 80 { delivery } else { "body".to_owned() };
                    assert!(
                        created.insert(key.clone(), id).is_none(),
                        "{db}: {key} created two runs"
                    );
                }
                Err(original) => replays.push((n, delivery, original)),
            }
        }
        assert_eq!(
            created.len(),
            41,
            "{db}: one run per id and one for the body"
        );
        assert_eq!(replays.len(), 79, "{db}");
        for (n, delivery, original) in replays {
            let key = if n < 80 { delivery } else { "body".to_owned() };
            assert_eq!(original.as_ref(), created.get(&key), "{db}: replay {n}");
        }
        for id in created.values() {
            store.load_run(id).await.expect("the run was written");
        }
        let audit = store.audit_entries(0, 1000).await.expect("audit");
        assert_eq!(audit.len(), 41, "{db}");
        let mut subjects: Vec<&str> = audit.iter().map(|e| e.subject.as_str()).collect();
        subjects.sort_unstable();
        let mut expected: Vec<&str> = created.values().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(subjects, expected, "{db}");
        assert_eq!(
            weir_store::verify(&audit, &key.verifying_key()),
            Ok(41),
            "{db}"
        );
        assert_eq!(store.events(1000).await.expect("events").len(), 41, "{db}");
    }
}
