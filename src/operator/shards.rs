//! Checks shared by several replicas: a fixed number of shards ([`SHARDS`]), each a Kubernetes
//! Lease; a check belongs to the shard its uid hashes to, and only the holder of a shard's Lease
//! probes its checks and writes their status. Kubernetes is the consensus: every Lease write is
//! a PUT on the resourceVersion read ([`super::lease`]), so of two replicas reaching for one
//! shard exactly one wins; nothing here is a membership protocol of its own.
//!
//! Names, for `--lease-name` N and `--location` L: the shards are the Leases `N-L-0` to
//! `N-L-11`; each replica also keeps a member Lease `N-L-member-<identity>` renewed (the idea of
//! Kubernetes' LeaseCandidate), so the others know how many replicas share the shards.
//!
//! Every `retry` (2 s) a replica LISTs the Leases of its namespace (one request; those not
//! starting with `N-L-` are ignored), renews its member Lease and the shards it holds, and
//! computes its quota from the live members ([`quota`]: members sorted by identity, the first
//! `12 % n` get one more). A member Lease whose record did not change for its duration by this
//! replica's clock is a replica gone; one gone for [`LONG_DEAD`] durations is deleted (on its
//! resourceVersion: one renewed meanwhile stays), so crashed replicas' Leases do not pile up.
//! Then ([`moves`]):
//! - over quota, it stops probing the shards it gives up (runs in flight finish, their last
//!   statuses are written while it still holds the shard), THEN releases their Leases;
//! - under quota, it takes shards whose Lease is free or expired, lowest first.
//!
//! So scaling up or down moves shards without two replicas probing one check at once, a
//! graceful stop hands its shards over at the others' next look, and the shards of a replica
//! killed move once their Leases expire (the lease duration and at most one retry). The timing
//! policy and the faults of each shard's Lease are [`super::leader`]'s: a replica cut off from
//! the API server stops writing a shard before its Lease can expire and keeps probing it (for
//! the metrics) while it sees no other holder; the replicas that reach the API take the shard
//! after the lease duration.

use super::decide;
use super::engine::Engine;
use super::failure::ApiFailure;
use super::leader::{Leadership, LeaseConfig, LeaseTimings};
use super::lease::{self, Attempt, LeaseLock};
use crate::check::CheckId;
use crate::metrics::{Metrics, ReconcileResult};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::{Api, Client};
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The number of shards: fixed (a check's shard must not move when replicas come and go), and
/// divisible by 1, 2, 3, 4, 6 and 12 replicas.
pub const SHARDS: usize = 12;

/// A member Lease unchanged for this many lease durations is deleted.
pub const LONG_DEAD: u32 = 4;

/// How long a shard given up waits for its checks' last statuses to be written before its
/// Lease is released anyway (a write that keeps failing is the next holder's to redo).
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// The label each check carries with its shard ([`super::labels`]), so a replica watches only
/// the checks of the shards it holds.
pub const SHARD_LABEL: &str = "voipcheck.io/shard";

/// The label selector of shard `n`'s watch.
pub fn selector(shard: usize) -> String {
    format!("{SHARD_LABEL}={shard}")
}

/// The label selector of the checks in no shard's watch: no label, or a value that names no
/// shard (`notin` selects objects without the key too).
pub fn unsharded_selector() -> String {
    let shards: Vec<String> = (0..SHARDS).map(|n| n.to_string()).collect();
    format!("{SHARD_LABEL} notin ({})", shards.join(","))
}

/// The shard an object's label names, if it names one (as [`selector`] spells it: `03` or
/// `+3` is in no shard's watch).
pub fn labelled_shard(metadata: &ObjectMeta) -> Option<usize> {
    let value = metadata.labels.as_ref()?.get(SHARD_LABEL)?;
    (0..SHARDS).find(|n| n.to_string() == *value)
}

/// The shard of the check with `uid` (`id` for an object without one, as in tests).
pub fn shard_of(uid: Option<&str>, id: &CheckId) -> usize {
    let hash = match uid {
        Some(uid) => decide::stable_hash(uid.as_bytes()),
        None => decide::stable_hash(format!("{}/{}", id.namespace, id.name).as_bytes()),
    };
    (hash % SHARDS as u64) as usize
}

/// How many shards replica `me` holds among the live `members` (itself counted whether listed
/// or not): `SHARDS / n`, one more for the first `SHARDS % n` by identity.
pub fn quota(members: &[String], me: &str) -> usize {
    let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
    members.push(me);
    members.sort_unstable();
    members.dedup();
    let index = members.iter().position(|m| *m == me).unwrap_or(0);
    SHARDS / members.len() + usize::from(index < SHARDS % members.len())
}

/// A shard as this replica sees it, for [`moves`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// This replica holds it and probes its checks.
    Held,
    /// This replica is stopping its checks (to give it up, or because another took it).
    Releasing,
    /// Its Lease is absent, released, or expired.
    Free,
    /// Another live replica holds it.
    Taken,
}

