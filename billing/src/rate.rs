//! Rate cards: what a second of leased capacity costs.
//!
//! A [`RateCard`] is plain serde data in camelCase so that the operator can convert
//! its `RateCard` custom resource into it field by field. Several cards (versions)
//! can exist; for a pool and an instant the card in force is the one that applies to
//! the pool, whose `[effectiveFrom, effectiveUntil)` contains the instant, and whose
//! `effectiveFrom` is the latest. A newer version therefore supersedes an older one
//! from its `effectiveFrom` on, and the line of a lease running across that instant
//! is split there.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{BillingError, Result};
use crate::money::Currency;

/// A leasable resource. Quantities are cores, GiB and whole GPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Resource {
    /// CPU, in cores; priced per core-hour.
    Cpu,
    /// Memory, in GiB; priced per GiB-hour.
    Memory,
    /// GPUs, in devices; priced per GPU-hour.
    Gpu,
}

impl Resource {
    /// All resources, in the order lines are printed.
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Gpu];

    /// Lower-case name used in keys and ids.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Gpu => "gpu",
        }
    }

    /// The unit of one resource, in FOCUS unit format (`Core`, `GiB`, `GPU`).
    pub fn unit(self) -> &'static str {
        match self {
            Resource::Cpu => "Core",
            Resource::Memory => "GiB",
            Resource::Gpu => "GPU",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The class of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LeaseClass {
    /// Cheap, reclaimable after notice; priced by the spot rule.
    Spot,
    /// Held for its whole term; an early reclaim earns an SLA credit.
    Reserved,
}

impl fmt::Display for LeaseClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseClass::Spot => "Spot",
            LeaseClass::Reserved => "Reserved",
        })
    }
}

/// Prices per resource-hour, in the card's currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcePrices {
    /// Price of one core for one hour.
    pub cpu: Decimal,
    /// Price of one GiB of memory for one hour.
    pub memory: Decimal,
    /// Price of one GPU for one hour.
    #[serde(default)]
    pub gpu: Decimal,
}

impl ResourcePrices {
    /// The price of `resource`.
    pub fn get(&self, resource: Resource) -> Decimal {
        match resource {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
            Resource::Gpu => self.gpu,
        }
    }
}

/// Prices per class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassPrices {
    /// Base spot prices (the spot rule moves them with pool utilisation).
    pub spot: ResourcePrices,
    /// Reserved prices, fixed.
    pub reserved: ResourcePrices,
}

/// How the spot price moves with pool utilisation `u` (0 to 1):
///
/// `multiplier(u) = clamp(1 + sensitivity × (u − baseUtilisation), floorMultiplier, ceilingMultiplier)`
///
/// and the spot price of a resource is `prices.spot × multiplier(u)`. The price is
/// piecewise-constant: it changes only when a `poolUtilisation` fact says so, and each
/// change splits the line of every spot lease in the pool. Before the first
/// utilisation fact of a pool the multiplier is 1 (the base price).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpotPriceRule {
    /// Utilisation at which the spot price is the base price.
    pub base_utilisation: Decimal,
    /// How strongly the multiplier moves per unit of utilisation.
    pub sensitivity: Decimal,
    /// Lowest multiplier (the floor price is `base × floorMultiplier`).
    pub floor_multiplier: Decimal,
    /// Highest multiplier (the ceiling price is `base × ceilingMultiplier`).
    pub ceiling_multiplier: Decimal,
}

impl SpotPriceRule {
    /// The multiplier at utilisation `u`.
    pub fn multiplier(&self, utilisation: Decimal) -> Decimal {
        let raw = Decimal::ONE + self.sensitivity * (utilisation - self.base_utilisation);
        raw.clamp(self.floor_multiplier, self.ceiling_multiplier)
    }
}

/// What a Reserved lease reclaimed before its planned end is credited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "rule",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum SlaCreditRule {
    /// `percent` % of what the unserved remainder of the term (reclaim to planned end)
    /// would have cost at the reserved prices and capacity in force at the reclaim.
    PercentOfRemainingTerm {
        /// 0 to 100.
        percent: Decimal,
    },
    /// The seconds between the reclaim notice and the end are free: their charges are
    /// credited back in full.
    NoticeSecondsFree,
}

