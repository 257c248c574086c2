//! The `voipcheck` command line: parses arguments, builds a configuration and runs one mode.

mod cli;

use clap::{Parser, Subcommand};
use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

/// jemalloc rather than glibc's malloc: the operator holds many small strings (object names,
/// condition reasons, messages) for tens of thousands of checks, allocated and freed on every
/// run across threads. At 30,000 checks over 3 replicas (`cargo bench --bench replicas`) it
/// took each replica's resident set from 434–441 to 397–400 MiB and the p99 schedule lag from
/// 20–27 to 9 ms (DESIGN.md §7).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Synthetic checks for telephony services: SIP registration and qualify, STUN, web reachability.
///
/// Exit status: 0 the probe succeeded, 1 the probe ran and failed, 2 usage or configuration error.
#[derive(Parser)]
#[command(name = "voipcheck", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one probe now and print what it saw (the tool for a call with a customer).
    Probe(Box<cli::probe::ProbeArgs>),
    /// Run the VoipChecks of a file on their schedule, without a cluster: condition transitions on
    /// stdout, metrics on --metrics-addr.
    Run(Box<cli::run::RunArgs>),
    /// Check a file of VoipChecks and Secrets as `run` reads it (strict: unknown fields are
    /// errors), without probing: one line per check, exit 0 when all can run, 2 otherwise.
    Validate(cli::run::ValidateArgs),
    /// Print the VoipCheck CustomResourceDefinition (YAML), e.g. `voipcheck crd | kubectl apply -f -`.
    Crd,
    /// Run the in-cluster controller: watch VoipChecks, probe on schedule, write status and
    /// Events, serve /metrics, /healthz and /readyz.
    Operator(Box<cli::operator::OperatorArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(args) => init_logging("info", args.log_format == cli::LogFormat::Json),
        Command::Operator(args) => init_logging("info", args.log_format == cli::LogFormat::Json),
        Command::Validate(args) => init_logging("warn", args.log_format == cli::LogFormat::Json),
        _ => init_logging("warn", false),
    }
    match cli.command {
        Command::Probe(args) => block_on(cli::probe::run(*args)),
        Command::Run(args) => block_on(cli::run::run(*args)),
        Command::Validate(args) => cli::run::validate(&args),
        Command::Crd => {
            print!("{}", voipcheck::api::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Operator(args) => cli::operator::run(*args),
    }
}

/// Logs go to stderr at `default_level` unless RUST_LOG says otherwise; stdout is for results.
fn init_logging(default_level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Runs an async mode on a single-threaded runtime: one probe needs no more, and `run` is sized
/// for one core (DESIGN.md §7).
fn block_on(mode: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(mode),
        Err(e) => {
            eprintln!("voipcheck: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}
