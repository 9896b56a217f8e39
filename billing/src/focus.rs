//! FinOps FOCUS 1.2 export.
//!
//! One CSV row per bill line. Columns: the 21 mandatory FOCUS columns, every
//! conditional column whose condition Offpeak meets, three recommended ones, then
//! Offpeak's own `x_` columns. CSV has no null: a null is an empty field, and no
//! non-null value is ever empty.
//!
//! How Offpeak's lines map (FOCUS 1.2 column rules in brackets):
//! - Usage lines: `ChargeCategory` Usage, `ChargeFrequency` Usage-Based,
//!   `PricingUnit` Core-Hours / GiB-Hours / GPU-Hours, the unit the rate card
//!   publishes its prices in [PricingUnit: "semantically equal to the ... unit provided
//!   in provider-published price list"], `ListUnitPrice` = `ContractedUnitPrice` = the
//!   card's price per resource-hour, exactly as published. There are no discounts, so
//!   `ListCost` = `ContractedCost` = `EffectiveCost` = `BilledCost` = the line total, at
//!   the bill's precision. `PricingQuantity` is the quantity that line total buys at
//!   that price, `BilledCost / ListUnitPrice`: the resource-hours the line *rates*
//!   [PricingUnit: "how the provider rates measured usage ... after applying pricing
//!   rules"], so that `ListUnitPrice × PricingQuantity = ListCost` [ListCost: "The
//!   product of ListUnitPrice and PricingQuantity MUST match the ListCost"]. It differs
//!   from the resource-hours used (`ConsumedQuantity`, resource-seconds, exact, in
//!   Core-Seconds / GiB-Seconds / GPU-Seconds) by the line's rounding only: 128 cores
//!   for 4 h at 0.016 cost 8.192, billed 8.19, so the row rates 511.875 Core-Hours
//!   beside 1843200 Core-Seconds consumed.
//!
//!   Why not resource-hours used, and why not per-second units: a line is billed
//!   `quantity × seconds × price / 3600` rounded to the bill's precision, so with the
//!   consumed quantity as PricingQuantity the product misses the billed cost by that
//!   rounding (and by the rounding of the hours themselves: 1/3 h is no finite
//!   decimal), which made `ListCost` 1.599999984 beside `BilledCost` 1.60. Per-second
//!   units make the quantity exact but not the price: 0.02 per core-hour is
//!   0.0000055… per core-second, no finite decimal either, and the rate card does
//!   not publish it. The rated quantity keeps the published price and the billed
//!   cost exact, and is exact itself whenever `BilledCost / ListUnitPrice` is a finite
//!   decimal: always for prices whose digits are a power of 2 times a power of 5
//!   (0.02, 0.0025, 0.016, 0.005...). For other prices no finite decimal
//!   PricingQuantity at all has that product (1.60 at 36 per hour would need
//!   0.0444…), so PricingQuantity is the quotient rounded half away from zero to 12
//!   decimal places (1e-12 resource-hours: 3.6 ns of one core) and the product misses
//!   ListCost by at most `ListUnitPrice × 5e-13`; ListCost stays BilledCost. A zero price
//!   rates the consumed resource-hours (to 12 places), which cost nothing.
//!   `PricingCategory` is Dynamic for Spot (its price moves with utilisation) and
//!   Standard for Reserved.
//! - SLA credits: `ChargeCategory` Credit, negative cost; minimum-charge top-ups:
//!   `ChargeCategory` Adjustment. Neither has a pricing quantity or unit price, so
//!   their List/Contracted/Effective cost equal BilledCost [ListCost: "unrelated to
//!   other charges MUST match the BilledCost"], and SKU, pricing category and consumed
//!   columns are null.
//! - Corrections of a finalized period: `ChargeClass` Correction, the category of what
//!   they correct, `ChargePeriodStart/End` of the corrected charge (inside the earlier
//!   billing period) and the quantities and costs of the *change*, rated the same way.
//! - `SubAccountId`/`SubAccountName` are the tenant; `ResourceId` is the lease id,
//!   `ResourceType` "Capacity Lease". `InvoiceId` is `<tenant>/<period>` on the rows
//!   of a finalized bill and null on an open one, which is not on an invoice yet
//!   [InvoiceId: "MUST be null when the charge is not associated either with an
//!   invoice or with a pre-generated provisional invoice"].
//! - Every amount (`BilledCost`, `EffectiveCost`, `ListCost`, `ContractedCost`) has
//!   exactly the places of the bill's precision: `36.00`, never `36`.
//! - `Tags`: the lease's tenant tags unprefixed (one user tag scheme) plus provider tags
//!   prefixed `offpeak/` (pool, class); tenants cannot use that prefix.
//!
//! Columns left out, and why: BillingAccountType and SubAccountType (Offpeak has one
//! type of each), CapacityReservation* (a Reserved lease is billed for what it holds,
//! there is no unused-reservation charge), CommitmentDiscount* (no commitments),
//! PricingCurrency* (prices and bills share one currency), AvailabilityZone (not
//! known to the billing facts).

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::bill::{Bill, BillLine, BillState, LineKind};
use crate::period::Period;
use crate::rate::{LeaseClass, Resource};

