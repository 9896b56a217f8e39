//! Random but valid fact sets for property tests.
#![allow(dead_code, clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use offpeak_billing::meter::{EndReason, Fact};
use offpeak_billing::rate::{LeaseClass, SlaCreditRule, SpotPriceRule};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

pub const TENANTS: [&str; 2] = ["acme", "globex"];

#[derive(Clone, Debug)]
pub struct LeasePlan {
    pub tenant: usize,
    pub spot: bool,
    pub start: i64,
    /// (gap after the previous bind in seconds, cpu halves, memory GiB, gpus); a gap
    /// of 0 binds twice on one second, which only the facts' keys order.
    pub binds: Vec<(i64, u32, u32, u32)>,
    /// (seconds after the last bind, end reason); 0 ends on the second of that bind.
    pub end_after: Option<(i64, usize)>,
    pub planned_after: Option<i64>,
    pub notice_before_end: Option<i64>,
}

fn lease_plan() -> impl Strategy<Value = LeasePlan> {
    (
        0..TENANTS.len(),
        any::<bool>(),
        0i64..40 * 86_400,
        prop::collection::vec(
            (
                prop_oneof![1 => Just(0i64), 3 => 1i64..200_000],
                // Small binds (short leases of them stay under a minimum charge) and
                // large ones.
                prop_oneof![
                    (0u32..8, 0u32..16, Just(0u32)),
                    (0u32..128, 0u32..256, 0u32..3),
                ],
            )
                .prop_map(|(gap, (cpu_halves, memory, gpu))| (gap, cpu_halves, memory, gpu)),
            1..4,
        ),
        prop::option::weighted(
            0.8,
            (
                // Some leases end on the second of their last bind, some within the
                // hour (under a minimum charge), most after days.
                prop_oneof![1 => Just(0i64), 2 => 1i64..3_600, 4 => 3_600i64..500_000],
                // Reclaimed (2) more often than the rest: SLA credits need it.
                prop_oneof![1 => Just(0usize), 1 => Just(1), 2 => Just(2), 1 => Just(3)],
            ),
        ),
        // A planned end usually after the actual end, so that a reclaim is early.
        prop::option::weighted(0.8, 1i64..1_000_000),
        prop::option::weighted(0.8, 1i64..600),
    )
        .prop_map(
            |(tenant, spot, start, binds, end_after, planned_after, notice_before_end)| LeasePlan {
                tenant,
                spot,
                start,
                binds,
                end_after,
                planned_after,
                notice_before_end,
            },
        )
}

pub fn origin() -> DateTime<Utc> {
    t("2026-10-20T00:00:00Z")
}

/// Facts of one lease. `id` makes the lease id.
pub fn lease_facts(id: usize, plan: &LeasePlan) -> Vec<Fact> {
    let lease = format!("{}/l{id}", TENANTS[plan.tenant]);
    let start = origin() + Duration::seconds(plan.start);
    let class = if plan.spot {
        LeaseClass::Spot
    } else {
        LeaseClass::Reserved
    };
    let mut facts = Vec::new();
    let mut at = start;
    let mut bind_facts = Vec::new();
    for (i, &(gap, cpu_halves, memory, gpu)) in plan.binds.iter().enumerate() {
        if i > 0 {
            at += Duration::seconds(gap);
        }
        let mut bound = bind_at(
            &lease,
            at,
            Decimal::new(i64::from(cpu_halves) * 5, 1),
            Decimal::from(memory),
            Decimal::from(gpu),
        );
        // Two binds on one second need two keys.
        bound.key = format!("{}/{i}", bound.key);
        bind_facts.push(bound);
    }
    let end = plan.end_after.map(|(after, reason)| {
        (
            at + Duration::seconds(after),
            [
                EndReason::Expired,
                EndReason::Cancelled,
                EndReason::Reclaimed,
                EndReason::PriceExceeded,
            ][reason],
        )
    });
    let planned = plan.planned_after.map(|p| at + Duration::seconds(p));
    let planned_text = planned.map(|p| p.to_rfc3339());
    facts.push(admit_planned(
        &lease,
        TENANTS[plan.tenant],
        class,
        &start.to_rfc3339(),
        planned_text.as_deref(),
    ));
    facts.extend(bind_facts);
    if let Some((end_at_instant, reason)) = end {
        if let Some(before) = plan.notice_before_end {
            let notice_at = (end_at_instant - Duration::seconds(before)).max(start);
            facts.push(notice(
                &lease,
                &notice_at.to_rfc3339(),
                &end_at_instant.to_rfc3339(),
            ));
        }
        facts.push(end_at(&lease, end_at_instant, reason));
    }
    facts
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub leases: Vec<LeasePlan>,
    /// (second, percent, a second percent reported on the same second)
    pub utilisation: Vec<(i64, u32, Option<u32>)>,
    pub second_card_at: Option<i64>,
    pub minimum: bool,
    pub sla: Option<bool>,
}

pub fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(lease_plan(), 1..6),
        prop::collection::vec(
            (
                0i64..60 * 86_400,
                0u32..=100,
                prop::option::weighted(0.3, 0u32..=100),
            ),
            0..8,
        ),
        prop::option::of(0i64..50 * 86_400),
        any::<bool>(),
        prop::option::weighted(0.8, any::<bool>()),
    )
        .prop_map(
            |(leases, utilisation, second_card_at, minimum, sla)| Scenario {
                leases,
                utilisation,
                second_card_at,
                minimum,
                sla,
            },
        )
}

impl Scenario {
    pub fn facts(&self) -> Vec<Fact> {
        let rule = SpotPriceRule {
            base_utilisation: d("0.5"),
            sensitivity: d("2"),
            floor_multiplier: d("0.5"),
            ceiling_multiplier: d("3"),
        };
        let sla = self.sla.map(|percent| {
            if percent {
                SlaCreditRule::PercentOfRemainingTerm { percent: d("25") }
            } else {
                SlaCreditRule::NoticeSecondsFree
            }
        });
        let mut v1 = card("1", "2026-01-01T00:00:00Z");
        v1.spot_price_rule = Some(rule.clone());
        v1.minimum_charge_per_lease = self.minimum.then(|| d("0.50"));
        v1.sla_credit = sla.clone();
        let mut facts = vec![card_fact(v1)];
        if let Some(at) = self.second_card_at {
            let mut v2 = card("2", &(origin() + Duration::seconds(at)).to_rfc3339());
            v2.prices.spot.cpu = d("0.0275");
            v2.prices.reserved.memory = d("0.0037");
            v2.spot_price_rule = Some(rule);
            v2.sla_credit = sla;
            facts.push(card_fact(v2));
        }
        for (at, percent, same_second) in &self.utilisation {
            for percent in std::iter::once(percent).chain(same_second) {
                facts.push(util_at(
                    "general",
                    origin() + Duration::seconds(*at),
                    Decimal::new(i64::from(*percent), 2),
                ));
            }
        }
        for (i, plan) in self.leases.iter().enumerate() {
            facts.extend(lease_facts(i, plan));
        }
        facts
    }
}
