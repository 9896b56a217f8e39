//! The pool controller: observes a pool's nodes, pods, leases, reservations and rate card,
//! decides (plan::idle, plan::eligibility, plan::admission) and applies: idle clocks on
//! nodes, bound nodes, lease statuses and events, the pool's status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use offpeak_api::{
    CapacityLease, CapacityLeaseStatus, CapacityPool, CapacityPoolStatus, LeasePhase,
};
use rust_decimal::Decimal;
use serde_json::json;

use super::binding::{bind_nodes, return_nodes, write_status};
use super::{Context, conditions, drive, lease::FINALIZER, retry_after};
use crate::desired::binding::lease_of;
use crate::error::{Error, Result};
use crate::names::{FIELD_MANAGER, IDLE_SINCE};
use crate::observe;
use crate::plan::admission::{self, Decision, Holding, LeaseRequest, PoolSnapshot, Reservation};
use crate::plan::eligibility::{self, TenantView, Verdict};
use crate::plan::idle::{self, NodeFacts, NodeState};
use crate::plan::node_choice::Candidate;
use crate::plan::resources::Resources;
use crate::pricing;

pub async fn run(ctx: Arc<Context>, changed: futures::channel::mpsc::UnboundedReceiver<()>) {
    drive(
        Controller::new(
            Api::<CapacityPool>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .with_config(Config::default().debounce(Duration::from_millis(300)))
        .reconcile_all_on(changed)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx),
    )
    .await;
}

fn error_policy(pool: Arc<CapacityPool>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(
        &ctx,
        "pool",
        &pool.name_any().to_string(),
        error,
        Duration::from_secs(2),
    )
}

fn is_deleting(lease: &CapacityLease) -> bool {
    lease.metadata.deletion_timestamp.is_some()
}

fn phase(lease: &CapacityLease) -> Option<LeasePhase> {
    lease.status.as_ref().and_then(|s| s.phase)
}

fn has_finalizer(lease: &CapacityLease) -> bool {
    lease.finalizers().iter().any(|f| f == FINALIZER)
}