/// What to do with the shards to hold `quota` of them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moves {
    pub take: Vec<usize>,
    pub release: Vec<usize>,
}

/// Over quota: give up the highest shards held; under quota: take the lowest free ones. A
/// shard being released counts for nobody until it is.
pub fn moves(views: &[View], quota: usize) -> Moves {
    let held: Vec<usize> = (0..views.len())
        .filter(|n| views[*n] == View::Held)
        .collect();
    if held.len() > quota {
        return Moves {
            take: Vec::new(),
            release: held[quota..].to_vec(),
        };
    }
    Moves {
        take: (0..views.len())
            .filter(|n| views[*n] == View::Free)
            .take(quota - held.len())
            .collect(),
        release: Vec::new(),
    }
}

/// A member Lease as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub identity: String,
    /// Cleared by a member that stopped.
    pub released: bool,
    /// Since its record last changed, by this replica's clock.
    pub unchanged_for: Duration,
    pub duration: Duration,
}

impl Member {
    /// Whether the replica renews its Lease.
    pub fn is_live(&self) -> bool {
        !self.released && self.unchanged_for <= self.duration
    }

    /// Whether it has been gone long enough to delete its Lease.
    pub fn is_long_dead(&self) -> bool {
        self.released || self.unchanged_for > self.duration * LONG_DEAD
    }
}

/// Whether a status may be written now ([`Gate::write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The shard is held.
    Now,
    /// The shard is held but its Lease could not be renewed in time: keep the status, it may
    /// be written once renewed.
    Later,
    /// Another replica (or none) holds the shard: drop it.
    Never,
}

/// Which shards this replica may write, shared by the campaign and the status writer.
pub struct Gate {
    state: Mutex<GateState>,
    /// Set once the Leases were read (readiness).
    read: watch::Sender<bool>,
    /// Counts the changes of any shard's role, for those who recompute then (the aggregator).
    changes: watch::Sender<u64>,
}

struct GateState {
    roles: [Leadership; SHARDS],
    /// When each shard was last taken: what the writer wrote before is no longer on the
    /// object for sure (another holder wrote since).
    since: [Option<std::time::Instant>; SHARDS],
    /// Statuses of each shard being written.
    writing: [usize; SHARDS],
}

impl Default for Gate {
    fn default() -> Self {
        Self::every_shard(Leadership::Standby)
    }
}

impl Gate {
    /// Every shard in `role` (a single replica's tests set `Leader`).
    pub fn every_shard(role: Leadership) -> Self {
        let since = role.holds().then(std::time::Instant::now);
        Self {
            state: Mutex::new(GateState {
                roles: [role; SHARDS],
                since: [since; SHARDS],
                writing: [0; SHARDS],
            }),
            read: watch::channel(false).0,
            changes: watch::channel(0).0,
        }
    }

    /// Whether a status of a check in `shard` may be written now.
    pub fn write(&self, shard: usize) -> Write {
        match self.lock().roles[shard % SHARDS] {
            Leadership::Leader => Write::Now,
            Leadership::Isolated => Write::Later,
            Leadership::Standby => Write::Never,
        }
    }

