//! The end of a run: per tenant its leases, seconds, amounts and credits, read from the
//! ledger and checked against the UsageBill objects; per pool the idle node-hours turned
//! into revenue and those given back; every reclaim with its notice and how long after the
//! deadline its nodes were back. Written to the output folder with the FOCUS CSV, the
//! bills as JSON and the chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use kube::Client;
use kube::api::{Api, ListParams};
use offpeak_api::{LineItem, UsageBill};
use offpeak_billing::bill::{Bill, LineKind};
use offpeak_billing::ledger::Ledger;
use offpeak_billing::period::{BillingCycle, Period};
use rust_decimal::Decimal;

use super::record::{Reclaim, Record};

/// One tenant's part of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantSummary {
    pub tenant: String,
    pub leases: usize,
    /// Core-seconds of CPU billed.
    pub core_seconds: Decimal,
    /// Usage charges: every second of every resource at its price.
    pub usage: Decimal,
    /// Top-ups to the rate card's minimum charge per lease.
    pub minimum: Decimal,
    pub charges: Decimal,
    pub credits: Decimal,
    pub total: Decimal,
    pub currency: String,
    /// The UsageBill object's total, which must equal the ledger's.
    pub usage_bill_total: Option<Decimal>,
}

/// What the run came to.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub tenants: Vec<TenantSummary>,
    /// Per pool: node-hours leased, and node-hours given back to internal load by reclaims.
    pub leased_node_hours: BTreeMap<String, f64>,
    pub reclaims: Vec<Reclaim>,
    /// Per ended lease, how it ended, its recorded seconds and the seconds its bill lines
    /// hold.
    pub lifetimes: Vec<(String, String, i64, i64)>,
    /// Internal pods seen on lent nodes (none expected).
    pub violations: Vec<String>,
    /// Leases that never ran, and why.
    pub waiting: Vec<(String, String)>,
    pub focus_rows: usize,
    pub text: String,
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap_or_default()
}

/// Reads the bills from the ledger as of each UsageBill's own instant, and everything the
/// record saw, into a summary; writes the output files.
pub async fn collect(
    client: &Client,
    ledger_url: &str,
    record: &Record,
    out: &Path,
) -> anyhow::Result<Summary> {
    let ledger = Ledger::open(ledger_url, BillingCycle::Monthly).await?;
    let usage_bills = Api::<UsageBill>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let period = Period::containing(BillingCycle::Monthly, Utc::now());
    let mut tenants = Vec::new();
    let mut bills: Vec<Bill> = Vec::new();
    for tenant in ledger.tenants().await? {
        let object = usage_bills.iter().find(|b| {
            b.spec.tenant.as_str() == tenant
                && b.spec.period.start.as_str() == crate::observe::timestamp(period.start).as_str()
        });
        let as_of = object
            .and_then(|b| b.spec.as_of.as_ref())
            .and_then(|t| DateTime::parse_from_rfc3339(t.as_str()).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        let bill = ledger.current_bill(&tenant, &period, as_of).await?;
        let sum = |kind: LineKind| -> Decimal {
            bill.lines
                .iter()
                .filter(|l| l.kind == kind)
                .map(|l| l.amount.amount)
                .sum()
        };
        let (usage, minimum) = (sum(LineKind::Usage), sum(LineKind::MinimumCharge));
        // Credit lines are negative; shown as a positive amount at the bill's precision.
        let credits = sum(LineKind::SlaCredit).abs();
        let mut lease_ids: Vec<&str> = bill.lines.iter().map(|l| l.lease.as_str()).collect();
        lease_ids.sort_unstable();
        lease_ids.dedup();
        tenants.push(TenantSummary {
            tenant: tenant.clone(),
            leases: lease_ids.len(),
            core_seconds: bill
                .lines
                .iter()
                .filter(|l| {
                    l.kind == LineKind::Usage
                        && l.resource == Some(offpeak_billing::rate::Resource::Cpu)
                })
                .map(|l| l.quantity * Decimal::from(l.seconds))
                .sum(),
            usage,
            minimum,
            charges: usage + minimum,
            credits,
            total: bill.total.amount,
            currency: bill.currency.code().to_string(),
            usage_bill_total: object.map(|b| dec(b.spec.totals.total.as_str())),
        });
        bills.push(bill);
    }
    // Each ended lease: its recorded lifetime against its bill's CPU lines.
    let mut lifetimes = Vec::new();
    for ended in record.ended.values() {
        let billed: i64 = usage_bills
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(ended.tenant_namespace.as_str()))
            .flat_map(|b| b.spec.lines.iter())
            .filter(|l| l.lease.as_str() == ended.name && l.item == LineItem::Cpu)
            .filter_map(|l| {
                let start = DateTime::parse_from_rfc3339(l.start.as_str()).ok()?;
                let end = DateTime::parse_from_rfc3339(l.end.as_str()).ok()?;
                Some((end - start).num_seconds())
            })
            .sum();
        lifetimes.push((
            format!("{}/{}", ended.tenant_namespace, ended.name),
            ended.reason.clone(),
            (ended.ended - ended.admitted).num_seconds(),
            billed,
        ));
    }
    let mut leased_node_hours = BTreeMap::new();
    for pair in record.samples.windows(2) {
        let dt = (pair[1].at - pair[0].at).as_secs_f64() / 3600.0;
        for (pool, c) in &pair[0].pools {
            *leased_node_hours.entry(pool.clone()).or_insert(0.0) += c.leased as f64 * dt;
        }
    }
    // The files finance and people read.
    let mut focus = Vec::new();
    offpeak_billing::focus::write_focus_csv(
        &bills,
        &offpeak_billing::focus::FocusOptions::default(),
        &mut focus,
    )?;
    let focus_rows = focus
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        .saturating_sub(1);
    std::fs::write(out.join("focus.csv"), &focus)?;
    std::fs::write(
        out.join("bills.json"),
        serde_json::to_string_pretty(&usage_bills.iter().map(|b| &b.spec).collect::<Vec<_>>())?,
    )?;
    let mut samples = String::from("seconds,pool,internal,leased,idle,spot_per_core_hour\n");
    for s in &record.samples {
        for (pool, c) in &s.pools {
            let _ = writeln!(
                samples,
                "{:.1},{pool},{},{},{},{}",
                s.at.as_secs_f64(),
                c.internal,
                c.leased,
                c.idle,
                c.spot_per_core_hour.as_deref().unwrap_or("")
            );
        }
    }
    std::fs::write(out.join("utilisation.csv"), samples)?;
    let mut summary = Summary {
        tenants,
        leased_node_hours,
        reclaims: record.reclaims.values().cloned().collect(),
        lifetimes,
        violations: record.violations.iter().cloned().collect(),
        waiting: record
            .waiting
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        focus_rows,
        text: String::new(),
    };
    summary.text = render(&summary);
    std::fs::write(out.join("summary.txt"), &summary.text)?;
    ledger.close().await;
    Ok(summary)
}

