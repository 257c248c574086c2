//! When a check is due: every check runs on its own grid of slots, `interval` apart and shifted
//! by a per-check offset, so 10,000 checks with the same interval do not all fire at once.
//!
//! The offset comes from a hash of the check's namespace and name, not from a random number,
//! and the grid is laid on the wall clock (`UNIX epoch + offset + k × interval`), not on the
//! process's start: after a restart, or a failover to another replica, each check keeps its
//! place, and its new holder's next run comes one interval after its old holder's last, neither
//! sooner (a duplicate probe) nor later (a gap). Replicas agree as far as their clocks do
//! (NTP keeps a cluster's within milliseconds).
//!
//! A check that missed its slot (its holder died, the operator was down longer than an
//! interval) does not wait up to another interval for its next one: it runs within a quarter
//! interval ([`catch_up`]), spread by its offset so a take of thousands of checks is no burst,
//! then on its grid again.

use crate::check::CheckId;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Where in its interval `id` runs: a stable value in `[0, interval)`.
pub fn offset(id: &CheckId, interval: Duration) -> Duration {
    let interval_nanos = interval.as_nanos();
    if interval_nanos == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::new()
        .chain_update(id.namespace.as_bytes())
        .chain_update(b"/")
        .chain_update(id.name.as_bytes())
        .finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    let nanos = u128::from_be_bytes(first) % interval_nanos;
    nanos_duration(nanos)
}

/// The wall clock the grids are laid on, read through the scheduler's clock (tokio's, which
/// the tests pause): `wall` was the time at `instant`. Read once, when the scheduler starts,
/// so a later step of the system clock moves no check.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        Clock { instant, wall }
    }

    /// The system's wall clock, now.
    pub fn system() -> Self {
        Clock::new(Instant::now(), SystemTime::now())
    }

    /// Nanoseconds since the UNIX epoch at `at`.
    fn epoch_nanos(&self, at: Instant) -> u128 {
        let since = self.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let wall = match at.checked_duration_since(self.instant) {
            Some(after) => since + after,
            None => since.saturating_sub(self.instant - at),
        };
        wall.as_nanos()
    }
}

/// The first slot at or after `now` on the grid `UNIX epoch + offset + k * interval`.
pub fn first_due(clock: &Clock, now: Instant, offset: Duration, interval: Duration) -> Instant {
    let now_nanos = clock.epoch_nanos(now);
    now + nanos_duration(slot_at_or_after(now_nanos, offset, interval) - now_nanos)
}

/// When a check whose last run started at `last_run` runs first from `now`, if it missed a
/// slot: the slot after the one it ran on has passed. Its run then comes after a part of its
/// offset (within a quarter interval), so the checks of a shard taken over catch up spread,
/// not at once. `None`: it missed nothing, its next slot is [`first_due`].
///
/// The slot it ran on is the one at most half an interval before its start: a run starts
/// late by its lag, and a written `lastRun` is truncated to the second.
pub fn catch_up(
    clock: &Clock,
    now: Instant,
    last_run: SystemTime,
    offset: Duration,
    interval: Duration,
) -> Option<Instant> {
    let last = last_run.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    let next = slot_at_or_after(last + interval.as_nanos() / 2, offset, interval);
    (next < clock.epoch_nanos(now)).then(|| now + offset / 4)
}

/// The slot after a catch-up run due at `ran`: the grid's first at least half an interval
/// later, so the check does not run twice within moments.
pub fn after_catch_up(
    clock: &Clock,
    ran: Instant,
    offset: Duration,
    interval: Duration,
) -> Instant {
    first_due(clock, ran + interval / 2, offset, interval)
}

/// The first slot at or after `nanos` (since the epoch) on the grid of `offset` and `interval`.
fn slot_at_or_after(nanos: u128, offset: Duration, interval: Duration) -> u128 {
    let step = interval.as_nanos().max(1);
    let past_slot = (nanos + step - offset.as_nanos() % step) % step;
    nanos + (step - past_slot) % step
}

