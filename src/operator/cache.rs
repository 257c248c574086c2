//! The VoipChecks the controllers' reflectors hold, one store per watched scope (a namespace,
//! or the whole cluster). The status writer reads an object's uid here for its Events,
//! reconciles read the status already written (to continue from it), and deletion handling
//! asks which checks still exist.
//!
//! The cache holds what this replica reads ([`cache_form`]): no `managedFields`, and the status
//! only of the checks of the shards it holds. Every replica caches every check of its scopes
//! (a Secret change maps to checks by their spec, a taken shard's checks must be known), but
//! only the holder of a check's shard reads its status (to continue it, to weigh its
//! locations); left in, the statuses of the other replicas' checks were most of the cache
//! (two thirds of it at 3 replicas). Taking or giving up a shard starts the watch again, and
//! its re-list brings the statuses of the taken shard's checks and leaves out those of the
//! shard given up ([`super::controller`]). Until then a check of
//! that shard is [`status_left_out`]: it is neither reconciled nor aggregated, so no entry and
//! no verdict ever starts from a missing status.
//!
//! Objects that do not deserialize ([`InvalidCheck`]) are not in the reflectors' stores (those
//! hold typed VoipChecks) but in a side index here, filled by the controller's watch: they exist
//! all the same (their `InvalidSpec` status is written to them, deletion handling keeps them).

use super::decide;
use super::shards::shard_of;
use crate::api::{GuardedCheck, InvalidCheck, VoipCheck};
use crate::check::CheckId;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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

    /// After a re-list of `scope` (one namespace, or all for `None`): the invalid objects it
    /// found replace those of the scope. Returns those that are news (see [`Checks::set_invalid`]).
    pub fn relisted_invalid(
        &self,
        scope: Option<&str>,
        found: Vec<(CheckId, InvalidCheck)>,
    ) -> Vec<(CheckId, InvalidCheck)> {
        let mut invalid = self.invalid();
        let before: BTreeMap<CheckId, InvalidCheck> = invalid
            .extract_if(.., |id, _| scope.is_none_or(|ns| id.namespace == ns))
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

    /// The objects of `shard` that do not deserialize.
    pub fn invalid_of(&self, shard: usize) -> Vec<(CheckId, InvalidCheck)> {
        self.invalid()
            .iter()
            .filter(|(id, check)| shard_of(check.metadata.uid.as_deref(), id) == shard)
            .map(|(id, check)| (id.clone(), check.clone()))
            .collect()
    }

    /// How many objects do not deserialize.
    pub fn invalid_count(&self) -> usize {
        self.invalid().len()
    }

    fn invalid(&self) -> MutexGuard<'_, BTreeMap<CheckId, InvalidCheck>> {
        self.invalid.lock().unwrap_or_else(|p| p.into_inner())
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

/// The annotation that marks a cached object whose status was left out. It is this process's
/// own: set and removed on every object as it arrives from the API, so one a user put on an
/// object means nothing.
const STATUS_LEFT_OUT: &str = "voipcheck.io/status-left-out-of-cache";

/// `check` as the cache keeps it: without `managedFields` (nothing here reads them, and with a
/// location's and the aggregator's field sets they were the largest part of each object) and,
/// unless `holds` its shard, without its status ([`status_left_out`]). An object that does not
/// deserialize keeps its status (its `InvalidSpec` entry continues from it; there are few).
pub fn cache_form(check: &mut GuardedCheck, holds: impl Fn(Option<&str>, &CheckId) -> bool) {
    check.meta_mut().managed_fields = None;
    let GuardedCheck(Ok(check)) = check else {
        return;
    };
    if let Some(map) = check.metadata.annotations.as_mut() {
        map.remove(STATUS_LEFT_OUT);
        if map.is_empty() {
            check.metadata.annotations = None;
        }
    }
    let Ok(id) = decide::check_id(check) else {
        return;
    };
    if !holds(check.metadata.uid.as_deref(), &id) {
        check.status = None;
        check
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(STATUS_LEFT_OUT.into(), "true".into());
    }
}

/// Whether the cache left out `check`'s status ([`cache_form`]): its shard was not held when
/// it arrived, so what it says of the status (nothing) is not what the object holds.
pub fn status_left_out(check: &VoipCheck) -> bool {
    check
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|map| map.contains_key(STATUS_LEFT_OUT))
}

