//! weir's HTTP API under `/api/v1`, as an axum [`router`] over the
//! daemon: JSON in and out, one error shape, a bearer token on everything
//! but `/healthz`. No business rules here: every request is a call into
//! the daemon or the store, answered in `weir_api`'s types ([`wire`]);
//! the OpenAPI document is generated from those types and the handlers'
//! `#[utoipa::path]` annotations.

mod error;
mod extract;
mod hooks;
mod openapi;
mod routes;
pub mod wire;

pub use error::ApiError;
pub use openapi::document as openapi_document;
pub use routes::{Actor, State, Tls, router, serve, serve_tls};
