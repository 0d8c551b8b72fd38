//! weir's scheduler loop: the engine decides, the store commits, the
//! executors act, and what they report goes back to the engine.
//!
//! [`drive`] takes one run to its end; `weir run` and `weir resume` call
//! it, and the daemon (`weir serve`) runs many of them and keeps the audit log. Not
//! here: HTTP, formatting for people (the CLI's), the rules of the state
//! machine (the engine's).

mod attempt;
mod audit;
mod clock;
mod config;
mod daemon;
mod drive;
mod load;
mod register;

pub use clock::now;
pub use config::{Docker, Executors, Options};
pub use daemon::{
    CATCHUP_CAP, Daemon, DecideError, Delivered, Loaded, Reload, Scan, TriggerError, load_pipelines,
};
pub use drive::{Change, Control, DriveError, drive, drive_with};
pub use load::Usage;
