//! The pool pass as a pure function: from one view of a pool (its nodes and what runs on
//! them, its leases, reservations, rate card and tenants) and `now`, every write the pool
//! needs, grouped by the lease it is for. The controller observes, calls [`plan`], then
//! applies: each lease's writes in order, stopping that lease (not the pool) at its first
//! failure. Nothing here performs I/O.
//!
//! Rules the plan keeps:
//! - A steady pool plans nothing: every status is compared with what is stored, a
//!   condition's `lastTransitionTime` moves only when it flips, Events come only with
//!   transitions, and the cost estimate is refreshed at transitions and at most every
//!   `cost_refresh`. Planning again after applying the plan plans nothing.
//! - At most one patch per node: binding clears the idle clock in the same patch.
//! - A lease's status records each transition's instant before anything can use it: a
//!   lease is Active (with `admittedAt` and its binding) before its tenant's quota grows, and
//!   Ended (with `endedAt` and why) before its nodes are taken back.
//! - Nodes are bound all or none (the applier takes back a partial bind), and a node that
//!   carries a tenant's marks without a lease holding it is returned.
//! - Giving a node back: its lease label comes off first, so the tenant's replacement pods
//!   cannot land on it again; the tenant's pods are evicted; once none is left the taint
//!   comes off and the node is the pool's again.

mod reclaim;
mod status;
pub mod view;

/// Plans applied in memory: for the tests and the plan bench.
#[doc(hidden)]
pub mod simulate;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Datelike, Duration, Utc};
use offpeak_api::{
    CapacityLeaseSpec, CapacityLeaseStatus, CapacityPoolStatus, EndReason, LeaseClass, LeasePhase,
};
use offpeak_billing::rate::LeaseClass as BillingClass;
use rust_decimal::Decimal;

pub use self::view::{
    Confinement, Failure, LeaseView, Ledger, NodeMarks, NodeView, PendingPod, PlanSettings,
    PoolSettings, PoolView, PressureSettings, ReservationView, hours_between,
};
use crate::observe;
use crate::plan::admission::{self, Decision, Holding, LeaseRequest, PoolSnapshot};
use crate::plan::calendar::Interval;
use crate::plan::eligibility::{self, Verdict};
use crate::plan::idle::{self, NodeFacts, NodeState, PodFacts};
use crate::plan::node_choice::Candidate;
use crate::plan::resources::Resources;
use crate::pricing;

/// Every write a pool needs now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolPlan {
    /// Writes for each lease, in the order they must happen.
    pub leases: Vec<LeasePlan>,
    /// Writes for nodes no lease answers for (idle clocks, nodes left lent to nothing).
    pub nodes: Vec<Write>,
    /// The pool's new status, when it differs from the stored one.
    pub status: Option<CapacityPoolStatus>,
    /// Events about the pool.
    pub events: Vec<Note>,
    /// The pool's reservations' new statuses, where they differ, with Events.
    pub reservations: Vec<ReservationPlan>,
    /// When to plan again at the latest (a term ends, an idle node matures, a retry).
    pub wake_at: Option<DateTime<Utc>>,
}

impl PoolPlan {
    /// Whether the plan writes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.leases.iter().all(|l| l.writes.is_empty())
            && self.nodes.is_empty()
            && self.status.is_none()
            && self.events.is_empty()
            && self.reservations.is_empty()
    }

    /// How many writes the plan makes.
    pub fn writes(&self) -> usize {
        self.leases.iter().map(|l| l.writes.len()).sum::<usize>()
            + self.nodes.len()
            + usize::from(self.status.is_some())
            + self.events.len()
            + self
                .reservations
                .iter()
                .map(|r| usize::from(r.status.is_some()) + r.events.len())
                .sum::<usize>()
    }
}

/// A reservation's new status (when it changed) and Events.
#[derive(Clone, Debug, PartialEq)]
pub struct ReservationPlan {
    pub name: String,
    pub status: Option<offpeak_api::PeakReservationStatus>,
    pub events: Vec<Note>,
}

/// The writes for one lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeasePlan {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    pub writes: Vec<Write>,
}

/// One intended write.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Add the finalizer that makes a deleted lease give its nodes back first.
    AddFinalizer,
    /// Remove it: the lease's nodes are back.
    RemoveFinalizer,
    /// Lend these nodes, all or none: a failure part-way takes back those already patched.
    Bind(Vec<NodePatch>),
    /// Patch one node.
    Node(Box<NodePatch>),
    /// Evict a tenant's pod from a node going back.
    Evict(Eviction),
    /// Delete a tenant's pod that outstayed its eviction, at once, and drop its finalizers.
    ForceDelete(Eviction),
    /// Tell a tenant's pod its node goes back: its DisruptionTarget condition.
    DisruptionTarget { pod: Eviction, message: String },
    /// Replace the lease's status.
    Status(Box<CapacityLeaseStatus>),
    /// Publish an Event about the lease.
    Event(Note),
}

/// Takes a node from the marks it was seen with to new ones, locked on the version seen.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePatch {
    pub node: String,
    pub resource_version: Option<String>,
    pub from: NodeMarks,
    pub to: NodeMarks,
}

/// A tenant's pod on a node going back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Grace period for the eviction (none: the pod's own).
    pub grace_seconds: Option<i64>,
}

/// How long a pod may outstay the end of its eviction's grace before it is deleted at once.
pub const FORCE_AFTER: Duration = Duration::seconds(5);
/// The longest grace a tenant's pod gets when its lease is deleted (when its time is up, it
/// gets none).
pub const CANCEL_GRACE_SECONDS: i64 = 30;

/// An Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl Note {
    fn normal(reason: &str, message: String) -> Note {
        Note {
            warning: false,
            reason: reason.to_string(),
            message,
        }
    }

    fn warning(reason: &str, message: String) -> Note {
        Note {
            warning: true,
            reason: reason.to_string(),
            message,
        }
    }
}

