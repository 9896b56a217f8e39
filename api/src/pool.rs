//! `CapacityPool`: which nodes may be lent, and how.

use std::collections::BTreeMap;

use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::money::Money;
use crate::names::{LabelValue, Name};
use crate::units::{GoDuration, duration_range};

/// Which nodes of the cluster may be lent to tenants, what is always kept for internal
/// bursts, and how much notice a tenant gets before a node goes back.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "offpeak.dev",
    version = "v1alpha1",
    kind = "CapacityPool",
    plural = "capacitypools",
    status = "CapacityPoolStatus",
    derive = "PartialEq",
    shortname = "cpool",
    shortname = "pool",
    category = "offpeak",
    doc = "A set of nodes whose idle capacity may be lent to tenants, with headroom kept for internal bursts.",
    printcolumn(name = "Lendable", type_ = "integer", json_path = ".status.lendableNodes"),
    printcolumn(name = "Lent", type_ = "integer", json_path = ".status.lentNodes"),
    printcolumn(name = "Headroom", type_ = "integer", json_path = ".status.headroomNodes"),
    printcolumn(name = "Spot/core-h", type_ = "string", json_path = ".status.spotPricePerCoreHour"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodes", priority = 1),
    printcolumn(name = "Lending", type_ = "boolean", json_path = ".spec.lendingEnabled", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("metadata.name of a CapacityPool must be a DNS label: at most 63 lower case letters, digits and '-', starting and ending with a letter or digit (it becomes a label value on nodes)"),
)]
#[serde(rename_all = "camelCase")]
pub struct CapacityPoolSpec {
    /// Labels a node must have to belong to the pool, like a pod's nodeSelector
    /// (for example offpeak.dev/pool: general). At least one, at most 16.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    #[x_kube(validation = label_keys("spec.nodeSelector"))]
    pub node_selector: BTreeMap<String, LabelValue>,
    /// Named kinds of node in the pool, for leases that ask for a node count of a class
    /// (spec.nodes.class of a CapacityLease). At most 16, names unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub node_classes: Vec<NodeClass>,
    /// Capacity always kept for internal bursts, never lent: a percentage of the pool's
    /// nodes or a number of nodes. No headroom when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<Share>,
    /// How long a tenant is warned before a node of a Spot lease goes back: between 0s and
    /// 1h, 120s when unset (like EC2 Spot's two-minute warning).
    #[serde(default = "default_notice_period")]
    #[x_kube(validation = duration_range("spec.noticePeriod", "0s", "1h", "between 0s and 1h"))]
    pub notice_period: GoDuration,
    /// A lease is not reclaimed for internal pressure, headroom or its price before it has
    /// run this long (emergencies excepted): between 0s and 24h, 0s when unset. Spot leases
    /// a foreseen peak reservation would reclaim sooner wait instead of being admitted.
    #[serde(default = "default_zero")]
    #[x_kube(validation = duration_range("spec.minimumRuntime", "0s", "24h", "between 0s and 24h"))]
    pub minimum_runtime: GoDuration,
    /// How long before a foreseen reclaim (a peak reservation's window) a lease is told it
    /// is likely (condition ReclaimLikely and an Event), before its hard notice: between 0s
    /// and 24h, 10m when unset.
    #[serde(default = "default_advisory")]
    #[x_kube(validation = duration_range("spec.reclaimAdvisory", "0s", "24h", "between 0s and 24h"))]
    pub reclaim_advisory: GoDuration,
    /// When internal pods of the pool that cannot be scheduled take lent capacity back.
    #[serde(default)]
    pub internal_pressure: InternalPressure,
    /// How long a node must have run nothing but DaemonSets before it may be lent: between
    /// 0s and 24h, 10m when unset.
    #[serde(default = "default_idle_after")]
    #[x_kube(validation = duration_range("spec.idleAfter", "0s", "24h", "between 0s and 24h"))]
    pub idle_after: GoDuration,
    /// Whether new leases may be admitted. False stops lending; leases already admitted run
    /// to their end. True when unset.
    #[serde(default = "default_true")]
    pub lending_enabled: bool,
    /// How the operator packs leases onto nodes when it reclaims: Never moves nothing;
    /// WhenEmpty returns a lent node as soon as its lease ends; WhenUnderutilized also
    /// offers to move small Spot leases so whole nodes go back sooner. WhenEmpty when unset.
    #[serde(default)]
    pub consolidation_policy: ConsolidationPolicy,
}

