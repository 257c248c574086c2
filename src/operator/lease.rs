//! One Lease (coordination.k8s.io/v1), read and written the way client-go's leader election
//! does: every write is a PUT carrying the resourceVersion last read, so a write based on an old
//! view is refused (409) instead of overwriting another holder; a holder is taken to be gone
//! when its record has not changed for the lease duration by *this* replica's clock (no clock
//! skew between nodes matters).
//!
//! Written here rather than taken from kube-lease-manager, which renews with a patch that has no
//! precondition (a renewal delayed past a takeover overwrites the new holder) and has no renew
//! deadline. The timing policy (when to renew, when to give up) is the caller's: `leader`.

use super::failure::ApiFailure;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use std::time::Duration;
use tokio::time::Instant;

/// What one attempt to acquire or renew found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease (acquired or renewed just now).
    Held,
    /// Another replica holds it, and its record changed within the lease duration.
    HeldBy(String),
    /// The API server could not be asked, or refused.
    Failed(ApiFailure),
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Create,
    /// This replica's own record: write a new renewTime.
    Renew,
    /// Nobody holds it, or its holder has not renewed for the lease duration.
    TakeOver,
    Wait(String),
}

/// Decides on `lease`, whose record has been the same since `unchanged_since`.
fn step(lease: Option<&Lease>, unchanged_since: Instant, me: &str, now: Instant) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Step::Renew,
        None | Some("") => Step::TakeOver,
        Some(holder) => {
            let duration = spec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
            if now.saturating_duration_since(unchanged_since) > Duration::from_secs(duration) {
                Step::TakeOver
            } else {
                Step::Wait(holder.to_owned())
            }
        }
    }
}

/// The record written: this replica as holder, renewed now; on a takeover a new acquireTime
/// and one more transition.
fn record(previous: Option<&LeaseSpec>, me: &str, duration: Duration, renew: bool) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    let previous = previous.cloned().unwrap_or_default();
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(duration.as_secs().min(i32::MAX as u64) as i32),
        acquire_time: if renew {
            previous.acquire_time.or(Some(now.clone()))
        } else {
            Some(now.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(match (renew, previous.lease_transitions) {
            (true, transitions) => transitions.unwrap_or(0),
            (false, Some(transitions)) => transitions.saturating_add(1),
            (false, None) => 0,
        }),
        ..LeaseSpec::default()
    }
}

