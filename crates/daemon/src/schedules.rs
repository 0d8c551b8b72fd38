//! Schedules: the scheduler's tick, the due slots of every schedule
//! (`weir_engine::schedule::due`, pure), and backfills. Each slot is
//! claimed in the store before its run starts, and each schedule's mark
//! records how far it was considered.
//!
//! **Invariant:** a slot runs at most once, whatever restarts, nodes and
//! backfills happen (`schedule_fires` is unique per pipeline and slot).

use crate::clock::now;
use crate::runs::{Daemon, StartRun, TriggerError};
use crate::tasks::TaskKind;
use std::sync::Arc;
use weir_engine::Cause;

/// At most this many missed slots of one schedule run after downtime
/// (`catchup: all`), and at most this many slots per backfill.
pub const CATCHUP_CAP: usize = 100;

impl Daemon {
    /// Fires the pipelines' schedules: every second, each schedule's due
    /// slots (`weir_engine::schedule::due`) are claimed in the store — a
    /// slot fires once, whatever restarts happen — and started as runs.
    /// With several nodes on one PostgreSQL, only the node holding the
    /// scheduler's advisory lock fires.
    pub(crate) fn spawn_scheduler(self: &Arc<Self>) {
        let daemon = Arc::downgrade(self);
        let stop = self.tasks.stopping();
        self.tasks.spawn(TaskKind::Scheduler, async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut leading: Option<weir_store::Leadership> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let Some(daemon) = daemon.upgrade() else {
                    return;
                };
                // One node fires schedules; the others wait to take over.
                let held = match &mut leading {
                    Some(lead) => lead.holds().await,
                    None => false,
                };
                if !held {
                    leading = match daemon.store.lead().await {
                        Ok(lead) => lead,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot ask to lead the schedules");
                            None
                        }
                    };
                    if leading.is_some() {
                        tracing::info!("this node fires the schedules");
                    }
                }
                if leading.is_none() {
                    continue;
                }
                if let Err(e) = daemon.fire_schedules(now()).await {
                    tracing::error!(error = %e, "schedules could not be fired");
                }
            }
        });
    }

    /// Fires what is due at `now` for every schedule of every pipeline.
    pub async fn fire_schedules(
        self: &Arc<Self>,
        at: weir_engine::Time,
    ) -> Result<usize, weir_store::Error> {
        let mut fired = 0;
        for loaded in self.pipelines() {
            let name = loaded.pipeline.name.value.clone();
            for schedule in &loaded.pipeline.on.schedule {
                let mark = match self
                    .store
                    .schedule_mark(&name, &schedule.cron.value)
                    .await?
                {
                    Some(mark) => mark,
                    // First sight of this schedule: nothing before now is missed.
                    None => at,
                };
                let due = weir_engine::schedule::due(
                    &schedule.parsed,
                    schedule.timezone,
                    schedule.catchup,
                    mark,
                    at,
                    CATCHUP_CAP,
                );
                for slot in due.fire {
                    if self.fire_slot(&name, slot, false).await?.is_some() {
                        fired += 1;
                    }
                }
                self.store
                    .set_schedule_mark(&name, &schedule.cron.value, due.mark)
                    .await?;
            }
        }
        Ok(fired)
    }

    /// Starts a run for `slot` of `name` unless that slot was fired before;
    /// the run's `event` is `{"slot": …}`.
    async fn fire_slot(
        self: &Arc<Self>,
        name: &str,
        slot: weir_engine::Time,
        backfill: bool,
    ) -> Result<Option<String>, weir_store::Error> {
        if !self.store.claim_slot(name, slot).await? {
            return Ok(None);
        }
        let cause = if backfill {
            Cause::Backfill { slot }
        } else {
            Cause::Schedule { slot }
        };
        let start = StartRun {
            event: serde_json::json!({ "slot": slot.to_rfc3339() }),
            ..StartRun::new(name, cause)
        };
        match self.start_run(start).await {
            Ok(started) => {
                let Some(run) = started.run_id().map(str::to_owned) else {
                    return Ok(None);
                };
                self.store.slot_run(name, slot, &run).await?;
                Ok(Some(run))
            }
            Err(TriggerError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!(pipeline = name, %slot, error = %e, "schedule slot not started");
                Ok(None)
            }
        }
    }

    /// One run per slot of `name`'s schedules in `[from, to]` (at most
    /// [`CATCHUP_CAP`]), each keyed by its slot: a slot that ran already,
    /// by schedule or an earlier backfill, is not run again. Returns the
    /// slots with the runs started, and how many were skipped.
    pub async fn backfill(
        self: &Arc<Self>,
        name: &str,
        from: weir_engine::Time,
        to: weir_engine::Time,
    ) -> Result<(Vec<(weir_engine::Time, String)>, usize), TriggerError> {
        let loaded = self.loaded(name)?;
        let mut slots: Vec<weir_engine::Time> = Vec::new();
        for schedule in &loaded.pipeline.on.schedule {
            slots.extend(weir_engine::schedule::between(
                &schedule.parsed,
                schedule.timezone,
                from,
                to,
                CATCHUP_CAP,
            ));
        }
        if loaded.pipeline.on.schedule.is_empty() {
            return Err(TriggerError::NoSchedule(name.to_owned()));
        }
        slots.sort();
        slots.dedup();
        slots.truncate(CATCHUP_CAP);
        let mut started = Vec::new();
        let mut skipped = 0;
        for slot in slots {
            match self.fire_slot(name, slot, true).await? {
                Some(run) => started.push((slot, run)),
                None => skipped += 1,
            }
        }
        Ok((started, skipped))
    }
}
