//! `Tenant`: an external customer of the cluster's off-peak capacity.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::money::{Amount, Currency, Money, precision_rule};
use crate::names::{Name, Subject};
use crate::units::{Quantity, at_most};

/// An external customer: the namespaces it owns, the people who act for it, how much it
/// may owe, and the pools it may rent from.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "offpeak.dev",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    status = "TenantStatus",
    derive = "PartialEq",
    shortname = "tnt",
    category = "offpeak",
    doc = "An external customer that rents capacity: its namespaces, users and groups, credit limit and allowed pools.",
    printcolumn(name = "Display Name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspended"),
    printcolumn(name = "Leases", type_ = "integer", json_path = ".status.activeLeases"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("metadata.name of a Tenant must be a DNS label: at most 63 lower case letters, digits and '-', starting and ending with a letter or digit (it becomes a label value on namespaces and nodes)"),
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The customer's name for people, such as "ACME Rendering Ltd.".
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// Namespaces the tenant owns; the operator creates them, labels them as the tenant's
    /// and enforces Pod Security restricted there. A namespace that already exists and is
    /// not Offpeak's is refused (condition Ready, reason NamespaceConflict), never adopted. A
    /// namespace removed from this list is released: the tenant's people lose access at
    /// once, and Offpeak's quotas, limits, NetworkPolicies and labels go once its leases
    /// ended. At least 1, at most 32; not default, kube-system or any kube-* namespace.
    #[schemars(length(min = 1, max = 32), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(n, n != 'default' && !n.startsWith('kube-') && !n.startsWith('offpeak-'))")
        .message("spec.namespaces must not name default, a kube-* or an offpeak-* namespace: those belong to the cluster"))]
    pub namespaces: Vec<Name>,
    /// Users (as the API server authenticates them) who act for the tenant in its
    /// namespaces. At most 64; not system:anonymous, a service account
    /// (system:serviceaccount:...) or any other system: user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(u, !u.startsWith('system:'))")
        .message("spec.users must not name a system: user (system:anonymous, system:serviceaccount:..., system:kube-...); those are the cluster's own"))]
    pub users: Vec<Subject>,
    /// Groups whose members act for the tenant in its namespaces. At most 64; not
    /// system:masters or any other system: group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(g, !g.startsWith('system:'))")
        .message("spec.groups must not name a system: group; those are the cluster's own"))]
    pub groups: Vec<Subject>,
    /// The most the tenant may owe on its open bills; new leases are refused beyond it.
    /// No limit when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = precision_rule("amount", "currency", None, "spec.creditLimit.amount"))]
    pub credit_limit: Option<CreditLimit>,
    /// CapacityPools the tenant may rent from. At least 1, at most 64.
    #[schemars(length(min = 1, max = 64), extend("x-kubernetes-list-type" = "set"))]
    pub allowed_pools: Vec<Name>,
    /// True stops new leases and ends the tenant's Spot leases after notice; Reserved
    /// leases run to their end. False when unset.
    #[serde(default)]
    pub suspended: bool,
    /// What each of the tenant's namespaces may hold besides compute (the operator's
    /// offpeak-objects ResourceQuota there): object counts and storage. Compute (cpu,
    /// memory, GPUs, pods) follows the tenant's leases in the offpeak-leases quota. Every
    /// field has a default; set only those to change.
    #[serde(default)]
    pub quota: TenantQuota,
}

