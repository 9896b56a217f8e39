//! A second, deliberately naive reading of the billing rules (billing/src/lib.rs) for
//! the property tests: exact fractions in `i128` instead of `Decimal`, every fact
//! looked up afresh for every stretch of seconds, nothing shared with the crate but
//! the fact and rate card types. Slow and simple on purpose.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use offpeak_billing::meter::{EndReason, Fact, FactBody, ResourceAmounts};
use offpeak_billing::period::Period;
use offpeak_billing::rate::{LeaseClass, RateCard, Resource, SlaCreditRule};
use rust_decimal::Decimal;

/// An exact fraction `num / den`, `den > 0`, in lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frac {
    num: i128,
    den: i128,
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

impl Frac {
    pub const ZERO: Frac = Frac { num: 0, den: 1 };

    pub fn new(num: i128, den: i128) -> Frac {
        let sign = if den < 0 { -1 } else { 1 };
        let g = gcd(num, den);
        Frac {
            num: sign * num / g,
            den: sign * den / g,
        }
    }

    pub fn int(n: i64) -> Frac {
        Frac::new(i128::from(n), 1)
    }

    pub fn dec(d: Decimal) -> Frac {
        Frac::new(d.mantissa(), 10i128.pow(d.scale()))
    }

    pub fn add(self, o: Frac) -> Frac {
        Frac::new(self.num * o.den + o.num * self.den, self.den * o.den)
    }

    pub fn sub(self, o: Frac) -> Frac {
        self.add(Frac::new(-o.num, o.den))
    }

    pub fn mul(self, o: Frac) -> Frac {
        Frac::new(self.num * o.num, self.den * o.den)
    }

    pub fn div(self, o: Frac) -> Frac {
        Frac::new(self.num * o.den, self.den * o.num)
    }

    /// Whether the fraction is a finite decimal (its denominator divides a power of 10).
    pub fn is_finite_decimal(self) -> bool {
        let mut den = self.den;
        for p in [2, 5] {
            while den % p == 0 {
                den /= p;
            }
        }
        den == 1
    }

    pub fn abs(self) -> Frac {
        Frac::new(self.num.abs(), self.den)
    }

    pub fn is_zero(self) -> bool {
        self.num == 0
    }

    pub fn lt(self, o: Frac) -> bool {
        self.num * o.den < o.num * self.den
    }

    /// Rounded half away from zero to `dp` places, as a decimal with exactly `dp` places.
    pub fn round(self, dp: u32) -> Decimal {
        let scaled = self.num.abs() * 10i128.pow(dp);
        let mut units = scaled / self.den;
        if 2 * (scaled % self.den) >= self.den {
            units += 1;
        }
        let signed = if self.num < 0 { -units } else { units };
        Decimal::from_i128_with_scale(signed, dp)
    }
}

struct Lease {
    tenant: String,
    pool: String,
    class: LeaseClass,
    planned_end: Option<i64>,
    /// (second, key, amounts), every capacityBound fact.
    binds: Vec<(i64, String, ResourceAmounts)>,
    end: Option<(i64, EndReason)>,
    notice: Option<i64>,
}

/// What the rules say a set of facts bills.
pub struct Oracle {
    cards: Vec<RateCard>,
    /// pool → (second, key, utilisation)
    utilisation: BTreeMap<String, Vec<(i64, String, Decimal)>>,
    leases: BTreeMap<String, Lease>,
}

/// A usage line as the oracle cuts it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsageLine {
    pub lease: String,
    pub resource: Resource,
    pub start: i64,
    pub end: i64,
    pub amount: Decimal,
}

fn amount_of(amounts: &ResourceAmounts, resource: Resource) -> Decimal {
    match resource {
        Resource::Cpu => amounts.cpu,
        Resource::Memory => amounts.memory,
        Resource::Gpu => amounts.gpu,
    }
}

/// The value in force at `at` of a step function given as (second, key, value) facts:
/// the latest second at or before `at`, the greatest key among facts on that second.
fn in_force<T: Copy>(steps: &[(i64, String, T)], at: i64) -> Option<T> {
    steps
        .iter()
        .filter(|(from, _, _)| *from <= at)
        .max_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
        .map(|(_, _, v)| *v)
}

