//! The store's test suite, run against every database available: SQLite
//! always, PostgreSQL when `WEIR_TEST_PG_URL` is set (and then a database
//! that cannot be reached is a failure, not a skip).

mod audit;
mod files;
mod logs;
mod registry;
mod runs;
mod upgrade;

use chrono::{DateTime, TimeZone, Utc};
use std::sync::atomic::{AtomicUsize, Ordering};
use weir_store::Store;

/// A fixed time, whole seconds so both databases keep it exactly.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid")
        + chrono::Duration::seconds(secs)
}

/// One empty store per available database, with its name.
async fn stores() -> Vec<(&'static str, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/weir.db", dir.path().display());
    let sqlite = Store::connect(&url).await.expect("SQLite store");
    let mut stores = vec![("sqlite", sqlite, Some(dir))];
    match std::env::var("WEIR_TEST_PG_URL") {
        Ok(admin) => stores.push(("postgres", fresh_postgres(&admin).await, None)),
        Err(_) => {
            static SAID: AtomicUsize = AtomicUsize::new(0);
            if SAID.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!(
                    "postgres store tests skipped: set WEIR_TEST_PG_URL (scripts/postgres starts one)"
                );
            }
        }
    }
    stores
}

/// A new, empty database on the server of `admin`.
async fn fresh_postgres(admin: &str) -> Store {
    let url = fresh_postgres_url(admin).await;
    Store::connect(&url).await.expect("PostgreSQL store")
}

/// The URL of a new, empty database on the server of `admin`.
async fn fresh_postgres_url(admin: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "weir_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        Utc::now().timestamp_micros()
    );
    let pool = sqlx::PgPool::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("WEIR_TEST_PG_URL={admin} is set but unreachable: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("create test database");
    pool.close().await;
    let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
    format!("{base}/{name}")
}

#[tokio::test]
async fn one_node_leads_the_schedules_and_another_takes_over_when_it_goes() {
    for (name, store, _dir) in stores().await {
        let mut lead = store
            .lead()
            .await
            .expect("lead")
            .expect("a lone node leads");
        assert!(lead.holds().await, "{name}");
    }
    let Ok(admin) = std::env::var("WEIR_TEST_PG_URL") else {
        return;
    };
    let url = fresh_postgres_url(&admin).await;
    let first = Store::connect(&url).await.expect("node 1");
    let second = Store::connect(&url).await.expect("node 2");
    let mut lead = first.lead().await.expect("lead").expect("node 1 leads");
    assert!(second.lead().await.expect("lead").is_none(), "node 2 waits");
    assert!(lead.holds().await);
    assert!(second.lead().await.expect("lead").is_none(), "still waits");
    drop(lead); // node 1 goes: its connection, and the lock, with it
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut taken = loop {
        if let Some(lead) = second.lead().await.expect("lead") {
            break lead;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 2 never took over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(taken.holds().await);
    assert!(
        first.lead().await.expect("lead").is_none(),
        "node 1 now waits"
    );
}
