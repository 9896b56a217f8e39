//! What the pool pass plans from: one pool as the watch caches show it at one moment, in
//! plain data (no API types but the lease's own spec and status, which the plan rewrites).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use offpeak_api::{
    CapacityLeaseSpec, CapacityLeaseStatus, CapacityPoolStatus, LeasePhase, PeakReservationStatus,
};
use offpeak_billing::rate::RateCard;
use rust_decimal::Decimal;

use crate::plan::admission::{Keep, Reservation};
use crate::plan::eligibility::TenantView;
use crate::plan::idle::PodFacts;
use crate::plan::resources::Resources;

/// Settings of the whole operator that shape every pool's plan.
#[derive(Clone, Debug)]
pub struct PlanSettings {
    /// How long the head of a pool's queue waits before nothing may pass it.
    pub starvation_guard: Duration,
    /// How often an active lease's cost estimate is refreshed at most.
    pub cost_refresh: Duration,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            starvation_guard: Duration::minutes(10),
            cost_refresh: Duration::minutes(5),
        }
    }
}

/// One pool and everything its plan reads.
#[derive(Clone, Debug)]
pub struct PoolView {
    pub name: String,
    pub generation: Option<i64>,
    /// The pool's spec in the plan's terms, or why it cannot be read.
    pub settings: Result<PoolSettings, String>,
    pub status: Option<CapacityPoolStatus>,
    /// The nodes the pool selects, by name.
    pub nodes: Vec<NodeView>,
    /// Every lease that names the pool, in any phase.
    pub leases: Vec<LeaseView>,
    pub reservations: Vec<Reservation>,
    /// The pool's PeakReservation objects, for their status.
    pub reservation_objects: Vec<ReservationView>,
    /// Internal pods of the pool that cannot be scheduled.
    pub pending: Vec<PendingPod>,
    /// The rate card in force for the pool now.
    pub rate_card: Option<RateCard>,
    /// Tenants by name, with what they owe and have committed outside this pass.
    pub tenants: BTreeMap<String, TenantView>,
    /// The tenant owning each namespace that a tenant claims.
    pub namespace_tenants: BTreeMap<String, String>,
    /// Nodes that refused to be bound moments ago: not offered until they are retried.
    pub held_back: BTreeSet<String>,
    /// Whether the ledger takes the facts the pool's leases make.
    pub ledger: Ledger,
    /// Whether tenant pods are confined: without it no lease is admitted.
    pub confinement: Confinement,
}

/// Whether the objects that confine tenant pods are in place (see `admission::guard`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confinement {
    InPlace,
    /// Since when something is missing or changed, and what.
    Broken {
        since: DateTime<Utc>,
        message: String,
    },
}

impl Confinement {
    /// What is missing, when something is.
    pub fn message(&self) -> Option<&str> {
        match self {
            Confinement::InPlace => None,
            Confinement::Broken { message, .. } => Some(message),
        }
    }
}

/// The ledger as the pool's Metered condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ledger {
    Starting,
    Healthy,
    Down {
        since: DateTime<Utc>,
        message: String,
    },
}

/// A pool's spec, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSettings {
    pub idle_after: Duration,
    pub notice: Duration,
    pub headroom: Option<Keep>,
    pub lending_enabled: bool,
    pub minimum_runtime: Duration,
    pub reclaim_advisory: Duration,
    pub internal_pressure: PressureSettings,
}

/// When unschedulable internal pods take lent capacity back.
#[derive(Clone, Debug, PartialEq)]
pub struct PressureSettings {
    pub unschedulable_for: Duration,
    pub emergency_after: Duration,
}

/// A PeakReservation of the pool: its calendar (or why it cannot be read) and its status.
#[derive(Clone, Debug, PartialEq)]
pub struct ReservationView {
    pub name: String,
    pub generation: Option<i64>,
    pub reservation: Result<Reservation, String>,
    pub status: Option<PeakReservationStatus>,
}

/// An internal pod of the pool that the scheduler cannot place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPod {
    pub namespace: String,
    pub name: String,
    /// Since when it has been unschedulable.
    pub since: DateTime<Utc>,
    /// What its containers request.
    pub requests: Resources,
}

