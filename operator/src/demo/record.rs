//! What the demo sees happen, sampled from the API as any client would: each pool's nodes
//! as internal, leased or idle, the spot price, leases by phase, Offpeak's Events in words,
//! every reclaim with its notice and when its nodes were back, and any internal pod seen on
//! a lent node (there should be none).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use offpeak_api::{CapacityLease, CapacityPool, LeasePhase, PeakReservation};

use crate::names::{LEASE, RECLAIMING, TENANT};

/// One pool at one moment.
#[derive(Clone, Debug, Default)]
pub struct PoolCounts {
    pub internal: usize,
    pub leased: usize,
    pub idle: usize,
    pub spot_per_core_hour: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Sample {
    /// Into the run.
    pub at: Duration,
    pub pools: BTreeMap<String, PoolCounts>,
}

/// A reclaim: the notice the lease got and when its nodes were back.
#[derive(Clone, Debug)]
pub struct Reclaim {
    pub lease: String,
    uid: String,
    pub pool: String,
    pub reason: String,
    pub notice_given: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub nodes: Vec<String>,
    /// When every node of the lease was seen without the tenant's marks.
    pub back: Option<DateTime<Utc>>,
    /// The notice its pool promises.
    pub promised: Duration,
}

/// A lease as it ended, for the summary.
#[derive(Clone, Debug)]
pub struct Ended {
    pub tenant_namespace: String,
    pub name: String,
    pub admitted: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub reason: String,
}

#[derive(Default)]
pub struct Record {
    pub samples: Vec<Sample>,
    /// Offpeak's Events, in words, newest last.
    pub events: Vec<(DateTime<Utc>, String)>,
    pub(super) seen_events: HashSet<String>,
    pub reclaims: BTreeMap<String, Reclaim>,
    pub ended: BTreeMap<String, Ended>,
    /// Leases by phase now.
    pub phases: BTreeMap<String, usize>,
    /// Internal pods seen on a lent node.
    pub violations: BTreeSet<String>,
    /// Reservation windows (pool, start, end) seen, for the chart.
    pub windows: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
    /// When each lease was admitted and given notice, by (lease, "admitted" or "notice"):
    /// the instant and the pool, for the chart.
    pub marks: BTreeMap<(String, &'static str), (DateTime<Utc>, String)>,
    /// Leases that never ran, with why they waited.
    pub waiting: BTreeMap<String, String>,
    pub started: Option<DateTime<Utc>>,
}

fn instant(t: &Option<offpeak_api::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::parse_from_rfc3339(t.as_str()).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn tenant_marks(node: &Node) -> bool {
    node.labels().contains_key(LEASE)
        || node.labels().contains_key(TENANT)
        || node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == TENANT || t.key == RECLAIMING))
}

impl Record {
    /// Samples the cluster once.
    pub async fn sample(&mut self, client: &Client, at: Duration) -> anyhow::Result<()> {
        let now = Utc::now();
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let pools = Api::<CapacityPool>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let leases = Api::<CapacityLease>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let lent: BTreeSet<String> = nodes
            .iter()
            .filter(|n| tenant_marks(n))
            .map(|n| n.name_any())
            .collect();
        let mut busy = BTreeSet::new();
        for pod in &pods {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let namespace = pod.namespace().unwrap_or_default();
            if namespace.starts_with("tenant-") {
                continue;
            }
            let finished = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if finished {
                continue;
            }
            busy.insert(node.clone());
            let labels = nodes
                .iter()
                .find(|n| n.name_any() == node)
                .map(|n| n.labels().clone())
                .unwrap_or_default();
            if labels.contains_key(LEASE) {
                self.violations.insert(format!(
                    "internal pod {namespace}/{} on lent node {node}",
                    pod.name_any()
                ));
            }
        }
        let mut counts = BTreeMap::new();
        for pool in &pools {
            let mut c = PoolCounts {
                spot_per_core_hour: pool
                    .status
                    .as_ref()
                    .and_then(|s| s.spot_price_per_core_hour.as_ref())
                    .map(|p| p.to_string()),
                ..Default::default()
            };
            for node in nodes.iter().filter(|n| {
                crate::observe::labels_match(n.metadata.labels.as_ref(), &pool.spec.node_selector)
            }) {
                let name = node.name_any();
                if lent.contains(&name) {
                    c.leased += 1;
                } else if busy.contains(&name) {
                    c.internal += 1;
                } else {
                    c.idle += 1;
                }
            }
            counts.insert(pool.name_any(), c);
        }
        self.samples.push(Sample { at, pools: counts });
        self.phases.clear();
        for lease in &leases {
            let status = lease.status.clone().unwrap_or_default();
            let phase = status
                .phase
                .map_or("Pending".to_string(), |p| format!("{p:?}"));
            *self.phases.entry(phase).or_default() += 1;
            let key = format!(
                "{}/{}",
                lease.namespace().unwrap_or_default(),
                lease.name_any()
            );
            let pool = lease.spec.pool.to_string();
            if let Some(admitted) = instant(&status.admitted_at) {
                self.marks
                    .insert((key.clone(), "admitted"), (admitted, pool.clone()));
                self.waiting.remove(&key);
            } else if let Some(why) = status.conditions.iter().find(|c| c.type_ == "Admitted") {
                self.waiting
                    .insert(key.clone(), format!("{}: {}", why.reason, why.message));
            }
            if let (Some(given), Some(deadline)) = (
                instant(&status.notice_given_at),
                instant(&status.reclaim_deadline),
            ) && !self.reclaims.contains_key(&key)
            {
                self.marks
                    .insert((key.clone(), "notice"), (given, pool.clone()));
                let promised = pools
                    .iter()
                    .find(|p| p.name_any() == lease.spec.pool.as_str())
                    .and_then(|p| crate::observe::duration(&p.spec.notice_period).ok())
                    .and_then(|d| d.to_std().ok())
                    .unwrap_or_default();
                self.reclaims.insert(
                    key.clone(),
                    Reclaim {
                        lease: key.clone(),
                        uid: lease.uid().unwrap_or_default(),
                        pool: lease.spec.pool.to_string(),
                        reason: status.reclaim_reason.clone().unwrap_or_default(),
                        notice_given: given,
                        deadline,
                        nodes: status.bound_nodes.iter().map(|n| n.to_string()).collect(),
                        back: None,
                        promised,
                    },
                );
            }
            if status.phase == Some(LeasePhase::Ended)
                && let (Some(admitted), Some(ended)) =
                    (instant(&status.admitted_at), instant(&status.ended_at))
            {
                self.ended.entry(key.clone()).or_insert(Ended {
                    tenant_namespace: lease.namespace().unwrap_or_default(),
                    name: lease.name_any(),
                    admitted,
                    ended,
                    reason: status
                        .end_reason
                        .map_or(String::new(), |r| format!("{r:?}")),
                });
            }
        }
        // A reclaimed lease's nodes are back once none carries its marks (or another
        // lease already has them).
        for reclaim in self.reclaims.values_mut().filter(|r| r.back.is_none()) {
            let back = reclaim.nodes.iter().all(|name| {
                nodes
                    .iter()
                    .find(|n| n.name_any() == *name)
                    .is_none_or(|n| {
                        !tenant_marks(n) || n.labels().get(LEASE).is_some_and(|l| *l != reclaim.uid)
                    })
            });
            if back {
                reclaim.back = Some(now);
            }
        }
        for reservation in Api::<PeakReservation>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items
        {
            if let Some(w) = &reservation.spec.window
                && let (Some(start), Some(end)) = (
                    instant(&Some(w.start.clone())),
                    instant(&Some(w.end.clone())),
                )
            {
                let window = (reservation.spec.pool.to_string(), start, end);
                if !self.windows.contains(&window) {
                    self.windows.push(window);
                }
            }
        }
        self.events(client).await?;
        Ok(())
    }

    /// New Events from Offpeak, in words.
    async fn events(&mut self, client: &Client) -> anyhow::Result<()> {
        let mut events: Vec<Event> = Api::<Event>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reporting_component.as_deref() == Some("offpeak"))
            .collect();
        events.sort_by_key(|e| {
            e.event_time
                .as_ref()
                .map(|t| t.0)
                .or(e.last_timestamp.as_ref().map(|t| t.0))
        });
        for event in events {
            let Some(uid) = event.metadata.uid.clone() else {
                continue;
            };
            if !self.seen_events.insert(uid) {
                continue;
            }
            let object = format!(
                "{}{}",
                event
                    .involved_object
                    .namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                event.involved_object.name.as_deref().unwrap_or_default()
            );
            let reason = event.reason.unwrap_or_default();
            self.events.push((
                Utc::now(),
                format!("{object}: {reason}: {}", event.message.unwrap_or_default()),
            ));
        }
        Ok(())
    }
}
