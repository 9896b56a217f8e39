//! The statuses the pool pass writes: a lease's at each transition, and the pool's.

use chrono::{DateTime, Utc};
use offpeak_api::{
    Amount, CapacityLeaseStatus, CapacityPoolStatus, ConditionStatus, Currency, EndReason,
    LeaseBinding, LeasePhase, Money, NodeName, PeakReservationStatus, Quantity, SignedMoney,
    UtilisationChange,
};
use rust_decimal::Decimal;

use super::reclaim::Cause;
use super::view::{Confinement, LeaseView, Ledger, PoolView, ReservationView};
use super::{Note, join};
use crate::observe::timestamp;
use crate::plan::calendar::Interval;
use crate::plan::conditions;
use crate::plan::resources::{Resources, format_bytes, format_cpu};

pub const ADMITTED: &str = "Admitted";
pub const NODES_RETURNED: &str = "NodesReturned";
pub const SYNCED: &str = "Synced";
pub const RECLAIMING: &str = "Reclaiming";
pub const RECLAIM_LIKELY: &str = "ReclaimLikely";

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

/// The message of the lease's ReclaimLikely condition while it holds.
pub fn likely(status: &CapacityLeaseStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == RECLAIM_LIKELY && c.status == ConditionStatus::True)
        .map(|c| c.message.as_str())
}

/// ReclaimLikely for `cause`, or no longer when `cause` is none (a lease that was never
/// told gets no condition).
pub fn set_likely(
    next: &mut CapacityLeaseStatus,
    generation: Option<i64>,
    cause: Option<&Cause>,
    now: DateTime<Utc>,
) {
    let present = next.conditions.iter().any(|c| c.type_ == RECLAIM_LIKELY);
    match cause {
        Some(cause) => {
            next.conditions = conditions::set(
                &next.conditions,
                RECLAIM_LIKELY,
                true,
                cause.reason,
                &cause.message,
                generation,
                now,
            )
        }
        None if present => {
            next.conditions = conditions::set(
                &next.conditions,
                RECLAIM_LIKELY,
                false,
                "NotLikely",
                "no reclaim is expected soon",
                generation,
                now,
            )
        }
        None => {}
    }
}