/// A node of the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// The resourceVersion the view was read at; every patch of the node is locked on it.
    pub resource_version: Option<String>,
    pub ready: bool,
    /// `spec.unschedulable` (set by someone other than Offpeak).
    pub cordoned_by_others: bool,
    /// Why Offpeak never lends it, if it does not (a control-plane node, a taint it does
    /// not own).
    pub withheld: Option<String>,
    /// What Offpeak has written on the node.
    pub marks: NodeMarks,
    /// Allocatable, or why it cannot be read (then the node counts as empty).
    pub allocatable: Result<Resources, String>,
    /// The pool's node class the node is in, if any.
    pub class: Option<String>,
    /// Pods bound to the node that have not finished.
    pub pods: Vec<PodFacts>,
    /// The pool's selector matches the node. A node outside it is in the view only while it
    /// is marked for one of the pool's leases (it was relabelled out under a lease).
    pub in_pool: bool,
}

impl NodeView {
    pub fn capacity(&self) -> Resources {
        self.allocatable.clone().unwrap_or(Resources::ZERO)
    }
}

/// The labels, annotations and taint Offpeak keeps on a node. A patch takes a node from
/// one set of marks to another and leaves everything else on it alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMarks {
    /// UID of the lease the node is lent to (label `offpeak.dev/lease`).
    pub lease: Option<String>,
    /// `<namespace>/<name>` of that lease, for people (annotation `offpeak.dev/lease-name`).
    pub lease_name: Option<String>,
    /// The tenant the node is lent to (label `offpeak.dev/tenant`): tenant pods are placed
    /// by it.
    pub tenant: Option<String>,
    /// The tenant whose `offpeak.dev/tenant` NoSchedule taint the node carries: it keeps
    /// everyone else's pods off.
    pub tainted_for: Option<String>,
    /// When the node was first seen idle (annotation `offpeak.dev/idle-since`), as written.
    pub idle_since: Option<String>,
    /// The node goes back soon: Offpeak's own `offpeak.dev/reclaiming` NoSchedule taint keeps
    /// new tenant pods off it (never the shared `unschedulable`, so Offpeak's cordon is told
    /// apart from anyone else's).
    pub reclaiming: bool,
}

impl NodeMarks {
    /// Marks of a node lent to `lease` of `tenant`.
    pub fn lent(lease: &LeaseView, tenant: &str) -> NodeMarks {
        NodeMarks {
            lease: Some(lease.uid.clone()),
            lease_name: Some(lease.display_name()),
            tenant: Some(tenant.to_string()),
            tainted_for: Some(tenant.to_string()),
            idle_since: None,
            reclaiming: false,
        }
    }

    /// Whether the node carries anything of a tenant.
    pub fn is_tenants(&self) -> bool {
        self.lease.is_some()
            || self.tenant.is_some()
            || self.tainted_for.is_some()
            || self.reclaiming
    }
}

/// A lease of the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseView {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The resourceVersion the view was read at; the lease's writes are locked on it.
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub created: DateTime<Utc>,
    pub deleting: bool,
    pub has_finalizer: bool,
    pub spec: CapacityLeaseSpec,
    pub status: CapacityLeaseStatus,
    /// A write for this lease failed moments ago: what, and when to try again.
    pub failure: Option<Failure>,
    /// Every billing fact of the lease's status is in the ledger (looked at only for
    /// leases being deleted: they keep their finalizer until it is so).
    pub metered: bool,
}

impl LeaseView {
    pub fn phase(&self) -> Option<LeasePhase> {
        self.status.phase
    }

    /// Active or Reclaiming: the lease holds its nodes.
    pub fn holds_nodes(&self) -> bool {
        !self.deleting
            && matches!(
                self.phase(),
                Some(LeasePhase::Active | LeasePhase::Reclaiming)
            )
    }

    /// `<namespace>/<name>`.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A write for a lease that failed, remembered between passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// CamelCase, such as BindFailed or StatusWriteFailed.
    pub reason: String,
    pub message: String,
    pub retry_at: DateTime<Utc>,
}

/// Hours from `from` to `to`, never negative.
pub fn hours_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Decimal {
    Decimal::from((to - from).num_seconds().max(0)) / Decimal::from(3600)
}
