//! When a check is due: every check runs on its own grid of slots, `interval` apart and shifted
//! by a per-check offset, so 10,000 checks with the same interval do not all fire at once.
//!
//! The offset comes from a hash of the check's namespace and name, not from a random number:
//! after a restart (or a failover to another replica) each check keeps its place in the spread,
//! and the spread does not depend on the order in which checks are added.

use crate::check::CheckId;
use sha2::{Digest, Sha256};
use std::time::Duration;
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
    // `nanos` < interval's nanoseconds, which fit a Duration.
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The first slot at or after `now` on the grid `origin + offset + k * interval`.
pub fn first_due(origin: Instant, now: Instant, offset: Duration, interval: Duration) -> Instant {
    let first = origin + offset;
    if now <= first {
        return first;
    }
    let behind = (now - first).as_nanos();
    let step = interval.as_nanos().max(1);
    let slots = behind.div_ceil(step);
    let advance = step * slots;
    first + Duration::from_nanos(u64::try_from(advance).unwrap_or(u64::MAX))
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
    fn first_due_is_the_next_slot_of_the_grid() {
        let origin = Instant::now();
        let offset = Duration::from_secs(7);
        let interval = Duration::from_secs(30);
        let due = |after: u64| {
            first_due(
                origin,
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
    }
}