    /// When `shard` was last taken, while held.
    pub fn held_since(&self, shard: usize) -> Option<std::time::Instant> {
        self.lock().since[shard % SHARDS]
    }

    /// Counts the statuses of `shards` (one entry per status) as being written until the
    /// guard is dropped, so a shard is not given up under a write in flight.
    pub fn writing(&self, shards: Vec<usize>) -> Writing<'_> {
        let mut state = self.lock();
        for shard in &shards {
            state.writing[shard % SHARDS] += 1;
        }
        Writing { gate: self, shards }
    }

    fn is_writing(&self, shard: usize) -> bool {
        self.lock().writing[shard] > 0
    }

    fn set(&self, shard: usize, role: Leadership) {
        let mut state = self.lock();
        if state.roles[shard] == role {
            return;
        }
        if role.holds() && !state.roles[shard].holds() {
            state.since[shard] = Some(std::time::Instant::now());
        } else if !role.holds() {
            state.since[shard] = None;
        }
        state.roles[shard] = role;
        drop(state);
        self.changes.send_modify(|changes| *changes += 1);
    }

    /// Changes whenever a shard is taken, given up, or stops or starts being writable.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn mark_read(&self) {
        self.read
            .send_if_modified(|read| !std::mem::replace(read, true));
    }

    /// Resolves once the Leases were read.
    pub async fn wait_read(&self) {
        let _ = self.read.subscribe().wait_for(|read| *read).await;
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Statuses being written ([`Gate::writing`]).
pub struct Writing<'a> {
    gate: &'a Gate,
    shards: Vec<usize>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        for shard in &self.shards {
            state.writing[shard % SHARDS] -= 1;
        }
    }
}

/// The Lease names of one location.
struct Names {
    /// `<lease-name>-<location>-`.
    prefix: String,
}

impl Names {
    fn shard(&self, shard: usize) -> String {
        format!("{}{shard}", self.prefix)
    }

    fn member(&self, identity: &str) -> String {
        format!("{}member-{identity}", self.prefix)
    }

    fn is_member(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with("member-"))
    }
}

/// One shard's Lease and what this replica does with it.
struct Shard {
    lock: LeaseLock,
    role: Leadership,
    /// When its Lease was last acquired or renewed.
    renewed: Instant,
    /// Its checks being stopped.
    releasing: Option<Release>,
}

struct Release {
    task: JoinHandle<()>,
    /// Whether the Lease is given back once the checks stopped (`false`: another holder has it).
    give_back: bool,
}

/// The campaign's state.
struct Campaign {
    api: Api<Lease>,
    names: Names,
    identity: String,
    timings: LeaseTimings,
    engine: Arc<Engine>,
    gate: Arc<Gate>,
    metrics: Metrics,
    member: LeaseLock,
    shards: Vec<Shard>,
    /// The other members' Leases as last listed, by name, and since when each is the same.
    members: HashMap<String, (Lease, Instant)>,
    /// Whether this replica's member Lease was written once: shards are taken from the look
    /// after, so that replicas started together (a Deployment's first rollout) see each other
    /// before the first of them takes every shard only to hand most of them over again.
    announced: bool,
}

