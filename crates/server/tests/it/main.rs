//! The API through `router(state).oneshot(request)`: no port, no process,
//! a real daemon on a temp folder behind it. Here: that every refusal of
//! every route, whatever is wrong with the request, answers in the one
//! documented error shape; in `answers`, that every answer is the shape
//! the OpenAPI document gives for its route and status.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt as _;
use weir_daemon::{Daemon, Docker, Executors, Options};

const TOKEN: &str = "test-token";

const PIPELINE: &str = "name: p
on:
  webhook: { secret_env: PATH }
  schedule:
    - { cron: \"0 3 * * *\" }
defaults: { executor: process }
steps:
  a: { run: 'true' }
";

mod answers;
mod hooks;
mod registry;

async fn router() -> (axum::Router, tempfile::TempDir) {
    router_with(&[("p.yaml", PIPELINE)]).await
}

/// The router of a daemon serving these pipeline files, with its folder.
async fn router_with(files: &[(&str, &str)]) -> (axum::Router, tempfile::TempDir) {
    let (router, _, dir) = router_and_daemon(files).await;
    (router, dir)
}

/// The router, its daemon and its folder.
async fn router_and_daemon(
    files: &[(&str, &str)],
) -> (axum::Router, Arc<Daemon>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).expect("folder");
    for (name, text) in files {
        std::fs::write(pipelines.join(name), text).expect("pipeline");
    }
    let data = dir.path().join("data");
    let store = weir_store::Store::connect(&format!("sqlite://{}/weir.db", data.display()))
        .await
        .expect("store");
    let options = Options {
        executors: Executors::connect(&data, Docker::Skip, false, None)
            .await
            .expect("executors"),
        data,
        max_running: 2,
        grace: std::time::Duration::from_secs(1),
        gpus: Vec::new(),
        usage: Default::default(),
        mlflow: None,
        retention: None,
    };
    let (daemon, _) = Daemon::start(store, &pipelines, options)
        .await
        .expect("daemon");
    let state = weir_server::State {
        daemon: Arc::clone(&daemon),
        tokens: Arc::from(vec![("admin".to_owned(), TOKEN.to_owned())]),
    };
    (weir_server::router(state), daemon, dir)
}

/// Every `(method, path)` the OpenAPI document lists under `/api/v1`.
fn routes() -> Vec<(Method, String)> {
    let doc: Value = serde_json::from_str(weir_server::openapi_document()).expect("JSON");
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/v1") {
            continue;
        }
        for method in item.as_object().expect("item").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            routes.push((method, path.clone()));
        }
    }
    assert!(routes.len() > 20, "{routes:?}");
    routes
}

/// A path with its parameters filled; `version` with what is not a number.
fn fill(path: &str) -> String {
    path.replace("{id}", "norun")
        .replace("{step}", "a")
        .replace("{name}", "p")
        .replace("{pipeline}", "p")
        .replace("{alias}", "prod")
        .replace("{version}", "not-a-number")
}

