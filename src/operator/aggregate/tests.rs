//! What the aggregator keeps between computations.

use super::*;
use crate::api::TargetKind::Cloud;
use crate::api::VoipCheckSpec;
use crate::operator::leader::Leadership;
use crate::status::next_status;
use crate::verdict::Policy;
use crate::verdict::fixtures::{Check as Runs, Run, timeout};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;

const LOCATION: &str = "office";

fn spec() -> VoipCheckSpec {
    serde_json::from_value(serde_json::json!({
        "target": { "kind": "Cloud", "name": "maxmuster.starface-cloud.com" },
        "sip": { "server": "sip:maxmuster.starface-cloud.com", "options": {} },
        "http": [{ "name": "web-ui", "url": "https://maxmuster.starface-cloud.com/" }]
    }))
    .unwrap()
}

fn object(status: Option<VoipCheckStatus>) -> VoipCheck {
    let mut check = VoipCheck::new("a", spec());
    check.metadata.namespace = Some("ns".into());
    check.metadata.uid = Some("uid-a".into());
    check.metadata.generation = Some(1);
    check.status = status;
    check
}

/// This location's status after a run of `runs`.
fn own(
    runs: &mut Runs,
    before: Option<&VoipCheckStatus>,
    run: impl Fn(Run) -> Run,
) -> StatusUpdate {
    let now = runs.now();
    let (report, verdict) = runs.run_report(run);
    let (status, transitions) =
        next_status(before, Some(&spec()), &verdict, Some(&report), Some(1), now);
    StatusUpdate {
        id: CheckId::new("ns", "a"),
        uid: Some("uid-a".into()),
        generation: Some(1),
        status: Arc::new(status),
        transitions,
    }
}

/// The object as the writers leave it: this location's entry and the top level `top`.
fn written(own: &StatusUpdate, top: &VoipCheckStatus) -> VoipCheck {
    object(Some(VoipCheckStatus {
        locations: vec![decide::location_entry(&own.status, LOCATION)],
        ..top.clone()
    }))
}

/// The top level computed for check `a` (the pending one in the outbox).
async fn computed(aggregator: &Aggregator, outbox: &Outbox) -> VoipCheckStatus {
    aggregator.aggregate(&CheckId::new("ns", "a"));
    let taken = outbox.take().await.unwrap();
    assert_eq!(taken.len(), 1);
    (*taken[0].status).clone()
}

#[tokio::test]
async fn a_top_level_whose_messages_alone_changed_is_not_kept_beside_the_cache() {
    let mut cache = Writer::<VoipCheck>::default();
    cache.apply_watcher_event(&watcher::Event::Apply(object(None)));
    let outbox = Arc::new(Outbox::new());
    let aggregator = Aggregator::new(
        LOCATION.into(),
        Checks::new(vec![cache.as_reader()]),
        Arc::new(Gate::every_shard(Leadership::Leader)),
        outbox.clone(),
        Metrics::new(LOCATION),
    );
    let id = CheckId::new("ns", "a");
    let kept = |aggregator: &Aggregator| aggregator.lock().previous.contains_key(&id);
    let healthy = |r: Run| r.qualified().web_ok("web-ui");
    let mut runs = Runs::new(Policy::test(Cloud));
    // Runs from now on: the aggregate weighs entries by the wall clock.
    runs.pause(SystemTime::now().duration_since(runs.now()).unwrap());

    // The first verdict is kept until the cache carries it.
    let first = own(&mut runs, None, healthy);
    aggregator.own_status(&first);
    let top = computed(&aggregator, &outbox).await;
    assert!(kept(&aggregator));
    cache.apply_watcher_event(&watcher::Event::Apply(written(&first, &top)));
    assert_eq!(
        computed(&aggregator, &outbox).await.conditions,
        top.conditions
    );
    assert!(!kept(&aggregator));

    // A later run tells the same in other words (live timings): the writer leaves such a top
    // level for the status refresh, and the cache has all the next verdict reads.
    let mut later = own(&mut runs, Some(&first.status), healthy);
    for condition in &mut Arc::make_mut(&mut later.status).conditions {
        condition.message.push_str(" (later run)");
    }
    aggregator.own_status(&later);
    let reworded = computed(&aggregator, &outbox).await;
    assert_ne!(reworded.conditions, top.conditions, "the messages differ");
    assert!(!kept(&aggregator));

    // A reason that changed is kept until the cache carries it.
    let failing = own(&mut runs, Some(&later.status), |r| {
        r.qualified().web_fails("web-ui", timeout())
    });
    aggregator.own_status(&failing);
    let changed = computed(&aggregator, &outbox).await;
    assert_ne!(
        changed
            .conditions
            .iter()
            .map(|c| &c.reason)
            .collect::<Vec<_>>(),
        top.conditions.iter().map(|c| &c.reason).collect::<Vec<_>>()
    );
    assert!(kept(&aggregator));
}