/// Holds this replica's share of the shards of `location` until `stop` resolves, starting and
/// stopping the engine's checks as shards come and go and opening the writer's [`Gate`] for
/// the shards held. On `stop` the shards and the member Lease are given back, so the caller
/// resolves it only after the last status write.
pub async fn campaign(
    client: Client,
    config: LeaseConfig,
    location: String,
    engine: Arc<Engine>,
    gate: Arc<Gate>,
    metrics: Metrics,
    stop: impl Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let names = Names {
        prefix: format!("{}-{location}-", config.name),
    };
    let duration = config.timings.duration;
    let lock = |name: &str| LeaseLock::new(api.clone(), name, &config.identity, duration);
    let mut campaign = Campaign {
        member: lock(&names.member(&config.identity)),
        shards: (0..SHARDS)
            .map(|n| Shard {
                lock: lock(&names.shard(n)),
                role: Leadership::Standby,
                renewed: Instant::now(),
                releasing: None,
            })
            .collect(),
        api: api.clone(),
        names,
        identity: config.identity.clone(),
        timings: config.timings,
        engine,
        gate,
        metrics,
        members: HashMap::new(),
        announced: false,
    };
    let mut stop = pin!(stop);
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep_until(next) => {}
        }
        next = Instant::now() + campaign.timings.retry;
        campaign.tick(next).await;
        campaign.publish();
    }
    campaign.give_up_all().await;
    campaign.publish();
}

impl Campaign {
    /// One look and what follows from it, all within `deadline` (the next tick).
    async fn tick(&mut self, deadline: Instant) {
        self.hand_back_released(deadline).await;
        let params = ListParams::default();
        let list = tokio::time::timeout_at(deadline, self.api.list(&params));
        let listed = match list.await {
            Ok(Ok(list)) => Some(list.items),
            Ok(Err(error)) => self.failed(ApiFailure::of(&error)),
            Err(_elapsed) => self.failed(ApiFailure::Timeout),
        };
        let Some(leases) = listed else {
            // Renewals go on without the LIST: on the version last written.
            self.renew(deadline).await;
            return;
        };
        self.observe(leases);
        self.gate.mark_read();
        self.give_up_lost();
        self.renew(deadline).await;
        if !self.announced {
            self.announced = self.member.holds();
            return;
        }
        let members: Vec<String> = self
            .members
            .values()
            .filter_map(|(lease, since)| self.member_view(lease, *since))
            .filter(Member::is_live)
            .map(|m| m.identity)
            .collect();
        self.rebalance(quota(&members, &self.identity), deadline)
            .await;
        self.collect_garbage(deadline).await;
    }

    fn failed<T>(&self, failure: ApiFailure) -> Option<T> {
        self.metrics
            .record_reconcile(ReconcileResult::Error("lease"));
        tracing::warn!(error = failure.category(), "Lease request failed");
        None
    }

    /// Takes in what the LIST returned.
    fn observe(&mut self, leases: Vec<Lease>) {
        let mut by_name: HashMap<String, Lease> = leases
            .into_iter()
            .filter_map(|l| Some((l.metadata.name.clone()?, l)))
            .filter(|(name, _)| name.starts_with(&self.names.prefix))
            .collect();
        for (n, shard) in self.shards.iter_mut().enumerate() {
            shard.lock.observe(by_name.remove(&self.names.shard(n)));
        }
        self.member
            .observe(by_name.remove(&self.names.member(&self.identity)));
        let now = Instant::now();
        let previous = std::mem::take(&mut self.members);
        self.members = by_name
            .into_iter()
            .filter(|(name, _)| self.names.is_member(name))
            .map(|(name, lease)| {
                let since = match previous.get(&name) {
                    Some((seen, since))
                        if seen.metadata.resource_version == lease.metadata.resource_version =>
                    {
                        *since
                    }
                    _ => now,
                };
                (name, (lease, since))
            })
            .collect();
    }

    /// The member Lease `lease`, unchanged since `since`; `None` for one that names nobody.
    fn member_view(&self, lease: &Lease, since: Instant) -> Option<Member> {
        let spec = lease.spec.as_ref();
        let holder = spec
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        let identity = match holder.as_str() {
            "" => lease
                .metadata
                .name
                .as_deref()?
                .strip_prefix(&self.names.member(""))?,
            holder => holder,
        };
        let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
        Some(Member {
            identity: identity.to_owned(),
            released: holder.is_empty(),
            unchanged_for: since.elapsed(),
            duration: Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        })
    }

