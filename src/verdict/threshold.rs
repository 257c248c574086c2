//! Consecutive-run thresholds: one failed run does not turn a condition False, nor does one
//! good run turn it True again (the `failureThreshold` / `successThreshold` of the spec, as
//! Kubernetes probes count them).

use super::probe::{Blame, Observation};
use crate::api::{ConditionStatus, Reason};
use std::time::SystemTime;

/// Consecutive runs needed to change a condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Thresholds {
    failure: u32,
    success: u32,
}

impl Thresholds {
    /// 0 counts as 1: a run always counts.
    pub fn new(failure: u32, success: u32) -> Self {
        Thresholds {
            failure: failure.max(1),
            success: success.max(1),
        }
    }

    /// Every run decides on its own (for conditions that already smooth over a window).
    pub const NONE: Thresholds = Thresholds {
        failure: 1,
        success: 1,
    };
}

/// One condition between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tracked {
    pub status: ConditionStatus,
    pub reason: Reason,
    /// The message of the decided status and reason.
    pub detail: String,
    /// The condition's message after the latest run: `detail`, or what the latest run saw
    /// while it has not (yet) moved the status.
    pub message: String,
    /// Where the cause of a False status lies.
    pub blame: Option<Blame>,
    pub failures: u32,
    pub successes: u32,
    /// When the first of the current failed runs started. Kept through a recovery that has
    /// not reached the success threshold; cleared when the condition is True again.
    pub since: Option<SystemTime>,
}

impl Tracked {
    /// A condition without a decided status: Unknown `Pending`.
    pub fn pending(message: String) -> Self {
        Tracked {
            status: ConditionStatus::Unknown,
            reason: Reason::Pending,
            detail: message.clone(),
            message,
            blame: None,
            failures: 0,
            successes: 0,
            since: None,
        }
    }

    /// A condition the latest run could not measure (`MediaQuality` of a call that was not
    /// answered): Unknown `NotMeasured`, as Kubernetes conventions write a condition whose
    /// state cannot be determined, its counts started afresh.
    pub fn not_measured(message: String) -> Self {
        Tracked {
            reason: Reason::NotMeasured,
            ..Tracked::pending(message)
        }
    }

    /// Folds one run (started at `at`) into the condition. A failed run makes it False after
    /// `failure` consecutive failures, and a False condition follows every further failure's
    /// reason; a passed run makes it True at once unless it is False, which takes `success`
    /// consecutive passes. Until then status and reason stay, and the message says how far the
    /// count is.
    pub fn step(
        previous: Option<&Tracked>,
        seen: Observation,
        th: Thresholds,
        at: SystemTime,
    ) -> Self {
        let mut next = previous
            .cloned()
            .unwrap_or_else(|| Tracked::pending(String::new()));
        match seen.fault {
            None => {
                next.successes = next.successes.saturating_add(1);
                next.failures = 0;
                if next.status == ConditionStatus::False && next.successes < th.success {
                    next.message = format!(
                        "{} (recovering: {} of {} successful runs)",
                        next.detail, next.successes, th.success
                    );
                } else {
                    next.decide(ConditionStatus::True, seen);
                    next.since = None;
                }
            }
            Some(_) => {
                next.failures = next.failures.saturating_add(1);
                next.successes = 0;
                next.since.get_or_insert(at);
                if next.status == ConditionStatus::False || next.failures >= th.failure {
                    next.decide(ConditionStatus::False, seen);
                } else {
                    next.message = format!(
                        "{} ({} of {} failed runs before False)",
                        seen.detail, next.failures, th.failure
                    );
                }
            }
        }
        next
    }

    fn decide(&mut self, status: ConditionStatus, seen: Observation) {
        self.status = status;
        self.reason = seen.reason;
        self.blame = seen.fault;
        self.message = seen.detail.clone();
        self.detail = seen.detail;
    }
}