/// The FOCUS version the export follows.
pub const FOCUS_VERSION: &str = "1.2";

/// Column ids, in output order: FOCUS columns alphabetically, then `x_` columns.
pub const COLUMNS: &[&str] = &[
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_LeaseClass",
    "x_Pool",
    "x_RateCard",
    "x_Seconds",
];

/// Who issues the bills; the defaults describe a self-hosted Offpeak.
#[derive(Clone, Debug)]
pub struct FocusOptions {
    /// `ProviderName`: who makes the capacity available.
    pub provider_name: String,
    /// `PublisherName`: who produces it.
    pub publisher_name: String,
    /// `InvoiceIssuerName`: who invoices.
    pub invoice_issuer_name: String,
    /// `BillingAccountId`: the account the tenants' sub accounts belong to.
    pub billing_account_id: String,
    /// `BillingAccountName`.
    pub billing_account_name: Option<String>,
    /// `SubAccountName` per tenant id; the id when absent.
    pub tenant_names: BTreeMap<String, String>,
}

impl Default for FocusOptions {
    fn default() -> Self {
        FocusOptions {
            provider_name: "Offpeak".into(),
            publisher_name: "Offpeak".into(),
            invoice_issuer_name: "Offpeak".into(),
            billing_account_id: "offpeak".into(),
            billing_account_name: Some("Offpeak".into()),
            tenant_names: BTreeMap::new(),
        }
    }
}

/// One FOCUS row, values aligned with [`COLUMNS`]; `None` is null.
#[derive(Clone, Debug, PartialEq)]
pub struct FocusRow(pub Vec<Option<String>>);

impl FocusRow {
    /// The value of `column` (`None` for null or an unknown column).
    pub fn get(&self, column: &str) -> Option<&str> {
        let i = COLUMNS.iter().position(|c| *c == column)?;
        self.0[i].as_deref()
    }
}

fn datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// FOCUS numeric format: plain decimal, no exponent, no `+`, no negative zero.
fn number(value: Decimal) -> String {
    let value = value.normalize();
    if value.is_zero() {
        "0".into()
    } else {
        value.to_string()
    }
}

/// Amounts keep their scale so that `12.50` stays `12.50`.
fn money(value: Decimal) -> String {
    if value.is_zero() {
        let mut zero = Decimal::ZERO;
        zero.rescale(value.scale());
        zero.to_string()
    } else {
        value.to_string()
    }
}

/// Places of a PricingQuantity that has no finite decimal value.
const PRICING_QUANTITY_PLACES: u32 = 12;

/// Whether `numerator / denominator` is a finite decimal: once the fraction of their
/// integer digits is reduced, its denominator has no prime factor but 2 and 5.
fn quotient_terminates(numerator: Decimal, denominator: Decimal) -> bool {
    // n / d = (n.mantissa × 10^d.scale) / (d.mantissa × 10^n.scale); the powers of ten
    // only add factors 2 and 5, so the mantissas decide.
    fn gcd(mut a: i128, mut b: i128) -> i128 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a.abs()
    }
    let n = numerator.mantissa();
    let d = denominator.mantissa();
    if d == 0 {
        return false;
    }
    let mut rest = (d / gcd(n, d).max(1)).abs();
    for p in [2, 5] {
        while rest % p == 0 {
            rest /= p;
        }
    }
    rest == 1
}

