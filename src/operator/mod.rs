//! `voipcheck operator`: the in-cluster controller (DESIGN.md §1, §2). The edge of the system:
//! watches, the status writer, Events and the Leases live here; what a probe result means is
//! decided in `verdict`/`status`, when checks run in `schedule`.
//!
//! How one VoipCheck flows through it:
//! 1. [`controller`] watches the VoipChecks of the shards held (by the shard label
//!    [`labels`] sets) and Secret metadata, and reconciles each check:
//!    [`secrets`] reads the Secrets it references, `check::plan` builds the plan (or names why
//!    it cannot run), and the [`engine::Engine`] receives the entry.
//! 2. On the replica holding the check's shard ([`shards`], each shard a Lease held as
//!    [`leader`] says) the engine runs it in the scheduler, which probes and leaves the check's
//!    next status in the outbox (newest per check; it never waits).
//! 3. While the shard is held, the [`writer::StatusWriter`] applies that status as the location's entry of
//!    `status.locations` (server-side apply on the status subresource, field manager
//!    `voipcheck/<location>`); on the aggregating instance the [`aggregate::Aggregator`] weighs
//!    all locations' entries into the top level, which a second writer applies (`voipcheck`).
//!    Events: one per condition transition of the top level (of the entry on an instance that
//!    does not aggregate).
//!
//! The choices that matter are in each module's header: Secrets read on demand rather than
//! cached ([`secrets`]), one controller per namespace and deletion without a finalizer
//! ([`controller`]), the Lease timings and faults ([`leader`]), how replicas share the checks
//! and behave under partitions ([`shards`]), and the pure decisions in [`decide`].

pub mod aggregate;
pub mod cache;
pub mod controller;
pub mod decide;
pub mod engine;
pub mod error;
pub mod failure;
pub mod labels;
pub mod leader;
pub mod lease;
pub mod secrets;
pub mod shards;
pub mod writer;

pub use error::{Error, Result};
pub use secrets::SecretAccess;

use crate::api::VoipCheck;
use crate::check::AllowList;
use crate::metrics::{self, Health, Metrics};
use crate::probe::dns::Dns;
use cache::Checks;
use controller::Context;
use engine::Engine;
use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::store::Writer;
use leader::LeaseConfig;
use shards::Gate;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use writer::{Writers, Writing};

/// How long a shutdown waits for runs in flight (a timeout may be up to 5 min) and then for the
/// last status writes (a hung API server): with the reconciles' read timeout (15 s) and the
/// Leases' release (2 s) the whole drain stays within the chart's 90 s
/// `terminationGracePeriodSeconds`.
const RUNS_DRAIN: std::time::Duration = std::time::Duration::from_secs(45);
const WRITES_DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

/// The `controller` of the Events this operator publishes.
pub const REPORTER: &str = "voipcheck";

/// The operator's settings (from `voipcheck operator`'s flags).
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Namespaces to watch; empty: all namespaces.
    pub namespaces: Vec<String>,
    pub allow: AllowList,
    /// `--nameserver`: the DNS server to ask instead of the system's configuration.
    pub nameserver: Option<SocketAddr>,
    pub metrics_addr: SocketAddr,
    /// The `location` label of every series, and the name of this location's entry of each
    /// check's `status.locations`.
    pub location: String,
    /// Whether this instance writes the verdict across locations (`--aggregate`).
    pub aggregate: bool,
    pub max_concurrent_probes: usize,
    pub lease: LeaseConfig,
    pub secret_access: SecretAccess,
}

/// The operator's API clients. Watches stream for minutes, so theirs has no read timeout
/// (kube's watcher has its own idle timeout and backoff); every other request has connect and
/// read timeouts, and kube's default retry (429/503/504 retried for up to 15 times with waits
/// of up to 1,000 s, as the API server's Retry-After asks) is off: each caller retries within
/// its own bound (the status writer per check with a backoff, newest status first; the Lease
/// within its renew deadline; a reconcile with the controller's backoff).
#[derive(Clone)]
pub struct Clients {
    pub watch: Client,
    pub api: Client,
}

