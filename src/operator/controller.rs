//! The kube-runtime controller: watches VoipChecks and the Secrets they reference, and turns
//! each VoipCheck into a schedule entry (reconcile = dereference Secrets -> plan -> upsert).
//!
//! One controller per watched scope: kube's `Controller` takes one watch stream, and a reflector
//! store cannot be shared by watches of several namespaces (each re-list replaces the store's
//! whole content). So `--namespace a --namespace b` runs two controllers with their own caches,
//! and without `--namespace` one controller watches the cluster. Secret watches are scoped the
//! same way, so namespaced RBAC (a Role per namespace) is enough.
//!
//! Deletion: the VoipCheck watch stream is inspected after the reflector has applied each event;
//! a `Delete` removes the check from the engine, and after a re-list (`InitDone`) the engine
//! drops every check of the scope the cache no longer holds. No finalizer is needed: nothing
//! outside this process must be cleaned up, and a finalizer would block deleting a VoipCheck
//! (or its namespace) whenever the operator is not running.

use super::decide;
use super::engine::Engine;
use super::error::{Error, Result, plan_error_label};
use super::secrets;
use crate::api::VoipCheck;
use crate::check::{self, AllowList, CheckId};
use crate::metrics::{Metrics, ReconcileResult};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a check is reconciled without a change: a fallback for missed watch events (e.g. a
/// Secret changed while the watch was re-connecting). Each reconcile reads the check's Secrets
/// once, so this bounds the operator's Secret reads to checks / 30 min.
pub const RESYNC: Duration = Duration::from_secs(30 * 60);

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
    /// Consecutive failed reconciles per object, for the retry backoff.
    failures: Mutex<HashMap<ObjectRef<VoipCheck>, u32>>,
}

impl Context {
    pub fn new(client: Client, allow: AllowList, engine: Arc<Engine>, metrics: Metrics) -> Self {
        Self {
            client,
            allow,
            engine,
            metrics,
            failures: Mutex::default(),
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
pub async fn reconcile(check: Arc<VoipCheck>, ctx: Arc<Context>) -> Result<Action> {
    let id = decide::check_id(&check)?;
    let secrets = secrets::fetch(&ctx.client, &id.namespace, &check.spec).await?;
    let plan = check::plan(&id, &check.spec, &secrets, &ctx.allow);
    let result = match &plan {
        Ok(_) => ReconcileResult::Ok,
        Err(error) => {
            tracing::info!(check = %id, %error, "check cannot run");
            ReconcileResult::Error(plan_error_label(error))
        }
    };
    ctx.engine.upsert(decide::check_entry(&check, id, plan));
    ctx.metrics.record_reconcile(result);
    ctx.failures().remove(&ObjectRef::from_obj(check.as_ref()));
    Ok(Action::requeue(RESYNC))
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

/// Keeps the engine in step with deletions seen on the VoipCheck watch (after the reflector
/// applied the event, so the cache already reflects it).
pub fn forget_deleted(engine: &Engine, scope: Option<&str>, event: &watcher::Event<VoipCheck>) {
    match event {
        watcher::Event::Delete(check) => {
            if let Some(namespace) = check.namespace() {
                engine.remove(&CheckId::new(namespace, check.name_any()));
            }
        }
        watcher::Event::InitDone => engine.prune(scope),
        _ => {}
    }
}

/// Runs the controller of one scope (`None`: all namespaces) until `shutdown` resolves; reconciles
/// in flight then finish. The watches use `client` (one without a read timeout: see
/// [`super::Clients`]). Watch errors are logged and the watches resume with kube's default
/// backoff; nothing here ends the process.
pub fn run(
    ctx: Arc<Context>,
    client: Client,
    scope: Option<String>,
    cache: Writer<VoipCheck>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send {
    let (checks_api, secrets_api): (Api<VoipCheck>, Api<PartialObjectMeta<Secret>>) = match &scope {
        Some(namespace) => (
            Api::namespaced(client.clone(), namespace),
            Api::namespaced(client, namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let reader = cache.as_reader();
    let engine = ctx.engine.clone();
    let deletion_scope = scope.clone();
    let checks = watcher(checks_api, watcher::Config::default())
        .default_backoff()
        .reflect(cache)
        .inspect_ok(move |event| forget_deleted(&engine, deletion_scope.as_deref(), event))
        .applied_objects()
        // Status writes change the resourceVersion on every run; only spec changes (generation)
        // need a new plan.
        .predicate_filter(predicates::generation, Default::default());
    // Metadata only (`PartialObjectMeta`): which Secret changed is enough to know which checks to reconcile; the
    // values are read by `secrets::fetch` for the checks that use them.
    let secret_changes = watcher(secrets_api, watcher::Config::default())
        .default_backoff()
        .touched_objects();
    let mapper_cache = reader.clone();
    let controller = Controller::for_stream(checks, reader)
        .watches_stream(secret_changes, move |secret| {
            let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            let checks = mapper_cache.state();
            decide::referencing_checks(checks.iter().map(Arc::as_ref), &namespace, &name)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    log_outcomes(controller, scope)
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
