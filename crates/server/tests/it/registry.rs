//! Promotions through the router: a model or alias name that breaks the
//! format's naming rule is refused whole, saying why, and moves nothing.

use super::{TOKEN, answer, router_with};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

const REGISTERED: &str = "name: reg
defaults: { executor: process }
steps:
  train: { run: 'echo m > $WEIR_WORK/m.bin' }
  register: { needs: [train], register: { model: m, artifact: m.bin } }
";

async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let (status, bytes) = answer(app, request.body(body).expect("request")).await;
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

#[tokio::test]
async fn hostile_model_and_alias_names_are_refused_and_move_nothing() {
    let (app, _dir) = router_with(&[("reg.yaml", REGISTERED)]).await;
    let (status, run) = send(
        &app,
        Method::POST,
        "/api/v1/runs",
        Some(json!({ "pipeline": "reg" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, run) = send(&app, Method::GET, &format!("/api/v1/runs/{id}"), None).await;
        if run["state"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let long = "a".repeat(200);
    let aliases = [
        "..%2F..%2Fetc%2Fpasswd",
        "a%00b",
        "x%0D%0Ay",
        long.as_str(),
        "x'%20OR%20'1'%3D'1",
        "Production",
    ];
    let version = Some(json!({ "version": 1 }));
    for alias in aliases {
        let uri = format!("/api/v1/models/m/aliases/{alias}");
        let (status, answer) = send(&app, Method::POST, &uri, version.clone()).await;
        // A NUL is refused by the extractor (422), before any name rule.
        let (expected, code) = if alias.contains("%00") {
            (StatusCode::UNPROCESSABLE_ENTITY, "bad-path")
        } else {
            (StatusCode::BAD_REQUEST, "bad-name")
        };
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (expected, Some(code)),
            "{alias}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            code == "bad-path"
                || message.starts_with("invalid alias '")
                    && message.contains("use lowercase letters"),
            "{message}"
        );
        assert!(!message.contains(['\0', '\r', '\n']), "{message:?}");
    }
    let (status, answer) = send(
        &app,
        Method::POST,
        "/api/v1/models/M/aliases/prod",
        version.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (_, history) = send(&app, Method::GET, "/api/v1/models/m/history", None).await;
    assert_eq!(history, json!([]), "nothing moved");

    let (status, answer) = send(
        &app,
        Method::POST,
        "/api/v1/models/m/aliases/prod-2",
        version,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, history) = send(&app, Method::GET, "/api/v1/models/m/history", None).await;
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
}

#[tokio::test]
async fn a_card_is_served_as_json_markdown_or_a_scriptless_page() {
    use tower::ServiceExt as _;
    let (app, _dir) = router_with(&[("reg.yaml", REGISTERED)]).await;
    let (_, run) = send(
        &app,
        Method::POST,
        "/api/v1/runs",
        Some(json!({ "pipeline": "reg" })),
    )
    .await;
    let id = run["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, card) =
            send(&app, Method::GET, "/api/v1/models/m/versions/1/card", None).await;
        if status == StatusCode::OK && card["verified"] == true {
            assert_eq!(card["card"]["run"]["id"], id.as_str(), "{card}");
            assert_eq!(card["card"]["version"], 1, "{card}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {card}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (format, content_type) in [("md", "text/markdown"), ("html", "text/html")] {
        let request = Request::builder()
            .uri(format!("/api/v1/models/m/versions/1/card?format={format}"))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|t| t.starts_with(content_type)),
            "{headers:?}"
        );
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; style-src 'unsafe-inline'"
        );
    }
    let (status, answer) = send(
        &app,
        Method::GET,
        "/api/v1/models/m/versions/1/card?format=pdf",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = send(&app, Method::GET, "/api/v1/models/m/versions/9/card", None).await;
    assert_eq!(
        (status, answer["error"]["message"].as_str()),
        (
            StatusCode::NOT_FOUND,
            Some("no model version 'm@9' in the registry")
        ),
        "{answer}"
    );
}