/// Connect timeout of every request.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Read timeout of every request but watches: longer than any deadline a caller sets itself.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl Clients {
    /// Both clients for the cluster `config` describes.
    pub fn from_config(mut config: kube::Config) -> Result<Self> {
        config.default_retry = false;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let watch = Client::try_from(config.clone())?;
        config.read_timeout = Some(READ_TIMEOUT);
        // The timeout counts from the request, not from when a pooled connection went idle.
        config.reset_reader_on_write = true;
        let api = Client::try_from(config)?;
        Ok(Self { watch, api })
    }

    /// One client for everything (tests with kube's mock client).
    pub fn single(client: Client) -> Self {
        Self {
            watch: client.clone(),
            api: client,
        }
    }
}

/// Runs the operator until `shutdown` resolves, then stops in order: the controllers (reconciles
/// in flight finish), the scheduler (probes in flight finish or time out), the status writer
/// (the last updates are written: no partial status), and finally the Leases are released.
pub async fn run(
    clients: Clients,
    config: OperatorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let metrics = Metrics::new(&config.location);
    let health = Health::default();
    // The allow-list applies to resolved addresses too: a harmless-looking name may point at a
    // metadata address.
    let allow = config.allow.clone();
    let dns = Dns::new(config.nameserver)
        .map_err(|e| Error::Config(e.to_string()))?
        .restricted(move |name, ip| allow.allows(name, ip));

    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let caches: Vec<Writer<VoipCheck>> = scopes.iter().map(|_| Writer::default()).collect();
    let checks = Checks::new(caches.iter().map(Writer::as_reader).collect());

    let gate = Arc::new(Gate::default());
    let reporter = Reporter {
        controller: REPORTER.to_owned(),
        instance: Some(config.lease.identity.clone()),
    };
    let client = clients.api.clone();
    let writing = Writing {
        client: client.clone(),
        reporter,
        checks: checks.clone(),
        gate: gate.clone(),
        metrics: metrics.clone(),
    };
    let writers = Writers::start(&config.location, config.aggregate, writing);
    let outbox = writers.outbox.clone();
    let engine = Arc::new(Engine::new(
        dns,
        metrics.clone(),
        config.max_concurrent_probes,
        checks.clone(),
        outbox.clone(),
    ));
    let (release_lease, lease_released) = oneshot::channel::<()>();
    let campaign = tokio::spawn(shards::campaign(
        client.clone(),
        config.lease.clone(),
        config.location.clone(),
        engine.clone(),
        gate.clone(),
        metrics.clone(),
        lease_released.map(|_| ()),
    ));

    let (stop_controllers, controllers_stopped) = oneshot::channel::<()>();
    let controllers_stopped = controllers_stopped.map(|_| ()).shared();
    let ctx = Arc::new(Context::new(
        client,
        config.allow.clone(),
        engine.clone(),
        metrics.clone(),
        config.secret_access,
        config.location.clone(),
        &writers,
    ));
    let controllers =
        futures::future::join_all(scopes.into_iter().zip(caches).map(|(scope, cache)| {
            controller::run(
                ctx.clone(),
                clients.clone(),
                scope,
                cache,
                controllers_stopped.clone(),
            )
        }));
    let controllers = tokio::spawn(controllers);

    tokio::spawn(report_readiness(gate, health.clone()));

    let lifecycle = async {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_controllers.send(());
        let _ = controllers.await;
        if tokio::time::timeout(RUNS_DRAIN, engine.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(after = ?RUNS_DRAIN, "runs still in flight: not waited for");
        }
        writers.drain(WRITES_DRAIN).await;
        let _ = release_lease.send(());
        let _ = campaign.await;
        tracing::info!("stopped");
    };
    let server = metrics::serve(config.metrics_addr, metrics, health, std::future::pending());
    tokio::select! {
        () = lifecycle => Ok(()),
        served = server => Err(Error::MetricsServer(match served {
            Err(error) => error,
            Ok(()) => std::io::Error::other("metrics endpoint stopped"),
        })),
    }
}

/// `/readyz` turns ready once the Leases have been read: a replica holding no shard is ready
/// too (it is doing its job: waiting). Its caches hold only the shards it holds, each filled
/// by the shard's own list once taken.
async fn report_readiness(gate: Arc<Gate>, health: Health) {
    gate.wait_read().await;
    tracing::info!("Leases read: ready");
    health.set_ready(true);
}
