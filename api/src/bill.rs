//! `UsageBill`: one period of one tenant, written by the operator only.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::lease::LeaseClass;
use crate::money::{Currency, SignedMoney};
use crate::names::Name;
use crate::units::Timestamp;

/// One billing period of one tenant: a line per lease, resource and price, credits, and
/// totals. The operator writes it; tenants read it. Once Finalized it never changes:
/// corrections are new lines on a later bill.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "offpeak.dev",
    version = "v1alpha1",
    kind = "UsageBill",
    plural = "usagebills",
    namespaced,
    derive = "PartialEq",
    shortname = "ub",
    shortname = "bill",
    category = "offpeak",
    doc = "One billing period of one tenant: line items, credits and totals. Written by the operator; a Finalized bill never changes.",
    printcolumn(name = "Period", type_ = "string", json_path = ".spec.period.start"),
    printcolumn(name = "State", type_ = "string", json_path = ".spec.state"),
    printcolumn(name = "Total", type_ = "string", json_path = ".spec.totals.total"),
    printcolumn(name = "Currency", type_ = "string", json_path = ".spec.currency"),
    printcolumn(
        name = "As Of",
        type_ = "string",
        json_path = ".spec.asOf",
        priority = 1
    ),
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".spec.tenant",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.state != 'Finalized' || has(self.finalizedAt)")
        .message("spec.finalizedAt is required when spec.state is Finalized")
        .field_path(".finalizedAt")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("oldSelf.state != 'Finalized' || self == oldSelf")
        .message("a Finalized bill never changes: put corrections on a later bill")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct UsageBillSpec {
    /// Name of the Tenant billed.
    pub tenant: Name,
    /// The span of time billed.
    pub period: Period,
    /// Open while the period runs and lines may still be added; Finalized once closed.
    pub state: BillState,
    /// When the bill was finalized; set with state Finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<Timestamp>,
    /// The instant the bill counts up to: now, refreshed every minute or so, while Open;
    /// the period's end once Finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<Timestamp>,
    /// ISO 4217 currency of every amount on the bill.
    pub currency: Currency,
    /// What was used, one line per lease, resource and price in force. At most 5000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub lines: Vec<BillLine>,
    /// Credits, such as SLA credits for early reclaims of Reserved leases. At most 1000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub credits: Vec<BillCredit>,
    /// Sums of the lines and credits.
    pub totals: BillTotals,
}

/// A span of time, start inclusive, end exclusive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.end > self.start")
    .message("spec.period.end must be after spec.period.start")
    .field_path(".end"))]
#[serde(rename_all = "camelCase")]
pub struct Period {
    /// First instant billed, RFC 3339.
    pub start: Timestamp,
    /// First instant not billed, after start.
    pub end: Timestamp,
}

/// The state of a bill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BillState {
    Open,
    Finalized,
}

/// One line of a bill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillLine {
    /// Unique key of the line on the bill, stable across recomputations.
    #[schemars(length(min = 1, max = 253))]
    pub id: String,
    /// Name of the lease (in the bill's namespace) the line is for.
    pub lease: Name,
    /// Pool the capacity came from.
    pub pool: Name,
    /// Class of the lease.
    pub class: LeaseClass,
    /// What is charged: cpu, memory, gpu, or minimumCharge (a top-up to the card's
    /// minimum) or correction (of an earlier, finalized bill).
    pub item: LineItem,
    /// First instant charged by the line.
    pub start: Timestamp,
    /// First instant not charged by it.
    pub end: Timestamp,
    /// Amount used, in cores, GiB or GPUs (a decimal string).
    #[schemars(
        length(max = 32),
        regex(pattern = r"^(0|[1-9][0-9]{0,14})([.][0-9]{1,12})?$")
    )]
    pub quantity: String,
    /// Price per unit-hour applied.
    pub unit_price: SignedMoney,
    /// The line's charge, rounded to the card's precision; negative for a correction.
    pub amount: SignedMoney,
    /// The rate card that priced the line.
    #[schemars(length(max = 253))]
    pub rate_card: String,
}

/// What a bill line charges for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LineItem {
    Cpu,
    Memory,
    Gpu,
    MinimumCharge,
    Correction,
}

/// A credit on a bill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillCredit {
    /// Unique key of the credit on the bill.
    #[schemars(length(min = 1, max = 253))]
    pub id: String,
    /// Name of the lease the credit is for.
    pub lease: Name,
    /// Why, for people, such as "Reserved lease reclaimed 3h before its end".
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// The amount credited, subtracted from the total.
    pub amount: SignedMoney,
}

/// Sums of a bill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillTotals {
    /// Sum of the lines.
    pub charges: SignedMoney,
    /// Sum of the credits.
    pub credits: SignedMoney,
    /// charges minus credits: what the tenant owes for the period.
    pub total: SignedMoney,
}
