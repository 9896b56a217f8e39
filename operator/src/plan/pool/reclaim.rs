//! Which leases give their nodes back, why, and by when: the pool's demands on lent
//! capacity, met by leases in reclaim order.
//!
//! Demands, each a number of nodes (or an amount of capacity) needed back by an instant:
//! - **A peak reservation's window** starting at S that lets the pool lend L nodes: the
//!   leases still holding at S beyond L give their nodes back by S. Spot leases get notice
//!   at S − notice, so it runs out when the window starts (or at once, with full notice, if
//!   that moment has passed); before that, from S − notice − reclaimAdvisory, they are told
//!   it is likely (ReclaimLikely).
//! - **Headroom**: more lent than the pool's headroom allows (the pool shrank or its policy
//!   changed): Spot leases give back the excess now.
//! - **Internal pressure**: internal pods of the pool unschedulable for
//!   `internalPressure.unschedulableFor` take back Spot capacity covering their requests
//!   (less what is already on its way back); pending ones not yet that long make it likely.
//! - **Price**: a Spot lease whose nodes cost more per hour at the spot price now than its
//!   maxPricePerHour ends after notice (PriceExceeded).
//!
//! Order: Spot before Reserved, then the lowest price per node-hour first (a Spot lease's
//! maxPricePerHour, a Reserved lease's rate), then the youngest. Non-emergency reclaims
//! (headroom, internal pressure, price) pass over leases younger than the pool's
//! minimumRuntime. A Reserved lease is reclaimed only in an emergency: when a window or
//! internal pods unschedulable past `emergencyAfter` need more than every Spot lease can
//! give. Admission keeps Reserved leases within every window known when they were admitted,
//! so such a window was not foreseeable (it was booked or edited later, or nodes were
//! lost); the reclaim earns the lease the rate card's SLA credit.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use offpeak_api::{LeaseClass, LeasePhase};
use rust_decimal::Decimal;

use super::view::{LeaseView, PendingPod, PoolSettings};
use crate::observe;
use crate::plan::admission::Reservation;
use crate::plan::calendar::Interval;
use crate::plan::resources::Resources;

/// Why a lease gives its nodes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// PeakReservation, Headroom, InternalPressure or PriceExceeded.
    pub reason: &'static str,
    /// For people: which reservation, which pods, which price.
    pub message: String,
    /// A Reserved lease taken back early: it earns the SLA credit.
    pub emergency: bool,
}

/// What the pool asks of one lease now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Notice now; the nodes go back at `deadline`.
    Notice {
        cause: Cause,
        deadline: DateTime<Utc>,
    },
    /// Not yet, but likely: a window at `at` or pressure building.
    Likely { cause: Cause },
}

/// The pool's asks of its leases, and when to look again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reclaim {
    pub asks: BTreeMap<String, Ask>,
    pub wake: Vec<DateTime<Utc>>,
}

/// A lease that holds nodes, as reclaim sees it.
#[derive(Clone, Debug)]
struct Holder<'a> {
    lease: &'a LeaseView,
    nodes: usize,
    capacity: Resources,
    admitted: DateTime<Utc>,
    ends: DateTime<Utc>,
    /// Price per node-hour, for the order.
    price: Decimal,
    /// Already Reclaiming: its nodes are on their way back by this instant.
    deadline: Option<DateTime<Utc>>,
}

pub struct Inputs<'a> {
    pub settings: &'a PoolSettings,
    pub leases: &'a [LeaseView],
    pub reservations: &'a [Reservation],
    pub pending: &'a [PendingPod],
    /// Nodes in the pool.
    pub total: usize,
    /// The most the pool may lend by its headroom.
    pub headroom_limit: usize,
    /// The capacity of the pool's idle nodes that nobody holds: unschedulable pods can go
    /// there without any reclaim.
    pub idle_capacity: Resources,
    /// The capacity of each lease's nodes.
    pub capacity: &'a dyn Fn(&LeaseView) -> Resources,
    /// What a lease's nodes cost per hour at the spot price now, if a card prices them.
    pub spot_hourly: &'a dyn Fn(&LeaseView) -> Option<Decimal>,
    /// What a lease pays per hour by its class (maxPricePerHour for Spot).
    pub rate: &'a dyn Fn(&LeaseView) -> Decimal,
    pub now: DateTime<Utc>,
}

