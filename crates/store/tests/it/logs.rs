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
        for chunk in ["hello ", "from ", "a step\n"] {
            store
                .append_log("r", 0, 1, chunk.as_bytes())
                .await
                .expect("appended");
        }
        store
            .append_log("r", 0, 1, b"")
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

#[tokio::test]
async fn the_cap_keeps_the_tail_and_marks_the_drop() {
    for (db, store, _dir) in stores().await {
        let store = store.with_log_cap(10);
        with_attempt(&store).await;
        store
            .append_log("r", 0, 1, b"01234")
            .await
            .expect("appended");
        store
            .append_log("r", 0, 1, b"56789")
            .await
            .expect("appended");
        assert_eq!(
            store.read_log("r", 0, 1).await.expect("reads"),
            b"0123456789",
            "{db}: at the cap"
        );
        store.append_log("r", 0, 1, b"abc").await.expect("appended");
        let log = String::from_utf8(store.read_log("r", 0, 1).await.expect("reads")).expect("text");
        assert_eq!(
            log, "[weir: 5 earlier bytes dropped; an attempt keeps the last 10 bytes]\n56789abc",
            "{db}"
        );
        store
            .append_log("r", 0, 1, b"ABCDEFGHIJKLMNOP")
            .await
            .expect("appended");
        let log = String::from_utf8(store.read_log("r", 0, 1).await.expect("reads")).expect("text");
        assert_eq!(
            log, "[weir: 19 earlier bytes dropped; an attempt keeps the last 10 bytes]\nGHIJKLMNOP",
            "{db}"
        );
    }
}
