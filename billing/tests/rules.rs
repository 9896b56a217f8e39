//! Each billing rule on hand-computed amounts.
#![allow(clippy::unwrap_used)]

mod support;

use offpeak_billing::bill::{Bill, BillState, LineKind};
use offpeak_billing::meter::{EndReason, Fact, FactSet, Model};
use offpeak_billing::money::Currency;
use offpeak_billing::period::{BillingCycle, Period};
use offpeak_billing::rate::{LeaseClass, Resource, SlaCreditRule, SpotPriceRule};
use rust_decimal::Decimal;
use support::*;

fn month(label: &str) -> Period {
    Period::parse(BillingCycle::Monthly, label).unwrap()
}

fn bill(facts: Vec<Fact>, tenant: &str, period: &str) -> Bill {
    let p = month(period);
    Model::compile(&FactSet::from_facts(facts).unwrap())
        .unwrap()
        .bill(tenant, p, p.end, &[])
        .unwrap()
}

fn amounts(bill: &Bill) -> Vec<(LineKind, Option<Resource>, i64, String)> {
    bill.lines
        .iter()
        .map(|l| (l.kind, l.resource, l.seconds, l.amount.amount.to_string()))
        .collect()
}

fn assert_total_is_sum(bill: &Bill) {
    let sum: Decimal = bill.lines.iter().map(|l| l.amount.amount).sum();
    assert_eq!(bill.total.amount, sum);
}

#[test]
fn per_second_charge_is_seconds_times_price_per_hour_over_3600() {
    // 16 cores + 64 GiB spot for 2.5 h: cpu 16 × 2.5 × 0.02 = 0.80, memory 64 × 2.5 × 0.002 = 0.32.
    // 7 cores for 1001 s at 0.02: 7 × 1001 × 0.02 / 3600 = 0.0389 → 0.04.
    let facts = vec![
        card_fact(card("1", "2026-01-01T00:00:00Z")),
        admit("l1", "acme", LeaseClass::Spot, "2026-11-02T00:00:00Z"),
        bind("l1", "2026-11-02T00:00:00Z", "16", "64", "0"),
        end("l1", "2026-11-02T02:30:00Z", EndReason::Expired),
        admit("l2", "acme", LeaseClass::Spot, "2026-11-03T00:00:00Z"),
        bind("l2", "2026-11-03T00:00:00Z", "7", "0", "0"),
        end("l2", "2026-11-03T00:16:41Z", EndReason::Cancelled),
    ];
    let b = bill(facts, "acme", "2026-11");
    assert_eq!(
        amounts(&b),
        vec![
            (LineKind::Usage, Some(Resource::Cpu), 9000, "0.80".into()),
            (LineKind::Usage, Some(Resource::Memory), 9000, "0.32".into()),
            (LineKind::Usage, Some(Resource::Cpu), 1001, "0.04".into()),
        ]
    );
    assert_eq!(b.total.to_string(), "1.16 USD");
    assert_total_is_sum(&b);
}

#[test]
fn a_rate_change_mid_lease_splits_the_line_at_that_second() {
    let mut v2 = card("2", "2026-11-02T12:00:00Z");
    v2.prices.reserved.cpu = d("0.05");
    let facts = vec![
        card_fact(card("1", "2026-01-01T00:00:00Z")),
        card_fact(v2),
        admit("l1", "acme", LeaseClass::Reserved, "2026-11-02T10:00:00Z"),
        bind("l1", "2026-11-02T10:00:00Z", "10", "0", "0"),
        end("l1", "2026-11-02T14:00:00Z", EndReason::Expired),
    ];
    let b = bill(facts, "acme", "2026-11");
    // 10 cores × 2 h × 0.04 = 0.80, then 10 × 2 × 0.05 = 1.00.
    assert_eq!(
        amounts(&b),
        vec![
            (LineKind::Usage, Some(Resource::Cpu), 7200, "0.80".into()),
            (LineKind::Usage, Some(Resource::Cpu), 7200, "1.00".into()),
        ]
    );
    assert_eq!(b.lines[1].start, t("2026-11-02T12:00:00Z"));
    assert_eq!(b.lines[0].rate_card, "standard@1");
    assert_eq!(b.lines[1].rate_card, "standard@2");
    assert_eq!(b.total.amount, d("1.80"));
}

