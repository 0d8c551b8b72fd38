//! weir's scheduler loop: the engine decides, the store commits, the
//! executors act, and what they report goes back to the engine.
//!
//! [`drive`] takes one run to its end; `weir run` and `weir resume` call
//! it, and the daemon (`weir serve`) runs many of them and keeps the audit log. Not
//! here: HTTP, formatting for people (the CLI's), the rules of the state
//! machine (the engine's).

mod approvals;
mod attempt;
mod audit;
pub mod card;
mod catalog;
mod clock;
mod config;
mod drive;
mod gc;
mod intake;
mod load;
mod logs;
pub mod metrics;
mod mlflow;
mod register;
mod registry;
mod replay;
mod runs;
mod schedules;
mod tasks;

pub use approvals::DecideError;
pub use audit::{ExportError, Verified, verify_export};
pub use card::{Card, CardError};
pub use catalog::{Loaded, Reload, Scan, Scanned, StoredError, load_pipelines, scan, stored};
pub use clock::now;
pub use config::{Config, ConfigError, Docker, Executors, Options};
pub use drive::{Change, Control, DriveError, drive, drive_with};
pub use gc::{Collected, GcError, MIN_RETENTION};
pub use intake::{Delivery, DeliveryError, DriftReport, Measured, signed};
pub use load::Usage;
pub use logs::{LogError, LogPiece};
pub use mlflow::MlflowTarget;
pub use registry::{Lineage, LineageStep, PromoteError};
pub use runs::{Busy, Daemon, Notice, StartRun, Started, TriggerError};
pub use schedules::CATCHUP_CAP;
// The engine's values the daemon hands out, so that its users name them
// through the daemon.
pub use weir_engine::{Cause, Run};
// The main loop of the process that starts process steps so they outlive
// weir: the binary runs it as `weir supervise`.
pub use weir_executor::supervise;
