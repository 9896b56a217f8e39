//! Offpeak billing: facts in, bills out. Knows nothing of Kubernetes.
//!
//! The operator records **facts** ([`meter::Fact`]) about leases, pools and rate
//! cards; a **bill** ([`bill::Bill`]) is a pure function of the facts for one tenant
//! and one period ([`meter::Model::bill`]). The [`ledger::Ledger`] stores facts
//! idempotently and bills durably (SQLite or PostgreSQL); [`focus`] exports bills as
//! FinOps FOCUS 1.2 CSV; [`cli`] is `offpeak billing ...`.
//!
//! # The rules
//!
//! 1. **Per second, per resource and class.** A line's charge is
//!    `quantity × seconds × price per resource-hour / 3600`, for cpu (cores, per
//!    core-hour), memory (GiB, per GiB-hour) and gpu (per GPU-hour), at the Spot or
//!    Reserved price of the rate card in force. Instants are truncated to whole
//!    seconds; intervals are half-open `[start, end)`, so a lease that ends at
//!    `06:00:00` is billed up to and including second `05:59:59`.
//! 2. **Capacity is what was bound.** A `capacityBound` fact sets the whole amount a
//!    lease holds from its instant on (zero releases it) until the next one or the
//!    lease's end. Seconds before the first binding are free.
//! 3. **A rate change splits the line at that second.** The card in force for a pool
//!    at an instant is the applicable card with the latest `effectiveFrom` whose
//!    `[effectiveFrom, effectiveUntil)` contains it. Leased capacity at a second no card
//!    covers is an error ([`error::BillingError::RateCardGap`]), never a free second.
//! 4. **Spot prices move with pool utilisation**, piecewise-constant:
//!    `spot × clamp(1 + sensitivity × (u − baseUtilisation), floor, ceiling)` where `u`
//!    is the pool's last `poolUtilisation` (the base price before any). Each change
//!    that changes the price splits the line; one that does not, does not.
//! 5. **Periods.** One bill per tenant per period (calendar months in UTC by default;
//!    weeks or days if configured). A lease crossing a boundary is billed in each
//!    period for its own seconds: the line is split at the boundary.
//! 6. **Minimum charge per lease** (from the card in force at the lease's first billed
//!    second): when a lease ends, if the sum of its rounded usage lines over its whole
//!    life is below the minimum, a `MinimumCharge` line in the period of its end tops
//!    it up. A lease that never held capacity pays nothing.
//! 7. **SLA credit** when a Reserved lease ends with reason `Reclaimed` before its
//!    `plannedEnd`, by the rule of the card in force at its last second, in the period
//!    of the reclaim, as a negative `SlaCredit` line:
//!    `percentOfRemainingTerm` credits `percent`% of what the unserved remainder
//!    (reclaim to planned end) would have cost at that card's reserved prices and the
//!    capacity held at the reclaim; `noticeSecondsFree` credits the charges of the
//!    seconds from the (first) notice to the reclaim.
//! 8. **Rounding only at line totals**, half away from zero, to the card's `precision`
//!    or else the currency's minor unit (2 for USD, 0 for JPY, 3 for KWD), and every
//!    amount keeps exactly that many places wherever it is shown or stored (`36.00`,
//!    never `36`). A bill's total is the exact sum of its lines (`0.00` when it has
//!    none). All lines of a bill share one currency.
//! 9. **Finality.** An open bill is recomputed whenever asked. A finalized bill never
//!    changes. When facts change what a finalized period should have billed, the next
//!    open bill (the first non-finalized period after it) carries `correction` lines:
//!    what the facts say now minus what was billed (including earlier corrections).
//!
//! Order and replays do not matter: facts are a set keyed by their `key`; equal
//! instants are ordered by key, so the same facts always give the same bill.
//!
//! # Worked example
//!
//! Rate card `standard@2026-10` (USD): reserved 0.04 per core-hour and 0.005 per
//! GiB-hour, SLA credit 25% of the remaining term. Version `standard@2026-11b` raises
//! the reserved core-hour to 0.045 from 15 November 00:00. Lease `acme/db`, Reserved,
//! 16 cores and 64 GiB from 14 November 00:00, planned to end 16 November 00:00, is
//! reclaimed at 15 November 12:00:
//!
//! | line | seconds | computation | amount |
//! |---|---|---|---|
//! | cpu, standard@2026-10 | 86 400 | 16 × 86 400 × 0.04 / 3600 | 15.36 |
//! | cpu, standard@2026-11b | 43 200 | 16 × 43 200 × 0.045 / 3600 | 8.64 |
//! | memory, standard@2026-10 | 86 400 | 64 × 86 400 × 0.005 / 3600 | 7.68 |
//! | memory, standard@2026-11b | 43 200 | 64 × 43 200 × 0.005 / 3600 | 3.84 |
//! | SLA credit | 43 200 unserved | 25% × 12 h × (16 × 0.045 + 64 × 0.005) | −3.12 |
//! | **total** | | | **32.40 USD** |
//!
//! The same in code:
//!
//! ```
//! use offpeak_billing::meter::{parse_facts, FactSet, Model};
//! use offpeak_billing::period::{BillingCycle, Period};
//!
//! let card = |version: &str, from: &str, cpu: &str| format!(
//!     r#"{{"key":"card/{version}","type":"rateCard","rateCard":{{"name":"standard","version":"{version}",
//!     "currency":"USD","effectiveFrom":"{from}","slaCredit":{{"rule":"percentOfRemainingTerm","percent":"25"}},
//!     "prices":{{"spot":{{"cpu":"0.02","memory":"0.0025"}},"reserved":{{"cpu":"{cpu}","memory":"0.005"}}}}}}}}"#);
//! let facts = [
//!     card("2026-10", "2026-10-01T00:00:00Z", "0.04"),
//!     card("2026-11b", "2026-11-15T00:00:00Z", "0.045"),
//!     r#"{"key":"db/admitted","type":"leaseAdmitted","lease":"acme/db","tenant":"acme","pool":"general",
//!         "class":"Reserved","at":"2026-11-14T00:00:00Z","plannedEnd":"2026-11-16T00:00:00Z"}"#.replace('\n', ""),
//!     r#"{"key":"db/bound","type":"capacityBound","lease":"acme/db","at":"2026-11-14T00:00:00Z",
//!         "resources":{"cpu":"16","memory":"64"}}"#.replace('\n', ""),
//!     r#"{"key":"db/ended","type":"leaseEnded","lease":"acme/db","at":"2026-11-15T12:00:00Z",
//!         "reason":"Reclaimed"}"#.replace('\n', ""),
//! ]
//! .map(|line| line.replace('\n', ""))
//! .join("\n");
//! let model = Model::compile(&FactSet::from_facts(parse_facts(&facts, "example")?)?)?;
//! let november = Period::parse(BillingCycle::Monthly, "2026-11")?;
//! let bill = model.bill("acme", november, november.end, &[])?;
//! let amounts: Vec<String> = bill.lines.iter().map(|l| l.amount.amount.to_string()).collect();
//! assert_eq!(amounts, ["15.36", "8.64", "7.68", "3.84", "-3.12"]);
//! assert_eq!(bill.total.to_string(), "32.40 USD");
//! # Ok::<(), offpeak_billing::error::BillingError>(())
//! ```

pub mod bill;
pub mod cli;
pub mod error;
pub mod focus;
pub mod ledger;
pub mod meter;
pub mod money;
pub mod period;
pub mod rate;