#[test]
fn a_lease_across_a_period_boundary_is_billed_in_both_for_its_own_seconds() {
    let facts = vec![
        card_fact(card("1", "2026-01-01T00:00:00Z")),
        admit("l1", "acme", LeaseClass::Reserved, "2026-10-31T23:00:00Z"),
        bind("l1", "2026-10-31T23:00:00Z", "4", "0", "0"),
        end("l1", "2026-11-01T01:00:00Z", EndReason::Expired),
    ];
    let oct = bill(facts.clone(), "acme", "2026-10");
    let nov = bill(facts, "acme", "2026-11");
    // 4 cores × 1 h × 0.04 = 0.16 on each side of midnight.
    assert_eq!(
        amounts(&oct),
        vec![(LineKind::Usage, Some(Resource::Cpu), 3600, "0.16".into())]
    );
    assert_eq!(
        amounts(&nov),
        vec![(LineKind::Usage, Some(Resource::Cpu), 3600, "0.16".into())]
    );
    assert_eq!(oct.lines[0].end, t("2026-11-01T00:00:00Z"));
    assert_eq!(nov.lines[0].start, t("2026-11-01T00:00:00Z"));
}

#[test]
fn minimum_charge_tops_up_a_lease_in_the_period_it_ends() {
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.minimum_charge_per_lease = Some(d("1.00"));
    let facts = vec![
        card_fact(c),
        // 2 cores × 0.5 h × 0.02 = 0.02 → top-up 0.98.
        admit("short", "acme", LeaseClass::Spot, "2026-11-05T00:00:00Z"),
        bind("short", "2026-11-05T00:00:00Z", "2", "0", "0"),
        end("short", "2026-11-05T00:30:00Z", EndReason::Cancelled),
        // 100 cores × 1 h × 0.02 = 2.00: above the minimum, no top-up.
        admit("big", "acme", LeaseClass::Spot, "2026-11-06T00:00:00Z"),
        bind("big", "2026-11-06T00:00:00Z", "100", "0", "0"),
        end("big", "2026-11-06T01:00:00Z", EndReason::Expired),
        // Across the boundary: 10 cores × 1 h × 0.02 = 0.20 in October, 0.20 in November;
        // top-up 1.00 − 0.40 = 0.60 in November, where it ends.
        admit("cross", "acme", LeaseClass::Spot, "2026-10-31T23:00:00Z"),
        bind("cross", "2026-10-31T23:00:00Z", "10", "0", "0"),
        end("cross", "2026-11-01T01:00:00Z", EndReason::Expired),
        // Still running: no top-up yet.
        admit("open", "acme", LeaseClass::Spot, "2026-11-30T23:00:00Z"),
        bind("open", "2026-11-30T23:00:00Z", "1", "0", "0"),
    ];
    let nov = bill(facts.clone(), "acme", "2026-11");
    let minimums: Vec<(String, String)> = nov
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::MinimumCharge)
        .map(|l| (l.lease.clone(), l.amount.amount.to_string()))
        .collect();
    assert_eq!(
        minimums,
        vec![
            ("cross".to_string(), "0.60".to_string()),
            ("short".into(), "0.98".into())
        ]
    );
    let oct = bill(facts, "acme", "2026-10");
    assert_eq!(
        amounts(&oct),
        vec![(LineKind::Usage, Some(Resource::Cpu), 3600, "0.20".into())]
    );
    assert_eq!(oct.total.amount, d("0.20"));
    assert_total_is_sum(&nov);
}