/// How a node stands before the plan acts.
#[derive(Clone, Debug, PartialEq)]
enum Role {
    /// Lent to a lease that holds it.
    Lent { lease: String },
    /// Carries a tenant's marks without a lease holding it: it goes back.
    Returning,
    /// The pool's: idle, busy, not ready...
    Free(NodeState),
    /// Given back by this pass: the pool's once the plan is applied, but not offered
    /// before (one patch per node per pass).
    Returned(NodeState),
}

impl Role {
    /// The node's state once the plan is applied, if it is the pool's.
    fn state_after(&self) -> Option<&NodeState> {
        match self {
            Role::Free(state) | Role::Returned(state) => Some(state),
            _ => None,
        }
    }
}

/// Plans the pool.
pub fn plan(view: &PoolView, now: DateTime<Utc>, settings: &PlanSettings) -> PoolPlan {
    Pass::new(view, now, settings).run()
}

struct Pass<'a> {
    view: &'a PoolView,
    now: DateTime<Utc>,
    settings: &'a PlanSettings,
    /// The pool's spec, or lending off when it cannot be read.
    pool: PoolSettings,
    roles: BTreeMap<&'a str, Role>,
    /// The view's nodes by name (leases name their nodes; a scan per name grows as N²).
    by_name: HashMap<&'a str, &'a NodeView>,
    /// Marks each node will carry once the plan is applied.
    marks_after: BTreeMap<&'a str, NodeMarks>,
    leases: BTreeMap<&'a str, LeasePlan>,
    nodes: Vec<Write>,
    /// Nodes whose return a lease's plan has taken on.
    returns_planned: BTreeSet<&'a str>,
    events: Vec<Note>,
    /// What the pool asks of the leases that hold its nodes.
    reclaim: reclaim::Reclaim,
    wake: Option<DateTime<Utc>>,
}

