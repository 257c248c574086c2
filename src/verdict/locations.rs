//! The verdict across locations: every location that runs a check writes its own entry of
//! `status.locations` (its own conditions and incident, decided by [`super::evaluate`] from
//! its own probes), and the aggregating instance turns those entries into the check's
//! top-level conditions, incident and `failingLocations` with [`aggregate`]. Pure: the clock
//! is an argument, the entries are read as written.
//!
//! # Which entries count
//! Only the locations the spec selects (`spec.locations`; empty selects every entry). An entry
//! whose `lastRun.time` is older than `stale_after` is stale: its location stopped writing, so
//! its view is left out (and listed in [`Aggregate::stale`], for the aggregator to mark it).
//! A location rewrites its entry at least every status refresh even when nothing changed, so
//! the caller passes that refresh plus a few intervals. An entry without a `lastRun` (a check
//! that could not run there) cannot age and counts as written.
//!
//! # How one location's view reads
//! From its own `Ready` and `HotlineReportable` ([`Standing`]): it works (`Ready` True); it sees
//! a provider-side failure (`HotlineReportable` True `ProviderOutage`, or `Ready` False
//! `ProbesFailing`/`ServiceNotResponding` with `NotAProviderService`); its configuration is
//! wrong; its own network fails; or nothing is known yet. Conditions of a type or with a
//! reason this version does not know are left out: it cannot reason about them.
//!
//! # `HotlineReportable` across locations (seed 002)
//! The hotline asks "is the URL reachable from another location or over the mobile network?"
//! before it takes a report. So, in this order:
//! 1. a provider-side failure seen from some location while another location works: False
//!    `LocalNetworkProblem`, naming both (the failing location's network, not the provider);
//! 2. a provider-side failure (of a provider service) seen from at least
//!    `spec.report.minLocations` locations (default 1) and from no location working: True
//!    `ProviderOutage`, the incident since the earliest of those locations' incidents, its
//!    evidence what every location saw;
//! 3. the same from fewer locations: False `TooFewLocations`;
//! 4. otherwise the locations' own reasons, the most telling first: `ConfigurationProblem`,
//!    `LocalNetworkProblem`, `NotAProviderService`, `Healthy`.
//!
//! # The other conditions
//! Per type: False when some location has it False (with the reason of the first such
//! location by name whose control probe passes, so a location that cannot trust its own
//! observations does not hide the reason of one that can), else True when some location has
//! it True (a noteworthy reason such as `BackupServing` before the plain success, so it is not
//! lost), else Unknown. The message names
//! each location and what it saw. `Ready` is False `LocalNetworkProblem` when rule 1 applies:
//! the service is unavailable from that location (paging follows impact), and the reason says
//! whose problem it is.
//!
//! With no fresh entry, nothing is known: `Ready` and `HotlineReportable` Unknown
//! `LocationsStale` when stale entries exist, else `Ready` Unknown `Pending`.
//!
//! # One location
//! A condition (and the incident) that one location alone decides is that location's own, word
//! for word: with a single location the top level is that location's entry, as it was before
//! there were several (except when `minLocations` asks for more locations than run the check).
//!
//! # lastTransitionTime
//! Kept from the top level as written while the status stays ([`crate::status::written_condition`]).
//! When it changes, the change happened when the location conditions it rests on last changed
//! (so one location's transition time is the top level's too), or when an entry went stale
//! (its `lastRun.time` plus `stale_after`) if that is later. A time older than the top level's
//! own last transition cannot be when it changed again (a location left `spec.locations`, say):
//! then it is now.

use super::ConditionValue;
use crate::api::{
    ConditionStatus, ConditionType, Incident, LocationStatus, Reason, VoipCheckSpec,
    VoipCheckStatus,
};
use crate::status::{Transition, time, written_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// What the verdict across locations is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Across<'a> {
    pub spec: &'a VoipCheckSpec,
    /// The check's `metadata.generation`.
    pub generation: Option<i64>,
    /// `status.locations` as read.
    pub entries: &'a [LocationStatus],
    /// The status as read: its top-level conditions are the ones written before.
    pub previous: Option<&'a VoipCheckStatus>,
    pub now: SystemTime,
    /// How old an entry's `lastRun.time` may be before the entry is stale: the operator's
    /// status refresh plus three intervals.
    pub stale_after: Duration,
}