/// Sends `request` through the router: its status and its body.
async fn answer(app: &axum::Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app.clone().oneshot(request).await.expect("answered");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .expect("body");
    (status, body.to_vec())
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` with `key`, as a webhook's
/// sender signs it.
fn sign(body: &[u8], key: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `request` and checks the answer: an error in the documented
/// shape, `{"error": {"code", "message"}}` as JSON. Returns the status and
/// the code.
async fn refused(app: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let what = format!("{} {}", request.method(), request.uri());
    let response = app.clone().oneshot(request).await.expect("answered");
    let status = response.status();
    let kind = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    assert!(status.is_client_error(), "{what}: {status} {body:?}");
    assert!(
        kind.starts_with("application/json"),
        "{what}: {kind} {body:?}"
    );
    let value: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&body)));
    let code = value["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!code.is_empty(), "{what}: {value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {value}"
    );
    (status, code)
}

fn request(method: &Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn every_refusal_of_every_route_is_the_documented_error_shape() {
    let (app, _dir) = router().await;
    for (method, path) in routes() {
        let uri = fill(&path);
        let hook = path.contains("/hooks/");
        // No token (the hooks take a signature instead).
        let bare = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .body(Body::empty())
            .expect("request");
        let (status, _) = refused(&app, bare).await;
        if !hook {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        }
        // A path parameter of the wrong type.
        if path.contains("{version}") {
            let bad = request(&method, &uri).body(Body::empty()).expect("request");
            let (status, code) = refused(&app, bad).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::BAD_REQUEST, "bad-path"),
                "{uri}"
            );
        }
        let uri = uri.replace("not-a-number", "1");
        // Query values out of range or of the wrong type.
        if method == Method::GET {
            let bad = format!(
                "{uri}?limit=99999999999999999999&after=x&offset=-1&attempt=x&at=yesterday"
            );
            let response = app
                .clone()
                .oneshot(request(&method, &bad).body(Body::empty()).expect("request"))
                .await
                .expect("answered");
            if !response.status().is_success() {
                refused(
                    &app,
                    request(&method, &bad).body(Body::empty()).expect("request"),
                )
                .await;
            }
        }
        if method == Method::POST {
            // Not JSON at all.
            let bad = request(&method, &uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .expect("request");
            refused(&app, bad).await;
            // JSON of the wrong shape.
            let bad = request(&method, &uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"unknown": [1, 2]}"#))
                .expect("request");
            refused(&app, bad).await;
            // The wrong content type.
            let bad = request(&method, &uri)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("{}"))
                .expect("request");
            let (status, _) = refused(&app, bad).await;
            let bodyless = ["/cancel", "/retry", "/replay"];
            if !hook && !bodyless.iter().any(|end| path.ends_with(end)) {
                assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{uri}");
            }
        }
    }
    // Neither an endpoint nor a method of one.
    let (status, _) = refused(
        &app,
        request(&Method::GET, "/api/v1/nothing-here")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = refused(
        &app,
        request(&Method::DELETE, "/api/v1/runs")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_limit_out_of_range_was_plain_text_and_is_now_json() {
    let (app, _dir) = router().await;
    let (status, code) = refused(
        &app,
        request(&Method::GET, "/api/v1/runs?limit=99999999999999999999")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "bad-query")
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_behind_the_token() {
    let (app, _dir) = router().await;
    let get = |token: Option<&str>| {
        let mut request = Request::builder().uri("/api/v1/openapi.json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::empty()).expect("request")
    };
    let (status, code) = refused(&app, get(None)).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, body) = answer(&app, get(Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK);
    let served: Value = serde_json::from_slice(&body).expect("JSON");
    let generated: Value = serde_json::from_str(weir_server::openapi_document()).expect("JSON");
    assert_eq!(served, generated);
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served["paths"]["/api/v1/runs/{id}/retry"]["post"].is_object());
}

#[tokio::test]
async fn a_nul_character_anywhere_is_refused_not_a_store_failure() {
    let (app, _dir) = router().await;
    let doc: Value = serde_json::from_str(weir_server::openapi_document()).expect("JSON");
    // Every route with a name in its path, the name holding a NUL.
    for (method, path) in routes() {
        let Some(start) = path.find('{') else {
            continue;
        };
        let end = start + path[start..].find('}').expect("closed");
        let mut uri = path.clone();
        uri.replace_range(start..=end, "a%00b");
        let uri = fill(&uri).replace("not-a-number", "1");
        let mut request = request(&method, &uri);
        if method == Method::POST {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = match path.as_str() {
            p if p.ends_with("/approval") => r#"{"approved": true}"#,
            p if p.ends_with("/backfill") => {
                r#"{"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}"#
            }
            p if p.contains("/aliases/") => r#"{"version": 1}"#,
            _ => "{}",
        };
        let body = if method == Method::POST {
            Body::from(body)
        } else {
            Body::empty()
        };
        let (status, code) = refused(&app, request.body(body).expect("request")).await;
        let documented =
            &doc["paths"][&path][method.as_str().to_lowercase()]["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{method} {path}: {status} is not documented"
        );
        if !path.contains("/hooks/") {
            // The request has its documented shape: a 422.
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, "bad-path"),
                "{method} {uri}"
            );
        }
    }
    // In a body and in a query.
    let bodies = [
        (
            "/api/v1/runs",
            r#"{"pipeline": "p", "params": {"x": "a\u0000b"}}"#,
        ),
        ("/api/v1/runs", r#"{"pipeline": "p\u0000"}"#),
        (
            "/api/v1/events/drift",
            r#"{"pipeline": "p", "metric": "ps\u0000i", "value": 0.5}"#,
        ),
    ];
    for (uri, body) in bodies {
        let bad = request(&Method::POST, uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        let (status, code) = refused(&app, bad).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "bad-request"),
            "{body}"
        );
    }
    let bad = request(&Method::GET, "/api/v1/models/m?alias=a%00b")
        .body(Body::empty())
        .expect("request");
    let (status, code) = refused(&app, bad).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad-query")
    );
}

#[tokio::test]
async fn healthz_says_when_the_database_is_away() {
    let (app, daemon, _dir) = router_and_daemon(&[("p.yaml", PIPELINE)]).await;
    let health = || async {
        let request = Request::builder()
            .uri("/healthz")
            .body(Body::empty())
            .expect("request");
        let (status, body) = answer(&app, request).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(health().await, (StatusCode::OK, "ok\n".to_owned()));
    daemon.store().close().await;
    let (status, text) = health().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.starts_with("database unavailable: "), "{text}");
}
