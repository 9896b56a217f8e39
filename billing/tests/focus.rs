//! The FOCUS 1.2 export, column by column.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::str::FromStr;

use offpeak_billing::bill::{Bill, BillState};
use offpeak_billing::cli::{FactsInput, read_input};
use offpeak_billing::focus::{COLUMNS, FocusOptions, FocusRow, focus_rows, write_focus_csv};
use offpeak_billing::meter::{EndReason, FactSet, Model};
use offpeak_billing::period::{BillingCycle, Period};
use offpeak_billing::rate::LeaseClass;
use rust_decimal::Decimal;
use support::*;

/// How a FOCUS column must be provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Mandatory,
    Recommended,
    Conditional,
}

/// Whether a FOCUS column allows nulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nulls {
    Nullable,
    NotNull,
}

use Level::*;
use Nulls::*;

/// Every column of FOCUS 1.2 with its feature level and "Allows nulls", as the
/// specification states them: one file per column under `specification/columns/`
/// at tag `v1.2` of github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec (Column ID,
/// and the Content Constraints table). Written from the specification, not from the
/// exporter, so that a misspelt, missing or invented column shows.
const FOCUS_1_2: [(&str, Level, Nulls); 57] = [
    ("AvailabilityZone", Recommended, Nullable),
    ("BilledCost", Mandatory, NotNull),
    ("BillingAccountId", Mandatory, NotNull),
    ("BillingAccountName", Mandatory, Nullable),
    ("BillingAccountType", Conditional, NotNull),
    ("BillingCurrency", Mandatory, NotNull),
    ("BillingPeriodEnd", Mandatory, NotNull),
    ("BillingPeriodStart", Mandatory, NotNull),
    ("CapacityReservationId", Conditional, Nullable),
    ("CapacityReservationStatus", Conditional, Nullable),
    ("ChargeCategory", Mandatory, NotNull),
    ("ChargeClass", Mandatory, Nullable),
    ("ChargeDescription", Mandatory, Nullable),
    ("ChargeFrequency", Recommended, NotNull),
    ("ChargePeriodEnd", Mandatory, NotNull),
    ("ChargePeriodStart", Mandatory, NotNull),
    ("CommitmentDiscountCategory", Conditional, Nullable),
    ("CommitmentDiscountId", Conditional, Nullable),
    ("CommitmentDiscountName", Conditional, Nullable),
    ("CommitmentDiscountQuantity", Conditional, Nullable),
    ("CommitmentDiscountStatus", Conditional, Nullable),
    ("CommitmentDiscountType", Conditional, Nullable),
    ("CommitmentDiscountUnit", Conditional, Nullable),
    ("ConsumedQuantity", Conditional, Nullable),
    ("ConsumedUnit", Conditional, Nullable),
    ("ContractedCost", Mandatory, NotNull),
    ("ContractedUnitPrice", Conditional, Nullable),
    ("EffectiveCost", Mandatory, NotNull),
    ("InvoiceId", Recommended, Nullable),
    ("InvoiceIssuerName", Mandatory, NotNull),
    ("ListCost", Mandatory, NotNull),
    ("ListUnitPrice", Conditional, Nullable),
    ("PricingCategory", Conditional, Nullable),
    ("PricingCurrency", Conditional, Nullable),
    ("PricingCurrencyContractedUnitPrice", Conditional, Nullable),
    ("PricingCurrencyEffectiveCost", Conditional, Nullable),
    ("PricingCurrencyListUnitPrice", Conditional, Nullable),
    ("PricingQuantity", Mandatory, Nullable),
    ("PricingUnit", Mandatory, Nullable),
    ("ProviderName", Mandatory, NotNull),
    ("PublisherName", Mandatory, NotNull),
    ("RegionId", Conditional, Nullable),
    ("RegionName", Conditional, Nullable),
    ("ResourceId", Conditional, Nullable),
    ("ResourceName", Conditional, Nullable),
    ("ResourceType", Conditional, Nullable),
    ("ServiceCategory", Mandatory, NotNull),
    ("ServiceName", Mandatory, NotNull),
    ("ServiceSubcategory", Recommended, NotNull),
    ("SkuId", Conditional, Nullable),
    ("SkuMeter", Conditional, Nullable),
    ("SkuPriceDetails", Conditional, Nullable),
    ("SkuPriceId", Conditional, Nullable),
    ("SubAccountId", Conditional, Nullable),
    ("SubAccountName", Conditional, Nullable),
    ("SubAccountType", Conditional, Nullable),
    ("Tags", Conditional, Nullable),
];

