//! The kube-runtime controller: watches VoipChecks and the Secrets they reference, and turns
//! each VoipCheck into a schedule entry (reconcile = dereference Secrets -> plan -> upsert).
//!
//! One controller per watched scope: kube's `Controller` takes one watch stream, and a reflector
//! store cannot be shared by watches of several namespaces (each re-list replaces the store's
//! whole content). So `--namespace a --namespace b` runs two controllers with their own caches,
//! and without `--namespace` one controller watches the cluster. Secret watches are scoped the
//! same way, so namespaced RBAC (a Role per namespace) is enough. With
//! [`SecretAccess::Get`] there is no Secret watch at all (RBAC `get` only) and checks resync
//! more often instead ([`secrets::RESYNC_WITHOUT_WATCH`]).
//!
//! One bad object never stalls the others: the watch decodes each object on its own
//! ([`GuardedCheck`]), so an object that does not deserialize under this schema fails neither
//! the list nor the watch of its scope. [`ScopeWatch`] keeps it apart from the typed cache and
//! hands the engine an `InvalidSpec` entry for it (published as `Ready=False` with the field
//! path, counted in `invalid_objects` and `reconcile_errors_total{category="invalid_object"}`),
//! while every other check of the scope is reconciled and probed, at start and after a re-list.
//!
//! Deletion: a `Delete` on a shard's watch removes the check from the engine after the
//! caches forgot it, and after a shard's re-list (`InitDone`) the engine drops every check of
//! the shard the caches no longer hold. A reconcile still reading Secrets when its check is
//! deleted does not bring the entry back ([`Engine::upsert_current`]). No finalizer is
//! needed: nothing outside this process must be cleaned up, and a finalizer would block
//! deleting a VoipCheck (or its namespace) whenever the operator is not running.
//!
//! Locations: an instance runs only the checks whose `spec.locations` select its `--location`
//! (empty selects every one). For any other check it probes nothing, exports nothing, and
//! takes away the entry it wrote before the spec changed; the aggregating instance still
//! weighs the check's entries ([`super::aggregate`]), which every watch event hands it.
//!
//! Shards: a replica watches only the checks of the shards it holds, one watch per shard
//! selected by the check's shard label ([`super::labels`], [`shard_watches`]), started when the
//! engine takes the shard and ended once it is not held at all ([`Engine::shard_changes`]);
//! each check new to the cache is reconciled (a take's list brings the shard's checks). At
//! 30,000 checks over 3 replicas a watch of every check cost each replica ~140 MiB of cache
//! for the two thirds it does not run.
//! A check whose label names another shard than its uid's is cached but not run here
//! ([`Engine::runs_shard_of`]) until its label is corrected.
//!
//! Load on the API server: at most [`CONCURRENCY`] reconciles (each reading a check's Secrets)
//! run at once per scope, and the periodic resync of each check is spread over
//! [RESYNC / 2, RESYNC × 3 / 2) by its uid ([`decide::resync_after`]), not one burst every
//! [`RESYNC`].

use super::Clients;
use super::aggregate::Aggregator;
use super::decide;
use super::engine::{Engine, ShardChange};
use super::error::{Error, INVALID_OBJECT, Result, plan_error_label};
use super::labels::{self, Labels};
use super::secrets::{self, SecretAccess};
use super::shards::{self, labelled_shard};
use super::writer::Writers;
use crate::api::{GuardedCheck, InvalidCheck, VoipCheck};
use crate::check::{self, AllowList, CheckId};
use crate::metrics::{Metrics, ReconcileResult};
use crate::schedule::{Outbox, StatusUpdate};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self as runtime, Action, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::StreamMap;

/// How often, on average, a check is reconciled without a change: a fallback for missed watch
/// events (e.g. a Secret changed while the watch was re-connecting). Each reconcile reads the
/// check's Secrets once, so this bounds the operator's Secret reads to checks / 30 min, spread
/// evenly ([`decide::resync_after`]).
pub const RESYNC: Duration = Duration::from_secs(30 * 60);

