//! Printing a probe outcome: an aligned table for people, JSON for scripts.
//!
//! Both say what the check's condition would show for this run (condition, reason) and, on
//! failure, whose problem it is, since that is what a person on the phone with a customer or
//! the provider's hotline needs to know first.

use serde::Serialize;
use std::process::ExitCode;
use voipcheck::probe::Outcome;
use voipcheck::verdict::{Blame, Reading};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned `fact  value` lines, the verdict first.
    Table,
    /// One JSON object: `{"probe", "success", "message", "condition", "reason", "blame",
    /// "outcome"}`.
    Json,
}

#[derive(Serialize)]
struct JsonReport<'a, O: Serialize> {
    probe: &'a str,
    success: bool,
    /// The failure in words, as the table shows it; the class is in `outcome.failure`.
    message: Option<String>,
    /// The condition this probe feeds in a VoipCheck, and the reason it would show.
    condition: Option<&'static str>,
    reason: &'static str,
    /// Whose problem a failure is: `Provider`, `Configuration` or `Local`.
    blame: Option<Blame>,
    outcome: &'a O,
}

/// Prints `outcome` with its `reading` and returns the exit status: 0 success, 1 the probe
/// failed or its condition would not be met (e.g. STUN answered with a private address only).
pub fn print_outcome<O: Outcome>(
    probe: &str,
    outcome: &O,
    reading: &Reading,
    format: OutputFormat,
) -> ExitCode {
    let failed = !reading.passed;
    match format {
        OutputFormat::Table => print!("{}", table(probe, outcome, reading)),
        OutputFormat::Json => {
            let message = failed.then(|| match outcome.failure() {
                Some(failure) => failure.to_string(),
                None => reading.message.clone(),
            });
            let report = JsonReport {
                probe,
                success: !failed,
                message,
                condition: reading.condition.map(|c| c.as_str()),
                reason: reading.reason.as_str(),
                blame: reading.blame,
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
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn table<O: Outcome>(probe: &str, outcome: &O, reading: &Reading) -> String {
    let verdict = match (reading.passed, outcome.failure()) {
        (true, _) => "OK".to_owned(),
        (false, Some(failure)) => format!("FAILED {}: {failure}", failure.class()),
        (false, None) => format!("FAILED {}: {}", reading.reason.as_str(), reading.message),
    };
    let status = if reading.blame.is_some() {
        "False"
    } else {
        "True"
    };
    let mut rows = vec![
        ("probe", probe.to_owned()),
        ("result", verdict),
        (
            "condition",
            format!(
                "{}={status} reason {}",
                reading.condition.map_or("-", |c| c.as_str()),
                reading.reason.as_str()
            ),
        ),
    ];
    if let Some(blame) = reading.blame {
        rows.push(("whose", blame.explain().to_owned()));
    }
    rows.extend(outcome.facts());
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}
