//! Every background task of the daemon, spawned through one place with its
//! policy: what stops it, and what its end means.
//!
//! | kind        | stops when                      | its error        |
//! |-------------|---------------------------------|------------------|
//! | `Run`       | its run ends, or it is detached | logged; the run stays where it was committed |
//! | `Scheduler` | the daemon shuts down           | logged per tick; the next tick tries again |
//! | `Watcher`   | the daemon shuts down           | logged per reload; the last good pipelines stay |
//! | `Audit`     | its queue is closed and drained | logged per batch |
//! | `Mirror`    | the daemon shuts down           | logged per item; the item is tried again with backoff |
//! | `Gc`        | the daemon shuts down           | logged; tried again at the next hour |
//!
//! **Invariant:** `Daemon::shutdown` waits for every task of the tracker
//! (up to its deadline), so nothing the daemon decided is left uncommitted
//! by a task dropped mid-write.

use std::future::Future;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a background task is, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskKind {
    /// One run's loop.
    Run,
    /// The scheduler's tick.
    Scheduler,
    /// The pipelines folder's watcher.
    Watcher,
    /// The audit log's writer.
    Audit,
    /// The MLflow mirror's writer.
    Mirror,
    /// The retention prune.
    Gc,
}

impl TaskKind {
    fn name(self) -> &'static str {
        match self {
            TaskKind::Run => "run",
            TaskKind::Scheduler => "scheduler",
            TaskKind::Watcher => "watcher",
            TaskKind::Audit => "audit",
            TaskKind::Mirror => "mirror",
            TaskKind::Gc => "gc",
        }
    }
}

/// The daemon's tasks: a tracker to wait for them and the token that asks
/// the long-lived ones to stop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tasks {
    /// Run loops, waited for first at shutdown: their last decisions may
    /// still record audit entries.
    runs: TaskTracker,
    /// Everything else.
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// Spawns `task` as a `kind`, tracked.
    pub(crate) fn spawn<F>(&self, kind: TaskKind, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let tracker = match kind {
            TaskKind::Run => &self.runs,
            _ => &self.tracker,
        };
        tracker.spawn(async move {
            task.await;
            tracing::debug!(task = kind.name(), "task ended");
        });
    }

    /// The token the long-lived tasks (scheduler, watcher) end on.
    pub(crate) fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Asks the long-lived tasks to end, and waits until `deadline` for the
    /// run loops to be done; false when some were still running then.
    pub(crate) async fn stop_runs(&self, deadline: tokio::time::Instant) -> bool {
        self.stop.cancel();
        self.runs.close();
        tokio::time::timeout_at(deadline, self.runs.wait())
            .await
            .is_ok()
    }

    /// Waits until `deadline` for every other task to be done; false when
    /// some were still running then.
    pub(crate) async fn stop_rest(&self, deadline: tokio::time::Instant) -> bool {
        self.tracker.close();
        tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}
