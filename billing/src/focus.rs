//! FinOps FOCUS 1.2 export.
//!
//! One CSV row per bill line. Columns: the 21 mandatory FOCUS columns, every
//! conditional column whose condition Offpeak meets, three recommended ones, then
//! Offpeak's own `x_` columns. CSV has no null: a null is an empty field, and no
//! non-null value is ever empty.
//!
//! How Offpeak's lines map (FOCUS 1.2 column rules in brackets):
//! - Usage lines: `ChargeCategory` Usage, `ChargeFrequency` Usage-Based,
//!   `PricingUnit` Core-Hours / GiB-Hours / GPU-Hours (the rate card's unit),
//!   `PricingQuantity` resource-hours = quantity × seconds / 3600 rounded to 9
//!   decimal places (1e-9 h = 3.6 µs, finer than a billed second),
//!   `ListUnitPrice` = `ContractedUnitPrice` = the card's price per resource-hour,
//!   `ListCost` = `ContractedCost` = unit price × PricingQuantity exactly [ListCost,
//!   ContractedCost: "product of unit price and PricingQuantity MUST match"],
//!   `BilledCost` = `EffectiveCost` = the line total rounded to the card's precision
//!   (the invoiced amount). List and billed cost therefore differ by the line's
//!   rounding only. `ConsumedQuantity` is resource-seconds (exact) in Core-Seconds,
//!   GiB-Seconds or GPU-Seconds. `PricingCategory` is Dynamic for Spot (its price
//!   moves with utilisation) and Standard for Reserved.
//! - SLA credits: `ChargeCategory` Credit, negative cost; minimum-charge top-ups:
//!   `ChargeCategory` Adjustment. Neither has a pricing quantity or unit price, so
//!   their List/Contracted/Effective cost equal BilledCost [ListCost: "unrelated to
//!   other charges MUST match the BilledCost"], and SKU, pricing category and consumed
//!   columns are null.
//! - Corrections of a finalized period: `ChargeClass` Correction, the category of what
//!   they correct, `ChargePeriodStart/End` of the corrected charge (inside the earlier
//!   billing period) and the quantities and costs of the *change*.
//! - `SubAccountId`/`SubAccountName` are the tenant; `ResourceId` is the lease id,
//!   `ResourceType` "Capacity Lease", `InvoiceId` `<tenant>/<period>`.
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
use rust_decimal::Decimal;

use crate::bill::{Bill, BillLine, LineKind};
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
    let (start, end) = if correction {
        (line.start, line.end)
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
        Some(format!("{}/{}", bill.tenant, bill.period)),
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
            let hours = (resource_seconds / Decimal::from(3600)).round_dp(9);
            let list_cost = price.amount * hours;
            set("PricingQuantity", Some(number(hours)));
            set("PricingUnit", Some(format!("{}-Hours", resource.unit())));
            set("ListUnitPrice", Some(number(price.amount)));
            set("ContractedUnitPrice", Some(number(price.amount)));
            set("ListCost", Some(number(list_cost)));
            set("ContractedCost", Some(number(list_cost)));
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