/// A wall-clock time on the grid of every interval the tests use (whole days since the epoch).
#[cfg(test)]
pub(super) fn aligned() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(20_000 * 86_400)
}

/// `nanos` (below an interval's) as a Duration.
fn nanos_duration(nanos: u128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_stable_and_within_the_interval() {
        let interval = Duration::from_secs(30);
        let id = CheckId::new("telephony", "maxmuster-cloud");
        let offset_now = offset(&id, interval);
        assert!(offset_now < interval);
        assert_eq!(
            offset(&id.clone(), interval),
            offset_now,
            "same id, same slot"
        );
        assert_ne!(
            offset(&CheckId::new("telephony", "maxmuster-connect"), interval),
            offset_now
        );
        // The namespace matters as much as the name.
        assert_ne!(
            offset(&CheckId::new("other", "maxmuster-cloud"), interval),
            offset_now
        );
    }

    #[test]
    fn offsets_of_many_checks_fill_the_interval_evenly() {
        let interval = Duration::from_secs(30);
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let id = CheckId::new("telephony", format!("check-{i}"));
            let bucket = offset(&id, interval).as_secs_f64() / 3.0;
            buckets[bucket as usize] += 1;
        }
        // 1,000 expected per 3 s bucket; a uniform hash stays well within ±15 %.
        for (i, count) in buckets.iter().enumerate() {
            assert!((850..=1150).contains(count), "bucket {i}: {count}");
        }
    }

    #[test]
    fn first_due_is_the_next_slot_of_the_wall_clock_grid() {
        let origin = Instant::now();
        let clock = Clock::new(origin, aligned());
        let offset = Duration::from_secs(7);
        let interval = Duration::from_secs(30);
        let due = |after: u64| {
            first_due(
                &clock,
                origin + Duration::from_secs(after),
                offset,
                interval,
            )
        };
        assert_eq!(due(0), origin + Duration::from_secs(7));
        assert_eq!(due(7), origin + Duration::from_secs(7));
        assert_eq!(due(8), origin + Duration::from_secs(37));
        assert_eq!(due(37), origin + Duration::from_secs(37));
        assert_eq!(due(100), origin + Duration::from_secs(127));
        // Another process, started 1,234 s later at the same wall-clock time: the same slots.
        let later = origin + Duration::from_secs(1234);
        let other = Clock::new(later, aligned() + Duration::from_secs(1234));
        assert_eq!(
            first_due(&other, later, offset, interval),
            origin + Duration::from_secs(1237)
        );
    }

    #[test]
    fn a_check_that_missed_its_slot_catches_up_within_a_quarter_interval() {
        let origin = Instant::now();
        let clock = Clock::new(origin, aligned());
        let offset = Duration::from_secs(8);
        let interval = Duration::from_secs(30);
        let now = origin + Duration::from_secs(100);
        // Ran on the slot at +68 s (1 s late, as written: truncated): the next one, +98 s, passed.
        let ran = |secs: u64| aligned() + Duration::from_secs(secs);
        let catch_up = |last| catch_up(&clock, now, last, offset, interval);
        assert_eq!(catch_up(ran(69)), Some(now + Duration::from_secs(2)));
        assert_eq!(catch_up(ran(68)), Some(now + Duration::from_secs(2)));
        // Ran on the slot at +98 s (a handover): the next one is +128 s, nothing was missed.
        assert_eq!(catch_up(ran(98)), None);
        assert_eq!(catch_up(ran(99)), None);
        // A last run in the future (another replica's clock ahead): nothing was missed.
        assert_eq!(catch_up(ran(140)), None);
        // After the catch-up at +102 s, the slot at +128 s is more than half an interval on.
        let caught_up = now + Duration::from_secs(2);
        assert_eq!(
            after_catch_up(&clock, caught_up, offset, interval),
            origin + Duration::from_secs(128)
        );
        // One at +122 s skips the slot at +128 s.
        assert_eq!(
            after_catch_up(&clock, origin + Duration::from_secs(122), offset, interval),
            origin + Duration::from_secs(158)
        );
    }
}