/// One replica's view of the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The Lease as last read or written, and since when its record has not changed.
    seen: Option<(Lease, Instant)>,
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            seen: None,
        }
    }

    /// One attempt to acquire or renew. A holder renews optimistically on its last written
    /// version (one request); any other case reads the Lease first.
    pub async fn try_acquire_or_renew(&mut self) -> Attempt {
        if self.holds()
            && let Some((lease, _)) = self.seen.clone()
        {
            match self.write(&lease, true).await {
                Ok(()) => return Attempt::Held,
                Err(ApiFailure::Conflict) => {} // someone else wrote it: read what is there
                Err(failure) => return Attempt::Failed(failure),
            }
        }
        match self.api.get_opt(&self.name).await {
            Ok(lease) => self.observe(lease),
            Err(error) => return Attempt::Failed(ApiFailure::of(&error)),
        }
        self.acquire_or_renew_observed().await
    }

    /// Records `lease` (`None`: there is none) as read just now, by a GET or in a LIST of
    /// several; the time its record last changed by this replica's clock is kept while its
    /// resourceVersion stays the same.
    pub fn observe(&mut self, lease: Option<Lease>) {
        let now = Instant::now();
        let unchanged_since = match (&self.seen, &lease) {
            (Some((seen, at)), Some(lease))
                if seen.metadata.resource_version == lease.metadata.resource_version =>
            {
                *at
            }
            _ => now,
        };
        self.seen = lease.map(|lease| (lease, unchanged_since));
    }

    /// Who holds the Lease as last observed: `None` when this replica does or may take it
    /// (it is absent, free or expired), else the live holder.
    pub fn other_holder(&self) -> Option<String> {
        let (lease, unchanged_since) = match &self.seen {
            Some((lease, at)) => (Some(lease), *at),
            None => (None, Instant::now()),
        };
        match step(lease, unchanged_since, &self.identity, Instant::now()) {
            Step::Wait(holder) => Some(holder),
            Step::Create | Step::Renew | Step::TakeOver => None,
        }
    }

    /// Acquires or renews the Lease as last observed: one write, on its resourceVersion.
    pub async fn acquire_or_renew_observed(&mut self) -> Attempt {
        let (lease, unchanged_since) = match self.seen.clone() {
            Some((lease, at)) => (Some(lease), at),
            None => (None, Instant::now()),
        };
        let result = match step(
            lease.as_ref(),
            unchanged_since,
            &self.identity,
            Instant::now(),
        ) {
            Step::Wait(holder) => return Attempt::HeldBy(holder),
            Step::Create => self.create().await,
            Step::Renew => self.write(lease.as_ref().expect("read"), true).await,
            Step::TakeOver => self.write(lease.as_ref().expect("read"), false).await,
        };
        match result {
            Ok(()) => Attempt::Held,
            // Another replica wrote first: it holds the Lease now.
            Err(ApiFailure::Conflict) => Attempt::HeldBy(String::new()),
            Err(failure) => Attempt::Failed(failure),
        }
    }

    /// Gives the Lease up (holder cleared, on the version last written), so a standby takes
    /// over at its next attempt instead of after the lease duration.
    pub async fn release(&mut self) -> Result<(), ApiFailure> {
        let Some((mut lease, _)) = self.seen.clone().filter(|_| self.holds()) else {
            return Ok(());
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        lease.spec = Some(spec);
        self.put(&lease).await
    }

    /// Deletes the Lease as last seen, if this replica holds it (a member Lease at a graceful
    /// stop), on its resourceVersion.
    pub async fn delete(&mut self) -> Result<(), ApiFailure> {
        if !self.holds() {
            return Ok(());
        }
        let Some((lease, _)) = self.seen.take() else {
            return Ok(());
        };
        delete(&self.api, &lease).await
    }

    /// Whether the Lease as last seen names this replica.
    pub fn holds(&self) -> bool {
        self.seen.as_ref().is_some_and(|(lease, _)| {
            lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
        })
    }

    async fn create(&mut self) -> Result<(), ApiFailure> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(record(None, &self.identity, self.duration, false)),
        };
        let created = self
            .api
            .create(&PostParams::default(), &lease)
            .await
            .map_err(|e| ApiFailure::of(&e))?;
        self.seen = Some((created, Instant::now()));
        Ok(())
    }

    /// PUT of this replica's record on `lease`'s resourceVersion.
    async fn write(&mut self, lease: &Lease, renew: bool) -> Result<(), ApiFailure> {
        let mut next = lease.clone();
        next.metadata.managed_fields = None;
        next.spec = Some(record(
            lease.spec.as_ref(),
            &self.identity,
            self.duration,
            renew,
        ));
        self.put(&next).await
    }

    /// PUT of `lease` (refused with 409 unless its resourceVersion is the stored one); what
    /// was written becomes the Lease as last seen.
    async fn put(&mut self, lease: &Lease) -> Result<(), ApiFailure> {
        let written = self
            .api
            .replace(&self.name, &PostParams::default(), lease)
            .await
            .map_err(|e| ApiFailure::of(&e))?;
        self.seen = Some((written, Instant::now()));
        Ok(())
    }
}

/// Deletes `lease` unless it changed since it was read (a resourceVersion precondition): a
/// Lease renewed meanwhile is live and stays.
pub async fn delete(api: &Api<Lease>, lease: &Lease) -> Result<(), ApiFailure> {
    let name = lease.metadata.name.as_deref().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: lease.metadata.resource_version.clone(),
            uid: lease.metadata.uid.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(error) => match ApiFailure::of(&error) {
            // Already gone: what the delete was for.
            ApiFailure::NotFound => Ok(()),
            failure => Err(failure),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_taken_over_only_when_free_or_unchanged_for_its_duration() {
        let start = Instant::now();
        let later = |secs| start + Duration::from_secs(secs);
        assert_eq!(step(None, start, "a", start), Step::Create);
        let mine = lease(Some("a"), 15);
        assert_eq!(step(Some(&mine), start, "a", later(60)), Step::Renew);
        let theirs = lease(Some("b"), 15);
        assert_eq!(
            step(Some(&theirs), start, "a", later(15)),
            Step::Wait("b".into())
        );
        assert_eq!(step(Some(&theirs), start, "a", later(16)), Step::TakeOver);
        for free in [lease(None, 15), lease(Some(""), 15)] {
            assert_eq!(step(Some(&free), start, "a", start), Step::TakeOver);
        }
    }

    #[test]
    fn a_takeover_counts_a_transition_and_a_renewal_keeps_the_acquire_time() {
        let duration = Duration::from_secs(15);
        let first = record(None, "a", duration, false);
        assert_eq!(first.lease_transitions, Some(0));
        assert_eq!(first.holder_identity.as_deref(), Some("a"));
        assert_eq!(first.lease_duration_seconds, Some(15));
        let renewed = record(Some(&first), "a", duration, true);
        assert_eq!(renewed.acquire_time, first.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = record(Some(&renewed), "b", duration, false);
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    }
}