impl Oracle {
    pub fn new(facts: &[Fact]) -> Oracle {
        let mut oracle = Oracle {
            cards: Vec::new(),
            utilisation: BTreeMap::new(),
            leases: BTreeMap::new(),
        };
        for fact in facts {
            match &fact.body {
                FactBody::RateCard(f) => oracle.cards.push(f.rate_card.clone()),
                FactBody::LeaseAdmitted(a) => {
                    oracle.leases.insert(
                        a.lease.clone(),
                        Lease {
                            tenant: a.tenant.clone(),
                            pool: a.pool.clone(),
                            class: a.class,
                            planned_end: a.planned_end.map(|p| p.timestamp()),
                            binds: Vec::new(),
                            end: None,
                            notice: None,
                        },
                    );
                }
                _ => {}
            }
        }
        for fact in facts {
            match &fact.body {
                FactBody::CapacityBound(b) => oracle
                    .leases
                    .get_mut(&b.lease)
                    .unwrap()
                    .binds
                    .push((b.at.timestamp(), fact.key.clone(), b.resources)),
                FactBody::LeaseEnded(e) => {
                    oracle.leases.get_mut(&e.lease).unwrap().end =
                        Some((e.at.timestamp(), e.reason))
                }
                FactBody::NoticeGiven(n) => {
                    let lease = oracle.leases.get_mut(&n.lease).unwrap();
                    let at = n.at.timestamp();
                    lease.notice = Some(lease.notice.map_or(at, |x| x.min(at)));
                }
                FactBody::PoolUtilisation(u) => oracle
                    .utilisation
                    .entry(u.pool.clone())
                    .or_default()
                    .push((u.at.timestamp(), fact.key.clone(), u.utilisation)),
                _ => {}
            }
        }
        oracle
    }

    /// The card in force for `pool` at second `at`: the applicable card whose
    /// `[effectiveFrom, effectiveUntil)` holds `at` with the latest effectiveFrom.
    fn card_at(&self, pool: &str, at: i64) -> Option<&RateCard> {
        self.cards
            .iter()
            .filter(|c| c.pools.is_empty() || c.pools.iter().any(|p| p == pool))
            .filter(|c| {
                c.effective_from.timestamp() <= at
                    && c.effective_until.is_none_or(|u| at < u.timestamp())
            })
            .max_by_key(|c| c.effective_from)
    }

    /// Price per resource-hour of `resource` for `lease` at second `at`.
    fn price(&self, lease: &Lease, card: &RateCard, resource: Resource, at: i64) -> Frac {
        match lease.class {
            LeaseClass::Reserved => Frac::dec(card.prices.reserved.get(resource)),
            LeaseClass::Spot => {
                let base = Frac::dec(card.prices.spot.get(resource));
                let steps = self.utilisation.get(&lease.pool).map(Vec::as_slice);
                match (&card.spot_price_rule, steps.and_then(|s| in_force(s, at))) {
                    (Some(rule), Some(u)) => {
                        let raw = Decimal::ONE + rule.sensitivity * (u - rule.base_utilisation);
                        let multiplier =
                            raw.max(rule.floor_multiplier).min(rule.ceiling_multiplier);
                        base.mul(Frac::dec(multiplier))
                    }
                    _ => base,
                }
            }
        }
    }

    /// Every instant at which a lease's price or capacity may change.
    fn boundaries(&self, lease: &Lease) -> BTreeSet<i64> {
        let mut at: BTreeSet<i64> = lease.binds.iter().map(|b| b.0).collect();
        for card in &self.cards {
            at.insert(card.effective_from.timestamp());
            at.extend(card.effective_until.map(|u| u.timestamp()));
        }
        if lease.class == LeaseClass::Spot {
            at.extend(
                self.utilisation
                    .get(&lease.pool)
                    .into_iter()
                    .flatten()
                    .map(|u| u.0),
            );
        }
        at
    }