/// One version of a rate card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateCard {
    /// Name of the card, e.g. `standard`.
    pub name: String,
    /// Version of the card; `name@version` identifies one set of prices forever.
    pub version: String,
    /// ISO 4217 currency of every price on the card.
    pub currency: Currency,
    /// First instant the card is in force.
    pub effective_from: DateTime<Utc>,
    /// First instant it is no longer in force; open-ended when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_until: Option<DateTime<Utc>>,
    /// Pools the card prices; every pool when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// Prices per resource-hour per class.
    pub prices: ClassPrices,
    /// Smallest total a lease is billed over its life; a top-up line makes up the difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_charge_per_lease: Option<Decimal>,
    /// How spot prices move with pool utilisation; spot prices are fixed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_price_rule: Option<SpotPriceRule>,
    /// Credit for an early reclaim of a Reserved lease; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_credit: Option<SlaCreditRule>,
    /// Decimal places line totals are rounded to; the currency's minor unit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u32>,
}

impl RateCard {
    /// `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Decimal places of line totals.
    pub fn line_precision(&self) -> u32 {
        self.precision.unwrap_or(self.currency.minor_units())
    }

    /// Whether the card prices `pool`.
    pub fn applies_to(&self, pool: &str) -> bool {
        self.pools.is_empty() || self.pools.iter().any(|p| p == pool)
    }

    /// Whether the card is in force at unix second `at`.
    pub(crate) fn in_force_at(&self, at: i64) -> bool {
        self.effective_from.timestamp() <= at
            && self
                .effective_until
                .is_none_or(|until| at < until.timestamp())
    }

    /// Price per resource-hour of `resource` for `class`, given the pool utilisation
    /// in force (`None` before any is known).
    pub fn unit_price(
        &self,
        class: LeaseClass,
        resource: Resource,
        utilisation: Option<Decimal>,
    ) -> Decimal {
        match class {
            LeaseClass::Reserved => self.prices.reserved.get(resource),
            LeaseClass::Spot => {
                let base = self.prices.spot.get(resource);
                match (&self.spot_price_rule, utilisation) {
                    (Some(rule), Some(u)) => base * rule.multiplier(u),
                    _ => base,
                }
            }
        }
    }

    /// Checks the card's own rules.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| BillingError::InvalidRateCard {
            card: self.id(),
            message,
        };
        if self.name.is_empty() || self.version.is_empty() {
            return Err(invalid("name and version must not be empty".into()));
        }
        if let Some(until) = self.effective_until
            && until <= self.effective_from
        {
            return Err(invalid(format!(
                "effectiveUntil {until} is not after effectiveFrom {}",
                self.effective_from
            )));
        }
        for (class, prices) in [
            ("spot", &self.prices.spot),
            ("reserved", &self.prices.reserved),
        ] {
            for resource in Resource::ALL {
                if prices.get(resource).is_sign_negative() {
                    return Err(invalid(format!(
                        "prices.{class}.{resource} is negative ({})",
                        prices.get(resource)
                    )));
                }
            }
        }
        if self
            .minimum_charge_per_lease
            .is_some_and(|m| m.is_sign_negative())
        {
            return Err(invalid("minimumChargePerLease is negative".into()));
        }
        if let Some(rule) = &self.spot_price_rule {
            if rule.floor_multiplier.is_sign_negative()
                || rule.floor_multiplier > rule.ceiling_multiplier
            {
                return Err(invalid(format!(
                    "spotPriceRule needs 0 <= floorMultiplier <= ceilingMultiplier, got {} and {}",
                    rule.floor_multiplier, rule.ceiling_multiplier
                )));
            }
            if rule.base_utilisation < Decimal::ZERO || rule.base_utilisation > Decimal::ONE {
                return Err(invalid(format!(
                    "spotPriceRule.baseUtilisation {} is outside 0..1",
                    rule.base_utilisation
                )));
            }
        }
        if let Some(SlaCreditRule::PercentOfRemainingTerm { percent }) = &self.sla_credit
            && (*percent < Decimal::ZERO || *percent > Decimal::ONE_HUNDRED)
        {
            return Err(invalid(format!(
                "slaCredit.percent {percent} is outside 0..100"
            )));
        }
        if self.precision.is_some_and(|p| p > 12) {
            return Err(invalid("precision above 12 decimal places".into()));
        }
        Ok(())
    }

    /// Whether two different cards claim a common pool from the same instant, which
    /// would leave the card in force ambiguous.
    pub(crate) fn conflicts_with(&self, other: &RateCard) -> bool {
        let pools_overlap = self.pools.is_empty()
            || other.pools.is_empty()
            || self.pools.iter().any(|p| other.pools.contains(p));
        self.id() != other.id() && self.effective_from == other.effective_from && pools_overlap
    }
}

