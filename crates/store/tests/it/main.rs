//! The store's test suite, run against every database available: SQLite
//! always, PostgreSQL when `WEIR_TEST_PG_URL` is set (and then a database
//! that cannot be reached is a failure, not a skip).

mod logs;
mod runs;

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
    Store::connect(&format!("{base}/{name}"))
        .await
        .expect("PostgreSQL store")
}
