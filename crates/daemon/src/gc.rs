//! `weir gc`: finished runs older than the retention deleted from the
//! store (with their attempts and logs) and from the data folder (their
//! work and out folders), in batches between which triggers and run loops
//! get the store. Runs that registered a model version are kept, and so is
//! the audit log; the prune itself is audited.

use crate::clock::now;
use crate::runs::Daemon;
use std::sync::Arc;
use std::time::Duration;

/// Runs deleted per transaction: small enough that a webhook waiting for
/// the store waits for one batch at most.
const BATCH: i64 = 100;

/// The shortest retention taken: runs that finish now are still being
/// written by their loops.
pub const MIN_RETENTION: Duration = Duration::from_secs(60);

/// What a prune removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Runs finished before this were taken.
    pub before: weir_engine::Time,
    /// Runs, attempts and log bytes.
    pub pruned: weir_store::Pruned,
    /// Run folders removed from the data folder.
    pub folders: u64,
    /// Nothing was removed: this is what would be.
    pub dry_run: bool,
}

/// Why a prune was refused.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// No retention given and none configured.
    #[error(
        "no retention to prune by: give one (weir gc --older-than 30d) or set [retention] runs in weir.toml"
    )]
    NoRetention,
    /// A retention too short to be safe.
    #[error(
        "a retention of {0:?} is too short: runs that just finished are still being written; give at least 1m"
    )]
    TooShort(Duration),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

impl Daemon {
    /// Prunes the runs that finished more than `older_than` ago (the
    /// daemon's retention when `None`), by `actor`; with `dry_run`, counts
    /// what it would prune and changes nothing.
    pub async fn gc(
        &self,
        older_than: Option<Duration>,
        dry_run: bool,
        actor: &str,
    ) -> Result<Collected, GcError> {
        let retention = older_than
            .or(self.options.retention)
            .ok_or(GcError::NoRetention)?;
        if retention < MIN_RETENTION {
            return Err(GcError::TooShort(retention));
        }
        let before = now() - chrono::Duration::from_std(retention).unwrap_or_default();
        if dry_run {
            return Ok(Collected {
                before,
                pruned: self.store.prunable(before).await?,
                folders: 0,
                dry_run,
            });
        }
        let mut total = weir_store::Pruned::default();
        let mut folders = 0;
        loop {
            let began = std::time::Instant::now();
            let (ids, pruned) = self.store.prune_batch(before, BATCH).await?;
            if ids.is_empty() {
                break;
            }
            total.runs += pruned.runs;
            total.attempts += pruned.attempts;
            total.log_bytes += pruned.log_bytes;
            let runs = self.options.data.join("runs");
            folders += tokio::task::spawn_blocking(move || {
                ids.iter()
                    .filter(|id| std::fs::remove_dir_all(runs.join(id)).is_ok())
                    .count() as u64
            })
            .await
            .unwrap_or(0);
            // Whoever waits for the store goes first, and the prune takes
            // at most half of one core: on a small machine deleting is what
            // would otherwise starve the triggers of CPU.
            tokio::time::sleep(began.elapsed()).await;
        }
        tracing::info!(runs = total.runs, attempts = total.attempts, log_bytes = total.log_bytes, folders, %before, "runs pruned");
        self.audit.record(
            actor,
            "store.pruned",
            "runs",
            serde_json::json!({
                "before": before,
                "runs": total.runs,
                "attempts": total.attempts,
                "log_bytes": total.log_bytes,
                "folders": folders,
            }),
        );
        Ok(Collected {
            before,
            pruned: total,
            folders,
            dry_run,
        })
    }

    /// With a retention configured, prunes at start and every hour.
    pub(crate) fn spawn_gc(self: &Arc<Self>) {
        if self.options.retention.is_none() {
            return;
        }
        let daemon = Arc::downgrade(self);
        let stop = self.tasks.stopping();
        self.tasks.spawn(crate::tasks::TaskKind::Gc, async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let Some(daemon) = daemon.upgrade() else { return };
                if let Err(e) = daemon.gc(None, false, "retention").await {
                    tracing::error!(error = %e, "the retention prune failed; tried again in an hour");
                }
            }
        });
    }
}
