//! `voipcheck run -f checks.yaml`: the operator's engine (plan, scheduler, verdicts, metrics)
//! driven by a file instead of a cluster, e.g. on a small box inside a customer network.
//!
//! The file is read as a whole: a document that is not a well-formed VoipCheck or Secret
//! rejects it (at start: exit status 2; on reload: the running set stays). A well-formed
//! VoipCheck that cannot run (it fails validation, a Secret or key is missing) is reported on
//! stderr and runs as in the operator: `Ready=False` with `InvalidSpec` or `CredentialsMissing`,
//! printed as a transition, while the file's other checks run. SIGHUP re-reads the file;
//! SIGTERM and SIGINT let the runs in flight finish and exit.
//!
//! Targets follow the operator's default allow-list (no `--allow-target`): everything except
//! link-local and cloud metadata addresses, in the spec and after name resolution alike.

mod manifests;
mod print;

pub use manifests::{
    DEFAULT_NAMESPACE, FileCheck, LoadError, Manifests, Place, Skipped, load, parse,
};
pub use print::Format;

use crate::check::{self, AllowList, CheckId, Plan, PlanError, StaticSecrets};
use crate::metrics::{self, Health, Metrics};
use crate::probe::ConfigError;
use crate::probe::dns::Dns;
use crate::schedule::{CheckEntry, Outbox, Scheduler};
use crate::verdict;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; none when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// The `location` label of every series.
    pub location: String,
    pub format: Format,
    /// Check runs in flight at most.
    pub max_concurrent: usize,
    /// `--nameserver`: the DNS server to ask instead of the system's configuration.
    pub nameserver: Option<SocketAddr>,
}

/// Why `voipcheck run` cannot start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("metrics endpoint {addr}: {message}")]
    Serve { addr: SocketAddr, message: String },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the file's checks until SIGTERM or SIGINT.
pub async fn run(options: Options) -> Result<(), RunError> {
    let manifests = read(&options.file)?;
    let mut signals = Signals::install().map_err(RunError::Signals)?;
    let allow = AllowList::default();
    let dns = resolver(&allow, options.nameserver)?;
    // Bound before anything runs, so a port in use is an error at start, not later.
    let listener = match options.metrics_addr {
        Some(addr) => Some((addr, bind(addr).await?)),
        None => None,
    };
    // No other location and no aggregator: this process's verdict is each check's verdict
    // across locations (the status_* series the pages read).
    let metrics = Metrics::alone(&options.location);
    // No Lease: this process alone probes the file's checks, as a shard holder does, and says
    // so (VoipCheckShardsUnheld watches `voipcheck_leader` per location).
    metrics.set_leader(true);
    let health = Health::default();
    let outbox = Arc::new(Outbox::new());
    let printer = tokio::spawn(print_transitions(outbox.clone(), options.format));
    let scheduler = Scheduler::new(dns, metrics.clone(), options.max_concurrent, outbox.clone());
    let mut running = apply(&scheduler, &manifests, &allow, &BTreeSet::new());
    tracing::info!(
        file = %options.file.display(),
        checks = running.len(),
        "running the checks of the file"
    );

    let (stop_server, server_stop) = oneshot::channel::<()>();
    let mut server = listener.map(|(addr, listener)| {
        let serve = metrics::serve_on(listener, metrics.clone(), health.clone(), async {
            let _ = server_stop.await;
        });
        (addr, tokio::spawn(serve))
    });
    health.set_ready(true);

    let result = loop {
        tokio::select! {
            _ = signals.hangup.recv() => {
                running = reload(&scheduler, &options.file, &allow, &running);
            }
            _ = signals.terminate.recv() => break Ok(()),
            _ = signals.interrupt.recv() => break Ok(()),
            error = server_failed(&mut server) => break Err(error),
        }
    };
    tracing::info!("stopping: waiting for the runs in flight");
    health.set_ready(false);
    scheduler.shutdown().await;
    outbox.close();
    let _ = printer.await;
    let _ = stop_server.send(());
    if let Some((_, handle)) = server {
        let _ = handle.await;
    }
    result
}

/// What `--once` saw: how many checks could not run (an invalid spec, a missing Secret: bad
/// input) and how many probes failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub not_runnable: usize,
    pub failed_probes: usize,
}

/// Runs every check of the file once, now, and prints each probe's result.
pub async fn once(
    file: &Path,
    format: Format,
    max_concurrent: usize,
    nameserver: Option<SocketAddr>,
) -> Result<Tally, RunError> {
    let manifests = read(file)?;
    let allow = AllowList::default();
    let dns = resolver(&allow, nameserver)?;
    let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut runs = JoinSet::new();
    let mut tally = Tally::default();
    for (index, file_check) in manifests.checks.iter().enumerate() {
        let plan = match plan(file_check, &manifests.secrets, &allow) {
            Ok(plan) => plan,
            Err(error) => {
                tally.not_runnable += 1;
                write_line(&print::not_runnable(format, &file_check.id, &error));
                continue;
            }
        };
        let (dns, permits) = (dns.clone(), Arc::clone(&permits));
        runs.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (index, check::run_with_nat_binding(&dns, &plan).await)
        });
    }
    let mut reports = Vec::new();
    while let Some(joined) = runs.join_next().await {
        match joined {
            Ok(report) => reports.push(report),
            Err(error) => {
                tracing::error!("a check's run ended abnormally: {error}");
                tally.failed_probes += 1;
            }
        }
    }
    reports.sort_by_key(|(index, _)| *index);
    for (index, report) in reports {
        let id = &manifests.checks[index].id;
        let readings = report.probes.iter().map(|run| (run, verdict::read(run)));
        let control = report
            .control
            .iter()
            .map(|run| (run, verdict::read_control(run)));
        for (run, reading) in readings.chain(control) {
            tally.failed_probes += usize::from(!reading.passed);
            write_line(&print::probe(format, id, run, &reading));
        }
    }
    Ok(tally)
}

