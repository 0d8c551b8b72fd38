//! Every answer, error or not, is what the generated OpenAPI document says
//! for its route and status: a whole scenario (a run through a gate, an
//! approval and a registration; a promotion, a webhook, a drift report, a
//! retry, a cancel, a backfill) is driven through the router, and each
//! answer is checked against the document's schema with `jsonschema`,
//! undocumented fields refused. The document, the wire types and the
//! handlers cannot drift apart without this failing.

use super::{TOKEN, answer, router_with, sign};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use std::time::Duration;

const PIPELINE: &str = r#"name: m
on:
  webhook: { secret_env: PATH }
  schedule:
    - { cron: "0 3 * * *" }
  drift:
    - { metric: psi, above: 0.2, cooldown: 1h }
params:
  lr: { default: "0.1", description: learning rate }
defaults: { executor: process }
steps:
  train:
    run: 'echo "{\"accuracy\": 0.95}" > $WEIR_OUT/metrics.json; echo model > $WEIR_WORK/m.bin; echo trained'
  gate: { needs: [train], gate: ["steps.train.metrics.accuracy >= 0.9"] }
  ok: { needs: [gate], approval: {} }
  register: { needs: [ok], register: { model: m, artifact: m.bin } }
"#;

/// The OpenAPI document with every object schema closed
/// (`additionalProperties: false` where it lists properties), so a field
/// the document does not name fails the check.
struct Document {
    doc: Value,
}

impl Document {
    fn new() -> Document {
        let mut doc: Value =
            serde_json::from_str(weir_server::openapi_document()).expect("the document is JSON");
        close(&mut doc["components"]);
        Document { doc }
    }

    /// Checks an answer of `method template` against the schema documented
    /// for its status; panics naming what differs.
    fn check(&self, method: &Method, template: &str, status: StatusCode, body: &Value) {
        let what = format!("{method} {template} → {status}");
        let operation = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{what}: not in the document");
        let response = &operation["responses"][status.as_str()];
        assert!(
            response.is_object(),
            "{what}: status not documented: {body}"
        );
        let response = match response["$ref"].as_str() {
            Some(reference) => {
                let name = reference.rsplit('/').next().expect("a name");
                &self.doc["components"]["responses"][name]
            }
            None => response,
        };
        let mut schema = response["content"]["application/json"]["schema"].clone();
        assert!(schema.is_object(), "{what}: no JSON schema documented");
        schema["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("{what}: the document's schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer is not the documented shape:\n{}\n{body:#}",
            errors.join("\n")
        );
    }
}

/// Sets `additionalProperties: false` on every schema that lists its
/// properties and says nothing of others.
fn close(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".to_owned(), Value::Bool(false));
            }
            map.values_mut().for_each(close);
        }
        Value::Array(items) => items.iter_mut().for_each(close),
        _ => {}
    }
}

/// A client of the router that checks every answer against the document.
struct Api {
    app: axum::Router,
    doc: Document,
    checked: std::collections::BTreeSet<String>,
}

