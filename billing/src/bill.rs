//! Bills: a pure function of the facts, one tenant, one period.
//!
//! [`Model::bill`] never reads a clock or a database: given the same facts (in any
//! order, with any replays), the same period, the same `as_of` and the same finalized
//! earlier bills, it returns the same bill, line for line, digit for digit.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{BillingError, Result};
use crate::meter::{EndReason, LeaseModel, Model};
use crate::money::{Currency, Money, round_line};
use crate::period::{BillingCycle, Period};
use crate::rate::{LeaseClass, RateCard, Resource, SlaCreditRule};

const SECONDS_PER_HOUR: i64 = 3600;

/// What a line charges for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LineKind {
    /// Seconds of one resource at one price.
    Usage,
    /// Top-up to the rate card's minimum charge per lease.
    MinimumCharge,
    /// SLA credit for an early reclaim of a Reserved lease (negative).
    SlaCredit,
}

/// Whether a bill can still change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillState {
    /// Recomputed whenever asked.
    Open,
    /// Frozen; late facts become correction lines on the next open bill.
    Finalized,
}

impl BillState {
    /// Name stored in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            BillState::Open => "open",
            BillState::Finalized => "finalized",
        }
    }
}

/// One line of a bill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillLine {
    /// What the line charges for.
    pub kind: LineKind,
    /// Label of the finalized period this line corrects, if it is a correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction_of: Option<String>,
    /// Lease id.
    pub lease: String,
    /// Lease display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_name: Option<String>,
    /// Pool.
    pub pool: String,
    /// Lease class.
    pub class: LeaseClass,
    /// Region id, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Region display name, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_name: Option<String>,
    /// Tenant's tags on the lease.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Resource of a usage line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// First second charged (inclusive).
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
    /// Seconds charged (for a correction: the change in seconds).
    pub seconds: i64,
    /// Amount of the resource held (cores, GiB, GPUs); 0 on non-usage lines.
    pub quantity: Decimal,
    /// Price per resource-hour of a usage line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Money>,
    /// `name@version` of the rate card that priced the line.
    pub rate_card: String,
    /// The line total, rounded to the card's precision.
    pub amount: Money,
    /// A sentence a person can read for lines that are not plain usage (usage lines
    /// describe themselves from their fields: see [`BillLine::description`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl BillLine {
    /// A sentence a person can read: what the line charges and at what price.
    pub fn description(&self) -> String {
        let text = match (self.kind, self.resource, self.unit_price) {
            (LineKind::Usage, Some(resource), Some(price)) => format!(
                "{resource} {} {} x {} s at {} {} per {}-hour ({}, {})",
                self.quantity,
                resource.unit(),
                self.seconds,
                price.amount,
                price.currency,
                resource.unit(),
                self.class,
                self.rate_card
            ),
            _ => self.note.clone(),
        };
        match &self.correction_of {
            Some(period) => format!("correction for {period}: {text}"),
            None => text,
        }
    }

    /// Resource-seconds charged (`quantity × seconds`).
    pub fn resource_seconds(&self) -> Decimal {
        self.quantity * Decimal::from(self.seconds)
    }
}

/// A tenant's bill for one period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bill {
    /// The tenant.
    pub tenant: String,
    /// Period label, e.g. `2026-11`.
    pub period: String,
    /// Billing cycle of the period.
    pub cycle: BillingCycle,
    /// Inclusive start of the period.
    pub period_start: DateTime<Utc>,
    /// Exclusive end of the period.
    pub period_end: DateTime<Utc>,
    /// Open or finalized.
    pub state: BillState,
    /// Facts are billed up to this instant (the period end once it is over).
    pub as_of: DateTime<Utc>,
    /// Currency of every line.
    pub currency: Currency,
    /// The lines, in a deterministic order.
    pub lines: Vec<BillLine>,
    /// Sum of the line amounts.
    pub total: Money,
}

impl Bill {
    /// The bill's period.
    pub fn period(&self) -> Period {
        Period {
            start: self.period_start,
            end: self.period_end,
            cycle: self.cycle,
        }
    }
}