/// The check's top level as the aggregating instance writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The oldest spec generation a counted location ran (the conditions describe it); the
    /// check's generation when no location counts.
    pub observed_generation: Option<i64>,
    /// `Ready` first, then [`ConditionType`] order, `HotlineReportable` last.
    pub conditions: Vec<Condition>,
    /// Set while `HotlineReportable` is True.
    pub incident: Option<Incident>,
    /// Counted locations that see a provider-side failure.
    pub failing_locations: i32,
    /// Selected entries not written within `stale_after`, by name: to be marked `stale`.
    pub stale: Vec<String>,
    /// What changed since the top level as written, for Events.
    pub transitions: Vec<Transition>,
}

impl Aggregate {
    /// The condition of that type, if the top level has it.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_.as_str())
    }

    /// Whether `HotlineReportable` is True.
    pub fn is_reportable(&self) -> bool {
        self.condition(ConditionType::HotlineReportable)
            .is_some_and(|c| c.status == ConditionStatus::True.as_str())
    }
}

/// How one location's view reads, from its own `Ready` and `HotlineReportable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Working,
    /// A failure on the provider's side: its hotline verdict is `ProviderOutage`, or
    /// `NotAProviderService` for a target the hotline does not take reports for.
    ProviderSide,
    Configuration,
    Local,
    Unknown,
}

/// One counted location's entry, its conditions parsed.
struct View<'a> {
    entry: &'a LocationStatus,
    conditions: BTreeMap<ConditionType, Seen<'a>>,
    standing: Standing,
}

/// A location's condition this version understands.
#[derive(Clone, Copy)]
struct Seen<'a> {
    status: ConditionStatus,
    reason: Reason,
    written: &'a Condition,
}

impl<'a> View<'a> {
    fn read(entry: &'a LocationStatus) -> Self {
        let conditions: BTreeMap<_, _> = entry
            .conditions
            .iter()
            .filter_map(|c| {
                let seen = Seen {
                    status: c.status.parse().ok()?,
                    reason: c.reason.parse().ok()?,
                    written: c,
                };
                Some((c.type_.parse().ok()?, seen))
            })
            .collect();
        let of = |type_| conditions.get(&type_).map(|s: &Seen| (s.status, s.reason));
        let standing = standing(
            of(ConditionType::Ready),
            of(ConditionType::HotlineReportable),
        );
        View {
            entry,
            conditions,
            standing,
        }
    }

    fn name(&self) -> &'a str {
        &self.entry.name
    }

    fn get(&self, type_: ConditionType) -> Option<Seen<'a>> {
        self.conditions.get(&type_).copied()
    }

    /// Whether this location's control probe fails (its `Ready` says `LocalNetworkProblem`):
    /// none of its failures can be trusted.
    fn network_fails(&self) -> bool {
        self.get(ConditionType::Ready)
            .is_some_and(|s| s.reason == Reason::LocalNetworkProblem)
    }

    /// `Ready`'s status and reason, as a message lists them.
    fn ready(&self) -> String {
        self.get(ConditionType::Ready)
            .map_or_else(|| "no run yet".to_owned(), |s| s.short())
    }
}

impl Seen<'_> {
    /// `False Timeout`.
    fn short(&self) -> String {
        format!("{} {}", self.status, self.reason)
    }

    fn value(&self, type_: ConditionType) -> ConditionValue {
        ConditionValue::new(
            type_,
            self.status,
            self.reason,
            self.written.message.clone(),
        )
    }
}

/// Whether a location whose `Ready` and `HotlineReportable` read so sees a failure on the
/// provider's side (what `failingLocations` counts).
pub(super) fn provider_side(
    ready: Option<(ConditionStatus, Reason)>,
    hotline: Option<(ConditionStatus, Reason)>,
) -> bool {
    standing(ready, hotline) == Standing::ProviderSide
}

fn standing(
    ready: Option<(ConditionStatus, Reason)>,
    hotline: Option<(ConditionStatus, Reason)>,
) -> Standing {
    use ConditionStatus::{False, True};
    use Reason::*;
    match (ready, hotline) {
        (Some((True, _)), _) => Standing::Working,
        (_, Some((True, ProviderOutage))) => Standing::ProviderSide,
        (
            Some((False, ProbesFailing | ServiceNotResponding)),
            Some((False, NotAProviderService)),
        ) => Standing::ProviderSide,
        (Some((False, CredentialsMissing | InvalidSpec | TargetNotAllowed)), _)
        | (_, Some((_, ConfigurationProblem))) => Standing::Configuration,
        (Some((_, LocalNetworkProblem)), _) | (_, Some((_, LocalNetworkProblem))) => {
            Standing::Local
        }
        _ => Standing::Unknown,
    }
}

