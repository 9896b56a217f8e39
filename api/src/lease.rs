//! `CapacityLease`: a tenant rents whole nodes of a pool for a term.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::money::{Amount, Money};
use crate::names::{Name, NodeName};
use crate::units::{GoDuration, Quantity, Timestamp, at_most, duration_range, positive, whole};

/// A request to rent capacity of a pool for a term: an amount (resources or a node count),
/// a term (a duration or an end time) and a class. For Spot, the highest hourly price the
/// tenant will pay. The operator admits it when the pool can serve it, binds whole nodes,
/// and reports the phase, the nodes, the deadlines and the cost so far in its status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "offpeak.dev",
    version = "v1alpha1",
    kind = "CapacityLease",
    plural = "capacityleases",
    namespaced,
    status = "CapacityLeaseStatus",
    derive = "PartialEq",
    shortname = "cl",
    category = "offpeak",
    doc = "A tenant's request to rent whole nodes of a capacity pool for a term, Spot or Reserved.",
    printcolumn(name = "Class", type_ = "string", json_path = ".spec.class"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodeCount"),
    printcolumn(name = "Ends", type_ = "string", json_path = ".status.endsAt"),
    printcolumn(name = "Deadline", type_ = "string", json_path = ".status.reclaimDeadline"),
    printcolumn(name = "Cost", type_ = "string", json_path = ".status.costSummary"),
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("metadata.name of a CapacityLease must be a DNS label: at most 63 lower case letters, digits and '-', starting and ending with a letter or digit"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.admittedAt) || self.spec.pool == oldSelf.spec.pool")
        .message("spec.pool cannot change once the lease is admitted (status.admittedAt is set); create a new lease instead")
        .field_path(".spec.pool"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.admittedAt) || self.spec.class == oldSelf.spec.class")
        .message("spec.class cannot change once the lease is admitted (status.admittedAt is set); create a new lease instead")
        .field_path(".spec.class"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.admittedAt) || (has(self.spec.resources) == has(oldSelf.spec.resources) && (!has(self.spec.resources) || self.spec.resources == oldSelf.spec.resources))")
        .message("spec.resources cannot change once the lease is admitted (status.admittedAt is set); create a new lease instead")
        .field_path(".spec.resources"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.admittedAt) || (has(self.spec.nodes) == has(oldSelf.spec.nodes) && (!has(self.spec.nodes) || self.spec.nodes == oldSelf.spec.nodes))")
        .message("spec.nodes cannot change once the lease is admitted (status.admittedAt is set); create a new lease instead")
        .field_path(".spec.nodes"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.admittedAt) || (has(self.spec.maxPricePerHour) == has(oldSelf.spec.maxPricePerHour) && (!has(self.spec.maxPricePerHour) || self.spec.maxPricePerHour == oldSelf.spec.maxPricePerHour))")
        .message("spec.maxPricePerHour cannot change once the lease is admitted (status.admittedAt is set); the admitted bid stands for the whole term, create a new lease instead")
        .field_path(".spec.maxPricePerHour"),
)]
#[x_kube(
    validation = Rule::new("has(self.resources) != has(self.nodes)")
        .message("set exactly one of spec.resources (cpu, memory, gpu) or spec.nodes (a node count of a node class)"),
    validation = Rule::new("has(self.duration) != has(self.endTime)")
        .message("set exactly one of spec.duration (such as 8h) or spec.endTime (an RFC 3339 time)"),
    validation = Rule::new("self.class != 'Spot' || has(self.maxPricePerHour)")
        .message("spec.maxPricePerHour is required for a Spot lease: the highest price per hour, a decimal string such as \"4.50\"")
        .field_path(".maxPricePerHour")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.class != 'Reserved' || !has(self.maxPricePerHour)")
        .message("spec.maxPricePerHour is only for Spot leases; a Reserved lease pays the rate card's reserved price, remove maxPricePerHour")
        .field_path(".maxPricePerHour")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct CapacityLeaseSpec {
    /// Name of the CapacityPool to rent from.
    pub pool: Name,
    /// Spot: cheap, reclaimable at any time after the pool's notice period, and ended when
    /// the spot price rises above maxPricePerHour. Reserved: admitted only if the pool can
    /// hold it for the whole term; reclaimed only in an emergency, with an SLA credit.
    pub class: LeaseClass,
    /// How much capacity, as amounts of resources; the operator binds the fewest whole
    /// nodes that cover them. Set this or nodes, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<LeaseResources>,
    /// How much capacity, as a number of nodes of one of the pool's node classes. Set this
    /// or resources, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCount>,
    /// How long the lease runs from admission, such as 8h or 1h30m (1 minute to 366 days).
    /// Set this or endTime, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration_range("spec.duration", "1m", "8784h", "between 1m and 8784h (366 days)"))]
    pub duration: Option<GoDuration>,
    /// When the lease ends, RFC 3339 with an offset, such as 2026-11-23T06:00:00Z. Set this
    /// or duration, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// Spot only, and required for Spot: the most the tenant pays per hour for the whole
    /// lease, a decimal string in the rate card's currency, such as "4.50". The lease ends
    /// (after notice) when the spot price rises above it. Not allowed for Reserved leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_per_hour: Option<Money>,
}

