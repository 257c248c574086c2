//! `voipcheck operator`: the in-cluster controller (DESIGN.md §1, §2). The edge of the system:
//! watches, the status writer, Events and the Lease live here; what a probe result means is
//! decided in `verdict`/`status`, when checks run in `schedule`.
//!
//! How one VoipCheck flows through it:
//! 1. [`controller`] watches VoipChecks (and Secret metadata) and reconciles each check:
//!    [`secrets`] reads the Secrets it references, `check::plan` builds the plan (or names why
//!    it cannot run), and the [`engine::Engine`] receives the entry.
//! 2. On the replica holding the Lease ([`leader`]) the engine runs the scheduler, which probes
//!    and sends each check's next status over a channel.
//! 3. The [`writer::StatusWriter`] applies that status (server-side apply on the status
//!    subresource) and publishes an Event per condition transition.
//!
//! The choices that matter are in each module's header: Secrets read on demand rather than
//! cached ([`secrets`]), one controller per namespace and deletion without a finalizer
//! ([`controller`]), the Lease timings ([`leader`]), and the pure decisions in [`decide`].

pub mod cache;
pub mod controller;
pub mod decide;
pub mod engine;
pub mod error;
pub mod leader;
pub mod secrets;
pub mod writer;

pub use error::{Error, Result};

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
use leader::{Leadership, LeaseConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use writer::StatusWriter;

/// The `controller` of the Events this operator publishes.
pub const REPORTER: &str = "voipcheck";

/// Status updates waiting for the writer; when full, the scheduler waits (back-pressure).
const UPDATE_BUFFER: usize = 1024;

/// The operator's settings (from `voipcheck operator`'s flags).
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Namespaces to watch; empty: all namespaces.
    pub namespaces: Vec<String>,
    pub allow: AllowList,
    pub metrics_addr: SocketAddr,
    /// The `location` label of every series.
    pub location: String,
    pub max_concurrent_probes: usize,
    pub lease: LeaseConfig,
}

/// Runs the operator until `shutdown` resolves, then stops in order: the controllers (reconciles
/// in flight finish), the scheduler (probes in flight finish or time out), the status writer
/// (the last updates are written: no partial status), and finally the Lease is released.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let metrics = Metrics::new(&config.location);
    let health = Health::default();
    // The allow-list applies to resolved addresses too: a harmless-looking name may point at a
    // metadata address.
    let allow = config.allow.clone();
    let dns = Dns::system()
        .map_err(|e| Error::Config(e.to_string()))?
        .restricted(move |ip| allow.allows_ip(ip));

    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let caches: Vec<Writer<VoipCheck>> = scopes.iter().map(|_| Writer::default()).collect();
    let checks = Checks::new(caches.iter().map(Writer::as_reader).collect());

    let (updates, updates_rx) = mpsc::channel(UPDATE_BUFFER);
    let engine = Arc::new(Engine::new(
        dns,
        metrics.clone(),
        config.max_concurrent_probes,
        checks.clone(),
        updates,
    ));
    let (role, role_rx) = watch::channel(Leadership::Unknown);
    let reporter = Reporter {
        controller: REPORTER.to_owned(),
        instance: Some(config.lease.identity.clone()),
    };
    let writer = StatusWriter::new(
        client.clone(),
        reporter,
        checks.clone(),
        role_rx.clone(),
        metrics.clone(),
    );
    let writer = tokio::spawn(writer.run(updates_rx));

    let (release_lease, lease_released) = oneshot::channel::<()>();
    let campaign = tokio::spawn(leader::campaign(
        client.clone(),
        config.lease.clone(),
        engine.clone(),
        role,
        lease_released.map(|_| ()),
    ));

    let (stop_controllers, controllers_stopped) = oneshot::channel::<()>();
    let controllers_stopped = controllers_stopped.map(|_| ()).shared();
    let ctx = Arc::new(Context::new(
        client,
        config.allow.clone(),
        engine.clone(),
        metrics.clone(),
    ));
    let controllers =
        futures::future::join_all(scopes.into_iter().zip(caches).map(|(scope, cache)| {
            controller::run(ctx.clone(), scope, cache, controllers_stopped.clone())
        }));
    let controllers = tokio::spawn(controllers);

    tokio::spawn(report_readiness(checks, role_rx, health.clone()));

    let lifecycle = async {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_controllers.send(());
        let _ = controllers.await;
        engine.shutdown().await;
        let _ = writer.await;
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

/// `/readyz` turns ready once every cache has synced and the Lease has been read: a standby is
/// ready too (it is doing its job: waiting, with warm caches).
async fn report_readiness(checks: Checks, mut role: watch::Receiver<Leadership>, health: Health) {
    if checks.wait_until_ready().await && role.wait_for(|r| *r != Leadership::Unknown).await.is_ok()
    {
        tracing::info!("caches synced, leadership known: ready");
        health.set_ready(true);
    }
}