impl<'a> Pass<'a> {
    fn new(view: &'a PoolView, now: DateTime<Utc>, settings: &'a PlanSettings) -> Pass<'a> {
        let pool = view.settings.clone().unwrap_or(PoolSettings {
            idle_after: Duration::days(36500),
            notice: Duration::seconds(120),
            headroom: None,
            lending_enabled: false,
            minimum_runtime: Duration::zero(),
            reclaim_advisory: Duration::zero(),
            internal_pressure: PressureSettings {
                unschedulable_for: Duration::days(36500),
                emergency_after: Duration::days(36500),
            },
        });
        Pass {
            view,
            now,
            settings,
            pool,
            roles: BTreeMap::new(),
            by_name: view.nodes.iter().map(|n| (n.name.as_str(), n)).collect(),
            marks_after: view
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), n.marks.clone()))
                .collect(),
            leases: BTreeMap::new(),
            nodes: Vec::new(),
            returns_planned: BTreeSet::new(),
            events: Vec::new(),
            reclaim: reclaim::Reclaim::default(),
            wake: None,
        }
    }

    fn wake_at(&mut self, at: DateTime<Utc>) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    fn lease_plan(&mut self, lease: &'a LeaseView) -> &mut LeasePlan {
        self.leases
            .entry(lease.uid.as_str())
            .or_insert_with(|| LeasePlan {
                uid: lease.uid.clone(),
                namespace: lease.namespace.clone(),
                name: lease.name.clone(),
                resource_version: lease.resource_version.clone(),
                writes: Vec::new(),
            })
    }

    fn push(&mut self, lease: &'a LeaseView, write: Write) {
        self.lease_plan(lease).writes.push(write);
    }

    fn run(mut self) -> PoolPlan {
        self.classify_nodes();
        self.reclaim = self.asks();
        for at in self.reclaim.wake.clone() {
            self.wake_at(at);
        }
        let view = self.view;
        let mut pending: Vec<(&'a LeaseView, LeaseRequest)> = Vec::new();
        for lease in &view.leases {
            if let Some(failure) = &lease.failure
                && self.now < failure.retry_at
            {
                // A write failed moments ago; its condition and Event are out. Try again later.
                self.wake_at(failure.retry_at);
                continue;
            }
            if lease.deleting {
                self.plan_deleted(lease);
                continue;
            }
            if !lease.has_finalizer {
                self.push(lease, Write::AddFinalizer);
            }
            match lease.phase() {
                Some(LeasePhase::Active | LeasePhase::Reclaiming) => self.plan_active(lease),
                Some(LeasePhase::Ended) => self.plan_returned(lease),
                Some(LeasePhase::Rejected)
                    if lease.status.observed_generation == lease.generation => {}
                _ => {
                    if let Some(request) = self.request(lease) {
                        pending.push((lease, request));
                    }
                }
            }
        }
        self.admit(pending);
        self.return_orphans();
        self.evict_internal_pods_from_lent_nodes();
        self.idle_clocks();
        self.settle_synced();
        let (status, note, held_back) = self.pool_status();
        self.events.extend(note);
        if held_back {
            // A utilisation change within the second of the last is recorded at the next.
            self.wake_at(self.now + Duration::seconds(1));
        }
        let reservations = self.reservation_statuses();
        // Nothing here changes with the clock alone, but look again now and then.
        self.wake_at(self.now + Duration::minutes(5));
        let mut leases: Vec<LeasePlan> = self.leases.into_values().collect();
        leases.retain(|l| !l.writes.is_empty());
        PoolPlan {
            leases,
            nodes: self.nodes,
            status: (view.status.as_ref() != Some(&status)).then_some(status),
            events: self.events,
            reservations,
            wake_at: self.wake,
        }
    }

    /// A lease whose last failed write went through since gets its Synced condition back.
    fn settle_synced(&mut self) {
        let view = self.view;
        let now = self.now;
        for lease in view
            .leases
            .iter()
            .filter(|l| l.failure.is_none() && !l.deleting)
        {
            let plan = self.lease_plan(lease);
            let planned = plan.writes.iter_mut().find_map(|w| match w {
                Write::Status(next) => Some(next),
                _ => None,
            });
            match planned {
                Some(next) => status::settle_synced(next, lease.generation, now),
                None => {
                    let mut next = lease.status.clone();
                    status::settle_synced(&mut next, lease.generation, now);
                    if next != lease.status {
                        plan.writes.push(Write::Status(Box::new(next)));
                    }
                }
            }
        }
    }

    /// Which lease holds each node, which go back, and the state of the rest.
    fn classify_nodes(&mut self) {
        let holders: BTreeMap<&str, &LeaseView> = self
            .view
            .leases
            .iter()
            .filter(|l| l.holds_nodes())
            .map(|l| (l.uid.as_str(), l))
            .collect();
        for node in &self.view.nodes {
            let role = match &node.marks.lease {
                Some(uid)
                    if node.in_pool
                        && holders.get(uid.as_str()).is_some_and(|l| {
                            l.status.bound_nodes.iter().any(|n| n.as_str() == node.name)
                        }) =>
                {
                    Role::Lent { lease: uid.clone() }
                }
                _ if node.marks.is_tenants() => Role::Returning,
                _ if !node.in_pool => continue,
                _ => Role::Free(idle::classify(
                    &self.facts(node, None),
                    self.now,
                    self.pool.idle_after,
                )),
            };
            self.roles.insert(node.name.as_str(), role);
        }
    }

    fn facts(&self, node: &NodeView, lease: Option<String>) -> NodeFacts {
        NodeFacts {
            name: node.name.clone(),
            ready: node.ready,
            cordoned_by_others: node.cordoned_by_others,
            withheld: node.withheld.clone(),
            lease,
            pods: node.pods.clone(),
            idle_since: node.marks.idle_since.as_deref().and_then(parse_instant),
        }
    }

    fn node(&self, name: &str) -> Option<&'a NodeView> {
        self.by_name.get(name).copied()
    }

    /// The lease was deleted: it ends (if it held nodes), its nodes go back, then the
    /// finalizer goes.
    fn plan_deleted(&mut self, lease: &'a LeaseView) {
        if lease
            .phase()
            .is_some_and(|p| matches!(p, LeasePhase::Active | LeasePhase::Reclaiming))
        {
            self.end(lease, EndReason::Cancelled);
            return;
        }
        let ended = lease.phase() == Some(LeasePhase::Ended);
        let back = status::nodes_are_back(&lease.status) || self.return_nodes_of(lease);
        if back && lease.has_finalizer && lease.status.admitted_at.is_some() && !lease.metered {
            // Its end must be in the ledger before the object goes.
            self.wake_at(self.now + Duration::seconds(2));
            return;
        }
        if back && lease.has_finalizer {
            if ended && !status::nodes_are_back(&lease.status) {
                self.push(lease, Write::Event(self.returned_note(lease)));
            }
            self.push(lease, Write::RemoveFinalizer);
        }
    }

    fn returned_note(&self, lease: &LeaseView) -> Note {
        Note::normal(
            status::NODES_RETURNED,
            format!(
                "nodes {} went back to pool {}",
                join(&lease.status.bound_nodes),
                self.view.name
            ),
        )
    }

    /// An Active lease: ends at its term, else its cost estimate stays fresh.
    fn plan_active(&mut self, lease: &'a LeaseView) {
        let ends_at = lease
            .status
            .ends_at
            .as_ref()
            .and_then(|t| observe::instant(t).ok());
        if let Some(end) = ends_at {
            if end <= self.now {
                self.end(lease, EndReason::Expired);
                return;
            }
            self.wake_at(end);
        }
        if self.lost_nodes(lease) {
            return;
        }
        let mut next = lease.status.clone();
        if lease.phase() == Some(LeasePhase::Reclaiming) {
            // The deadline is the one written with the notice, whatever happened since.
            let deadline = lease
                .status
                .reclaim_deadline
                .as_ref()
                .and_then(|t| observe::instant(t).ok())
                .unwrap_or(self.now);
            if deadline <= self.now {
                let reason = match lease.status.reclaim_reason.as_deref() {
                    Some("PriceExceeded") => EndReason::PriceExceeded,
                    _ => EndReason::Reclaimed,
                };
                self.end(lease, reason);
                return;
            }
            self.wake_at(deadline);
            self.hold_off(lease, deadline);
        } else {
            match self.reclaim.asks.get(&lease.uid).cloned() {
                Some(reclaim::Ask::Notice { cause, deadline }) => {
                    self.notice(lease, &cause, deadline);
                    return;
                }
                Some(reclaim::Ask::Likely { cause }) => {
                    let was = status::likely(&lease.status);
                    status::set_likely(&mut next, lease.generation, Some(&cause), self.now);
                    if was != Some(cause.message.as_str()) {
                        self.push(
                            lease,
                            Write::Event(Note::normal(
                                status::RECLAIM_LIKELY,
                                format!("a reclaim is likely soon: {}", cause.message),
                            )),
                        );
                    }
                }
                None => status::set_likely(&mut next, lease.generation, None, self.now),
            }
        }
        if self.cost_due(lease) {
            self.refresh_cost(lease, &mut next, self.now);
        }
        if let Some(as_of) = next
            .cost_as_of
            .as_ref()
            .and_then(|t| observe::instant(t).ok())
        {
            self.wake_at(as_of + self.settings.cost_refresh);
        }
        if next != lease.status {
            self.push(lease, Write::Status(Box::new(next)));
        }
    }

    /// Nodes of the lease that left the pool (deleted, or relabelled out of its selector)
    /// are no longer billed: a new binding records what is left from now on, with a
    /// condition and an Event; a lease left with no node ends. A node still in the pool
    /// that lost the lease's marks gets them back. Whether the lease's plan is done.
    fn lost_nodes(&mut self, lease: &'a LeaseView) -> bool {
        let mut kept = Vec::new();
        let mut lost = Vec::new();
        for bound in &lease.status.bound_nodes {
            match self.node(bound.as_str()) {
                Some(node) if node.in_pool => {
                    if node.marks.lease.as_deref() != Some(lease.uid.as_str())
                        && !node.marks.is_tenants()
                    {
                        // Someone took the lease's marks off a node it holds: put them back.
                        let tenant = self
                            .view
                            .namespace_tenants
                            .get(&lease.namespace)
                            .cloned()
                            .unwrap_or_default();
                        let to = NodeMarks {
                            reclaiming: lease.phase() == Some(LeasePhase::Reclaiming),
                            ..NodeMarks::lent(lease, &tenant)
                        };
                        self.marks_after.insert(node.name.as_str(), to.clone());
                        self.push(
                            lease,
                            Write::Node(Box::new(NodePatch {
                                node: node.name.clone(),
                                resource_version: node.resource_version.clone(),
                                from: node.marks.clone(),
                                to,
                            })),
                        );
                        self.roles.insert(
                            node.name.as_str(),
                            Role::Lent {
                                lease: lease.uid.clone(),
                            },
                        );
                    }
                    kept.push(node);
                }
                _ => lost.push(bound.to_string()),
            }
        }
        if lost.is_empty() {
            return false;
        }
        let message = format!(
            "node(s) {} left pool {} (deleted, or relabelled out of it) under the lease",
            lost.join(", "),
            self.view.name
        );
        if kept.is_empty() {
            let note = Note::warning("NodesLost", format!("{message}; the lease ends"));
            self.push(lease, Write::Event(note));
            self.end(lease, EndReason::Reclaimed);
            return true;
        }
        let names: Vec<String> = kept.iter().map(|n| n.name.clone()).collect();
        let capacity: Resources = kept.iter().map(|n| n.capacity()).sum();
        let mut next = lease.status.clone();
        self.refresh_cost(lease, &mut next, self.now);
        let next = status::lost_nodes(lease, next, &names, &capacity, &message, self.now);
        self.push(lease, Write::Status(Box::new(next)));
        self.push(
            lease,
            Write::Event(Note::warning(
                "NodesLost",
                format!(
                    "{message}; it goes on with {} node(s), billed for them from now",
                    names.len()
                ),
            )),
        );
        true
    }

    /// Notice to the lease: recorded first (when and until when, and why), then its nodes
    /// take no new tenant pods and its pods are told.
    fn notice(&mut self, lease: &'a LeaseView, cause: &reclaim::Cause, deadline: DateTime<Utc>) {
        let mut next = lease.status.clone();
        self.refresh_cost(lease, &mut next, self.now);
        let next = status::reclaiming(lease, next, cause, deadline, self.now);
        let seconds = (deadline - self.now).num_seconds();
        self.push(lease, Write::Status(Box::new(next)));
        self.push(
            lease,
            Write::Event(Note::warning(
                "Reclaiming",
                format!(
                    "notice to {}: {seconds} s, until {}; {}",
                    lease.display_name(),
                    observe::timestamp(deadline).as_str(),
                    cause.message
                ),
            )),
        );
        self.wake_at(deadline);
        self.hold_off(lease, deadline);
    }

    /// During notice: the lease's nodes carry Offpeak's reclaiming taint and its pods the
    /// DisruptionTarget condition, put back if anything took them off.
    fn hold_off(&mut self, lease: &'a LeaseView, deadline: DateTime<Utc>) {
        let message = format!(
            "lease {} is reclaimed; its pods are evicted at {}",
            lease.display_name(),
            observe::timestamp(deadline).as_str()
        );
        for bound in &lease.status.bound_nodes {
            let Some(node) = self.node(bound.as_str()) else {
                continue;
            };
            if node.marks.lease.as_deref() != Some(lease.uid.as_str()) {
                continue;
            }
            if !node.marks.reclaiming {
                let to = NodeMarks {
                    reclaiming: true,
                    ..node.marks.clone()
                };
                self.marks_after.insert(node.name.as_str(), to.clone());
                self.push(
                    lease,
                    Write::Node(Box::new(NodePatch {
                        node: node.name.clone(),
                        resource_version: node.resource_version.clone(),
                        from: node.marks.clone(),
                        to,
                    })),
                );
            }
            for pod in node
                .pods
                .iter()
                .filter(|p| p.tenant && !p.node_level && !p.disruption_target && !p.deleting)
            {
                self.push(
                    lease,
                    Write::DisruptionTarget {
                        pod: Eviction {
                            namespace: pod.namespace.clone(),
                            name: pod.name.clone(),
                            node: node.name.clone(),
                            grace_seconds: None,
                        },
                        message: message.clone(),
                    },
                );
            }
        }
    }

    /// What the pool asks of its leases now (reclaim::plan over this view).
    fn asks(&self) -> reclaim::Reclaim {
        let view = self.view;
        let capacity = |lease: &LeaseView| -> Resources {
            lease
                .status
                .bound_nodes
                .iter()
                .filter_map(|n| self.node(n.as_str()))
                .map(NodeView::capacity)
                .sum()
        };
        let spot = view.rate_card.as_ref().map(|c| {
            pricing::hourly_prices(c, BillingClass::Spot, Some(self.utilisation_before()))
        });
        let reserved = view
            .rate_card
            .as_ref()
            .map(|c| pricing::hourly_prices(c, BillingClass::Reserved, None));
        let spot_hourly = |lease: &LeaseView| spot.as_ref().map(|p| p.hourly(&capacity(lease)));
        let rate = |lease: &LeaseView| match lease.spec.class {
            LeaseClass::Spot => lease
                .spec
                .max_price_per_hour
                .as_ref()
                .and_then(|m| observe::decimal(m.as_str()).ok())
                .unwrap_or_default(),
            LeaseClass::Reserved => reserved
                .as_ref()
                .map_or(Decimal::ZERO, |p| p.hourly(&capacity(lease))),
        };
        reclaim::plan(&reclaim::Inputs {
            settings: &self.pool,
            leases: &view.leases,
            reservations: &view.reservations,
            pending: &view.pending,
            total: view.nodes.len(),
            headroom_limit: self.headroom_limit(),
            idle_capacity: view
                .nodes
                .iter()
                .filter(|n| {
                    matches!(
                        self.roles.get(n.name.as_str()),
                        Some(Role::Free(
                            NodeState::Idle { .. } | NodeState::Lendable { .. }
                        ))
                    )
                })
                .map(NodeView::capacity)
                .sum(),
            capacity: &capacity,
            spot_hourly: &spot_hourly,
            rate: &rate,
            now: self.now,
        })
    }

    fn cost_due(&self, lease: &LeaseView) -> bool {
        lease
            .status
            .cost_as_of
            .as_ref()
            .and_then(|t| observe::instant(t).ok())
            .is_none_or(|at| at + self.settings.cost_refresh <= self.now)
    }

    /// Sets the cost estimate as of `at` (seconds bound so far at today's price).
    fn refresh_cost(&self, lease: &LeaseView, next: &mut CapacityLeaseStatus, at: DateTime<Utc>) {
        let Some(card) = &self.view.rate_card else {
            return;
        };
        let Some(admitted) = next
            .admitted_at
            .as_ref()
            .and_then(|t| observe::instant(t).ok())
        else {
            return;
        };
        let bound: Resources = next
            .bound_nodes
            .iter()
            .filter_map(|n| self.node(n.as_str()))
            .map(NodeView::capacity)
            .sum();
        let cost = pricing::cost_so_far(
            card,
            billing_class(lease.spec.class),
            &bound,
            Some(self.utilisation_before()),
            admitted,
            at,
        );
        status::set_cost(next, cost, card.currency.code(), at);
    }

    /// The lease's time is up for `reason`: record the end first, then give its nodes back.
    fn end(&mut self, lease: &'a LeaseView, reason: EndReason) {
        let mut next = lease.status.clone();
        self.refresh_cost(lease, &mut next, self.now);
        let next = status::ended(lease, next, reason, &self.view.name, self.now);
        let nodes = join(&lease.status.bound_nodes);
        let note = match reason {
            EndReason::Cancelled => format!(
                "lease deleted; nodes {nodes} go back to pool {}",
                self.view.name
            ),
            EndReason::Expired => format!(
                "term over; nodes {nodes} go back to pool {}",
                self.view.name
            ),
            EndReason::Reclaimed => format!(
                "reclaimed; nodes {nodes} go back to pool {}",
                self.view.name
            ),
            EndReason::PriceExceeded => format!(
                "the spot price rose above maxPricePerHour; nodes {nodes} go back to pool {}",
                self.view.name
            ),
        };
        self.push(lease, Write::Status(Box::new(next)));
        self.push(lease, Write::Event(Note::normal("Ended", note)));
        // The lease no longer holds its nodes: they are returning from now on.
        for node in &lease.status.bound_nodes {
            if let Some(role) = self.roles.get_mut(node.as_str())
                && matches!(role, Role::Lent { lease: l } if *l == lease.uid)
            {
                *role = Role::Returning;
            }
        }
        self.return_nodes_of(lease);
    }

    /// An Ended lease: once its nodes are back, say so (and nothing more).
    fn plan_returned(&mut self, lease: &'a LeaseView) {
        if status::nodes_are_back(&lease.status) || !self.return_nodes_of(lease) {
            return;
        }
        let next = status::nodes_returned(lease, lease.status.clone(), &self.view.name, self.now);
        self.push(lease, Write::Status(Box::new(next)));
        self.push(lease, Write::Event(self.returned_note(lease)));
    }

    /// Plans the next step of giving back the lease's nodes; whether all are back.
    fn return_nodes_of(&mut self, lease: &'a LeaseView) -> bool {
        let mut back = true;
        for node in &lease.status.bound_nodes {
            let Some(node) = self.node(node.as_str()) else {
                continue; // gone from the pool (deleted or relabelled): nothing to return
            };
            let ours = node.marks.lease.as_deref() == Some(lease.uid.as_str())
                || (node.marks.lease.is_none() && node.marks.is_tenants());
            if !ours
                || self.roles.get(node.name.as_str()) != Some(&Role::Returning)
                || !self.returns_planned.insert(node.name.as_str())
            {
                continue;
            }
            let grace = match lease.status.end_reason {
                Some(EndReason::Cancelled) => Some(CANCEL_GRACE_SECONDS),
                _ => Some(0),
            };
            let (writes, done) = self.return_node(node, grace);
            back &= done;
            for write in writes {
                self.push(lease, write);
            }
        }
        back
    }

    /// Nodes carrying a tenant's marks that no lease answers for go back too.
    fn return_orphans(&mut self) {
        let view = self.view;
        for node in &view.nodes {
            if self.roles.get(node.name.as_str()) == Some(&Role::Returning)
                && self.returns_planned.insert(node.name.as_str())
            {
                let (writes, _) = self.return_node(node, Some(0));
                self.nodes.extend(writes);
            }
        }
    }

    /// A tenant never shares a node with internal workloads: an internal pod found on a
    /// lent node (one that tolerates every taint, or one the scheduler placed in the instant
    /// the node was lent) is evicted, and the pool says so.
    fn evict_internal_pods_from_lent_nodes(&mut self) {
        let view = self.view;
        for node in &view.nodes {
            if !matches!(self.roles.get(node.name.as_str()), Some(Role::Lent { .. })) {
                continue;
            }
            for pod in node
                .pods
                .iter()
                .filter(|p| !p.tenant && !p.node_level && !p.deleting)
            {
                self.nodes.push(Write::Evict(Eviction {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    node: node.name.clone(),
                    grace_seconds: None,
                }));
                self.events.push(Note::warning(
                    "InternalPodOnLentNode",
                    format!(
                        "internal pod {}/{} was on node {}, lent to tenant {}: evicted",
                        pod.namespace,
                        pod.name,
                        node.name,
                        node.marks.tenant.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
    }

    /// The next step of giving `node` back: labels off and the tenant's pods evicted (their
    /// grace at most `grace` seconds; pods that outstay it are deleted at once, finalizers
    /// and all); once no tenant pod is left, the taints off. Whether it is back now.
    fn return_node(&mut self, node: &'a NodeView, grace: Option<i64>) -> (Vec<Write>, bool) {
        let tenant_pods: Vec<&PodFacts> = node
            .pods
            .iter()
            .filter(|p| p.tenant && !p.node_level)
            .collect();
        let mut writes = Vec::new();
        let target = if tenant_pods.is_empty() {
            // Nothing of the tenant's is left: the node is the pool's, idle from now on.
            let state = idle::classify(&self.facts(node, None), self.now, self.pool.idle_after);
            let marks = NodeMarks {
                idle_since: state
                    .idle_since()
                    .map(|t| observe::timestamp(t).to_string()),
                ..NodeMarks::default()
            };
            self.roles.insert(node.name.as_str(), Role::Returned(state));
            marks
        } else {
            NodeMarks {
                tainted_for: node.marks.tainted_for.clone(),
                reclaiming: node.marks.reclaiming,
                ..NodeMarks::default()
            }
        };
        if node.marks != target && self.marks_after.get(node.name.as_str()) != Some(&target) {
            writes.push(Write::Node(Box::new(NodePatch {
                node: node.name.clone(),
                resource_version: node.resource_version.clone(),
                from: node.marks.clone(),
                to: target.clone(),
            })));
            self.marks_after.insert(node.name.as_str(), target);
        }
        for pod in &tenant_pods {
            let eviction = Eviction {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                node: node.name.clone(),
                grace_seconds: match (grace, pod.grace_seconds) {
                    (Some(cap), Some(own)) => Some(cap.min(own)),
                    (cap, own) => cap.or(own),
                },
            };
            match pod.gone_by {
                None => writes.push(Write::Evict(eviction)),
                Some(due) if due + FORCE_AFTER <= self.now => {
                    writes.push(Write::ForceDelete(eviction))
                }
                Some(due) => self.wake_at(due + FORCE_AFTER),
            }
        }
        if !tenant_pods.is_empty() {
            // Pods are leaving; look again shortly even if no event says so.
            self.wake_at(self.now + Duration::seconds(1));
        }
        (writes, tenant_pods.is_empty())
    }

    /// What a Pending lease asks, or its Rejected or Pending status when it cannot ask.
    fn request(&mut self, lease: &'a LeaseView) -> Option<LeaseRequest> {
        let invalid = |message: String| Verdict::Reject {
            reason: "InvalidSpec",
            message,
        };
        let parsed = (|| {
            let ask = observe::ask(&lease.spec).map_err(invalid)?;
            let term = observe::term(&lease.spec, self.now).map_err(invalid)?;
            if term.end - term.start > Duration::days(366) {
                return Err(invalid(format!(
                    "spec.endTime {} is more than 366 days (8784h) away; a lease's term is at most 366 days",
                    observe::timestamp(term.end).as_str(),
                )));
            }
            let max_price = lease
                .spec
                .max_price_per_hour
                .as_ref()
                .map(|m| observe::decimal(m.as_str()))
                .transpose()
                .map_err(invalid)?;
            let tenant = self.view.namespace_tenants.get(&lease.namespace);
            match eligibility::check(
                tenant.and_then(|t| self.view.tenants.get(t)),
                &lease.namespace,
                &self.view.name,
            ) {
                Verdict::Eligible => {}
                other => return Err(other),
            }
            // Credit is judged on the longest the term can be: from creation for an endTime,
            // so what a waiting lease is told does not change with the clock.
            let longest =
                observe::term(&lease.spec, lease.created.min(self.now)).map_or(term, |t| t);
            Ok(LeaseRequest {
                name: lease.display_name(),
                tenant: tenant.cloned().unwrap_or_default(),
                class: observe::class(&lease.spec),
                ask,
                term,
                credit_hours: hours_between(longest.start, longest.end),
                max_price,
                created: lease.created,
            })
        })();
        match parsed {
            Ok(request) => Some(request),
            Err(Verdict::Wait { reason, message }) => {
                self.hold(lease, LeasePhase::Pending, reason, &message);
                None
            }
            Err(Verdict::Reject { reason, message }) => {
                self.hold(lease, LeasePhase::Rejected, reason, &message);
                None
            }
            Err(Verdict::Eligible) => None,
        }
    }

    /// The lease waits (Pending) or never will be served (Rejected), for `reason`.
    fn hold(&mut self, lease: &'a LeaseView, phase: LeasePhase, reason: &str, message: &str) {
        let next = status::held(lease, phase, reason, message, self.now);
        if next == lease.status {
            return;
        }
        let was = status::admitted_reason(&lease.status);
        self.push(lease, Write::Status(Box::new(next)));
        if was != Some(reason) || lease.status.phase != Some(phase) {
            let note = match phase {
                LeasePhase::Rejected => Note::warning(reason, format!("Rejected: {message}")),
                _ => Note::normal(reason, format!("Pending: {message}")),
            };
            self.push(lease, Write::Event(note));
        }
    }

    fn snapshot(&self) -> PoolSnapshot {
        let total = self.view.nodes.len();
        let free: Vec<Candidate> = self
            .view
            .nodes
            .iter()
            .filter(|n| matches!(self.roles.get(n.name.as_str()), Some(Role::Free(s)) if s.is_lendable()))
            .filter(|n| !self.view.held_back.contains(&n.name))
            .map(|n| Candidate {
                name: n.name.clone(),
                allocatable: n.capacity(),
                class: n.class.clone(),
            })
            .collect();
        let reserved: Vec<Holding> = self
            .view
            .leases
            .iter()
            .filter(|l| l.holds_nodes() && l.spec.class == LeaseClass::Reserved)
            .filter_map(|l| {
                let start = observe::instant(l.status.admitted_at.as_ref()?).ok()?;
                let end = observe::instant(l.status.ends_at.as_ref()?).ok()?;
                Some(Holding {
                    lease: l.display_name(),
                    term: Interval::new(start, end),
                    nodes: l.status.bound_nodes.len(),
                })
            })
            .collect();
        let prices = |class| {
            self.view
                .rate_card
                .as_ref()
                .map(|c| pricing::hourly_prices(c, class, Some(self.utilisation_before())))
        };
        PoolSnapshot {
            name: self.view.name.clone(),
            nodes_total: total,
            capacity: self.view.nodes.iter().map(NodeView::capacity).sum(),
            free,
            lent: self.lent_before(),
            headroom_limit: self.headroom_limit(),
            reservations: self.view.reservations.clone(),
            reserved,
            spot_prices: prices(BillingClass::Spot),
            reserved_prices: prices(BillingClass::Reserved),
            spot_protection: self.pool.notice + self.pool.minimum_runtime,
        }
    }

    fn lent_before(&self) -> usize {
        self.roles
            .values()
            .filter(|r| matches!(r, Role::Lent { .. }))
            .count()
    }

    /// Nodes in use (running internal pods, or lent) of all, before the plan acts: what the
    /// spot price follows.
    fn utilisation_before(&self) -> Decimal {
        let busy = self
            .view
            .nodes
            .iter()
            .filter(|n| {
                matches!(
                    self.roles.get(n.name.as_str()),
                    Some(Role::Free(NodeState::Busy { .. }))
                )
            })
            .count();
        utilisation(self.lent_before() + busy, self.view.nodes.len())
    }

    fn headroom_limit(&self) -> usize {
        let total = self.view.nodes.len();
        if !self.pool.lending_enabled {
            return 0;
        }
        self.pool
            .headroom
            .map_or(total, |keep| keep.lend_limit(total))
    }

    /// Admission of the pending leases, first come first served with bounded backfill.
    fn admit(&mut self, pending: Vec<(&'a LeaseView, LeaseRequest)>) {
        if pending.is_empty() {
            return;
        }
        if let Some(missing) = self.view.confinement.message() {
            // Unconfined tenant pods could reach the host: lend nothing until it is back.
            let message = format!(
                "tenant pod confinement is not in place ({missing}); no lease is admitted until it is"
            );
            for (lease, _) in pending {
                self.hold(lease, LeasePhase::Pending, "ConfinementMissing", &message);
            }
            return;
        }
        let snapshot = self.snapshot();
        let requests: Vec<LeaseRequest> = pending.iter().map(|(_, r)| r.clone()).collect();
        let by_name: BTreeMap<&str, (&'a LeaseView, &LeaseRequest)> = pending
            .iter()
            .map(|(l, r)| (r.name.as_str(), (*l, r)))
            .collect();
        // The tenants' standing from other pools (observed), plus this pool's leases.
        let mut tenants = self.view.tenants.clone();
        for lease in &self.view.leases {
            if let Some(tenant) = self
                .view
                .namespace_tenants
                .get(&lease.namespace)
                .and_then(|t| tenants.get_mut(t))
            {
                let (spent, committed) = standing(
                    &lease.spec,
                    &lease.status,
                    self.view.rate_card.as_ref(),
                    self.now,
                );
                tenant.open_balance += spent;
                tenant.committed += committed;
            }
        }
        let decisions = admission::admit_in_order(
            &snapshot,
            &requests,
            &mut tenants,
            self.now,
            self.settings.starvation_guard,
        );
        for (name, decision) in decisions {
            let Some((lease, request)) = by_name.get(name.as_str()).copied() else {
                continue;
            };
            match decision {
                Decision::Admit { nodes } => self.bind(lease, request, &nodes),
                Decision::Wait { reason, message } => {
                    let blocks_at = request.created + self.settings.starvation_guard;
                    if blocks_at > self.now {
                        self.wake_at(blocks_at);
                    }
                    self.hold(lease, LeasePhase::Pending, reason.as_str(), &message)
                }
                Decision::Reject { reason, message } => {
                    self.hold(lease, LeasePhase::Rejected, reason.as_str(), &message)
                }
            }
        }
    }

    /// Lends `nodes` to the lease, then records it Active.
    fn bind(&mut self, lease: &'a LeaseView, request: &LeaseRequest, nodes: &[String]) {
        let tenant = request.tenant.clone();
        let mut patches = Vec::new();
        let mut capacity = Resources::ZERO;
        for name in nodes {
            let Some(node) = self.node(name) else {
                continue;
            };
            let to = NodeMarks::lent(lease, &tenant);
            patches.push(NodePatch {
                node: node.name.clone(),
                resource_version: node.resource_version.clone(),
                from: node.marks.clone(),
                to: to.clone(),
            });
            capacity += node.capacity();
            self.marks_after.insert(node.name.as_str(), to);
            self.roles.insert(
                node.name.as_str(),
                Role::Lent {
                    lease: lease.uid.clone(),
                },
            );
        }
        let mut next = status::admitted(lease, nodes, &capacity, request.term, self.now);
        if let Some(card) = &self.view.rate_card {
            let nothing_yet =
                offpeak_billing::money::round_line(Decimal::ZERO, card.line_precision());
            status::set_cost(&mut next, nothing_yet, card.currency.code(), self.now);
        }
        self.push(lease, Write::Bind(patches));
        self.push(lease, Write::Status(Box::new(next)));
        self.push(
            lease,
            Write::Event(Note::normal(
                "Admitted",
                format!(
                    "admitted and bound {} node(s): {}; ends at {}",
                    nodes.len(),
                    nodes.join(", "),
                    observe::timestamp(request.term.end).as_str()
                ),
            )),
        );
        self.wake_at(request.term.end);
    }

    /// The idle clock of every free node, when it changed; matured clocks wake the pool.
    fn idle_clocks(&mut self) {
        for node in &self.view.nodes {
            let Some(Role::Free(state)) = self.roles.get(node.name.as_str()).cloned() else {
                continue;
            };
            if let NodeState::Idle { lendable_at, .. } = state {
                self.wake_at(lendable_at);
            }
            let want = state
                .idle_since()
                .map(|t| observe::timestamp(t).to_string());
            let reads_as_wanted = node.marks.idle_since.as_deref().and_then(parse_instant)
                == state.idle_since()
                && (want.is_some() || node.marks.idle_since.is_none());
            if reads_as_wanted {
                continue;
            }
            let to = NodeMarks {
                idle_since: want,
                ..node.marks.clone()
            };
            self.marks_after.insert(node.name.as_str(), to.clone());
            self.nodes.push(Write::Node(Box::new(NodePatch {
                node: node.name.clone(),
                resource_version: node.resource_version.clone(),
                from: node.marks.clone(),
                to,
            })));
        }
    }

    /// The pool's status once the plan is applied.
    fn pool_status(&self) -> (CapacityPoolStatus, Option<Note>, bool) {
        let total = self.view.nodes.len();
        let lent = self
            .roles
            .values()
            .filter(|r| matches!(r, Role::Lent { .. }))
            .count();
        let lendable = self
            .roles
            .values()
            .filter(|r| r.state_after().is_some_and(NodeState::is_lendable))
            .count();
        let headroom_limit = self.headroom_limit();
        let malformed: Vec<String> = self
            .view
            .nodes
            .iter()
            .filter_map(|n| {
                n.allocatable
                    .as_ref()
                    .err()
                    .map(|e| format!("node {}: {e}", n.name))
            })
            .collect();
        let busy = self
            .roles
            .values()
            .filter(|r| matches!(r.state_after(), Some(NodeState::Busy { .. })))
            .count();
        let withheld: Vec<String> = self
            .roles
            .iter()
            .filter_map(|(name, role)| match role {
                Role::Free(NodeState::Withheld { reason }) => Some(format!("{name}: {reason}")),
                _ => None,
            })
            .collect();
        let in_use = utilisation(lent + busy, total);
        let spot = self
            .view
            .rate_card
            .as_ref()
            .map(|c| pricing::hourly_prices(c, BillingClass::Spot, Some(in_use)).cpu_core);
        status::pool(
            self.view,
            status::PoolNodes {
                total,
                lendable,
                lent,
                headroom: total - headroom_limit.min(total),
                malformed,
                withheld,
            },
            in_use,
            spot,
            self.now,
        )
    }

    /// Each reservation's status: whether a window is in force, the next one (in UTC), and
    /// how many nodes it keeps; Events when a window starts and ends.
    fn reservation_statuses(&mut self) -> Vec<ReservationPlan> {
        let view = self.view;
        let total = view.nodes.len();
        let mut plans = Vec::new();
        for reservation in &view.reservation_objects {
            let (next, events, wake) =
                status::reservation(reservation, &view.name, total, self.now);
            if let Some(at) = wake {
                self.wake_at(at);
            }
            let changed = reservation.status.as_ref() != Some(&next);
            if changed || !events.is_empty() {
                plans.push(ReservationPlan {
                    name: reservation.name.clone(),
                    status: changed.then_some(next),
                    events,
                });
            }
        }
        plans
    }
}

/// What a lease adds to its tenant's standing against its credit limit: what it cost if it
/// ended this month (the open balance), and the most it can cost over its whole term if it
/// holds nodes (its commitment; what it has cost so far is part of that). Both stay put
/// between transitions, so what a waiting lease is told does not change with the clock.
pub fn standing(
    spec: &CapacityLeaseSpec,
    status: &CapacityLeaseStatus,
    card: Option<&offpeak_billing::rate::RateCard>,
    now: DateTime<Utc>,
) -> (Decimal, Decimal) {
    let instant =
        |t: &Option<offpeak_api::Timestamp>| t.as_ref().and_then(|t| observe::instant(t).ok());
    match status.phase {
        Some(LeasePhase::Ended) => {
            let this_month = instant(&status.ended_at)
                .is_some_and(|t| t.year() == now.year() && t.month() == now.month());
            let cost = status
                .cost_so_far
                .as_ref()
                .and_then(|c| observe::decimal(c.amount.as_str()).ok());
            match cost {
                Some(cost) if this_month => (cost, Decimal::ZERO),
                _ => (Decimal::ZERO, Decimal::ZERO),
            }
        }
        Some(LeasePhase::Active | LeasePhase::Reclaiming) => {
            let (Some(start), Some(end)) = (instant(&status.admitted_at), instant(&status.ends_at))
            else {
                return (Decimal::ZERO, Decimal::ZERO);
            };
            let hours = hours_between(start, end);
            let max_price = spec
                .max_price_per_hour
                .as_ref()
                .and_then(|m| observe::decimal(m.as_str()).ok());
            let committed = match (spec.class, max_price) {
                (LeaseClass::Spot, Some(max)) => max * hours,
                (class, _) => {
                    let bound = status.bindings.last().and_then(|b| {
                        Resources::parse(
                            Some(b.cpu.as_str()),
                            Some(b.memory.as_str()),
                            Some(b.gpu.as_str()),
                        )
                        .ok()
                    });
                    match (card, bound) {
                        (Some(card), Some(bound)) => {
                            pricing::hourly_prices(card, billing_class(class), None).hourly(&bound)
                                * hours
                        }
                        _ => Decimal::ZERO,
                    }
                }
            };
            (Decimal::ZERO, committed)
        }
        _ => (Decimal::ZERO, Decimal::ZERO),
    }
}

/// `used` of `total`, to six places (so that the same counts always read the same).
fn utilisation(used: usize, total: usize) -> Decimal {
    if total == 0 {
        Decimal::ZERO
    } else {
        (Decimal::from(used) / Decimal::from(total))
            .round_dp(6)
            .normalize()
    }
}

fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn join(nodes: &[offpeak_api::NodeName]) -> String {
    nodes
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn billing_class(class: LeaseClass) -> BillingClass {
    match class {
        LeaseClass::Spot => BillingClass::Spot,
        LeaseClass::Reserved => BillingClass::Reserved,
    }
}