#[tracing::instrument(skip_all, fields(pool = %pool.name_any()))]
async fn reconcile(pool: Arc<CapacityPool>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("pool");
    let now = Utc::now();
    let name = pool.name_any();
    let stores = &ctx.stores;

    // Observe: the pool's nodes and what runs on them.
    let idle_after = observe::duration(&pool.spec.idle_after).map_err(|m| spec_error(&pool, m))?;
    let selected: Vec<Arc<Node>> = stores
        .nodes
        .state()
        .into_iter()
        .filter(|n| observe::labels_match(n.metadata.labels.as_ref(), &pool.spec.node_selector))
        .collect();
    let mut pods_by_node: HashMap<String, Vec<idle::PodFacts>> = HashMap::new();
    for pod in stores.pods.state() {
        if let Some(node) = observe::holds_node(&pod) {
            pods_by_node
                .entry(node.to_string())
                .or_default()
                .push(observe::pod_facts(&pod));
        }
    }
    let leases: Vec<Arc<CapacityLease>> = stores
        .leases
        .state()
        .into_iter()
        .filter(|l| l.spec.pool.as_str() == name)
        .collect();
    let live_keys: BTreeSet<String> = leases
        .iter()
        .filter(|l| {
            !is_deleting(l)
                && matches!(
                    phase(l),
                    Some(LeasePhase::Active) | Some(LeasePhase::Reclaiming)
                )
        })
        .map(|l| observe::lease_key(l))
        .collect();

    // Nodes lent to leases that are gone or over go back (a bind that raced a deletion).
    let orphans: BTreeSet<String> = selected
        .iter()
        .filter(|n| {
            lease_of(n).is_some_and(|k| {
                !live_keys.contains(k)
                    && !leases
                        .iter()
                        .any(|l| is_deleting(l) && observe::lease_key(l) == k)
            })
        })
        .filter(|n| !recently_bound(&leases, n))
        .map(|n| n.name_any())
        .collect();
    if !orphans.is_empty() {
        tracing::info!(nodes = ?orphans, "returning nodes whose lease is gone");
        return_nodes(&ctx, &orphans).await?;
    }

    let mut states: BTreeMap<String, (Arc<Node>, NodeState, Resources)> = BTreeMap::new();
    let mut malformed: Vec<String> = Vec::new();
    for node in &selected {
        let node_name = node.name_any();
        let facts = NodeFacts {
            name: node_name.clone(),
            ready: observe::is_ready(node),
            cordoned_by_others: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            lease: lease_of(node).map(str::to_string),
            pods: pods_by_node.remove(&node_name).unwrap_or_default(),
            idle_since: observe::idle_since(node),
        };
        let state = idle::classify(&facts, now, idle_after);
        let allocatable = observe::allocatable(node).unwrap_or_else(|e| {
            malformed.push(format!("node {node_name}: {e}"));
            Resources::ZERO
        });
        states.insert(node_name, (node.clone(), state, allocatable));
    }
    update_idle_clocks(&ctx, &states).await?;

    // Leases whose term is over end, and give their nodes back.
    for lease in leases
        .iter()
        .filter(|l| !is_deleting(l) && phase(l) == Some(LeasePhase::Active))
    {
        let ends = lease
            .status
            .as_ref()
            .and_then(|s| s.ends_at.as_ref())
            .and_then(|t| observe::instant(t).ok());
        if ends.is_some_and(|end| end <= now) {
            end_lease(&ctx, lease, now).await?;
        }
    }

    // Decide admission for the pool's pending leases.
    let headroom_limit = headroom_limit(&pool, states.len());
    let reservations: Vec<Reservation> = stores
        .reservations
        .state()
        .iter()
        .filter(|r| r.spec.pool.as_str() == name)
        .filter_map(|r| {
            let calendar = observe::calendar(r).ok()?;
            let keep = observe::keep(&r.spec.keep).ok()?;
            Some(Reservation {
                name: r.name_any(),
                calendar,
                keep,
            })
        })
        .collect();
    let lent_nodes = states
        .values()
        .filter(|(_, s, _)| matches!(s, NodeState::Lent { .. }))
        .count();
    let utilisation = if states.is_empty() {
        Decimal::ZERO
    } else {
        Decimal::from(lent_nodes) / Decimal::from(states.len())
    };
    let card = pricing::card_for(&stores.rate_cards.state(), &name, now);
    let spot_prices = card.as_ref().map(|c| {
        pricing::hourly_prices(
            c,
            billing_class(offpeak_api::LeaseClass::Spot),
            Some(utilisation),
        )
    });
    let free: Vec<Candidate> = states
        .iter()
        .filter(|(_, (_, s, _))| s.is_lendable())
        .map(|(node_name, (node, _, allocatable))| Candidate {
            name: node_name.clone(),
            allocatable: *allocatable,
            class: pool
                .spec
                .node_classes
                .iter()
                .find(|c| observe::labels_match(node.metadata.labels.as_ref(), &c.node_selector))
                .map(|c| c.name.to_string()),
        })
        .collect();
    let reserved: Vec<Holding> = leases
        .iter()
        .filter(|l| {
            !is_deleting(l)
                && phase(l) == Some(LeasePhase::Active)
                && l.spec.class == offpeak_api::LeaseClass::Reserved
        })
        .filter_map(|l| {
            let s = l.status.as_ref()?;
            let term = crate::plan::calendar::Interval::new(
                observe::instant(s.admitted_at.as_ref()?).ok()?,
                observe::instant(s.ends_at.as_ref()?).ok()?,
            );
            Some(Holding {
                lease: observe::lease_key(l),
                term,
                nodes: s.bound_nodes.len(),
            })
        })
        .collect();
    let snapshot = PoolSnapshot {
        name: name.clone(),
        nodes_total: states.len(),
        capacity: states.values().map(|(_, _, a)| *a).sum(),
        free,
        lent: lent_nodes,
        headroom_limit,
        reservations,
        reserved,
        spot_prices,
    };

    let mut requests = Vec::new();
    for lease in leases.iter().filter(|l| {
        !is_deleting(l) && has_finalizer(l) && matches!(phase(l), None | Some(LeasePhase::Pending))
    }) {
        match request_for(&ctx, lease, card.as_ref(), now) {
            Ok(request) => requests.push((lease.clone(), request)),
            Err(verdict) => apply_verdict(&ctx, lease, verdict, now).await?,
        }
    }
    let pending: Vec<LeaseRequest> = requests.iter().map(|(_, r)| r.clone()).collect();
    let decisions =
        admission::admit_in_order(&snapshot, &pending, now, ctx.settings.starvation_guard);
    for (lease_name, decision) in decisions {
        let Some((lease, request)) = requests.iter().find(|(_, r)| r.name == lease_name) else {
            continue;
        };
        apply_decision(&ctx, lease, request, decision, now).await?;
    }

    // Cost so far of active leases, and the pool's status.
    if let Some(card) = &card {
        for lease in leases
            .iter()
            .filter(|l| !is_deleting(l) && phase(l) == Some(LeasePhase::Active))
        {
            refresh_cost(&ctx, lease, card, &states, Some(utilisation), now).await?;
        }
    }
    write_pool_status(
        &ctx,
        &pool,
        &states,
        headroom_limit,
        &malformed,
        snapshot.spot_prices.as_ref().map(|p| p.cpu_core),
        now,
    )
    .await?;

    // Look again when the next lease ends or the next idle node matures.
    let next_end = leases
        .iter()
        .filter_map(|l| {
            l.status
                .as_ref()?
                .ends_at
                .as_ref()
                .and_then(|t| observe::instant(t).ok())
        })
        .filter(|t| *t > now)
        .min();
    let next_idle = states
        .values()
        .filter_map(|(_, s, _)| match s {
            NodeState::Idle { lendable_at, .. } => Some(*lendable_at),
            _ => None,
        })
        .min();
    let wake = [next_end, next_idle]
        .into_iter()
        .flatten()
        .map(|t| (t - now).to_std().unwrap_or_default() + Duration::from_millis(200))
        .fold(ctx.settings.resync, Duration::min);
    Ok(Action::requeue(wake))
}

