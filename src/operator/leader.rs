//! Leader election with a Lease (kube-lease-manager), so two replicas can run: the leader
//! probes and writes status, a standby keeps its caches and entries warm and takes over when the
//! Lease expires.
//!
//! Timings: the holder renews the Lease [`LEASE_GRACE_SECONDS`] before it expires, i.e. every
//! 10 s for a [`LEASE_DURATION_SECONDS`] of 15 s. A standby sleeps until the Lease it saw
//! expires, then takes it (after a random pause of up to 1 s against collisions), so a leader
//! that died is replaced within 15–16 s. On graceful shutdown the leader releases the Lease; the
//! standby still notices at the old expiry time, so handover also takes at most 16 s. The grace
//! period is also the clock skew tolerated between nodes.
//!
//! A leader that cannot reach the API to renew stops probing at once rather than when the Lease
//! runs out: it could not write status anyway, and two replicas must not both probe. It then
//! rejoins the election, and takes the Lease back at once if it still holds it.

use super::engine::Engine;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a Lease stays valid after its last renewal.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// How long before expiry the holder renews.
pub const LEASE_GRACE_SECONDS: u64 = 5;

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

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

/// Which Lease, and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per replica (the pod name).
    pub identity: String,
}

/// Campaigns for the Lease until `stop` resolves, starting and stopping the engine's scheduler
/// as leadership comes and goes and publishing the role on `role`. On `stop` the Lease is
/// released, so the caller resolves it only after the last status write.
pub async fn campaign(
    client: Client,
    lease: LeaseConfig,
    engine: Arc<Engine>,
    role: watch::Sender<Leadership>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = pin!(stop);
    let mut delay = RETRY_MIN;
    loop {
        let built = tokio::select! {
            () = &mut stop => return,
            built = manager(&client, &lease) => built,
        };
        match built {
            Ok(manager) => {
                delay = RETRY_MIN;
                // The Lease has been read: from now on this replica knows its role.
                role.send_if_modified(|r| {
                    let first = *r == Leadership::Unknown;
                    if first {
                        *r = Leadership::Standby;
                    }
                    first
                });
                if hold(&manager, &engine, &role, &mut stop).await {
                    if let Err(error) = manager.release().await {
                        tracing::warn!(%error, "could not release the Lease; it expires by itself");
                    }
                    return;
                }
            }
            Err(error) => tracing::warn!(%error, retry_in = ?delay, "cannot read the Lease"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// Follows one LeaseManager's state until `stop` (true) or a Lease error (false).
async fn hold(
    manager: &LeaseManager,
    engine: &Engine,
    role: &watch::Sender<Leadership>,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    loop {
        let changed = tokio::select! {
            () = stop.as_mut() => return true,
            changed = manager.changed() => changed,
        };
        match changed {
            Ok(true) => {
                tracing::info!("acquired the Lease");
                role.send_replace(Leadership::Leader);
                engine.lead();
            }
            Ok(false) => {
                tracing::info!("lost the Lease");
                role.send_replace(Leadership::Standby);
                engine.step_down().await;
            }
            Err(error) => {
                tracing::warn!(%error, "Lease renewal failed");
                if role.send_replace(Leadership::Standby) == Leadership::Leader {
                    engine.step_down().await;
                }
                return false;
            }
        }
    }
}

async fn manager(client: &Client, lease: &LeaseConfig) -> kube_lease_manager::Result<LeaseManager> {
    LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_field_manager(format!("voipcheck-{}", lease.identity))
        .with_duration(LEASE_DURATION_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await
}