/// Piecewise-constant "which card is in force" for one pool: `(from_second, card)`,
/// sorted; `None` marks a gap.
pub(crate) type CardTimeline = Vec<(i64, Option<usize>)>;

/// All rate cards known, with the per-pool timelines derived from them.
#[derive(Debug, Default)]
pub struct RateBook {
    cards: Vec<RateCard>,
    ids: Vec<String>,
    timelines: HashMap<String, CardTimeline>,
}

impl RateBook {
    /// A book of `cards`; duplicates of one `name@version` must be identical.
    pub fn new(mut cards: Vec<RateCard>) -> Result<Self> {
        cards.sort_by_key(|c| (c.effective_from, c.id()));
        cards.dedup();
        for card in &cards {
            card.validate()?;
        }
        for pair in cards.windows(2) {
            if pair[0].id() == pair[1].id() {
                return Err(BillingError::InvalidRateCard {
                    card: pair[0].id(),
                    message: "two different cards carry this name@version".into(),
                });
            }
        }
        let ids = cards.iter().map(RateCard::id).collect();
        Ok(RateBook {
            cards,
            ids,
            timelines: HashMap::new(),
        })
    }

    /// The cards, sorted by effectiveFrom.
    pub fn cards(&self) -> &[RateCard] {
        &self.cards
    }

    /// Card by index.
    pub(crate) fn card(&self, index: usize) -> &RateCard {
        &self.cards[index]
    }

    /// `name@version` of a card by index, computed once.
    pub(crate) fn card_id(&self, index: usize) -> &str {
        &self.ids[index]
    }

    /// Decimal places of the line totals of card `name@version`, if the book has it.
    pub(crate) fn precision_of(&self, card_id: &str) -> Option<u32> {
        let index = self.ids.iter().position(|id| id == card_id)?;
        Some(self.cards[index].line_precision())
    }

    /// Builds (once) the timeline of `pool`.
    pub(crate) fn prepare_pool(&mut self, pool: &str) -> Result<()> {
        if self.timelines.contains_key(pool) {
            return Ok(());
        }
        let applicable: Vec<usize> = (0..self.cards.len())
            .filter(|&i| self.cards[i].applies_to(pool))
            .collect();
        let mut boundaries: Vec<i64> = applicable
            .iter()
            .flat_map(|&i| {
                let card = &self.cards[i];
                std::iter::once(card.effective_from.timestamp())
                    .chain(card.effective_until.map(|u| u.timestamp()))
            })
            .collect();
        boundaries.sort_unstable();
        boundaries.dedup();
        let mut timeline: CardTimeline = Vec::new();
        for at in boundaries {
            let mut winner: Option<usize> = None;
            for &i in &applicable {
                let card = &self.cards[i];
                if !card.in_force_at(at) {
                    continue;
                }
                winner = match winner {
                    None => Some(i),
                    Some(w) if self.cards[w].effective_from < card.effective_from => Some(i),
                    Some(w) if self.cards[w].effective_from == card.effective_from => {
                        return Err(BillingError::RateCardConflict {
                            first: self.cards[w].id(),
                            second: card.id(),
                            pool: pool.to_string(),
                            at: card.effective_from,
                        });
                    }
                    keep => keep,
                };
            }
            if timeline.last().map(|&(_, c)| c) != Some(winner) {
                timeline.push((at, winner));
            }
        }
        self.timelines.insert(pool.to_string(), timeline);
        Ok(())
    }

