//! Which nodes of a pool may be lent: classifying each node from what runs on it.
//!
//! A node is *idle* when it is Ready, schedulable (or cordoned only by Offpeak itself), not
//! lent, and runs nothing but DaemonSet pods (and static mirror pods, which belong to the
//! node). It becomes *lendable* once it has been idle for the pool's idle-after time; the
//! moment it was first seen idle is kept on the node (an annotation), so the count survives
//! an operator restart. Anything else running on it makes it *busy* and resets the clock.

use chrono::{DateTime, Duration, Utc};

/// What the pool controller needs to know about one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub ready: bool,
    /// `spec.unschedulable` set by someone other than Offpeak.
    pub cordoned_by_others: bool,
    /// Why Offpeak never lends it (a control-plane node, a taint it does not own).
    pub withheld: Option<String>,
    /// The lease this node is bound to, if any.
    pub lease: Option<String>,
    /// Pods bound to the node that are still running or pending.
    pub pods: Vec<PodFacts>,
    /// When the node was first seen idle (from its annotation), if it was.
    pub idle_since: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    /// Owned by a DaemonSet, or a static pod's mirror: part of the node, not a workload.
    pub node_level: bool,
    /// In a tenant's namespace.
    pub tenant: bool,
    /// Being deleted (it has a deletionTimestamp).
    pub deleting: bool,
    /// When it is due to be gone, once deleted (its deletionTimestamp: the request plus its
    /// grace period).
    pub gone_by: Option<DateTime<Utc>>,
    /// It carries finalizers, which would keep it after its containers stopped.
    pub has_finalizers: bool,
    /// It carries Offpeak's DisruptionTarget condition.
    pub disruption_target: bool,
    /// Its own termination grace period, in seconds.
    pub grace_seconds: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    NotReady,
    Cordoned,
    /// Never lent: see [`NodeFacts::withheld`].
    Withheld {
        reason: String,
    },
    Lent {
        lease: String,
    },
    /// Runs internal workloads; `example` names one pod.
    Busy {
        workloads: usize,
        example: String,
    },
    /// Idle, but not yet for long enough.
    Idle {
        since: DateTime<Utc>,
        lendable_at: DateTime<Utc>,
    },
    Lendable {
        since: DateTime<Utc>,
    },
}

impl NodeState {
    pub fn is_lendable(&self) -> bool {
        matches!(self, NodeState::Lendable { .. })
    }

    /// The idle-since annotation the node should carry in this state.
    pub fn idle_since(&self) -> Option<DateTime<Utc>> {
        match self {
            NodeState::Idle { since, .. } | NodeState::Lendable { since } => Some(*since),
            _ => None,
        }
    }
}

pub fn classify(node: &NodeFacts, now: DateTime<Utc>, idle_after: Duration) -> NodeState {
    if let Some(lease) = &node.lease {
        return NodeState::Lent {
            lease: lease.clone(),
        };
    }
    if !node.ready {
        return NodeState::NotReady;
    }
    if node.cordoned_by_others {
        return NodeState::Cordoned;
    }
    if let Some(reason) = &node.withheld {
        return NodeState::Withheld {
            reason: reason.clone(),
        };
    }
    let workloads: Vec<&PodFacts> = node.pods.iter().filter(|p| !p.node_level).collect();
    if let Some(first) = workloads.first() {
        return NodeState::Busy {
            workloads: workloads.len(),
            example: format!("{}/{}", first.namespace, first.name),
        };
    }
    // A clock from the future (a skewed writer) restarts at now rather than never maturing.
    let since = node.idle_since.filter(|s| *s <= now).unwrap_or(now);
    let lendable_at = since + idle_after;
    if now >= lendable_at {
        NodeState::Lendable { since }
    } else {
        NodeState::Idle { since, lendable_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn node(pods: Vec<PodFacts>, idle_since: Option<&str>) -> NodeFacts {
        NodeFacts {
            name: "n0".into(),
            ready: true,
            cordoned_by_others: false,
            withheld: None,
            lease: None,
            pods,
            idle_since: idle_since.map(utc),
        }
    }

    fn pod(name: &str, node_level: bool) -> PodFacts {
        PodFacts {
            namespace: "default".into(),
            name: name.into(),
            node_level,
            tenant: false,
            deleting: false,
            gone_by: None,
            has_finalizers: false,
            disruption_target: false,
            grace_seconds: None,
        }
    }

    #[test]
    fn daemonset_pods_do_not_keep_a_node_busy() {
        let now = utc("2026-11-22T20:10:00Z");
        let n = node(
            vec![pod("fluent-bit-x", true)],
            Some("2026-11-22T20:00:00Z"),
        );
        assert_eq!(
            classify(&n, now, Duration::minutes(5)),
            NodeState::Lendable {
                since: utc("2026-11-22T20:00:00Z")
            }
        );
    }

    #[test]
    fn an_internal_pod_makes_the_node_busy_and_is_named() {
        let n = node(
            vec![pod("ds", true), pod("web-1", false), pod("web-2", false)],
            Some("2026-11-22T20:00:00Z"),
        );
        assert_eq!(
            classify(&n, utc("2026-11-22T21:00:00Z"), Duration::minutes(5)),
            NodeState::Busy {
                workloads: 2,
                example: "default/web-1".into()
            }
        );
    }

    #[test]
    fn a_node_must_stay_idle_for_idle_after() {
        let now = utc("2026-11-22T20:02:00Z");
        // First seen idle now: the clock starts.
        assert_eq!(
            classify(&node(vec![], None), now, Duration::minutes(5)),
            NodeState::Idle {
                since: now,
                lendable_at: utc("2026-11-22T20:07:00Z")
            }
        );
        let since_two_minutes = node(vec![], Some("2026-11-22T20:00:00Z"));
        assert!(!classify(&since_two_minutes, now, Duration::minutes(5)).is_lendable());
        assert!(
            classify(
                &since_two_minutes,
                utc("2026-11-22T20:05:00Z"),
                Duration::minutes(5)
            )
            .is_lendable()
        );
    }

    #[test]
    fn lent_not_ready_and_cordoned_nodes_are_not_lendable() {
        let now = utc("2026-11-22T20:00:00Z");
        let mut n = node(vec![], Some("2026-11-01T00:00:00Z"));
        n.ready = false;
        assert_eq!(classify(&n, now, Duration::zero()), NodeState::NotReady);
        n.ready = true;
        n.cordoned_by_others = true;
        assert_eq!(classify(&n, now, Duration::zero()), NodeState::Cordoned);
        n.cordoned_by_others = false;
        n.withheld = Some("a control-plane node".into());
        assert_eq!(
            classify(&n, now, Duration::zero()),
            NodeState::Withheld {
                reason: "a control-plane node".into()
            }
        );
        n.lease = Some("tenant-acme/render".into());
        assert_eq!(
            classify(&n, now, Duration::zero()),
            NodeState::Lent {
                lease: "tenant-acme/render".into()
            }
        );
    }

    #[test]
    fn an_idle_clock_from_the_future_restarts_now() {
        let now = utc("2026-11-22T20:00:00Z");
        let n = node(vec![], Some("2026-12-01T00:00:00Z"));
        assert_eq!(
            classify(&n, now, Duration::minutes(1)).idle_since(),
            Some(now)
        );
    }
}
