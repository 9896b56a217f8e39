//! Billing facts derived from what the cluster recorded, never from when the operator
//! happened to look: a lease's status holds the instant of each transition (admitted, each
//! binding with its capacity, notice, ended and why), a pool's status its utilisation
//! history, a RateCard its prices. The same status always gives the same facts under the
//! same keys (the lease's UID and the transition), so appending them again after a crash,
//! or from a second replica, changes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use offpeak_api::{CapacityLease, CapacityPool, EndReason as ApiEndReason, LeaseClass as ApiClass};
use offpeak_billing::meter::{
    CapacityBound, EndReason, Fact, FactBody, LeaseAdmitted, LeaseEnded, NoticeGiven,
    PoolUtilisation, RateCardPublished, ResourceAmounts,
};
use offpeak_billing::rate::LeaseClass;
use rust_decimal::Decimal;

use crate::observe;
use crate::plan::resources::Resources;
use crate::pricing;

/// The facts of a lease's recorded life, for `tenant`; none before it is admitted.
pub fn lease(lease: &CapacityLease, tenant: &str) -> Result<Vec<Fact>, String> {
    let Some(status) = &lease.status else {
        return Ok(Vec::new());
    };
    let Some(admitted) = &status.admitted_at else {
        return Ok(Vec::new());
    };
    let uid = lease.metadata.uid.clone().ok_or("a lease without a UID")?;
    let at = |t: &offpeak_api::Timestamp| observe::instant(t);
    let mut facts = vec![Fact {
        key: format!("{uid}/admitted"),
        body: FactBody::LeaseAdmitted(Box::new(LeaseAdmitted {
            lease: uid.clone(),
            tenant: tenant.to_string(),
            pool: lease.spec.pool.to_string(),
            class: match lease.spec.class {
                ApiClass::Spot => LeaseClass::Spot,
                ApiClass::Reserved => LeaseClass::Reserved,
            },
            at: at(admitted)?,
            planned_end: status.ends_at.as_ref().map(at).transpose()?,
            name: Some(observe::lease_name(lease)),
            region: None,
            region_name: None,
            tags: tenant_tags(lease),
        })),
    }];
    for (i, binding) in status.bindings.iter().enumerate() {
        let capacity = Resources::parse(
            Some(binding.cpu.as_str()),
            Some(binding.memory.as_str()),
            Some(binding.gpu.as_str()),
        )
        .map_err(|e| format!("status.bindings[{i}]: {e}"))?;
        facts.push(Fact {
            key: format!("{uid}/bound/{i}"),
            body: FactBody::CapacityBound(CapacityBound {
                lease: uid.clone(),
                at: at(&binding.at)?,
                resources: amounts(&capacity),
                nodes: binding.nodes.iter().map(|n| n.to_string()).collect(),
            }),
        });
    }
    if let (Some(given), Some(deadline)) = (&status.notice_given_at, &status.reclaim_deadline) {
        facts.push(Fact {
            key: format!("{uid}/notice"),
            body: FactBody::NoticeGiven(NoticeGiven {
                lease: uid.clone(),
                at: at(given)?,
                deadline: at(deadline)?,
            }),
        });
    }
    if let (Some(ended), Some(reason)) = (&status.ended_at, status.end_reason) {
        facts.push(Fact {
            key: format!("{uid}/ended"),
            body: FactBody::LeaseEnded(LeaseEnded {
                lease: uid,
                at: at(ended)?,
                reason: match reason {
                    ApiEndReason::Expired => EndReason::Expired,
                    ApiEndReason::Cancelled => EndReason::Cancelled,
                    ApiEndReason::Reclaimed => EndReason::Reclaimed,
                    ApiEndReason::PriceExceeded => EndReason::PriceExceeded,
                },
            }),
        });
    }
    Ok(facts)
}

