//! `Tenant`: an external customer of the cluster's off-peak capacity.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::money::{Amount, Currency, Money, precision_rule};
use crate::names::{Name, Subject};

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
    /// Namespaces the tenant owns; the operator creates them and labels them as the
    /// tenant's. At least 1, at most 32; not default, kube-system or any kube-* namespace.
    #[schemars(length(min = 1, max = 32), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(n, n != 'default' && !n.startsWith('kube-') && !n.startsWith('offpeak-'))")
        .message("spec.namespaces must not name default, a kube-* or an offpeak-* namespace: those belong to the cluster"))]
    pub namespaces: Vec<Name>,
    /// Users (as the API server authenticates them) who act for the tenant in its
    /// namespaces. At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"))]
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
