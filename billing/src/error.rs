//! The one error type of the billing crate.
//!
//! Every variant names *what* is wrong and *where* (fact key, lease, file and line,
//! rate card), because the person reading it is usually holding a facts file or a
//! ledger and needs to find the offending record without a debugger.

use chrono::{DateTime, Utc};

/// Everything that can go wrong while metering, billing or storing.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// A lease fact refers to a lease whose `leaseAdmitted` fact is neither in the
    /// same batch nor already in the ledger.
    #[error(
        "fact {key:?}: unknown lease {lease:?} (no leaseAdmitted fact for it in this batch or the ledger)"
    )]
    UnknownLease {
        /// Key of the offending fact.
        key: String,
        /// The lease it names.
        lease: String,
    },

    /// An interval whose end lies before its start.
    #[error("fact {key:?}: negative interval on lease {lease:?}: {what} {end} is before {start}")]
    NegativeInterval {
        /// Key of the offending fact.
        key: String,
        /// The lease concerned.
        lease: String,
        /// Which pair of instants is reversed, e.g. "end".
        what: &'static str,
        /// The earlier bound that should have come first.
        start: DateTime<Utc>,
        /// The bound that lies before `start`.
        end: DateTime<Utc>,
    },

    /// A currency code that is not an ISO 4217 code this crate knows.
    #[error("unknown currency {code:?} in {context}: expected an ISO 4217 code such as USD or EUR")]
    UnknownCurrency {
        /// The code as written.
        code: String,
        /// Where it was found (rate card name, column...).
        context: String,
    },

    /// Leased capacity at a second for which no rate card is in force.
    #[error(
        "rate card gap: lease {lease:?} in pool {pool:?} holds capacity at {at} but no rate card is in force then"
    )]
    RateCardGap {
        /// The lease that holds capacity.
        lease: String,
        /// Its pool.
        pool: String,
        /// The first uncovered second.
        at: DateTime<Utc>,
    },

    /// Two different rate cards claim the same pool from the same instant.
    #[error(
        "rate cards {first} and {second} both take effect for pool {pool:?} at {at}; give one a later effectiveFrom or disjoint pools"
    )]
    RateCardConflict {
        /// `name@version` of one card.
        first: String,
        /// `name@version` of the other.
        second: String,
        /// The pool both claim.
        pool: String,
        /// Their common effectiveFrom.
        at: DateTime<Utc>,
    },

    /// A rate card that breaks one of its own rules.
    #[error("rate card {card}: {message}")]
    InvalidRateCard {
        /// `name@version`.
        card: String,
        /// What is wrong.
        message: String,
    },

    /// A line of a facts or rate card file that cannot be read.
    #[error("{file}:{line}: {message}")]
    MalformedInput {
        /// File name as given.
        file: String,
        /// 1-based line number (0 when the whole file is concerned).
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// A fact that is well-formed but breaks a rule (negative amount, utilisation > 1...).
    #[error("fact {key:?}: {message}")]
    InvalidFact {
        /// Key of the offending fact.
        key: String,
        /// What is wrong.
        message: String,
    },

    /// The same key was recorded before with different content: a key names one fact forever.
    #[error("fact key {key:?} is already recorded with different content")]
    KeyConflict {
        /// The reused key.
        key: String,
    },

    /// A second admission or end for the same lease under another key.
    #[error("fact {key:?}: lease {lease:?} already has a {kind} fact (key {existing:?})")]
    DuplicateLeaseEvent {
        /// Key of the rejected fact.
        key: String,
        /// The lease.
        lease: String,
        /// `leaseAdmitted` or `leaseEnded`.
        kind: &'static str,
        /// Key of the fact already recorded.
        existing: String,
    },

    /// Lines of one bill priced in different currencies.
    #[error(
        "bill of tenant {tenant:?} for {period}: rate cards in {first} and {second} apply; one bill has one currency"
    )]
    CurrencyMismatch {
        /// The tenant.
        tenant: String,
        /// Period label.
        period: String,
        /// One currency.
        first: String,
        /// The other.
        second: String,
    },

    /// Nothing to bill a tenant with: no lease and no rate card gives a currency.
    #[error("tenant {tenant:?} has no leases and no rate card is in force in {period}")]
    NothingToBill {
        /// The tenant.
        tenant: String,
        /// Period label.
        period: String,
    },

    /// A period label that does not parse for the configured cycle.
    #[error("invalid period {label:?} for a {cycle} cycle: expected {expected}")]
    InvalidPeriod {
        /// The label as given.
        label: String,
        /// The cycle name.
        cycle: &'static str,
        /// An example of a valid label.
        expected: &'static str,
    },

    /// An attempt to change a finalized bill.
    #[error("bill of tenant {tenant:?} for {period} is finalized and never changes")]
    Finalized {
        /// The tenant.
        tenant: String,
        /// Period label.
        period: String,
    },

    /// A ledger created for another billing cycle.
    #[error("ledger was created with a {stored} billing cycle, opened with {requested}")]
    CycleMismatch {
        /// Cycle stored in the ledger.
        stored: String,
        /// Cycle asked for.
        requested: String,
    },

    /// Decimal arithmetic out of range.
    #[error("arithmetic overflow while computing {what}")]
    Overflow {
        /// Which amount.
        what: String,
    },

    /// The database refused or failed.
    #[error("ledger database: {0}")]
    Database(#[from] sqlx::Error),

    /// Schema migration failed.
    #[error("ledger migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    /// The ledger holds a row this version cannot read.
    #[error("ledger holds an unreadable {what}: {message}")]
    Corrupt {
        /// What kind of row.
        what: &'static str,
        /// Why it cannot be read.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = BillingError> = std::result::Result<T, E>;
