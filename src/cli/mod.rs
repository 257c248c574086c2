//! Subcommands of the `voipcheck` binary. Each turns its arguments into the library's plain
//! configuration types and reports the result; none holds protocol logic.

pub mod operator;
pub mod output;
pub mod probe;
