//! Prices for the operator's decisions and its cost-so-far estimate, from the billing
//! crate's rate card model, so the operator and the bills price a second the same way.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use offpeak_billing::money::{Currency, round_line};
use offpeak_billing::rate::{self, LeaseClass, RateCard, Resource};
use rust_decimal::Decimal;

use crate::observe;
use crate::plan::admission::HourlyPrices;
use crate::plan::resources::Resources;

/// The billing model of a `RateCard` object; its version is the object's generation.
pub fn from_api(card: &offpeak_api::RateCard) -> Result<RateCard, String> {
    let spec = &card.spec;
    let name = card.metadata.name.clone().unwrap_or_default();
    let dec = |text: &str| observe::decimal(text);
    let prices = |p: &offpeak_api::ResourcePrices| -> Result<rate::ResourcePrices, String> {
        Ok(rate::ResourcePrices {
            cpu: dec(p.cpu.as_str())?,
            memory: dec(p.memory.as_str())?,
            gpu: p
                .gpu
                .as_ref()
                .map(|g| dec(g.as_str()))
                .transpose()?
                .unwrap_or(Decimal::ZERO),
        })
    };
    let spot_price_rule = spec
        .spot_price_rule
        .as_ref()
        .map(|r| -> Result<rate::SpotPriceRule, String> {
            Ok(rate::SpotPriceRule {
                base_utilisation: dec(&r.base_utilisation)?,
                sensitivity: dec(&r.sensitivity)?,
                floor_multiplier: dec(&r.floor_multiplier)?,
                ceiling_multiplier: dec(&r.ceiling_multiplier)?,
            })
        })
        .transpose()?;
    let sla_credit = spec
        .sla_credit
        .as_ref()
        .map(|c| -> Result<rate::SlaCreditRule, String> {
            Ok(match c.rule {
                offpeak_api::SlaCreditRule::NoticeSecondsFree => {
                    rate::SlaCreditRule::NoticeSecondsFree
                }
                offpeak_api::SlaCreditRule::PercentOfRemainingTerm => {
                    rate::SlaCreditRule::PercentOfRemainingTerm {
                        percent: dec(c.percent.as_deref().unwrap_or("0"))?,
                    }
                }
            })
        })
        .transpose()?;
    Ok(RateCard {
        name: name.clone(),
        version: card.metadata.generation.unwrap_or(0).to_string(),
        currency: Currency::from_code(spec.currency.as_str(), &format!("RateCard {name}"))
            .map_err(|e| e.to_string())?,
        effective_from: observe::instant(&spec.effective_from)?,
        effective_until: spec
            .effective_until
            .as_ref()
            .map(observe::instant)
            .transpose()?,
        pools: spec.pools.iter().map(|p| p.to_string()).collect(),
        prices: rate::ClassPrices {
            spot: prices(&spec.prices.spot)?,
            reserved: prices(&spec.prices.reserved)?,
        },
        minimum_charge_per_lease: spec
            .minimum_charge_per_lease
            .as_ref()
            .map(|m| dec(m.as_str()))
            .transpose()?,
        spot_price_rule,
        sla_credit,
        precision: spec.precision.and_then(|p| u32::try_from(p).ok()),
    })
}

/// The card in force for `pool` at `at`: of those that apply, the latest effective.
/// Cards that cannot be read are skipped (the rate card's own status reports them).
pub fn card_for(
    cards: &[Arc<offpeak_api::RateCard>],
    pool: &str,
    at: DateTime<Utc>,
) -> Option<RateCard> {
    cards
        .iter()
        .filter_map(|c| from_api(c).ok())
        .filter(|c| {
            c.applies_to(pool) && c.effective_from <= at && c.effective_until.is_none_or(|u| at < u)
        })
        .max_by_key(|c| c.effective_from)
}

pub fn hourly_prices(
    card: &RateCard,
    class: LeaseClass,
    utilisation: Option<Decimal>,
) -> HourlyPrices {
    HourlyPrices {
        cpu_core: card.unit_price(class, Resource::Cpu, utilisation),
        memory_gib: card.unit_price(class, Resource::Memory, utilisation),
        gpu: card.unit_price(class, Resource::Gpu, utilisation),
    }
}

/// Seconds since admission × the hourly price of the bound capacity at today's prices,
/// rounded to the card's line precision: an estimate shown on the lease. The bill itself
/// is computed by the billing crate from the recorded facts, price changes included.
pub fn cost_so_far(
    card: &RateCard,
    class: LeaseClass,
    bound: &Resources,
    utilisation: Option<Decimal>,
    admitted: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Decimal {
    let seconds = Decimal::from((now - admitted).num_seconds().max(0));
    let hourly = hourly_prices(card, class, utilisation).hourly(bound);
    round_line(
        seconds * hourly / Decimal::from(3600),
        card.line_precision(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_accepts_exactly_the_currencies_billing_can_round() {
        // Two crates keep the list (the API must not depend on the ledger's crate): they
        // must agree code for code and digit for digit.
        assert_eq!(
            offpeak_api::money::CURRENCIES,
            offpeak_billing::money::CURRENCIES
        );
    }
}
