//! Cron expressions and time zones of `on.schedule`, checked with croner and
//! chrono-tz. Reads no clock: "never fires" is judged from a fixed instant.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use std::str::FromStr;

/// Parses a cron expression as weir reads it: 5 fields, or 6 with seconds
/// first; no year field.
pub fn parse_cron(text: &str) -> Result<croner::Cron, CronError> {
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    parser.parse(text).map_err(|e| {
        let n_fields = text.split_whitespace().count();
        let reason = if !(5..=6).contains(&n_fields) {
            format!(
                "expected 5 fields (minute hour day month weekday), or 6 with seconds first, found {n_fields}"
            )
        } else {
            let reason = e.to_string();
            let reason = reason
                .trim_start_matches("Invalid pattern: ")
                .trim_start_matches("Component error: ")
                .trim_end_matches('.');
            let mut chars = reason.chars();
            let reason: String = match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::new(),
            };
            format!("{reason} (fields: minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-7)")
        };
        CronError::Invalid {
            text: text.to_owned(),
            reason,
        }
    })
}

/// Why a cron expression is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// It does not parse.
    #[error("invalid cron '{text}': {reason}")]
    Invalid {
        /// The expression.
        text: String,
        /// What is wrong, with the fields' ranges.
        reason: String,
    },
    /// It parses but matches no date (`0 0 31 2 *`).
    #[error("cron '{text}' never fires: no date matches it (check day and month)")]
    NeverFires {
        /// The expression.
        text: String,
    },
}

/// An unknown time zone name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone '{text}': use an IANA name like Europe/Berlin or UTC{hint}")]
pub struct TimezoneError {
    /// The name given.
    pub text: String,
    /// ` (did you mean …?)`, or nothing.
    hint: String,
}

/// Checks that `text` parses and fires at least once; returns it parsed.
pub(crate) fn check_cron(text: &str) -> Result<croner::Cron, CronError> {
    let cron = parse_cron(text)?;
    // Any real schedule fires within a few years of any instant; croner
    // gives up on patterns like "0 0 31 2 *" that match no date.
    let origin = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    let fires = origin.is_some_and(|origin| cron.iter_after(origin).next().is_some());
    if fires {
        Ok(cron)
    } else {
        Err(CronError::NeverFires {
            text: text.to_owned(),
        })
    }
}

/// Looks up an IANA time zone, suggesting the nearest name on a typo.
pub(crate) fn timezone(text: &str) -> Result<Tz, TimezoneError> {
    Tz::from_str(text).map_err(|_| TimezoneError {
        text: text.to_owned(),
        hint: crate::diag::did_you_mean(text, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crons() {
        assert!(check_cron("0 3 * * *").is_ok());
        assert!(check_cron("*/15 * * * *").is_ok());
        assert!(check_cron("30 0 3 * * *").is_ok());
        assert!(check_cron("0 0 31 2 *").is_err_and(|e| e.to_string().contains("never fires")));
        assert!(
            check_cron("61 * * * *")
                .is_err_and(|e| e.to_string().starts_with("invalid cron '61 * * * *'"))
        );
        assert!(check_cron("* * *").is_err());
        assert!(check_cron("0 0 1 1 * 2030").is_err());
    }

    #[test]
    fn timezones() {
        assert_eq!(timezone("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        let err = timezone("Europe/Berln").expect_err("typo");
        assert!(
            err.to_string().ends_with("(did you mean 'Europe/Berlin'?)"),
            "{err}"
        );
    }
}