/// The FOCUS 1.2 columns Offpeak leaves out, each for a reason given in src/focus.rs.
const LEFT_OUT: [&str; 16] = [
    "AvailabilityZone",
    "BillingAccountType",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "SubAccountType",
];

/// The README example for November (acme's bill finalized, globex's open), plus
/// acme's open December with a correction of November (a late lease).
fn bills() -> Vec<Bill> {
    let mut facts = read_input(&FactsInput {
        facts: "testdata/facts.jsonl".into(),
        rate_cards: vec!["testdata/rate-cards.yaml".into()],
    })
    .unwrap();
    let nov = Period::parse(BillingCycle::Monthly, "2026-11").unwrap();
    let model = Model::compile(&FactSet::from_facts(facts.clone()).unwrap()).unwrap();
    let mut bills = model.bills(nov, nov.end).unwrap();
    assert_eq!(bills[0].tenant, "acme");
    bills[0].state = BillState::Finalized;
    let finalized = bills[0].clone();
    facts.push(admit(
        "acme/late",
        "acme",
        LeaseClass::Reserved,
        "2026-11-25T00:00:00Z",
    ));
    facts.push(bind("acme/late", "2026-11-25T00:00:00Z", "4", "16", "0"));
    facts.push(end("acme/late", "2026-11-25T03:00:00Z", EndReason::Expired));
    let model = Model::compile(&FactSet::from_facts(facts).unwrap()).unwrap();
    let dec = nov.next();
    bills.push(model.bill("acme", dec, dec.end, &[finalized]).unwrap());
    bills
}

fn rows() -> Vec<(Bill, FocusRow)> {
    bills()
        .into_iter()
        .flat_map(|b| {
            focus_rows(&b, &FocusOptions::default())
                .into_iter()
                .map(move |r| (b.clone(), r))
        })
        .collect()
}

fn dec(v: &str) -> Decimal {
    assert!(
        !v.contains(['+', 'e', 'E', ',', ' ']),
        "numeric format: {v:?}"
    );
    Decimal::from_str(v).unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

fn is_datetime(v: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%SZ").is_ok() && v.len() == 20
}

#[test]
fn the_csv_header_is_the_focus_1_2_columns_offpeak_meets_then_its_own() {
    let mut out = Vec::new();
    write_focus_csv(&[], &FocusOptions::default(), &mut out).unwrap();
    let header: Vec<String> = csv::Reader::from_reader(out.as_slice())
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let first_custom = header.iter().position(|c| c.starts_with("x_")).unwrap();
    let (focus, custom) = header.split_at(first_custom);
    assert_eq!(
        custom,
        ["x_LeaseClass", "x_Pool", "x_RateCard", "x_Seconds"]
    );
    // FOCUS columns, alphabetically, each one the specification defines.
    let mut sorted = focus.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted, focus,
        "FOCUS columns in alphabetical order, once each"
    );
    for column in focus {
        assert!(
            FOCUS_1_2.iter().any(|(id, _, _)| id == column),
            "{column} is not a FOCUS 1.2 column"
        );
    }
    // Every mandatory column, and of the rest exactly the documented ones left out.
    let left_out: Vec<&str> = FOCUS_1_2
        .iter()
        .map(|(id, _, _)| *id)
        .filter(|id| !focus.iter().any(|c| c == id))
        .collect();
    assert_eq!(left_out, LEFT_OUT);
    assert!(
        FOCUS_1_2
            .iter()
            .filter(|(_, level, _)| *level == Mandatory)
            .all(|(id, _, _)| !LEFT_OUT.contains(id))
    );
    assert_eq!(
        FOCUS_1_2
            .iter()
            .filter(|(_, level, _)| *level == Mandatory)
            .count(),
        21
    );
    assert_eq!(focus.len(), 41);
}

#[test]
fn the_example_has_every_kind_of_row() {
    let kinds: Vec<(String, Option<String>)> = rows()
        .iter()
        .map(|(_, r)| {
            (
                r.get("ChargeCategory").unwrap().to_string(),
                r.get("ChargeClass").map(str::to_string),
            )
        })
        .collect();
    for expected in [
        ("Usage", None),
        ("Credit", None),
        ("Adjustment", None),
        ("Usage", Some("Correction")),
    ] {
        assert!(
            kinds.contains(&(expected.0.to_string(), expected.1.map(str::to_string))),
            "{expected:?} missing"
        );
    }
}