/// Notice given at `now` for `cause`; the nodes go back at `deadline`.
pub fn reclaiming(
    lease: &LeaseView,
    mut next: CapacityLeaseStatus,
    cause: &Cause,
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
) -> CapacityLeaseStatus {
    let reserved = lease.spec.class == offpeak_api::LeaseClass::Reserved;
    next.phase = Some(LeasePhase::Reclaiming);
    next.notice_given_at = Some(timestamp(now));
    next.reclaim_deadline = Some(timestamp(deadline));
    next.reclaim_reason = Some(if cause.emergency {
        format!("{}Emergency", cause.reason)
    } else {
        cause.reason.to_string()
    });
    if reserved && cause.emergency {
        next.sla_credit_reason = Some(format!(
            "a Reserved lease reclaimed before its term in an emergency: {}",
            cause.message
        ));
    }
    next.conditions = conditions::set(
        &next.conditions,
        RECLAIMING,
        true,
        cause.reason,
        &format!(
            "{}; the tenant's pods are evicted at {}",
            cause.message,
            timestamp(deadline).as_str()
        ),
        lease.generation,
        now,
    );
    if next.conditions.iter().any(|c| c.type_ == RECLAIM_LIKELY) {
        next.conditions = conditions::set(
            &next.conditions,
            RECLAIM_LIKELY,
            false,
            "NoticeGiven",
            "notice is given",
            lease.generation,
            now,
        );
    }
    next
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
    if next.conditions.iter().any(|c| c.type_ == RECLAIMING) {
        next.conditions = conditions::set(
            &next.conditions,
            RECLAIMING,
            false,
            "Ended",
            "the notice ran out and the lease ended",
            lease.generation,
            now,
        );
    }
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

/// Some of the lease's nodes are gone: from `now` it holds `nodes` (`capacity` in all).
pub fn lost_nodes(
    lease: &LeaseView,
    mut next: CapacityLeaseStatus,
    nodes: &[String],
    capacity: &Resources,
    message: &str,
    now: DateTime<Utc>,
) -> CapacityLeaseStatus {
    let bound: Vec<NodeName> = nodes.iter().map(|n| NodeName::new(n.clone())).collect();
    next.bindings.push(LeaseBinding {
        at: timestamp(now),
        nodes: bound.clone(),
        cpu: Quantity(format_cpu(capacity.cpu_millis)),
        memory: Quantity(format_bytes(capacity.memory_bytes)),
        gpu: Quantity(capacity.gpus.to_string()),
    });
    // The list is bounded; the oldest entries are the ones billed long ago.
    let keep = next.bindings.len().saturating_sub(64);
    next.bindings.drain(..keep);
    next.node_count = i32::try_from(nodes.len()).ok();
    next.bound_nodes = bound;
    next.conditions = conditions::set(
        &next.conditions,
        "NodesLost",
        true,
        "NodeGone",
        message,
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

/// A pool's nodes once the plan is applied: counts, and the nodes that cannot be used.
pub struct PoolNodes {
    pub total: usize,
    pub lendable: usize,
    pub lent: usize,
    pub headroom: usize,
    /// Nodes whose allocatable cannot be read, with why.
    pub malformed: Vec<String>,
    /// Nodes Offpeak never lends, with why.
    pub withheld: Vec<String>,
}

/// The pool's status, and an Event when it stops being Ready.
pub fn pool(
    view: &PoolView,
    nodes: PoolNodes,
    utilisation: Decimal,
    spot_per_core_hour: Option<Decimal>,
    now: DateTime<Utc>,
) -> (CapacityPoolStatus, Option<Note>, bool) {
    let PoolNodes {
        total,
        lendable,
        lent,
        headroom,
        malformed,
        withheld,
    } = nodes;
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
    // Nodes Offpeak never lends, and why (a control-plane node, a taint it does not own).
    let withheld_message = if withheld.is_empty() {
        "every node of the pool may be lent when it is idle".to_string()
    } else {
        format!(
            "{} node(s) are never lent: {}",
            withheld.len(),
            withheld.join("; ")
        )
    };
    conds = conditions::set(
        &conds,
        "Withheld",
        !withheld.is_empty(),
        if withheld.is_empty() {
            "NoneWithheld"
        } else {
            "NodesWithheld"
        },
        &withheld_message,
        generation,
        now,
    );
    conds = match &view.confinement {
        Confinement::InPlace => conditions::set(
            &conds,
            "Confined",
            true,
            "ConfinementInPlace",
            "the policies and webhooks that confine tenant pods are in place",
            generation,
            now,
        ),
        Confinement::Broken { since, message } => conditions::set(
            &conds,
            "Confined",
            false,
            "ConfinementMissing",
            &format!(
                "since {}: {message}; no lease is admitted until it is back",
                timestamp(*since).as_str()
            ),
            generation,
            now,
        ),
    };
    conds = match &view.ledger {
        Ledger::Starting => conds,
        Ledger::Healthy => conditions::set(
            &conds,
            "Metered",
            true,
            "LedgerWritable",
            "every billing fact reaches the ledger",
            generation,
            now,
        ),
        Ledger::Down { since, message } => conditions::set(
            &conds,
            "Metered",
            false,
            "LedgerUnavailable",
            &format!(
                "the ledger is unavailable since {}: {message}; billing facts wait and are written when it is back",
                timestamp(*since).as_str()
            ),
            generation,
            now,
        ),
    };
    let as_i32 = |v: usize| i32::try_from(v).ok();
    let (utilisation_history, held_back) = history(
        &old.utilisation_history,
        utilisation,
        spot_per_core_hour,
        now,
    );
    let status = CapacityPoolStatus {
        nodes: as_i32(total),
        lendable_nodes: as_i32(lendable),
        lent_nodes: as_i32(lent),
        headroom_nodes: as_i32(headroom),
        spot_price_per_core_hour: spot_per_core_hour.map(|p| Money::new(p.normalize().to_string())),
        utilisation_history,
        conditions: conds,
        observed_generation: generation,
    };
    let was = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str());
    let note = (!ready && was != Some(reason))
        .then(|| Note::warning(reason, message))
        .or_else(|| confinement_lost(&old.conditions, &view.confinement));
    (status, note, held_back)
}

/// A Warning when confinement is found missing (once, as the condition turns False).
fn confinement_lost(old: &[offpeak_api::Condition], confinement: &Confinement) -> Option<Note> {
    let message = confinement.message()?;
    let was_false = old
        .iter()
        .any(|c| c.type_ == "Confined" && c.status == offpeak_api::ConditionStatus::False);
    (!was_false).then(|| {
        Note::warning(
            "ConfinementMissing",
            format!("tenant pod confinement is not in place ({message}); no lease is admitted until it is"),
        )
    })
}

/// The history with `utilisation` from `now` on, if it changed: the last 64 changes; and
/// whether a change was held back to the next second.
fn history(
    old: &[UtilisationChange],
    utilisation: Decimal,
    spot_per_core_hour: Option<Decimal>,
    now: DateTime<Utc>,
) -> (Vec<UtilisationChange>, bool) {
    let text = utilisation.to_string();
    let spot = spot_per_core_hour.map(|p| Money::new(p.normalize().to_string()));
    let mut history = old.to_vec();
    let last = history.last();
    // One change per second at most, so that each is a billing fact of its own (keyed by
    // its second): a second change within the same second is recorded at the next one.
    let same_second = last.is_some_and(|l| l.at == timestamp(now));
    let changed = last.is_none_or(|l| l.utilisation != text || l.spot_price_per_core_hour != spot);
    if changed && !same_second {
        history.push(UtilisationChange {
            at: timestamp(now),
            utilisation: text,
            spot_price_per_core_hour: spot,
        });
    }
    let keep = history.len().saturating_sub(64);
    history.drain(..keep);
    (history, changed && same_second)
}

/// A reservation's status now, the Events its window's start or end makes, and when it
/// next changes.
pub fn reservation(
    reservation: &ReservationView,
    pool: &str,
    total: usize,
    now: DateTime<Utc>,
) -> (PeakReservationStatus, Vec<Note>, Option<DateTime<Utc>>) {
    let old = reservation.status.clone().unwrap_or_default();
    let generation = reservation.generation;
    let r = match &reservation.reservation {
        Ok(r) => r,
        Err(message) => {
            let status = PeakReservationStatus {
                conditions: conditions::set(
                    &old.conditions,
                    "Ready",
                    false,
                    "InvalidSpec",
                    message,
                    generation,
                    now,
                ),
                observed_generation: generation,
                ..Default::default()
            };
            let note = (old.observed_generation != generation)
                .then(|| Note::warning("InvalidSpec", message.clone()));
            return (status, note.into_iter().collect(), None);
        }
    };
    let held = total - r.keep.lend_limit(total);
    let windows = r.calendar.whole_windows(Interval::new(
        now - chrono::Duration::days(2),
        now + chrono::Duration::days(400),
    ));
    let current = windows.iter().find(|w| w.contains(now)).copied();
    let next = current.or_else(|| windows.iter().find(|w| w.start > now).copied());
    let active = current.is_some();
    let (reason, message) = match (current, next) {
        (Some(w), _) => (
            "WindowOpen",
            format!(
                "keeps {held} of pool {pool}'s {total} node(s) internal until {}",
                timestamp(w.end).as_str()
            ),
        ),
        (None, Some(w)) => (
            "WindowClosed",
            format!(
                "the next window keeps {held} node(s) of pool {pool} internal from {} to {}",
                timestamp(w.start).as_str(),
                timestamp(w.end).as_str()
            ),
        ),
        (None, None) => ("NoWindowAhead", "no window ahead".to_string()),
    };
    let mut conds = conditions::set(
        &old.conditions,
        "Ready",
        true,
        "Valid",
        "the reservation's calendar reads well",
        generation,
        now,
    );
    conds = conditions::set(&conds, "Active", active, reason, &message, generation, now);
    let status = PeakReservationStatus {
        active: Some(active),
        next_start: next.map(|w| timestamp(w.start)),
        next_end: next.map(|w| timestamp(w.end)),
        nodes_held: i32::try_from(held).ok(),
        conditions: conds,
        observed_generation: generation,
    };
    let mut notes = Vec::new();
    match (old.active, active) {
        (Some(false) | None, true) => notes.push(Note::normal(
            "WindowStarted",
            format!("peak reservation window started: {message}"),
        )),
        (Some(true), false) => notes.push(Note::normal(
            "WindowEnded",
            format!("peak reservation window ended; {message}"),
        )),
        _ => {}
    }
    let wake = match (current, next) {
        (Some(w), _) => Some(w.end),
        (None, Some(w)) => Some(w.start),
        _ => None,
    };
    (status, notes, wake)
}