/// Object counts and storage allowed in each namespace of a tenant. Counts are whole
/// numbers between 0 and 10000.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuota {
    /// Secrets (count/secrets). 50 when unset: each may hold up to 1 MiB of the
    /// cluster's etcd.
    #[serde(default = "default_secrets")]
    #[schemars(range(min = 0, max = 10000))]
    pub secrets: i32,
    /// ConfigMaps (count/configmaps), the kube-root-ca.crt every namespace gets
    /// included. 50 when unset.
    #[serde(default = "default_config_maps")]
    #[schemars(range(min = 0, max = 10000))]
    pub config_maps: i32,
    /// Services (count/services), ClusterIP or headless: NodePort and LoadBalancer are
    /// never allowed. 20 when unset.
    #[serde(default = "default_services")]
    #[schemars(range(min = 0, max = 10000))]
    pub services: i32,
    /// PersistentVolumeClaims (count/persistentvolumeclaims). 20 when unset.
    #[serde(default = "default_persistent_volume_claims")]
    #[schemars(range(min = 0, max = 10000))]
    pub persistent_volume_claims: i32,
    /// ServiceAccounts (count/serviceaccounts), the namespace's default one included. 20
    /// when unset.
    #[serde(default = "default_service_accounts")]
    #[schemars(range(min = 0, max = 10000))]
    pub service_accounts: i32,
    /// Deployments (count/deployments.apps). 50 when unset.
    #[serde(default = "default_deployments")]
    #[schemars(range(min = 0, max = 10000))]
    pub deployments: i32,
    /// StatefulSets (count/statefulsets.apps). 20 when unset.
    #[serde(default = "default_stateful_sets")]
    #[schemars(range(min = 0, max = 10000))]
    pub stateful_sets: i32,
    /// ReplicaSets (count/replicasets.apps), the old ones Deployments keep for rollback
    /// included (10 each unless their revisionHistoryLimit says less). 600 when unset.
    #[serde(default = "default_replica_sets")]
    #[schemars(range(min = 0, max = 10000))]
    pub replica_sets: i32,
    /// Jobs (count/jobs.batch), finished ones included until they are deleted. 200 when
    /// unset.
    #[serde(default = "default_jobs")]
    #[schemars(range(min = 0, max = 10000))]
    pub jobs: i32,
    /// CronJobs (count/cronjobs.batch). 20 when unset.
    #[serde(default = "default_cron_jobs")]
    #[schemars(range(min = 0, max = 10000))]
    pub cron_jobs: i32,
    /// CapacityLeases (count/capacityleases.offpeak.dev), ended ones included until they
    /// are deleted. 50 when unset.
    #[serde(default = "default_capacity_leases")]
    #[schemars(range(min = 0, max = 10000))]
    pub capacity_leases: i32,
    /// Storage all PersistentVolumeClaims may request together (requests.storage), such
    /// as 500Gi. At most 1Pi; 500Gi when unset.
    #[serde(default = "default_storage")]
    #[x_kube(validation = at_most("spec.quota.storage", "1Pi", "1Pi"))]
    pub storage: Quantity,
    /// Ephemeral storage (container writable layers, logs, emptyDir on disk) that pods may
    /// request, and have as limits, together (requests.ephemeral-storage and
    /// limits.ephemeral-storage), such as 200Gi. At most 1Pi; 200Gi when unset. Only what
    /// pods state counts: a pod that states no ephemeral storage is bounded by the kubelet's
    /// eviction on its (leased, unshared) node.
    #[serde(default = "default_ephemeral_storage")]
    #[x_kube(validation = at_most("spec.quota.ephemeralStorage", "1Pi", "1Pi"))]
    pub ephemeral_storage: Quantity,
}

fn default_secrets() -> i32 {
    50
}
fn default_config_maps() -> i32 {
    50
}
fn default_services() -> i32 {
    20
}
fn default_persistent_volume_claims() -> i32 {
    20
}
fn default_service_accounts() -> i32 {
    20
}
fn default_deployments() -> i32 {
    50
}
fn default_stateful_sets() -> i32 {
    20
}
fn default_replica_sets() -> i32 {
    600
}
fn default_jobs() -> i32 {
    200
}
fn default_cron_jobs() -> i32 {
    20
}
fn default_capacity_leases() -> i32 {
    50
}
fn default_storage() -> Quantity {
    Quantity::new("500Gi")
}
fn default_ephemeral_storage() -> Quantity {
    Quantity::new("200Gi")
}

impl Default for TenantQuota {
    fn default() -> Self {
        TenantQuota {
            secrets: default_secrets(),
            config_maps: default_config_maps(),
            services: default_services(),
            persistent_volume_claims: default_persistent_volume_claims(),
            service_accounts: default_service_accounts(),
            deployments: default_deployments(),
            stateful_sets: default_stateful_sets(),
            replica_sets: default_replica_sets(),
            jobs: default_jobs(),
            cron_jobs: default_cron_jobs(),
            capacity_leases: default_capacity_leases(),
            storage: default_storage(),
            ephemeral_storage: default_ephemeral_storage(),
        }
    }
}

/// A credit limit: an amount with its currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditLimit {
    /// The amount, a non-negative decimal string with at most the currency's decimal
    /// places, such as "5000.00".
    pub amount: Money,
    /// ISO 4217 currency code, such as USD.
    pub currency: Currency,
}

/// What the operator reports about a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Leases of the tenant that are Active or Reclaiming now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub active_leases: Option<i32>,
    /// What the tenant owes on its open bills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_balance: Option<Amount>,
    /// Ready (namespaces and access in place), OverCreditLimit and the like.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}