/// A top-level condition before it is written, and when the location conditions it rests on
/// last changed (`None`: it rests on none).
struct Decided {
    value: ConditionValue,
    changed_at: Option<Time>,
}

impl Decided {
    fn new(value: ConditionValue, rests_on: impl IntoIterator<Item = Time>) -> Self {
        Decided {
            value,
            changed_at: rests_on.into_iter().max(),
        }
    }

    /// One location's condition, as it is.
    fn own(type_: ConditionType, seen: Seen) -> Self {
        Decided::new(
            seen.value(type_),
            [seen.written.last_transition_time.clone()],
        )
    }
}

/// The check's top level from its locations' entries: see the module documentation.
pub fn aggregate(input: &Across) -> Aggregate {
    let mut selected: Vec<&LocationStatus> = input
        .entries
        .iter()
        .filter(|e| input.spec.locations.is_empty() || input.spec.locations.contains(&e.name))
        .collect();
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    let (fresh, stale): (Vec<_>, Vec<_>) = selected
        .into_iter()
        .partition(|e| !is_stale(e, input.now, input.stale_after));
    let views: Vec<View> = fresh.into_iter().map(View::read).collect();

    let observed_generation = views
        .iter()
        .filter_map(|v| v.entry.observed_generation)
        .min()
        .or(input.generation);
    let (decided, incident) = match views.is_empty() {
        true => (nothing_known(&stale, input.stale_after), None),
        false => decide(input.spec, &views, &stale),
    };

    // Stale entries dropped out of the verdict when they crossed the bound.
    let dropped_at = stale
        .iter()
        .filter_map(|e| e.last_run.as_ref())
        .map(|run| time(SystemTime::from(run.time.0) + input.stale_after))
        .max();
    let now = time(input.now);
    let before = |type_: ConditionType| {
        input
            .previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_.as_str()))
    };
    let mut conditions = Vec::with_capacity(decided.len());
    let mut transitions = Vec::new();
    for Decided { value, changed_at } in decided {
        let old = before(value.type_);
        let changed_at = match changed_at.max(dropped_at.clone()) {
            Some(at) if old.is_some_and(|old| at < old.last_transition_time) => now.clone(),
            Some(at) => at.min(now.clone()),
            None => now.clone(),
        };
        let (condition, transition) =
            written_condition(old, &value, changed_at, observed_generation);
        conditions.push(condition);
        transitions.extend(transition);
    }
    let failing = views
        .iter()
        .filter(|v| v.standing == Standing::ProviderSide)
        .count();
    Aggregate {
        observed_generation,
        conditions,
        incident,
        failing_locations: i32::try_from(failing).unwrap_or(i32::MAX),
        stale: stale.iter().map(|e| e.name.clone()).collect(),
        transitions,
    }
}

fn is_stale(entry: &LocationStatus, now: SystemTime, stale_after: Duration) -> bool {
    let Some(run) = &entry.last_run else {
        return false;
    };
    let written = SystemTime::from(run.time.0);
    now.duration_since(written)
        .is_ok_and(|age| age > stale_after)
}

/// No counted location has a view: `LocationsStale` when some stopped writing, else `Pending`.
fn nothing_known(stale: &[&LocationStatus], stale_after: Duration) -> Vec<Decided> {
    let unknown = |type_, reason, message: &str| {
        Decided::new(
            ConditionValue::new(type_, ConditionStatus::Unknown, reason, message.to_owned()),
            [],
        )
    };
    if stale.is_empty() {
        return vec![unknown(
            ConditionType::Ready,
            Reason::Pending,
            "no location has run the check yet",
        )];
    }
    let message = format!(
        "no location has written within {}: {}",
        super::format::duration(stale_after),
        stale
            .iter()
            .map(|e| last_seen(e))
            .collect::<Vec<_>>()
            .join(", ")
    );
    vec![
        unknown(ConditionType::Ready, Reason::LocationsStale, &message),
        unknown(
            ConditionType::HotlineReportable,
            Reason::LocationsStale,
            &message,
        ),
    ]
}

/// `eu-west (last run 2023-11-14T22:13:20Z)`.
fn last_seen(entry: &LocationStatus) -> String {
    match &entry.last_run {
        Some(run) => format!(
            "{} (last run {})",
            entry.name,
            super::format::time(SystemTime::from(run.time.0))
        ),
        None => entry.name.clone(),
    }
}

