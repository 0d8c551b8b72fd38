//! What the daemon writes to the audit log: a writer task appends entries
//! in the order they were recorded, signed with the daemon's key, so the
//! places that record (some of them synchronous) never wait on it.

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
    public: VerifyingKey,
}

impl Auditor {
    /// Starts the writer for `store` with `key`.
    pub(crate) fn start(store: Store, key: SigningKey) -> Auditor {
        let public = key.verifying_key();
        let (queue, mut pending) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            while let Some(entry) = pending.recv().await {
                let new = NewEntry {
                    actor: &entry.actor,
                    action: entry.action,
                    subject: &entry.subject,
                    payload: &entry.payload,
                    at: entry.at,
                };
                if let Err(e) = store.append_audit(&key, &new).await {
                    tracing::error!(error = %e, action = entry.action, subject = %entry.subject, "cannot append to the audit log");
                }
            }
        });
        Auditor { queue, public }
    }

    /// Records that `actor` did `action` to `subject`.
    pub(crate) fn record(&self, actor: &str, action: &'static str, subject: &str, payload: Value) {
        let _ = self.queue.send(Pending {
            actor: actor.to_owned(),
            action,
            subject: subject.to_owned(),
            payload,
            at: crate::drive::now(),
        });
    }

    /// The key that verifies the entries.
    pub(crate) fn public_key(&self) -> VerifyingKey {
        self.public
    }
}
