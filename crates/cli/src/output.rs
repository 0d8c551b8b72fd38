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
