//! Observe: one pool as the watch caches show it now, in the plan's terms. Reads only the
//! caches; computes each tenant's credit exposure once per pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use offpeak_api::{CapacityLease, CapacityPool};
use rust_decimal::Decimal;

use super::Context;
use crate::desired::binding;
use crate::observe;
use crate::plan::admission::Reservation;
use crate::plan::eligibility::TenantView;
use crate::plan::pool::{
    Confinement, LeaseView, Ledger, NodeView, PendingPod, PoolSettings, PoolView, PressureSettings,
    ReservationView, standing,
};
use crate::pricing;

pub fn view(ctx: &Context, pool: &CapacityPool, now: DateTime<Utc>) -> PoolView {
    let stores = &ctx.stores;
    let name = pool.name_any();
    let (namespace_tenants, tenants) = tenants(ctx, &name, now);
    // The pool's nodes, and nodes relabelled out of it while still marked for its leases.
    let lease_uids: std::collections::HashSet<String> = stores
        .leases
        .state()
        .iter()
        .filter(|l| l.spec.pool.as_str() == name)
        .filter_map(|l| l.uid())
        .collect();
    let all_nodes = stores.nodes.state();
    let mut nodes: Vec<NodeView> = all_nodes
        .iter()
        .filter_map(|n| {
            let in_pool =
                observe::labels_match(n.metadata.labels.as_ref(), &pool.spec.node_selector);
            let ours = binding::marks(n)
                .lease
                .is_some_and(|uid| lease_uids.contains(&uid));
            (in_pool || ours).then_some((n, in_pool))
        })
        .map(|(node, in_pool)| {
            let node_name = node.name_any();
            let mut pods = stores.pods.on_node(&node_name);
            for pod in &mut pods {
                pod.tenant = namespace_tenants.contains_key(&pod.namespace)
                    || stores.tenant_of_namespace(&pod.namespace).is_some();
            }
            NodeView {
                resource_version: node.resource_version(),
                ready: observe::is_ready(node),
                cordoned_by_others: node
                    .spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false),
                withheld: observe::withheld(node),
                marks: binding::marks(node),
                allocatable: observe::allocatable(node),
                class: pool
                    .spec
                    .node_classes
                    .iter()
                    .find(|c| {
                        observe::labels_match(node.metadata.labels.as_ref(), &c.node_selector)
                    })
                    .map(|c| c.name.to_string()),
                pods,
                in_pool,
                name: node_name,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let memory = ctx.memory.lock().map(|m| m.clone()).unwrap_or_default();
    let mut leases: Vec<LeaseView> = stores
        .leases
        .state()
        .iter()
        .filter(|l| l.spec.pool.as_str() == name)
        .filter_map(|l| lease_view(ctx, l, &memory))
        .collect();
    leases.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    let reservation_objects: Vec<ReservationView> = stores
        .reservations
        .state()
        .iter()
        .filter(|r| r.spec.pool.as_str() == name)
        .map(|r| ReservationView {
            name: r.name_any(),
            generation: r.metadata.generation,
            reservation: observe::calendar(r).and_then(|calendar| {
                Ok(Reservation {
                    name: r.name_any(),
                    calendar,
                    keep: observe::keep(&r.spec.keep)?,
                })
            }),
            status: r.status.clone(),
        })
        .collect();
    let reservations = reservation_objects
        .iter()
        .filter_map(|r| r.reservation.clone().ok())
        .collect();
    // Internal pods waiting for a node they could have in this pool.
    let pool_nodes: Vec<_> = all_nodes
        .iter()
        .filter(|n| observe::labels_match(n.metadata.labels.as_ref(), &pool.spec.node_selector))
        .collect();
    let pending = stores
        .pods
        .unscheduled()
        .into_iter()
        .filter(|p| {
            !namespace_tenants.contains_key(&p.namespace)
                && stores.tenant_of_namespace(&p.namespace).is_none()
        })
        .filter(|p| {
            pool_nodes
                .iter()
                .any(|n| observe::labels_match(n.metadata.labels.as_ref(), &p.node_selector))
        })
        .map(|p| PendingPod {
            namespace: p.namespace,
            name: p.name,
            since: p.since,
            requests: p.requests,
        })
        .collect();
    PoolView {
        generation: pool.metadata.generation,
        settings: settings(pool),
        status: pool.status.clone(),
        nodes,
        leases,
        reservations,
        reservation_objects,
        pending,
        rate_card: pricing::card_for(&stores.rate_cards.state(), &name, now),
        tenants,
        namespace_tenants,
        held_back: memory.held_back(now),
        ledger: match ctx.meter.health() {
            crate::meter::Health::Starting => Ledger::Starting,
            crate::meter::Health::Healthy => Ledger::Healthy,
            crate::meter::Health::Down { since, message } => Ledger::Down { since, message },
        },
        // The controllers start once the guard has looked: None is not seen here.
        confinement: ctx
            .confinement
            .borrow()
            .clone()
            .unwrap_or(Confinement::Broken {
                since: now,
                message: "not checked yet".to_string(),
            }),
        name,
    }
}

fn settings(pool: &CapacityPool) -> Result<PoolSettings, String> {
    let spec = &pool.spec;
    let duration = |d: &offpeak_api::GoDuration, field: &str| {
        observe::duration(d).map_err(|e| format!("spec.{field}: {e}"))
    };
    Ok(PoolSettings {
        minimum_runtime: duration(&spec.minimum_runtime, "minimumRuntime")?,
        reclaim_advisory: duration(&spec.reclaim_advisory, "reclaimAdvisory")?,
        internal_pressure: PressureSettings {
            unschedulable_for: duration(
                &spec.internal_pressure.unschedulable_for,
                "internalPressure.unschedulableFor",
            )?,
            emergency_after: duration(
                &spec.internal_pressure.emergency_after,
                "internalPressure.emergencyAfter",
            )?,
        },
        idle_after: observe::duration(&spec.idle_after)
            .map_err(|e| format!("spec.idleAfter: {e}"))?,
        notice: observe::duration(&spec.notice_period)
            .map_err(|e| format!("spec.noticePeriod: {e}"))?,
        headroom: spec
            .headroom
            .as_ref()
            .map(observe::keep)
            .transpose()
            .map_err(|e| format!("spec.headroom: {e}"))?,
        lending_enabled: spec.lending_enabled,
    })
}

fn lease_view(
    ctx: &Context,
    lease: &Arc<CapacityLease>,
    memory: &super::Memory,
) -> Option<LeaseView> {
    let uid = lease.uid()?;
    let deleting = lease.metadata.deletion_timestamp.is_some();
    // Only a lease on its way out needs to know whether its facts are all recorded.
    let metered = !deleting || {
        let tenant = ctx
            .stores
            .tenant_of_namespace(&lease.namespace().unwrap_or_default())
            .unwrap_or_default();
        crate::meter::facts::lease(lease, &tenant).is_ok_and(|facts| {
            let keys: Vec<String> = facts.into_iter().map(|f| f.key).collect();
            ctx.meter.recorded(&keys)
        })
    };
    Some(LeaseView {
        metered,
        failure: memory.failure(&uid),
        namespace: lease.namespace().unwrap_or_default(),
        name: lease.name_any(),
        resource_version: lease.resource_version(),
        generation: lease.metadata.generation,
        created: observe::created(&lease.metadata).unwrap_or(DateTime::<Utc>::MIN_UTC),
        deleting,
        has_finalizer: lease
            .finalizers()
            .iter()
            .any(|f| f == crate::names::FINALIZER),
        spec: lease.spec.clone(),
        status: lease.status.clone().unwrap_or_default(),
        uid,
    })
}

/// The tenant of each namespace a tenant claims (and that carries its label), and each
/// tenant's standing: what its leases that ended this month cost, and the most its leases
/// that hold nodes can cost over their whole terms.
fn tenants(
    ctx: &Context,
    pool: &str,
    now: DateTime<Utc>,
) -> (BTreeMap<String, String>, BTreeMap<String, TenantView>) {
    let stores = &ctx.stores;
    let mut namespace_tenants = BTreeMap::new();
    let mut views = BTreeMap::new();
    for tenant in stores.tenants.state() {
        let name = tenant.name_any();
        for namespace in &tenant.spec.namespaces {
            if stores.tenant_of_namespace(namespace.as_str()).as_deref() == Some(name.as_str()) {
                namespace_tenants.insert(namespace.to_string(), name.clone());
            }
        }
        views.insert(
            name.clone(),
            TenantView {
                suspended: tenant.spec.suspended,
                allowed_pools: tenant
                    .spec
                    .allowed_pools
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                credit_limit: tenant
                    .spec
                    .credit_limit
                    .as_ref()
                    .and_then(|c| observe::decimal(c.amount.as_str()).ok()),
                open_balance: Decimal::ZERO,
                committed: Decimal::ZERO,
                name,
            },
        );
    }
    // This pool's own leases are counted by the plan itself.
    let mut cards: BTreeMap<String, Option<offpeak_billing::rate::RateCard>> = BTreeMap::new();
    let cards_now = stores.rate_cards.state();
    for lease in stores
        .leases
        .state()
        .iter()
        .filter(|l| l.spec.pool.as_str() != pool)
    {
        let Some(tenant) = namespace_tenants
            .get(&lease.namespace().unwrap_or_default())
            .and_then(|t| views.get_mut(t))
        else {
            continue;
        };
        let Some(status) = &lease.status else {
            continue;
        };
        let card = cards
            .entry(lease.spec.pool.to_string())
            .or_insert_with(|| pricing::card_for(&cards_now, lease.spec.pool.as_str(), now));
        let (spent, committed) = standing(&lease.spec, status, card.as_ref(), now);
        tenant.open_balance += spent;
        tenant.committed += committed;
    }
    (namespace_tenants, views)
}
