//! Logs: chunks in order, the per-attempt cap keeps the tail and says how
//! much was dropped.

use crate::{at, stores};
use serde_json::json;
use weir_engine::{Event, advance, new_run};
use weir_store::Store;

/// A store holding one run whose only step has attempt 1.
async fn with_attempt(store: &Store) {
    let p = weir_model::validate("name: l\nsteps:\n  a: { run: a, executor: process }\n")
        .pipeline
        .expect("valid");
    let mut run = new_run(
        &p,
        "r",
        weir_engine::Cause::manual("tester"),
        &[],
        json!(null),
        json!({}),
        at(0),
    )
    .expect("run");
    let hash = store.save_pipeline("l", "name: l").await.expect("saved");
    store.create_run(&run, &hash).await.expect("created");
    let before = run.clone();
    advance(&mut run, &p, Event::Tick, at(1), 1).expect("starts");
    store.save_run(&before, &run).await.expect("saved");
}

#[tokio::test]
async fn chunks_read_back_in_order() {
    for (db, store, _dir) in stores().await {
        with_attempt(&store).await;
        let mut at = 0;
        for chunk in ["hello ", "from ", "a step\n"] {
            store
                .append_log("r", 0, 1, at, chunk.as_bytes())
                .await
                .expect("appended");
            at += chunk.len() as u64;
        }
        store
            .append_log("r", 0, 1, at, b"")
            .await
            .expect("empty is fine");
        assert_eq!(
            store.read_log("r", 0, 1).await.expect("reads"),
            b"hello from a step\n",
            "{db}"
        );
        assert_eq!(
            store.read_log("r", 0, 2).await.expect("reads"),
            b"",
            "{db}: no such attempt, no log"
        );
    }
}

/// A write tried again after its answer was lost (the database went away
/// mid-commit) stores nothing twice, and of a chunk the store has in part
/// only the rest.
#[tokio::test]
async fn a_chunk_written_again_is_stored_once() {
    for (db, store, _dir) in stores().await {
        with_attempt(&store).await;
        for (at, chunk) in [
            (0, "line 1\n"),
            (0, "line 1\n"),
            (7, "line 2\n"),
            (3, "e 1\nline 2\nline 3\n"),
        ] {
            store
                .append_log("r", 0, 1, at, chunk.as_bytes())
                .await
                .expect("appended");
        }
        assert_eq!(
            String::from_utf8(store.read_log("r", 0, 1).await.expect("reads")).expect("text"),
            "line 1\nline 2\nline 3\n",
            "{db}"
        );
        assert_eq!(store.log_written("r", 0, 1).await.expect("written"), 21);
    }
}

#[tokio::test]
async fn the_cap_keeps_the_tail_and_marks_the_drop() {
    for (db, store, _dir) in stores().await {
        let store = store.with_log_cap(10);
        with_attempt(&store).await;
        store
            .append_log("r", 0, 1, 0, b"01234")
            .await
            .expect("appended");
        store
            .append_log("r", 0, 1, 5, b"56789")
            .await
            .expect("appended");
        assert_eq!(
            store.read_log("r", 0, 1).await.expect("reads"),
            b"0123456789",
            "{db}: at the cap"
        );
        store
            .append_log("r", 0, 1, 10, b"abc")
            .await
            .expect("appended");
        let log = String::from_utf8(store.read_log("r", 0, 1).await.expect("reads")).expect("text");
        assert_eq!(
            log, "[weir: 5 earlier bytes dropped; an attempt keeps the last 10 bytes]\n56789abc",
            "{db}"
        );
        store
            .append_log("r", 0, 1, 13, b"ABCDEFGHIJKLMNOP")
            .await
            .expect("appended");
        let log = String::from_utf8(store.read_log("r", 0, 1).await.expect("reads")).expect("text");
        assert_eq!(
            log, "[weir: 19 earlier bytes dropped; an attempt keeps the last 10 bytes]\nGHIJKLMNOP",
            "{db}"
        );
    }
}