    /// Shards this replica held that another replica holds now (it took them after they
    /// expired): their checks stop at once, nothing more is written for them.
    fn give_up_lost(&mut self) {
        for n in 0..SHARDS {
            let shard = &mut self.shards[n];
            if !shard.role.holds() || shard.lock.holds() {
                continue;
            }
            tracing::info!(shard = n, holder = ?shard.lock.other_holder(), "shard taken by another replica: its checks stop");
            shard.role = Leadership::Standby;
            self.gate.set(n, Leadership::Standby);
            self.engine.drop_shard(n);
            match &mut shard.releasing {
                Some(release) => release.give_back = false,
                None => {
                    let engine = self.engine.clone();
                    shard.releasing = Some(Release {
                        task: tokio::spawn(async move {
                            engine.release(n).await;
                        }),
                        give_back: false,
                    });
                }
            }
        }
    }

    /// Renews the member Lease and every shard held, each on the version last seen, at once.
    async fn renew(&mut self, deadline: Instant) {
        let bounded = |attempt| async move {
            tokio::time::timeout_at(deadline, attempt)
                .await
                .unwrap_or(Attempt::Failed(ApiFailure::Timeout))
        };
        let member = bounded(self.member.acquire_or_renew_observed());
        let shards = futures::future::join_all(
            self.shards
                .iter_mut()
                .enumerate()
                .filter(|(_, shard)| shard.role.holds())
                .map(|(n, shard)| async move {
                    (n, bounded(shard.lock.acquire_or_renew_observed()).await)
                }),
        );
        let (member, shards) = futures::join!(member, shards);
        if let Attempt::Failed(failure) = member {
            self.failed::<()>(failure);
        }
        for (n, attempt) in shards {
            let shard = &mut self.shards[n];
            let role = match attempt {
                Attempt::Held => {
                    shard.renewed = Instant::now();
                    Leadership::Leader
                }
                // A write refused on its version: another replica wrote the Lease. Nothing is
                // written until the next look tells who holds it.
                Attempt::HeldBy(_) => Leadership::Isolated,
                Attempt::Failed(failure) => {
                    self.metrics
                        .record_reconcile(ReconcileResult::Error("lease"));
                    tracing::warn!(
                        shard = n,
                        error = failure.category(),
                        "shard Lease not renewed"
                    );
                    shard
                        .role
                        .after_failed_renewal(shard.renewed.elapsed(), &self.timings)
                }
            };
            if role != shard.role {
                match role {
                    Leadership::Isolated => tracing::warn!(
                        shard = n,
                        "shard Lease not renewed within the renew deadline: writing stops, probing goes on"
                    ),
                    _ => tracing::info!(shard = n, "shard Lease renewed: writing again"),
                }
                shard.role = role;
                self.gate.set(n, role);
            }
        }
    }

    /// Gives up or takes shards to hold `quota`.
    async fn rebalance(&mut self, quota: usize, deadline: Instant) {
        let views: Vec<View> = self
            .shards
            .iter()
            .map(|shard| match shard {
                Shard {
                    releasing: Some(_), ..
                } => View::Releasing,
                _ if shard.role.holds() => View::Held,
                _ if shard.lock.other_holder().is_none() => View::Free,
                _ => View::Taken,
            })
            .collect();
        let Moves { take, release } = moves(&views, quota);
        for n in release {
            tracing::info!(
                shard = n,
                quota,
                "over quota: stopping the shard's checks to give it up"
            );
            let (engine, gate) = (self.engine.clone(), self.gate.clone());
            self.shards[n].releasing = Some(Release {
                task: tokio::spawn(flush(engine, gate, n)),
                give_back: true,
            });
        }
        if take.is_empty() || self.engine.is_shut_down() {
            return;
        }
        let attempts = futures::future::join_all(
            self.shards
                .iter_mut()
                .enumerate()
                .filter(|(n, _)| take.contains(n))
                .map(|(n, shard)| async move {
                    let attempt =
                        tokio::time::timeout_at(deadline, shard.lock.acquire_or_renew_observed());
                    (
                        n,
                        attempt
                            .await
                            .unwrap_or(Attempt::Failed(ApiFailure::Timeout)),
                    )
                }),
        )
        .await;
        for (n, attempt) in attempts {
            match attempt {
                Attempt::Held => {
                    tracing::info!(shard = n, quota, "shard taken: probing its checks");
                    let shard = &mut self.shards[n];
                    shard.role = Leadership::Leader;
                    shard.renewed = Instant::now();
                    self.gate.set(n, Leadership::Leader);
                    self.engine.take(n);
                }
                Attempt::HeldBy(_) => {} // another replica was first
                Attempt::Failed(failure) => {
                    self.failed::<()>(failure);
                }
            }
        }
    }

