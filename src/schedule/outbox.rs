//! Where runs leave their status: the newest status per check, waiting for the one consumer
//! (the operator's status writer, `voipcheck run`'s printer).
//!
//! Probing must never wait on the API server (DESIGN.md §9): a run hands its status over with
//! [`Outbox::offer`], which never blocks, and a newer status of a check replaces the older one
//! still waiting. Nothing queues without bound: at most one status per check, and per check at
//! most [`MAX_TRANSITIONS`] transitions (the Events to publish), the oldest given up first and
//! counted. A write that failed is handed back with [`Outbox::retry`]; it waits for its retry
//! time unless a newer status of the check arrives first, which then carries the transitions of
//! both.

use super::StatusUpdate;
use crate::check::CheckId;
use crate::status::Transition;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Transitions kept per check while its Events cannot be published. A flapping condition on a
/// throttled API server would otherwise grow the list without bound; the newest matter most
/// (the status shows the current state anyway).
pub const MAX_TRANSITIONS: usize = 32;

/// The pending statuses.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the consumer; `notify_one` keeps a permit when it is not waiting, so no offer is
    /// missed between its look at the state and its wait.
    wake: Notify,
    /// Sees each status as it is offered (see [`Outbox::tapped`]).
    tap: Option<Tap>,
}

/// What sees every status offered to an outbox, at once and without waiting.
pub type Tap = Box<dyn Fn(&StatusUpdate) + Send + Sync>;

#[derive(Default)]
struct State {
    pending: HashMap<CheckId, Pending>,
    /// Transitions given up since the start (the `events_dropped_total` counter reads it).
    dropped: u64,
    closed: bool,
}

struct Pending {
    update: StatusUpdate,
    /// A failed write is not retried before this.
    not_before: Option<Instant>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// An outbox that also hands each status offered to `tap` (the operator's aggregator
    /// weighs its own location's newest status at once, not once it is written). The tap
    /// must not block: offers come from the runs.
    pub fn tapped(tap: Tap) -> Self {
        Self {
            tap: Some(tap),
            ..Self::default()
        }
    }

    /// The status of a run; replaces the check's pending one (keeping its transitions first).
    pub fn offer(&self, update: StatusUpdate) {
        if let Some(tap) = &self.tap {
            tap(&update);
        }
        let mut state = self.lock();
        state.merge(update, None);
        drop(state);
        self.wake.notify_one();
    }