/// Reconciles in flight at once per scope. Each reads its check's Secrets: after a re-list or a
/// Secret change touching many checks, unbounded concurrency would send thousands of GETs at
/// once, on the API flow the Lease renewals use.
pub const CONCURRENCY: u16 = 16;

/// The first retry after a failed reconcile; doubled per consecutive failure.
pub const RETRY_MIN: Duration = Duration::from_secs(5);
/// The longest wait between retries of a failing reconcile.
pub const RETRY_MAX: Duration = Duration::from_secs(5 * 60);

/// What `reconcile` and `error_policy` share.
pub struct Context {
    pub client: Client,
    pub allow: AllowList,
    pub engine: Arc<Engine>,
    pub metrics: Metrics,
    pub secret_access: SecretAccess,
    /// This instance's `--location`: it runs the checks whose `spec.locations` select it.
    pub location: String,
    /// Where this location's entries wait for their writer (the scheduler's outbox).
    pub entries: Arc<Outbox>,
    /// The verdict across locations, on the aggregating instance.
    pub aggregator: Option<Arc<Aggregator>>,
    /// Consecutive failed reconciles per object, for the retry backoff.
    failures: Mutex<HashMap<ObjectRef<VoipCheck>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        allow: AllowList,
        engine: Arc<Engine>,
        metrics: Metrics,
        secret_access: SecretAccess,
        location: String,
        writers: &Writers,
    ) -> Self {
        Self {
            client,
            allow,
            engine,
            metrics,
            secret_access,
            location,
            entries: writers.outbox.clone(),
            aggregator: writers.aggregator.clone(),
            failures: Mutex::default(),
        }
    }

    /// The average time between two reconciles of an unchanged check.
    fn resync(&self) -> Duration {
        match self.secret_access {
            SecretAccess::Watch => RESYNC,
            SecretAccess::Get => secrets::RESYNC_WITHOUT_WATCH,
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<VoipCheck>, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reconciles one VoipCheck: reads its Secrets, builds its plan and hands the entry to the
/// engine. A plan error (missing Secret or key, invalid spec, target not allowed) is not a
/// reconcile error: it goes to the scheduler, which publishes `Ready=False` with the reason, and
/// the Secret watch brings the check back here once the input is fixed.
///
/// The Secret reads take a while (long, when the API server is slow): a check deleted or
/// recreated meanwhile is not scheduled again (its entry would be a zombie: probed, and its
/// `Ready=False` alerting, with no object behind it).
pub async fn reconcile(check: Arc<VoipCheck>, ctx: Arc<Context>) -> Result<Action> {
    let id = decide::check_id(&check)?;
    let uid = check.metadata.uid.as_deref();
    let resync = decide::resync_after(ctx.resync(), uid, &id);
    if !decide::runs_in(&check.spec, &ctx.location) {
        leave(&ctx, &check, id);
        return Ok(Action::requeue(resync));
    }
    if !ctx.engine.runs_shard_of(uid, &id) {
        // Another replica's: taking its shard reconciles it again ([`Engine::take`]).
        ctx.failures().remove(&ObjectRef::from_obj(check.as_ref()));
        return Ok(Action::await_change());
    }
    let secrets = secrets::fetch(&ctx.client, &id.namespace, &check.spec).await?;
    let plan = check::plan(&id, &check.spec, &secrets, &ctx.allow);
    let result = match &plan {
        Ok(_) => ReconcileResult::Ok,
        Err(error) => {
            tracing::info!(check = %id, %error, "check cannot run");
            ReconcileResult::Error(plan_error_label(error))
        }
    };
    let entry = decide::check_entry(&check, id.clone(), plan, &ctx.location);
    if !ctx.engine.upsert_current(entry) {
        tracing::debug!(check = %id, "deleted while reconciled: not scheduled");
        return Ok(Action::await_change());
    }
    ctx.metrics.record_reconcile(result);
    ctx.failures().remove(&ObjectRef::from_obj(check.as_ref()));
    Ok(Action::requeue(resync))
}

/// `check` does not run in this location (any more): no probes, no metric series, and no
/// entry of this location, which an apply of [`decide::no_entry`] takes away. Its Secrets are
/// not read: nothing here uses them.
fn leave(ctx: &Context, check: &VoipCheck, id: CheckId) {
    ctx.engine.remove(&id);
    if decide::has_entry(check.status.as_ref(), &ctx.location) {
        tracing::info!(check = %id, location = %ctx.location, "not run here: entry removed");
        ctx.entries.offer(StatusUpdate {
            id,
            uid: check.metadata.uid.clone(),
            generation: check.metadata.generation,
            status: Arc::new(decide::no_entry()),
            transitions: Vec::new(),
        });
    }
    ctx.metrics.record_reconcile(ReconcileResult::Ok);
    ctx.failures().remove(&ObjectRef::from_obj(check));
}

/// Logs and counts a failed reconcile and retries it with an exponential backoff.
pub fn error_policy(check: Arc<VoipCheck>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempt = {
        let mut failures = ctx.failures();
        let count = failures
            .entry(ObjectRef::from_obj(check.as_ref()))
            .or_default();
        *count = count.saturating_add(1);
        *count
    };
    let delay = retry_delay(attempt);
    tracing::warn!(
        check = %ObjectRef::from_obj(check.as_ref()),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    ctx.metrics
        .record_reconcile(ReconcileResult::Error(error.metric_label()));
    Action::requeue(delay)
}

/// The wait before retry number `attempt` (1-based): RETRY_MIN doubled per attempt, capped.
pub fn retry_delay(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    RETRY_MIN.saturating_mul(factor).min(RETRY_MAX)
}

/// What one scope's watches bring: one watch per shard held ([`shard_watches`]).
// As large as the watcher's own event, which it carries: boxing it would cost an allocation
// per event for the rare `Dropped`.
#[allow(clippy::large_enum_variant)]
pub enum ShardEvent {
    /// An event of the watch of shard `n` (its label selector: [`shards::selector`]).
    Watch(usize, watcher::Event<GuardedCheck>),
    /// Shard `n` is not held any more: its watch ended, its checks leave the caches.
    Dropped(usize),
}

/// One scope's shard watches applied to the caches and the engine. Typed objects go to the
/// scope's reflector store and on to reconcile; an object that does not deserialize goes to
/// the invalid index ([`super::cache::Checks::set_invalid`]) and, as an `InvalidSpec` entry,
/// straight to the engine: there is nothing to read for it (no spec, no Secrets).
///
/// An object that turns invalid leaves the typed store (no reconcile runs on its old spec, a
/// Secret change no longer maps to it); one that turns valid leaves the index.
///
/// The store is one for every shard of the scope (the controller reads one), so no watch's
/// re-list replaces it: a shard's `InitApply` is applied as it comes and its `InitDone` takes
/// out what that shard's re-list no longer had. A check whose label changed leaves one shard's
/// watch and enters another's, in either order: a `Delete` takes out only the object the same
/// shard's watch brought.
pub struct ScopeWatch {
    ctx: Arc<Context>,
    scope: Option<String>,
    store: Writer<VoipCheck>,
    reader: Store<VoipCheck>,
    labels: Labels,
    /// The re-lists in progress, by shard (`Init` .. `InitDone`).
    relists: HashMap<usize, Relist>,
    /// The checks new to the store, reconciled whatever the generation predicate says: it
    /// remembers them from before they left (their shard given up and taken again, their
    /// label corrected), and would let none of them through.
    arrived: UnboundedSender<ObjectRef<VoipCheck>>,
}

/// What one shard's re-list brought so far.
#[derive(Default)]
struct Relist {
    seen: HashSet<CheckId>,
    invalid: Vec<(CheckId, InvalidCheck)>,
}

impl ScopeWatch {
    pub fn new(
        ctx: Arc<Context>,
        scope: Option<String>,
        mut store: Writer<VoipCheck>,
        labels: Labels,
        arrived: UnboundedSender<ObjectRef<VoipCheck>>,
    ) -> Self {
        // Ready at once, empty: no shard is held yet, and a shard's first list fills it.
        store.apply_watcher_event(&watcher::Event::Init);
        store.apply_watcher_event(&watcher::Event::InitDone);
        Self {
            ctx,
            scope,
            reader: store.as_reader(),
            store,
            labels,
            relists: HashMap::new(),
            arrived,
        }
    }

    /// Applies one event; returns the typed object to reconcile, if any.
    pub fn apply(&mut self, event: ShardEvent) -> Option<VoipCheck> {
        let reconcile = match event {
            ShardEvent::Watch(shard, event) => self.watched(shard, event),
            ShardEvent::Dropped(shard) => {
                self.drop_shard(shard);
                None
            }
        };
        let invalid = self.ctx.engine.checks().invalid_count();
        self.ctx.metrics.set_invalid_objects(invalid);
        reconcile
    }

    fn watched(&mut self, shard: usize, event: watcher::Event<GuardedCheck>) -> Option<VoipCheck> {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let ctx = self.ctx.clone();
        let checks = ctx.engine.checks();
        match event {
            Init => {
                self.relists.insert(shard, Relist::default());
                None
            }
            InitApply(GuardedCheck(Ok(check))) => {
                if let (Some(relist), Ok(id)) =
                    (self.relists.get_mut(&shard), decide::check_id(&check))
                {
                    relist.seen.insert(id);
                }
                Some(self.applied(check))
            }
            InitApply(GuardedCheck(Err(invalid))) => {
                if let (Ok(id), Some(relist)) = (
                    decide::object_id(&invalid.metadata),
                    self.relists.get_mut(&shard),
                ) {
                    relist.seen.insert(id.clone());
                    relist.invalid.push((id, invalid));
                }
                None
            }
            InitDone => {
                self.listed_shard(shard);
                None
            }
            Apply(GuardedCheck(Ok(check))) => Some(self.applied(check)),
            Apply(GuardedCheck(Err(invalid))) => {
                self.changed(&invalid.metadata);
                self.labels.correct(&invalid.metadata);
                if let Ok(id) = decide::object_id(&invalid.metadata) {
                    let news = checks.set_invalid(&id, invalid.clone());
                    self.forget_typed(&id);
                    if news {
                        self.schedule_invalid(id, &invalid);
                    }
                }
                None
            }
            Delete(object) => {
                if let Ok(id) = decide::object_id(object.meta())
                    && checks.labelled(&id).is_none_or(|of| of == shard)
                {
                    self.forget(&id);
                }
                None
            }
        }
    }

    /// A typed object came in a shard's watch: it is cached and reconciled.
    fn applied(&mut self, check: VoipCheck) -> VoipCheck {
        let key = ObjectRef::from_obj(&check);
        if self.reader.get(&key).is_none() {
            // Fails only once the controller stopped.
            let _ = self.arrived.unbounded_send(key);
        }
        self.store
            .apply_watcher_event(&watcher::Event::Apply(check.clone()));
        if let Ok(id) = decide::check_id(&check) {
            self.ctx.engine.checks().forget_invalid(&id);
        }
        self.changed(&check.metadata);
        self.labels.correct(&check.metadata);
        check
    }

    /// Shard `shard`'s re-list is complete: what it no longer had was deleted meanwhile (a
    /// re-list brings no Delete event, only the absence).
    fn listed_shard(&mut self, shard: usize) {
        let relist = self.relists.remove(&shard).unwrap_or_default();
        let ctx = self.ctx.clone();
        for id in self.cached_of(shard) {
            if !relist.seen.contains(&id) {
                self.forget(&id);
            }
        }
        if let Some(aggregator) = &ctx.aggregator {
            aggregator.relisted();
        }
        let scope = self.scope.as_deref();
        for (id, invalid) in ctx
            .engine
            .checks()
            .relisted_invalid(scope, shard, relist.invalid)
        {
            self.schedule_invalid(id, &invalid);
        }
        ctx.engine.prune(scope, shard);
    }

    /// Shard `shard` is not held any more: its checks leave the caches, the aggregator and
    /// the metrics. The engine stopped them already and keeps what their tasks knew, except
    /// for a check whose wrong label put it in this shard's watch while this replica holds
    /// its uid's shard: it stops until its label is corrected and its shard's watch brings it.
    fn drop_shard(&mut self, shard: usize) {
        self.relists.remove(&shard);
        let ctx = self.ctx.clone();
        let checks = ctx.engine.checks();
        let typed = self.cached_of(shard);
        checks.relisted_invalid(self.scope.as_deref(), shard, Vec::new());
        for id in &typed {
            self.forget_typed(id);
            if let Some(aggregator) = &ctx.aggregator {
                aggregator.forget(id);
            }
        }
        for check in typed {
            let uid = checks.uid(&check).flatten();
            if ctx.engine.runs_shard_of(uid.as_deref(), &check) {
                ctx.engine.remove(&check);
            }
        }
        tracing::debug!(shard, scope = ?self.scope, "shard dropped from the caches");
    }

    /// The typed checks of the store that shard `shard`'s watch brought.
    fn cached_of(&self, shard: usize) -> Vec<CheckId> {
        self.reader
            .state()
            .iter()
            .filter(|check| labelled_shard(&check.metadata) == Some(shard))
            .filter_map(|check| decide::check_id(check).ok())
            .collect()
    }

    /// Check `id` was deleted: nothing of it is cached, run, computed or exported.
    fn forget(&mut self, id: &CheckId) {
        self.forget_typed(id);
        self.ctx.engine.checks().forget_invalid(id);
        if let Some(aggregator) = &self.ctx.aggregator {
            aggregator.forget(id);
        }
        self.ctx.engine.remove(id);
    }

    /// A new version of the object with `metadata` is in the caches: the verdict across
    /// locations may change with it (another location's entry, the spec).
    fn changed(&self, metadata: &ObjectMeta) {
        if let (Some(aggregator), Ok(id)) = (&self.ctx.aggregator, decide::object_id(metadata)) {
            aggregator.changed(&id);
        }
    }

    /// Drops the typed version of check `id` from the store, if it has one.
    fn forget_typed(&mut self, id: &CheckId) {
        let key = ObjectRef::new(&id.name).within(&id.namespace);
        if let Some(typed) = self.reader.get(&key) {
            self.store
                .apply_watcher_event(&watcher::Event::Delete(typed.as_ref().clone()));
        }
    }

    fn schedule_invalid(&self, id: CheckId, invalid: &InvalidCheck) {
        tracing::warn!(check = %id, error = %invalid.error, "VoipCheck does not deserialize");
        self.ctx
            .engine
            .upsert(decide::invalid_entry(id, invalid, &self.ctx.location));
        self.ctx
            .metrics
            .record_reconcile(ReconcileResult::Error(INVALID_OBJECT));
    }
}

/// The watch of each shard `changes` says is held, one after the other as shards are taken
/// and dropped, merged into one stream. A dropped shard's watch ends before its
/// [`ShardEvent::Dropped`].
///
/// A shard's watch error is logged here and that watch backs off on its own; none reaches the
/// controller, whose trigger backoff would pause every watch on each one: after a compaction
/// the twelve watches' errors, each found only once the previous pause ended, stalled every
/// check's events for minutes.
pub fn shard_watches(
    api: Api<GuardedCheck>,
    scope: Option<String>,
    changes: UnboundedReceiver<ShardChange>,
) -> impl Stream<Item = std::result::Result<ShardEvent, watcher::Error>> + Send {
    let watches: StreamMap<usize, BoxStream<'static, WatchEvent>> = StreamMap::new();
    futures::stream::unfold((changes, watches), move |(mut changes, mut watches)| {
        let api = api.clone();
        let scope = scope.clone();
        async move {
            loop {
                tokio::select! {
                    change = changes.next() => match change? {
                        ShardChange::Taken(shard) => {
                            watches.insert(shard, shard_watch(api.clone(), shard));
                        }
                        ShardChange::Dropped(shard) => {
                            watches.remove(&shard);
                            return Some((Ok(ShardEvent::Dropped(shard)), (changes, watches)));
                        }
                    },
                    Some((shard, event)) = watches.next() => match event {
                        Ok(event) => {
                            return Some((Ok(ShardEvent::Watch(shard, event)), (changes, watches)));
                        }
                        Err(error) => {
                            let scope = scope.as_deref().unwrap_or("all namespaces");
                            tracing::warn!(
                                scope, shard, %error, "watch failed; retrying with backoff"
                            );
                        }
                    }
                }
            }
        }
    })
}

type WatchEvent = std::result::Result<watcher::Event<GuardedCheck>, watcher::Error>;

/// The watch of the checks labelled with `shard`.
fn shard_watch(api: Api<GuardedCheck>, shard: usize) -> BoxStream<'static, WatchEvent> {
    let config = watcher::Config::default().labels(&shards::selector(shard));
    watcher(api, config)
        .default_backoff()
        // Nothing here reads managedFields, and with a location's and the aggregator's field
        // sets they are the largest part of each cached object.
        .modify(|check: &mut GuardedCheck| check.meta_mut().managed_fields = None)
        .boxed()
}

/// Runs the controller of one scope (`None`: all namespaces), and its labeller
/// ([`super::labels`]), until `shutdown` resolves; reconciles in flight then finish. The
/// watches use `clients.watch` (no read timeout: see [`super::Clients`]). Watch errors are
/// logged and the watches resume with kube's default backoff; nothing here ends the process.
pub fn run(
    ctx: Arc<Context>,
    clients: Clients,
    scope: Option<String>,
    cache: Writer<VoipCheck>,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send {
    let client = clients.watch.clone();
    let (checks_api, secrets_api): (Api<GuardedCheck>, Api<PartialObjectMeta<Secret>>) =
        match &scope {
            Some(namespace) => (
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client, namespace),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let reader = cache.as_reader();
    let (labels, corrections) = Labels::new();
    let (arrived, to_reconcile) = unbounded();
    let mut scope_watch = ScopeWatch::new(ctx.clone(), scope.clone(), cache, labels, arrived);
    let checks = shard_watches(checks_api, scope.clone(), ctx.engine.shard_changes())
        .try_filter_map(move |event| std::future::ready(Ok(scope_watch.apply(event))))
        // Status writes change the resourceVersion on every run; only spec changes (generation)
        // need a new plan.
        .predicate_filter(predicates::generation, Default::default());
    let mapper_cache = reader.clone();
    let controller = Controller::for_stream(checks, reader).reconcile_on(to_reconcile);
    let controller = match ctx.secret_access {
        SecretAccess::Watch => {
            // Metadata only (`PartialObjectMeta`): which Secret changed is enough to know which
            // checks to reconcile; the values are read by `secrets::fetch` for the checks that
            // use them.
            let secret_changes = watcher(secrets_api, watcher::Config::default())
                .default_backoff()
                .touched_objects();
            controller.watches_stream(secret_changes, move |secret| {
                let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
                let checks = mapper_cache.state();
                decide::referencing_checks(checks.iter().map(Arc::as_ref), &namespace, &name)
            })
        }
        SecretAccess::Get => controller,
    };
    let controller = controller
        .with_config(runtime::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone());
    let labelling = labels::run(
        ctx.engine.clone(),
        ctx.metrics.clone(),
        clients,
        scope.clone(),
        corrections,
        shutdown,
    );
    async move {
        futures::join!(log_outcomes(controller, scope), labelling);
    }
}

/// Drains the controller's output: reconcile errors were logged and counted by `error_policy`;
/// watch errors get a warning (the watch backs off and resumes).
async fn log_outcomes<T>(
    outcomes: impl Stream<Item = std::result::Result<T, ControllerError>>,
    scope: Option<String>,
) {
    let scope = scope.as_deref().unwrap_or("all namespaces");
    outcomes
        .for_each(|outcome| {
            match outcome {
                Err(ControllerError::QueueError(error)) => {
                    tracing::warn!(scope, %error, "watch failed; retrying with backoff");
                }
                Err(ControllerError::RunnerError(error)) => {
                    tracing::warn!(scope, %error, "controller runner");
                }
                // A requeue of a check deleted meanwhile, or a failure error_policy reported.
                Err(error) => tracing::debug!(scope, %error, "controller"),
                Ok(_) => {}
            }
            std::future::ready(())
        })
        .await;
    tracing::info!(scope, "controller stopped");
}

type ControllerError = kube::runtime::controller::Error<Error, watcher::Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(4), Duration::from_secs(40));
        assert_eq!(retry_delay(7), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }
}
