//! The `--output` flag shared by the subcommands that print results.

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Output {
    /// Lines for people.
    #[default]
    Table,
    /// One JSON document, for scripts, editors and CI.
    Json,
}

/// A time as the API writes it (RFC 3339, UTC, `Z`, with as many digits
/// of the second as it has).
pub(crate) fn time(time: &chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
