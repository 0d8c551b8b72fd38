//! The model registry: versions numbered once per model even when runs
//! register at the same time, aliases and their history.

use crate::{at, stores};
use serde_json::json;
use weir_store::{Error, NewVersion};

fn metrics(accuracy: f64) -> serde_json::Map<String, serde_json::Value> {
    json!({ "accuracy": accuracy })
        .as_object()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn concurrent_registrations_get_distinct_versions() {
    for (db, store, _dir) in stores().await {
        let m = metrics(0.9);
        let runs: Vec<String> = (0..8).map(|i| format!("run-{i}")).collect();
        let registering = runs.iter().map(|run| {
            let store = store.clone();
            let m = m.clone();
            let run = run.clone();
            tokio::spawn(async move {
                store
                    .register_model(&NewVersion {
                        model: "churn",
                        artifact: "model.pkl",
                        sha256: "ab",
                        metrics: &m,
                        run_id: &run,
                        step: "register",
                        alias: Some("staging"),
                        at: at(0),
                    })
                    .await
                    .expect("registered")
                    .version
            })
        });
        let mut versions = Vec::new();
        for task in registering {
            versions.push(task.await.expect("task"));
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=8).collect::<Vec<i64>>(), "{db}");
        let listed = store.models().await.expect("models");
        assert_eq!(listed.len(), 1, "{db}");
        assert_eq!((listed[0].latest, listed[0].versions), (8, 8), "{db}");
        assert_eq!(
            store.alias_history("churn").await.expect("history").len(),
            8,
            "{db}"
        );
    }
}

#[tokio::test]
async fn a_step_registers_once_and_aliases_keep_their_history() {
    for (db, store, _dir) in stores().await {
        let new = |run: &'static str, accuracy: f64, when: i64| {
            let m = metrics(accuracy);
            let store = store.clone();
            async move {
                store
                    .register_model(&NewVersion {
                        model: "churn",
                        artifact: "model.pkl",
                        sha256: "cd",
                        metrics: &m,
                        run_id: run,
                        step: "register",
                        alias: Some("staging"),
                        at: at(when),
                    })
                    .await
                    .expect("registered")
            }
        };
        let v1 = new("r1", 0.8, 0).await;
        assert_eq!(v1.version, 1, "{db}");
        let again = new("r1", 0.8, 5).await;
        assert_eq!(again, v1, "{db}: a retried register step finds its version");
        let v2 = new("r2", 0.9, 10).await;
        assert_eq!(v2.version, 2);
        assert_eq!(v2.metrics["accuracy"], json!(0.9));

        assert_eq!(
            store
                .promote("churn", 1, "production", "alice", at(20))
                .await
                .expect("moved"),
            None
        );
        assert_eq!(
            store
                .promote("churn", 2, "production", "bob", at(30))
                .await
                .expect("moved"),
            Some(1)
        );
        assert!(matches!(
            store.promote("churn", 7, "production", "bob", at(40)).await,
            Err(Error::NoSuchModel(v)) if v == "churn@7"
        ));
        assert_eq!(
            store
                .alias_at("churn", "production", Some(at(19)))
                .await
                .expect("read"),
            None,
            "{db}"
        );
        assert_eq!(
            store
                .alias_at("churn", "production", Some(at(25)))
                .await
                .expect("read"),
            Some(1),
            "{db}"
        );
        assert_eq!(
            store
                .alias_at("churn", "production", Some(at(30)))
                .await
                .expect("read"),
            Some(2),
            "{db}"
        );
        assert_eq!(
            store
                .alias_at("churn", "production", None)
                .await
                .expect("read"),
            Some(2),
            "{db}"
        );
        let history = store.alias_history("churn").await.expect("history");
        let moves: Vec<(&str, i64, Option<i64>, &str)> = history
            .iter()
            .map(|m| {
                (
                    m.alias.as_str(),
                    m.version,
                    m.from_version,
                    m.actor.as_str(),
                )
            })
            .collect();
        assert_eq!(
            moves,
            [
                ("staging", 1, None, "run r1"),
                ("staging", 2, Some(1), "run r2"),
                ("production", 1, None, "alice"),
                ("production", 2, Some(1), "bob"),
            ],
            "{db}"
        );
        let view = store.registry_view().await.expect("view");
        assert_eq!(view["churn"]["production"]["version"], json!(2), "{db}");
        assert_eq!(
            view["churn"]["latest"]["metrics"]["accuracy"],
            json!(0.9),
            "{db}"
        );
        assert!(matches!(
            store.model_version("churn", 3).await,
            Err(Error::NoSuchModel(_))
        ));
    }
}
