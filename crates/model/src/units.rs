//! Durations (`10s`, `1h30m`), sizes (`16Gi`) and CPU counts as written in
//! pipeline files.

use serde::{Serialize, Serializer};
use std::fmt;

/// A duration written as number-unit pairs: `500ms`, `10s`, `5m`, `1h30m`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// A whole number of seconds.
    pub const fn from_secs(secs: u64) -> Duration {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// The standard library's duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// Parses `text`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Duration, DurationError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DurationError::Malformed);
        }
        let mut total = std::time::Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let n_digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if n_digits == 0 {
                return Err(DurationError::Malformed);
            }
            let number: f64 = (rest[..n_digits].parse()).map_err(|_| DurationError::Malformed)?;
            rest = &rest[n_digits..];
            let n_unit = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit_secs = match &rest[..n_unit] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                "" => return Err(DurationError::MissingUnit(number)),
                unit => return Err(DurationError::UnknownUnit(unit.to_owned())),
            };
            rest = &rest[n_unit..];
            total += std::time::Duration::try_from_secs_f64(number * unit_secs)
                .map_err(|_| DurationError::TooLong)?;
        }
        Ok(Duration(total))
    }
}

/// Why a duration does not read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// Not number-unit pairs.
    #[error("expected a number and a unit (ms, s, m, h or d) like 30s, 5m or 1h30m")]
    Malformed,
    /// A number with no unit after it.
    #[error("missing unit after {0} (ms, s, m, h or d)")]
    MissingUnit(f64),
    /// A unit weir does not know.
    #[error("unknown unit '{0}' (ms, s, m, h or d)")]
    UnknownUnit(String),
    /// Past what a duration holds.
    #[error("too long")]
    TooLong,
}

/// Formats in the largest units that divide it: `90s` is `1m30s`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let units = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
            (1, "ms"),
        ];
        let mut rest = ms;
        for (size, unit) in units {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes, written with an optional unit: `512Mi`, `16Gi`, `2G`, `1000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(u64);

impl Size {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `text`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Size, SizeError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| SizeError::Malformed)?;
        let factor: u64 = match unit {
            "" => 1,
            "K" | "k" => 1000,
            "M" => 1000_u64.pow(2),
            "G" => 1000_u64.pow(3),
            "T" => 1000_u64.pow(4),
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(SizeError::Malformed),
        };
        let bytes = number * factor as f64;
        if bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(SizeError::Range);
        }
        Ok(Size(bytes as u64))
    }
}

/// Why a size does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with a known unit.
    #[error(
        "expected a number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like 512Mi or 16Gi"
    )]
    Malformed,
    /// Under one byte, or past what 64 bits count.
    #[error("must be at least 1 byte")]
    Range,
}

/// Formats in the largest binary unit that divides it: `16Gi`, `1500`.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(Duration::parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            Duration::parse("72h").map(|d| d.to_string()),
            Ok("3d".into())
        );
        assert_eq!(Duration::parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            Duration::parse("500ms").map(|d| d.to_string()),
            Ok("500ms".into())
        );
        assert!(Duration::parse("10").is_err_and(|e| e.to_string().contains("missing unit")));
        assert!(Duration::parse("10x").is_err_and(|e| e.to_string().contains("unknown unit 'x'")));
        assert!(Duration::parse("soon").is_err());
        assert!(Duration::parse("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("16Gi").map(Size::bytes), Ok(16 << 30));
        assert_eq!(Size::parse("2G").map(Size::bytes), Ok(2_000_000_000));
        assert_eq!(
            Size::parse("512Mi").map(|s| s.to_string()),
            Ok("512Mi".into())
        );
        assert_eq!(Size::parse("1.5Ki").map(Size::bytes), Ok(1536));
        assert!(Size::parse("16GB").is_err());
        assert!(Size::parse("Gi").is_err());
        assert!(Size::parse("0").is_err());
    }
}
