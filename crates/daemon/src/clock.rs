//! The daemon's one clock: every time the engine decides with and the store
//! keeps comes from [`now`].

use chrono::{DurationRound, Utc};
use weir_engine::Time;

/// The current time, at the microsecond: PostgreSQL keeps no more, and a
/// run read back must equal the run in memory.
pub fn now() -> Time {
    let now = Utc::now();
    now.duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or(now)
}