fn spec_error(pool: &CapacityPool, message: String) -> Error {
    Error::Spec {
        object: format!("CapacityPool {}", pool.name_any()),
        message,
    }
}

/// A lease admitted moments ago whose status the cache has not caught up with yet owns its
/// nodes already: never sweep them.
fn recently_bound(leases: &[Arc<CapacityLease>], node: &Node) -> bool {
    let Some(key) = lease_of(node) else {
        return false;
    };
    leases.iter().any(|l| {
        observe::lease_key(l) == key
            && !is_deleting(l)
            && matches!(phase(l), None | Some(LeasePhase::Pending))
    })
}

fn headroom_limit(pool: &CapacityPool, nodes: usize) -> usize {
    if !pool.spec.lending_enabled {
        return 0;
    }
    match pool
        .spec
        .headroom
        .as_ref()
        .and_then(|h| observe::keep(h).ok())
    {
        Some(keep) => keep.lend_limit(nodes),
        None => nodes,
    }
}

fn billing_class(class: offpeak_api::LeaseClass) -> offpeak_billing::rate::LeaseClass {
    match class {
        offpeak_api::LeaseClass::Spot => offpeak_billing::rate::LeaseClass::Spot,
        offpeak_api::LeaseClass::Reserved => offpeak_billing::rate::LeaseClass::Reserved,
    }
}

