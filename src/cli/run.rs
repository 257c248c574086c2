//! `voipcheck run -f checks.yaml`: the checks of a file on their schedule, without a cluster.
//! Exit status: 0 after SIGTERM/SIGINT (or, with `--once`, every probe passed), 1 with `--once`
//! when a probe failed, 2 for a file or option that cannot be used (with `--once` also a check
//! that cannot run: an invalid spec or a missing Secret is bad input, not a failed probe).

use super::LogFormat;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use voipcheck::probe::dns::parse_nameserver;
use voipcheck::schedule;
use voipcheck::standalone::{self, Format, Options};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    voipcheck run -f checks.yaml --metrics-addr 127.0.0.1:9464\n  \
    voipcheck run -f checks.yaml --once --log-format json\n\n\
    Send SIGHUP to re-read the file: new and changed checks start, removed ones stop, and a file \
    that cannot be read keeps the running set.")]
pub struct RunArgs {
    /// A multi-document YAML file of VoipChecks and the Secrets they reference (as for
    /// `kubectl apply -f`; objects without a namespace are in "default").
    #[arg(short = 'f', long = "file")]
    file: PathBuf,

    /// Serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9090.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,

    /// The `location` label of every metric series, to tell several sites apart.
    #[arg(long, default_value = "local", value_parser = parse_location)]
    location: String,

    /// Transitions on stdout and logs on stderr as text lines or as JSON lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Probes in flight at once, across all checks (each holds a socket while it waits for its
    /// answer or timeout). Default: from the open-file limit (raised to its hard limit), less
    /// 256, at most 65536.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_concurrent_probes: Option<u32>,

    /// Run every check once now, print each probe's result and exit (0 all passed, 1 a probe
    /// failed, 2 a check cannot run).
    #[arg(long)]
    once: bool,

    /// Ask this DNS server (ADDR[:PORT], port 53 by default) instead of the system's
    /// configuration (/etc/resolv.conf, /etc/hosts).
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_nameserver)]
    nameserver: Option<SocketAddr>,
}

/// Runs the checks until a signal stops them (or once, with `--once`).
pub async fn run(args: RunArgs) -> ExitCode {
    let format = match args.log_format {
        LogFormat::Text => Format::Text,
        LogFormat::Json => Format::Json,
    };
    let max_concurrent = args.max_concurrent_probes.map_or_else(
        || schedule::probe_budget(schedule::open_files_limit()),
        |n| n as usize,
    );
    let result = if args.once {
        standalone::once(&args.file, format, max_concurrent, args.nameserver)
            .await
            .map(|tally| {
                if tally.not_runnable > 0 {
                    ExitCode::from(2)
                } else if tally.failed_probes > 0 {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            })
    } else {
        let options = Options {
            file: args.file,
            metrics_addr: args.metrics_addr,
            location: args.location,
            format,
            max_concurrent,
            nameserver: args.nameserver,
        };
        standalone::run(options).await.map(|()| ExitCode::SUCCESS)
    };
    result.unwrap_or_else(|error| usage_error(format, &error))
}

/// `voipcheck validate -f FILE`: reads the file as `run` does and plans every check, without
/// probing. Exit status 0 when every check can run, 2 otherwise.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    voipcheck validate -f checks.yaml\n  \
    voipcheck validate -f checks.yaml --log-format json")]
pub struct ValidateArgs {
    /// A multi-document YAML file of VoipChecks and the Secrets they reference, as for `run`.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,

    /// One line per check as text or as JSON.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Checks the file and says, per check, whether it can run.
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let format = match args.log_format {
        LogFormat::Text => Format::Text,
        LogFormat::Json => Format::Json,
    };
    match standalone::validate(&args.file, format) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(error) => usage_error(format, &error),
    }
}

/// Reports a file or option that cannot be used: exit status 2.
fn usage_error(format: Format, error: &dyn std::fmt::Display) -> ExitCode {
    match format {
        Format::Text => eprintln!("voipcheck: {error}"),
        Format::Json => tracing::error!("{error}"),
    }
    ExitCode::from(2)
}

/// A `location` becomes a label value on every series: a short name, not free text.
fn parse_location(value: &str) -> Result<String, String> {
    let valid = (1..=63).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err("use 1 to 63 letters, digits, '-', '_' or '.'".to_owned())
    }
}
