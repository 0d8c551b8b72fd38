//! What the daemon writes to the audit log: a writer task appends entries
//! in the order they were recorded, signed with the daemon's key, so the
//! places that record (some of them synchronous) never wait on it; entries
//! that queue up while a commit runs share the next one. A trigger's entry
//! is not queued: it commits in the transaction that creates its run
//! (`runs.rs`). Gate verdicts and registrations are recorded from each
//! run's step changes ([`audit_change`]).
//!
//! **Invariant:** what was recorded before [`Auditor::close`] is in the
//! log once `close` returns.

use crate::drive::Change;
use crate::tasks::{TaskKind, Tasks};
use serde_json::Value;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};
use weir_engine::Run;
use weir_model::Pipeline;
use weir_store::{NewEntry, SigningKey, Store, VerifyingKey};

/// One entry waiting to be appended.
struct Pending {
    actor: String,
    action: &'static str,
    subject: String,
    payload: Value,
    at: weir_engine::Time,
}

/// The daemon's audit log writer.
pub(crate) struct Auditor {
    queue: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
    drained: Mutex<Option<oneshot::Receiver<()>>>,
    key: SigningKey,
}

impl Auditor {
    /// Starts the writer for `store` with `key`, as one of `tasks`.
    pub(crate) fn start(store: Store, key: SigningKey, tasks: &Tasks) -> Auditor {
        let signing = key.clone();
        let (queue, mut pending) = mpsc::unbounded_channel::<Pending>();
        let (done, drained) = oneshot::channel();
        tasks.spawn(TaskKind::Audit, async move {
            let mut batch = Vec::new();
            // Whatever queued up while the last commit ran goes in the next.
            while pending.recv_many(&mut batch, 256).await > 0 {
                let entries: Vec<NewEntry<'_>> = batch
                    .iter()
                    .map(|entry| NewEntry {
                        actor: &entry.actor,
                        action: entry.action,
                        subject: &entry.subject,
                        payload: &entry.payload,
                        at: entry.at,
                    })
                    .collect();
                // While the store is away the batch waits for it (what is
                // recorded meanwhile queues up behind); only another
                // failure, or the store closed, gives it up.
                let mut delay = std::time::Duration::from_millis(100);
                loop {
                    match store.append_audit_all(&key, &entries).await {
                        Ok(_) => break,
                        Err(e) if e.is_unavailable() => {
                            tracing::warn!(error = %e, entries = entries.len(), retry_in = ?delay, "the store is away; audit entries wait for it");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(std::time::Duration::from_secs(5));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, entries = entries.len(), "cannot append to the audit log");
                            break;
                        }
                    }
                }
                drop(entries);
                batch.clear();
            }
            let _ = done.send(());
        });
        Auditor {
            queue: Mutex::new(Some(queue)),
            drained: Mutex::new(Some(drained)),
            key: signing,
        }
    }

    /// Records that `actor` did `action` to `subject`.
    pub(crate) fn record(&self, actor: &str, action: &'static str, subject: &str, payload: Value) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queue.as_ref() else {
            tracing::error!(
                actor,
                action,
                subject,
                "the audit log is closed: entry not recorded"
            );
            return;
        };
        let _ = queue.send(Pending {
            actor: actor.to_owned(),
            action,
            subject: subject.to_owned(),
            payload,
            at: crate::clock::now(),
        });
    }

    /// Takes no more entries and waits until every one recorded before is
    /// appended.
    pub(crate) async fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let drained = self
            .drained
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(drained) = drained {
            let _ = drained.await;
        }
    }

    /// The key that verifies the entries.
    pub(crate) fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The key that signs them, for entries appended in the transaction of
    /// what they record.
    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }
}

/// Records gate verdicts and registrations as a run makes them.
pub(crate) fn audit_change(audit: &Auditor, pipeline: &Pipeline, run: &Run, change: &Change) {
    use weir_engine::StepState;
    use weir_model::pipeline::StepKind;
    let instance = &run.steps[change.step];
    let subject = format!("{}/{}", run.id, instance.id);
    match &pipeline.steps[instance.step].kind {
        StepKind::Gate(_) if matches!(change.to, StepState::Succeeded | StepState::Failed) => {
            audit.record(
                "weir",
                "gate.decided",
                &subject,
                serde_json::json!({
                    "holds": change.to == StepState::Succeeded,
                    "evidence": instance.evidence,
                }),
            );
        }
        StepKind::Register(register) if change.to == StepState::Succeeded => {
            let outputs = instance
                .last_attempt()
                .map(|a| a.outputs.clone())
                .unwrap_or_default();
            let version = outputs.get("version").cloned().unwrap_or_default();
            let actor = format!("run {}", run.id);
            audit.record(
                &actor,
                "model.registered",
                &format!("{}@{version}", register.model.value),
                serde_json::json!({
                    "sha256": outputs.get("sha256"),
                    "card_sha256": outputs.get("card_sha256"),
                    "step": subject,
                }),
            );
            if let Some(alias) = &register.alias {
                audit.record(
                    &actor,
                    "alias.moved",
                    &format!("{}/{}", register.model.value, alias.value),
                    serde_json::json!({ "version": version }),
                );
            }
        }
        _ => {}
    }
}

/// What checking an audit chain found: how many entries it holds and the
/// first that does not verify, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The entries checked.
    pub entries: usize,
    /// The first bad entry and why.
    pub broken: Option<weir_store::Broken>,
}

impl Verified {
    fn of(entries: &[weir_store::AuditEntry], key: &VerifyingKey) -> Verified {
        match weir_store::verify(entries, key) {
            Ok(count) => Verified {
                entries: count,
                broken: None,
            },
            Err(broken) => Verified {
                entries: entries.len(),
                broken: Some(broken),
            },
        }
    }
}

impl crate::Daemon {
    /// Checks the whole audit log against the daemon's key.
    pub async fn verify_audit(&self) -> Result<Verified, weir_store::Error> {
        let mut entries: Vec<weir_store::AuditEntry> = Vec::new();
        loop {
            let after = entries.last().map_or(0, |e| e.seq);
            let page = self.store().audit_entries(after, 10_000).await?;
            if page.is_empty() {
                break;
            }
            entries.extend(page);
        }
        Ok(Verified::of(&entries, &self.audit_key()))
    }
}

/// Why an audit export could not be checked at all ([`verify_export`]).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The public key does not read.
    #[error("--pubkey: {0}")]
    Key(#[from] weir_store::KeyError),
    /// A line is not an entry.
    #[error("line {line}: not an audit entry: {error}")]
    Line {
        /// 1-based.
        line: usize,
        /// What serde said.
        error: serde_json::Error,
    },
}

/// Checks an export (`weir audit export`: one entry of JSON per line)
/// against the public key in hex, with no daemon and no database.
pub fn verify_export(text: &str, public_key: &str) -> Result<Verified, ExportError> {
    let key = weir_store::public_key(public_key)?;
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(line).map_err(|error| ExportError::Line {
            line: index + 1,
            error,
        })?;
        entries.push(entry);
    }
    Ok(Verified::of(&entries, &key))
}
