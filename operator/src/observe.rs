//! Reading the cluster into the plan's terms: API strings become instants, durations,
//! amounts and calendars; nodes and pods become facts. Anything malformed becomes an error
//! message for a condition, never a panic.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use k8s_openapi::api::core::v1::{Node, Pod};
use offpeak_api::{CapacityLease, CapacityLeaseSpec, GoDuration, LeaseClass, Timestamp};
use offpeak_api::{PeakReservation, Share};
use rust_decimal::Decimal;

use crate::names::IDLE_SINCE;
use crate::plan::admission::{Keep, LeaseClass as PlanClass};
use crate::plan::calendar::{Calendar, Interval, Schedule};
use crate::plan::idle::PodFacts;
use crate::plan::node_choice::Ask;
use crate::plan::resources::{Resources, Unit, parse_quantity};

pub fn instant(t: &Timestamp) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(t.as_str())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{:?} is not an RFC 3339 time: {e}", t.as_str()))
}

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp::new(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub fn duration(d: &GoDuration) -> Result<Duration, String> {
    let parsed = kube::core::Duration::from_str(d.as_str())
        .map_err(|e| format!("{:?} is not a duration: {e}", d.as_str()))?;
    let std: std::time::Duration = parsed.into();
    Duration::from_std(std).map_err(|e| format!("{:?} is out of range: {e}", d.as_str()))
}

pub fn decimal(text: &str) -> Result<Decimal, String> {
    Decimal::from_str(text).map_err(|e| format!("{text:?} is not a decimal amount: {e}"))
}

/// Allocatable of a node; a node without allocatable counts as empty.
pub fn allocatable(node: &Node) -> Result<Resources, String> {
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |key: &str| alloc.and_then(|a| a.get(key)).map(|q| q.0.as_str());
    Resources::parse(get("cpu"), get("memory"), get("nvidia.com/gpu")).map_err(|e| e.to_string())
}

pub fn pod_slots(node: &Node) -> i64 {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("pods"))
        .and_then(|q| parse_quantity(&q.0, Unit::Whole).ok())
        .unwrap_or(0)
}

pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Taints whose nodes are accounted for otherwise: Offpeak's own marks, a cordon
/// (`Cordoned`), and a node that is not ready or unreachable (`NotReady`).
const ACCOUNTED_TAINTS: &[&str] = &[
    crate::names::TENANT,
    crate::names::RECLAIMING,
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// Why Offpeak never lends this node, if it does not: a control-plane node, or one that
/// carries a NoSchedule or NoExecute taint Offpeak does not own (someone keeps pods off it
/// on purpose: lending it would hand that choice to a tenant).
pub fn withheld(node: &Node) -> Option<String> {
    let labels = node.metadata.labels.as_ref();
    for role in [
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
    ] {
        if labels.is_some_and(|l| l.contains_key(role)) {
            return Some(format!("a control-plane node (label {role})"));
        }
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref());
    let foreign = taints.into_iter().flatten().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute")
            && !ACCOUNTED_TAINTS.contains(&t.key.as_str())
    })?;
    Some(format!(
        "it carries the taint {}:{} that Offpeak does not own",
        foreign.key, foreign.effect
    ))
}

pub fn idle_since(node: &Node) -> Option<DateTime<Utc>> {
    let text = node.metadata.annotations.as_ref()?.get(IDLE_SINCE)?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn labels_match(
    labels: Option<&BTreeMap<String, String>>,
    selector: &BTreeMap<String, impl AsRef<str>>,
) -> bool {
    selector.iter().all(|(k, v)| {
        labels
            .and_then(|l| l.get(k))
            .is_some_and(|have| have == v.as_ref())
    })
}

/// A pod that still holds its node: bound, not finished.
pub fn holds_node(pod: &Pod) -> Option<&str> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (!matches!(phase, Some("Succeeded") | Some("Failed"))).then_some(node)
}

