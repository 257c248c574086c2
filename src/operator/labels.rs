//! Shard labels: every check carries `voipcheck.io/shard: "<n>"` ([`SHARD_LABEL`]), the shard
//! its uid hashes to, so that a replica watches only the checks of the shards it holds (one
//! watch per shard held, selected by the label: [`super::controller`]) instead of caching every
//! check of its scopes. At 30,000 checks over 3 replicas, caching every check was the largest
//! part of each replica's memory (~140 MiB of ~400).
//!
//! The API server assigns the uid when it creates the object, so no manifest can carry the
//! right label: the holder of the shard sets it, by a server-side apply of that one label under
//! [`FIELD_MANAGER`], forced (a label copied from another check's manifest names the wrong
//! shard and is overwritten), with the uid as a precondition (a check recreated meanwhile is
//! not labelled with the old uid's shard). A label is metadata: it bumps no generation, so it
//! causes no reconcile; a user's `kubectl apply` leaves it alone (it is not in their manifest).
//!
//! Each replica watches the checks of its scope that are in no shard's watch (no label, or a
//! value naming no shard: [`unsharded_selector`], metadata only), and labels those of the
//! shards it holds when they appear and when it takes a shard. A label naming another shard
//! than the uid's puts the check in that shard's watch: its holder relabels it
//! ([`Labels::correct`]). A failed write is retried every [`RETRY`].
//!
//! Until labelled, a new check is in no replica's cache: it starts one write and one watch
//! event later than it would without shards.

use super::Clients;
use super::decide;
use super::engine::{Engine, ShardChange};
use super::failure::ApiFailure;
use super::shards::{self, SHARD_LABEL, labelled_shard, unsharded_selector};
use crate::api::VoipCheck;
use crate::check::CheckId;
use crate::metrics::{Metrics, WriteKind};
use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// The field manager of the shard label.
pub const FIELD_MANAGER: &str = "voipcheck";

/// How often labels not written yet are tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// Label writes in flight at once per scope: at an upgrade every check of a scope is
/// unlabelled, and the writes share the API flow of the Lease renewals.
const CONCURRENCY: usize = 16;

/// A check whose label is to name `shard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub id: CheckId,
    pub uid: String,
    pub shard: usize,
}

impl Label {
    /// The label the object with `metadata` needs, if its own does not name its uid's shard.
    pub fn needed(metadata: &ObjectMeta) -> Option<Label> {
        let id = decide::object_id(metadata).ok()?;
        let uid = metadata.uid.clone()?;
        let shard = shards::shard_of(Some(&uid), &id);
        (labelled_shard(metadata) != Some(shard)).then_some(Label { id, uid, shard })
    }

    /// The server-side apply body: the label, and the uid as a precondition.
    pub fn patch(&self) -> PartialObjectMeta<VoipCheck> {
        ObjectMeta {
            name: Some(self.id.name.clone()),
            uid: Some(self.uid.clone()),
            labels: Some([(SHARD_LABEL.to_owned(), self.shard.to_string())].into()),
            ..ObjectMeta::default()
        }
        .into_request_partial::<VoipCheck>()
    }
}

/// Where a scope's controller asks for a wrong label to be corrected.
#[derive(Clone)]
pub struct Labels {
    corrections: UnboundedSender<Label>,
}

impl Labels {
    /// The handle, and what [`run`] reads from it.
    pub fn new() -> (Labels, UnboundedReceiver<Label>) {
        let (corrections, received) = unbounded();
        (Labels { corrections }, received)
    }

    /// The object with `metadata` came in a shard's watch: if its label names another shard
    /// than its uid's, it is relabelled (by this replica, which holds the shard it names).
    pub fn correct(&self, metadata: &ObjectMeta) {
        if let Some(label) = Label::needed(metadata) {
            // Fails only once the labeller stopped (shutting down).
            let _ = self.corrections.unbounded_send(label);
        }
    }
}

