//! The VoipChecks the controllers' reflectors hold, one store per watched scope (a namespace,
//! or the whole cluster), each holding the checks of the shards this replica holds. The status
//! writer reads an object's uid here for its Events, the engine reads the status already
//! written when it takes over, and deletion handling asks which checks still exist.
//!
//! Objects that do not deserialize ([`InvalidCheck`]) are not in the reflectors' stores (those
//! hold typed VoipChecks) but in a side index here, filled by the controller's watch: they exist
//! all the same (their `InvalidSpec` status is written to them, deletion handling keeps them).

use super::shards::labelled_shard;
use crate::api::{InvalidCheck, VoipCheck};
use crate::check::CheckId;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Read access to every watched scope's cache. Cloning shares the stores.
#[derive(Clone, Default)]
pub struct Checks {
    stores: Vec<Store<VoipCheck>>,
    invalid: Arc<Mutex<BTreeMap<CheckId, InvalidCheck>>>,
}

impl Checks {
    pub fn new(stores: Vec<Store<VoipCheck>>) -> Self {
        Self {
            stores,
            invalid: Arc::default(),
        }
    }

    /// The cached object of check `id`, if it exists.
    pub fn get(&self, id: &CheckId) -> Option<Arc<VoipCheck>> {
        let key = ObjectRef::new(&id.name).within(&id.namespace);
        self.stores.iter().find_map(|store| store.get(&key))
    }

    /// Every check the caches hold (also those that do not deserialize).
    pub fn ids(&self) -> Vec<CheckId> {
        let mut ids: Vec<CheckId> = self
            .stores
            .iter()
            .flat_map(|store| store.state())
            .filter_map(|check| {
                let namespace = check.metadata.namespace.as_deref()?;
                Some(CheckId::new(namespace, check.metadata.name.as_deref()?))
            })
            .collect();
        ids.extend(self.invalid().keys().cloned());
        ids
    }

    /// Whether check `id` exists (also when it does not deserialize).
    pub fn contains(&self, id: &CheckId) -> bool {
        self.uid(id).is_some()
    }

    /// The uid of the cached object of check `id` (valid or not); `None` when there is none.
    pub fn uid(&self, id: &CheckId) -> Option<Option<String>> {
        match self.get(id) {
            Some(check) => Some(check.metadata.uid.clone()),
            None => self.invalid().get(id).map(|i| i.metadata.uid.clone()),
        }
    }

    /// The shard whose watch brought the cached object of check `id` (valid or not), by its
    /// label; `None` when there is no such object.
    pub fn labelled(&self, id: &CheckId) -> Option<usize> {
        match self.get(id) {
            Some(check) => labelled_shard(&check.metadata),
            None => labelled_shard(&self.invalid().get(id)?.metadata),
        }
    }

    /// Records that check `id` does not deserialize; `true` when that is news (it was valid,
    /// absent, or invalid in another version).
    pub fn set_invalid(&self, id: &CheckId, check: InvalidCheck) -> bool {
        let mut invalid = self.invalid();
        let news = invalid
            .get(id)
            .is_none_or(|known| !same_version(known, &check));
        invalid.insert(id.clone(), check);
        news
    }

    /// Check `id` deserializes again, or was deleted; `true` if it was invalid.
    pub fn forget_invalid(&self, id: &CheckId) -> bool {
        self.invalid().remove(id).is_some()
    }

    /// After a re-list of `shard`'s watch in `scope` (one namespace, or all for `None`): the
    /// invalid objects it found replace those it had brought. Returns those that are news (see
    /// [`Checks::set_invalid`]).
    pub fn relisted_invalid(
        &self,
        scope: Option<&str>,
        shard: usize,
        found: Vec<(CheckId, InvalidCheck)>,
    ) -> Vec<(CheckId, InvalidCheck)> {
        let mut invalid = self.invalid();
        let before: BTreeMap<CheckId, InvalidCheck> = invalid
            .extract_if(.., |id, check| {
                scope.is_none_or(|ns| id.namespace == ns)
                    && labelled_shard(&check.metadata) == Some(shard)
            })
            .collect();
        let mut news = Vec::new();
        for (id, check) in found {
            if before
                .get(&id)
                .is_none_or(|known| !same_version(known, &check))
            {
                news.push((id.clone(), check.clone()));
            }
            invalid.insert(id, check);
        }
        news
    }

    /// How many objects do not deserialize.
    pub fn invalid_count(&self) -> usize {
        self.invalid().len()
    }

    fn invalid(&self) -> MutexGuard<'_, BTreeMap<CheckId, InvalidCheck>> {
        self.invalid.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether two sightings of an invalid object are the same object in the same version (a status
/// write alone changes neither).
fn same_version(a: &InvalidCheck, b: &InvalidCheck) -> bool {
    a.metadata.uid == b.metadata.uid
        && a.metadata.generation == b.metadata.generation
        && a.error == b.error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SpecError;
    use crate::operator::shards::SHARD_LABEL;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// An invalid object in shard 3's watch.
    fn invalid(namespace: &str, name: &str, generation: i64) -> (CheckId, InvalidCheck) {
        invalid_in(namespace, name, generation, 3)
    }

    fn invalid_in(
        namespace: &str,
        name: &str,
        generation: i64,
        shard: usize,
    ) -> (CheckId, InvalidCheck) {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(generation),
            labels: Some([(SHARD_LABEL.to_owned(), shard.to_string())].into()),
            ..ObjectMeta::default()
        };
        let error = SpecError::new("spec.interval", "invalid type: integer, expected a string");
        let check = InvalidCheck {
            metadata,
            error,
            status: None,
        };
        (CheckId::new(namespace, name), check)
    }

    #[test]
    fn invalid_objects_exist_and_only_a_new_version_is_news() {
        let checks = Checks::new(Vec::new());
        let (x, bad) = invalid("a", "x", 1);
        assert!(!checks.contains(&x));
        assert!(checks.set_invalid(&x, bad.clone()));
        assert!(
            !checks.set_invalid(&x, bad),
            "the same version again (a status write)"
        );
        assert!(checks.contains(&x));
        assert_eq!(checks.uid(&x), Some(Some("uid-x".into())));
        assert!(
            checks.set_invalid(&x, invalid("a", "x", 2).1),
            "edited, still invalid"
        );

        // A re-list of shard 3 in namespace a finds y only: x is gone, y is news, namespace b
        // and shard 4 are untouched.
        let (z, other) = invalid("b", "z", 1);
        checks.set_invalid(&z, other);
        let (w, elsewhere) = invalid_in("a", "w", 1, 4);
        checks.set_invalid(&w, elsewhere);
        let (y, found) = invalid("a", "y", 1);
        let news = checks.relisted_invalid(Some("a"), 3, vec![(y.clone(), found.clone())]);
        assert_eq!(news, vec![(y.clone(), found.clone())]);
        assert!(!checks.contains(&x));
        assert!(checks.contains(&z));
        assert!(checks.contains(&w));
        assert_eq!(checks.invalid_count(), 3);
        assert!(
            checks
                .relisted_invalid(Some("a"), 3, vec![(y.clone(), found)])
                .is_empty()
        );

        assert!(checks.forget_invalid(&y));
        assert!(!checks.forget_invalid(&y));
        assert_eq!(checks.uid(&y), None);
    }
}