/// What must change for a cached check to be reconciled again: its generation (a status write
/// alone changes nothing to run), or its status coming into the cache (its shard was taken).
pub fn reconcile_key(check: &VoipCheck) -> Option<u64> {
    let generation = check.metadata.generation?;
    Some(((generation as u64) << 1) | u64::from(status_left_out(check)))
}

/// Whether two sightings of an invalid object are the same object in the same version (a status
/// write alone changes neither).
fn same_version(a: &InvalidCheck, b: &InvalidCheck) -> bool {
    a.metadata.uid == b.metadata.uid
        && a.metadata.generation == b.metadata.generation
        && a.error == b.error
}

/// How often readiness is asked again while waiting.
const READY_RECHECK: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SpecError;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn invalid(namespace: &str, name: &str, generation: i64) -> (CheckId, InvalidCheck) {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(generation),
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

    /// A typed check `telephony/cloud` with a status, managedFields and a user's annotation.
    fn cached(extra_annotation: Option<&str>) -> GuardedCheck {
        let mut annotations = serde_json::Map::new();
        annotations.insert("team".into(), "voice".into());
        if let Some(key) = extra_annotation {
            annotations.insert(key.into(), "yes".into());
        }
        let object = serde_json::json!({
            "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
            "metadata": {
                "name": "cloud", "namespace": "telephony", "uid": "u-1", "generation": 3,
                "annotations": annotations,
                "managedFields": [ { "manager": "voipcheck/berlin", "operation": "Apply" } ]
            },
            "spec": {
                "target": { "kind": "Portal", "name": "portal" },
                "http": [ { "name": "ui", "url": "https://portal.example.com/" } ]
            },
            "status": { "observedGeneration": 3, "failingLocations": 1 }
        });
        serde_json::from_value(object).unwrap()
    }

    fn typed(check: GuardedCheck) -> VoipCheck {
        check.0.unwrap()
    }

    #[test]
    fn the_cache_keeps_the_status_only_of_the_checks_of_shards_held() {
        let id = CheckId::new("telephony", "cloud");
        let mut held = cached(None);
        cache_form(&mut held, |uid, of| {
            assert_eq!((uid, of), (Some("u-1"), &id));
            true
        });
        let held = typed(held);
        assert_eq!(held.metadata.managed_fields, None);
        assert_eq!(held.status.as_ref().unwrap().failing_locations, Some(1));
        assert!(!status_left_out(&held));
        assert_eq!(held.metadata.annotations.as_ref().unwrap().len(), 1);

        let mut other = cached(None);
        cache_form(&mut other, |_, _| false);
        let other = typed(other);
        assert_eq!(other.status, None);
        assert!(status_left_out(&other));
        assert_eq!(other.metadata.managed_fields, None);
        assert_eq!(
            other.metadata.annotations.as_ref().unwrap()["team"],
            "voice"
        );
        // What the spec asks is the same either way; only the left-out status tells them apart
        // to the reconcile filter.
        assert_eq!(other.spec, held.spec);
        assert_ne!(reconcile_key(&other), reconcile_key(&held));
        let mut edited = held.clone();
        edited.metadata.generation = Some(4);
        assert_ne!(reconcile_key(&edited), reconcile_key(&held));
    }

    /// The mark is this process's own: one that came with the object from the API (a user's
    /// kubectl annotate) is taken off, so the check is not taken for one left out.
    #[test]
    fn a_left_out_mark_from_the_api_means_nothing() {
        let mut marked = cached(Some(STATUS_LEFT_OUT));
        cache_form(&mut marked, |_, _| true);
        let marked = typed(marked);
        assert!(!status_left_out(&marked));
        assert!(marked.status.is_some());
        assert_eq!(
            marked
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["team"]
        );
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

        // A re-list of namespace a finds y only: x is gone, y is news, namespace b is untouched.
        let (z, other) = invalid("b", "z", 1);
        checks.set_invalid(&z, other);
        let (y, found) = invalid("a", "y", 1);
        let news = checks.relisted_invalid(Some("a"), vec![(y.clone(), found.clone())]);
        assert_eq!(news, vec![(y.clone(), found.clone())]);
        assert!(!checks.contains(&x));
        assert!(checks.contains(&z));
        assert_eq!(checks.invalid_count(), 2);
        assert!(
            checks
                .relisted_invalid(Some("a"), vec![(y.clone(), found)])
                .is_empty()
        );

        assert!(checks.forget_invalid(&y));
        assert!(!checks.forget_invalid(&y));
        assert_eq!(checks.uid(&y), None);
    }
}