#[test]
fn non_nullable_columns_are_never_null_or_empty() {
    // The specification's "Allows nulls: False" columns, and ChargeDescription, which
    // Offpeak always fills.
    let not_null: Vec<&str> = FOCUS_1_2
        .iter()
        .filter(|(id, _, nulls)| *nulls == NotNull && !LEFT_OUT.contains(id))
        .map(|(id, _, _)| *id)
        .chain(["ChargeDescription"])
        .collect();
    assert_eq!(not_null.len(), 19);
    for (_, row) in rows() {
        for column in &not_null {
            let v = row
                .get(column)
                .unwrap_or_else(|| panic!("{column} is null"));
            assert!(!v.trim().is_empty(), "{column} is empty");
        }
        for v in row.0.iter().flatten() {
            assert!(!v.trim().is_empty(), "an empty string stands for null");
        }
    }
}

#[test]
fn dates_are_utc_iso8601_and_charge_periods_sit_in_billing_periods() {
    for (bill, row) in rows() {
        for column in [
            "BillingPeriodStart",
            "BillingPeriodEnd",
            "ChargePeriodStart",
            "ChargePeriodEnd",
        ] {
            assert!(
                is_datetime(row.get(column).unwrap()),
                "{column}: {:?}",
                row.get(column)
            );
        }
        assert_eq!(
            row.get("BillingPeriodStart").unwrap(),
            bill.period_start.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
        let (start, end) = (
            row.get("ChargePeriodStart").unwrap(),
            row.get("ChargePeriodEnd").unwrap(),
        );
        assert!(start < end, "{start} < {end}");
        if row.get("ChargeClass").is_none() {
            assert!(
                start >= row.get("BillingPeriodStart").unwrap()
                    && end <= row.get("BillingPeriodEnd").unwrap()
            );
        } else {
            // A correction points at the charge it corrects, in an earlier period.
            assert!(end <= row.get("BillingPeriodStart").unwrap());
        }
    }
}

#[test]
fn categories_classes_and_frequencies_use_allowed_values() {
    for (_, row) in rows() {
        let category = row.get("ChargeCategory").unwrap();
        assert!(["Usage", "Purchase", "Tax", "Credit", "Adjustment"].contains(&category));
        assert!(matches!(row.get("ChargeClass"), None | Some("Correction")));
        let frequency = row.get("ChargeFrequency").unwrap();
        assert!(["One-Time", "Recurring", "Usage-Based"].contains(&frequency));
        assert_eq!(frequency == "Usage-Based", category == "Usage");
        assert_eq!(row.get("ServiceCategory"), Some("Compute"));
        assert_eq!(row.get("ServiceSubcategory"), Some("Containers"));
        if let Some(p) = row.get("PricingCategory") {
            assert!(["Standard", "Dynamic", "Committed", "Other"].contains(&p));
            let expected = if row.get("x_LeaseClass") == Some("Spot") {
                "Dynamic"
            } else {
                "Standard"
            };
            assert_eq!(p, expected);
        }
        assert_eq!(row.get("BillingCurrency"), Some("USD"));
    }
}

#[test]
fn usage_rows_carry_prices_quantities_and_skus_that_multiply_out() {
    let mut checked = 0;
    for (_, row) in rows() {
        if row.get("ChargeCategory") != Some("Usage") {
            continue;
        }
        for column in [
            "PricingQuantity",
            "PricingUnit",
            "ListUnitPrice",
            "ContractedUnitPrice",
            "PricingCategory",
            "SkuId",
            "SkuPriceId",
            "SkuMeter",
            "SkuPriceDetails",
            "ConsumedQuantity",
            "ConsumedUnit",
        ] {
            assert!(row.get(column).is_some(), "{column} null on a usage row");
        }
        // No discounts: the four costs are the billed amount, to the character.
        let billed = row.get("BilledCost").unwrap();
        for column in ["ListCost", "ContractedCost", "EffectiveCost"] {
            assert_eq!(row.get(column), Some(billed), "{column}");
        }
        let quantity = dec(row.get("PricingQuantity").unwrap());
        let list_price = dec(row.get("ListUnitPrice").unwrap());
        assert_eq!(row.get("ContractedUnitPrice"), row.get("ListUnitPrice"));
        assert!(list_price >= Decimal::ZERO);
        // Every price of the example leaves an exact quotient, corrections included.
        assert_eq!(
            list_price * quantity,
            dec(billed),
            "ListUnitPrice × PricingQuantity = ListCost = BilledCost"
        );
        // What the row rates is what it consumed, but for the line's rounding: within
        // half a cent's worth of it.
        let consumed_hours = dec(row.get("ConsumedQuantity").unwrap()) / Decimal::from(3600);
        assert!(
            (list_price * consumed_hours - dec(billed)).abs() <= d("0.005"),
            "{row:?}"
        );
        let unit = row.get("PricingUnit").unwrap();
        assert!(
            ["Core-Hours", "GiB-Hours", "GPU-Hours"].contains(&unit),
            "{unit}"
        );
        let consumed_unit = row.get("ConsumedUnit").unwrap();
        assert_eq!(consumed_unit.replace("-Seconds", "-Hours"), unit);
        let details: serde_json::Value =
            serde_json::from_str(row.get("SkuPriceDetails").unwrap()).unwrap();
        assert!(
            details
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k.starts_with("x_"))
        );
        assert!(
            row.get("SkuPriceId")
                .unwrap()
                .starts_with(row.get("SkuId").unwrap())
        );
        checked += 1;
    }
    assert_eq!(checked, 19);
}

