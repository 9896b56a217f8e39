//! Property tests: no second lost or counted twice, order and replay do not matter,
//! totals are sums, corrections add up to the recomputed period.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use offpeak_billing::bill::{Bill, BillState, LineKind};
use offpeak_billing::meter::{Fact, FactBody, FactSet, Model};
use offpeak_billing::period::{BillingCycle, Period};
use offpeak_billing::rate::Resource;
use proptest::prelude::*;
use rust_decimal::Decimal;
use support::scenarios::{Scenario, scenario};
use support::t;

/// Every month a generated lease can touch; the last one ends the horizon.
fn months() -> Vec<Period> {
    [
        "2026-10", "2026-11", "2026-12", "2027-01", "2027-02", "2027-03",
    ]
    .iter()
    .map(|m| Period::parse(BillingCycle::Monthly, m).unwrap())
    .collect()
}

fn horizon() -> DateTime<Utc> {
    months().last().unwrap().end
}

fn all_bills(facts: Vec<Fact>) -> Vec<Bill> {
    let model = Model::compile(&FactSet::from_facts(facts).unwrap()).unwrap();
    months()
        .into_iter()
        .flat_map(|p| model.bills(p, p.end).unwrap())
        .collect()
}

/// Resource-seconds each lease held, straight from the facts (independent of the
/// billing code): sum over capacity steps of quantity × overlap with its life.
fn expected_resource_seconds(facts: &[Fact]) -> BTreeMap<(String, Resource), Decimal> {
    let mut steps: BTreeMap<String, Vec<(i64, [Decimal; 3])>> = BTreeMap::new();
    let mut ends: BTreeMap<String, i64> = BTreeMap::new();
    for fact in facts {
        match &fact.body {
            FactBody::CapacityBound(b) => steps.entry(b.lease.clone()).or_default().push((
                b.at.timestamp(),
                [b.resources.cpu, b.resources.memory, b.resources.gpu],
            )),
            FactBody::LeaseEnded(e) => {
                ends.insert(e.lease.clone(), e.at.timestamp());
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for (lease, mut steps) in steps {
        steps.sort_by_key(|s| s.0);
        let stop = ends
            .get(&lease)
            .copied()
            .unwrap_or(i64::MAX)
            .min(horizon().timestamp());
        for (i, (at, amounts)) in steps.iter().enumerate() {
            let next = steps.get(i + 1).map_or(stop, |s| s.0).min(stop);
            let seconds = (next - at).max(0);
            for (r, resource) in Resource::ALL.into_iter().enumerate() {
                *out.entry((lease.clone(), resource))
                    .or_insert(Decimal::ZERO) += amounts[r] * Decimal::from(seconds);
            }
        }
    }
    out.retain(|_, v| !v.is_zero());
    out
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_second_is_lost_or_counted_twice(s in scenario()) {
        let facts = s.facts();
        let bills = all_bills(facts.clone());
        let mut billed: BTreeMap<(String, Resource), Decimal> = BTreeMap::new();
        let mut intervals: BTreeMap<(String, Resource), Vec<(i64, i64)>> = BTreeMap::new();
        for bill in &bills {
            for line in bill.lines.iter().filter(|l| l.kind == LineKind::Usage) {
                let resource = line.resource.unwrap();
                prop_assert!(line.start >= bill.period_start && line.end <= bill.period_end, "line outside its period");
                prop_assert_eq!(line.seconds, (line.end - line.start).num_seconds());
                prop_assert!(line.seconds > 0);
                *billed.entry((line.lease.clone(), resource)).or_insert(Decimal::ZERO) += line.resource_seconds();
                intervals.entry((line.lease.clone(), resource)).or_default().push((line.start.timestamp(), line.end.timestamp()));
            }
        }
        billed.retain(|_, v| !v.is_zero());
        prop_assert_eq!(&billed, &expected_resource_seconds(&facts));
        for ((lease, resource), mut spans) in intervals {
            spans.sort();
            for pair in spans.windows(2) {
                prop_assert!(pair[0].1 <= pair[1].0, "{lease} {resource}: {:?} overlaps {:?}", pair[0], pair[1]);
            }
        }
    }

    #[test]
    fn order_and_replays_do_not_change_bills(s in scenario(), seed in any::<u64>(), dup_every in 1usize..5) {
        let facts = s.facts();
        let reference = all_bills(facts.clone());
        let mut shuffled = facts.clone();
        // Replay some facts, then shuffle deterministically from the seed.
        shuffled.extend(facts.iter().step_by(dup_every).cloned());
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let again = all_bills(shuffled);
        prop_assert_eq!(serde_json::to_string(&reference).unwrap(), serde_json::to_string(&again).unwrap());
    }

    #[test]
    fn totals_are_sums_of_lines(s in scenario()) {
        for bill in all_bills(s.facts()) {
            let sum: Decimal = bill.lines.iter().map(|l| l.amount.amount).sum();
            prop_assert_eq!(bill.total.amount, sum);
            for line in &bill.lines {
                prop_assert_eq!(line.amount.currency, bill.currency);
                prop_assert!(line.amount.amount.scale() <= 2, "rounded to cents: {}", line.amount.amount);
            }
        }
    }

    #[test]
    fn finalized_plus_corrections_equal_the_recomputed_period(s in scenario(), late_lease in 0usize..6) {
        // October is finalized without one lease's facts; they arrive late.
        let facts = s.facts();
        let late_id = format!("/l{late_lease}");
        let early: Vec<Fact> = facts
            .iter()
            .filter(|f| f.body.lease().is_none_or(|l| !l.ends_with(&late_id)))
            .cloned()
            .collect();
        let oct = Period::parse(BillingCycle::Monthly, "2026-10").unwrap();
        let nov = oct.next();
        let early_model = Model::compile(&FactSet::from_facts(early).unwrap()).unwrap();
        let full_model = Model::compile(&FactSet::from_facts(facts).unwrap()).unwrap();
        for tenant in support::scenarios::TENANTS {
            let Ok(mut finalized) = early_model.bill(tenant, oct, oct.end, &[]) else { continue };
            finalized.state = BillState::Finalized;
            let frozen = finalized.clone();
            let nov_bill = full_model.bill(tenant, nov, nov.end, std::slice::from_ref(&finalized)).unwrap();
            prop_assert_eq!(&finalized, &frozen);
            let corrections: Decimal = nov_bill.lines.iter().filter(|l| l.correction_of.as_deref() == Some("2026-10")).map(|l| l.amount.amount).sum();
            let recomputed = full_model.bill(tenant, oct, oct.end, &[]).unwrap();
            prop_assert_eq!(finalized.total.amount + corrections, recomputed.total.amount);
            let regular: Decimal = nov_bill.lines.iter().filter(|l| l.correction_of.is_none()).map(|l| l.amount.amount).sum();
            prop_assert_eq!(regular, full_model.bill(tenant, nov, nov.end, &[]).unwrap().total.amount);
        }
    }
}

#[test]
fn a_scenario_touches_several_months() {
    // Guards the generator: the properties above mean little if every lease fits in
    // one month.
    let plan = support::scenarios::LeasePlan {
        tenant: 0,
        spot: true,
        start: 10 * 86_400,
        binds: vec![(1, 4, 0, 0)],
        end_after: Some((40 * 86_400, 0)),
        planned_after: None,
        notice_before_end: None,
    };
    let s = Scenario {
        leases: vec![plan],
        utilisation: vec![],
        second_card_at: None,
        minimum: false,
        sla: None,
    };
    let bills = all_bills(s.facts());
    let months_with_lines: Vec<&str> = bills
        .iter()
        .filter(|b| !b.lines.is_empty())
        .map(|b| b.period.as_str())
        .collect();
    assert_eq!(months_with_lines, vec!["2026-10", "2026-11", "2026-12"]);
    assert_eq!(bills[0].lines[0].start, t("2026-10-30T00:00:00Z"));
}