/// The resource-hours `billed` buys at `unit_price` (see the module docs): exact when
/// that is a finite decimal, else to [`PRICING_QUANTITY_PLACES`]; at a zero price, the
/// consumed resource-hours.
fn pricing_quantity(billed: Decimal, unit_price: Decimal, resource_seconds: Decimal) -> Decimal {
    let rounded = |v: Decimal| {
        v.round_dp_with_strategy(
            PRICING_QUANTITY_PLACES,
            RoundingStrategy::MidpointAwayFromZero,
        )
        .normalize()
    };
    if unit_price.is_zero() {
        return rounded(resource_seconds / Decimal::from(3600));
    }
    match billed.checked_div(unit_price) {
        Some(hours) if quotient_terminates(billed, unit_price) => hours.normalize(),
        Some(hours) => rounded(hours),
        None => rounded(resource_seconds / Decimal::from(3600)),
    }
}

fn sku_meter(resource: Resource) -> &'static str {
    match resource {
        Resource::Cpu => "CPU Usage",
        Resource::Memory => "Memory Usage",
        Resource::Gpu => "GPU Usage",
    }
}

fn class_name(class: LeaseClass) -> &'static str {
    match class {
        LeaseClass::Spot => "spot",
        LeaseClass::Reserved => "reserved",
    }
}

fn row(bill: &Bill, line: &BillLine, opts: &FocusOptions) -> FocusRow {
    let mut values: BTreeMap<&'static str, Option<String>> = BTreeMap::new();
    let mut set = |column: &'static str, value: Option<String>| {
        values.insert(column, value);
    };
    let billed = money(line.amount.amount);
    let correction = line.correction_of.is_some();
    set("BilledCost", Some(billed.clone()));
    set("EffectiveCost", Some(billed.clone()));
    set("BillingAccountId", Some(opts.billing_account_id.clone()));
    set("BillingAccountName", opts.billing_account_name.clone());
    set("BillingCurrency", Some(bill.currency.code().to_string()));
    set("BillingPeriodStart", Some(datetime(bill.period_start)));
    set("BillingPeriodEnd", Some(datetime(bill.period_end)));
    set(
        "ChargeCategory",
        Some(
            match line.kind {
                LineKind::Usage => "Usage",
                LineKind::SlaCredit => "Credit",
                LineKind::MinimumCharge => "Adjustment",
            }
            .into(),
        ),
    );
    set("ChargeClass", correction.then(|| "Correction".to_string()));
    set("ChargeDescription", Some(line.description()));
    set(
        "ChargeFrequency",
        Some(
            if line.kind == LineKind::Usage {
                "Usage-Based"
            } else {
                "One-Time"
            }
            .into(),
        ),
    );
    // A regular row's charge period lies inside its billing period; a correction keeps
    // the period of the charge it corrects.
    let (start, end) = if let Some(label) = &line.correction_of {
        // A credit's interval (the unserved term) may run past the corrected period.
        let corrected_end = Period::parse(bill.cycle, label).map_or(line.end, |p| p.end);
        (line.start, line.end.min(corrected_end))
    } else {
        (
            line.start.max(bill.period_start),
            line.end.min(bill.period_end),
        )
    };
    set("ChargePeriodStart", Some(datetime(start)));
    set("ChargePeriodEnd", Some(datetime(end)));
    set(
        "InvoiceId",
        (bill.state == BillState::Finalized).then(|| format!("{}/{}", bill.tenant, bill.period)),
    );
    set("InvoiceIssuerName", Some(opts.invoice_issuer_name.clone()));
    set("ProviderName", Some(opts.provider_name.clone()));
    set("PublisherName", Some(opts.publisher_name.clone()));
    set("RegionId", line.region.clone());
    set(
        "RegionName",
        line.region
            .as_ref()
            .map(|r| line.region_name.clone().unwrap_or_else(|| r.clone())),
    );
    set("ResourceId", Some(line.lease.clone()));
    set(
        "ResourceName",
        line.lease_name.clone().filter(|n| *n != line.lease),
    );
    set("ResourceType", Some("Capacity Lease".into()));
    set("ServiceCategory", Some("Compute".into()));
    set("ServiceName", Some("Offpeak Capacity Leases".into()));
    set("ServiceSubcategory", Some("Containers".into()));
    set("SubAccountId", Some(bill.tenant.clone()));
    set(
        "SubAccountName",
        Some(
            opts.tenant_names
                .get(&bill.tenant)
                .cloned()
                .unwrap_or_else(|| bill.tenant.clone()),
        ),
    );
    let mut tags = serde_json::Map::new();
    for (k, v) in &line.tags {
        tags.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    tags.insert("offpeak/pool".into(), line.pool.clone().into());
    tags.insert("offpeak/class".into(), line.class.to_string().into());
    set("Tags", Some(serde_json::Value::Object(tags).to_string()));
    set("x_LeaseClass", Some(line.class.to_string()));
    set("x_Pool", Some(line.pool.clone()));
    set("x_RateCard", Some(line.rate_card.clone()));
    set("x_Seconds", Some(line.seconds.to_string()));

    match (line.kind, line.resource, line.unit_price) {
        (LineKind::Usage, Some(resource), Some(price)) => {
            let resource_seconds = line.quantity * Decimal::from(line.seconds);
            let hours = pricing_quantity(line.amount.amount, price.amount, resource_seconds);
            set("PricingQuantity", Some(number(hours)));
            set("PricingUnit", Some(format!("{}-Hours", resource.unit())));
            set("ListUnitPrice", Some(number(price.amount)));
            set("ContractedUnitPrice", Some(number(price.amount)));
            set("ListCost", Some(billed.clone()));
            set("ContractedCost", Some(billed.clone()));
            set("ConsumedQuantity", Some(number(resource_seconds)));
            set("ConsumedUnit", Some(format!("{}-Seconds", resource.unit())));
            set(
                "PricingCategory",
                Some(
                    match line.class {
                        LeaseClass::Spot => "Dynamic",
                        LeaseClass::Reserved => "Standard",
                    }
                    .into(),
                ),
            );
            let card_name = line.rate_card.split('@').next().unwrap_or_default();
            set("SkuId", Some(format!("offpeak:{}", resource.name())));
            set("SkuMeter", Some(sku_meter(resource).into()));
            set(
                "SkuPriceId",
                Some(format!(
                    "offpeak:{}:{}:{card_name}",
                    resource.name(),
                    class_name(line.class)
                )),
            );
            set(
                "SkuPriceDetails",
                Some(
                    serde_json::json!({
                        "x_LeaseClass": line.class.to_string(),
                        "x_RateCard": card_name,
                        "x_Resource": resource.name(),
                    })
                    .to_string(),
                ),
            );
        }
        _ => {
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
                set(column, None);
            }
            set("ListCost", Some(billed.clone()));
            set("ContractedCost", Some(billed));
        }
    }
    FocusRow(COLUMNS.iter().map(|c| values.remove(c).flatten()).collect())
}