/// The columns finance reconciles, per row: resource, BilledCost, ListCost,
/// ContractedCost, EffectiveCost, ListUnitPrice, PricingQuantity, PricingUnit,
/// ConsumedQuantity, InvoiceId ("-" for null).
fn money_columns(rows: &[FocusRow]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            [
                "ResourceId",
                "SkuMeter",
                "ChargeClass",
                "BilledCost",
                "ListCost",
                "ContractedCost",
                "EffectiveCost",
                "ListUnitPrice",
                "PricingQuantity",
                "PricingUnit",
                "ConsumedQuantity",
                "InvoiceId",
            ]
            .iter()
            .map(|c| r.get(c).unwrap_or("-"))
            .collect::<Vec<_>>()
            .join(" ")
        })
        .collect()
}

#[test]
fn amounts_quantities_and_prices_of_the_example_as_finance_reads_them() {
    let bills = bills();
    let rows = |i: usize| focus_rows(&bills[i], &FocusOptions::default());
    // globex, open: 86.40 (not 86.4) is 48 GPU-hours at 1.8.
    assert_eq!(
        money_columns(&rows(1)),
        [
            "globex/train CPU Usage - 15.36 15.36 15.36 15.36 0.04 384 Core-Hours 1382400 -",
            "globex/train Memory Usage - 15.36 15.36 15.36 15.36 0.005 3072 GiB-Hours 11059200 -",
            "globex/train GPU Usage - 86.40 86.40 86.40 86.40 1.8 48 GPU-Hours 172800 -",
        ]
    );
    let acme = money_columns(&rows(0));
    // 8 cores × 4 h at 0.016 = 0.512, billed 0.51: 31.875 Core-Hours' worth.
    assert_eq!(
        acme[0],
        "acme/batch CPU Usage - 0.51 0.51 0.51 0.51 0.016 31.875 Core-Hours 115200 acme/2026-11"
    );
    // The probe's ten minutes: 0.00533… billed 0.01, and 0.00133… billed 0.00.
    assert_eq!(
        acme[6..8],
        [
            "acme/probe CPU Usage - 0.01 0.01 0.01 0.01 0.016 0.625 Core-Hours 1200 acme/2026-11",
            "acme/probe Memory Usage - 0.00 0.00 0.00 0.00 0.002 0 GiB-Hours 2400 acme/2026-11",
        ]
    );
    // 128 cores × 4 h at 0.016 = 8.192, billed 8.19.
    assert_eq!(
        acme[11],
        "acme/render CPU Usage - 8.19 8.19 8.19 8.19 0.016 511.875 Core-Hours 1843200 acme/2026-11"
    );
    // The SLA credit and the minimum charge: amounts only.
    assert_eq!(
        acme[5],
        "acme/db - - -3.12 -3.12 -3.12 -3.12 - - - - acme/2026-11"
    );
    assert_eq!(
        acme[8],
        "acme/probe - - 0.49 0.49 0.49 0.49 - - - - acme/2026-11"
    );
    // December bills acme/batch on (8 cores × 744 h at 0.016 = 95.232) and corrects
    // November with the late lease: 4 cores × 3 h at 0.045 = 0.54 and 16 GiB × 3 h at
    // 0.005 = 0.24; it is still open.
    assert_eq!(
        money_columns(&rows(2)),
        [
            "acme/batch CPU Usage - 95.23 95.23 95.23 95.23 0.016 5951.875 Core-Hours 21427200 -",
            "acme/late CPU Usage Correction 0.54 0.54 0.54 0.54 0.045 12 Core-Hours 43200 -",
            "acme/late Memory Usage Correction 0.24 0.24 0.24 0.24 0.005 48 GiB-Hours 172800 -",
        ]
    );
}

