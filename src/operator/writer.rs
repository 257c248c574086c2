//! The one status writer (the linkerd policy-controller's shape): the scheduler computes each
//! check's next status and sends it over a channel; this task applies it to the API — only
//! while this replica holds the Lease — and publishes one Event per condition transition.
//!
//! A status whose conditions did not change is written again only after
//! [`decide::STATUS_REFRESH`], so the API server sees a write per condition change, not per run.
//!
//! A failed write is logged and counted (`reconcile_errors_total{error="status_write"}`) and
//! never stops the writer: the next run of the check writes the whole status again.

use super::cache::Checks;
use super::decide::{self, FIELD_MANAGER, StatusDigest};
use super::leader::Leadership;
use crate::api::VoipCheck;
use crate::check::CheckId;
use crate::metrics::{Metrics, ReconcileResult};
use crate::schedule::StatusUpdate;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client, Resource};
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Status writes in flight at once: one per lane. Each check always goes to the same lane
/// ([`decide::writer_lane`]), so its updates and Events are applied in the order they were sent.
const LANES: usize = 16;
/// Updates queued per lane beyond the shared channel.
const LANE_BUFFER: usize = 64;

/// Applies status updates and publishes Events.
pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
    checks: Checks,
    leadership: watch::Receiver<Leadership>,
    metrics: Metrics,
}

impl StatusWriter {
    /// `reporter` names this operator replica in the Events it publishes.
    pub fn new(
        client: Client,
        reporter: Reporter,
        checks: Checks,
        leadership: watch::Receiver<Leadership>,
        metrics: Metrics,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            checks,
            leadership,
            metrics,
        }
    }

    /// Writes every update until the channel closes (all senders dropped), so at shutdown the
    /// updates of the last runs are still written.
    pub async fn run(self, mut updates: mpsc::Receiver<StatusUpdate>) {
        let (lanes, lane_receivers): (Vec<_>, Vec<_>) =
            (0..LANES).map(|_| mpsc::channel(LANE_BUFFER)).unzip();
        let dispatch = async move {
            while let Some(update) = updates.recv().await {
                let lane = decide::writer_lane(&update.id, LANES);
                if lanes[lane].send(update).await.is_err() {
                    break;
                }
            }
            // Dropping the lanes' senders lets each lane finish once drained.
        };
        let writer = &self;
        let lanes = lane_receivers.into_iter().map(|mut lane| async move {
            // What this lane last wrote for each of its checks (a check always uses one lane).
            let mut written = HashMap::new();
            while let Some(update) = lane.recv().await {
                writer.write(update, &mut written).await;
            }
        });
        futures::join!(dispatch, futures::future::join_all(lanes));
        tracing::debug!("status writer drained");
    }

    async fn write(
        &self,
        update: StatusUpdate,
        written: &mut HashMap<CheckId, (StatusDigest, Instant)>,
    ) {
        let id = &update.id;
        if *self.leadership.borrow() != Leadership::Leader {
            tracing::debug!(check = %id, "not the leader: status update dropped");
            written.clear();
            return;
        }
        // The cached object gives the uid the Events refer to; a check that is gone from the
        // cache was deleted, and its last results have nowhere to go.
        let Some(check) = self.checks.get(id) else {
            tracing::debug!(check = %id, "check deleted: status update dropped");
            written.remove(id);
            return;
        };
        let digest = StatusDigest::of(&update.status);
        let now = Instant::now();
        if decide::needs_write(written.get(id), &digest, now) {
            let api: Api<VoipCheck> = Api::namespaced(self.client.clone(), &id.namespace);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let patch = Patch::Apply(decide::status_patch(&update.status));
            match api.patch_status(&id.name, &params, &patch).await {
                Ok(_) => {
                    written.insert(id.clone(), (digest, now));
                }
                Err(error) => {
                    tracing::warn!(check = %id, %error, "status write failed");
                    written.remove(id);
                    self.metrics
                        .record_reconcile(ReconcileResult::Error("status_write"));
                }
            }
        }
        let reference = check.object_ref(&());
        for transition in &update.transitions {
            let (status, reason) = transition.to;
            tracing::info!(
                check = %id,
                condition = %transition.type_,
                %status,
                %reason,
                message = %transition.message,
                "condition changed"
            );
            let event = decide::transition_event(transition);
            if let Err(error) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(check = %id, %error, "event not published");
                self.metrics
                    .record_reconcile(ReconcileResult::Error("event_publish"));
            }
        }
    }
}