/// `amount` with exactly `scale` decimal places.
fn at_scale(mut amount: Decimal, scale: u32) -> Decimal {
    amount.rescale(scale);
    amount
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn render(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Bills (from the ledger; the UsageBill objects agree where marked =)"
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "tenant", "leases", "core-s", "usage", "minimum", "credits", "total"
    );
    for t in &s.tenants {
        let agrees = match t.usage_bill_total {
            Some(total) if total == t.total => "=",
            Some(_) => "DIFFERS",
            None => "no UsageBill",
        };
        let _ = writeln!(
            out,
            "  {:<10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {} {agrees}",
            t.tenant,
            t.leases,
            t.core_seconds.normalize(),
            t.usage,
            t.minimum,
            at_scale(t.credits, t.total.scale()),
            t.total,
            t.currency
        );
    }
    if s.tenants.iter().any(|t| t.minimum > Decimal::ZERO) {
        let _ = writeln!(
            out,
            "  (each lease is billed its real seconds: a simulated day is a few real minutes, so\n   most leases stay under the rate card's minimum charge and are topped up to it)"
        );
    }
    let _ = writeln!(out, "\nPools: idle capacity turned into revenue");
    for (pool, hours) in &s.leased_node_hours {
        let reclaimed: Vec<&Reclaim> = s.reclaims.iter().filter(|r| &r.pool == pool).collect();
        let nodes: usize = reclaimed.iter().map(|r| r.nodes.len()).sum();
        let latest = reclaimed
            .iter()
            .filter_map(|r| r.back.map(|b| seconds(b - r.deadline)))
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let back = match latest {
            Some(late) => format!(
                ", {nodes} node(s) given back by reclaims, each at most {late:.1} s after its deadline"
            ),
            None if nodes > 0 => format!(", {nodes} node(s) being reclaimed"),
            None => String::new(),
        };
        let _ = writeln!(out, "  {pool:<8} {hours:.2} node-hours leased{back}");
    }
    let _ = writeln!(
        out,
        "\nReclaims: notice given, and the nodes back after the deadline"
    );
    for r in &s.reclaims {
        let notice = seconds(r.deadline - r.notice_given);
        // A lease the tenant ends during its notice gives its nodes back before the deadline.
        let back = r.back.map_or("not yet".to_string(), |b| {
            let late = seconds(b - r.deadline);
            if late < 0.0 {
                format!("{:.1} s before the deadline (the lease ended first)", -late)
            } else {
                format!("+{late:.1} s")
            }
        });
        let _ = writeln!(
            out,
            "  {:<32} {:<8} {:<28} notice {notice:>5.0} s (pool promises {} s), back {back}",
            r.lease,
            r.pool,
            r.reason,
            r.promised.as_secs()
        );
    }
    if s.reclaims.is_empty() {
        let _ = writeln!(out, "  none");
    }
    let _ = writeln!(
        out,
        "\nLeases that ended: recorded seconds = billed seconds"
    );
    for (lease, reason, recorded, billed) in &s.lifetimes {
        let mark = if recorded == billed { "=" } else { "DIFFERS" };
        let _ = writeln!(
            out,
            "  {lease:<32} {reason:<14} {recorded:>6} s recorded, {billed:>6} s billed {mark}"
        );
    }
    if !s.waiting.is_empty() {
        let _ = writeln!(out, "\nLeases that never ran, and why they waited");
        for (lease, why) in &s.waiting {
            let _ = writeln!(out, "  {lease:<32} {why}");
        }
    }
    let _ = writeln!(
        out,
        "\nInternal pods seen on lent nodes: {}",
        s.violations.len()
    );
    for v in &s.violations {
        let _ = writeln!(out, "  {v}");
    }
    let _ = writeln!(out, "FOCUS rows exported: {}", s.focus_rows);
    out
}