    /// Usage lines of `lease_id` within `period` (no further than `to`), with their
    /// exact charges: seconds of equal quantity, price and card, cut at the period.
    fn usage(&self, lease_id: &str, period: &Period, to: i64) -> Vec<(UsageLine, Frac, String)> {
        let lease = &self.leases[lease_id];
        let Some(first_bind) = lease.binds.iter().map(|b| b.0).min() else {
            return Vec::new();
        };
        let lo = period.start.timestamp().max(first_bind);
        let hi = lease
            .end
            .map_or(to, |(end, _)| end)
            .min(to)
            .min(period.end.timestamp());
        if lo >= hi {
            return Vec::new();
        }
        let mut cuts: Vec<i64> = self
            .boundaries(lease)
            .into_iter()
            .filter(|&b| lo < b && b < hi)
            .collect();
        cuts.insert(0, lo);
        cuts.push(hi);
        let mut out: Vec<(UsageLine, Frac, String)> = Vec::new();
        for resource in Resource::ALL {
            // (start, end, quantity, price, card) of the open run.
            let mut run: Option<(i64, i64, Decimal, Frac, String)> = None;
            let mut close = |run: &mut Option<(i64, i64, Decimal, Frac, String)>| {
                if let Some((start, end, quantity, price, card)) = run.take() {
                    let exact = Frac::dec(quantity)
                        .mul(price)
                        .mul(Frac::int(end - start))
                        .mul(Frac::new(1, 3600));
                    out.push((
                        UsageLine {
                            lease: lease_id.to_string(),
                            resource,
                            start,
                            end,
                            amount: Decimal::ZERO,
                        },
                        exact,
                        card,
                    ));
                }
            };
            for pair in cuts.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let quantity =
                    in_force(&lease.binds, a).map_or(Decimal::ZERO, |r| amount_of(&r, resource));
                if quantity.is_zero() {
                    close(&mut run);
                    continue;
                }
                let card = self
                    .card_at(&lease.pool, a)
                    .unwrap_or_else(|| panic!("no card for {lease_id} at {a}"));
                let price = self.price(lease, card, resource, a);
                match &mut run {
                    Some((_, end, q, p, c))
                        if *end == a && *q == quantity && *p == price && *c == card.id() =>
                    {
                        *end = b;
                    }
                    _ => {
                        close(&mut run);
                        run = Some((a, b, quantity, price, card.id()));
                    }
                }
            }
            close(&mut run);
        }
        for (line, exact, card) in &mut out {
            let dp = self
                .cards
                .iter()
                .find(|c| c.id() == *card)
                .unwrap()
                .line_precision();
            line.amount = exact.round(dp);
        }
        out
    }

    /// Usage lines of a tenant's bill for `period`, sorted.
    pub fn usage_lines(&self, tenant: &str, period: &Period) -> Vec<UsageLine> {
        let mut lines: Vec<UsageLine> = self
            .leases
            .iter()
            .filter(|(_, l)| l.tenant == tenant)
            .flat_map(|(id, _)| self.usage(id, period, period.end.timestamp()))
            .map(|(line, _, _)| line)
            .collect();
        lines.sort();
        lines
    }

    /// The total of a tenant's bill for `period` (no finalized periods before it):
    /// rounded usage lines, minimum-charge top-ups and SLA credits.
    pub fn total(&self, tenant: &str, period: &Period, months: &[Period]) -> Decimal {
        let mut total = Decimal::ZERO;
        for line in self.usage_lines(tenant, period) {
            total += line.amount;
        }
        for (id, lease) in self.leases.iter().filter(|(_, l)| l.tenant == tenant) {
            let Some((end, reason)) = lease.end else {
                continue;
            };
            if !(period.start.timestamp() <= end && end < period.end.timestamp()) {
                continue;
            }
            // Minimum charge, against the rounded usage of the lease's whole life.
            let lifetime: Vec<(UsageLine, Frac, String)> = months
                .iter()
                .flat_map(|m| self.usage(id, m, m.end.timestamp()))
                .collect();
            if let Some(first) = lifetime.iter().map(|l| l.0.start).min() {
                let card = self.card_at(&lease.pool, first).unwrap();
                if let Some(minimum) = card.minimum_charge_per_lease {
                    let billed: Decimal = lifetime.iter().map(|l| l.0.amount).sum();
                    if billed < minimum {
                        total += Frac::dec(minimum - billed).round(card.line_precision());
                    }
                }
            }
            // SLA credit for a Reserved lease reclaimed before its planned end.
            let Some(first_bind) = lease.binds.iter().map(|b| b.0).min() else {
                continue;
            };
            let early = lease.class == LeaseClass::Reserved
                && reason == EndReason::Reclaimed
                && lease.planned_end.is_some_and(|p| p > end)
                && end > first_bind;
            let card = self.card_at(&lease.pool, end - 1);
            let (true, Some(card)) = (early, card) else {
                continue;
            };
            let exact = match &card.sla_credit {
                None => continue,
                Some(SlaCreditRule::PercentOfRemainingTerm { percent }) => {
                    let held = in_force(&lease.binds, end - 1).unwrap();
                    let remaining = Frac::int(lease.planned_end.unwrap() - end);
                    let mut cost = Frac::ZERO;
                    for resource in Resource::ALL {
                        cost = cost.add(
                            Frac::dec(amount_of(&held, resource))
                                .mul(Frac::dec(card.prices.reserved.get(resource)))
                                .mul(remaining)
                                .mul(Frac::new(1, 3600)),
                        );
                    }
                    cost.mul(Frac::dec(*percent)).mul(Frac::new(1, 100))
                }
                Some(SlaCreditRule::NoticeSecondsFree) => {
                    let Some(notice) = lease.notice.filter(|&n| n < end) else {
                        continue;
                    };
                    let from = notice.max(first_bind);
                    let mut charges = Frac::ZERO;
                    for m in months {
                        for (line, exact, _) in self.usage(id, m, end) {
                            // The part of the line at or after the notice, second by second.
                            let overlap = line.end.min(end) - line.start.max(from);
                            if overlap > 0 {
                                charges = charges.add(exact.mul(Frac::new(
                                    i128::from(overlap),
                                    i128::from(line.end - line.start),
                                )));
                            }
                        }
                    }
                    charges
                }
            };
            total += Frac::ZERO.sub(exact).round(card.line_precision());
        }
        total
    }
}
