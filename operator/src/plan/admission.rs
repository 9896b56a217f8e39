//! Whether a pool can serve a lease now, and which nodes it gets.
//!
//! Capacity is lent in whole nodes. At any moment a pool may lend at most
//! `lend_limit(t) = min(headroom limit, limit of every reservation window active at t)`
//! nodes, where a reservation that keeps p % internal allows `floor(nodes × (100 − p) / 100)`
//! and one that keeps k nodes allows `nodes − k`.
//!
//! - **Spot** is admitted when free lendable nodes cover the request now, lending them keeps
//!   the pool within `lend_limit(now)`, and the current spot price is at or below the
//!   lease's maximum. Spot leases are reclaimed with notice before a window needs their
//!   nodes, so future windows do not hold them back.
//! - **Reserved** must also hold for its whole term: at every instant of the term, the
//!   nodes of the Reserved leases then active plus this lease's nodes stay within
//!   `lend_limit(t)`. If even this lease alone exceeds the limit somewhere in its term, it
//!   can never fit and is rejected; otherwise it waits.
//! - A lease larger than the whole pool is rejected.
//!
//! Queueing (see [`admit_in_order`]): per pool, first come first served by creation time,
//! with backfill. A lease that cannot be served does not stop later, smaller leases from
//! being admitted, until it has waited `starvation_guard`; from then on nothing behind it
//! is admitted, so capacity freed by ending leases accrues to it and a large lease is
//! never starved by a stream of small ones.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

use std::collections::BTreeMap;

use super::calendar::{Calendar, Interval};
use super::eligibility::{TenantView, over_credit};
use super::node_choice::{self, Ask, Candidate};
use super::resources::Resources;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseClass {
    Spot,
    Reserved,
}

/// How much of a pool a reservation keeps internal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Percent(u32),
    Nodes(usize),
}

impl Keep {
    /// The most nodes a pool of `total` nodes may lend while this applies.
    pub fn lend_limit(&self, total: usize) -> usize {
        match *self {
            Keep::Percent(p) => total * (100 - p.min(100) as usize) / 100,
            Keep::Nodes(k) => total.saturating_sub(k),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    pub name: String,
    pub calendar: Calendar,
    pub keep: Keep,
}

/// An admitted Reserved lease: it holds `nodes` nodes over `term`.
#[derive(Clone, Debug, PartialEq)]
pub struct Holding {
    pub lease: String,
    pub term: Interval,
    pub nodes: usize,
}

/// What admission needs to know about a pool, read from the cluster at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSnapshot {
    pub name: String,
    /// Every node the pool selects, and their allocatable sum.
    pub nodes_total: usize,
    pub capacity: Resources,
    /// Free nodes that may be lent now (idle long enough, Ready, not cordoned), in name
    /// order.
    pub free: Vec<Candidate>,
    /// Nodes lent to leases now.
    pub lent: usize,
    /// Headroom: the most nodes the pool lends at any time.
    pub headroom_limit: usize,
    pub reservations: Vec<Reservation>,
    /// Admitted Reserved leases, for the term check.
    pub reserved: Vec<Holding>,
    /// Current spot prices per resource-hour, if a rate card prices the pool.
    pub spot_prices: Option<HourlyPrices>,
    /// Reserved prices per resource-hour, if a rate card prices the pool.
    pub reserved_prices: Option<HourlyPrices>,
    /// A Spot lease is owed this much time before any reclaim a reservation's window makes
    /// (its notice and the pool's minimum runtime).
    pub spot_protection: Duration,
}

/// Prices per resource-hour: a core, a GiB of memory, a GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourlyPrices {
    pub cpu_core: Decimal,
    pub memory_gib: Decimal,
    pub gpu: Decimal,
}

impl HourlyPrices {
    /// What `amount` of capacity costs per hour.
    pub fn hourly(&self, amount: &Resources) -> Decimal {
        let cores = Decimal::from(amount.cpu_millis) / Decimal::from(1000);
        let gib = Decimal::from(amount.memory_bytes) / Decimal::from(1u64 << 30);
        cores * self.cpu_core + gib * self.memory_gib + Decimal::from(amount.gpus) * self.gpu
    }
}

/// What a lease asks.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRequest {
    /// `<namespace>/<name>`.
    pub name: String,
    /// The tenant that pays, whose credit limit the lease counts against.
    pub tenant: String,
    pub class: LeaseClass,
    pub ask: Ask,
    pub term: Interval,
    /// The hours the lease counts for against its tenant's credit limit.
    pub credit_hours: Decimal,
    pub max_price: Option<Decimal>,
    /// When it was created, for first come first served.
    pub created: DateTime<Utc>,
}

