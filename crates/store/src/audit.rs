//! The audit log: an append-only chain of entries, each holding the hash
//! of the one before and its own (SHA-256 over a canonical encoding),
//! signed with an ed25519 key. An edit, a removed entry or a signature by
//! another key is found by [`verify`] at the entry where the chain breaks.

use crate::db::{BeginWrite, Db, on_db};
use crate::{Error, Store};
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// 1, 2, … with no gap.
    pub seq: i64,
    /// When it was appended (kept to the microsecond).
    pub at: DateTime<Utc>,
    /// Who: a token's name, `schedule`, `webhook`, `run RUN`, `weir`.
    pub actor: String,
    /// What: `run.triggered`, `approval.decided`, `gate.decided`, …
    pub action: String,
    /// What it concerns: a run, `RUN/STEP`, `MODEL@N`, a pipeline.
    pub subject: String,
    /// The details, as JSON text.
    pub payload: String,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// SHA-256 of the canonical encoding of the fields above, hex.
    pub hash: String,
    /// ed25519 signature of the hash's bytes, hex.
    pub signature: String,
}

/// What to append ([`Store::append_audit`]).
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Who.
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// What it concerns.
    pub subject: &'a str,
    /// The details.
    pub payload: &'a Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {seq}: {reason}")]
pub struct Broken {
    /// The first entry that does not verify.
    pub seq: i64,
    /// Why.
    pub reason: String,
}

/// The SHA-256 (hex) of `value`'s canonical JSON, keys sorted: what the
/// audit log records of a document kept elsewhere (a model card).
pub fn document_sha256(value: &Value) -> String {
    hex::encode(Sha256::digest(canonical(value).to_string().as_bytes()))
}

/// JSON with every object's keys sorted: one text for one value.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The hash of an entry's fields: SHA-256 of the JSON array
/// `[seq, at, actor, action, subject, payload, prev_hash]`, the time in
/// RFC 3339 with microseconds and `Z`, the payload with sorted keys.
pub fn entry_hash(
    seq: i64,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    subject: &str,
    payload: &str,
    prev_hash: &str,
) -> String {
    let payload: Value = serde_json::from_str(payload).unwrap_or(Value::String(payload.to_owned()));
    let fields = serde_json::json!([
        seq,
        at.to_rfc3339_opts(SecondsFormat::Micros, true),
        actor,
        action,
        subject,
        canonical(&payload),
        prev_hash
    ]);
    hex::encode(Sha256::digest(fields.to_string().as_bytes()))
}

/// Checks `entries` (in order) against `key`: sequence without gaps from
/// 1, each `prev_hash` the hash before, each hash recomputed, each
/// signature. Returns how many entries verify, or the first that does not.
pub fn verify(entries: &[AuditEntry], key: &VerifyingKey) -> Result<usize, Broken> {
    let mut prev = GENESIS.to_owned();
    for (index, entry) in entries.iter().enumerate() {
        let expected = index as i64 + 1;
        let broken = |reason: String| Broken {
            seq: entry.seq,
            reason,
        };
        if entry.seq != expected {
            return Err(Broken {
                seq: expected,
                reason: format!(
                    "missing: the entry after {} is {} (an entry was removed)",
                    expected - 1,
                    entry.seq
                ),
            });
        }
        if entry.prev_hash != prev {
            return Err(broken(
                "its previous-hash does not match the entry before (the chain was rewritten)"
                    .to_owned(),
            ));
        }
        let hash = entry_hash(
            entry.seq,
            entry.at,
            &entry.actor,
            &entry.action,
            &entry.subject,
            &entry.payload,
            &entry.prev_hash,
        );
        if hash != entry.hash {
            return Err(broken(
                "its content does not match its hash (it was edited)".to_owned(),
            ));
        }
        let signature = hex::decode(&entry.signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok());
        let signed = signature.is_some_and(|s| key.verify(entry.hash.as_bytes(), &s).is_ok());
        if !signed {
            return Err(broken(
                "its signature is not by this key (it was re-signed or forged)".to_owned(),
            ));
        }
        prev = entry.hash.clone();
    }
    Ok(entries.len())
}

/// A secret kept in a file of its own: the 64 hex digits it holds, or,
/// when the file is not there yet, 256 bits hashed from the OS's random
/// source (two v4 UUIDs), written with mode 0600 — never over a file that
/// appeared meanwhile. The daemon's audit key and API token are made so.
pub fn secret_file(path: &std::path::Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                private_dir(dir)?;
            }
            let random = format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
            let secret = hex::encode(Sha256::digest(random.as_bytes()));
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(secret.as_bytes())?;
            Ok(secret)
        }
        Err(e) => Err(e),
    }
}

/// Creates `dir` and the folders above it that are missing, each private
/// to this user (0700): a data folder holds the token, the key and the
/// database. A folder that exists is left as its owner set it.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The daemon's signing key, kept in `dir/audit.key` (the hex of its
/// 32-byte seed, mode 0600) and made at the first start ([`secret_file`]).
pub fn signing_key(dir: &std::path::Path) -> std::io::Result<SigningKey> {
    let path = dir.join("audit.key");
    let text = secret_file(&path)?;
    let seed: [u8; 32] = hex::decode(&text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "{} does not hold a key (64 hex digits)",
                path.display()
            ))
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key given as 64 hex digits.
pub fn public_key(hex_text: &str) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = hex::decode(hex_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(KeyError::NotHex)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::NotEd25519(e.to_string()))
}