/// The FOCUS rows of a bill, one per line.
pub fn focus_rows(bill: &Bill, opts: &FocusOptions) -> Vec<FocusRow> {
    bill.lines
        .iter()
        .map(|line| row(bill, line, opts))
        .collect()
}

/// Writes bills as one FOCUS 1.2 CSV (header row, then every line of every bill).
pub fn write_focus_csv(
    bills: &[Bill],
    opts: &FocusOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(COLUMNS)?;
    for bill in bills {
        for r in focus_rows(bill, opts) {
            writer.write_record(r.0.iter().map(|v| v.as_deref().unwrap_or("")))?;
        }
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn a_quotient_terminates_when_only_twos_and_fives_are_left_below() {
        assert!(quotient_terminates(d("0.51"), d("0.016")));
        assert!(quotient_terminates(d("8.64"), d("0.045")));
        assert!(quotient_terminates(d("0.00"), d("0.002")));
        assert!(quotient_terminates(d("-0.54"), d("0.045")));
        assert!(!quotient_terminates(d("1.60"), d("36")));
        assert!(!quotient_terminates(d("0.01"), d("0.045")));
        assert!(!quotient_terminates(d("1"), d("0")));
    }

    #[test]
    fn pricing_quantity_is_what_the_billed_cost_buys() {
        let q = |b, p, rs| pricing_quantity(d(b), d(p), d(rs)).to_string();
        assert_eq!(q("8.19", "0.016", "1843200"), "511.875");
        assert_eq!(q("0.01", "0.016", "1200"), "0.625");
        assert_eq!(q("86.40", "1.8", "172800"), "48");
        assert_eq!(q("-0.54", "0.045", "-43200"), "-12");
        // No finite decimal times 36 makes 1.60: twelve places.
        assert_eq!(q("1.60", "36", "160"), "0.044444444444");
        assert_eq!(q("0.01", "0.045", "1000"), "0.222222222222");
        // A free resource rates what was used.
        assert_eq!(q("0.00", "0", "5400"), "1.5");
    }
}
