//! Builders shared by the integration tests (and the bench, through `#[path]`).
#![allow(dead_code, clippy::unwrap_used)]

pub mod oracle;
pub mod scenarios;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use offpeak_billing::meter::{
    CapacityBound, EndReason, Fact, FactBody, LeaseAdmitted, LeaseEnded, NoticeGiven,
    PoolUtilisation, RateCardPublished, ResourceAmounts,
};
use offpeak_billing::money::Currency;
use offpeak_billing::rate::{ClassPrices, LeaseClass, RateCard, ResourcePrices};
use rust_decimal::Decimal;

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// USD card for every pool: spot cpu 0.02, memory 0.002, gpu 0.90; reserved twice that.
pub fn card(version: &str, from: &str) -> RateCard {
    RateCard {
        name: "standard".into(),
        version: version.into(),
        currency: Currency::from_code("USD", "test").unwrap(),
        effective_from: t(from),
        effective_until: None,
        pools: vec![],
        prices: ClassPrices {
            spot: ResourcePrices {
                cpu: d("0.02"),
                memory: d("0.002"),
                gpu: d("0.90"),
            },
            reserved: ResourcePrices {
                cpu: d("0.04"),
                memory: d("0.004"),
                gpu: d("1.80"),
            },
        },
        minimum_charge_per_lease: None,
        spot_price_rule: None,
        sla_credit: None,
        precision: None,
    }
}

pub fn card_fact(card: RateCard) -> Fact {
    Fact {
        key: format!("ratecard/{}", card.id()),
        body: FactBody::RateCard(Box::new(RateCardPublished { rate_card: card })),
    }
}

pub fn admit(lease: &str, tenant: &str, class: LeaseClass, at: &str) -> Fact {
    admit_planned(lease, tenant, class, at, None)
}

pub fn admit_planned(
    lease: &str,
    tenant: &str,
    class: LeaseClass,
    at: &str,
    planned_end: Option<&str>,
) -> Fact {
    Fact {
        key: format!("{lease}/admitted"),
        body: FactBody::LeaseAdmitted(Box::new(LeaseAdmitted {
            lease: lease.into(),
            tenant: tenant.into(),
            pool: "general".into(),
            class,
            at: t(at),
            planned_end: planned_end.map(t),
            name: None,
            region: None,
            region_name: None,
            tags: Default::default(),
        })),
    }
}

pub fn bind(lease: &str, at: &str, cpu: &str, memory: &str, gpu: &str) -> Fact {
    bind_at(lease, t(at), d(cpu), d(memory), d(gpu))
}

pub fn bind_at(
    lease: &str,
    at: DateTime<Utc>,
    cpu: Decimal,
    memory: Decimal,
    gpu: Decimal,
) -> Fact {
    Fact {
        key: format!("{lease}/bound/{}", at.timestamp()),
        body: FactBody::CapacityBound(CapacityBound {
            lease: lease.into(),
            at,
            resources: ResourceAmounts { cpu, memory, gpu },
            nodes: vec![],
        }),
    }
}

pub fn notice(lease: &str, at: &str, deadline: &str) -> Fact {
    Fact {
        key: format!("{lease}/notice/{at}"),
        body: FactBody::NoticeGiven(NoticeGiven {
            lease: lease.into(),
            at: t(at),
            deadline: t(deadline),
        }),
    }
}

pub fn end(lease: &str, at: &str, reason: EndReason) -> Fact {
    end_at(lease, t(at), reason)
}

pub fn end_at(lease: &str, at: DateTime<Utc>, reason: EndReason) -> Fact {
    Fact {
        key: format!("{lease}/ended"),
        body: FactBody::LeaseEnded(LeaseEnded {
            lease: lease.into(),
            at,
            reason,
        }),
    }
}

pub fn util(pool: &str, at: &str, utilisation: &str) -> Fact {
    util_at(pool, t(at), d(utilisation))
}

pub fn util_at(pool: &str, at: DateTime<Utc>, utilisation: Decimal) -> Fact {
    Fact {
        key: format!("{pool}/util/{}/{utilisation}", at.timestamp()),
        body: FactBody::PoolUtilisation(PoolUtilisation {
            pool: pool.into(),
            at,
            utilisation,
        }),
    }
}
