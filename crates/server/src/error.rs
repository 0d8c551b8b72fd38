//! The one error shape of the API: `{"error": {"code", "message"}}` with
//! the matching status. Internal causes are logged, not sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error: what went wrong and what to do, with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status, stable code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// 500: the cause is logged; the client is told to look at the daemon's log.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the daemon failed to answer; its log says why",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<weir_store::Error> for ApiError {
    fn from(e: weir_store::Error) -> ApiError {
        match e {
            weir_store::Error::NoSuchRun(id) => ApiError::not_found(format!("no run '{id}'")),
            e @ weir_store::Error::NoSuchModel(_) => ApiError::not_found(e.to_string()),
            other => ApiError::internal(other),
        }
    }
}