/// Checks the file as `run` would read it, without probing: prints one line per check (valid,
/// with its probes, or why it cannot run) and returns whether every check can run.
pub fn validate(file: &Path, format: Format) -> Result<bool, LoadError> {
    let manifests = read(file)?;
    let allow = AllowList::default();
    let mut all_valid = true;
    for file_check in &manifests.checks {
        match check::plan(
            &file_check.id,
            &file_check.check.spec,
            &manifests.secrets,
            &allow,
        ) {
            Ok(plan) => write_line(&print::valid(format, &file_check.id, &plan)),
            Err(error) => {
                all_valid = false;
                write_line(&print::not_runnable(format, &file_check.id, &error));
            }
        }
    }
    Ok(all_valid)
}

/// Loads the file and warns about each object it skips.
fn read(file: &Path) -> Result<Manifests, LoadError> {
    let manifests = load(file)?;
    for skipped in &manifests.skipped {
        tracing::warn!("{skipped}");
    }
    Ok(manifests)
}

/// The system's resolver, handing out only addresses `allow` accepts.
fn resolver(allow: &AllowList, nameserver: Option<SocketAddr>) -> Result<Dns, ConfigError> {
    let allow = allow.clone();
    Ok(Dns::new(nameserver)?.restricted(move |name, ip| allow.allows(name, ip)))
}

/// The plan of one check of the file; an error is logged with the check's place.
fn plan(
    file_check: &FileCheck,
    secrets: &StaticSecrets,
    allow: &AllowList,
) -> Result<Plan, PlanError> {
    let plan = check::plan(&file_check.id, &file_check.check.spec, secrets, allow);
    if let Err(error) = &plan {
        tracing::warn!(
            check = %file_check.id,
            "{}: {error}; this check reports Ready=False and does not run",
            file_check.place
        );
    }
    plan
}

/// Hands the file's checks to the scheduler and removes those of `running` no longer in it.
/// Returns the checks now running.
fn apply(
    scheduler: &Scheduler,
    manifests: &Manifests,
    allow: &AllowList,
    running: &BTreeSet<CheckId>,
) -> BTreeSet<CheckId> {
    let mut ids = BTreeSet::new();
    for file_check in &manifests.checks {
        scheduler.upsert(CheckEntry {
            id: file_check.id.clone(),
            uid: None,
            generation: None,
            spec: Some(Arc::new(file_check.check.spec.clone())),
            plan: plan(file_check, &manifests.secrets, allow),
            previous: None,
        });
        ids.insert(file_check.id.clone());
    }
    for gone in running.difference(&ids) {
        tracing::info!(check = %gone, "no longer in the file: stopped");
        scheduler.remove(gone);
    }
    ids
}

/// Re-reads the file after SIGHUP; a file that cannot be read keeps the running checks.
fn reload(
    scheduler: &Scheduler,
    file: &Path,
    allow: &AllowList,
    running: &BTreeSet<CheckId>,
) -> BTreeSet<CheckId> {
    match read(file) {
        Ok(manifests) => {
            let ids = apply(scheduler, &manifests, allow, running);
            tracing::info!(file = %file.display(), checks = ids.len(), "reloaded");
            ids
        }
        Err(error) => {
            tracing::error!("reload failed, the running checks stay as they were: {error}");
            running.clone()
        }
    }
}

/// Prints the transitions of each status until the outbox is closed.
async fn print_transitions(outbox: Arc<Outbox>, format: Format) {
    while let Some(updates) = outbox.take().await {
        let now = SystemTime::now();
        for update in updates {
            for transition in &update.transitions {
                write_line(&print::transition(format, &update.id, transition, now));
            }
        }
    }
}

/// Writes a line to stdout. A closed stdout (`voipcheck run | head`) must not stop the checks
/// and their metrics, so write errors are ignored.
fn write_line(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| RunError::Serve {
            addr,
            message: error.to_string(),
        })
}

/// Resolves when the metrics server has stopped by itself (it only does on an error); never
/// without a server.
async fn server_failed(
    server: &mut Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
) -> RunError {
    let Some((addr, handle)) = server else {
        return std::future::pending().await;
    };
    let message = match handle.await {
        Ok(Ok(())) => "stopped unexpectedly".to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    RunError::Serve {
        addr: *addr,
        message,
    }
}

/// The signals `voipcheck run` acts on.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }
}
