//! The audit chain: appended entries verify; an edited payload, a removed
//! entry and a chain re-signed with another key are each found at the
//! entry where the chain breaks.

use crate::{at, stores};
use serde_json::json;
use weir_store::{AuditEntry, NewEntry, SigningKey, Store, entry_hash, verify};

async fn five(store: &Store, key: &SigningKey) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    for i in 0..5 {
        let payload = json!({ "n": i, "b": [1, {"z": 1, "a": 2}] });
        let entry = store
            .append_audit(
                key,
                &NewEntry {
                    actor: "admin",
                    action: "run.triggered",
                    subject: &format!("run-{i}"),
                    payload: &payload,
                    at: at(i),
                },
            )
            .await
            .expect("appended");
        entries.push(entry);
    }
    entries
}

async fn sql(store: &Store, statement: &str) {
    match store.db() {
        weir_store::Db::Sqlite(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
                .execute(pool)
                .await
                .expect("sql");
        }
        weir_store::Db::Postgres(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
                .execute(pool)
                .await
                .expect("sql");
        }
    }
}

#[tokio::test]
async fn a_chain_verifies_and_each_kind_of_tampering_is_found_at_its_entry() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[9; 32]);
    for (db, store, _dir) in stores().await {
        let appended = five(&store, &key).await;
        let read = store.audit_entries(0, 100).await.expect("read");
        assert_eq!(read.len(), 5, "{db}");
        assert_eq!(read[0].prev_hash, weir_store::GENESIS);
        assert_eq!(read[1].prev_hash, read[0].hash);
        assert_eq!(read[4].hash, appended[4].hash, "{db}: read back as written");
        assert_eq!(verify(&read, &key.verifying_key()), Ok(5), "{db}");
        // Entries appended together chain the same way, in order.
        let payload = json!({});
        let batch: Vec<NewEntry<'_>> = ["a", "b", "c"]
            .iter()
            .map(|subject| NewEntry {
                actor: "weir",
                action: "pipeline.loaded",
                subject,
                payload: &payload,
                at: at(9),
            })
            .collect();
        let appended = store
            .append_audit_all(&key, &batch)
            .await
            .expect("appended");
        assert_eq!(
            appended.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [6, 7, 8],
            "{db}"
        );
        let all = store.audit_entries(0, 100).await.expect("read");
        assert_eq!(verify(&all, &key.verifying_key()), Ok(8), "{db}");
        sql(&store, "DELETE FROM audit WHERE seq > 5").await;
        assert_eq!(store.audit_entries(3, 100).await.expect("read").len(), 2);

        // The wrong public key fails at the first entry.
        let wrong = verify(&read, &other.verifying_key()).expect_err("wrong key");
        assert_eq!(wrong.seq, 1, "{db}");

        // A payload changed in the database: found at that entry.
        sql(
            &store,
            "UPDATE audit SET payload = '{\"n\":99}' WHERE seq = 3",
        )
        .await;
        let broken = verify(
            &store.audit_entries(0, 100).await.expect("read"),
            &key.verifying_key(),
        )
        .expect_err("edited");
        assert_eq!(
            (broken.seq, broken.reason.contains("edited")),
            (3, true),
            "{db}: {broken}"
        );
        sql(
            &store,
            &format!(
                "UPDATE audit SET payload = '{}' WHERE seq = 3",
                read[2].payload
            ),
        )
        .await;
        assert_eq!(
            verify(
                &store.audit_entries(0, 100).await.expect("read"),
                &key.verifying_key()
            ),
            Ok(5)
        );

        // A middle entry removed: found where it is missing.
        sql(&store, "DELETE FROM audit WHERE seq = 2").await;
        let broken = verify(
            &store.audit_entries(0, 100).await.expect("read"),
            &key.verifying_key(),
        )
        .expect_err("removed");
        assert_eq!(
            (broken.seq, broken.reason.contains("removed")),
            (2, true),
            "{db}: {broken}"
        );
    }
}

#[tokio::test]
async fn a_history_rewritten_and_re_signed_with_another_key_fails_at_the_first_rewrite() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let forger = SigningKey::from_bytes(&[9; 32]);
    for (db, store, _dir) in stores().await {
        let mut entries = five(&store, &key).await;
        // Rewrite entry 4 and re-chain everything after it, consistently,
        // but signed with the forger's key.
        entries[3].payload = "{\"n\":42}".to_owned();
        for i in 3..entries.len() {
            let prev = entries[i - 1].hash.clone();
            let e = &mut entries[i];
            e.prev_hash = prev;
            e.hash = entry_hash(
                e.seq,
                e.at,
                &e.actor,
                &e.action,
                &e.subject,
                &e.payload,
                &e.prev_hash,
            );
            use ed25519_dalek::Signer as _;
            e.signature = hex::encode(forger.sign(e.hash.as_bytes()).to_bytes());
        }
        let broken = verify(&entries, &key.verifying_key()).expect_err("forged");
        assert_eq!(broken.seq, 4, "{db}: {broken}");
        assert!(broken.reason.contains("signature"), "{broken}");
    }
}

#[test]
fn the_key_is_made_once_with_mode_0600_and_read_back() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let made = weir_store::signing_key(dir.path()).expect("made");
    let mode = std::fs::metadata(dir.path().join("audit.key"))
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = weir_store::signing_key(dir.path()).expect("read");
    assert_eq!(made.to_bytes(), again.to_bytes());
    let public = hex::encode(made.verifying_key().to_bytes());
    assert_eq!(
        weir_store::public_key(&public).expect("parses"),
        made.verifying_key()
    );
    assert!(weir_store::public_key("zz").is_err());
    std::fs::write(dir.path().join("audit.key"), "nonsense").expect("write");
    let e = weir_store::signing_key(dir.path()).expect_err("refused");
    assert!(e.to_string().contains("does not hold a key"), "{e}");
}
