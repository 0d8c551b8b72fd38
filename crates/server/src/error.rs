//! The one error shape of the API: `{"error": {"code", "message"}}` with
//! the matching status. Internal causes are logged, not sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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

impl ApiError {
    /// 503: the database is away (stopped, locked, out of space); nothing
    /// was changed and the same request may be sent again.
    pub fn unavailable(cause: weir_store::Error) -> ApiError {
        tracing::warn!(error = %cause, "the store is away");
        let why = if cause.is_full() {
            "the database has no space left"
        } else {
            "the database does not answer"
        };
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            format!("{why}; nothing was changed, try again shortly"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = weir_api::Error {
            error: weir_api::ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<weir_store::Error> for ApiError {
    fn from(e: weir_store::Error) -> ApiError {
        match e {
            weir_store::Error::NoSuchRun(id) => ApiError::not_found(format!("no run '{id}'")),
            e @ weir_store::Error::NoSuchModel(_) => ApiError::not_found(e.to_string()),
            e if e.is_unavailable() => ApiError::unavailable(e),
            other => ApiError::internal(other),
        }
    }
}

impl From<weir_daemon::TriggerError> for ApiError {
    fn from(e: weir_daemon::TriggerError) -> ApiError {
        use weir_daemon::TriggerError as T;
        match e {
            T::UnknownPipeline(..) => ApiError::not_found(e.to_string()),
            T::ManualDisabled(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "manual-disabled", e.to_string())
            }
            T::Params(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad-params",
                e.to_string(),
            ),
            T::Retry(_) | T::Stored(_) | T::Folder { .. } => {
                ApiError::new(StatusCode::CONFLICT, "cannot-retry", e.to_string())
            }
            T::Replay(_) => ApiError::new(StatusCode::CONFLICT, "cannot-replay", e.to_string()),
            T::MissingImage { .. } => {
                ApiError::new(StatusCode::CONFLICT, "image-missing", e.to_string())
            }
            T::NoSchedule(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cannot-backfill",
                e.to_string(),
            ),
            T::BadReport(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad-report",
                e.to_string(),
            ),
            T::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                e.to_string(),
            ),
            T::Store(e) => e.into(),
        }
    }
}

impl From<weir_daemon::DeliveryError> for ApiError {
    fn from(e: weir_daemon::DeliveryError) -> ApiError {
        use weir_daemon::DeliveryError as D;
        match e {
            D::UnknownPipeline(_) => ApiError::not_found(e.to_string()),
            D::NoWebhook(_) => ApiError::new(StatusCode::FORBIDDEN, "no-webhook", e.to_string()),
            D::NoSecret(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no-secret", e.to_string())
            }
            D::BadSignature => {
                ApiError::new(StatusCode::UNAUTHORIZED, "bad-signature", e.to_string())
            }
            D::BadPayload(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad-payload", e.to_string())
            }
            D::NoDeliveryId => ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing-delivery-id",
                e.to_string(),
            ),
            D::Refused(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string())
            }
            D::Store(e) => e.into(),
        }
    }
}

impl From<weir_daemon::PromoteError> for ApiError {
    fn from(e: weir_daemon::PromoteError) -> ApiError {
        match e {
            weir_daemon::PromoteError::Name(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad-name", e.to_string())
            }
            weir_daemon::PromoteError::Store(e) => e.into(),
        }
    }
}