pub fn pod_facts(pod: &Pod) -> PodFacts {
    let owned_by_daemonset = pod
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.kind == "DaemonSet"));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    PodFacts {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        node_level: owned_by_daemonset || mirror,
        tenant: false,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        gone_by: pod.metadata.deletion_timestamp.as_ref().and_then(|t| {
            DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        }),
        has_finalizers: pod
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty()),
        grace_seconds: pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds),
        disruption_target: pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "DisruptionTarget"
                        && c.status == "True"
                        && c.reason.as_deref() == Some(OFFPEAK_DISRUPTION)
                })
            }),
    }
}

/// The reason of the DisruptionTarget condition Offpeak puts on a tenant's pods during
/// notice.
pub const OFFPEAK_DISRUPTION: &str = "OffpeakReclaim";

/// An internal pod the scheduler could not place, since when, and what it requests; `None`
/// for every other pod.
pub fn unschedulable(pod: &Pod) -> Option<(DateTime<Utc>, Resources)> {
    if pod.spec.as_ref()?.node_name.is_some() || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let condition = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    let since = condition
        .last_transition_time
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))?;
    let mut requests = Resources::ZERO;
    for container in &pod.spec.as_ref()?.containers {
        let get = |key: &str| {
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(key))
                .map(|q| q.0.as_str())
        };
        requests +=
            Resources::parse(get("cpu"), get("memory"), get("nvidia.com/gpu")).unwrap_or_default();
    }
    Some((since, requests))
}

pub fn keep(share: &Share) -> Result<Keep, String> {
    match (share.percent, share.nodes) {
        (Some(p), None) => u32::try_from(p)
            .map(Keep::Percent)
            .map_err(|_| format!("percent {p} is negative")),
        (None, Some(n)) => usize::try_from(n)
            .map(Keep::Nodes)
            .map_err(|_| format!("nodes {n} is negative")),
        _ => Err("set exactly one of percent or nodes".into()),
    }
}

pub fn calendar(reservation: &PeakReservation) -> Result<Calendar, String> {
    let spec = &reservation.spec;
    let schedule = match (&spec.window, &spec.recurring) {
        (Some(w), None) => Schedule::Once {
            start: instant(&w.start)?,
            end: instant(&w.end)?,
        },
        (None, Some(r)) => {
            let zone_name = spec.time_zone.as_ref().map(|z| z.as_str()).unwrap_or("UTC");
            let zone: chrono_tz::Tz = zone_name
                .parse()
                .map_err(|_| format!("{zone_name:?} is not an IANA time zone"))?;
            let time = |t: &offpeak_api::LocalTime| {
                NaiveTime::parse_from_str(t.as_str(), "%H:%M")
                    .map_err(|e| format!("{:?} is not HH:MM: {e}", t.as_str()))
            };
            Schedule::Recurring {
                days: r.days.iter().map(|d| weekday(*d)).collect(),
                start: time(&r.start_time)?,
                end: time(&r.end_time)?,
                zone,
            }
        }
        _ => return Err("set exactly one of window or recurring".into()),
    };
    Ok(Calendar {
        schedule,
        valid_from: spec.valid_from.as_ref().map(instant).transpose()?,
        valid_until: spec.valid_until.as_ref().map(instant).transpose()?,
    })
}

fn weekday(day: offpeak_api::Weekday) -> chrono::Weekday {
    use offpeak_api::Weekday as W;
    match day {
        W::Monday => chrono::Weekday::Mon,
        W::Tuesday => chrono::Weekday::Tue,
        W::Wednesday => chrono::Weekday::Wed,
        W::Thursday => chrono::Weekday::Thu,
        W::Friday => chrono::Weekday::Fri,
        W::Saturday => chrono::Weekday::Sat,
        W::Sunday => chrono::Weekday::Sun,
    }
}

pub fn class(spec: &CapacityLeaseSpec) -> PlanClass {
    match spec.class {
        LeaseClass::Spot => PlanClass::Spot,
        LeaseClass::Reserved => PlanClass::Reserved,
    }
}

