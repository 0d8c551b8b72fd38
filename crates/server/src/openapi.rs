//! The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json`.
//! It is kept by hand in `openapi.json`; the tests below hold it to the
//! routes the router really has, both ways.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub(crate) const DOCUMENT: &str = include_str!("../openapi.json");

pub(crate) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// `(method, path)` of every route the source registers.
    fn routes_in_source() -> BTreeSet<(String, String)> {
        let mut routes = BTreeSet::new();
        for (source, prefix) in [(include_str!("routes.rs"), "/api/v1")] {
            for piece in source.split(".route(\"").skip(1) {
                let Some((path, rest)) = piece.split_once('"') else {
                    continue;
                };
                let call = rest.split(")\n").next().unwrap_or_default();
                // Nested under /api/v1 unless written with the prefix (the
                // hooks, outside the token layer) or open at the root.
                let full =
                    if path.starts_with("/api/v1") || ["/healthz", "/metrics"].contains(&path) {
                        path.to_owned()
                    } else {
                        format!("{prefix}{path}")
                    };
                for method in ["get", "post", "put", "delete", "patch"] {
                    if call.contains(&format!("{method}(")) {
                        routes.insert((method.to_owned(), full.clone()));
                    }
                }
            }
        }
        routes
    }

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let routes = routes_in_source();
        assert!(routes.len() > 10, "the scan found the routes: {routes:?}");
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        let missing: Vec<_> = documented.difference(&routes).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(missing.is_empty(), "documented but not routed: {missing:?}");
    }

    #[test]
    fn every_reference_resolves_and_every_operation_answers_something() {
        let doc = document();
        fn walk(value: &Value, refs: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        refs.push(target.clone());
                    }
                    map.values().for_each(|v| walk(v, refs));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for target in refs {
            let pointer = target.strip_prefix('#').expect("local reference");
            assert!(
                doc.pointer(pointer).is_some(),
                "{target} resolves to nothing"
            );
        }
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                let id = operation["operationId"].as_str().unwrap_or_default();
                assert!(
                    ids.insert(id.to_owned()),
                    "{method} {path}: operationId '{id}' twice or missing"
                );
                assert!(
                    operation["summary"].is_string(),
                    "{method} {path}: no summary"
                );
                assert!(
                    operation["responses"]
                        .as_object()
                        .is_some_and(|r| !r.is_empty()),
                    "{method} {path}: no responses"
                );
                for name in path.split('{').skip(1).filter_map(|p| p.split('}').next()) {
                    let declared = operation["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == name && p["in"] == "path")
                    });
                    assert!(
                        declared,
                        "{method} {path}: path parameter {name} not declared"
                    );
                }
            }
        }
    }
}