/// Why a lease waits or is rejected; these become condition reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    InsufficientCapacity,
    Headroom,
    PeakReservation,
    SpotPriceAboveMax,
    NoSpotPrice,
    Queued,
    ExceedsPool,
    CreditLimit,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::InsufficientCapacity => "InsufficientCapacity",
            Reason::Headroom => "Headroom",
            Reason::PeakReservation => "PeakReservation",
            Reason::SpotPriceAboveMax => "SpotPriceAboveMax",
            Reason::NoSpotPrice => "NoSpotPrice",
            Reason::Queued => "Queued",
            Reason::ExceedsPool => "ExceedsPool",
            Reason::CreditLimit => "CreditLimit",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Admit { nodes: Vec<String> },
    Wait { reason: Reason, message: String },
    Reject { reason: Reason, message: String },
}

impl PoolSnapshot {
    /// The most nodes the pool may lend at `at`, and the reservation that sets it, if any.
    fn lend_limit_at(&self, at: DateTime<Utc>) -> (usize, Option<&Reservation>) {
        let instant = Interval::new(at, at + Duration::seconds(1));
        self.reservations
            .iter()
            .filter(|r| !r.calendar.windows(instant).is_empty())
            .map(|r| (r.keep.lend_limit(self.nodes_total), Some(r)))
            .fold((self.headroom_limit, None), |best, next| {
                if next.0 < best.0 { next } else { best }
            })
    }

    /// Every reservation window that overlaps `term`, whole (not cut to the term, so what
    /// a message says of it does not move with the term), with the limit it sets.
    fn windows_in(&self, term: Interval) -> Vec<(Interval, usize, &Reservation)> {
        self.reservations
            .iter()
            .flat_map(|r| {
                let limit = r.keep.lend_limit(self.nodes_total);
                r.calendar
                    .whole_windows(term)
                    .into_iter()
                    .map(move |w| (w, limit, r))
            })
            .collect()
    }
}

/// Decides one lease against the pool as it is now.
pub fn decide(pool: &PoolSnapshot, lease: &LeaseRequest, now: DateTime<Utc>) -> Decision {
    if pool.free.is_sorted_by(|a, b| a.name <= b.name) {
        return decide_in_order(pool, lease, now);
    }
    let mut sorted = pool.clone();
    sorted.free.sort_by(|a, b| a.name.cmp(&b.name));
    decide_in_order(&sorted, lease, now)
}

/// [`decide`] with the pool's free nodes in name order.
fn decide_in_order(pool: &PoolSnapshot, lease: &LeaseRequest, now: DateTime<Utc>) -> Decision {
    if let Some(reject) = never_fits(pool, lease) {
        return reject;
    }
    if lease.class == LeaseClass::Spot && pool.spot_prices.is_none() {
        return Decision::Wait {
            reason: Reason::NoSpotPrice,
            message: format!(
                "no rate card prices Spot capacity in pool {} now",
                pool.name
            ),
        };
    }
    let chosen = match node_choice::choose_sorted(&pool.free, &lease.ask) {
        Ok(chosen) => chosen,
        Err(shortfall) => {
            return Decision::Wait {
                reason: Reason::InsufficientCapacity,
                message: format!(
                    "pool {} has {} free lendable node(s): {shortfall}",
                    pool.name,
                    pool.free.len()
                ),
            };
        }
    };
    let nodes: Vec<String> = chosen.iter().map(|c| c.name.clone()).collect();
    if let (LeaseClass::Spot, Some(prices), Some(max)) =
        (lease.class, &pool.spot_prices, lease.max_price)
    {
        let bound: Resources = chosen.iter().map(|c| c.allocatable).sum();
        let hourly = prices.hourly(&bound);
        if hourly > max {
            return Decision::Wait {
                reason: Reason::SpotPriceAboveMax,
                message: format!(
                    "at the spot price in pool {} now, the {} node(s) that serve this lease cost {} per hour, above maxPricePerHour {max}",
                    pool.name,
                    nodes.len(),
                    hourly.round_dp(4)
                ),
            };
        }
    }
    if lease.class == LeaseClass::Spot
        && let Some(message) = window_too_soon(pool, nodes.len(), now)
    {
        return Decision::Wait {
            reason: Reason::PeakReservation,
            message,
        };
    }
    let (limit_now, set_by) = pool.lend_limit_at(now);
    if pool.lent + nodes.len() > limit_now {
        let (reason, why) = match set_by {
            Some(r) => (
                Reason::PeakReservation,
                format!(
                    "peak reservation {} allows {limit_now} lent node(s) now",
                    r.name
                ),
            ),
            None => (
                Reason::Headroom,
                format!("headroom allows {limit_now} lent node(s)"),
            ),
        };
        return Decision::Wait {
            reason,
            message: format!(
                "pool {}: {why}, {} are lent and this lease needs {}",
                pool.name,
                pool.lent,
                nodes.len()
            ),
        };
    }
    if lease.class == LeaseClass::Reserved
        && let Some(conflict) = term_conflict(pool, lease, nodes.len())
    {
        return Decision::Wait {
            reason: Reason::PeakReservation,
            message: conflict,
        };
    }
    Decision::Admit { nodes }
}

