//! Cron slots: which slots of a schedule to fire at `now`, given the last
//! instant already considered (`mark`), and what `catchup` says of the
//! slots missed while weir was down. Pure: time is an argument.

use crate::run::Time;
use chrono::{DateTime, Duration};
use chrono_tz::Tz;
use weir_model::pipeline::Catchup;

/// What to fire now, and the new mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    /// Slots to fire, oldest first.
    pub fire: Vec<Time>,
    /// Everything up to here has been considered; store it.
    pub mark: Time,
}

/// How late a slot may be found and still count as on time rather than
/// missed: the scheduler's tick and a little slack.
pub const ON_TIME: Duration = Duration::seconds(60);

/// The slots of `cron` (read in `tz`) after `mark` and up to `now`. Slots
/// found within [`ON_TIME`] of now fire; older ones were missed while weir
/// was down: `none` fires none of them, `latest` the latest (unless a slot
/// is on time anyway), `all` every one, the newest `cap` at most.
pub fn due(
    cron: &croner::Cron,
    tz: Tz,
    catchup: Catchup,
    mark: Time,
    now: Time,
    cap: usize,
) -> Slots {
    if now <= mark {
        return Slots {
            fire: Vec::new(),
            mark,
        };
    }
    // Walk back from now, so a per-second schedule after a month down
    // costs `cap` steps, not millions.
    let local_now: DateTime<Tz> = now.with_timezone(&tz);
    let mut newest_first: Vec<Time> = Vec::new();
    // Enough to fill `cap` missed slots besides one on time.
    let limit = cap.max(1) + 2;
    // croner's iterator excludes its start; `now` itself may be a slot.
    if cron.is_time_matching(&local_now).unwrap_or(false) {
        newest_first.push(now);
    }
    for slot in cron.iter_before(local_now) {
        let slot = slot.with_timezone(&chrono::Utc);
        if slot <= mark || newest_first.len() >= limit {
            break;
        }
        newest_first.push(slot);
    }
    let (on_time, missed): (Vec<Time>, Vec<Time>) =
        newest_first.into_iter().partition(|s| now - *s < ON_TIME);
    let mut fire: Vec<Time> = on_time;
    match catchup {
        Catchup::None => {}
        Catchup::Latest if fire.is_empty() => fire.extend(missed.first().copied()),
        Catchup::Latest => {}
        Catchup::All => fire.extend(missed.into_iter().take(cap)),
    }
    fire.sort();
    fire.dedup();
    Slots { fire, mark: now }
}

/// Every slot of `cron` (read in `tz`) in `[from, to]`, oldest first, at
/// most `cap` of them: what a backfill runs.
pub fn between(cron: &croner::Cron, tz: Tz, from: Time, to: Time, cap: usize) -> Vec<Time> {
    let mut slots = Vec::new();
    let start = from.with_timezone(&tz);
    if cron.is_time_matching(&start).unwrap_or(false) {
        slots.push(from);
    }
    for slot in cron.iter_after(start) {
        let slot = slot.with_timezone(&chrono::Utc);
        if slot > to || slots.len() >= cap {
            break;
        }
        slots.push(slot);
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn t(h: u32, m: u32, s: u32) -> Time {
        Utc.with_ymd_and_hms(2026, 1, 10, h, m, s)
            .single()
            .expect("valid")
    }

    fn cron(text: &str) -> croner::Cron {
        weir_model::parse_cron(text).expect("valid cron")
    }

    #[test]
    fn a_slot_just_passed_fires_once() {
        let c = cron("*/5 * * * *");
        let first = due(&c, Tz::UTC, Catchup::None, t(9, 59, 58), t(10, 0, 1), 100);
        assert_eq!(first.fire, [t(10, 0, 0)]);
        let again = due(&c, Tz::UTC, Catchup::None, first.mark, t(10, 0, 2), 100);
        assert!(again.fire.is_empty(), "a considered slot never fires twice");
    }

    #[test]
    fn missed_slots_follow_catchup() {
        let c = cron("0 * * * *");
        let (mark, now) = (t(3, 30, 0), t(7, 30, 0));
        assert!(
            due(&c, Tz::UTC, Catchup::None, mark, now, 100)
                .fire
                .is_empty()
        );
        assert_eq!(
            due(&c, Tz::UTC, Catchup::Latest, mark, now, 100).fire,
            [t(7, 0, 0)]
        );
        assert_eq!(
            due(&c, Tz::UTC, Catchup::All, mark, now, 100).fire,
            [t(4, 0, 0), t(5, 0, 0), t(6, 0, 0), t(7, 0, 0)]
        );
        assert_eq!(
            due(&c, Tz::UTC, Catchup::All, mark, now, 2).fire,
            [t(6, 0, 0), t(7, 0, 0)],
            "the newest, capped"
        );
    }

    #[test]
    fn an_on_time_slot_fires_even_after_downtime_and_latest_adds_nothing() {
        let c = cron("*/30 * * * *");
        let slots = due(&c, Tz::UTC, Catchup::Latest, t(1, 0, 0), t(3, 0, 10), 100);
        assert_eq!(slots.fire, [t(3, 0, 0)]);
    }

    #[test]
    fn slots_are_read_in_their_time_zone() {
        // 03:00 in Berlin is 02:00 UTC in January.
        let c = cron("0 3 * * *");
        let slots = due(
            &c,
            Tz::Europe__Berlin,
            Catchup::None,
            t(1, 59, 0),
            t(2, 0, 5),
            100,
        );
        assert_eq!(slots.fire, [t(2, 0, 0)]);
    }

    #[test]
    fn backfill_slots_are_the_range_inclusive() {
        let c = cron("*/2 * * * *");
        assert_eq!(
            between(&c, Tz::UTC, t(10, 0, 0), t(10, 6, 0), 100),
            [t(10, 0, 0), t(10, 2, 0), t(10, 4, 0), t(10, 6, 0)]
        );
        assert_eq!(between(&c, Tz::UTC, t(10, 0, 0), t(10, 6, 0), 2).len(), 2);
    }
}