    /// Shards whose checks have stopped: their Leases are given back.
    async fn hand_back_released(&mut self, deadline: Instant) {
        let done: Vec<usize> = (0..SHARDS)
            .filter(|n| {
                self.shards[*n]
                    .releasing
                    .as_ref()
                    .is_some_and(|r| r.task.is_finished())
            })
            .collect();
        for n in done {
            let shard = &mut self.shards[n];
            let give_back = shard.releasing.take().is_some_and(|r| r.give_back);
            if !give_back {
                continue;
            }
            shard.role = Leadership::Standby;
            self.gate.set(n, Leadership::Standby);
            self.engine.drop_shard(n);
            match tokio::time::timeout_at(deadline, shard.lock.release()).await {
                Ok(Ok(())) => tracing::info!(shard = n, "shard given up"),
                Ok(Err(failure)) => {
                    tracing::warn!(
                        shard = n,
                        error = failure.category(),
                        "could not release the shard's Lease; it expires by itself"
                    );
                }
                Err(_elapsed) => {
                    tracing::warn!(
                        shard = n,
                        "releasing the shard's Lease timed out; it expires by itself"
                    );
                }
            }
        }
    }

    /// Deletes the member Leases of replicas long gone.
    async fn collect_garbage(&mut self, deadline: Instant) {
        let dead: Vec<Lease> = self
            .members
            .values()
            .filter(|(lease, since)| {
                self.member_view(lease, *since)
                    .is_none_or(|m| m.is_long_dead())
            })
            .map(|(lease, _)| lease.clone())
            .collect();
        for lease in dead {
            let name = lease.metadata.name.clone().unwrap_or_default();
            match tokio::time::timeout_at(deadline, lease::delete(&self.api, &lease)).await {
                Ok(Ok(())) => {
                    tracing::info!(lease = %name, "deleted the member Lease of a replica long gone");
                    self.members.remove(&name);
                }
                Ok(Err(failure)) => {
                    self.failed::<()>(failure);
                }
                Err(_elapsed) => return,
            }
        }
    }

    /// At the end (every check stopped, the last statuses written): every shard held is
    /// released at once and the member Lease deleted, so the others take over at their next
    /// look instead of after the lease duration.
    async fn give_up_all(&mut self) {
        let deadline = Instant::now() + self.timings.retry;
        for (n, shard) in self.shards.iter_mut().enumerate() {
            if shard.role.holds() {
                shard.role = Leadership::Standby;
                self.gate.set(n, Leadership::Standby);
                self.engine.drop_shard(n);
            }
        }
        let released = futures::future::join_all(
            self.shards
                .iter_mut()
                .map(|shard| tokio::time::timeout_at(deadline, shard.lock.release())),
        );
        let deleted = tokio::time::timeout_at(deadline, self.member.delete());
        let (released, deleted) = futures::join!(released, deleted);
        let failed = released.iter().filter(|r| !matches!(r, Ok(Ok(())))).count();
        if failed > 0 || !matches!(deleted, Ok(Ok(()))) {
            tracing::warn!(
                shards = failed,
                "could not give every Lease back; they expire by themselves"
            );
        } else {
            tracing::info!("released the shards");
        }
    }

