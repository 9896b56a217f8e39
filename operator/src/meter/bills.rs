//! UsageBill objects from the ledger: one per tenant per period, in the tenant's first
//! namespace, written only by the operator. Open bills are refreshed every few seconds to
//! a minute (one write per tenant whose bill moved, none for a bill that did not); once a
//! period has ended and its grace passed, its bill is finalized in the ledger and the
//! UsageBill follows, never to change again (late facts become corrections on the next
//! open bill).

use chrono::Utc;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use offpeak_api::{
    BillCredit, BillLine, BillState, BillTotals, Currency, LeaseClass, LineItem, Name, Period,
    SignedMoney, UsageBill, UsageBillSpec,
};
use offpeak_billing::bill::{Bill, LineKind};
use offpeak_billing::error::BillingError;
use offpeak_billing::period::Period as BillingPeriod;
use offpeak_billing::rate::{self, Resource};
use rust_decimal::Decimal;

use crate::controllers::Context;
use crate::names::FIELD_MANAGER;
use crate::observe::timestamp;

/// The UsageBill's name: `<tenant>-<period>`, such as acme-2026-11.
pub fn name(tenant: &str, period: &str) -> String {
    format!("{tenant}-{}", period.to_lowercase())
}

/// Finalizes what is due and refreshes every open bill.
pub async fn refresh(ctx: &Context) {
    let Ok(ledger) = ctx.meter.ledger().await else {
        return;
    };
    let now = Utc::now();
    let period = BillingPeriod::containing(ctx.meter.cycle(), now);
    let previous = period.previous();
    let tenants = match ledger.tenants().await {
        Ok(t) => t,
        Err(e) => return tracing::warn!(error = %e, "cannot list the ledger's tenants"),
    };
    for tenant in tenants {
        let Some(object) = ctx.stores.tenants.get(&ObjectRef::new(&tenant)) else {
            continue; // a deleted tenant keeps its bills in the ledger
        };
        let Some(namespace) = object.spec.namespaces.first().map(|n| n.to_string()) else {
            continue;
        };
        if now >= previous.end + ctx.settings.bills.grace {
            match ledger.finalize(&tenant, &previous).await {
                Ok(bill) => write(ctx, &namespace, &bill).await,
                Err(BillingError::NothingToBill { .. }) => {}
                Err(e) => {
                    tracing::warn!(tenant, period = previous.label(), error = %e, "cannot finalize the bill")
                }
            }
        }
        match ledger.bill(&tenant, &period, now).await {
            Ok(bill) => {
                publish_metrics(ctx, &bill);
                write(ctx, &namespace, &bill).await;
            }
            Err(BillingError::NothingToBill { .. }) => {}
            Err(e) => {
                tracing::warn!(tenant, period = period.label(), error = %e, "cannot compute the bill")
            }
        }
    }
}

fn publish_metrics(ctx: &Context, bill: &Bill) {
    let seconds: i64 = bill
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Usage && l.resource == Some(Resource::Cpu))
        .map(|l| l.seconds)
        .sum();
    ctx.metrics
        .billed_seconds
        .with_label_values(&[&bill.tenant])
        .set(seconds);
    let total = bill.total.amount.to_string().parse::<f64>().unwrap_or(0.0);
    ctx.metrics
        .billed_amount
        .with_label_values(&[&bill.tenant, bill.currency.code()])
        .set(total);
}

async fn write(ctx: &Context, namespace: &str, bill: &Bill) {
    // A namespace deleted and made again takes its bills with it: keyed by the namespace's
    // UID, each bill is written again into the new one. One going away takes none.
    let Some(uid) = ctx
        .stores
        .namespaces
        .get(&ObjectRef::new(namespace))
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .and_then(|ns| ns.metadata.uid.clone())
    else {
        return;
    };
    let spec = spec(bill, ctx.settings.bills.grace);
    let name = name(&bill.tenant, &bill.period);
    let key = format!("{namespace}/{uid}/{name}");
    let unchanged = ctx
        .meter
        .written
        .lock()
        .is_ok_and(|w| w.get(&key) == Some(&spec));
    if unchanged {
        return;
    }
    let object = UsageBill {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "offpeak".to_string(),
                    ),
                    (crate::names::TENANT.to_string(), bill.tenant.clone()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: spec.clone(),
    };
    let api: Api<UsageBill> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
    {
        Ok(_) => {
            ctx.metrics.write("usage_bill", "ok");
            if let Ok(mut w) = ctx.meter.written.lock() {
                w.insert(key, spec);
            }
        }
        Err(e) => {
            ctx.metrics.write("usage_bill", "error");
            tracing::warn!(bill = key, error = %e, "cannot write the UsageBill; the next refresh tries again");
        }
    }
}

