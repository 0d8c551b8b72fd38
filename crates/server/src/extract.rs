//! The extractors every handler takes its input through: [`ApiJson`],
//! [`ApiQuery`] and [`ApiPath`] are axum's `Json`, `Query` and `Path` whose
//! rejections (bad JSON, a wrong content type, a bad query value, a path
//! parameter of the wrong type) answer in the API's one error shape, with
//! what to send instead.

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A request body type, with the example a refusal shows.
pub(crate) trait Body: DeserializeOwned + Serialize {
    /// What to send, as JSON-ish text: `{"pipeline": NAME, …}`.
    const EXAMPLE: &'static str;
}

/// A body that may be `null`, which says what no body says.
impl<T: Body> Body for Option<T> {
    const EXAMPLE: &'static str = T::EXAMPLE;
}

/// A query type, with the example a refusal shows.
pub(crate) trait Params: DeserializeOwned + Serialize {
    /// What to ask, as a query string: `?limit=N`.
    const EXAMPLE: &'static str;
}

/// A JSON body, refused in the API's error shape.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: Body> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => {
                refuse_nul(&value, "bad-request", "the body")?;
                Ok(ApiJson(value))
            }
            Err(e) => Err(json_rejection(&e, T::EXAMPLE)),
        }
    }
}

/// An optional JSON body: none when the request says no content type, or
/// when the body is JSON's `null`.
pub(crate) struct MaybeJson<T>(pub(crate) Option<T>);

impl<S: Send + Sync, T: Body> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // As axum's `Option<Json<T>>`: no content type, no body.
        let empty = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_none();
        if empty {
            return Ok(MaybeJson(None));
        }
        let ApiJson(value) = ApiJson::<Option<T>>::from_request(request, state).await?;
        Ok(MaybeJson(value))
    }
}

fn json_rejection(e: &JsonRejection, example: &str) -> ApiError {
    let (status, code) = match e {
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
        }
        _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too-large")
        }
        _ => (StatusCode::BAD_REQUEST, "bad-request"),
    };
    ApiError::new(status, code, format!("{}: send {example}", e.body_text()))
}

/// A query string, refused in the API's error shape.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: Params> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => {
                refuse_nul(&value, "bad-query", "the query")?;
                Ok(ApiQuery(value))
            }
            Err(e) => Err(query_rejection(&e, T::EXAMPLE)),
        }
    }
}

fn query_rejection(e: &QueryRejection, example: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad-query",
        format!("{}: use {example}", e.body_text()),
    )
}

/// Path parameters, refused in the API's error shape.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Serialize + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => {
                refuse_nul(&value, "bad-path", "the path")?;
                Ok(ApiPath(value))
            }
            Err(e) => Err(path_rejection(&e)),
        }
    }
}

fn path_rejection(e: &PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad-path",
        format!(
            "{}: a version is a whole number, names are text",
            e.body_text()
        ),
    )
}

/// Refuses a value with a NUL character in any string or key: no name or
/// text weir keeps may hold one (PostgreSQL's text cannot, an environment
/// variable cannot). The request has its documented shape, so this is a
/// 422, not a failure of the store.
fn refuse_nul(value: &impl Serialize, code: &'static str, what: &str) -> Result<(), ApiError> {
    fn holds(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(holds),
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(key, value)| key.contains('\0') || holds(value)),
            _ => false,
        }
    }
    match serde_json::to_value(value) {
        Ok(json) if holds(&json) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            format!(
                "{what} holds a NUL character (\\u0000), which no weir name or value may: remove it"
            ),
        )),
        _ => Ok(()),
    }
}
