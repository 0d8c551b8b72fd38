//! `POST /api/v1/hooks/{pipeline}` through the router: the headers weir
//! and GitHub send, each refusal's status, the body limit, and what
//! `/metrics` counts afterwards. The decisions themselves are the
//! daemon's, tested in its own suite.

use super::{answer, router_with, sign};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;

const HOOKED: &str = "name: hooked
on:
  webhook: { secret_env: PATH }
defaults: { executor: process }
steps:
  a: { run: 'true' }
";

const MANUAL: &str = "name: manual
defaults: { executor: process }
steps:
  a: { run: 'true' }
";

fn hook(pipeline: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/hooks/{pipeline}"))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body)).expect("request")
}

#[tokio::test]
async fn deliveries_are_answered_by_status_and_counted_in_metrics() {
    let (app, _dir) = router_with(&[("hooked.yaml", HOOKED), ("manual.yaml", MANUAL)]).await;
    let payload = br#"{"ref": "refs/heads/main"}"#.to_vec();
    let secret = std::env::var("PATH").expect("PATH");
    let signature = sign(&payload, &secret);
    let github = [
        ("X-Hub-Signature-256", signature.as_str()),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ];
    let (status, body) = answer(&app, hook("hooked", payload.clone(), &github)).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let delivered: Value = serde_json::from_slice(&body).expect("JSON");
    let run = delivered["run"].as_str().expect("a run").to_owned();
    let (status, body) = answer(&app, hook("hooked", payload.clone(), &github)).await;
    let replay: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        (status, &replay["run"], &replay["replay"]),
        (
            StatusCode::OK,
            &Value::from(run.as_str()),
            &Value::Bool(true)
        )
    );

    let wrong = sign(&payload, "wrong");
    let refusals = [
        (
            hook(
                "hooked",
                payload.clone(),
                &[("X-Weir-Signature-256", &wrong), ("X-Weir-Delivery", "2")],
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            hook("hooked", payload.clone(), &[]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            hook("manual", payload.clone(), &github),
            StatusCode::FORBIDDEN,
        ),
        (
            hook("nope", payload.clone(), &github),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (request, expected) in refusals {
        let what = request.uri().to_string();
        let (status, body) = answer(&app, request).await;
        assert_eq!(
            status,
            expected,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        let error: Value = serde_json::from_slice(&body).expect("the error shape");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    let big = vec![b' '; 1024 * 1024 + 1];
    let signature = sign(&big, &secret);
    let (status, _) = answer(
        &app,
        hook("hooked", big, &[("X-Weir-Signature-256", &signature)]),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Once the run ended: one run, one triggered and two rejected deliveries.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let request = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .expect("request");
        let (_, body) = answer(&app, request).await;
        let text = String::from_utf8(body).expect("text");
        if text
            .lines()
            .any(|l| l == "weir_runs{state=\"succeeded\"} 1")
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{run} never ended:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for line in [
        "weir_events_total{kind=\"webhook\",outcome=\"rejected\"} 2",
        "weir_events_total{kind=\"webhook\",outcome=\"triggered\"} 1",
        "weir_attempts_running 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}
