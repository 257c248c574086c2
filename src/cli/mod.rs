//! Subcommands of the `voipcheck` binary. Each turns its arguments into the library's plain
//! configuration types and reports the result; none holds protocol logic.

pub mod operator;
pub mod output;
pub mod probe;
pub mod run;
pub mod values;

/// How log lines (and `voipcheck run`'s transition lines) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}
