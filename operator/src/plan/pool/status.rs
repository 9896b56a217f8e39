//! The statuses the pool pass writes: a lease's at each transition, and the pool's.

use chrono::{DateTime, Utc};
use offpeak_api::{
    Amount, CapacityLeaseStatus, CapacityPoolStatus, ConditionStatus, Currency, EndReason,
    LeaseBinding, LeasePhase, Money, NodeName, Quantity, SignedMoney,
};
use rust_decimal::Decimal;

use super::view::{LeaseView, PoolView};
use super::{Note, join};
use crate::observe::timestamp;
use crate::plan::calendar::Interval;
use crate::plan::conditions;
use crate::plan::resources::{Resources, format_bytes, format_cpu};

pub const ADMITTED: &str = "Admitted";
pub const NODES_RETURNED: &str = "NodesReturned";
pub const SYNCED: &str = "Synced";

/// The reason of the lease's Admitted condition.
pub fn admitted_reason(status: &CapacityLeaseStatus) -> Option<&str> {
    condition_reason(status, ADMITTED)
}

fn condition_reason<'s>(status: &'s CapacityLeaseStatus, type_: &str) -> Option<&'s str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

/// Whether the lease's nodes were all given back.
pub fn nodes_are_back(status: &CapacityLeaseStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == NODES_RETURNED && c.status == ConditionStatus::True)
}

/// Waiting (Pending) or never to be served (Rejected), for `reason`.
pub fn held(
    lease: &LeaseView,
    phase: LeasePhase,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> CapacityLeaseStatus {
    CapacityLeaseStatus {
        phase: Some(phase),
        conditions: conditions::set(
            &lease.status.conditions,
            ADMITTED,
            false,
            reason,
            message,
            lease.generation,
            now,
        ),
        observed_generation: lease.generation,
        ..Default::default()
    }
}

/// Admitted at `now` and bound to `nodes`, which hold `capacity` in all.
pub fn admitted(
    lease: &LeaseView,
    nodes: &[String],
    capacity: &Resources,
    term: Interval,
    now: DateTime<Utc>,
) -> CapacityLeaseStatus {
    let message = format!("bound {} node(s): {}", nodes.len(), nodes.join(", "));
    let bound: Vec<NodeName> = nodes.iter().map(|n| NodeName::new(n.clone())).collect();
    CapacityLeaseStatus {
        phase: Some(LeasePhase::Active),
        conditions: conditions::set(
            &lease.status.conditions,
            ADMITTED,
            true,
            ADMITTED,
            &message,
            lease.generation,
            now,
        ),
        bindings: vec![LeaseBinding {
            at: timestamp(now),
            nodes: bound.clone(),
            cpu: Quantity(format_cpu(capacity.cpu_millis)),
            memory: Quantity(format_bytes(capacity.memory_bytes)),
            gpu: Quantity(capacity.gpus.to_string()),
        }],
        node_count: i32::try_from(nodes.len()).ok(),
        bound_nodes: bound,
        admitted_at: Some(timestamp(now)),
        ends_at: Some(timestamp(term.end)),
        observed_generation: lease.generation,
        ..Default::default()
    }
}

/// The lease ended at `now` for `reason`; its nodes are going back.
pub fn ended(
    lease: &LeaseView,
    mut next: CapacityLeaseStatus,
    reason: EndReason,
    pool: &str,
    now: DateTime<Utc>,
) -> CapacityLeaseStatus {
    let (why, message) = match reason {
        EndReason::Expired => ("TermEnded", "the lease's term is over"),
        EndReason::Cancelled => ("Cancelled", "the lease was deleted"),
        EndReason::Reclaimed => ("Reclaimed", "the pool took its capacity back after notice"),
        EndReason::PriceExceeded => ("PriceExceeded", "the spot price rose above maxPricePerHour"),
    };
    next.phase = Some(LeasePhase::Ended);
    next.ended_at = Some(timestamp(now));
    next.end_reason = Some(reason);
    next.conditions = conditions::set(
        &next.conditions,
        ADMITTED,
        false,
        why,
        &format!("{message}; it ended at {}", timestamp(now).as_str()),
        lease.generation,
        now,
    );
    next.conditions = conditions::set(
        &next.conditions,
        NODES_RETURNED,
        false,
        "Returning",
        &format!(
            "nodes {} are going back to pool {pool}",
            join(&next.bound_nodes)
        ),
        lease.generation,
        now,
    );
    next
}

/// Every node of the ended lease is back in the pool.
pub fn nodes_returned(
    lease: &LeaseView,
    mut next: CapacityLeaseStatus,
    pool: &str,
    now: DateTime<Utc>,
) -> CapacityLeaseStatus {
    next.conditions = conditions::set(
        &next.conditions,
        NODES_RETURNED,
        true,
        NODES_RETURNED,
        &format!("nodes {} went back to pool {pool}", join(&next.bound_nodes)),
        lease.generation,
        now,
    );
    next
}

/// The write that failed last time succeeded or no longer needs doing.
pub fn settle_synced(next: &mut CapacityLeaseStatus, generation: Option<i64>, now: DateTime<Utc>) {
    if next
        .conditions
        .iter()
        .any(|c| c.type_ == SYNCED && c.status != ConditionStatus::True)
    {
        next.conditions = conditions::set(
            &next.conditions,
            SYNCED,
            true,
            SYNCED,
            "every write for this lease went through",
            generation,
            now,
        );
    }
}

/// The cost estimate `cost` in `currency`, as of `at`.
pub fn set_cost(next: &mut CapacityLeaseStatus, cost: Decimal, currency: &str, at: DateTime<Utc>) {
    next.cost_so_far = Some(Amount {
        amount: SignedMoney::new(cost.to_string()),
        currency: Currency::new(currency),
    });
    next.cost_summary = Some(format!("{cost} {currency}"));
    next.cost_as_of = Some(timestamp(at));
}

/// Node counts of a pool once the plan is applied.
pub struct PoolCounts {
    pub total: usize,
    pub lendable: usize,
    pub lent: usize,
    pub headroom: usize,
}

/// The pool's status, and an Event when it stops being Ready.
pub fn pool(
    view: &PoolView,
    counts: PoolCounts,
    malformed: &[String],
    spot_per_core_hour: Option<Decimal>,
    now: DateTime<Utc>,
) -> (CapacityPoolStatus, Option<Note>) {
    let PoolCounts {
        total,
        lendable,
        lent,
        headroom,
    } = counts;
    let old = view.status.clone().unwrap_or_default();
    let generation = view.generation;
    let (ready, reason, message) = match &view.settings {
        Err(e) => (false, "InvalidSpec", e.clone()),
        Ok(_) if total == 0 => (
            false,
            "NoNodes",
            "the node selector selects no node".to_string(),
        ),
        Ok(_) if !malformed.is_empty() => (false, "MalformedNodes", malformed.join("; ")),
        Ok(settings) if !settings.lending_enabled => (
            true,
            "LendingDisabled",
            format!("{total} node(s); lending is disabled"),
        ),
        Ok(_) => (
            true,
            "Observed",
            format!(
                "{total} node(s): {lendable} lendable, {lent} lent, {headroom} kept as headroom"
            ),
        ),
    };
    let priced = spot_per_core_hour.is_some();
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
        spot_price_per_core_hour: spot_per_core_hour.map(|p| Money::new(p.normalize().to_string())),
        utilisation_history: old.utilisation_history.clone(),
        conditions: conds,
        observed_generation: generation,
    };
    let was = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str());
    let note = (!ready && was != Some(reason)).then(|| Note::warning(reason, message));
    (status, note)
}