/// Every condition some counted location has, `Ready` and `HotlineReportable` by the rules
/// across locations, and the incident.
fn decide(
    spec: &VoipCheckSpec,
    views: &[View],
    stale: &[&LocationStatus],
) -> (Vec<Decided>, Option<Incident>) {
    let with =
        |standing| -> Vec<&View> { views.iter().filter(|v| v.standing == standing).collect() };
    let (failing, working) = (with(Standing::ProviderSide), with(Standing::Working));
    let mut decided = Vec::new();
    let mut incident = None;
    for &type_ in ConditionType::ALL {
        let next = match type_ {
            ConditionType::Ready if !failing.is_empty() && !working.is_empty() => {
                Some(ready_elsewhere(&failing, &working))
            }
            ConditionType::Ready => Some(per_type(type_, views).unwrap_or_else(|| {
                Decided::new(
                    ConditionValue::new(
                        type_,
                        ConditionStatus::Unknown,
                        Reason::Pending,
                        "no location has finished a run yet".to_owned(),
                    ),
                    [],
                )
            })),
            ConditionType::HotlineReportable => {
                let (reportable, outage) = hotline(spec, views, &failing, &working, stale);
                incident = outage;
                reportable
            }
            _ => per_type(type_, views),
        };
        decided.extend(next);
    }
    (decided, incident)
}