pub fn plan<'a>(inputs: &Inputs<'a>) -> Reclaim {
    let now = inputs.now;
    let holders: Vec<Holder<'a>> = inputs
        .leases
        .iter()
        .filter(|l| l.holds_nodes())
        .filter_map(|lease| {
            let status = &lease.status;
            let admitted = observe::instant(status.admitted_at.as_ref()?).ok()?;
            let ends = observe::instant(status.ends_at.as_ref()?).ok()?;
            let nodes = status.bound_nodes.len().max(1);
            let deadline = (lease.phase() == Some(LeasePhase::Reclaiming))
                .then(|| {
                    status
                        .reclaim_deadline
                        .as_ref()
                        .and_then(|t| observe::instant(t).ok())
                })
                .flatten();
            Some(Holder {
                lease,
                nodes,
                capacity: (inputs.capacity)(lease),
                admitted,
                ends,
                price: (inputs.rate)(lease) / Decimal::from(nodes),
                deadline,
            })
        })
        .collect();
    let mut order: Vec<&Holder> = holders.iter().collect();
    order.sort_by(|a, b| {
        let class = |h: &Holder| u8::from(h.lease.spec.class == LeaseClass::Reserved);
        class(a)
            .cmp(&class(b))
            .then(a.price.cmp(&b.price))
            .then(b.admitted.cmp(&a.admitted))
            .then(a.lease.name.cmp(&b.lease.name))
    });
    let mut out = Reclaim::default();
    // Leases already told, or told in this pass, are on their way back.
    let mut taken: BTreeSet<String> = holders
        .iter()
        .filter(|h| h.deadline.is_some())
        .map(|h| h.lease.uid.clone())
        .collect();
    let notice = inputs.settings.notice;
    let min_runtime = inputs.settings.minimum_runtime;

    // Price first: it concerns each Spot lease alone.
    for holder in order.iter().filter(|h| h.deadline.is_none()) {
        let lease = holder.lease;
        let (Some(max), Some(hourly)) = (
            lease
                .spec
                .max_price_per_hour
                .as_ref()
                .and_then(|m| observe::decimal(m.as_str()).ok()),
            (inputs.spot_hourly)(lease),
        ) else {
            continue;
        };
        if lease.spec.class == LeaseClass::Spot
            && hourly > max
            && holder.admitted + min_runtime <= now
        {
            taken.insert(lease.uid.clone());
            out.asks.insert(
                lease.uid.clone(),
                Ask::Notice {
                    cause: Cause {
                        reason: "PriceExceeded",
                        message: format!(
                            "the spot price now makes its {} node(s) cost {} per hour, above maxPricePerHour {max}",
                            holder.nodes,
                            hourly.round_dp(4).normalize()
                        ),
                        emergency: false,
                    },
                    deadline: now + notice,
                },
            );
        }
    }

    // Peak reservation windows, under way or starting within notice + advisory.
    let advisory = inputs.settings.reclaim_advisory;
    for reservation in inputs.reservations {
        let limit = reservation.keep.lend_limit(inputs.total);
        let horizon = Interval::new(now, now + notice + advisory + Duration::seconds(1));
        for window in reservation.calendar.whole_windows(horizon) {
            let start = window.start.max(now);
            // A lease told now is back by then at the earliest: one already on its way
            // back by then counts as back (a window under way is not met faster by
            // telling one more).
            let earliest = start.max(now + notice);
            // Who still holds nodes when the window starts: not those whose term ends
            // first, nor those already on their way back by then.
            let holding: Vec<&Holder> = order
                .iter()
                .copied()
                .filter(|h| h.ends > start)
                .filter(|h| h.deadline.is_none_or(|d| d > earliest))
                .filter(|h| !matches!(out.asks.get(&h.lease.uid), Some(Ask::Notice { .. })))
                .collect();
            let lent: usize = holding.iter().map(|h| h.nodes).sum();
            out.wake.push(window.start - notice - advisory);
            if lent <= limit {
                continue;
            }
            let mut excess = lent - limit;
            let notify_at = window.start - notice;
            for reserved in [false, true] {
                for holder in holding
                    .iter()
                    .filter(|h| (h.lease.spec.class == LeaseClass::Reserved) == reserved)
                    .filter(|h| h.deadline.is_none())
                {
                    if excess == 0 {
                        break;
                    }
                    excess = excess.saturating_sub(holder.nodes);
                    let cause = Cause {
                        reason: "PeakReservation",
                        message: format!(
                            "peak reservation {} lets pool lend at most {limit} node(s) from {}",
                            reservation.name,
                            observe::timestamp(window.start).as_str()
                        ),
                        emergency: reserved,
                    };
                    let ask = if now >= notify_at {
                        taken.insert(holder.lease.uid.clone());
                        Ask::Notice {
                            cause,
                            deadline: window.start.max(now + notice),
                        }
                    } else {
                        out.wake.push(notify_at);
                        Ask::Likely { cause }
                    };
                    out.asks.insert(holder.lease.uid.clone(), ask);
                }
            }
        }
    }

    // Headroom: Spot leases give back what the pool lends beyond it.
    let lent_now: usize = holders
        .iter()
        .filter(|h| !taken.contains(h.lease.uid.as_str()))
        .map(|h| h.nodes)
        .sum();
    if lent_now > inputs.headroom_limit {
        let mut excess = lent_now - inputs.headroom_limit;
        for holder in order
            .iter()
            .filter(|h| h.lease.spec.class == LeaseClass::Spot)
        {
            if excess == 0 {
                break;
            }
            if taken.contains(holder.lease.uid.as_str()) || holder.admitted + min_runtime > now {
                continue;
            }
            excess = excess.saturating_sub(holder.nodes);
            taken.insert(holder.lease.uid.clone());
            out.asks.insert(
                holder.lease.uid.clone(),
                Ask::Notice {
                    cause: Cause {
                        reason: "Headroom",
                        message: format!(
                            "pool headroom lets it lend {} node(s) and {lent_now} are lent",
                            inputs.headroom_limit
                        ),
                        emergency: false,
                    },
                    deadline: now + notice,
                },
            );
        }
    }

    // Internal pressure.
    let pressure = &inputs.settings.internal_pressure;
    let due = |after: Duration| -> Vec<&PendingPod> {
        inputs
            .pending
            .iter()
            .filter(|p| p.since + after <= now)
            .collect()
    };
    let overdue = due(pressure.unschedulable_for);
    let urgent = due(pressure.emergency_after);
    let building: Vec<&PendingPod> = inputs
        .pending
        .iter()
        .filter(|p| p.since + pressure.unschedulable_for > now)
        .collect();
    for pending in inputs
        .pending
        .iter()
        .filter(|p| p.since + pressure.unschedulable_for > now)
    {
        out.wake.push(pending.since + pressure.unschedulable_for);
    }
    for pending in inputs
        .pending
        .iter()
        .filter(|p| p.since + pressure.emergency_after > now)
    {
        out.wake.push(pending.since + pressure.emergency_after);
    }
    let coming_back: Resources = holders
        .iter()
        .filter(|h| taken.contains(h.lease.uid.as_str()))
        .map(|h| h.capacity)
        .sum::<Resources>()
        + inputs.idle_capacity;
    let reclaim_for = |pods: &[&PendingPod],
                       reserved_too: bool,
                       likely: bool,
                       out: &mut Reclaim,
                       taken: &mut BTreeSet<String>| {
        if pods.is_empty() {
            return;
        }
        let wanted: Resources = pods.iter().map(|p| p.requests).sum();
        let mut have = coming_back;
        let names: Vec<String> = pods
            .iter()
            .take(3)
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        let more = pods.len().saturating_sub(3);
        let message = format!(
            "{} internal pod(s) cannot be scheduled ({}{}) and need {wanted}",
            pods.len(),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        for reserved in [false, true] {
            if reserved && !reserved_too {
                break;
            }
            for holder in order
                .iter()
                .filter(|h| (h.lease.spec.class == LeaseClass::Reserved) == reserved)
            {
                if have.covers(&wanted) {
                    return;
                }
                let uid = holder.lease.uid.as_str();
                if taken.contains(uid)
                    || out.asks.contains_key(uid)
                    || (!reserved && holder.admitted + min_runtime > now)
                {
                    continue;
                }
                have += holder.capacity;
                let cause = Cause {
                    reason: "InternalPressure",
                    message: message.clone(),
                    emergency: reserved,
                };
                if likely {
                    out.asks.insert(uid.to_string(), Ask::Likely { cause });
                } else {
                    taken.insert(uid.to_string());
                    out.asks.insert(
                        uid.to_string(),
                        Ask::Notice {
                            cause,
                            deadline: now + notice,
                        },
                    );
                }
            }
        }
    };
    reclaim_for(&overdue, false, false, &mut out, &mut taken);
    reclaim_for(&urgent, true, false, &mut out, &mut taken);
    reclaim_for(&building, false, true, &mut out, &mut taken);
    out.wake.retain(|t| *t > now);
    out
}