/// Writes each node's idle clock when it changed (and removes it from busy nodes).
async fn update_idle_clocks(
    ctx: &Context,
    states: &BTreeMap<String, (Arc<Node>, NodeState, Resources)>,
) -> Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    for (name, (node, state, _)) in states {
        let want = state.idle_since();
        let written = node.annotations().contains_key(IDLE_SINCE);
        // Unchanged: the clock reads as the instant wanted, or there is none and none is wanted.
        if observe::idle_since(node) == want && (want.is_some() || !written) {
            continue;
        }
        let value = want.map(|t| observe::timestamp(t).to_string());
        let patch = json!({"metadata": {"annotations": {IDLE_SINCE: value}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(())
}

/// What the lease asks, or why it may not ask at all.
fn request_for(
    ctx: &Context,
    lease: &CapacityLease,
    card: Option<&offpeak_billing::rate::RateCard>,
    now: DateTime<Utc>,
) -> std::result::Result<LeaseRequest, Verdict> {
    let invalid = |message: String| Verdict::Reject {
        reason: "InvalidSpec",
        message,
    };
    let ask = observe::ask(lease).map_err(invalid)?;
    let term = observe::term(lease, now).map_err(invalid)?;
    let max_price = lease
        .spec
        .max_price_per_hour
        .as_ref()
        .map(|m| observe::decimal(m.as_str()))
        .transpose()
        .map_err(invalid)?;
    let namespace = lease.namespace().unwrap_or_default();
    let tenant = tenant_view(ctx, &namespace, now);
    let hours = Decimal::from((term.end - term.start).num_seconds()) / Decimal::from(3600);
    let worst_case = match (lease.spec.class, max_price) {
        (offpeak_api::LeaseClass::Spot, Some(max)) => max * hours,
        _ => match (&ask, card) {
            (crate::plan::node_choice::Ask::Resources(r), Some(card)) => {
                pricing::hourly_prices(card, billing_class(lease.spec.class), None).hourly(r)
                    * hours
            }
            _ => Decimal::ZERO,
        },
    };
    match eligibility::check(
        tenant.as_ref(),
        &namespace,
        lease.spec.pool.as_str(),
        worst_case,
    ) {
        Verdict::Eligible => {}
        other => return Err(other),
    }
    let created = lease
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| {
            DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        })
        .unwrap_or(now);
    Ok(LeaseRequest {
        name: observe::lease_key(lease),
        class: observe::class(lease),
        ask,
        term,
        max_price,
        created,
    })
}

/// The tenant owning `namespace`, with what it owes and has committed so far.
fn tenant_view(ctx: &Context, namespace: &str, now: DateTime<Utc>) -> Option<TenantView> {
    let ns = ctx.stores.namespaces.get(&ObjectRef::new(namespace))?;
    let tenant_name = ns.labels().get(crate::names::TENANT)?.clone();
    let tenant = ctx.stores.tenants.get(&ObjectRef::new(&tenant_name))?;
    if !tenant
        .spec
        .namespaces
        .iter()
        .any(|n| n.as_str() == namespace)
    {
        return None;
    }
    let owned: BTreeSet<&str> = tenant.spec.namespaces.iter().map(|n| n.as_str()).collect();
    let leases = ctx.stores.leases.state();
    let mine = leases
        .iter()
        .filter(|l| owned.contains(l.namespace().as_deref().unwrap_or_default()));
    let mut open_balance = Decimal::ZERO;
    let mut committed = Decimal::ZERO;
    for lease in mine {
        let Some(status) = &lease.status else {
            continue;
        };
        if let Some(cost) = status
            .cost_so_far
            .as_ref()
            .and_then(|c| observe::decimal(c.amount.as_str()).ok())
        {
            open_balance += cost;
        }
        if status.phase == Some(LeasePhase::Active)
            && let (Some(max), Some(end)) = (
                lease
                    .spec
                    .max_price_per_hour
                    .as_ref()
                    .and_then(|m| observe::decimal(m.as_str()).ok()),
                status
                    .ends_at
                    .as_ref()
                    .and_then(|t| observe::instant(t).ok()),
            )
        {
            let hours = Decimal::from((end - now).num_seconds().max(0)) / Decimal::from(3600);
            committed += max * hours;
        }
    }
    Some(TenantView {
        name: tenant_name,
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
        open_balance,
        committed,
    })
}

async fn apply_verdict(
    ctx: &Context,
    lease: &CapacityLease,
    verdict: Verdict,
    now: DateTime<Utc>,
) -> Result<()> {
    let (phase, reason, message, event_type) = match verdict {
        Verdict::Eligible => return Ok(()),
        Verdict::Wait { reason, message } => {
            (LeasePhase::Pending, reason, message, EventType::Normal)
        }
        Verdict::Reject { reason, message } => {
            (LeasePhase::Rejected, reason, message, EventType::Warning)
        }
    };
    set_pending_or_rejected(ctx, lease, phase, reason, &message, event_type, now).await
}

async fn set_pending_or_rejected(
    ctx: &Context,
    lease: &CapacityLease,
    phase: LeasePhase,
    reason: &str,
    message: &str,
    event_type: EventType,
    now: DateTime<Utc>,
) -> Result<()> {
    let old = lease.status.clone().unwrap_or_default();
    let was = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Admitted")
        .map(|c| c.reason.clone());
    let status = CapacityLeaseStatus {
        phase: Some(phase),
        conditions: conditions::set(
            &old.conditions,
            "Admitted",
            false,
            reason,
            message,
            lease.metadata.generation,
            now,
        ),
        observed_generation: lease.metadata.generation,
        ..Default::default()
    };
    if write_status(ctx, lease, status).await? && was.as_deref() != Some(reason) {
        let what = if phase == LeasePhase::Rejected {
            "Rejected"
        } else {
            "Pending"
        };
        tracing::info!(lease = %observe::lease_key(lease), reason, message, "lease {what}");
        ctx.event(lease, event_type, reason, format!("{what}: {message}"))
            .await;
    }
    Ok(())
}

async fn apply_decision(
    ctx: &Context,
    lease: &CapacityLease,
    request: &LeaseRequest,
    decision: Decision,
    now: DateTime<Utc>,
) -> Result<()> {
    match decision {
        Decision::Admit { nodes } => {
            let tenant = ctx
                .stores
                .namespaces
                .get(&ObjectRef::new(&lease.namespace().unwrap_or_default()))
                .and_then(|ns| ns.labels().get(crate::names::TENANT).cloned())
                .unwrap_or_default();
            bind_nodes(ctx, &nodes, &tenant, &request.name).await?;
            let old = lease.status.clone().unwrap_or_default();
            let message = format!("bound {} node(s): {}", nodes.len(), nodes.join(", "));
            let status = CapacityLeaseStatus {
                phase: Some(LeasePhase::Active),
                conditions: conditions::set(
                    &old.conditions,
                    "Admitted",
                    true,
                    "Admitted",
                    &message,
                    lease.metadata.generation,
                    now,
                ),
                bound_nodes: nodes
                    .iter()
                    .map(|n| offpeak_api::NodeName::new(n.clone()))
                    .collect(),
                node_count: i32::try_from(nodes.len()).ok(),
                admitted_at: Some(observe::timestamp(request.term.start)),
                ends_at: Some(observe::timestamp(request.term.end)),
                observed_generation: lease.metadata.generation,
                ..Default::default()
            };
            write_status(ctx, lease, status).await?;
            tracing::info!(lease = %request.name, nodes = ?nodes, ends_at = %request.term.end, "lease admitted");
            ctx.event(
                lease,
                EventType::Normal,
                "Admitted",
                format!(
                    "admitted and {message}; ends at {}",
                    request
                        .term
                        .end
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            )
            .await;
            Ok(())
        }
        Decision::Wait { reason, message } => {
            set_pending_or_rejected(
                ctx,
                lease,
                LeasePhase::Pending,
                reason.as_str(),
                &message,
                EventType::Normal,
                now,
            )
            .await
        }
        Decision::Reject { reason, message } => {
            set_pending_or_rejected(
                ctx,
                lease,
                LeasePhase::Rejected,
                reason.as_str(),
                &message,
                EventType::Warning,
                now,
            )
            .await
        }
    }
}

async fn end_lease(ctx: &Context, lease: &CapacityLease, now: DateTime<Utc>) -> Result<()> {
    let nodes: BTreeSet<String> = lease
        .status
        .as_ref()
        .map(|s| s.bound_nodes.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    if !return_nodes(ctx, &nodes).await? {
        return Ok(()); // pods are leaving; the next pass finishes the job
    }
    let old = lease.status.clone().unwrap_or_default();
    let status = CapacityLeaseStatus {
        phase: Some(LeasePhase::Ended),
        conditions: conditions::set(
            &old.conditions,
            "Admitted",
            false,
            "TermEnded",
            "the lease's term is over; its nodes went back to the pool",
            lease.metadata.generation,
            now,
        ),
        ..old
    };
    write_status(ctx, lease, status).await?;
    tracing::info!(lease = %observe::lease_key(lease), "lease ended at its term");
    ctx.event(
        lease,
        EventType::Normal,
        "Ended",
        format!(
            "term over; nodes {} returned",
            nodes.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
    .await;
    Ok(())
}

async fn refresh_cost(
    ctx: &Context,
    lease: &CapacityLease,
    card: &offpeak_billing::rate::RateCard,
    states: &BTreeMap<String, (Arc<Node>, NodeState, Resources)>,
    utilisation: Option<Decimal>,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(status) = &lease.status else {
        return Ok(());
    };
    let Some(admitted) = status
        .admitted_at
        .as_ref()
        .and_then(|t| observe::instant(t).ok())
    else {
        return Ok(());
    };
    let bound: Resources = status
        .bound_nodes
        .iter()
        .filter_map(|n| states.get(n.as_str()).map(|(_, _, a)| *a))
        .sum();
    let cost = pricing::cost_so_far(
        card,
        billing_class(lease.spec.class),
        &bound,
        utilisation,
        admitted,
        now,
    );
    let amount = offpeak_api::Amount {
        amount: offpeak_api::SignedMoney::new(cost.to_string()),
        currency: offpeak_api::Currency::new(card.currency.code()),
    };
    let summary = format!("{cost} {}", card.currency.code());
    if status.cost_so_far.as_ref() == Some(&amount) {
        return Ok(());
    }
    let updated = CapacityLeaseStatus {
        cost_so_far: Some(amount),
        cost_summary: Some(summary),
        ..status.clone()
    };
    write_status(ctx, lease, updated).await?;
    Ok(())
}

async fn write_pool_status(
    ctx: &Context,
    pool: &CapacityPool,
    states: &BTreeMap<String, (Arc<Node>, NodeState, Resources)>,
    headroom_limit: usize,
    malformed: &[String],
    spot_per_core_hour: Option<Decimal>,
    now: DateTime<Utc>,
) -> Result<()> {
    let name = pool.name_any();
    let priced = spot_per_core_hour.is_some();
    let count = |f: fn(&NodeState) -> bool| states.values().filter(|(_, s, _)| f(s)).count();
    let total = states.len();
    let lendable = count(|s| s.is_lendable());
    let lent = count(|s| matches!(s, NodeState::Lent { .. }));
    let headroom = total - headroom_limit.min(total);
    for (state, value) in [
        ("total", total),
        ("lendable", lendable),
        ("lent", lent),
        ("headroom", headroom),
    ] {
        ctx.metrics
            .pool_nodes
            .with_label_values(&[&name, state])
            .set(value as i64);
    }
    let old = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let (ready, reason, message) = if total == 0 {
        (
            false,
            "NoNodes",
            "the node selector selects no node".to_string(),
        )
    } else if !malformed.is_empty() {
        (false, "MalformedNodes", malformed.join("; "))
    } else if !pool.spec.lending_enabled {
        (
            true,
            "LendingDisabled",
            format!("{total} node(s); lending is disabled"),
        )
    } else {
        (
            true,
            "Observed",
            format!(
                "{total} node(s): {lendable} lendable, {lent} lent, {headroom} kept as headroom"
            ),
        )
    };
    let mut conds = conditions::set(
        &old.conditions,
        "Ready",
        ready,
        reason,
        &message,
        generation,
        now,
    );
    conds = conditions::set(
        &conds,
        "Priced",
        priced,
        if priced {
            "RateCardInForce"
        } else {
            "NoRateCard"
        },
        if priced {
            "a rate card prices this pool now"
        } else {
            "no rate card prices this pool now; Spot leases wait"
        },
        generation,
        now,
    );
    let as_i32 = |v: usize| i32::try_from(v).ok();
    let status = CapacityPoolStatus {
        nodes: as_i32(total),
        lendable_nodes: as_i32(lendable),
        lent_nodes: as_i32(lent),
        headroom_nodes: as_i32(headroom),
        spot_price_per_core_hour: spot_per_core_hour
            .map(|p| offpeak_api::Money::new(p.normalize().to_string())),
        conditions: conds,
        observed_generation: generation,
    };
    if pool.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let was_ready = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone());
    let api: Api<CapacityPool> = Api::all(ctx.client.clone());
    let body =
        json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool", "status": status});
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    if was_ready.as_deref() != Some(reason) && !ready {
        ctx.event(pool, EventType::Warning, reason, message).await;
    }
    Ok(())
}