/// False when some location has it False, else True when some has it True, else Unknown.
fn per_type(type_: ConditionType, views: &[View]) -> Option<Decided> {
    let seen = seen_in(views, type_);
    if let [(_, only)] = seen.as_slice() {
        return Some(Decided::own(type_, *only));
    }
    let status = [ConditionStatus::False, ConditionStatus::True]
        .into_iter()
        .find(|status| seen.iter().any(|(_, s)| s.status == *status))
        .unwrap_or(ConditionStatus::Unknown);
    let deciding: Vec<&(&View, Seen)> = seen.iter().filter(|(_, s)| s.status == status).collect();
    let telling = |(view, s): &&&(&View, Seen)| match status {
        ConditionStatus::True => !type_.is_plain_success(s.reason),
        ConditionStatus::False => !view.network_fails(),
        ConditionStatus::Unknown => false,
    };
    let (_, first) = deciding
        .iter()
        .find(telling)
        .or(deciding.first())
        .copied()?;
    let message = seen
        .iter()
        .map(|(view, s)| match s.status == status {
            true => format!("{}: {} ({})", view.name(), s.short(), s.written.message),
            false => format!("{}: {}", view.name(), s.short()),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Some(Decided::new(
        ConditionValue::new(type_, status, first.reason, message),
        deciding
            .iter()
            .map(|(_, s)| s.written.last_transition_time.clone()),
    ))
}

/// `Ready` while the service fails from some locations and works from others.
fn ready_elsewhere(failing: &[&View], working: &[&View]) -> Decided {
    let message = format!(
        "fails from {} and works from {}: the network of {} is the likely cause",
        listing(failing, |v| format!("{} ({})", v.name(), v.ready())),
        names(working),
        names(failing)
    );
    Decided::new(
        ConditionValue::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::LocalNetworkProblem,
            message,
        ),
        rests_on(ConditionType::Ready, failing.iter().chain(working).copied()),
    )
}

/// `HotlineReportable` and the incident, by the rules of the module documentation.
fn hotline(
    spec: &VoipCheckSpec,
    views: &[View],
    failing: &[&View],
    working: &[&View],
    stale: &[&LocationStatus],
) -> (Option<Decided>, Option<Incident>) {
    let type_ = ConditionType::HotlineReportable;
    let value = |status, reason, message| ConditionValue::new(type_, status, reason, message);
    let all_facts = || {
        let mut times = rests_on(ConditionType::Ready, views);
        times.extend(rests_on(type_, views));
        times
    };
    if !failing.is_empty() && !working.is_empty() {
        let message = format!(
            "provider-side failure seen from {} while the service works from {}: reachable \
             from another location, so {}'s network, not the provider's outage",
            names(failing),
            names(working),
            names(failing)
        );
        let reportable = Decided::new(
            value(ConditionStatus::False, Reason::LocalNetworkProblem, message),
            all_facts(),
        );
        return (Some(reportable), None);
    }
    let outage: Vec<&View> = failing
        .iter()
        .copied()
        .filter(|v| {
            v.get(type_)
                .is_some_and(|s| s.status == ConditionStatus::True)
        })
        .collect();
    if !outage.is_empty() {
        let min_locations = spec
            .report
            .as_ref()
            .and_then(|r| r.min_locations)
            .unwrap_or(1)
            .max(1);
        let seen_from = format!(
            "seen from {} location{} ({})",
            outage.len(),
            if outage.len() == 1 { "" } else { "s" },
            names(&outage)
        );
        if i32::try_from(outage.len()).unwrap_or(i32::MAX) < min_locations {
            let message = format!("{seen_from}; spec.report.minLocations is {min_locations}");
            let reportable = Decided::new(
                value(ConditionStatus::False, Reason::TooFewLocations, message),
                all_facts(),
            );
            return (Some(reportable), None);
        }
        if let ([only], [_]) = (outage.as_slice(), views) {
            let own = only.get(type_).map(|s| Decided::own(type_, s));
            if let Some(incident) = &only.entry.incident {
                return (own, Some(incident.clone()));
            }
        }
        let message = format!("provider-side failure {seen_from}; no location reaches the service");
        let reportable = Decided::new(
            value(ConditionStatus::True, Reason::ProviderOutage, message),
            all_facts(),
        );
        return (Some(reportable), incident(spec, &outage, views, stale));
    }
    (own_reasons(views), None)
}

/// No cross-location rule applies: the most telling of the locations' own (False) reasons.
fn own_reasons(views: &[View]) -> Option<Decided> {
    const ORDER: [Reason; 4] = [
        Reason::ConfigurationProblem,
        Reason::LocalNetworkProblem,
        Reason::NotAProviderService,
        Reason::Healthy,
    ];
    let type_ = ConditionType::HotlineReportable;
    let seen = seen_in(views, type_);
    if let [(_, only)] = seen.as_slice() {
        return Some(Decided::own(type_, *only));
    }
    let rank = |s: &Seen| match s.status {
        ConditionStatus::False => ORDER
            .iter()
            .position(|r| *r == s.reason)
            .unwrap_or(ORDER.len()),
        _ => ORDER.len() + 1,
    };
    let (_, best) = seen.iter().min_by_key(|(_, s)| rank(s))?;
    let deciding: Vec<&(&View, Seen)> = seen
        .iter()
        .filter(|(_, s)| (s.status, s.reason) == (best.status, best.reason))
        .collect();
    let message = deciding
        .iter()
        .map(|(view, s)| format!("{}: {}", view.name(), s.written.message))
        .collect::<Vec<_>>()
        .join("; ");
    Some(Decided::new(
        ConditionValue::new(type_, best.status, best.reason, message),
        deciding
            .iter()
            .map(|(_, s)| s.written.last_transition_time.clone()),
    ))
}

/// The outage report across locations: since the earliest of the locations' incidents, and
/// what every location saw (seed 002 asks whether it fails from elsewhere too). A location
/// whose entry lacks its incident counts from its `HotlineReportable` transition.
fn incident(
    spec: &VoipCheckSpec,
    outage: &[&View],
    views: &[View],
    stale: &[&LocationStatus],
) -> Option<Incident> {
    let since = outage
        .iter()
        .filter_map(|v| match &v.entry.incident {
            Some(incident) => Some(incident.since.clone()),
            None => v
                .get(ConditionType::HotlineReportable)
                .map(|s| s.written.last_transition_time.clone()),
        })
        .min()?;
    let mut seen: Vec<(&str, String)> = views
        .iter()
        .map(|v| {
            let what = match &v.entry.incident {
                Some(incident) if outage.iter().any(|o| o.name() == v.name()) => {
                    incident.evidence.clone()
                }
                _ => v.ready(),
            };
            (v.name(), what)
        })
        .chain(stale.iter().map(|e| (e.name.as_str(), "stale".to_owned())))
        .collect();
    seen.sort();
    let evidence = seen
        .iter()
        .map(|(name, what)| format!("{name}: {what}"))
        .collect::<Vec<_>>()
        .join("; ");
    Some(Incident::new(spec, since, evidence))
}

/// The lastTransitionTimes of `type_` in these locations.
fn rests_on<'v, 'a: 'v>(
    type_: ConditionType,
    views: impl IntoIterator<Item = &'v View<'a>>,
) -> Vec<Time> {
    views
        .into_iter()
        .filter_map(|v| Some(v.get(type_)?.written.last_transition_time.clone()))
        .collect()
}

/// The locations that have a condition of `type_`, with it.
fn seen_in<'v, 'a>(views: &'v [View<'a>], type_: ConditionType) -> Vec<(&'v View<'a>, Seen<'a>)> {
    views
        .iter()
        .filter_map(|v| Some((v, v.get(type_)?)))
        .collect()
}

/// `office, eu-west`.
fn names(views: &[&View]) -> String {
    listing(views, |v| v.name().to_owned())
}

fn listing(views: &[&View], show: impl Fn(&View) -> String) -> String {
    views.iter().map(|v| show(v)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
