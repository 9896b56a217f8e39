//! `RateCard`: what a second of leased capacity costs.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::money::{Currency, Money, precision_rule};
use crate::names::Name;
use crate::units::Timestamp;

/// Prices per resource-hour for each lease class, in one currency, for some pools and a
/// span of time. For a pool and an instant, the card in force is the one that applies to
/// the pool, whose [effectiveFrom, effectiveUntil) holds the instant, and whose
/// effectiveFrom is the latest.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "offpeak.dev",
    version = "v1alpha1",
    kind = "RateCard",
    plural = "ratecards",
    status = "RateCardStatus",
    derive = "PartialEq",
    shortname = "rcard",
    category = "offpeak",
    doc = "Prices per resource-hour per lease class, currency, minimum charge, spot price rule and effective dates.",
    printcolumn(name = "Currency", type_ = "string", json_path = ".spec.currency"),
    printcolumn(name = "From", type_ = "string", json_path = ".spec.effectiveFrom"),
    printcolumn(name = "Until", type_ = "string", json_path = ".spec.effectiveUntil"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.effectiveUntil) || self.effectiveUntil > self.effectiveFrom")
        .message("spec.effectiveUntil must be after spec.effectiveFrom")
        .field_path(".effectiveUntil"),
    validation = precision_rule("prices.spot.cpu", "currency", Some("precision"), "spec.prices.spot.cpu"),
    validation = precision_rule("prices.spot.memory", "currency", Some("precision"), "spec.prices.spot.memory"),
    validation = precision_rule("prices.spot.gpu", "currency", Some("precision"), "spec.prices.spot.gpu"),
    validation = precision_rule("prices.reserved.cpu", "currency", Some("precision"), "spec.prices.reserved.cpu"),
    validation = precision_rule("prices.reserved.memory", "currency", Some("precision"), "spec.prices.reserved.memory"),
    validation = precision_rule("prices.reserved.gpu", "currency", Some("precision"), "spec.prices.reserved.gpu"),
    validation = precision_rule("minimumChargePerLease", "currency", Some("precision"), "spec.minimumChargePerLease"),
)]
#[serde(rename_all = "camelCase")]
pub struct RateCardSpec {
    /// ISO 4217 currency of every price on the card, such as USD, EUR or JPY.
    pub currency: Currency,
    /// Decimal places of prices and bill lines, 0 to 12, such as 4 for prices like
    /// "0.0425". The currency's minor unit (2 for USD, 0 for JPY) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 12))]
    pub precision: Option<i32>,
    /// Prices per resource-hour for each class.
    pub prices: ClassPrices,
    /// The least a lease is billed over its life, such as "0.50"; a top-up line makes up
    /// the difference. None when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_charge_per_lease: Option<Money>,
    /// How the spot price moves with pool utilisation; spot prices are fixed at
    /// prices.spot when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_price_rule: Option<SpotPriceRule>,
    /// What a Reserved lease reclaimed before its end is credited; nothing when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_credit: Option<SlaCredit>,
    /// First instant the card is in force, RFC 3339, such as 2026-11-01T00:00:00Z.
    pub effective_from: Timestamp,
    /// First instant it is no longer in force, after effectiveFrom; open-ended when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_until: Option<Timestamp>,
    /// CapacityPools the card prices; every pool when empty. At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"))]
    pub pools: Vec<Name>,
}

/// Prices per class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassPrices {
    /// Base prices of Spot leases; spotPriceRule moves them with pool utilisation.
    pub spot: ResourcePrices,
    /// Prices of Reserved leases, fixed.
    pub reserved: ResourcePrices,
}

/// Prices per resource-hour, non-negative decimal strings in the card's currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePrices {
    /// Price of one CPU core for one hour, such as "0.0425".
    pub cpu: Money,
    /// Price of one GiB of memory for one hour, such as "0.0051".
    pub memory: Money,
    /// Price of one GPU for one hour, such as "2.10"; "0" when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Money>,
}

/// `multiplier(u) = clamp(1 + sensitivity × (u − baseUtilisation), floorMultiplier,
/// ceilingMultiplier)` at pool utilisation u (0 to 1); the spot price of a resource is
/// prices.spot × multiplier(u).
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("!self.floorMultiplier.matches('^[0-9.]+$') || !self.ceilingMultiplier.matches('^[0-9.]+$') || quantity(self.floorMultiplier).compareTo(quantity(self.ceilingMultiplier)) <= 0")
    .message("spec.spotPriceRule.floorMultiplier must be at most ceilingMultiplier")
    .field_path(".floorMultiplier"))]
#[serde(rename_all = "camelCase")]
pub struct SpotPriceRule {
    /// Pool utilisation at which the spot price is the base price, "0" to "1", such as
    /// "0.5".
    #[schemars(
        length(max = 8),
        regex(pattern = r"^(0([.][0-9]{1,6})?|1([.]0{1,6})?)$")
    )]
    pub base_utilisation: String,
    /// How strongly the price follows utilisation: "2" doubles the price between
    /// baseUtilisation and full use. Non-negative decimal, such as "2".
    #[schemars(
        length(max = 12),
        regex(pattern = r"^(0|[1-9][0-9]{0,3})([.][0-9]{1,6})?$")
    )]
    pub sensitivity: String,
    /// Lowest multiplier of the base price, such as "0.3" (the floor price is 30 % of
    /// base). Non-negative, at most ceilingMultiplier.
    #[schemars(
        length(max = 12),
        regex(pattern = r"^(0|[1-9][0-9]{0,3})([.][0-9]{1,6})?$")
    )]
    pub floor_multiplier: String,
    /// Highest multiplier of the base price, such as "3" (the ceiling price is three times
    /// base).
    #[schemars(
        length(max = 12),
        regex(pattern = r"^(0|[1-9][0-9]{0,3})([.][0-9]{1,6})?$")
    )]
    pub ceiling_multiplier: String,
}

/// The credit for an early reclaim of a Reserved lease.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("self.rule != 'PercentOfRemainingTerm' || has(self.percent)")
        .message("spec.slaCredit.percent is required with rule PercentOfRemainingTerm")
        .field_path(".percent")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.rule == 'PercentOfRemainingTerm' || !has(self.percent)")
        .message("spec.slaCredit.percent is only for rule PercentOfRemainingTerm")
        .field_path(".percent")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct SlaCredit {
    /// PercentOfRemainingTerm: percent % of what the unserved rest of the term would have
    /// cost. NoticeSecondsFree: the seconds between the reclaim notice and the end are
    /// free.
    pub rule: SlaCreditRule,
    /// For PercentOfRemainingTerm: 0 to 100, a decimal string such as "25".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 10),
        regex(pattern = r"^(100([.]0{1,4})?|[1-9]?[0-9]([.][0-9]{1,4})?)$")
    )]
    pub percent: Option<String>,
}

/// How an SLA credit is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SlaCreditRule {
    PercentOfRemainingTerm,
    NoticeSecondsFree,
}

/// What the operator reports about a rate card.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateCardStatus {
    /// Pools the card is in force for now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), extend("x-kubernetes-list-type" = "set"))]
    pub in_force_for: Vec<Name>,
    /// Accepted (no conflict with another card) and the like.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}