#[test]
fn spot_price_follows_utilisation_and_each_change_splits_the_line() {
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.spot_price_rule = Some(SpotPriceRule {
        base_utilisation: d("0.5"),
        sensitivity: d("2"),
        floor_multiplier: d("0.5"),
        ceiling_multiplier: d("3"),
    });
    let facts = vec![
        card_fact(c),
        admit("l1", "acme", LeaseClass::Spot, "2026-11-03T00:00:00Z"),
        bind("l1", "2026-11-03T00:00:00Z", "10", "0", "0"),
        // 0.5 → multiplier 1: same price as before any fact, so no split here.
        util("general", "2026-11-03T00:30:00Z", "0.5"),
        // 0.75 → 1.5 × 0.02 = 0.03.
        util("general", "2026-11-03T01:00:00Z", "0.75"),
        // 0.5 → back to 0.02.
        util("general", "2026-11-03T02:00:00Z", "0.5"),
        // Another pool's utilisation does not touch this lease.
        util("gpu", "2026-11-03T02:30:00Z", "1"),
        end("l1", "2026-11-03T03:00:00Z", EndReason::Expired),
    ];
    let b = bill(facts, "acme", "2026-11");
    let got: Vec<(i64, String, String)> = b
        .lines
        .iter()
        .map(|l| {
            (
                l.seconds,
                l.unit_price.unwrap().amount.to_string(),
                l.amount.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (3600, "0.02".into(), "0.20".into()),
            (3600, "0.03".into(), "0.30".into()),
            (3600, "0.02".into(), "0.20".into()),
        ]
    );
    assert_eq!(b.total.amount, d("0.70"));
}

#[test]
fn reserved_prices_ignore_utilisation() {
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.spot_price_rule = Some(SpotPriceRule {
        base_utilisation: d("0"),
        sensitivity: d("1"),
        floor_multiplier: d("1"),
        ceiling_multiplier: d("2"),
    });
    let facts = vec![
        card_fact(c),
        admit("l1", "acme", LeaseClass::Reserved, "2026-11-03T00:00:00Z"),
        bind("l1", "2026-11-03T00:00:00Z", "1", "0", "0"),
        util("general", "2026-11-03T00:30:00Z", "0.9"),
        end("l1", "2026-11-03T01:00:00Z", EndReason::Expired),
    ];
    assert_eq!(
        amounts(&bill(facts, "acme", "2026-11")),
        vec![(LineKind::Usage, Some(Resource::Cpu), 3600, "0.04".into())]
    );
}

fn reclaimed_reserved(rule: SlaCreditRule, reason: EndReason) -> Bill {
    reserved_ending_at(rule, reason, "2026-11-10T05:58:00Z", "2026-11-10T06:00:00Z")
}

/// Reserved lease `db`, 8 cores and 32 GiB from 00:00, planned to end at 10:00, given
/// notice at `notice_at` and ended at `end_at` for `reason`.
fn reserved_ending_at(
    rule: SlaCreditRule,
    reason: EndReason,
    notice_at: &str,
    end_at: &str,
) -> Bill {
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.sla_credit = Some(rule);
    let facts = vec![
        card_fact(c),
        admit_planned(
            "db",
            "acme",
            LeaseClass::Reserved,
            "2026-11-10T00:00:00Z",
            Some("2026-11-10T10:00:00Z"),
        ),
        bind("db", "2026-11-10T00:00:00Z", "8", "32", "0"),
        notice("db", notice_at, end_at),
        end("db", end_at, reason),
    ];
    bill(facts, "acme", "2026-11")
}

#[test]
fn sla_credit_percent_of_remaining_term_for_an_early_reclaim() {
    let b = reclaimed_reserved(
        SlaCreditRule::PercentOfRemainingTerm { percent: d("25") },
        EndReason::Reclaimed,
    );
    // Usage: cpu 8 × 6 h × 0.04 = 1.92; memory 32 × 6 × 0.004 = 0.768 → 0.77.
    // Credit: 4 h remaining × (8 × 0.04 + 32 × 0.004 = 0.448) = 1.792 × 25 % = 0.448 → −0.45.
    assert_eq!(
        amounts(&b),
        vec![
            (LineKind::Usage, Some(Resource::Cpu), 21600, "1.92".into()),
            (
                LineKind::Usage,
                Some(Resource::Memory),
                21600,
                "0.77".into()
            ),
            (LineKind::SlaCredit, None, 14400, "-0.45".into()),
        ]
    );
    assert_eq!(b.total.amount, d("2.24"));
}

#[test]
fn sla_credit_notice_seconds_free() {
    let b = reclaimed_reserved(SlaCreditRule::NoticeSecondsFree, EndReason::Reclaimed);
    // 120 s × 0.448 per hour = 0.01493 → −0.01.
    let credit = b
        .lines
        .iter()
        .find(|l| l.kind == LineKind::SlaCredit)
        .unwrap();
    assert_eq!((credit.seconds, credit.amount.amount), (120, d("-0.01")));
    assert_eq!(credit.start, t("2026-11-10T05:58:00Z"));
}

#[test]
fn no_sla_credit_unless_a_reserved_lease_is_reclaimed_early() {
    let usage_to_six = vec![
        (
            LineKind::Usage,
            Some(Resource::Cpu),
            21600,
            "1.92".to_string(),
        ),
        (
            LineKind::Usage,
            Some(Resource::Memory),
            21600,
            "0.77".into(),
        ),
    ];
    for rule in [
        SlaCreditRule::PercentOfRemainingTerm { percent: d("25") },
        SlaCreditRule::NoticeSecondsFree,
    ] {
        // Ended early for any reason but a reclaim: the usage and nothing else.
        for reason in [
            EndReason::Expired,
            EndReason::Cancelled,
            EndReason::PriceExceeded,
        ] {
            let b = reclaimed_reserved(rule.clone(), reason);
            assert_eq!(amounts(&b), usage_to_six, "{rule:?} {reason:?}");
            assert_eq!(b.total.to_string(), "2.69 USD");
        }
        // Reclaimed at its planned end (10:00) or after it: nothing was cut short.
        // 8 × 10 h × 0.04 = 3.20 and 32 × 10 × 0.004 = 1.28; to 11:00, 3.52 and 1.408.
        let at_planned_end = reserved_ending_at(
            rule.clone(),
            EndReason::Reclaimed,
            "2026-11-10T09:58:00Z",
            "2026-11-10T10:00:00Z",
        );
        assert_eq!(
            amounts(&at_planned_end),
            vec![
                (LineKind::Usage, Some(Resource::Cpu), 36000, "3.20".into()),
                (
                    LineKind::Usage,
                    Some(Resource::Memory),
                    36000,
                    "1.28".into()
                ),
            ],
            "{rule:?}"
        );
        let after_planned_end = reserved_ending_at(
            rule.clone(),
            EndReason::Reclaimed,
            "2026-11-10T10:58:00Z",
            "2026-11-10T11:00:00Z",
        );
        assert_eq!(
            amounts(&after_planned_end),
            vec![
                (LineKind::Usage, Some(Resource::Cpu), 39600, "3.52".into()),
                (
                    LineKind::Usage,
                    Some(Resource::Memory),
                    39600,
                    "1.41".into()
                ),
            ],
            "{rule:?}"
        );
    }
    // A spot lease reclaimed early earns nothing either: 8 cores × 6 h × 0.02 = 0.96.
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.sla_credit = Some(SlaCreditRule::PercentOfRemainingTerm { percent: d("25") });
    let facts = vec![
        card_fact(c),
        admit_planned(
            "s",
            "acme",
            LeaseClass::Spot,
            "2026-11-10T00:00:00Z",
            Some("2026-11-10T10:00:00Z"),
        ),
        bind("s", "2026-11-10T00:00:00Z", "8", "0", "0"),
        end("s", "2026-11-10T06:00:00Z", EndReason::Reclaimed),
    ];
    assert_eq!(
        amounts(&bill(facts, "acme", "2026-11")),
        vec![(LineKind::Usage, Some(Resource::Cpu), 21600, "0.96".into())]
    );
}

#[test]
fn rounding_happens_only_at_line_totals() {
    // Each lease: 1 core × 900 s × 0.02 / 3600 = 0.005 exactly → 0.01 per line,
    // so the total is 0.03, not round(0.015) = 0.02.
    let mut facts = vec![card_fact(card("1", "2026-01-01T00:00:00Z"))];
    for lease in ["a", "b", "c"] {
        facts.push(admit(
            lease,
            "acme",
            LeaseClass::Spot,
            "2026-11-01T00:00:00Z",
        ));
        facts.push(bind(lease, "2026-11-01T00:00:00Z", "1", "0", "0"));
        facts.push(end(lease, "2026-11-01T00:15:00Z", EndReason::Expired));
    }
    let b = bill(facts.clone(), "acme", "2026-11");
    let per_line = (
        LineKind::Usage,
        Some(Resource::Cpu),
        900,
        "0.01".to_string(),
    );
    assert_eq!(
        amounts(&b),
        vec![per_line.clone(), per_line.clone(), per_line]
    );
    assert_eq!(b.total.amount, d("0.03"));

    // A stated precision of 4 places keeps 0.0050 per line.
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.precision = Some(4);
    facts[0] = card_fact(c);
    let b = bill(facts, "acme", "2026-11");
    assert_eq!(b.total.amount.to_string(), "0.0150");
}

#[test]
fn currencies_round_to_their_own_minor_unit() {
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.currency = Currency::from_code("JPY", "test").unwrap();
    c.prices.spot.cpu = d("3");
    let facts = vec![
        card_fact(c),
        // 1 core × 1000 s × 3 / 3600 = 0.833 → 1 yen.
        admit("l1", "acme", LeaseClass::Spot, "2026-11-01T00:00:00Z"),
        bind("l1", "2026-11-01T00:00:00Z", "1", "0", "0"),
        end("l1", "2026-11-01T00:16:40Z", EndReason::Expired),
    ];
    let b = bill(facts, "acme", "2026-11");
    assert_eq!(b.total.to_string(), "1 JPY");
}

#[test]
fn capacity_changes_split_lines_and_zero_capacity_bills_nothing() {
    let facts = vec![
        card_fact(card("1", "2026-01-01T00:00:00Z")),
        admit("l1", "acme", LeaseClass::Spot, "2026-11-01T00:00:00Z"),
        bind("l1", "2026-11-01T00:00:00Z", "4", "0", "0"),
        bind("l1", "2026-11-01T01:00:00Z", "8", "0", "0"),
        bind("l1", "2026-11-01T02:00:00Z", "0", "0", "0"),
        bind("l1", "2026-11-01T03:00:00Z", "8", "0", "0"),
        end("l1", "2026-11-01T04:00:00Z", EndReason::Expired),
    ];
    let b = bill(facts, "acme", "2026-11");
    // 4 × 0.02 = 0.08; 8 × 0.02 = 0.16; released for an hour; 0.16 again.
    let got: Vec<(String, i64, String)> = b
        .lines
        .iter()
        .map(|l| {
            (
                l.quantity.to_string(),
                l.seconds,
                l.amount.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("4".into(), 3600, "0.08".into()),
            ("8".into(), 3600, "0.16".into()),
            ("8".into(), 3600, "0.16".into())
        ]
    );
}

#[test]
fn an_open_period_bills_up_to_as_of() {
    let facts = vec![
        card_fact(card("1", "2026-01-01T00:00:00Z")),
        admit("l1", "acme", LeaseClass::Spot, "2026-11-01T00:00:00Z"),
        bind("l1", "2026-11-01T00:00:00Z", "1", "0", "0"),
    ];
    let model = Model::compile(&FactSet::from_facts(facts).unwrap()).unwrap();
    let b = model
        .bill("acme", month("2026-11"), t("2026-11-02T00:00:00Z"), &[])
        .unwrap();
    assert_eq!((b.lines[0].seconds, b.total.amount), (86400, d("0.48")));
    let b = model
        .bill("acme", month("2026-11"), t("2027-05-01T00:00:00Z"), &[])
        .unwrap();
    assert_eq!(
        b.lines[0].seconds,
        30 * 86400,
        "as_of is clamped to the period end"
    );
}

#[test]
fn a_rate_card_gap_is_an_error_naming_lease_pool_and_second() {
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.effective_until = Some(t("2026-11-01T12:00:00Z"));
    let facts = vec![
        card_fact(c),
        admit("l1", "acme", LeaseClass::Spot, "2026-11-01T00:00:00Z"),
        bind("l1", "2026-11-01T00:00:00Z", "1", "0", "0"),
        end("l1", "2026-11-02T00:00:00Z", EndReason::Expired),
    ];
    let p = month("2026-11");
    let err = Model::compile(&FactSet::from_facts(facts).unwrap())
        .unwrap()
        .bill("acme", p, p.end, &[])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rate card gap: lease \"l1\" in pool \"general\" holds capacity at 2026-11-01 12:00:00 UTC but no rate card is in force then"
    );
}

#[test]
fn late_facts_for_a_finalized_period_become_corrections_on_the_next_bill() {
    let base = vec![
        card_fact(card("1", "2026-01-01T00:00:00Z")),
        admit("l1", "acme", LeaseClass::Spot, "2026-10-10T00:00:00Z"),
        bind("l1", "2026-10-10T00:00:00Z", "10", "0", "0"),
        end("l1", "2026-10-10T01:00:00Z", EndReason::Expired),
    ];
    let oct = month("2026-10");
    let nov = month("2026-11");
    let dec = month("2026-12");
    let model =
        |facts: &Vec<Fact>| Model::compile(&FactSet::from_facts(facts.clone()).unwrap()).unwrap();
    let mut oct_bill = model(&base).bill("acme", oct, oct.end, &[]).unwrap();
    oct_bill.state = BillState::Finalized;
    assert_eq!(oct_bill.total.amount, d("0.20"));

    // A lease of October reported late: 5 cores × 2 h × 0.02 = 0.20.
    let mut late = base.clone();
    late.push(admit(
        "l2",
        "acme",
        LeaseClass::Spot,
        "2026-10-20T00:00:00Z",
    ));
    late.push(bind("l2", "2026-10-20T00:00:00Z", "5", "0", "0"));
    late.push(end("l2", "2026-10-20T02:00:00Z", EndReason::Expired));
    let mut nov_bill = model(&late)
        .bill("acme", nov, nov.end, std::slice::from_ref(&oct_bill))
        .unwrap();
    assert_eq!(nov_bill.lines.len(), 1);
    let c = &nov_bill.lines[0];
    assert_eq!(
        (c.correction_of.as_deref(), c.lease.as_str(), c.seconds),
        (Some("2026-10"), "l2", 7200)
    );
    assert_eq!(c.amount.amount, d("0.20"));
    assert_eq!(nov_bill.total.amount, d("0.20"));
    nov_bill.state = BillState::Finalized;

    // December sees nothing new to correct...
    let finalized = vec![oct_bill.clone(), nov_bill.clone()];
    assert!(
        model(&late)
            .bill("acme", dec, dec.end, &finalized)
            .unwrap()
            .lines
            .is_empty()
    );
    // ...until another late fact: l1 really ended 30 minutes later (+0.10). The end
    // of a lease is recorded once, so this is a ledger with a different history.
    let mut later = late.clone();
    later[3] = end("l1", "2026-10-10T01:30:00Z", EndReason::Expired);
    let dec_bill = model(&later)
        .bill("acme", dec, dec.end, &finalized)
        .unwrap();
    let got: Vec<(Option<&str>, i64, String)> = dec_bill
        .lines
        .iter()
        .map(|l| {
            (
                l.correction_of.as_deref(),
                l.seconds,
                l.amount.amount.to_string(),
            )
        })
        .collect();
    // The old 1 h line is reversed and the new 1.5 h line is added.
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(
        got_sorted,
        vec![
            (Some("2026-10"), -3600, "-0.20".into()),
            (Some("2026-10"), 5400, "0.30".into())
        ]
    );
    assert_eq!(dec_bill.total.amount, d("0.10"));
}

#[test]
fn one_bill_one_currency() {
    let mut eur = card("eur", "2026-01-01T00:00:00Z");
    eur.name = "europe".into();
    eur.currency = Currency::from_code("EUR", "test").unwrap();
    eur.pools = vec!["eu".into()];
    let mut usd = card("1", "2026-01-01T00:00:00Z");
    usd.pools = vec!["general".into()];
    let mut facts = vec![
        card_fact(usd),
        card_fact(eur),
        admit("l1", "acme", LeaseClass::Spot, "2026-11-01T00:00:00Z"),
        bind("l1", "2026-11-01T00:00:00Z", "1", "0", "0"),
    ];
    let mut eu = admit("l2", "acme", LeaseClass::Spot, "2026-11-01T00:00:00Z");
    if let offpeak_billing::meter::FactBody::LeaseAdmitted(a) = &mut eu.body {
        a.pool = "eu".into();
    }
    facts.push(eu);
    facts.push(bind("l2", "2026-11-01T00:00:00Z", "1", "0", "0"));
    let p = month("2026-11");
    let err = Model::compile(&FactSet::from_facts(facts).unwrap())
        .unwrap()
        .bill("acme", p, p.end, &[])
        .unwrap_err();
    assert!(
        err.to_string().contains("rate cards in USD and EUR apply"),
        "{err}"
    );
}

#[test]
fn every_amount_has_exactly_the_precision_of_its_card() {
    // Whole-number prices make whole-number charges: they still print with cents.
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.prices.reserved.gpu = d("36");
    c.prices.reserved.cpu = d("1.8");
    let facts = vec![
        card_fact(c),
        admit("g", "acme", LeaseClass::Reserved, "2026-11-01T00:00:00Z"),
        bind("g", "2026-11-01T00:00:00Z", "2", "0", "6"),
        end("g", "2026-11-01T01:00:00Z", EndReason::Expired),
    ];
    let b = bill(facts.clone(), "acme", "2026-11");
    assert_eq!(
        amounts(&b),
        vec![
            (LineKind::Usage, Some(Resource::Cpu), 3600, "3.60".into()),
            (LineKind::Usage, Some(Resource::Gpu), 3600, "216.00".into()),
        ]
    );
    assert_eq!(b.total.to_string(), "219.60 USD");
    // JSON (and so the ledger's stored bodies) carries the same strings.
    let json = serde_json::to_value(&b).unwrap();
    assert_eq!(json["lines"][1]["amount"]["amount"], "216.00");
    assert_eq!(json["total"]["amount"], "219.60");

    // A bill with no line still shows its zero at the card's precision.
    let empty = bill(facts.clone(), "acme", "2026-12");
    assert!(empty.lines.is_empty());
    assert_eq!(empty.total.to_string(), "0.00 USD");

    // A stated precision is kept the same way: 216.0000.
    let mut four = card("1", "2026-01-01T00:00:00Z");
    four.prices.reserved.gpu = d("36");
    four.prices.reserved.cpu = d("1.8");
    four.precision = Some(4);
    let mut facts4 = facts;
    facts4[0] = card_fact(four);
    let b = bill(facts4, "acme", "2026-11");
    let got: Vec<String> = b
        .lines
        .iter()
        .map(|l| l.amount.amount.to_string())
        .collect();
    assert_eq!(got, ["3.6000", "216.0000"]);
    assert_eq!(b.total.to_string(), "219.6000 USD");
}

#[test]
fn seconds_before_the_first_binding_are_free_and_a_lease_that_never_held_capacity_pays_nothing() {
    // The card takes effect at 01:00: seconds before any binding need no price.
    let mut c = card("1", "2026-11-05T01:00:00Z");
    c.minimum_charge_per_lease = Some(d("1.00"));
    c.sla_credit = Some(SlaCreditRule::PercentOfRemainingTerm { percent: d("25") });
    let facts = vec![
        card_fact(c),
        // Admitted at 00:00, bound from 02:00 to 03:00: 10 cores × 1 h × 0.02 = 0.20,
        // topped up to the 1.00 minimum from its first bound second.
        admit("late", "acme", LeaseClass::Spot, "2026-11-05T00:00:00Z"),
        bind("late", "2026-11-05T02:00:00Z", "10", "0", "0"),
        end("late", "2026-11-05T03:00:00Z", EndReason::Expired),
        // Never bound: no usage, no minimum charge.
        admit("never", "acme", LeaseClass::Spot, "2026-11-05T00:00:00Z"),
        end("never", "2026-11-05T04:00:00Z", EndReason::Cancelled),
        // Bound to nothing at all: the same.
        admit("zero", "acme", LeaseClass::Spot, "2026-11-05T00:00:00Z"),
        bind("zero", "2026-11-05T00:00:00Z", "0", "0", "0"),
        end("zero", "2026-11-05T04:00:00Z", EndReason::Expired),
        // Bound on the second it ends: held nothing for a single second.
        admit("instant", "acme", LeaseClass::Spot, "2026-11-05T00:00:00Z"),
        bind("instant", "2026-11-05T04:00:00Z", "64", "0", "0"),
        end("instant", "2026-11-05T04:00:00Z", EndReason::Cancelled),
        // Reserved, never bound, reclaimed before its planned end: no SLA credit for
        // capacity it never had.
        admit_planned(
            "idle",
            "acme",
            LeaseClass::Reserved,
            "2026-11-05T00:00:00Z",
            Some("2026-11-06T00:00:00Z"),
        ),
        end("idle", "2026-11-05T05:00:00Z", EndReason::Reclaimed),
    ];
    let b = bill(facts, "acme", "2026-11");
    type Line<'a> = (&'a str, LineKind, Option<Resource>, String, i64, String);
    let got: Vec<Line> = b
        .lines
        .iter()
        .map(|l| {
            (
                l.lease.as_str(),
                l.kind,
                l.resource,
                l.start.format("%H:%M").to_string(),
                l.seconds,
                l.amount.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "late",
                LineKind::Usage,
                Some(Resource::Cpu),
                "02:00".into(),
                3600,
                "0.20".into()
            ),
            (
                "late",
                LineKind::MinimumCharge,
                None,
                "02:00".into(),
                3600,
                "0.80".into()
            ),
        ]
    );
    assert_eq!(b.total.to_string(), "1.00 USD");
}

