//! Leader election, so two replicas can run: the leader probes and writes status, a standby
//! keeps its caches and entries warm and takes over when the Lease is free or expired.
//!
//! Timings ([`LeaseTimings`], client-go's defaults): the Lease lasts 15 s; the leader renews it
//! every 2 s, each attempt bounded so that a hung request cannot hold up the next; a standby
//! looks every 2 s and takes a Lease whose record has not changed for 15 s by its own clock.
//! A leader killed is replaced within ~17 s; on graceful shutdown it releases the Lease and the
//! standby takes over at its next look (≤ 2 s).
//!
//! Faults:
//! - A renewal that fails (500, 429, a reset, a timeout) is retried at the next tick; the leader
//!   stays leader while one succeeds within the renew deadline (10 s). Nothing flaps.
//! - When the renew deadline passes, the leader stops writing ([`Leadership::Isolated`]) —
//!   5 s before its Lease can expire, which is longer than any write of the status writer
//!   takes — so no two replicas ever write.
//! - It keeps probing (metrics only) while it cannot see another holder: when the API server is
//!   unreachable for everyone, nobody can take the Lease, and stopping would leave every check
//!   unprobed for the whole API outage. A standby that does reach the API takes over after the
//!   lease duration; the isolated replica then sees the new holder at its next successful read
//!   and stands by. During a partition that lets only the standby through, both probe for that
//!   while, and only the standby writes.
//! - A renewal that lands late never overwrites another holder: every write carries the
//!   resourceVersion it was based on ([`super::lease`]).

use super::engine::Engine;
use super::lease::{Attempt, LeaseLock};
use crate::metrics::{Metrics, ReconcileResult};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What this replica knows about its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// The Lease has not been read yet.
    Unknown,
    /// Another replica (or nobody yet) holds the Lease.
    Standby,
    /// This replica holds the Lease: it probes and writes status.
    Leader,
    /// This replica held the Lease but could not renew it in time: it writes nothing (another
    /// replica may lead by now), and keeps probing while it cannot see another holder.
    Isolated,
}

/// How long the Lease lasts, and when its holder renews or gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease stays valid after its last renewal.
    pub duration: Duration,
    /// A leader that has not renewed for this long stops writing; shorter than `duration` by
    /// more than the status writer's request deadline.
    pub renew_deadline: Duration,
    /// Between two attempts (renewals, or a standby's looks).
    pub retry: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// Which Lease, and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    pub timings: LeaseTimings,
}

/// Campaigns for the Lease until `stop` resolves, starting and stopping the engine's scheduler
/// as leadership comes and goes and publishing the role on `role`. On `stop` the Lease is
/// released, so the caller resolves it only after the last status write.
pub async fn campaign(
    client: Client,
    lease: LeaseConfig,
    engine: Arc<Engine>,
    role: watch::Sender<Leadership>,
    metrics: Metrics,
    stop: impl Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &lease.namespace);
    let timings = lease.timings;
    let mut lock = LeaseLock::new(api, &lease.name, &lease.identity, timings.duration);
    let mut stop = pin!(stop);
    // When the Lease was last acquired or renewed.
    let mut renewed = Instant::now();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep_until(next) => {}
        }
        next = Instant::now() + timings.retry;
        let current = *role.borrow();
        // Each attempt ends before the next is due, and a leader's before its renew deadline.
        let budget = match current {
            Leadership::Leader => (renewed + timings.renew_deadline)
                .saturating_duration_since(Instant::now())
                .min(timings.retry),
            _ => timings.retry,
        };
        let attempt = tokio::time::timeout(budget, lock.try_acquire_or_renew())
            .await
            .unwrap_or(Attempt::Failed(super::failure::ApiFailure::Timeout));
        match attempt {
            Attempt::Held => {
                renewed = Instant::now();
                if current != Leadership::Leader {
                    tracing::info!("leading: this replica holds the Lease");
                    role.send_replace(Leadership::Leader);
                    metrics.set_leader(true);
                    engine.lead();
                }
            }
            Attempt::HeldBy(holder) => {
                if matches!(current, Leadership::Leader | Leadership::Isolated) {
                    tracing::info!(%holder, "another replica holds the Lease: standing by");
                    role.send_replace(Leadership::Standby);
                    metrics.set_leader(false);
                    engine.step_down().await;
                } else if current == Leadership::Unknown {
                    role.send_replace(Leadership::Standby);
                }
            }
            Attempt::Failed(failure) => {
                metrics.record_reconcile(ReconcileResult::Error("lease"));
                let late = renewed.elapsed() >= timings.renew_deadline;
                if current == Leadership::Leader && late {
                    tracing::warn!(
                        error = failure.category(),
                        "Lease not renewed within the renew deadline: writing stops, probing goes on"
                    );
                    role.send_replace(Leadership::Isolated);
                    metrics.set_leader(false);
                } else {
                    tracing::warn!(error = failure.category(), role = ?current, "Lease request failed");
                }
            }
        }
    }
    if matches!(*role.borrow(), Leadership::Leader | Leadership::Isolated) {
        let released = tokio::time::timeout(timings.retry, lock.release()).await;
        match released {
            Ok(Ok(())) => tracing::info!("released the Lease"),
            Ok(Err(failure)) => tracing::warn!(
                error = failure.category(),
                "could not release the Lease; it expires by itself"
            ),
            Err(_) => tracing::warn!("releasing the Lease timed out; it expires by itself"),
        }
    }
    role.send_replace(Leadership::Standby);
    metrics.set_leader(false);
}
