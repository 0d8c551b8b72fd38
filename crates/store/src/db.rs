//! The two databases behind one type, and connecting to them.

use crate::Error;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// A pool on SQLite or on PostgreSQL.
#[derive(Debug, Clone)]
pub enum Db {
    /// One node: a file, WAL mode, foreign keys on.
    Sqlite(SqlitePool),
    /// Several nodes share it.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds: the body
/// is written once and compiled for each database.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Begins a transaction that will write. On SQLite it takes the write lock
/// at once (`BEGIN IMMEDIATE`): a transaction that reads first and writes
/// later fails with "database is locked" when another writer committed in
/// between, and waiting (`busy_timeout`) cannot cure that. Writers of this
/// process also queue on one async lock first: SQLite's busy handler
/// sleeps (up to 100 ms a try) when writers collide, which is what made
/// the slowest answers slow, while a queue hands the lock on at once.
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> Result<WriteTx<Self::Database>, sqlx::Error>;
}

/// A write transaction, holding this process's SQLite write turn (if any)
/// until it commits or is dropped.
pub(crate) struct WriteTx<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> WriteTx<DB> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// The write turn of SQLite databases in this process (one lock for all:
/// a process rarely opens two, and sharing costs nothing then).
fn sqlite_turn() -> std::sync::Arc<tokio::sync::Mutex<()>> {
    static TURN: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
        std::sync::OnceLock::new();
    std::sync::Arc::clone(TURN.get_or_init(Default::default))
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<WriteTx<sqlx::Sqlite>, sqlx::Error> {
        let turn = sqlite_turn().lock_owned().await;
        Ok(WriteTx {
            tx: self.begin_with("BEGIN IMMEDIATE").await?,
            _turn: Some(turn),
        })
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> Result<WriteTx<sqlx::Postgres>, sqlx::Error> {
        Ok(WriteTx {
            tx: self.begin().await?,
            _turn: None,
        })
    }
}

/// Whether a SQLite connection back from a transaction can be used again.
/// A statement that fails for a full disk makes SQLite roll the whole
/// transaction back by itself; sqlx's own `ROLLBACK` then fails, and its
/// count of open transactions stays at one, so the connection could never
/// begin again. Such a connection is closed, not returned to the pool.
async fn still_usable(
    conn: &mut sqlx::SqliteConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    use sqlx_core::transaction::TransactionManager as _;
    type Manager = <sqlx::Sqlite as sqlx::Database>::TransactionManager;
    if Manager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    // A dropped transaction's rollback is queued on the connection: one
    // statement after it says whether it worked.
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(Manager::get_transaction_depth(conn) == 0)
}

impl Db {
    pub(crate) async fn connect(url: &str) -> Result<Db, Error> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            let file = std::path::Path::new(path);
            if let Some(parent) = file.parent() {
                crate::audit::private_dir(parent).map_err(|source| Error::Folder {
                    path: parent.display().to_string(),
                    source,
                })?;
            }
            // Made empty and private before SQLite opens it (an empty file
            // is an empty database), so its -wal and -shm files, which
            // SQLite creates with the database's mode, are private too.
            if !path.is_empty() && path != ":memory:" && !file.exists() {
                use std::os::unix::fs::OpenOptionsExt as _;
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(file)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(source) => {
                        return Err(Error::Folder {
                            path: file.display().to_string(),
                            source,
                        });
                    }
                }
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            // A connection to a file cannot go stale as a network one can:
            // no ping (a round trip to its worker thread) before each use.
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .after_release(|conn, meta| Box::pin(still_usable(conn, meta)))
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(Error::BadUrl(url.to_owned()))
        }
    }

    pub(crate) async fn close(&self) {
        on_db!(self, pool => pool.close().await)
    }

    /// One round trip to the database.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}
