//! The VoipChecks the controllers' reflectors hold, one store per watched scope (a namespace,
//! or the whole cluster). The status writer reads an object's uid here for its Events, the
//! engine reads the status already written when it takes over, and deletion handling asks which
//! checks still exist.

use crate::api::VoipCheck;
use crate::check::CheckId;
use kube::runtime::reflector::{ObjectRef, Store};
use std::sync::Arc;

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
    pub async fn wait_until_ready(&self) -> bool {
        for store in &self.stores {
            if store.wait_until_ready().await.is_err() {
                return false;
            }
        }
        true
    }
}