    /// `voipcheck_shards`, `voipcheck_shards_held` and `voipcheck_leader`.
    fn publish(&self) {
        let held = self
            .shards
            .iter()
            .filter(|s| s.role == Leadership::Leader)
            .count();
        self.metrics.set_shards(SHARDS, held);
        self.metrics.set_leader(held > 0);
    }
}

/// Stops the checks of `shard` and waits (at most [`FLUSH_DEADLINE`]) until their last
/// statuses are written.
async fn flush(engine: Arc<Engine>, gate: Arc<Gate>, shard: usize) {
    let ids = engine.release(shard).await;
    let deadline = Instant::now() + FLUSH_DEADLINE;
    while (engine.pending(&ids) || gate.is_writing(shard)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use View::{Free, Held, Releasing, Taken};

    fn names(members: &[&str]) -> Vec<String> {
        members.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn the_quotas_of_any_number_of_members_add_up_to_every_shard_once() {
        for n in 1..=20 {
            let members: Vec<String> = (0..n).map(|i| format!("replica-{i:02}")).collect();
            let quotas: Vec<usize> = members.iter().map(|m| quota(&members, m)).collect();
            assert_eq!(
                quotas.iter().sum::<usize>(),
                SHARDS,
                "{n} members: {quotas:?}"
            );
            let (min, max) = (quotas.iter().min(), quotas.iter().max());
            assert!(max.unwrap() - min.unwrap() <= 1, "{n} members: {quotas:?}");
        }
        // The first by identity get the remainder, whatever the order listed.
        let five = names(&["e", "c", "a", "d", "b"]);
        let quotas: Vec<usize> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|m| quota(&five, m))
            .collect();
        assert_eq!(quotas, [3, 3, 2, 2, 2]);
    }

    #[test]
    fn a_replica_counts_itself_once_listed_or_not() {
        assert_eq!(quota(&[], "a"), 12);
        assert_eq!(quota(&names(&["b"]), "a"), 6);
        assert_eq!(quota(&names(&["a", "b", "c"]), "a"), 4);
        assert_eq!(quota(&names(&["b", "c", "d"]), "a"), 3);
    }

    #[test]
    fn over_quota_the_highest_shards_are_given_up() {
        let views = [Held, Held, Taken, Held, Held, Free];
        assert_eq!(
            moves(&views, 2),
            Moves {
                take: vec![],
                release: vec![3, 4],
            }
        );
    }

    #[test]
    fn under_quota_the_lowest_free_shards_are_taken_and_releasing_ones_wait() {
        let views = [Taken, Releasing, Free, Held, Free, Free];
        assert_eq!(
            moves(&views, 3),
            Moves {
                take: vec![2, 4],
                release: vec![],
            }
        );
        assert_eq!(moves(&views, 1), Moves::default());
        assert_eq!(moves(&[Taken, Taken], 6), Moves::default());
    }

    #[test]
    fn a_member_is_gone_after_its_duration_unchanged_and_deleted_much_later() {
        let duration = Duration::from_secs(15);
        let member = |unchanged_for, released| Member {
            identity: "b".into(),
            released,
            unchanged_for,
            duration,
        };
        assert!(member(duration, false).is_live());
        let gone = member(duration + Duration::from_millis(1), false);
        assert!(!gone.is_live() && !gone.is_long_dead());
        assert!(member(duration * LONG_DEAD + Duration::from_millis(1), false).is_long_dead());
        let stopped = member(Duration::ZERO, true);
        assert!(!stopped.is_live() && stopped.is_long_dead());
    }

    #[test]
    fn shards_spread_uids_evenly_and_stay_put() {
        let mut counts = [0usize; SHARDS];
        for i in 0..12_000 {
            let uid = format!("7c0a3a52-1b2e-4f6a-9d1e-{i:012}");
            counts[shard_of(Some(&uid), &CheckId::new("ns", "x"))] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        let id = CheckId::new("telephony", "portal");
        assert_eq!(shard_of(Some("a-uid"), &id), shard_of(Some("a-uid"), &id));
        assert!(shard_of(None, &id) < SHARDS);
    }
}