/// The tenant's own labels on the lease (Kubernetes' and Offpeak's left out).
fn tenant_tags(lease: &CapacityLease) -> BTreeMap<String, String> {
    lease
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !k.contains("kubernetes.io/") && !k.starts_with("offpeak"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Cores, GiB and GPUs, as the billing crate counts them.
fn amounts(capacity: &Resources) -> ResourceAmounts {
    ResourceAmounts {
        cpu: Decimal::from(capacity.cpu_millis) / Decimal::from(1000),
        memory: Decimal::from(capacity.memory_bytes) / Decimal::from(1u64 << 30),
        gpu: Decimal::from(capacity.gpus),
    }
}

/// The pool's recorded utilisation changes.
pub fn pool(pool: &CapacityPool) -> Result<Vec<Fact>, String> {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let Some(status) = &pool.status else {
        return Ok(Vec::new());
    };
    status
        .utilisation_history
        .iter()
        .map(|change| {
            let at: DateTime<Utc> = observe::instant(&change.at)?;
            Ok(Fact {
                key: format!("pool/{name}/utilisation/{}", at.timestamp()),
                body: FactBody::PoolUtilisation(PoolUtilisation {
                    pool: name.clone(),
                    at,
                    utilisation: observe::decimal(&change.utilisation)?,
                }),
            })
        })
        .collect()
}

/// A RateCard object's prices, as the version its generation names.
pub fn rate_card(card: &offpeak_api::RateCard) -> Result<Fact, String> {
    let model = pricing::from_api(card)?;
    Ok(Fact {
        key: format!("rateCard/{}", model.id()),
        body: FactBody::RateCard(Box::new(RateCardPublished { rate_card: model })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use offpeak_api::{CapacityLeaseStatus, LeaseBinding, NodeName, Quantity, Timestamp};

    fn lease_with(status: CapacityLeaseStatus) -> CapacityLease {
        let mut lease: CapacityLease = serde_json::from_value(serde_json::json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease",
            "metadata": {"name": "render", "namespace": "tenant-acme", "uid": "u-1", "labels": {"team": "vfx", "app.kubernetes.io/name": "x"}},
            "spec": {"pool": "general", "class": "Spot", "resources": {"cpu": "32"}, "duration": "8h", "maxPricePerHour": "4.50"},
        }))
        .unwrap();
        lease.status = Some(status);
        lease
    }

    #[test]
    fn a_leases_status_gives_one_fact_per_transition_under_stable_keys() {
        let t = |s: &str| Some(Timestamp::new(s));
        let status = CapacityLeaseStatus {
            admitted_at: t("2026-11-22T20:00:00Z"),
            ends_at: t("2026-11-23T04:00:00Z"),
            bindings: vec![LeaseBinding {
                at: Timestamp::new("2026-11-22T20:00:00Z"),
                nodes: vec![NodeName::new("n0"), NodeName::new("n1")],
                cpu: Quantity("32".into()),
                memory: Quantity("128Gi".into()),
                gpu: Quantity("0".into()),
            }],
            notice_given_at: t("2026-11-22T22:00:00Z"),
            reclaim_deadline: t("2026-11-22T22:02:00Z"),
            ended_at: t("2026-11-22T22:02:01Z"),
            end_reason: Some(ApiEndReason::Reclaimed),
            ..Default::default()
        };
        let facts = lease(&lease_with(status.clone()), "acme").unwrap();
        let keys: Vec<&str> = facts.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            ["u-1/admitted", "u-1/bound/0", "u-1/notice", "u-1/ended"]
        );
        let FactBody::LeaseAdmitted(admitted) = &facts[0].body else {
            panic!()
        };
        assert_eq!(admitted.tenant, "acme");
        assert_eq!(admitted.name.as_deref(), Some("tenant-acme/render"));
        assert_eq!(
            admitted.tags,
            BTreeMap::from([("team".to_string(), "vfx".to_string())])
        );
        let FactBody::CapacityBound(bound) = &facts[1].body else {
            panic!()
        };
        assert_eq!(
            (bound.resources.cpu, bound.resources.memory),
            (Decimal::from(32), Decimal::from(128))
        );
        // The same status, the same facts.
        assert_eq!(lease(&lease_with(status), "acme").unwrap(), facts);
        // Not yet admitted: nothing to bill.
        assert!(
            lease(&lease_with(CapacityLeaseStatus::default()), "acme")
                .unwrap()
                .is_empty()
        );
    }
}
