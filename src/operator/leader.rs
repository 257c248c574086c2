//! Leading one shard: its Lease's timings and the faults each shard Lease is held under
//! ([`super::shards`] campaigns for all of them; one replica leads several shards).
//!
//! Timings ([`LeaseTimings`], client-go's defaults): a Lease lasts 15 s; its holder renews it
//! every 2 s, each attempt bounded so that a hung request cannot hold up the next; the others
//! look every 2 s and take a Lease whose record has not changed for 15 s by their own clock.
//! The shards of a replica killed move within ~17 s; on a graceful shutdown it releases its
//! Leases and the others take them at their next look (≤ 2 s).
//!
//! Faults, per shard:
//! - A renewal that fails (500, 429, a reset, a timeout) is retried at the next tick; the holder
//!   stays holder while one succeeds within the renew deadline (10 s). Nothing flaps.
//! - When the renew deadline passes, the holder stops writing the shard's statuses
//!   ([`Leadership::Isolated`]) — 5 s before its Lease can expire, which is longer than any
//!   write of the status writer takes — so no two replicas ever write one check.
//! - It keeps probing the shard's checks (metrics only) while it cannot see another holder:
//!   when the API server is unreachable for everyone, nobody can take the Lease, and stopping
//!   would leave every check unprobed for the whole API outage. A replica that does reach the
//!   API takes the shard over after the lease duration; the isolated one then sees the new
//!   holder at its next successful read and stops probing the shard. During a partition that
//!   lets only the others through, both probe for that while, and only the new holder writes.
//! - A renewal that lands late never overwrites another holder: every write carries the
//!   resourceVersion it was based on ([`super::lease`]).

use std::time::Duration;

/// What this replica knows about its role for one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// Another replica (or nobody) holds the shard's Lease.
    Standby,
    /// This replica holds the Lease: it probes the shard's checks and writes their status.
    Leader,
    /// This replica held the Lease but could not renew it in time: it writes nothing (another
    /// replica may hold it by now), and keeps probing while it cannot see another holder.
    Isolated,
}

/// How long the Lease lasts, and when its holder renews or gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease stays valid after its last renewal.
    pub duration: Duration,
    /// A holder that has not renewed for this long stops writing; shorter than `duration` by
    /// more than the status writer's request deadline.
    pub renew_deadline: Duration,
    /// Between two attempts (renewals, or looks for free shards).
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

/// Which Leases, and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The prefix of every Lease name ([`super::shards`] names them).
    pub name: String,
    pub namespace: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    pub timings: LeaseTimings,
}

impl Leadership {
    /// Whether this replica holds the shard's Lease, as far as it knows (isolated too).
    pub fn holds(self) -> bool {
        matches!(self, Leadership::Leader | Leadership::Isolated)
    }

    /// The role after a renewal failed `since_renewal` after the last one that succeeded: a
    /// holder stops writing once the renew deadline has passed, and nothing else changes.
    pub fn after_failed_renewal(self, since_renewal: Duration, timings: &LeaseTimings) -> Self {
        match self {
            Leadership::Leader if since_renewal >= timings.renew_deadline => Leadership::Isolated,
            role => role,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_stops_writing_only_once_the_renew_deadline_has_passed() {
        let timings = LeaseTimings::default();
        let within = timings.renew_deadline - Duration::from_millis(1);
        let leader = Leadership::Leader;
        assert_eq!(leader.after_failed_renewal(within, &timings), leader);
        let late = leader.after_failed_renewal(timings.renew_deadline, &timings);
        assert_eq!(late, Leadership::Isolated);
        assert!(late.holds());
        let standby = Leadership::Standby;
        assert_eq!(
            standby.after_failed_renewal(timings.duration, &timings),
            standby
        );
        assert!(!standby.holds());
    }
}
