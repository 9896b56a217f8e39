//! The `offpeak.dev/v1alpha1` API: the Rust types are the source of truth for `crds/`.
//!
//! Six kinds: [`Tenant`], [`CapacityPool`], [`PeakReservation`] and [`RateCard`] are
//! cluster-scoped and written by operations; [`CapacityLease`] is written by tenants in
//! their namespaces; [`UsageBill`] is written by the operator only. The API server
//! validates them with their OpenAPI schemas and CEL rules, so a wrong manifest is refused
//! at `kubectl apply` with a message that names the field.
//!
//! # What the schema cannot check
//!
//! CRD validation sees one object at a time, without the clock, the request's user or
//! namespace, and only on create and update. These rules live elsewhere:
//!
//! - References to other objects: a lease's pool exists, the tenant owning the namespace
//!   may use it (`Tenant.spec.allowedPools`), `spec.nodes.class` is one of the pool's node
//!   classes; a reservation's or rate card's pools exist; no namespace belongs to two
//!   tenants. The operator checks them and reports a condition (a lease goes `Rejected`).
//! - Anything relative to now: a lease's `endTime` or a window already in the past. CRD
//!   CEL has no `now()`; the operator rejects such a lease.
//! - A lease's `endTime` at most 366 days after admission (as `duration` is): the operator
//!   rejects a longer term as `InvalidSpec`.
//! - Who may write: only the operator writes `UsageBill`s and status (RBAC), and deleting a
//!   finalized bill is a DELETE, which CEL never sees (RBAC, or a finalizer).
//! - Across objects: two rate cards for one pool from the same instant, and the totals of
//!   a bill equalling the sum of its lines (decimal arithmetic CEL does not have); the
//!   billing crate checks both.
//! - The currency of a Spot lease's `maxPricePerHour` is the currency of the rate card in
//!   force for its pool, which the lease does not name; the operator compares them.

// Repeated `printcolumn(type_ = "string", ..)` arguments inside `#[kube(..)]` are separate
// columns, not duplicated attributes.
#![allow(clippy::duplicated_attributes)]

mod bill;
mod condition;
mod lease;
pub mod money;
mod names;
mod pool;
mod rate_card;
mod reservation;
mod schema;
mod tenant;
pub mod time_zone;
mod units;

pub use bill::{
    BillCredit, BillLine, BillState, BillTotals, LineItem, Period, UsageBill, UsageBillSpec,
};

pub use condition::{Condition, ConditionStatus};
pub use lease::{
    CapacityLease, CapacityLeaseSpec, CapacityLeaseStatus, EndReason, LeaseBinding, LeaseClass,
    LeasePhase, LeaseResources, NodeCount,
};
pub use money::{Amount, Currency, Money, SignedMoney};
pub use names::{LabelValue, Name, NodeName, Subject};
pub use pool::{
    CapacityPool, CapacityPoolSpec, CapacityPoolStatus, ConsolidationPolicy, InternalPressure,
    NodeClass, Share, UtilisationChange,
};
pub use rate_card::{
    ClassPrices, RateCard, RateCardSpec, RateCardStatus, ResourcePrices, SlaCredit, SlaCreditRule,
    SpotPriceRule,
};
pub use reservation::{
    PeakReservation, PeakReservationSpec, PeakReservationStatus, Recurring, Weekday, Window,
};
pub use tenant::{CreditLimit, Tenant, TenantSpec, TenantStatus};
pub use time_zone::TimeZone;
pub use units::{GoDuration, LocalTime, Quantity, Timestamp};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group.
pub const GROUP: &str = "offpeak.dev";
/// The only version, and the storage version.
pub const VERSION: &str = "v1alpha1";
/// The category every kind is in: `kubectl get offpeak` lists them all.
pub const CATEGORY: &str = "offpeak";

/// Every CRD of the API, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        Tenant::crd(),
        CapacityPool::crd(),
        PeakReservation::crd(),
        CapacityLease::crd(),
        RateCard::crd(),
        UsageBill::crd(),
    ]
    .into_iter()
    .map(tidy)
    .collect()
}

/// Doc comments wrap at 92 columns; `kubectl explain` wraps again, so a description keeps
/// only its paragraph breaks.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Removes what schemars adds for Rust's sake but Kubernetes reads differently: `nullable`
/// (an absent optional field is omitted, never null, and without `nullable` the API server
/// prunes a null a person writes instead of storing it), the `null` that optional enums
/// list, and the root `title`; and unwraps descriptions.
fn tidy(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                if let Some(serde_json::Value::String(text)) = map.get_mut("description") {
                    *text = unwrap_lines(text);
                }
                if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                    values.retain(|v| !v.is_null());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    if let Some(versions) = value
        .pointer_mut("/spec/versions")
        .and_then(serde_json::Value::as_array_mut)
    {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                walk(schema);
                if let Some(map) = schema.as_object_mut() {
                    map.remove("title");
                }
            }
        }
    }
    serde_json::from_value(value).unwrap_or(crd)
}

/// [`crds`] as one multi-document YAML stream, the same bytes every time.
pub fn crds_yaml() -> String {
    crds().iter().map(crd_yaml).collect::<Vec<_>>().join("")
}

/// One CRD as a YAML document, starting with `---`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_yaml::to_string(crd).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"));
    format!("---\n{body}")
}