fn default_notice_period() -> GoDuration {
    GoDuration::new("120s")
}

fn default_idle_after() -> GoDuration {
    GoDuration::new("10m")
}

fn default_zero() -> GoDuration {
    GoDuration::new("0s")
}

fn default_advisory() -> GoDuration {
    GoDuration::new("10m")
}

fn default_unschedulable_for() -> GoDuration {
    GoDuration::new("30s")
}

fn default_emergency_after() -> GoDuration {
    GoDuration::new("5m")
}

/// When internal pods that cannot be scheduled take lent capacity back: internal pods of
/// the pool (their node selector matches the pool's nodes) unschedulable for
/// `unschedulableFor` reclaim Spot leases with notice; still unschedulable after
/// `emergencyAfter`, with no Spot lease left to reclaim, they reclaim Reserved leases too,
/// which earns those leases the rate card's SLA credit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InternalPressure {
    /// Between 0s and 1h, 30s when unset.
    #[serde(default = "default_unschedulable_for")]
    #[x_kube(validation = duration_range("spec.internalPressure.unschedulableFor", "0s", "1h", "between 0s and 1h"))]
    pub unschedulable_for: GoDuration,
    /// Between 0s and 24h, 5m when unset.
    #[serde(default = "default_emergency_after")]
    #[x_kube(validation = duration_range("spec.internalPressure.emergencyAfter", "0s", "24h", "between 0s and 24h"))]
    pub emergency_after: GoDuration,
}

impl Default for InternalPressure {
    fn default() -> Self {
        InternalPressure {
            unschedulable_for: default_unschedulable_for(),
            emergency_after: default_emergency_after(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// A rule that every key of a map is a label key, such as `offpeak.dev/pool`.
fn label_keys(what: &str) -> Rule {
    Rule::new("self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))")
        .message(format!("{what} keys must be label keys such as offpeak.dev/pool or node.kubernetes.io/instance-type").as_str())
}

/// A kind of node within a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeClass {
    /// Name of the class, used by leases, such as gpu-a100.
    pub name: Name,
    /// Labels that pick the class's nodes among the pool's, such as
    /// node.kubernetes.io/instance-type: p4d.24xlarge. At least one, at most 16.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    #[x_kube(validation = label_keys("spec.nodeClasses[].nodeSelector"))]
    pub node_selector: BTreeMap<String, LabelValue>,
}

/// A share of a pool's nodes: a percentage or a number of nodes, exactly one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.percent) != has(self.nodes)")
    .message("set exactly one of percent (0 to 100) or nodes (a node count)"))]
#[serde(rename_all = "camelCase")]
pub struct Share {
    /// Percentage of the pool's nodes, 0 to 100 (rounded up to whole nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i32>,
    /// Number of nodes, 0 to 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub nodes: Option<i32>,
}

/// How the operator consolidates lent capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConsolidationPolicy {
    /// Never move or return a lent node before its lease ends or is reclaimed.
    Never,
    /// Return a lent node as soon as its lease ends.
    #[default]
    WhenEmpty,
    /// Also move small Spot leases (with notice) so that whole nodes go back sooner.
    WhenUnderutilized,
}

/// What the operator reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityPoolStatus {
    /// Nodes matching spec.nodeSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub nodes: Option<i32>,
    /// Idle nodes that may be lent now (idle for spec.idleAfter, beyond the headroom).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub lendable_nodes: Option<i32>,
    /// Nodes lent to tenants now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub lent_nodes: Option<i32>,
    /// Nodes kept for internal bursts now (spec.headroom, and any active PeakReservation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub headroom_nodes: Option<i32>,
    /// The spot price per core-hour now, in the rate card's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_price_per_core_hour: Option<Money>,
    /// The pool's utilisation (nodes running internal pods or lent, of all), each change
    /// from its instant on, newest last: the spot price follows it by the rate card's rule,
    /// and bills are priced from it. The last 64 changes are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub utilisation_history: Vec<UtilisationChange>,
    /// Ready and the like, with reasons and messages for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// The pool's utilisation from an instant on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UtilisationChange {
    /// From when.
    pub at: crate::units::Timestamp,
    /// Nodes running internal pods or lent, of all, as a decimal fraction such as "0.625".
    #[schemars(length(max = 32))]
    pub utilisation: String,
    /// The spot price per core-hour it makes, in the rate card's currency, if a card
    /// prices the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_price_per_core_hour: Option<Money>,
}