/// Why a text is not a public key ([`public_key`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 32 bytes of hex.
    #[error("a public key is 64 hex digits")]
    NotHex,
    /// 32 bytes, but no point of the curve.
    #[error("not an ed25519 public key: {0}")]
    NotEd25519(String),
}

/// Appends `$entries` (pairs of signing key and entry) inside write
/// transaction `$tx`, after the last entry
/// (taking the audit lock first on PostgreSQL), in one statement;
/// evaluates to the entries as stored. A macro so it serves both databases and any transaction
/// that also writes other rows (a run and the entry of its trigger).
macro_rules! append_in {
    ($tx:ident, $is_pg:expr, $entries:expr) => {{
        if $is_pg {
            sqlx::query($crate::audit::LOCK_AUDIT).execute(&mut *$tx).await?;
        }
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *$tx)
                .await?;
        let (mut seq, mut prev_hash) = last.unwrap_or((0, $crate::audit::GENESIS.to_owned()));
        let mut appended = Vec::new();
        for (key, new) in $entries {
            seq += 1;
            let entry = $crate::audit::sealed(key, seq, new, std::mem::take(&mut prev_hash));
            prev_hash.clone_from(&entry.hash);
            appended.push(entry);
        }
        // One statement for many entries (a batch of runs appends one each).
        for chunk in $crate::group::pieces(&appended) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO audit (seq, at, actor, action, subject, payload, prev_hash, hash, signature) ",
            );
            insert.push_values(chunk, |mut b, entry| {
                b.push_bind(entry.seq)
                    .push_bind(entry.at)
                    .push_bind(&entry.actor)
                    .push_bind(&entry.action)
                    .push_bind(&entry.subject)
                    .push_bind(&entry.payload)
                    .push_bind(&entry.prev_hash)
                    .push_bind(&entry.hash)
                    .push_bind(&entry.signature);
            });
            insert
                .build()
                .persistent($crate::group::keep_prepared(chunk.len()))
                .execute(&mut *$tx)
                .await?;
        }
        appended
    }};
}
pub(crate) use append_in;

/// Entry `seq` for `new`, after `prev_hash`: hashed and signed.
pub(crate) fn sealed(
    key: &SigningKey,
    seq: i64,
    new: &NewEntry<'_>,
    prev_hash: String,
) -> AuditEntry {
    let payload = canonical(new.payload).to_string();
    // The databases keep microseconds; the hash must cover what they keep.
    let at = chrono::DurationRound::duration_trunc(new.at, chrono::TimeDelta::microseconds(1))
        .unwrap_or(new.at);
    let hash = entry_hash(
        seq,
        at,
        new.actor,
        new.action,
        new.subject,
        &payload,
        &prev_hash,
    );
    let signature = hex::encode(key.sign(hash.as_bytes()).to_bytes());
    AuditEntry {
        seq,
        at,
        actor: new.actor.to_owned(),
        action: new.action.to_owned(),
        subject: new.subject.to_owned(),
        payload,
        prev_hash,
        hash,
        signature,
    }
}

/// Serialises appends on PostgreSQL (SQLite's writers are serialised).
pub(crate) const LOCK_AUDIT: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('weir.audit', 0))";

impl Store {
    /// Appends an entry, chained to the last one and signed with `key`.
    pub async fn append_audit(
        &self,
        key: &SigningKey,
        new: &NewEntry<'_>,
    ) -> Result<AuditEntry, Error> {
        let mut appended = self
            .append_audit_all(key, std::slice::from_ref(new))
            .await?;
        appended
            .pop()
            .ok_or_else(|| Error::Corrupt("an append wrote no entry".to_owned()))
    }

    /// Appends entries in order, in one transaction (a busy daemon's
    /// entries share a commit), each chained to the one before.
    pub async fn append_audit_all(
        &self,
        key: &SigningKey,
        entries: &[NewEntry<'_>],
    ) -> Result<Vec<AuditEntry>, Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let is_pg = matches!(self.db, Db::Postgres(_));
        let appended = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let appended = append_in!(tx, is_pg, entries.iter().map(|e| (key, e)));
            tx.commit().await?;
            appended
        });
        Ok(appended)
    }

    /// The latest entry recording `action` on `subject`, if any.
    pub async fn audit_entry_about(
        &self,
        subject: &str,
        action: &str,
    ) -> Result<Option<AuditEntry>, Error> {
        let row = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT seq, at, actor, action, subject, payload, prev_hash, hash, signature FROM audit WHERE subject = $1 AND action = $2 ORDER BY seq DESC LIMIT 1",
            )
            .bind(subject)
            .bind(action)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// The entries after `after` (0: all), in order, at most `limit`.
    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, Error> {
        let rows = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT seq, at, actor, action, subject, payload, prev_hash, hash, signature FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}
