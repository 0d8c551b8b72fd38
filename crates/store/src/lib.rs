//! weir's state: pipeline versions, runs with their step instances and
//! attempts, logs and events, in SQLite (one node, the default) or
//! PostgreSQL (several nodes).
//!
//! The same queries serve both databases (JSON is stored as text, numbers
//! as 64-bit integers, `$n` placeholders on both): the `on_db!` macro
//! compiles one body for either pool. Where they differ — PostgreSQL's
//! advisory locks for registrations and the scheduler's leader, SQLite's
//! in-process write turn before `BEGIN IMMEDIATE` — the code says so with
//! `Db::Postgres`/`Db::Sqlite` or an `is_pg` flag.
//!
//! What the store does not know: HTTP, Docker, or the rules of the engine
//! — it keeps what the engine decided, nothing more.

mod audit;
mod db;
mod events;
mod group;
mod logs;
mod mirror;
mod prune;
mod registry;
mod runs;
mod schedules;
mod upgrade;

pub use audit::{
    AuditEntry, Broken, GENESIS, KeyError, NewEntry, document_sha256, entry_hash, private_dir,
    public_key, secret_file, signing_key, verify,
};
pub use db::Db;
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use events::{EventRecord, REJECTED_KEPT};
pub use mirror::MirrorItem;
pub use prune::Pruned;
pub use registry::{AliasMove, ModelSummary, ModelVersion, NewVersion, StoredReplay};
pub use runs::{Counts, NewEvent, RunFilter, RunSummary};
pub use schedules::Leadership;

use thiserror::Error;

/// The default cap of one attempt's stored log; past it the oldest bytes go.
pub const DEFAULT_LOG_CAP: u64 = 16 * 1024 * 1024;

/// A connection pool to weir's database, migrated to the current schema.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    log_cap: u64,
    /// Run writes waiting for their group commit (`group.rs`).
    group: std::sync::Arc<std::sync::Mutex<group::Group>>,
}

/// What went wrong with the store.
#[derive(Debug, Error)]
pub enum Error {
    /// The `--db` URL is not one weir understands.
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    /// The database refused or failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The folder or the file of a SQLite database could not be made.
    #[error("cannot create {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No run with this id.
    #[error("no run '{0}' in this store")]
    NoSuchRun(String),
    /// No such model, or no such version of it (`MODEL@VERSION`).
    #[error("no model version '{0}' in the registry")]
    NoSuchModel(String),
    /// A stored value that does not read back (a bug, or a hand-edited database).
    #[error("stored data does not read back: {0}")]
    Corrupt(String),
}

impl Error {
    /// Whether the database is away rather than the request wrong: a lost
    /// or refused connection, a pool that timed out, a database locked by
    /// someone else, a full disk, a server shutting down. Such a write may
    /// be tried again later (every write of weir's is idempotent); the API
    /// answers 503 for it.
    pub fn is_unavailable(&self) -> bool {
        let Error::Db(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => true,
            sqlx::Error::Database(db) => match code_of(db.as_ref()) {
                // Connection lost, resources exhausted (53100: disk full),
                // server shutting down, a transaction to try again.
                Code::Postgres(state) => {
                    state.starts_with("08")
                        || state.starts_with("53")
                        || state.starts_with("57P")
                        || state == "40001"
                        || state == "40P01"
                }
                // Busy, locked, I/O error, full, cannot open.
                Code::Sqlite(primary) => matches!(primary, 5 | 6 | 10 | 13 | 14),
                Code::Unknown => false,
            },
            _ => false,
        }
    }

    /// Whether the store was closed (the daemon is ending).
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Db(sqlx::Error::PoolClosed))
    }

    /// Whether the database said it has no room left (a full disk).
    pub fn is_full(&self) -> bool {
        match self {
            Error::Db(sqlx::Error::Database(db)) => match code_of(db.as_ref()) {
                Code::Postgres(state) => state.starts_with("53"),
                Code::Sqlite(primary) => primary == 13,
                Code::Unknown => false,
            },
            _ => false,
        }
    }
}

/// A database error's code, by the database that gave it.
enum Code {
    /// PostgreSQL's SQLSTATE.
    Postgres(String),
    /// SQLite's primary result code (the low byte of its extended code).
    Sqlite(i64),
    Unknown,
}

fn code_of(db: &dyn sqlx::error::DatabaseError) -> Code {
    let Some(code) = db.code() else {
        return Code::Unknown;
    };
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return Code::Postgres(code.into_owned());
    }
    code.parse::<i64>()
        .map_or(Code::Unknown, |c| Code::Sqlite(c & 0xff))
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating the
    /// SQLite file and its folder when missing, and migrates the schema.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        let db = Db::connect(url).await?;
        let store = Store {
            db,
            log_cap: DEFAULT_LOG_CAP,
            group: Default::default(),
        };
        store.upgrade().await?;
        Ok(store)
    }

    /// The same store with another per-attempt log cap, in bytes.
    pub fn with_log_cap(self, log_cap: u64) -> Store {
        Store { log_cap, ..self }
    }

    /// The database behind the store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether the database answers: one round trip.
    pub async fn ping(&self) -> Result<(), Error> {
        Ok(self.db.ping().await?)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.db.close().await;
    }
}