#[test]
fn minimum_charge_tops_up_the_rounded_lines_not_the_exact_charges() {
    // 1 core × 720 s × 0.02 = 0.004 and 8 GiB × 720 s × 0.002 = 0.0032: two lines of
    // 0.00. The tenant was billed 0.00, so the top-up is the whole 1.00 (not 0.99,
    // which the exact 0.0072 would give).
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.minimum_charge_per_lease = Some(d("1.00"));
    let facts = vec![
        card_fact(c),
        admit("tiny", "acme", LeaseClass::Spot, "2026-11-05T00:00:00Z"),
        bind("tiny", "2026-11-05T00:00:00Z", "1", "8", "0"),
        end("tiny", "2026-11-05T00:12:00Z", EndReason::Cancelled),
    ];
    let b = bill(facts, "acme", "2026-11");
    assert_eq!(
        amounts(&b),
        vec![
            (LineKind::Usage, Some(Resource::Cpu), 720, "0.00".into()),
            (LineKind::Usage, Some(Resource::Memory), 720, "0.00".into()),
            (LineKind::MinimumCharge, None, 720, "1.00".into()),
        ]
    );
    assert_eq!(
        b.lines[2].note,
        "minimum charge 1.00 USD per lease; usage billed 0.00 USD (standard@1)"
    );
    assert_eq!(b.total.to_string(), "1.00 USD");
}