    /// A write of `update` failed: it is offered again at `at`, unless a newer status of the
    /// check arrived meanwhile (that one wins, with `update`'s transitions before its own).
    /// After [`Outbox::close`] it is given up: the last round of writes is not retried, so the
    /// end is not held up by an API server that keeps failing.
    pub fn retry(&self, update: StatusUpdate, at: Instant) {
        let mut state = self.lock();
        if state.closed {
            state.dropped += update.transitions.len() as u64;
            return;
        }
        match state.pending.remove(&update.id) {
            Some(newer) => {
                state.merge(update, Some(at));
                // The newer status replaces the status of the failed write; the merge keeps
                // both sets of transitions in order and lets the newer one go out at once.
                state.merge(newer.update, None);
            }
            None => state.merge(update, Some(at)),
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Waits for pending statuses that are due and takes them all; once closed, takes what is
    /// left (retries too, for one last try), then `None`.
    pub async fn take(&self) -> Option<Vec<StatusUpdate>> {
        loop {
            let next = {
                let mut state = self.lock();
                let now = Instant::now();
                let closed = state.closed;
                let due: Vec<CheckId> = state
                    .pending
                    .iter()
                    .filter(|(_, p)| closed || p.not_before.is_none_or(|at| at <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                if !due.is_empty() {
                    let taken = due
                        .iter()
                        .filter_map(|id| state.pending.remove(id))
                        .map(|p| p.update)
                        .collect();
                    return Some(taken);
                }
                if closed {
                    return None;
                }
                state.pending.values().filter_map(|p| p.not_before).min()
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Gives up every pending status (this replica stopped leading: the next leader computes
    /// its own); returns how many there were.
    pub fn clear(&self) -> usize {
        let mut state = self.lock();
        let cleared = state.pending.len();
        state.pending.clear();
        cleared
    }

    /// Removes the pending status of a check that is gone.
    pub fn forget(&self, id: &CheckId) {
        self.lock().pending.remove(id);
    }

    /// Whether a status of check `id` waits.
    pub fn holds(&self, id: &CheckId) -> bool {
        self.lock().pending.contains_key(id)
    }

    /// Checks whose latest status is waiting.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Transitions given up so far because a check had [`MAX_TRANSITIONS`] waiting.
    pub fn dropped_transitions(&self) -> u64 {
        self.lock().dropped
    }

    /// Resolves once [`Outbox::close`] was called.
    pub async fn closed(&self) {
        while !self.lock().closed {
            self.wake.notified().await;
        }
    }

    /// No more offers will come: [`Outbox::take`] returns what is due, then `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Puts `update` in place of the check's pending status, the older transitions first.
    fn merge(&mut self, mut update: StatusUpdate, not_before: Option<Instant>) {
        if let Some(older) = self.pending.remove(&update.id) {
            let mut transitions: Vec<Transition> = older.update.transitions;
            transitions.append(&mut update.transitions);
            update.transitions = transitions;
        }
        let excess = update.transitions.len().saturating_sub(MAX_TRANSITIONS);
        if excess > 0 {
            update.transitions.drain(..excess);
            self.dropped += excess as u64;
        }
        self.pending
            .insert(update.id.clone(), Pending { update, not_before });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConditionStatus, ConditionType, Reason, VoipCheckStatus};
    use std::sync::Arc;
    use std::time::Duration;

    fn update(name: &str, generation: i64, transitions: usize) -> StatusUpdate {
        StatusUpdate {
            id: CheckId::new("ns", name),
            uid: None,
            generation: Some(generation),
            status: Arc::new(VoipCheckStatus {
                observed_generation: Some(generation),
                ..Default::default()
            }),
            transitions: (0..transitions)
                .map(|i| Transition {
                    type_: ConditionType::SipRegistered,
                    from: None,
                    to: (ConditionStatus::False, Reason::Timeout),
                    message: format!("{generation}.{i}"),
                })
                .collect(),
        }
    }

    fn messages(update: &StatusUpdate) -> Vec<&str> {
        update
            .transitions
            .iter()
            .map(|t| t.message.as_str())
            .collect()
    }

    #[tokio::test]
    async fn the_newest_status_wins_and_carries_every_transition_in_order() {
        let outbox = Outbox::new();
        outbox.offer(update("a", 1, 1));
        outbox.offer(update("a", 2, 1));
        outbox.offer(update("b", 1, 0));
        assert_eq!(outbox.len(), 2);
        let mut taken = outbox.take().await.unwrap();
        taken.sort_by(|x, y| x.id.name.cmp(&y.id.name));
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].generation, Some(2));
        assert_eq!(messages(&taken[0]), ["1.0", "2.0"]);
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn transitions_are_bounded_per_check_keeping_the_newest() {
        let outbox = Outbox::new();
        for generation in 0..10 {
            outbox.offer(update("a", generation, 5));
        }
        let taken = outbox.take().await.unwrap();
        assert_eq!(taken[0].transitions.len(), MAX_TRANSITIONS);
        assert_eq!(messages(&taken[0]).last(), Some(&"9.4"));
        assert_eq!(outbox.dropped_transitions(), 50 - MAX_TRANSITIONS as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_waits_for_its_retry_time_unless_a_newer_status_arrives() {
        let outbox = Outbox::new();
        outbox.retry(update("a", 1, 1), Instant::now() + Duration::from_secs(5));
        let start = Instant::now();
        let taken = outbox.take().await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(taken[0].generation, Some(1));

        outbox.retry(update("a", 1, 1), Instant::now() + Duration::from_secs(5));
        outbox.offer(update("a", 2, 1));
        let start = Instant::now();
        let taken = outbox.take().await.unwrap();
        assert_eq!(Instant::now(), start, "the newer status goes out at once");
        assert_eq!(taken[0].generation, Some(2));
        assert_eq!(messages(&taken[0]), ["1.0", "2.0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_of_an_older_status_does_not_replace_a_newer_one() {
        let outbox = Outbox::new();
        outbox.offer(update("a", 2, 1));
        outbox.retry(update("a", 1, 1), Instant::now() + Duration::from_secs(5));
        let taken = outbox.take().await.unwrap();
        assert_eq!(taken[0].generation, Some(2));
        assert_eq!(messages(&taken[0]), ["1.0", "2.0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn once_closed_a_waiting_retry_is_tried_at_once_and_a_failed_one_given_up() {
        let outbox = Outbox::new();
        outbox.retry(update("a", 1, 2), Instant::now() + Duration::from_secs(60));
        outbox.close();
        let start = Instant::now();
        let last = outbox.take().await.unwrap();
        assert_eq!(Instant::now(), start);
        outbox.retry(last.into_iter().next().unwrap(), Instant::now());
        assert!(outbox.take().await.is_none());
        assert_eq!(outbox.dropped_transitions(), 2);
    }

    #[tokio::test]
    async fn take_ends_once_closed_and_drained() {
        let outbox = std::sync::Arc::new(Outbox::new());
        let consumer = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let mut seen = 0;
                while let Some(batch) = outbox.take().await {
                    seen += batch.len();
                }
                seen
            }
        });
        outbox.offer(update("a", 1, 0));
        tokio::task::yield_now().await;
        outbox.offer(update("b", 1, 0));
        outbox.close();
        assert_eq!(consumer.await.unwrap(), 2);
    }
}
