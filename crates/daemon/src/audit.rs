//! What the daemon writes to the audit log: a writer task appends entries
//! in the order they were recorded, signed with the daemon's key, so the
//! places that record (some of them synchronous) never wait on it; entries
//! that queue up while a commit runs share the next one.

use serde_json::Value;
use tokio::sync::mpsc;
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
    queue: mpsc::UnboundedSender<Pending>,
    key: SigningKey,
}

impl Auditor {
    /// Starts the writer for `store` with `key`.
    pub(crate) fn start(store: Store, key: SigningKey) -> Auditor {
        let signing = key.clone();
        let (queue, mut pending) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
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
                if let Err(e) = store.append_audit_all(&key, &entries).await {
                    tracing::error!(error = %e, entries = entries.len(), "cannot append to the audit log");
                }
                drop(entries);
                batch.clear();
            }
        });
        Auditor {
            queue,
            key: signing,
        }
    }

    /// Records that `actor` did `action` to `subject`.
    pub(crate) fn record(&self, actor: &str, action: &'static str, subject: &str, payload: Value) {
        let _ = self.queue.send(Pending {
            actor: actor.to_owned(),
            action,
            subject: subject.to_owned(),
            payload,
            at: crate::clock::now(),
        });
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
