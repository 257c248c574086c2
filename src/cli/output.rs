//! Printing a probe outcome: an aligned table for people, JSON for scripts.

use serde::Serialize;
use std::process::ExitCode;
use voipcheck::probe::Outcome;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned `fact  value` lines, the verdict first.
    Table,
    /// One JSON object: `{"probe", "success", "failure", "outcome"}`.
    Json,
}

#[derive(Serialize)]
struct JsonReport<'a, O: Serialize> {
    probe: &'a str,
    success: bool,
    /// The failure in words, as the table shows it; the class is in `outcome.failure`.
    message: Option<String>,
    outcome: &'a O,
}

/// Prints `outcome` and returns the exit status: 0 success, 1 probe failed.
pub fn print_outcome<O: Outcome>(probe: &str, outcome: &O, format: OutputFormat) -> ExitCode {
    let failure = outcome.failure();
    match format {
        OutputFormat::Table => print!("{}", table(probe, outcome)),
        OutputFormat::Json => {
            let report = JsonReport {
                probe,
                success: failure.is_none(),
                message: failure.map(ToString::to_string),
                outcome,
            };
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("voipcheck: cannot encode the result as JSON: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    if failure.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn table<O: Outcome>(probe: &str, outcome: &O) -> String {
    let verdict = match outcome.failure() {
        None => "OK".to_owned(),
        Some(failure) => format!("FAILED {}: {failure}", failure.class()),
    };
    let mut rows = vec![("probe", probe.to_owned()), ("result", verdict)];
    rows.extend(outcome.facts());
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}