impl Api {
    /// Sends `method template` with `args` filled in (`{id}` ← value, in
    /// order) and the query, checks the answer and returns it.
    async fn send(
        &mut self,
        method: Method,
        template: &str,
        args: &[&str],
        query: &str,
        request: axum::http::request::Builder,
        body: Body,
    ) -> (StatusCode, Value) {
        let mut path = template.to_owned();
        for arg in args {
            let start = path.find('{').expect("a parameter to fill");
            let end = start + path[start..].find('}').expect("its end");
            path.replace_range(start..=end, &encode(arg));
        }
        let request = request
            .method(method.clone())
            .uri(format!("{path}{query}"))
            .body(body)
            .expect("request");
        let (status, bytes) = answer(&self.app, request).await;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}{query}: {status}, not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        self.doc.check(&method, template, status, &value);
        self.checked
            .insert(format!("{method} {template} {}", status.as_str()));
        (status, value)
    }

    async fn get(&mut self, template: &str, args: &[&str], query: &str) -> (StatusCode, Value) {
        let request = Request::builder().header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        self.send(Method::GET, template, args, query, request, Body::empty())
            .await
    }

    async fn post(&mut self, template: &str, args: &[&str], body: Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json");
        self.send(
            Method::POST,
            template,
            args,
            "",
            request,
            Body::from(body.to_string()),
        )
        .await
    }

    /// `GET /runs/{id}` until `done` holds of the run.
    async fn wait(&mut self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..600 {
            let (_, run) = self.get("/api/v1/runs/{id}", &[id], "").await;
            if done(&run) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {id} never got there");
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn step_state<'a>(run: &'a Value, step: &str) -> &'a str {
    run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == step))
        .and_then(|s| s["state"].as_str())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_answer_of_a_whole_scenario_is_the_documented_shape() {
    let (app, _dir) = router_with(&[("m.yaml", PIPELINE)]).await;
    let mut api = Api {
        app,
        doc: Document::new(),
        checked: Default::default(),
    };

    // A run through its gate to its approval, approved, registered.
    let (status, run) = api
        .post("/api/v1/runs", &[], json!({ "pipeline": "m" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().expect("an id").to_owned();
    api.wait(&id, |run| step_state(run, "ok") == "waiting")
        .await;
    let (status, run) = api
        .post(
            "/api/v1/runs/{id}/steps/{step}/approval",
            &[&id, "ok"],
            json!({ "approved": true, "comment": "fine" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let run = api.wait(&id, |run| run["state"] == "succeeded").await;
    assert_eq!(run["steps"][1]["evidence"][0]["holds"], true, "{run:#}");

    // What the run left: its log, the registry, lineage, a promotion.
    let (_, chunk) = api
        .get("/api/v1/runs/{id}/steps/{step}/logs", &[&id, "train"], "")
        .await;
    assert_eq!(chunk["data"], "trained\n", "{chunk}");
    api.get("/api/v1/runs", &[], "?limit=10").await;
    api.get("/api/v1/pipelines", &[], "").await;
    api.get("/api/v1/models", &[], "").await;
    let (status, _) = api.get("/api/v1/models/{name}", &["m"], "").await;
    assert_eq!(status, StatusCode::OK);
    api.get("/api/v1/models/{name}/versions/{version}", &["m", "1"], "")
        .await;
    let (_, lineage) = api
        .get(
            "/api/v1/models/{name}/versions/{version}/lineage",
            &["m", "1"],
            "",
        )
        .await;
    assert_eq!(lineage["run"]["id"], id.as_str(), "{lineage:#}");
    let (_, card) = api
        .get(
            "/api/v1/models/{name}/versions/{version}/card",
            &["m", "1"],
            "",
        )
        .await;
    assert_eq!(card["card"]["run"]["id"], id.as_str(), "{card:#}");
    let (status, replay) = api
        .post(
            "/api/v1/models/{name}/versions/{version}/replay",
            &["m", "1"],
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{replay}");
    let replay_id = replay["id"].as_str().expect("an id").to_owned();
    api.wait(&replay_id, |run| run["state"] == "succeeded")
        .await;
    let mut found = Value::Null;
    for _ in 0..500 {
        let (_, replays) = api
            .get(
                "/api/v1/models/{name}/versions/{version}/replays",
                &["m", "1"],
                "",
            )
            .await;
        if replays[0].is_object() {
            found = replays[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found["run"], replay_id.as_str(), "{found:#}");
    let (_, lineage) = api
        .get(
            "/api/v1/models/{name}/versions/{version}/lineage",
            &["m", "1"],
            "",
        )
        .await;
    assert_eq!(
        lineage["replays"][0]["run"],
        replay_id.as_str(),
        "{lineage:#}"
    );
    let (status, counted) = api
        .post(
            "/api/v1/gc",
            &[],
            json!({ "older_than": "30d", "dry_run": true }),
        )
        .await;
    assert_eq!(
        (status, &counted["runs"]),
        (StatusCode::OK, &json!(0)),
        "{counted}"
    );
    let (status, promoted) = api
        .post(
            "/api/v1/models/{name}/aliases/{alias}",
            &["m", "production"],
            json!({ "version": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{promoted}");
    api.get("/api/v1/models/{name}", &["m"], "?alias=production")
        .await;
    api.get("/api/v1/models/{name}/history", &["m"], "").await;

    // Events: a signed webhook (then the same delivery again), drift
    // values below and above the rule, histograms.
    let payload = json!({ "ref": "refs/heads/main", "after": "abc123" }).to_string();
    let secret = std::env::var("PATH").expect("PATH is set");
    let signature = sign(payload.as_bytes(), &secret);
    for expected in [StatusCode::ACCEPTED, StatusCode::OK] {
        let request = Request::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Weir-Signature-256", &signature)
            .header("X-Weir-Delivery", "delivery-1");
        let (status, answer) = api
            .send(
                Method::POST,
                "/api/v1/hooks/{pipeline}",
                &["m"],
                "",
                request,
                Body::from(payload.clone()),
            )
            .await;
        assert_eq!(status, expected, "{answer}");
    }
    for report in [
        json!({ "pipeline": "m", "metric": "psi", "value": 0.1 }),
        json!({ "pipeline": "m", "metric": "psi", "reference": [0.5, 0.5], "current": [0.9, 0.1] }),
        json!({ "pipeline": "m", "metric": "psi", "value": 0.9 }),
        json!({ "pipeline": "m", "metric": "kl", "value": 0.9 }),
    ] {
        let (status, answer) = api.post("/api/v1/events/drift", &[], report).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (_, events) = api.get("/api/v1/events", &[], "?limit=50").await;
    let outcomes: Vec<&str> = (events.as_array().expect("events").iter())
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    for outcome in ["triggered", "below-threshold", "no-rule"] {
        assert!(outcomes.contains(&outcome), "{outcome}: {events:#}");
    }

    // A retry from a step; a run cancelled while it waits for approval.
    let (status, retried) = api
        .post(
            "/api/v1/runs/{id}/retry",
            &[&id],
            json!({ "from": "train" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{retried}");
    let (status, slow) = api
        .post(
            "/api/v1/runs",
            &[],
            json!({ "pipeline": "m", "params": { "lr": "0.2" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{slow}");
    let slow = slow["id"].as_str().expect("an id").to_owned();
    api.wait(&slow, |run| step_state(run, "ok") == "waiting")
        .await;
    let (status, answer) = api
        .post("/api/v1/runs/{id}/cancel", &[&slow], json!({}))
        .await;
    assert!(status.is_success(), "{answer}");
    let cancelled = api.wait(&slow, |run| run["state"] == "cancelled").await;
    assert_eq!(step_state(&cancelled, "ok"), "cancelled", "{cancelled:#}");

    // A backfill of two slots, then the same range again: nothing new.
    let range = json!({ "from": "2026-03-01T00:00:00Z", "to": "2026-03-02T12:00:00Z" });
    let (status, backfilled) = api
        .post("/api/v1/pipelines/{name}/backfill", &["m"], range.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{backfilled}");
    assert_eq!(backfilled["runs"].as_array().map(Vec::len), Some(2));
    let (_, again) = api
        .post("/api/v1/pipelines/{name}/backfill", &["m"], range)
        .await;
    assert_eq!(again["skipped"], 2, "{again}");

    // The audit log, and its check, last: every action above is in it.
    let (_, entries) = api.get("/api/v1/audit", &[], "?after=0&limit=1000").await;
    assert!(
        entries.as_array().is_some_and(|e| e.len() > 10),
        "{entries:#}"
    );
    api.get("/api/v1/audit/key", &[], "").await;
    let (_, verified) = api.get("/api/v1/audit/verify", &[], "").await;
    assert_eq!(verified["verified"], true, "{verified}");

    // Refusals are checked the same way: their status is documented, and
    // so is their shape.
    api.get("/api/v1/runs/{id}", &["norun"], "").await;
    api.get("/api/v1/models/{name}", &["nomodel"], "").await;
    api.get("/api/v1/models/{name}/versions/{version}", &["m", "9"], "")
        .await;
    api.post(
        "/api/v1/runs",
        &[],
        json!({ "pipeline": "m", "params": { "nope": "1" } }),
    )
    .await;
    api.post(
        "/api/v1/runs/{id}/retry",
        &[&slow],
        json!({ "from": "nostep" }),
    )
    .await;
    let request = Request::builder();
    api.send(Method::GET, "/api/v1/runs", &[], "", request, Body::empty())
        .await;

    // The scenario reached every JSON route of the document.
    let reached: std::collections::BTreeSet<String> = (api.checked.iter())
        .filter_map(|c| c.rsplit_once(' ').map(|(route, _)| route.to_owned()))
        .collect();
    let mut missing = Vec::new();
    for (path, item) in api.doc.doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let route = format!("{} {path}", method.to_uppercase());
            let json = path.starts_with("/api/v1") && path != "/api/v1/openapi.json";
            if json && !reached.contains(&route) {
                missing.push(route);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes no answer was checked of: {missing:?}"
    );
}