/// A window that starts before a Spot lease admitted now would have had its notice and
/// minimum runtime, and would leave no room for it.
fn window_too_soon(pool: &PoolSnapshot, nodes: usize, now: DateTime<Utc>) -> Option<String> {
    let soon = Interval::new(now + Duration::seconds(1), now + pool.spot_protection);
    if soon.end <= soon.start {
        return None;
    }
    pool.reservations.iter().find_map(|r| {
        let limit = r.keep.lend_limit(pool.nodes_total);
        r.calendar
            .whole_windows(soon)
            .into_iter()
            .find(|w| w.start > now && pool.lent + nodes > limit)
            .map(|w| {
                format!(
                    "peak reservation {} lets pool {} lend at most {limit} node(s) from {}, sooner than this Spot lease's notice and minimum runtime ({}s)",
                    r.name,
                    pool.name,
                    w.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    pool.spot_protection.num_seconds()
                )
            })
    })
}

/// A lease that no amount of waiting can serve.
fn never_fits(pool: &PoolSnapshot, lease: &LeaseRequest) -> Option<Decision> {
    let reject = |message: String| {
        Some(Decision::Reject {
            reason: Reason::ExceedsPool,
            message,
        })
    };
    match &lease.ask {
        Ask::Resources(request) if !pool.capacity.covers(request) => {
            return reject(format!(
                "pool {} has {} in all ({} nodes), short of {} for this lease",
                pool.name,
                pool.capacity,
                pool.nodes_total,
                pool.capacity.shortfall(request)
            ));
        }
        Ask::Nodes { count, .. } if *count > pool.headroom_limit => {
            return reject(format!(
                "pool {} lends at most {} node(s) (headroom), {count} asked",
                pool.name, pool.headroom_limit
            ));
        }
        _ => {}
    }
    if lease.class == LeaseClass::Reserved {
        let windows = pool.windows_in(lease.term);
        // The fewest nodes any choice would take, judged against the whole pool (only
        // worth knowing when a window falls in the term).
        let needed = if windows.is_empty() {
            0
        } else {
            node_choice::choose_sorted(&pool.free, &lease.ask).map_or(1, |n| n.len())
        };
        if let Some((window, limit, reservation)) =
            windows.into_iter().find(|(_, limit, _)| needed > *limit)
        {
            return Some(Decision::Reject {
                reason: Reason::PeakReservation,
                message: format!(
                    "peak reservation {} lets pool {} lend at most {limit} node(s) from {} to {}, within this Reserved lease's term; it needs {needed}",
                    reservation.name,
                    pool.name,
                    window
                        .start
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    window
                        .end
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            });
        }
    }
    None
}

/// The first moment in the lease's term when Reserved leases would exceed the limit.
fn term_conflict(pool: &PoolSnapshot, lease: &LeaseRequest, nodes: usize) -> Option<String> {
    let windows = pool.windows_in(lease.term);
    // Fast path: every Reserved lease at once, at the tightest limit of the term, fits.
    let held_ever: usize = pool.reserved.iter().map(|h| h.nodes).sum();
    let tightest = windows
        .iter()
        .map(|(_, limit, _)| *limit)
        .fold(pool.headroom_limit, usize::min);
    if held_ever + nodes <= tightest {
        return None;
    }
    let mut moments: Vec<DateTime<Utc>> = vec![lease.term.start];
    moments.extend(windows.iter().flat_map(|(w, _, _)| [w.start, w.end]));
    moments.extend(
        pool.reserved
            .iter()
            .flat_map(|h| [h.term.start, h.term.end]),
    );
    moments.retain(|t| lease.term.contains(*t));
    moments.sort();
    moments.dedup();
    for at in moments {
        let held: usize = pool
            .reserved
            .iter()
            .filter(|h| h.term.contains(at))
            .map(|h| h.nodes)
            .sum();
        let (limit, by) = windows
            .iter()
            .filter(|(w, _, _)| w.contains(at))
            .map(|(_, limit, r)| (*limit, Some(*r)))
            .fold((pool.headroom_limit, None), |best, next| {
                if next.0 < best.0 { next } else { best }
            });
        if held + nodes > limit {
            let why = match by {
                Some(r) => format!("peak reservation {} lets it lend {limit} node(s)", r.name),
                None => format!("headroom lets it lend {limit} node(s)"),
            };
            // The term starts now: say so rather than name an instant that moves each pass.
            let when = if at == lease.term.start {
                "from now".to_string()
            } else {
                format!(
                    "at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            };
            return Some(format!(
                "{when} pool {}: {why}, Reserved leases hold {held} and this lease needs {nodes}",
                pool.name
            ));
        }
    }
    None
}

/// Decides a pool's pending leases in first-come-first-served order with bounded backfill
/// (see the module docs), and holds each admitted lease against its tenant's credit limit:
/// its most expensive outcome (the term at maxPricePerHour for Spot, at the Reserved price
/// of the nodes it gets for Reserved) is added to what the tenant has committed, so a burst
/// of leases cannot pass the limit together. Returns one decision per lease, in queue order.
pub fn admit_in_order(
    pool: &PoolSnapshot,
    pending: &[LeaseRequest],
    tenants: &mut BTreeMap<String, TenantView>,
    now: DateTime<Utc>,
    starvation_guard: Duration,
) -> Vec<(String, Decision)> {
    let mut order: Vec<&LeaseRequest> = pending.iter().collect();
    order.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    let mut pool = pool.clone();
    pool.free.sort_by(|a, b| a.name.cmp(&b.name));
    let mut blocked_by: Option<&str> = None;
    let mut decisions = Vec::with_capacity(order.len());
    for lease in order {
        if let Some(head) = blocked_by {
            decisions.push((
                lease.name.clone(),
                Decision::Wait {
                    reason: Reason::Queued,
                    message: format!(
                        "waiting behind lease {head}, which has waited longer than {}s",
                        starvation_guard.num_seconds()
                    ),
                },
            ));
            continue;
        }
        let mut decision = decide_in_order(&pool, lease, now);
        // Where the chosen nodes are among the free ones, and what they hold.
        let mut chosen: Vec<usize> = match &decision {
            Decision::Admit { nodes } => nodes
                .iter()
                .filter_map(|n| pool.free.binary_search_by(|c| c.name.as_str().cmp(n)).ok())
                .collect(),
            _ => Vec::new(),
        };
        chosen.sort_unstable();
        let bound: Resources = chosen.iter().map(|&i| pool.free[i].allocatable).sum();
        if let Decision::Admit { .. } = &decision
            && let Some(tenant) = tenants.get_mut(&lease.tenant)
        {
            let worst_case = worst_case(&pool, lease, &bound);
            match over_credit(tenant, worst_case) {
                Some(message) => {
                    decision = Decision::Wait {
                        reason: Reason::CreditLimit,
                        message,
                    }
                }
                None => tenant.committed += worst_case,
            }
        }
        match &decision {
            Decision::Admit { nodes } => {
                for &i in chosen.iter().rev() {
                    pool.free.remove(i);
                }
                pool.lent += nodes.len();
                if lease.class == LeaseClass::Reserved {
                    pool.reserved.push(Holding {
                        lease: lease.name.clone(),
                        term: lease.term,
                        nodes: nodes.len(),
                    });
                }
            }
            Decision::Wait { reason, .. } => {
                let capacity_bound = matches!(
                    reason,
                    Reason::InsufficientCapacity | Reason::Headroom | Reason::PeakReservation
                );
                if capacity_bound && now - lease.created >= starvation_guard {
                    blocked_by = Some(&lease.name);
                }
            }
            Decision::Reject { .. } => {}
        }
        decisions.push((lease.name.clone(), decision));
    }
    decisions
}

/// The most a lease served by nodes holding `bound` can cost over its term.
fn worst_case(pool: &PoolSnapshot, lease: &LeaseRequest, bound: &Resources) -> Decimal {
    let hours = lease.credit_hours;
    match (lease.class, lease.max_price) {
        (LeaseClass::Spot, Some(max)) => max * hours,
        _ => pool
            .reserved_prices
            .as_ref()
            .map_or(Decimal::ZERO, |p| p.hourly(bound) * hours),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::calendar::Schedule;
    use proptest::prelude::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn pool(nodes: usize) -> PoolSnapshot {
        let free: Vec<Candidate> = (0..nodes)
            .map(|i| Candidate {
                name: format!("n{i}"),
                allocatable: Resources::new(16_000, 64 << 30, 0),
                class: Some("standard".into()),
            })
            .collect();
        PoolSnapshot {
            name: "general".into(),
            nodes_total: nodes,
            capacity: free.iter().map(|c| c.allocatable).sum(),
            free,
            lent: 0,
            headroom_limit: nodes,
            reservations: vec![],
            reserved: vec![],
            // 16 cores at 0.05 per core-hour: 0.80 per node-hour.
            spot_prices: Some(HourlyPrices {
                cpu_core: Decimal::new(5, 2),
                memory_gib: Decimal::ZERO,
                gpu: Decimal::ZERO,
            }),
            reserved_prices: Some(HourlyPrices {
                cpu_core: Decimal::new(8, 2),
                memory_gib: Decimal::ZERO,
                gpu: Decimal::ZERO,
            }),
            spot_protection: Duration::zero(),
        }
    }

    fn lease(name: &str, class: LeaseClass, cpu: i64, start: &str, hours: i64) -> LeaseRequest {
        let start = utc(start);
        LeaseRequest {
            name: name.into(),
            tenant: "acme".into(),
            class,
            ask: Ask::Resources(Resources::new(cpu * 1000, 0, 0)),
            term: Interval::new(start, start + Duration::hours(hours)),
            credit_hours: Decimal::from(hours),
            max_price: (class == LeaseClass::Spot).then(|| Decimal::new(450, 2)),
            created: start,
        }
    }

    fn black_friday(keep: Keep) -> Reservation {
        Reservation {
            name: "black-friday".into(),
            calendar: Calendar {
                schedule: Schedule::Once {
                    start: utc("2026-11-27T00:00:00Z"),
                    end: utc("2026-11-30T00:00:00Z"),
                },
                valid_from: None,
                valid_until: None,
            },
            keep,
        }
    }

    #[test]
    fn spot_is_admitted_on_the_fewest_free_nodes() {
        let d = decide(
            &pool(4),
            &lease("a", LeaseClass::Spot, 32, "2026-11-22T20:00:00Z", 8),
            utc("2026-11-22T20:00:00Z"),
        );
        assert_eq!(
            d,
            Decision::Admit {
                nodes: vec!["n0".into(), "n1".into()]
            }
        );
    }

    #[test]
    fn reserved_waits_when_a_later_window_leaves_no_room_but_spot_of_the_same_size_is_admitted() {
        let mut p = pool(4);
        // Black Friday keeps 75 %: one node may be lent then.
        p.reservations.push(black_friday(Keep::Percent(75)));
        // Another Reserved lease already holds one node across the window.
        p.reserved.push(Holding {
            lease: "early".into(),
            term: Interval::new(utc("2026-11-22T00:00:00Z"), utc("2026-12-01T00:00:00Z")),
            nodes: 1,
        });
        p.lent = 1;
        p.free.remove(0);
        let now = utc("2026-11-22T20:00:00Z");
        let reserved = lease(
            "r",
            LeaseClass::Reserved,
            16,
            "2026-11-22T20:00:00Z",
            24 * 7,
        );
        match decide(&p, &reserved, now) {
            Decision::Wait {
                reason: Reason::PeakReservation,
                message,
            } => {
                assert!(
                    message.contains("black-friday") && message.contains("2026-11-27T00:00:00Z"),
                    "{message}"
                );
            }
            other => panic!("expected to wait for the peak reservation, got {other:?}"),
        }
        let spot = lease("s", LeaseClass::Spot, 16, "2026-11-22T20:00:00Z", 24 * 7);
        assert!(matches!(decide(&p, &spot, now), Decision::Admit { .. }));
    }

    #[test]
    fn reserved_that_can_never_fit_its_term_is_rejected() {
        let mut p = pool(4);
        p.reservations.push(black_friday(Keep::Percent(100)));
        let d = decide(
            &p,
            &lease("r", LeaseClass::Reserved, 16, "2026-11-26T00:00:00Z", 48),
            utc("2026-11-26T00:00:00Z"),
        );
        assert!(
            matches!(
                d,
                Decision::Reject {
                    reason: Reason::PeakReservation,
                    ..
                }
            ),
            "{d:?}"
        );
        // A term that ends before the window is fine.
        let d = decide(
            &p,
            &lease("r", LeaseClass::Reserved, 16, "2026-11-25T00:00:00Z", 24),
            utc("2026-11-25T00:00:00Z"),
        );
        assert!(matches!(d, Decision::Admit { .. }), "{d:?}");
    }

    #[test]
    fn a_lease_larger_than_the_pool_is_rejected_with_the_shortfall() {
        let d = decide(
            &pool(2),
            &lease("big", LeaseClass::Spot, 64, "2026-11-22T20:00:00Z", 1),
            utc("2026-11-22T20:00:00Z"),
        );
        match d {
            Decision::Reject {
                reason: Reason::ExceedsPool,
                message,
            } => assert!(message.contains("short of cpu 32"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spot_waits_while_the_price_is_above_its_maximum() {
        let mut p = pool(2);
        // 0.30 per core-hour: one 16-core node costs 4.80 per hour, above 4.50.
        p.spot_prices = Some(HourlyPrices {
            cpu_core: Decimal::new(30, 2),
            memory_gib: Decimal::ZERO,
            gpu: Decimal::ZERO,
        });
        let d = decide(
            &p,
            &lease("s", LeaseClass::Spot, 16, "2026-11-22T20:00:00Z", 1),
            utc("2026-11-22T20:00:00Z"),
        );
        match d {
            Decision::Wait {
                reason: Reason::SpotPriceAboveMax,
                message,
            } => {
                assert!(
                    message.contains("cost 4.80 per hour, above maxPricePerHour 4.50"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        p.spot_prices = None;
        let d = decide(
            &p,
            &lease("s", LeaseClass::Spot, 16, "2026-11-22T20:00:00Z", 1),
            utc("2026-11-22T20:00:00Z"),
        );
        assert!(
            matches!(
                d,
                Decision::Wait {
                    reason: Reason::NoSpotPrice,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn headroom_and_active_windows_cap_lent_nodes() {
        let mut p = pool(4);
        p.headroom_limit = 3;
        p.lent = 2;
        p.free.truncate(2);
        let now = utc("2026-11-22T20:00:00Z");
        let d = decide(
            &p,
            &lease("s", LeaseClass::Spot, 32, "2026-11-22T20:00:00Z", 1),
            now,
        );
        assert!(
            matches!(
                d,
                Decision::Wait {
                    reason: Reason::Headroom,
                    ..
                }
            ),
            "{d:?}"
        );
        p.headroom_limit = 4;
        p.reservations.push(black_friday(Keep::Nodes(2)));
        let d = decide(
            &p,
            &lease("s", LeaseClass::Spot, 16, "2026-11-28T00:00:00Z", 1),
            utc("2026-11-28T00:00:00Z"),
        );
        assert!(
            matches!(
                d,
                Decision::Wait {
                    reason: Reason::PeakReservation,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn backfill_stops_once_the_head_has_waited_past_the_guard() {
        // Three nodes, one lent: 32 cores free of 48.
        let mut p = pool(3);
        p.free.remove(0);
        p.lent = 1;
        let big = lease("big", LeaseClass::Spot, 48, "2026-11-22T20:00:00Z", 1);
        let small = lease("small", LeaseClass::Spot, 16, "2026-11-22T20:01:00Z", 1);
        let guard = Duration::minutes(10);
        // Early on, the small lease backfills past the big one.
        let early = admit_in_order(
            &p,
            &[small.clone(), big.clone()],
            &mut BTreeMap::new(),
            utc("2026-11-22T20:02:00Z"),
            guard,
        );
        assert_eq!(early[0].0, "big");
        assert!(matches!(early[1].1, Decision::Admit { .. }));
        // Once the big lease has waited 10 minutes, nothing passes it.
        let late = admit_in_order(
            &p,
            &[small, big],
            &mut BTreeMap::new(),
            utc("2026-11-22T20:15:00Z"),
            guard,
        );
        assert!(
            matches!(
                late[1].1,
                Decision::Wait {
                    reason: Reason::Queued,
                    ..
                }
            ),
            "{late:?}"
        );
    }

    #[test]
    fn a_burst_of_leases_cannot_pass_the_credit_limit_together() {
        let p = pool(4);
        let now = utc("2026-11-22T20:00:00Z");
        // Each Spot lease may cost up to 4.50 × 2 h = 9.00; the limit leaves room for one.
        let mut tenants = BTreeMap::from([(
            "acme".to_string(),
            TenantView {
                name: "acme".into(),
                suspended: false,
                allowed_pools: vec![],
                credit_limit: Some(Decimal::new(1500, 2)),
                open_balance: Decimal::new(300, 2),
                committed: Decimal::ZERO,
            },
        )]);
        let first = lease("first", LeaseClass::Spot, 16, "2026-11-22T20:00:00Z", 2);
        let mut second = lease("second", LeaseClass::Spot, 16, "2026-11-22T20:00:00Z", 2);
        second.created = first.created + Duration::seconds(1);
        let decisions = admit_in_order(
            &p,
            &[second, first],
            &mut tenants,
            now,
            Duration::minutes(10),
        );
        assert!(matches!(decisions[0], (ref n, Decision::Admit { .. }) if n == "first"));
        assert_eq!(
            decisions[1],
            (
                "second".to_string(),
                Decision::Wait {
                    reason: Reason::CreditLimit,
                    message: "tenant acme: open balance 3.00 + other leases up to 9.00 + this lease up to 9.00 = 21.00, above the credit limit 15.00".into()
                }
            )
        );
        assert_eq!(tenants["acme"].committed, Decimal::new(900, 2));
    }

    /// A pool in some state, and leases to decide against it: nodes of several sizes and
    /// classes, some already lent (part of them to Reserved leases whose terms run on),
    /// reservation windows around now, a headroom limit and a Spot protection time.
    #[derive(Clone, Debug)]
    struct Scenario {
        pool: PoolSnapshot,
        pending: Vec<LeaseRequest>,
    }

    const NOW: &str = "2026-11-22T20:00:00Z";

    fn arb_keep() -> impl Strategy<Value = Keep> {
        prop_oneof![
            prop::sample::select(vec![0u32, 25, 50, 75, 100]).prop_map(Keep::Percent),
            (0usize..9).prop_map(Keep::Nodes),
        ]
    }

    fn arb_ask() -> impl Strategy<Value = Ask> {
        prop_oneof![
            // Cores only (most leases), or cores and memory.
            (1i64..48).prop_map(|cores| Ask::Resources(Resources::new(cores * 1000, 0, 0))),
            (1i64..48, 1i64..160).prop_map(|(cores, gib)| {
                Ask::Resources(Resources::new(cores * 1000, gib << 30, 0))
            }),
            (prop::sample::select(vec!["standard", "gpu"]), 1usize..4).prop_map(
                |(class, count)| Ask::Nodes {
                    class: class.into(),
                    count,
                }
            ),
        ]
    }

    fn arb_scenario() -> impl Strategy<Value = Scenario> {
        let node = (
            prop::sample::select(vec![4i64, 8, 16, 32]),
            prop::sample::select(vec![16i64, 64, 128]),
            prop::sample::select(vec![Some("standard"), Some("gpu"), None]),
            prop::bool::weighted(0.3),
        );
        // Reservation windows start from 2 h before now to 8 h after, in half hours.
        let reservation = (-4i64..16, 1i64..8, arb_keep());
        let holding = (1usize..4, 1i64..12);
        let lease = (
            any::<bool>(),
            arb_ask(),
            1i64..10,
            prop::sample::select(vec![50i64, 450, 100_000]),
        );
        (
            prop::collection::vec(node, 1..8),
            // Often no tighter than the pool.
            prop_oneof![Just(usize::MAX), 0usize..9],
            prop::collection::vec(reservation, 0..3),
            prop::collection::vec(holding, 0..3),
            prop::collection::vec(lease, 1..7),
            prop::sample::select(vec![0i64, 30, 120]),
        )
            .prop_map(
                |(nodes, headroom, reservations, holdings, leases, protection)| {
                    let now = utc(NOW);
                    let mut p = pool(0);
                    let all: Vec<(Candidate, bool)> = nodes
                        .iter()
                        .enumerate()
                        .map(|(i, (cores, gib, class, lent))| {
                            let candidate = Candidate {
                                name: format!("n{i}"),
                                allocatable: Resources::new(cores * 1000, gib << 30, 0),
                                class: class.map(String::from),
                            };
                            (candidate, *lent)
                        })
                        .collect();
                    p.nodes_total = all.len();
                    p.capacity = all.iter().map(|(c, _)| c.allocatable).sum();
                    p.lent = all.iter().filter(|(_, lent)| *lent).count();
                    p.free = all
                        .into_iter()
                        .filter(|(_, lent)| !lent)
                        .map(|(c, _)| c)
                        .collect();
                    p.headroom_limit = headroom.min(p.nodes_total);
                    p.reservations = reservations
                        .into_iter()
                        .enumerate()
                        .map(|(i, (start, length, keep))| {
                            let start = now + Duration::minutes(30 * start);
                            Reservation {
                                name: format!("r{i}"),
                                calendar: Calendar {
                                    schedule: Schedule::Once {
                                        start,
                                        end: start + Duration::minutes(30 * length),
                                    },
                                    valid_from: None,
                                    valid_until: None,
                                },
                                keep,
                            }
                        })
                        .collect();
                    // Reserved leases hold some of the lent nodes, from before now.
                    let mut held = 0;
                    for (i, (nodes, hours)) in holdings.into_iter().enumerate() {
                        if held + nodes > p.lent {
                            break;
                        }
                        held += nodes;
                        p.reserved.push(Holding {
                            lease: format!("held{i}"),
                            term: Interval::new(
                                now - Duration::hours(1),
                                now + Duration::hours(hours),
                            ),
                            nodes,
                        });
                    }
                    p.spot_protection = Duration::minutes(protection);
                    let pending = leases
                        .into_iter()
                        .enumerate()
                        .map(|(i, (spot, ask, hours, max_cents))| {
                            let class = if spot {
                                LeaseClass::Spot
                            } else {
                                LeaseClass::Reserved
                            };
                            LeaseRequest {
                                name: format!("l{i}"),
                                tenant: "acme".into(),
                                class,
                                ask,
                                term: Interval::new(now, now + Duration::hours(hours)),
                                credit_hours: Decimal::from(hours),
                                max_price: spot.then(|| Decimal::new(max_cents, 2)),
                                created: now - Duration::seconds(60 - i as i64),
                            }
                        })
                        .collect();
                    Scenario { pool: p, pending }
                },
            )
    }

    /// The most nodes the pool may lend at `at`: its headroom, and every reservation whose
    /// window is open then.
    fn limit_at(pool: &PoolSnapshot, at: DateTime<Utc>) -> usize {
        pool.reservations
            .iter()
            .filter(|r| {
                r.calendar
                    .whole_windows(Interval::new(
                        at - Duration::days(1),
                        at + Duration::days(1),
                    ))
                    .iter()
                    .any(|w| w.contains(at))
            })
            .map(|r| r.keep.lend_limit(pool.nodes_total))
            .fold(pool.headroom_limit, usize::min)
    }

    /// Reservation windows that open after now but before a Spot lease admitted now has had
    /// its protection, with the limit each sets.
    fn windows_too_soon(pool: &PoolSnapshot, now: DateTime<Utc>) -> Vec<usize> {
        pool.reservations
            .iter()
            .flat_map(|r| {
                r.calendar
                    .whole_windows(Interval::new(
                        now - Duration::days(1),
                        now + Duration::days(1),
                    ))
                    .into_iter()
                    .filter(|w| w.start > now && w.start < now + pool.spot_protection)
                    .map(|_| r.keep.lend_limit(pool.nodes_total))
            })
            .collect()
    }

    /// Instants in `term` at which what Reserved leases hold, or what the pool may lend,
    /// can change.
    fn moments(pool: &PoolSnapshot, holdings: &[Holding], term: Interval) -> Vec<DateTime<Utc>> {
        let range = Interval::new(term.start - Duration::days(1), term.end + Duration::days(1));
        let mut moments = vec![term.start];
        for r in &pool.reservations {
            for w in r.calendar.whole_windows(range) {
                moments.extend([w.start, w.end]);
            }
        }
        for h in holdings {
            moments.extend([h.term.start, h.term.end]);
        }
        moments.retain(|t| term.contains(*t));
        moments
    }

    fn held_at(holdings: &[Holding], at: DateTime<Utc>) -> usize {
        holdings
            .iter()
            .filter(|h| h.term.contains(at))
            .map(|h| h.nodes)
            .sum()
    }

    /// The fewest free nodes that serve `ask`, found by trying every set of them, or `None`
    /// when no set does.
    fn fewest_nodes(free: &[Candidate], ask: &Ask) -> Option<usize> {
        match ask {
            Ask::Nodes { class, count } => {
                let matching = free
                    .iter()
                    .filter(|c| c.class.as_deref() == Some(class))
                    .count();
                (matching >= *count).then_some(*count)
            }
            Ask::Resources(request) => (0u32..1 << free.len())
                .filter(|set| {
                    let sum: Resources = free
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| set & (1 << i) != 0)
                        .map(|(_, c)| c.allocatable)
                        .sum();
                    sum.covers(request)
                })
                .map(|set| set.count_ones() as usize)
                .min(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        #[test]
        fn admission_never_overcommits_and_admits_what_fits(scenario in arb_scenario()) {
            let Scenario { pool: p, pending } = scenario;
            let now = utc(NOW);
            let decisions = admit_in_order(&p, &pending, &mut BTreeMap::new(), now, Duration::minutes(10));
            prop_assert_eq!(decisions.len(), pending.len());
            let by_name: BTreeMap<&str, &LeaseRequest> =
                pending.iter().map(|l| (l.name.as_str(), l)).collect();
            let free: BTreeMap<&str, &Candidate> =
                p.free.iter().map(|c| (c.name.as_str(), c)).collect();
            let mut used = std::collections::BTreeSet::new();
            let mut lent = p.lent;
            let mut holdings = p.reserved.clone();
            let mut reserved_terms = Vec::new();
            for (name, decision) in &decisions {
                let Decision::Admit { nodes } = decision else { continue };
                let lease = by_name[name.as_str()];
                for n in nodes {
                    prop_assert!(free.contains_key(n.as_str()), "{} is not a free node", n);
                    prop_assert!(used.insert(n.clone()), "{} lent twice", n);
                }
                let bound: Resources = nodes.iter().map(|n| free[n.as_str()].allocatable).sum();
                match &lease.ask {
                    Ask::Resources(request) => {
                        prop_assert!(bound.covers(request), "{} gets {} for {}", name, bound, request)
                    }
                    Ask::Nodes { class, count } => {
                        prop_assert_eq!(nodes.len(), *count);
                        for n in nodes {
                            prop_assert_eq!(free[n.as_str()].class.as_deref(), Some(class.as_str()));
                        }
                    }
                }
                lent += nodes.len();
                prop_assert!(lent <= limit_at(&p, now), "{} lent, limit {} now", lent, limit_at(&p, now));
                match lease.class {
                    LeaseClass::Spot => {
                        let hourly = p.spot_prices.as_ref().map(|s| s.hourly(&bound));
                        prop_assert!(hourly <= lease.max_price, "{} costs {:?} per hour", name, hourly);
                        for limit in windows_too_soon(&p, now) {
                            prop_assert!(lent <= limit, "{} lent, a window soon allows {}", lent, limit);
                        }
                    }
                    LeaseClass::Reserved => {
                        holdings.push(Holding { lease: name.clone(), term: lease.term, nodes: nodes.len() });
                        reserved_terms.push(lease.term);
                    }
                }
            }
            // Wherever an admitted Reserved lease runs, Reserved leases stay within the limit.
            for term in reserved_terms {
                for at in moments(&p, &holdings, term) {
                    prop_assert!(
                        held_at(&holdings, at) <= limit_at(&p, at),
                        "Reserved leases hold {} at {}, limit {}", held_at(&holdings, at), at, limit_at(&p, at)
                    );
                }
            }

            // Liveness: the head of the queue is admitted when it fits alone, on the free
            // nodes, within every limit. For a request in one dimension the choice takes
            // the fewest nodes; otherwise it may take any of the free ones.
            let head = pending.iter().min_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name))).expect("a lease");
            let Some(fewest) = fewest_nodes(&p.free, &head.ask) else { return Ok(()) };
            let takes = match &head.ask {
                Ask::Resources(r) if r.memory_bytes > 0 => p.free.len(),
                _ => fewest,
            };
            let all_free: Resources = p.free.iter().map(|c| c.allocatable).sum();
            let fits = p.lent + takes <= limit_at(&p, now)
                && match head.class {
                    LeaseClass::Spot => {
                        p.spot_prices.as_ref().map(|s| s.hourly(&all_free)) <= head.max_price
                            && windows_too_soon(&p, now).iter().all(|limit| p.lent + takes <= *limit)
                    }
                    LeaseClass::Reserved => moments(&p, &p.reserved, head.term)
                        .into_iter()
                        .all(|at| held_at(&p.reserved, at) + takes <= limit_at(&p, at)),
                };
            let decided = &decisions.iter().find(|(n, _)| *n == head.name).expect("a decision").1;
            prop_assert!(
                !fits || matches!(decided, Decision::Admit { .. }),
                "{} fits alone on {} node(s) but: {:?}", head.name, takes, decided
            );
        }
    }
}
