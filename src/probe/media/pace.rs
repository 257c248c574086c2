//! A leg's 20 ms send clock: a Linux timerfd with absolute deadlines on CLOCK_MONOTONIC.
//!
//! Tokio's timer cannot keep the schedule within 1 ms: its wheel has 1 ms ticks, rounds a
//! deadline up to the next tick and parks in whole milliseconds, so a packet goes out 1–2 ms
//! late on an idle machine (measured with `cargo bench --bench call`), and that lateness is
//! jitter the probe itself would add to what it measures. The kernel's high-resolution timer
//! behind a timerfd wakes within tens of microseconds; its period is absolute (the kernel
//! keeps `start + n × 20 ms`), so a late wake-up never shifts the later packets. Tokio waits
//! on the descriptor like on a socket. No crate is needed for a periodic timerfd beyond
//! rustix's syscall wrappers.

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// A periodic timer, created when the leg is bound (so that running out of descriptors is a
/// bind error) and started when it runs.
#[derive(Debug)]
pub struct Pacer {
    fd: AsyncFd<OwnedFd>,
    armed: bool,
}

impl Pacer {
    pub fn new() -> io::Result<Pacer> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: `fd` is a valid descriptor we own; it moves into the `AsyncFd`, which
        // closes it only after deregistering, and nothing else closes or replaces it.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Pacer { fd, armed: false })
    }

    /// Starts ticking every `period`, the first tick at once; returns the instant the
    /// schedule counts from. Tokio's (and std's) `Instant` is CLOCK_MONOTONIC on Linux, the
    /// timer's clock, so `start + n × period` is the very deadline of tick `n`. Should the
    /// kernel refuse (it has no reason to), [`Pacer::tick`] fails and the leg falls back to
    /// Tokio's timer.
    pub fn start(&mut self, period: Duration) -> Instant {
        let start = Instant::now();
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        self.armed = timerfd_settime(
            &self.fd,
            TimerfdTimerFlags::ABSTIME,
            &Itimerspec {
                it_interval: timespec(period),
                it_value: now,
            },
        )
        .is_ok();
        start
    }

    /// Stops the ticks (after the last packet: no wake-ups while the leg only listens).
    pub fn stop(&mut self) {
        self.armed = false;
        // Failing to disarm costs a wake-up every 20 ms until the leg ends, nothing more.
        let _ = timerfd_settime(
            &self.fd,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: timespec(Duration::ZERO),
                it_value: timespec(Duration::ZERO),
            },
        );
    }

    /// Waits for the next tick, or returns at once with the ticks already passed (how many
    /// deadlines passed since the last call).
    pub async fn tick(&self) -> io::Result<u64> {
        if !self.armed {
            return Err(io::Error::other("the send timer is not running"));
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
                Ok(result) => return result.map(|_| u64::from_ne_bytes(expirations)),
                // Not readable after all: readiness cleared, wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_keep_an_absolute_schedule() {
        let mut pacer = Pacer::new().expect("a timerfd");
        assert!(pacer.tick().await.is_err(), "not started yet");
        let period = Duration::from_millis(5);
        let start = pacer.start(period);
        let mut ticks = 0;
        while ticks < 20 {
            ticks += pacer.tick().await.expect("a tick");
            // Never early; late only by scheduling, and never by the sum of earlier lateness.
            let due = start + period * (ticks as u32 - 1);
            let now = Instant::now();
            assert!(now >= due, "tick {ticks} early");
            assert!(
                now - due < Duration::from_millis(50),
                "tick {ticks}: {:?} late",
                now - due
            );
        }
        pacer.stop();
        assert!(pacer.tick().await.is_err(), "stopped");
    }
}