#[test]
fn whole_prices_bill_cents_and_rate_exactly_what_the_line_costs() {
    // A GPU at 36 per hour: 36.00 and 216.00, never 36 or 216; and a late 160-second
    // lease, corrected in the next bill, whose 1.60 needs a PricingQuantity of 0.0444…
    // hours: no finite decimal, so twelve places. ListCost is BilledCost all the same.
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.prices.reserved.gpu = d("36");
    let mut facts = vec![
        card_fact(c),
        admit("one", "acme", LeaseClass::Reserved, "2026-11-02T00:00:00Z"),
        bind("one", "2026-11-02T00:00:00Z", "0", "0", "1"),
        end("one", "2026-11-02T01:00:00Z", EndReason::Expired),
        admit("six", "acme", LeaseClass::Reserved, "2026-11-03T00:00:00Z"),
        bind("six", "2026-11-03T00:00:00Z", "0", "0", "6"),
        end("six", "2026-11-03T01:00:00Z", EndReason::Expired),
    ];
    let nov = Period::parse(BillingCycle::Monthly, "2026-11").unwrap();
    let model = Model::compile(&FactSet::from_facts(facts.clone()).unwrap()).unwrap();
    let mut finalized = model.bill("acme", nov, nov.end, &[]).unwrap();
    finalized.state = BillState::Finalized;
    assert_eq!(
        money_columns(&focus_rows(&finalized, &FocusOptions::default())),
        [
            "one GPU Usage - 36.00 36.00 36.00 36.00 36 1 GPU-Hours 3600 acme/2026-11",
            "six GPU Usage - 216.00 216.00 216.00 216.00 36 6 GPU-Hours 21600 acme/2026-11",
        ]
    );
    facts.push(admit(
        "short",
        "acme",
        LeaseClass::Reserved,
        "2026-11-04T00:00:00Z",
    ));
    facts.push(bind("short", "2026-11-04T00:00:00Z", "0", "0", "1"));
    facts.push(end("short", "2026-11-04T00:02:40Z", EndReason::Cancelled));
    let model = Model::compile(&FactSet::from_facts(facts).unwrap()).unwrap();
    let dec_period = nov.next();
    let december = model
        .bill("acme", dec_period, dec_period.end, &[finalized])
        .unwrap();
    assert_eq!(
        money_columns(&focus_rows(&december, &FocusOptions::default())),
        ["short GPU Usage Correction 1.60 1.60 1.60 1.60 36 0.044444444444 GPU-Hours 160 -"]
    );
    let mut out = Vec::new();
    write_focus_csv(&[december], &FocusOptions::default(), &mut out).unwrap();
    let csv = String::from_utf8(out).unwrap();
    let row = csv.lines().nth(1).unwrap();
    assert!(row.starts_with("1.60,offpeak,Offpeak,USD,"), "{row}");
}

