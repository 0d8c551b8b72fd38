//! weir's HTTP API under `/api/v1`, as an axum [`router`] over the
//! daemon: JSON in and out, one error shape, a bearer token on everything
//! but `/healthz`. No business rules here: every request is a call into
//! the daemon or the store.

mod error;
mod extract;
mod hooks;
mod openapi;
mod routes;

pub use error::{ApiError, run_json};
pub use routes::{Actor, State, router, serve};