/// Labels the checks of `scope` until `shutdown` resolves: those in no shard's watch whose
/// shard this replica holds, and the corrections the controller asks for. The watch uses
/// `clients.watch` (no read timeout), the writes `clients.api`.
pub async fn run(
    engine: Arc<Engine>,
    metrics: Metrics,
    clients: Clients,
    scope: Option<String>,
    corrections: UnboundedReceiver<Label>,
    shutdown: impl Future<Output = ()>,
) {
    let watched: Api<PartialObjectMeta<VoipCheck>> = match &scope {
        Some(namespace) => Api::namespaced(clients.watch, namespace),
        None => Api::all(clients.watch),
    };
    let config = watcher::Config::default().labels(&unsharded_selector());
    let writer = Writer::default();
    let unlabelled = writer.as_reader();
    let events = reflector::reflector(
        writer,
        watcher(watched, config)
            .default_backoff()
            // Name, namespace, uid and labels are all this reads.
            .modify(|object| {
                object.metadata.managed_fields = None;
                object.metadata.annotations = None;
            }),
    );
    let mut labeller = Labeller {
        engine: engine.clone(),
        metrics,
        client: clients.api,
        queued: BTreeMap::new(),
        writing: BTreeSet::new(),
        failed: Vec::new(),
        in_flight: JoinSet::new(),
    };
    let mut events = pin!(events);
    let mut changes = engine.shard_changes();
    let mut corrections = corrections;
    let mut shutdown = pin!(shutdown);
    let mut retry = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object))) => {
                    labeller.queue_if_held(&object.metadata);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(?scope, %error, "watch of unlabelled checks failed; retrying with backoff");
                }
                None => break,
            },
            Some(change) = changes.next() => {
                if let ShardChange::Taken(shard) = change {
                    for object in unlabelled.state() {
                        if let Some(label) = Label::needed(&object.metadata).filter(|l| l.shard == shard) {
                            labeller.queue(label);
                        }
                    }
                }
            }
            Some(label) = corrections.next() => labeller.queue(label),
            Some(done) = labeller.in_flight.join_next(), if !labeller.in_flight.is_empty() => {
                if let Ok((label, result)) = done {
                    labeller.written(label, result);
                }
            }
            _ = retry.tick() => {
                for label in std::mem::take(&mut labeller.failed) {
                    labeller.queue(label);
                }
                for object in unlabelled.state() {
                    labeller.queue_if_held(&object.metadata);
                }
            }
        }
        labeller.start_writes();
    }
    labeller.in_flight.shutdown().await;
    tracing::debug!(?scope, "labeller stopped");
}

/// The label writes of one scope.
struct Labeller {
    engine: Arc<Engine>,
    metrics: Metrics,
    client: Client,
    /// Labels to write, by check (a newer request for a check replaces the older).
    queued: BTreeMap<CheckId, Label>,
    /// Checks whose label is being written.
    writing: BTreeSet<CheckId>,
    /// Writes that failed, tried again at the next [`RETRY`].
    failed: Vec<Label>,
    in_flight: JoinSet<(Label, Result<(), ApiFailure>)>,
}

impl Labeller {
    /// Queues the label of the object with `metadata` if it needs one and its shard is held.
    fn queue_if_held(&mut self, metadata: &ObjectMeta) {
        if let Some(label) = Label::needed(metadata)
            && self.engine.runs_shard_of(Some(&label.uid), &label.id)
        {
            self.queue(label);
        }
    }

    fn queue(&mut self, label: Label) {
        if !self.writing.contains(&label.id) {
            self.queued.insert(label.id.clone(), label);
        }
    }

    /// Starts queued writes while fewer than [`CONCURRENCY`] are in flight.
    fn start_writes(&mut self) {
        while self.in_flight.len() < CONCURRENCY {
            let Some((id, label)) = self.queued.pop_first() else {
                return;
            };
            self.writing.insert(id);
            let api: Api<VoipCheck> = Api::namespaced(self.client.clone(), &label.id.namespace);
            self.in_flight.spawn(async move {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let written = api
                    .patch_metadata(&label.id.name, &params, &Patch::Apply(label.patch()))
                    .await;
                (label, written.map(|_| ()).map_err(|e| ApiFailure::of(&e)))
            });
        }
    }

    fn written(&mut self, label: Label, result: Result<(), ApiFailure>) {
        self.writing.remove(&label.id);
        match result {
            Ok(()) => tracing::debug!(check = %label.id, shard = label.shard, "shard label set"),
            // Deleted, or recreated with another uid (whose own label comes from its watch).
            Err(ApiFailure::NotFound | ApiFailure::Conflict) => {}
            Err(failure) => {
                self.metrics
                    .record_write_failure(WriteKind::Label, failure.category());
                tracing::warn!(
                    check = %label.id,
                    error = failure.category(),
                    retry_in = ?RETRY,
                    "shard label not written: the check is in no replica's watch until it is"
                );
                self.failed.push(label);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(uid: &str, label: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("x".into()),
            namespace: Some("a".into()),
            uid: Some(uid.into()),
            labels: label.map(|l| [(SHARD_LABEL.to_owned(), l.to_owned())].into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_check_needs_a_label_until_it_names_its_uids_shard() {
        let uid = "6c1f3a2e-0000-4000-8000-000000000001";
        let shard = shards::shard_of(Some(uid), &CheckId::new("a", "x"));
        let other = ((shard + 1) % shards::SHARDS).to_string();
        let right = shard.to_string();
        for label in [None, Some("x"), Some("99"), Some(other.as_str())] {
            assert_eq!(
                Label::needed(&metadata(uid, label)),
                Some(Label {
                    id: CheckId::new("a", "x"),
                    uid: uid.into(),
                    shard
                }),
                "{label:?}"
            );
        }
        assert_eq!(Label::needed(&metadata(uid, Some(&right))), None);
        let no_uid = ObjectMeta {
            uid: None,
            ..metadata(uid, None)
        };
        assert_eq!(Label::needed(&no_uid), None, "nothing to hash");
    }
}