#[test]
fn credits_and_adjustments_cost_what_they_bill() {
    let mut seen = BTreeMap::new();
    for (_, row) in rows() {
        let category = row.get("ChargeCategory").unwrap();
        if category == "Usage" {
            continue;
        }
        *seen.entry(category.to_string()).or_insert(0) += 1;
        for column in ["ListCost", "ContractedCost", "EffectiveCost"] {
            assert_eq!(row.get(column), row.get("BilledCost"), "{column}");
        }
        for column in [
            "PricingQuantity",
            "PricingUnit",
            "ListUnitPrice",
            "ContractedUnitPrice",
            "ConsumedQuantity",
            "ConsumedUnit",
            "PricingCategory",
            "SkuId",
            "SkuMeter",
            "SkuPriceId",
            "SkuPriceDetails",
        ] {
            assert_eq!(row.get(column), None, "{column} on a {category} row");
        }
        let billed = dec(row.get("BilledCost").unwrap());
        match category {
            "Credit" => assert!(billed < Decimal::ZERO),
            "Adjustment" => assert!(billed > Decimal::ZERO),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn resources_accounts_regions_and_tags() {
    for (bill, row) in rows() {
        assert_eq!(row.get("SubAccountId"), Some(bill.tenant.as_str()));
        assert!(row.get("SubAccountName").is_some());
        let resource_id = row.get("ResourceId").unwrap();
        assert_eq!(row.get("ResourceType"), Some("Capacity Lease"));
        assert_ne!(row.get("ResourceName"), Some(resource_id));
        if resource_id == "acme/render" {
            assert_eq!(row.get("ResourceName"), Some("nightly-render"));
            assert_eq!(row.get("RegionId"), Some("eu-central-1"));
            assert_eq!(row.get("RegionName"), Some("Frankfurt"));
        }
        assert_eq!(
            row.get("RegionId").is_none(),
            row.get("RegionName").is_none()
        );
        let tags: serde_json::Value = serde_json::from_str(row.get("Tags").unwrap()).unwrap();
        let tags = tags.as_object().unwrap();
        assert!(tags.values().all(|v| !v.is_object() && !v.is_array()));
        assert!(tags.contains_key("offpeak/pool") && tags.contains_key("offpeak/class"));
        if resource_id == "acme/render" {
            assert_eq!(tags["team"], "graphics");
        }
        // Only a finalized bill is an invoice; an open one's rows have no InvoiceId.
        let invoice = format!("{}/{}", bill.tenant, bill.period);
        match bill.state {
            BillState::Finalized => assert_eq!(row.get("InvoiceId"), Some(invoice.as_str())),
            BillState::Open => assert_eq!(row.get("InvoiceId"), None, "{invoice}"),
        }
    }
}

#[test]
fn invoice_ids_only_on_finalized_bills() {
    let ids: Vec<(String, String, Option<String>)> = rows()
        .iter()
        .map(|(b, r)| {
            (
                b.tenant.clone(),
                b.period.clone(),
                r.get("InvoiceId").map(str::to_string),
            )
        })
        .collect();
    let expected: Vec<(String, String, Option<String>)> = [
        ("acme", "2026-11", Some("acme/2026-11"), 15),
        ("globex", "2026-11", None, 3),
        ("acme", "2026-12", None, 3),
    ]
    .into_iter()
    .flat_map(|(tenant, period, id, n)| {
        std::iter::repeat_n(
            (
                tenant.to_string(),
                period.to_string(),
                id.map(str::to_string),
            ),
            n,
        )
    })
    .collect();
    assert_eq!(ids, expected);
    // In the CSV a null is an empty field.
    let mut out = Vec::new();
    write_focus_csv(&bills()[1..2], &FocusOptions::default(), &mut out).unwrap();
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let at = reader
        .headers()
        .unwrap()
        .iter()
        .position(|c| c == "InvoiceId")
        .unwrap();
    let fields: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[at].to_string())
        .collect();
    assert_eq!(fields, ["", "", ""]);
}

#[test]
fn billed_cost_per_invoice_matches_the_bill_total() {
    for bill in bills() {
        let sum: Decimal = focus_rows(&bill, &FocusOptions::default())
            .iter()
            .map(|r| dec(r.get("BilledCost").unwrap()))
            .sum();
        assert_eq!(sum, bill.total.amount, "{} {}", bill.tenant, bill.period);
    }
}

#[test]
fn csv_has_the_header_and_empty_fields_only_for_nulls() {
    let bills = bills();
    let mut out = Vec::new();
    write_focus_csv(&bills, &FocusOptions::default(), &mut out).unwrap();
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, COLUMNS);
    let expected: Vec<FocusRow> = bills
        .iter()
        .flat_map(|b| focus_rows(b, &FocusOptions::default()))
        .collect();
    let got: Vec<FocusRow> = reader
        .records()
        .map(|r| {
            FocusRow(
                r.unwrap()
                    .iter()
                    .map(|v| (!v.is_empty()).then(|| v.to_string()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Over generated histories: every usage row's four costs are its billed amount
    /// at two places, and ListUnitPrice × PricingQuantity is that amount exactly when
    /// any finite decimal quantity can make it so (decided here with exact fractions),
    /// else within `ListUnitPrice × 5e-13` with a quantity of twelve places.
    #[test]
    fn every_usage_row_rates_what_it_bills(s in support::scenarios::scenario()) {
        use support::oracle::Frac;
        let model = Model::compile(&FactSet::from_facts(s.facts()).unwrap()).unwrap();
        for label in ["2026-10", "2026-11", "2026-12"] {
            let period = Period::parse(BillingCycle::Monthly, label).unwrap();
            for bill in model.bills(period, period.end).unwrap() {
                for row in focus_rows(&bill, &FocusOptions::default()) {
                    let billed = row.get("BilledCost").unwrap();
                    let places = billed.split_once('.').map(|(_, f)| f.len());
                    proptest::prop_assert_eq!(places, Some(2), "{}", billed);
                    for column in ["ListCost", "ContractedCost", "EffectiveCost"] {
                        proptest::prop_assert_eq!(row.get(column), Some(billed), "{}", column);
                    }
                    if row.get("ChargeCategory") != Some("Usage") {
                        continue;
                    }
                    let (b, l) = (dec(billed), dec(row.get("ListUnitPrice").unwrap()));
                    let q = dec(row.get("PricingQuantity").unwrap());
                    let exact = Frac::dec(b).div(Frac::dec(l));
                    if l.is_zero() {
                        proptest::prop_assert!(b.is_zero());
                    } else if exact.is_finite_decimal() {
                        proptest::prop_assert_eq!(Frac::dec(q), exact, "{:?}", row);
                        proptest::prop_assert_eq!(l * q, b);
                    } else {
                        proptest::prop_assert!(q.scale() <= 12, "{:?}", row);
                        let miss = Frac::dec(l).mul(Frac::dec(q)).sub(Frac::dec(b)).abs();
                        let bound = Frac::dec(l).mul(Frac::new(5, 10_000_000_000_000));
                        proptest::prop_assert!(!bound.lt(miss), "{:?}", row);
                    }
                }
            }
        }
    }
}

#[test]
fn a_correction_keeps_its_charge_period_inside_the_period_it_corrects() {
    // A Reserved lease of October, reported late, reclaimed on 31 October at 12:00 with
    // its term planned to 2 November: its credit covers the unserved 36 hours, but as
    // a correction of October its charge period ends with October.
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.sla_credit =
        Some(offpeak_billing::rate::SlaCreditRule::PercentOfRemainingTerm { percent: d("25") });
    let mut facts = vec![card_fact(c)];
    let oct = Period::parse(BillingCycle::Monthly, "2026-10").unwrap();
    let model = Model::compile(&FactSet::from_facts(facts.clone()).unwrap()).unwrap();
    let mut october = model.bill("acme", oct, oct.end, &[]).unwrap();
    october.state = BillState::Finalized;
    facts.push(admit_planned(
        "db",
        "acme",
        LeaseClass::Reserved,
        "2026-10-31T00:00:00Z",
        Some("2026-11-02T00:00:00Z"),
    ));
    facts.push(bind("db", "2026-10-31T00:00:00Z", "10", "0", "0"));
    facts.push(end("db", "2026-10-31T12:00:00Z", EndReason::Reclaimed));
    let model = Model::compile(&FactSet::from_facts(facts).unwrap()).unwrap();
    let nov = oct.next();
    let november = model.bill("acme", nov, nov.end, &[october]).unwrap();
    let got: Vec<String> = focus_rows(&november, &FocusOptions::default())
        .iter()
        .map(|r| {
            [
                "ChargeCategory",
                "ChargeClass",
                "ChargePeriodStart",
                "ChargePeriodEnd",
                "BilledCost",
            ]
            .iter()
            .map(|c| r.get(c).unwrap_or("-"))
            .collect::<Vec<_>>()
            .join(" ")
        })
        .collect();
    // 10 cores × 12 h × 0.04 = 4.80; credit 25 % × 36 h × 10 × 0.04 = 3.60.
    assert_eq!(
        got,
        [
            "Usage Correction 2026-10-31T00:00:00Z 2026-10-31T12:00:00Z 4.80",
            "Credit Correction 2026-10-31T12:00:00Z 2026-11-01T00:00:00Z -3.60",
        ]
    );
    assert_eq!(november.lines[1].end, t("2026-11-02T00:00:00Z"));
}