    /// The timeline of a pool prepared with [`RateBook::prepare_pool`].
    pub(crate) fn timeline(&self, pool: &str) -> &[(i64, Option<usize>)] {
        self.timelines.get(pool).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The card in force for `pool` at second `at` (pool must be prepared).
    pub(crate) fn card_at(&self, pool: &str, at: i64) -> Option<usize> {
        let timeline = self.timeline(pool);
        let idx = timeline.partition_point(|&(from, _)| from <= at);
        if idx == 0 { None } else { timeline[idx - 1].1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    pub(crate) fn card(version: &str, from: &str) -> RateCard {
        RateCard {
            name: "standard".into(),
            version: version.into(),
            currency: Currency::from_code("USD", "test").unwrap(),
            effective_from: DateTime::parse_from_rfc3339(from)
                .unwrap()
                .with_timezone(&Utc),
            effective_until: None,
            pools: vec![],
            prices: ClassPrices {
                spot: ResourcePrices {
                    cpu: d("0.02"),
                    memory: d("0.002"),
                    gpu: d("0.9"),
                },
                reserved: ResourcePrices {
                    cpu: d("0.04"),
                    memory: d("0.004"),
                    gpu: d("1.8"),
                },
            },
            minimum_charge_per_lease: None,
            spot_price_rule: None,
            sla_credit: None,
            precision: None,
        }
    }

    #[test]
    fn spot_multiplier_is_clamped_linear() {
        let rule = SpotPriceRule {
            base_utilisation: d("0.5"),
            sensitivity: d("2"),
            floor_multiplier: d("0.5"),
            ceiling_multiplier: d("3"),
        };
        assert_eq!(rule.multiplier(d("0.5")), d("1"));
        assert_eq!(rule.multiplier(d("0.75")), d("1.5"));
        assert_eq!(rule.multiplier(d("0")), d("0.5"));
        assert_eq!(rule.multiplier(d("1")), d("2"));
        let steep = SpotPriceRule {
            sensitivity: d("10"),
            ..rule
        };
        assert_eq!(steep.multiplier(d("1")), d("3"));
        let mut c = card("1", "2026-01-01T00:00:00Z");
        c.spot_price_rule = Some(steep);
        assert_eq!(
            c.unit_price(LeaseClass::Spot, Resource::Cpu, Some(d("0.6"))),
            d("0.04")
        );
        assert_eq!(
            c.unit_price(LeaseClass::Spot, Resource::Cpu, None),
            d("0.02")
        );
        assert_eq!(
            c.unit_price(LeaseClass::Reserved, Resource::Cpu, Some(d("1"))),
            d("0.04")
        );
    }

    #[test]
    fn newest_card_in_force_wins_and_gaps_show() {
        let mut v1 = card("1", "2026-01-01T00:00:00Z");
        v1.effective_until = Some(
            DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        let v2 = card("2", "2026-02-01T00:00:00Z");
        let mut only_gpu = card("3", "2026-01-15T00:00:00Z");
        only_gpu.pools = vec!["gpu".into()];
        let mut book = RateBook::new(vec![v2, only_gpu, v1]).unwrap();
        book.prepare_pool("general").unwrap();
        book.prepare_pool("gpu").unwrap();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp();
        let id = |i: Option<usize>| i.map(|i| book.card(i).id());
        assert_eq!(
            id(book.card_at("general", at("2025-12-31T23:59:59Z"))),
            None
        );
        assert_eq!(
            id(book.card_at("general", at("2026-01-20T00:00:00Z"))).as_deref(),
            Some("standard@1")
        );
        assert_eq!(
            id(book.card_at("gpu", at("2026-01-20T00:00:00Z"))).as_deref(),
            Some("standard@3")
        );
        assert_eq!(
            id(book.card_at("general", at("2026-02-01T00:00:00Z"))).as_deref(),
            Some("standard@2")
        );
        assert_eq!(
            id(book.card_at("general", at("2026-04-01T00:00:00Z"))).as_deref(),
            Some("standard@2")
        );
    }

    #[test]
    fn same_start_for_same_pool_is_a_conflict() {
        let a = card("1", "2026-01-01T00:00:00Z");
        let b = card("2", "2026-01-01T00:00:00Z");
        assert!(a.conflicts_with(&b));
        let mut book = RateBook::new(vec![a, b]).unwrap();
        let err = book.prepare_pool("general").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "rate cards standard@1 and standard@2 both take effect for pool \"general\""
            ),
            "{err}"
        );
    }

    #[test]
    fn invalid_cards_are_named() {
        let mut c = card("1", "2026-01-01T00:00:00Z");
        c.prices.reserved.gpu = d("-1");
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "rate card standard@1: prices.reserved.gpu is negative (-1)"
        );
        let json = r#"{"name":"x","version":"1","currency":"XXQ","effectiveFrom":"2026-01-01T00:00:00Z",
            "prices":{"spot":{"cpu":"1","memory":"1"},"reserved":{"cpu":"1","memory":"1"}}}"#;
        let err = serde_json::from_str::<RateCard>(json).unwrap_err();
        assert!(
            err.to_string().contains("unknown currency \"XXQ\""),
            "{err}"
        );
    }
}