pub fn ask(spec: &CapacityLeaseSpec) -> Result<Ask, String> {
    match (&spec.resources, &spec.nodes) {
        (Some(r), None) => Resources::parse(
            r.cpu.as_ref().map(|q| q.as_str()),
            r.memory.as_ref().map(|q| q.as_str()),
            r.gpu.as_ref().map(|q| q.as_str()),
        )
        .map(Ask::Resources)
        .map_err(|e| format!("spec.resources: {e}")),
        (None, Some(n)) => Ok(Ask::Nodes {
            class: n.class.to_string(),
            count: usize::try_from(n.count)
                .map_err(|_| format!("spec.nodes.count {} is negative", n.count))?,
        }),
        _ => Err("set exactly one of spec.resources or spec.nodes".into()),
    }
}

/// The lease's term if it were admitted at `at`: from then for its duration, or until its
/// end time.
pub fn term(spec: &CapacityLeaseSpec, at: DateTime<Utc>) -> Result<Interval, String> {
    let end = match (&spec.duration, &spec.end_time) {
        (Some(d), None) => at + duration(d)?,
        (None, Some(t)) => instant(t)?,
        _ => return Err("set exactly one of spec.duration or spec.endTime".into()),
    };
    if end <= at {
        return Err(format!(
            "the lease's end {} is not after {}",
            end.to_rfc3339(),
            at.to_rfc3339()
        ));
    }
    Ok(Interval::new(at, end))
}

/// `<namespace>/<name>`, for logs and messages.
pub fn lease_name(lease: &CapacityLease) -> String {
    format!(
        "{}/{}",
        lease.metadata.namespace.as_deref().unwrap_or_default(),
        lease.metadata.name.as_deref().unwrap_or_default()
    )
}

/// When an object was created, as an instant.
pub fn created(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<DateTime<Utc>> {
    let t = meta.creation_timestamp.as_ref()?;
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_nodes_and_foreign_taints_are_withheld() {
        use k8s_openapi::api::core::v1::{NodeSpec, Taint};
        let node = |labels: &[&str], taints: &[(&str, &str)]| Node {
            metadata: kube::api::ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|l| (l.to_string(), String::new()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: key.to_string(),
                            effect: effect.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(withheld(&node(&[], &[])), None);
        assert_eq!(
            withheld(&node(&["node-role.kubernetes.io/control-plane"], &[])).as_deref(),
            Some("a control-plane node (label node-role.kubernetes.io/control-plane)")
        );
        assert_eq!(
            withheld(&node(&[], &[("example.com/maintenance", "NoExecute")])).as_deref(),
            Some(
                "it carries the taint example.com/maintenance:NoExecute that Offpeak does not own"
            )
        );
        // Offpeak's own marks, a cordon and readiness are accounted for elsewhere; a
        // preference is not a refusal.
        let accounted = node(
            &[],
            &[
                ("offpeak.dev/tenant", "NoSchedule"),
                ("offpeak.dev/reclaiming", "NoSchedule"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unreachable", "NoExecute"),
                ("example.com/spare", "PreferNoSchedule"),
            ],
        );
        assert_eq!(withheld(&accounted), None);
    }

    #[test]
    fn durations_and_instants_parse() {
        assert_eq!(
            duration(&GoDuration::new("1h30m")),
            Ok(Duration::minutes(90))
        );
        assert!(duration(&GoDuration::new("soon")).is_err());
        let t = instant(&Timestamp::new("2026-11-23T07:00:00+01:00")).unwrap();
        assert_eq!(timestamp(t).as_str(), "2026-11-23T06:00:00Z");
        assert!(
            instant(&Timestamp::new("yesterday"))
                .unwrap_err()
                .contains("not an RFC 3339 time")
        );
    }

    #[test]
    fn shares_become_keeps() {
        assert_eq!(
            keep(&Share {
                percent: Some(70),
                nodes: None
            }),
            Ok(Keep::Percent(70))
        );
        assert_eq!(
            keep(&Share {
                percent: None,
                nodes: Some(2)
            }),
            Ok(Keep::Nodes(2))
        );
        assert!(
            keep(&Share {
                percent: Some(1),
                nodes: Some(1)
            })
            .is_err()
        );
    }
}