/// A stretch of one resource of one lease at one price, before it becomes a line.
#[derive(Clone, Copy, Debug)]
struct Piece {
    resource: Resource,
    start: i64,
    end: i64,
    quantity: Decimal,
    unit_price: Decimal,
    card: usize,
}

/// What a lease was billed for its pieces in one period, in the order they were cut.
struct PeriodUsage {
    /// Start and card of the first piece.
    first: Option<(i64, usize)>,
    /// Sum of the rounded amounts.
    billed: Decimal,
}

/// The lines of one lease in one period, before they become [`BillLine`]s.
struct LeaseLines {
    /// Usage pieces with their rounded amounts, in line order.
    usage: Vec<(Piece, Decimal)>,
    /// Minimum charge and SLA credit lines, in line order.
    other: Vec<BillLine>,
}

/// The order of lines on a bill: regular lines before corrections, then by lease,
/// kind, resource and time.
fn line_order(a: &BillLine, b: &BillLine) -> std::cmp::Ordering {
    (
        &a.correction_of,
        &a.lease,
        a.kind,
        a.resource,
        a.start,
        a.end,
    )
        .cmp(&(
            &b.correction_of,
            &b.lease,
            b.kind,
            b.resource,
            b.start,
            b.end,
        ))
}

fn instant(at: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(at, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn overflow(what: &str) -> BillingError {
    BillingError::Overflow {
        what: what.to_string(),
    }
}

/// `quantity × seconds × price-per-hour / 3600`, exact to 28 digits.
fn exact_charge(quantity: Decimal, unit_price: Decimal, seconds: i64) -> Option<Decimal> {
    quantity
        .checked_mul(unit_price)
        .and_then(|v| v.checked_mul(Decimal::from(seconds)))
        .and_then(|v| v.checked_div(Decimal::from(SECONDS_PER_HOUR)))
}

impl Model {
    fn card(&self, index: usize) -> &RateCard {
        self.book.card(index)
    }

    /// Pieces of `lease` within `[from, to)`, split wherever the capacity, the card in
    /// force, the pool utilisation (spot only) or the billing period changes, and merged
    /// again where none of that changed the price.
    fn pieces(
        &self,
        lease: &LeaseModel,
        cycle: BillingCycle,
        from: i64,
        to: i64,
    ) -> Result<Vec<Piece>> {
        let cap = &lease.capacity;
        let Some(&(first_bound, _)) = cap.first() else {
            return Ok(Vec::new());
        };
        let stop = lease.end.map_or(to, |(end, _)| end.min(to));
        let mut t = from.max(first_bound);
        if t >= stop {
            return Ok(Vec::new());
        }
        let pool = lease.admitted.pool.as_str();
        let class = lease.admitted.class;
        let cards = self.book.timeline(pool);
        let no_util: &[(i64, Decimal)] = &[];
        let util = match class {
            LeaseClass::Spot => self.utilisation.get(pool).map_or(no_util, Vec::as_slice),
            LeaseClass::Reserved => no_util,
        };
        let mut ci = cap.partition_point(|&(at, _)| at <= t) - 1;
        let mut ri = cards.partition_point(|&(at, _)| at <= t);
        let mut ui = util.partition_point(|&(at, _)| at <= t);
        let mut period_end = Period::containing(cycle, instant(t)).end.timestamp();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut open: [Option<usize>; 3] = [None; 3];
        let mut price_key: Option<(usize, usize)> = None;
        let mut prices: [Option<Decimal>; 3] = [None; 3];
        while t < stop {
            let mut next = stop.min(period_end);
            if let Some(&(at, _)) = cap.get(ci + 1) {
                next = next.min(at);
            }
            if let Some(&(at, _)) = cards.get(ri) {
                next = next.min(at);
            }
            if let Some(&(at, _)) = util.get(ui) {
                next = next.min(at);
            }
            let amounts = cap[ci].1;
            for (slot, resource) in Resource::ALL.into_iter().enumerate() {
                let quantity = amounts.get(resource);
                if quantity.is_zero() {
                    open[slot] = None;
                    continue;
                }
                let card = match ri.checked_sub(1).and_then(|i| cards[i].1) {
                    Some(card) => card,
                    None => {
                        return Err(BillingError::RateCardGap {
                            lease: lease.admitted.lease.clone(),
                            pool: pool.to_string(),
                            at: instant(t),
                        });
                    }
                };
                // Prices change only with the card or the utilisation, far less often
                // than capacity: price each resource once per (card, utilisation).
                if price_key != Some((card, ui)) {
                    price_key = Some((card, ui));
                    prices = [None; 3];
                }
                let unit_price = match prices[slot] {
                    Some(price) => price,
                    None => {
                        let utilisation = ui.checked_sub(1).map(|i| util[i].1);
                        let price = self
                            .card(card)
                            .unit_price(class, resource, utilisation)
                            .normalize();
                        prices[slot] = Some(price);
                        price
                    }
                };
                match open[slot].map(|i| &mut pieces[i]) {
                    Some(p)
                        if p.end == t
                            && p.quantity == quantity
                            && p.unit_price == unit_price
                            && p.card == card =>
                    {
                        p.end = next;
                    }
                    _ => {
                        open[slot] = Some(pieces.len());
                        pieces.push(Piece {
                            resource,
                            start: t,
                            end: next,
                            quantity,
                            unit_price,
                            card,
                        });
                    }
                }
            }
            t = next;
            while cap.get(ci + 1).is_some_and(|&(at, _)| at <= t) {
                ci += 1;
            }
            while cards.get(ri).is_some_and(|&(at, _)| at <= t) {
                ri += 1;
            }
            while util.get(ui).is_some_and(|&(at, _)| at <= t) {
                ui += 1;
            }
            if t >= period_end {
                // A period boundary always splits: each period bills its own seconds.
                open = [None; 3];
                period_end = Period::containing(cycle, instant(t)).end.timestamp();
            }
        }
        Ok(pieces)
    }

    fn line_template(
        &self,
        lease: &LeaseModel,
        kind: LineKind,
        card_index: usize,
        start: i64,
        end: i64,
    ) -> BillLine {
        let a = &lease.admitted;
        BillLine {
            kind,
            correction_of: None,
            lease: a.lease.clone(),
            lease_name: a.name.clone(),
            pool: a.pool.clone(),
            class: a.class,
            region: a.region.clone(),
            region_name: a.region_name.clone().or_else(|| a.region.clone()),
            tags: a.tags.clone(),
            resource: None,
            start: instant(start),
            end: instant(end),
            seconds: end - start,
            quantity: Decimal::ZERO,
            unit_price: None,
            rate_card: self.book.card_id(card_index).to_string(),
            amount: Money::new(Decimal::ZERO, self.card(card_index).currency),
            note: String::new(),
        }
    }

    /// The exact and the rounded charge of a piece.
    fn piece_charge(&self, lease: &LeaseModel, piece: &Piece) -> Result<(Decimal, Decimal)> {
        let exact = exact_charge(piece.quantity, piece.unit_price, piece.end - piece.start)
            .ok_or_else(|| overflow(&format!("usage of lease {}", lease.admitted.lease)))?;
        Ok((
            exact,
            round_line(exact, self.card(piece.card).line_precision()),
        ))
    }

    fn usage_line(&self, lease: &LeaseModel, piece: &Piece, amount: Decimal) -> BillLine {
        let currency = self.card(piece.card).currency;
        let mut line =
            self.line_template(lease, LineKind::Usage, piece.card, piece.start, piece.end);
        line.resource = Some(piece.resource);
        line.quantity = piece.quantity;
        line.unit_price = Some(Money::new(piece.unit_price, currency));
        line.amount = Money::new(amount, currency);
        line
    }

    /// Lines of one lease in `period` as known at `as_of`, without corrections: the
    /// usage pieces with their rounded amounts, in line order, and the other lines.
    fn lease_lines(&self, lease: &LeaseModel, period: &Period, as_of: i64) -> Result<LeaseLines> {
        let from = period.start.timestamp();
        let to = period.end.timestamp().min(as_of);
        let pieces = self.pieces(lease, period.cycle, from, to)?;
        let mut period_usage = PeriodUsage {
            first: pieces.first().map(|p| (p.start, p.card)),
            billed: Decimal::ZERO,
        };
        let mut charged = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let amount = self.piece_charge(lease, &piece)?.1;
            period_usage.billed += amount;
            charged.push((piece, amount));
        }
        // Usage lines sort by resource, then time (see `line_order`). Each resource's
        // pieces are cut in time order, so grouping them by resource sorts them.
        let mut usage = Vec::with_capacity(charged.len());
        for resource in Resource::ALL {
            usage.extend(charged.iter().filter(|(p, _)| p.resource == resource));
        }
        let mut lines = LeaseLines {
            usage,
            other: Vec::new(),
        };
        self.end_lines(lease, period, as_of, &period_usage, &mut lines.other)?;
        Ok(lines)
    }

    /// The minimum charge and SLA credit lines of a lease that ends in `period`.
    fn end_lines(
        &self,
        lease: &LeaseModel,
        period: &Period,
        as_of: i64,
        period_usage: &PeriodUsage,
        out: &mut Vec<BillLine>,
    ) -> Result<()> {
        let from = period.start.timestamp();
        let Some((end, reason)) = lease.end else {
            return Ok(());
        };
        if !(from <= end && end < period.end.timestamp() && end <= as_of) {
            return Ok(());
        }
        let Some(&(first_bound, _)) = lease.capacity.first() else {
            return Ok(());
        };
        let pool = lease.admitted.pool.as_str();

        // Minimum charge: settled in the period the lease ends in, against the sum of
        // its rounded usage lines over its whole life. A lease whose whole life lies in
        // the period was billed exactly the period's pieces: no need to price them again.
        let lifetime = if from <= first_bound {
            None
        } else {
            Some(self.pieces(lease, period.cycle, first_bound, end)?)
        };
        let first = match &lifetime {
            None => period_usage.first,
            Some(pieces) => pieces.first().map(|p| (p.start, p.card)),
        };
        if let Some((first_start, first_card)) = first {
            let card_index = self.book.card_at(pool, first_start).unwrap_or(first_card);
            let card = self.card(card_index);
            if let Some(minimum) = card.minimum_charge_per_lease {
                let billed = match &lifetime {
                    None => period_usage.billed,
                    Some(pieces) => {
                        let mut billed = Decimal::ZERO;
                        for piece in pieces {
                            billed += self.piece_charge(lease, piece)?.1;
                        }
                        billed
                    }
                };
                if billed < minimum {
                    let top_up = round_line(minimum - billed, card.line_precision());
                    let mut line = self.line_template(
                        lease,
                        LineKind::MinimumCharge,
                        card_index,
                        first_start.max(from),
                        end,
                    );
                    line.amount = Money::new(top_up, card.currency);
                    line.note = format!(
                        "minimum charge {minimum} {} per lease; usage billed {billed} {} ({})",
                        card.currency,
                        card.currency,
                        self.book.card_id(card_index)
                    );
                    out.push(line);
                }
            }
        }

        // SLA credit for a Reserved lease reclaimed before its planned end.
        let planned_end = lease.admitted.planned_end.map(|p| p.timestamp());
        let reclaimed_early = lease.admitted.class == LeaseClass::Reserved
            && reason == EndReason::Reclaimed
            && planned_end.is_some_and(|p| p > end);
        if !reclaimed_early || end <= first_bound {
            return Ok(());
        }
        let Some(card_index) = self.book.card_at(pool, end - 1) else {
            return Ok(());
        };
        let card = self.card(card_index);
        let Some(rule) = &card.sla_credit else {
            return Ok(());
        };
        let what = format!("SLA credit of lease {}", lease.admitted.lease);
        let (credit_from, credit_to, exact, description) = match rule {
            SlaCreditRule::PercentOfRemainingTerm { percent } => {
                let planned = planned_end.unwrap_or(end);
                let held =
                    lease.capacity[lease.capacity.partition_point(|&(at, _)| at < end) - 1].1;
                let mut term_cost = Decimal::ZERO;
                for resource in Resource::ALL {
                    let price = card.unit_price(LeaseClass::Reserved, resource, None);
                    term_cost += exact_charge(held.get(resource), price, planned - end)
                        .ok_or_else(|| overflow(&what))?;
                }
                let exact = term_cost
                    .checked_mul(*percent)
                    .map(|v| v / Decimal::ONE_HUNDRED)
                    .ok_or_else(|| overflow(&what))?;
                (
                    end,
                    planned,
                    exact,
                    format!(
                        "SLA credit: Reserved lease reclaimed {} s before its planned end; {percent}% of the remaining term ({})",
                        planned - end,
                        card.id()
                    ),
                )
            }
            SlaCreditRule::NoticeSecondsFree => {
                let Some(notice) = lease.notice.filter(|&n| n < end) else {
                    return Ok(());
                };
                let start = notice.max(first_bound);
                let mut exact = Decimal::ZERO;
                for piece in self.pieces(lease, period.cycle, start, end)? {
                    exact += self.piece_charge(lease, &piece)?.0;
                }
                (
                    start,
                    end,
                    exact,
                    format!(
                        "SLA credit: Reserved lease reclaimed early; the {} s from notice to reclaim are free ({})",
                        end - start,
                        card.id()
                    ),
                )
            }
        };
        let credit = round_line(-exact, card.line_precision());
        if !credit.is_zero() {
            let mut line = self.line_template(
                lease,
                LineKind::SlaCredit,
                card_index,
                credit_from,
                credit_to,
            );
            line.amount = Money::new(credit, card.currency);
            line.note = description;
            out.push(line);
        }
        Ok(())
    }

    fn regular_lines(&self, tenant: &str, period: &Period, as_of: i64) -> Result<Vec<BillLine>> {
        let leases = self.tenants.get(tenant).map(Vec::as_slice).unwrap_or(&[]);
        let planned = leases
            .iter()
            .map(|&i| {
                let lease = &self.leases[i];
                Ok((lease, self.lease_lines(lease, period, as_of)?))
            })
            .collect::<Result<Vec<_>>>()?;
        // Lines are large: allocate them once rather than growing and moving them.
        let count = planned
            .iter()
            .map(|(_, l)| l.usage.len() + l.other.len())
            .sum();
        let mut lines = Vec::with_capacity(count);
        for (lease, lease_lines) in planned {
            for (piece, amount) in &lease_lines.usage {
                lines.push(self.usage_line(lease, piece, *amount));
            }
            lines.extend(lease_lines.other);
        }
        Ok(lines)
    }

    /// Correction lines for the finalized periods right before `period` (the run of
    /// consecutive finalized periods ending just before it): for each, what the facts
    /// say now minus what was billed (its own lines plus corrections already made).
    fn corrections(
        &self,
        tenant: &str,
        period: &Period,
        finalized: &[Bill],
    ) -> Result<Vec<BillLine>> {
        let by_label: HashMap<&str, &Bill> = finalized
            .iter()
            .filter(|b| {
                b.tenant == tenant && b.state == BillState::Finalized && b.cycle == period.cycle
            })
            .map(|b| (b.period.as_str(), b))
            .collect();
        let mut run: Vec<(Period, &Bill)> = Vec::new();
        let mut cursor = period.previous();
        while let Some(bill) = by_label.get(cursor.label().as_str()) {
            run.push((cursor, bill));
            cursor = cursor.previous();
        }
        type Key = (
            LineKind,
            String,
            Option<Resource>,
            DateTime<Utc>,
            DateTime<Utc>,
            Decimal,
            Option<Decimal>,
            String,
        );
        let key_of = |l: &BillLine| -> Key {
            (
                l.kind,
                l.lease.clone(),
                l.resource,
                l.start,
                l.end,
                l.quantity,
                l.unit_price.map(|p| p.amount),
                l.rate_card.clone(),
            )
        };
        let mut out = Vec::new();
        for (index, (corrected, bill)) in run.iter().enumerate() {
            let label = corrected.label();
            let mut delta: BTreeMap<Key, (i64, Decimal, BillLine)> = BTreeMap::new();
            for line in self.regular_lines(tenant, corrected, corrected.end.timestamp())? {
                let entry = delta
                    .entry(key_of(&line))
                    .or_insert((0, Decimal::ZERO, line.clone()));
                entry.0 += line.seconds;
                entry.1 += line.amount.amount;
            }
            // Bills after `corrected` in the run are run[..index].
            let already = bill
                .lines
                .iter()
                .filter(|l| l.correction_of.is_none())
                .chain(run[..index].iter().flat_map(|(_, b)| {
                    b.lines
                        .iter()
                        .filter(|l| l.correction_of.as_deref() == Some(label.as_str()))
                }));
            for line in already {
                let entry = delta
                    .entry(key_of(line))
                    .or_insert((0, Decimal::ZERO, line.clone()));
                entry.0 -= line.seconds;
                entry.1 -= line.amount.amount;
            }
            for (_, (seconds, amount, template)) in delta {
                if seconds == 0 && amount.is_zero() {
                    continue;
                }
                let mut line = template;
                line.correction_of = Some(label.clone());
                line.seconds = seconds;
                line.amount.amount = amount;
                // A bill stored before amounts kept their places may hold `36` for
                // `36.00`; the difference is printed at the card's precision all the same.
                if let Some(dp) = self.book.precision_of(&line.rate_card) {
                    line.amount.amount.rescale(dp.max(amount.scale()));
                }
                out.push(line);
            }
        }
        Ok(out)
    }

    /// The bill of `tenant` for `period`, billing facts up to `as_of` (clamped to the
    /// period), with correction lines for late facts about the finalized periods right
    /// before it. `finalized` are the tenant's finalized bills (others are ignored).
    pub fn bill(
        &self,
        tenant: &str,
        period: Period,
        as_of: DateTime<Utc>,
        finalized: &[Bill],
    ) -> Result<Bill> {
        let as_of = as_of.min(period.end);
        // Regular lines come sorted (leases in id order, each lease's lines sorted);
        // corrections follow, sorted the same way.
        let mut lines = self.regular_lines(tenant, &period, as_of.timestamp())?;
        let mut corrections = self.corrections(tenant, &period, finalized)?;
        corrections.sort_by(line_order);
        lines.extend(corrections);
        // An empty bill still prints its zero total at a card's precision (`0.00 USD`).
        let (currency, empty_precision) = match lines.first() {
            Some(line) => (line.amount.currency, 0),
            None => self
                .book
                .cards()
                .iter()
                .find(|c| {
                    c.effective_from < period.end
                        && c.effective_until.is_none_or(|u| u > period.start)
                })
                .map(|c| (c.currency, c.line_precision()))
                .ok_or_else(|| BillingError::NothingToBill {
                    tenant: tenant.to_string(),
                    period: period.label(),
                })?,
        };
        let mut total = Decimal::ZERO;
        total.rescale(empty_precision);
        for line in &lines {
            if line.amount.currency != currency {
                return Err(BillingError::CurrencyMismatch {
                    tenant: tenant.to_string(),
                    period: period.label(),
                    first: currency.to_string(),
                    second: line.amount.currency.to_string(),
                });
            }
            total = total
                .checked_add(line.amount.amount)
                .ok_or_else(|| overflow("bill total"))?;
        }
        Ok(Bill {
            tenant: tenant.to_string(),
            period: period.label(),
            cycle: period.cycle,
            period_start: period.start,
            period_end: period.end,
            state: BillState::Open,
            as_of,
            currency,
            lines,
            total: Money::new(total, currency),
        })
    }

    /// Bills of every tenant with a lease, for `period` as of `as_of`, without corrections.
    pub fn bills(&self, period: Period, as_of: DateTime<Utc>) -> Result<Vec<Bill>> {
        self.tenants()
            .map(|t| self.bill(t, period, as_of, &[]))
            .collect()
    }
}
