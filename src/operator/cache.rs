//! The VoipChecks the controllers' reflectors hold, one store per watched scope (a namespace,
//! or the whole cluster). The status writer reads an object's uid here for its Events, the
//! engine reads the status already written when it takes over, and deletion handling asks which
//! checks still exist.

use crate::api::VoipCheck;
use crate::check::CheckId;
use kube::runtime::reflector::{ObjectRef, Store};
use std::sync::Arc;
use std::time::Duration;

/// Read access to every watched scope's cache. Cloning shares the stores.
#[derive(Clone, Default)]
pub struct Checks {
    stores: Vec<Store<VoipCheck>>,
}

impl Checks {
    pub fn new(stores: Vec<Store<VoipCheck>>) -> Self {
        Self { stores }
    }

    /// The cached object of check `id`, if it exists.
    pub fn get(&self, id: &CheckId) -> Option<Arc<VoipCheck>> {
        let key = ObjectRef::new(&id.name).within(&id.namespace);
        self.stores.iter().find_map(|store| store.get(&key))
    }

    /// Whether check `id` exists.
    pub fn contains(&self, id: &CheckId) -> bool {
        self.get(id).is_some()
    }

    /// Resolves once every store has been filled by its first list (false if a store's reflector
    /// was dropped before that).
    ///
    /// Asks again every [`READY_RECHECK`]: a store's readiness future wakes only its most recent
    /// waiter (kube-runtime's `DelayedInit` holds one waker), and the controller waits on the
    /// same store, so a single wait here could sleep forever.
    pub async fn wait_until_ready(&self) -> bool {
        for store in &self.stores {
            loop {
                match tokio::time::timeout(READY_RECHECK, store.wait_until_ready()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_writer_dropped)) => return false,
                    Err(_not_yet) => continue,
                }
            }
        }
        true
    }
}

/// How often readiness is asked again while waiting.
const READY_RECHECK: Duration = Duration::from_millis(250);
