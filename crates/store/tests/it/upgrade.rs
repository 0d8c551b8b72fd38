//! A database written by weir 0.1 (`test_data/v0.1/`) opens with today's
//! migrations: every run gets its typed cause, every event its typed
//! decision, and models, aliases and the audit chain come through intact.
//! SQLite from the file 0.1 wrote; PostgreSQL from the rows 0.1 wrote to
//! one (`postgres.sql`, a data-only dump), laid on the first nine
//! migrations.

use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use weir_engine::{Cause, RunState};
use weir_store::Store;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/v0.1")
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&Utc)
}

/// What both databases of 0.1 hold, as today's store reads it.
async fn check(store: &Store, data: &Path, db: &str) {
    let runs = store.list_runs(100).await.expect("runs");
    assert_eq!(runs.len(), 8, "{db}: {runs:?}");
    let mut kinds: Vec<&str> = runs.iter().map(|r| r.trigger.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "backfill", "backfill", "drift", "manual", "manual", "manual", "retry", "webhook"
        ],
        "{db}"
    );
    let mut slots = Vec::new();
    for summary in &runs {
        let run = store.load_run(&summary.id).await.expect("run loads");
        assert_eq!(run.cause.kind(), summary.trigger, "{db}");
        match &run.cause {
            Cause::Manual { actor } => assert_eq!(actor, "admin", "{db}"),
            Cause::Webhook { delivery } => assert_eq!(delivery.as_deref(), Some("d-1"), "{db}"),
            Cause::Drift { metric, value } => {
                assert_eq!(metric, "psi", "{db}");
                assert!((value - 0.4157).abs() < 1e-3, "{db}: {value}");
            }
            Cause::Retry { of, from, actor } => {
                let original = store.load_run(of).await.expect("the retried run");
                assert_eq!(
                    (original.pipeline.as_str(), original.state),
                    ("flaky", RunState::Failed),
                    "{db}"
                );
                assert_eq!((from, actor.as_str()), (&None, "admin"), "{db}");
                assert_eq!(run.retry_of(), Some(of.as_str()));
            }
            Cause::Backfill { slot } => slots.push(*slot),
            Cause::Schedule { .. } => panic!("{db}: no scheduled run was made"),
            Cause::Replay { .. } => panic!("{db}: the old store had no replays"),
        }
    }
    slots.sort();
    assert_eq!(
        slots,
        [time("2026-11-30T03:00:00Z"), time("2026-12-01T03:00:00Z")],
        "{db}"
    );
    assert_eq!(store.unfinished_runs().await.expect("unfinished").len(), 1);

    let events = store.events(100).await.expect("events");
    let mut outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        [
            "below-threshold",
            "coalesced",
            "cooldown",
            "no-rule",
            "rejected",
            "rejected",
            "triggered",
            "triggered"
        ],
        "{db}"
    );
    for event in &events {
        assert_eq!(event.detail.to_string(), event.decision, "{db}");
        assert_eq!(event.detail.kind(), event.outcome, "{db}");
        if let Some(run) = event.detail.run() {
            assert_eq!(event.run_id.as_deref(), Some(run), "{db}");
        }
    }
    let counts = store.counts().await.expect("counts");
    assert!(
        counts
            .events
            .contains(&("webhook".to_owned(), "rejected".to_owned(), 2)),
        "{db}: {:?}",
        counts.events
    );

    let models = store.models().await.expect("models");
    assert_eq!(models.len(), 1, "{db}");
    assert_eq!((models[0].model.as_str(), models[0].latest), ("churn", 2));
    assert_eq!(
        models[0].aliases,
        [("production".to_owned(), 1), ("staging".to_owned(), 2)],
        "{db}"
    );

    let key = weir_store::signing_key(data).expect("the fixture's key");
    let entries = store.audit_entries(0, 10_000).await.expect("audit");
    let verified = weir_store::verify(&entries, &key.verifying_key())
        .unwrap_or_else(|broken| panic!("{db}: the chain breaks at {broken:?}"));
    assert!(verified >= 25, "{db}: {verified}");
}

#[tokio::test]
async fn a_sqlite_database_of_weir_0_1_opens_with_all_it_held() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(fixture().join("weir.db"), dir.path().join("weir.db")).expect("copy db");
    std::fs::copy(fixture().join("audit.key"), dir.path().join("audit.key")).expect("copy key");
    let url = format!("sqlite://{}/weir.db", dir.path().display());
    let store = Store::connect(&url).await.expect("opens");
    check(&store, dir.path(), "sqlite").await;
    store.close().await;
    // Opening again carries nothing over twice.
    let store = Store::connect(&url).await.expect("opens again");
    check(&store, dir.path(), "sqlite, reopened").await;
}

#[tokio::test]
async fn a_postgres_database_of_weir_0_1_opens_with_all_it_held() {
    let Ok(admin) = std::env::var("WEIR_TEST_PG_URL") else {
        return;
    };
    let url = crate::fresh_postgres_url(&admin).await;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let migrator = sqlx::migrate::Migrator::new(migrations)
        .await
        .expect("migrations");
    migrator.run_to(9, &pool).await.expect("0.1's migrations");
    let rows = std::fs::read_to_string(fixture().join("postgres.sql")).expect("rows");
    sqlx::raw_sql(sqlx::AssertSqlSafe(rows))
        .execute(&pool)
        .await
        .expect("0.1's rows");
    pool.close().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        fixture().join("audit-postgres.key"),
        dir.path().join("audit.key"),
    )
    .expect("copy key");
    let store = Store::connect(&url).await.expect("opens");
    check(&store, dir.path(), "postgres").await;
}