fn money(amount: Decimal) -> SignedMoney {
    SignedMoney::new(amount.to_string())
}

/// The UsageBill of a ledger bill; a finalized one says it was finalized once its
/// period's `grace` ran out (the same instant on every replica).
pub fn spec(bill: &Bill, grace: chrono::Duration) -> UsageBillSpec {
    let mut lines = Vec::new();
    let mut credits = Vec::new();
    let mut charges = Decimal::ZERO;
    let mut credited = Decimal::ZERO;
    for line in &bill.lines {
        let lease_name = line
            .lease_name
            .clone()
            .unwrap_or_else(|| line.lease.clone());
        let (namespace, lease) = lease_name
            .split_once('/')
            .unwrap_or(("", lease_name.as_str()));
        let item = match (line.kind, line.resource, &line.correction_of) {
            (_, _, Some(_)) => LineItem::Correction,
            (LineKind::Usage, Some(Resource::Cpu), _) => LineItem::Cpu,
            (LineKind::Usage, Some(Resource::Memory), _) => LineItem::Memory,
            (LineKind::Usage, Some(Resource::Gpu), _) => LineItem::Gpu,
            (LineKind::Usage, None, _) | (LineKind::MinimumCharge, _, _) => LineItem::MinimumCharge,
            (LineKind::SlaCredit, _, _) => {
                credited -= line.amount.amount;
                credits.push(BillCredit {
                    id: format!("{namespace}.{lease}.sla-credit.{}", line.start.timestamp()),
                    lease: Name::new(lease),
                    reason: line.description(),
                    amount: money(-line.amount.amount),
                });
                continue;
            }
        };
        charges += line.amount.amount;
        let resource = line.resource.map_or("none", |r| match r {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Gpu => "gpu",
        });
        let kind = match line.kind {
            LineKind::Usage => resource,
            LineKind::MinimumCharge => "minimum",
            LineKind::SlaCredit => "credit",
        };
        let mut id = format!(
            "{namespace}.{lease}.{kind}.{}.{}",
            line.start.timestamp(),
            line.rate_card
        );
        if let Some(of) = &line.correction_of {
            id.push_str(&format!(".correction-{of}"));
        }
        lines.push(BillLine {
            id,
            lease: Name::new(lease),
            pool: Name::new(line.pool.clone()),
            class: match line.class {
                rate::LeaseClass::Spot => LeaseClass::Spot,
                rate::LeaseClass::Reserved => LeaseClass::Reserved,
            },
            item,
            start: timestamp(line.start),
            end: timestamp(line.end),
            quantity: line.quantity.abs().round_dp(12).normalize().to_string(),
            unit_price: line
                .unit_price
                .map_or_else(|| money(Decimal::ZERO), |p| money(p.amount)),
            amount: money(line.amount.amount),
            rate_card: line.rate_card.clone(),
        });
    }
    let precision = bill.total.amount.scale();
    let at_precision = |d: Decimal| {
        let mut d = d;
        d.rescale(precision);
        d
    };
    UsageBillSpec {
        tenant: Name::new(bill.tenant.clone()),
        period: Period {
            start: timestamp(bill.period_start),
            end: timestamp(bill.period_end),
        },
        state: match bill.state {
            offpeak_billing::bill::BillState::Open => BillState::Open,
            offpeak_billing::bill::BillState::Finalized => BillState::Finalized,
        },
        finalized_at: (bill.state == offpeak_billing::bill::BillState::Finalized)
            .then(|| timestamp(bill.period_end + grace)),
        as_of: Some(timestamp(bill.as_of)),
        currency: Currency::new(bill.currency.code()),
        lines,
        credits,
        totals: BillTotals {
            charges: money(at_precision(charges)),
            credits: money(at_precision(credited)),
            total: money(bill.total.amount),
        },
    }
}