/// The class of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LeaseClass {
    /// Cheap, reclaimable after notice.
    Spot,
    /// Held for its whole term.
    Reserved,
}

/// Amounts of resources, as Kubernetes quantities.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.cpu) || has(self.memory) || has(self.gpu)")
    .message("spec.resources must ask for at least one of cpu, memory or gpu"))]
#[serde(rename_all = "camelCase")]
pub struct LeaseResources {
    /// CPU cores, such as "128" or "500m" (at most 100000 cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = positive("spec.resources.cpu"),
        validation = at_most("spec.resources.cpu", "100k", "100000 cores")
    )]
    pub cpu: Option<Quantity>,
    /// Memory, such as "512Gi" (at most 1Pi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = positive("spec.resources.memory"),
        validation = at_most("spec.resources.memory", "1Pi", "1Pi")
    )]
    pub memory: Option<Quantity>,
    /// Whole GPUs, such as "8" (at most 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = positive("spec.resources.gpu"),
        validation = whole("spec.resources.gpu"),
        validation = at_most("spec.resources.gpu", "4096", "4096 GPUs")
    )]
    pub gpu: Option<Quantity>,
}

/// A number of nodes of one node class of the pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCount {
    /// Name of one of the pool's spec.nodeClasses.
    pub class: Name,
    /// How many nodes, 1 to 1000.
    #[schemars(range(min = 1, max = 1000))]
    pub count: i32,
}

/// What the operator reports about a lease.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityLeaseStatus {
    /// Where the lease is in its life: Pending (waiting for capacity), Active (nodes
    /// bound), Reclaiming (notice given), Ended, or Rejected (it can never be served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<LeasePhase>,
    /// Admitted, Reclaiming and the like, with reasons and messages for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Names of the nodes bound to the lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "set"))]
    pub bound_nodes: Vec<NodeName>,
    /// How many nodes are bound (the length of boundNodes, for kubectl get).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub node_count: Option<i32>,
    /// When the lease was admitted; from then on pool, class and amount cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Timestamp>,
    /// When the lease ends (admission plus duration, or endTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    /// The capacity bound to the lease, in order: each entry holds from its instant on (the
    /// whole amount, not an increment) until the next entry or endedAt. Written before the
    /// tenant can use the capacity; bills are derived from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub bindings: Vec<LeaseBinding>,
    /// When the tenant was given notice that the lease will be reclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_given_at: Option<Timestamp>,
    /// While Reclaiming: when the notice runs out and the tenant's pods are evicted. Written
    /// with the notice and never moved earlier, whatever happens to the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_deadline: Option<Timestamp>,
    /// Why the lease is reclaimed: PeakReservation, InternalPressure, Headroom,
    /// PriceExceeded, or one of those with Emergency (a Reserved lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reclaim_reason: Option<String>,
    /// Set when an early reclaim of a Reserved lease earns the rate card's SLA credit: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub sla_credit_reason: Option<String>,
    /// When the lease ended: the tenant's last billed second is the one before. Written
    /// before its nodes are taken back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Why the lease ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// An estimate of what the lease has cost so far, at today's prices; refreshed at each
    /// transition and every few minutes. The UsageBill, computed from the recorded
    /// transitions, is the exact figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_so_far: Option<Amount>,
    /// costSoFar for people, such as "3.1200 USD".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub cost_summary: Option<String>,
    /// When costSoFar was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_as_of: Option<Timestamp>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// Capacity bound to a lease from an instant on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseBinding {
    /// From when the capacity is held.
    pub at: Timestamp,
    /// The nodes that hold it.
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "set"))]
    pub nodes: Vec<NodeName>,
    /// Their allocatable CPU in all, such as "32".
    pub cpu: Quantity,
    /// Their allocatable memory in all, such as "128Gi".
    pub memory: Quantity,
    /// Their GPUs in all, such as "4".
    pub gpu: Quantity,
}

/// Why a lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EndReason {
    /// Its term ran out.
    Expired,
    /// The tenant deleted it.
    Cancelled,
    /// Offpeak took the capacity back after notice (a peak reservation, internal demand,
    /// headroom).
    Reclaimed,
    /// The spot price rose above the lease's maxPricePerHour.
    PriceExceeded,
}

/// The phase of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LeasePhase {
    Pending,
    Active,
    Reclaiming,
    Ended,
    Rejected,
}
