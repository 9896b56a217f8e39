//! Facts: what the operator saw happen to leases, pools and rate cards.
//!
//! A fact is recorded once under a unique `key` chosen by whoever observed it (the
//! operator derives it from the lease UID and the event, so that a replay after a
//! crash produces the same key). Recording a fact whose key is known is a no-op when
//! the content is the same and an error when it differs. Bills are computed from the
//! *set* of facts, so the order facts arrive in does not matter.
//!
//! Rules checked on every batch, before anything is stored ([`validate_batch`]):
//! - a fact about a lease needs the lease's `leaseAdmitted` fact in the same batch
//!   or already recorded;
//! - a lease is admitted once and ends once;
//! - no interval runs backwards (end before start, capacity bound before admission...);
//! - amounts are not negative, utilisation lies in 0..1, rate cards are valid and two
//!   cards never take effect for the same pool at the same instant.

use std::collections::BTreeMap;

use foldhash::HashMap;
use foldhash::HashMapExt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{BillingError, Result};
use crate::rate::{LeaseClass, RateBook, RateCard, Resource};

/// Tag keys Offpeak adds itself start with this prefix; tenants may not use it.
pub const PROVIDER_TAG_PREFIX: &str = "offpeak/";

/// One recorded fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// Unique key; the same key always names the same fact.
    pub key: String,
    /// What happened.
    #[serde(flatten)]
    pub body: FactBody,
}

/// What happened. Serialized with a `type` field in camelCase, e.g.
/// `{"key":"l1/admitted","type":"leaseAdmitted","lease":"l1",...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum FactBody {
    /// A lease was admitted.
    LeaseAdmitted(Box<LeaseAdmitted>),
    /// Capacity was bound to a lease from an instant on.
    CapacityBound(CapacityBound),
    /// The tenant was given notice that the lease will be reclaimed.
    NoticeGiven(NoticeGiven),
    /// The lease ended (expired, cancelled, reclaimed...).
    LeaseEnded(LeaseEnded),
    /// Utilisation of a pool changed (it moves the spot price).
    PoolUtilisation(PoolUtilisation),
    /// A rate card version was published.
    RateCard(Box<RateCardPublished>),
}

/// A lease was admitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseAdmitted {
    /// Lease id, unique across the ledger (e.g. `tenant-acme/nightly-render` or a UID).
    pub lease: String,
    /// Tenant billed for the lease.
    pub tenant: String,
    /// Pool the capacity comes from.
    pub pool: String,
    /// Spot or Reserved.
    pub class: LeaseClass,
    /// Admission instant.
    pub at: DateTime<Utc>,
    /// End of the term the tenant asked for (needed for Reserved SLA credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_end: Option<DateTime<Utc>>,
    /// Display name of the lease, if it has one besides its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Region id of the cluster, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Display name of the region; the region id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_name: Option<String>,
    /// Tenant's own tags (labels) on the lease.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Amounts of each resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAmounts {
    /// Cores.
    #[serde(default)]
    pub cpu: Decimal,
    /// GiB of memory.
    #[serde(default)]
    pub memory: Decimal,
    /// GPUs.
    #[serde(default)]
    pub gpu: Decimal,
}

impl ResourceAmounts {
    /// The amount of `resource`.
    pub fn get(&self, resource: Resource) -> Decimal {
        match resource {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
            Resource::Gpu => self.gpu,
        }
    }
}

/// From `at` on, the lease holds `resources` (until the next `capacityBound` of the
/// lease or its end). Binding zero of everything releases the capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapacityBound {
    /// Lease id.
    pub lease: String,
    /// First second the capacity is held.
    pub at: DateTime<Utc>,
    /// What is held from then on (the whole amount, not an increment).
    pub resources: ResourceAmounts,
    /// Nodes backing it (informational).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// The tenant was told the lease will be reclaimed by `deadline`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoticeGiven {
    /// Lease id.
    pub lease: String,
    /// When the notice was given.
    pub at: DateTime<Utc>,
    /// When the capacity will be taken back.
    pub deadline: DateTime<Utc>,
}

/// Why a lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// Its term ran out.
    Expired,
    /// The tenant deleted it.
    Cancelled,
    /// Offpeak took the capacity back (peak reservation, internal demand, headroom).
    Reclaimed,
    /// Spot price rose above the tenant's maximum.
    PriceExceeded,
}

/// The lease ended at `at`: its last billed second is `at - 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseEnded {
    /// Lease id.
    pub lease: String,
    /// End instant (exclusive).
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: EndReason,
}

/// Utilisation of a pool from `at` on, 0 to 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolUtilisation {
    /// Pool name.
    pub pool: String,
    /// From when.
    pub at: DateTime<Utc>,
    /// Fraction of the pool's capacity in use (internal plus leased).
    pub utilisation: Decimal,
}

/// A rate card version was published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateCardPublished {
    /// The card.
    pub rate_card: RateCard,
}

impl FactBody {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            FactBody::LeaseAdmitted(_) => "leaseAdmitted",
            FactBody::CapacityBound(_) => "capacityBound",
            FactBody::NoticeGiven(_) => "noticeGiven",
            FactBody::LeaseEnded(_) => "leaseEnded",
            FactBody::PoolUtilisation(_) => "poolUtilisation",
            FactBody::RateCard(_) => "rateCard",
        }
    }

    /// The lease the fact is about, if any.
    pub fn lease(&self) -> Option<&str> {
        match self {
            FactBody::LeaseAdmitted(f) => Some(&f.lease),
            FactBody::CapacityBound(f) => Some(&f.lease),
            FactBody::NoticeGiven(f) => Some(&f.lease),
            FactBody::LeaseEnded(f) => Some(&f.lease),
            FactBody::PoolUtilisation(_) | FactBody::RateCard(_) => None,
        }
    }

    /// The instant the fact is about.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            FactBody::LeaseAdmitted(f) => f.at,
            FactBody::CapacityBound(f) => f.at,
            FactBody::NoticeGiven(f) => f.at,
            FactBody::LeaseEnded(f) => f.at,
            FactBody::PoolUtilisation(f) => f.at,
            FactBody::RateCard(f) => f.rate_card.effective_from,
        }
    }

    /// What must be unique per kind beside the key: the lease for admissions and
    /// ends, `name@version` for rate cards, the pool for utilisation.
    pub fn subject(&self) -> String {
        match self {
            FactBody::PoolUtilisation(f) => f.pool.clone(),
            FactBody::RateCard(f) => f.rate_card.id(),
            other => other.lease().unwrap_or_default().to_string(),
        }
    }
}

/// Parses one line of a facts JSON Lines file. `file` and `line` (1-based) go into
/// the error message.
pub fn parse_fact_line(text: &str, file: &str, line: usize) -> Result<Fact> {
    serde_json::from_str::<Fact>(text).map_err(|e| BillingError::MalformedInput {
        file: file.to_string(),
        line,
        message: e.to_string(),
    })
}

/// Parses a whole facts JSON Lines text. Blank lines and lines starting with `#` are
/// skipped. The first malformed line fails the whole file.
pub fn parse_facts(text: &str, file: &str) -> Result<Vec<Fact>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| parse_fact_line(l, file, i + 1))
        .collect()
}

/// A deduplicated, validated set of facts, in memory.
#[derive(Debug, Default, Clone)]
pub struct FactSet {
    /// The facts, in the order they were first recorded.
    facts: Vec<Fact>,
    /// Index in `facts` by key.
    by_key: HashMap<String, usize>,
    /// Per fact, the ordinal of the lease it is about: compiling a model then needs
    /// no lookup by lease id.
    lease_of: Vec<Option<usize>>,
    /// Ordinal of every lease id a fact names.
    lease_ordinals: HashMap<String, usize>,
    /// Per lease ordinal, the index of its admission.
    admissions: Vec<Option<usize>>,
    /// Per lease ordinal, the index of its end.
    ends: Vec<Option<usize>>,
    /// Index of each rate card by `name@version`.
    rate_cards: HashMap<String, usize>,
}

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Facts recorded for the first time.
    pub inserted: usize,
    /// Facts already recorded with the same content (replays).
    pub duplicates: usize,
}

impl FactSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding `facts`, validated as one batch.
    pub fn from_facts(facts: Vec<Fact>) -> Result<Self> {
        let mut set = FactSet::new();
        set.append(facts)?;
        Ok(set)
    }

    /// Validates `batch` against the set and, only if all of it is valid, adds it.
    pub fn append(&mut self, batch: Vec<Fact>) -> Result<AppendOutcome> {
        let fresh = validate_batch(self, &batch)?;
        let inserted = fresh.len();
        let duplicates = batch.len() - inserted;
        let mut keep: Vec<bool> = vec![false; batch.len()];
        for i in fresh {
            keep[i] = true;
        }
        for (fact, keep) in batch.into_iter().zip(keep) {
            if keep {
                self.insert_unchecked(fact);
            }
        }
        Ok(AppendOutcome {
            inserted,
            duplicates,
        })
    }

    /// Adds a fact already known to be valid (read back from the ledger).
    pub(crate) fn insert_unchecked(&mut self, fact: Fact) {
        let lease = fact.body.lease().map(|id| self.lease_ordinal(id));
        let index = match self.by_key.get(&fact.key) {
            Some(&index) => index,
            None => {
                self.by_key.insert(fact.key.clone(), self.facts.len());
                self.facts.len()
            }
        };
        match (&fact.body, lease) {
            (FactBody::LeaseAdmitted(_), Some(lease)) => self.admissions[lease] = Some(index),
            (FactBody::LeaseEnded(_), Some(lease)) => self.ends[lease] = Some(index),
            (FactBody::RateCard(f), _) => {
                self.rate_cards.insert(f.rate_card.id(), index);
            }
            _ => {}
        }
        if index == self.facts.len() {
            self.facts.push(fact);
            self.lease_of.push(lease);
        } else {
            self.facts[index] = fact;
            self.lease_of[index] = lease;
        }
    }

    /// The ordinal of lease `id`, given one if it is new.
    fn lease_ordinal(&mut self, id: &str) -> usize {
        if let Some(&ordinal) = self.lease_ordinals.get(id) {
            return ordinal;
        }
        let ordinal = self.admissions.len();
        self.lease_ordinals.insert(id.to_string(), ordinal);
        self.admissions.push(None);
        self.ends.push(None);
        ordinal
    }

    /// Number of distinct facts.
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    /// Whether there is no fact.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// The fact under `key`.
    pub fn get(&self, key: &str) -> Option<&Fact> {
        self.by_key.get(key).map(|&i| &self.facts[i])
    }

    /// All facts, in the order they were first recorded (bills do not depend on it).
    pub fn iter(&self) -> impl Iterator<Item = &Fact> {
        self.facts.iter()
    }

    /// All facts, each with the ordinal of the lease it is about (below
    /// [`FactSet::lease_count`]).
    fn iter_with_lease(&self) -> impl Iterator<Item = (&Fact, Option<usize>)> {
        self.facts.iter().zip(self.lease_of.iter().copied())
    }

    /// Number of distinct lease ids the facts name.
    fn lease_count(&self) -> usize {
        self.admissions.len()
    }

    /// The admission of `lease`.
    pub fn admission(&self, lease: &str) -> Option<(&str, &LeaseAdmitted)> {
        let fact = &self.facts[self.admissions[*self.lease_ordinals.get(lease)?]?];
        match &fact.body {
            FactBody::LeaseAdmitted(f) => Some((fact.key.as_str(), &**f)),
            _ => None,
        }
    }

    fn end_key(&self, lease: &str) -> Option<&str> {
        let index = self.ends[*self.lease_ordinals.get(lease)?]?;
        Some(self.facts[index].key.as_str())
    }

    fn rate_cards(&self) -> impl Iterator<Item = &RateCard> {
        self.rate_cards
            .values()
            .filter_map(|&i| match &self.facts[i].body {
                FactBody::RateCard(f) => Some(&f.rate_card),
                _ => None,
            })
    }
}

fn invalid(key: &str, message: String) -> BillingError {
    BillingError::InvalidFact {
        key: key.to_string(),
        message,
    }
}

fn check_not_before(
    key: &str,
    lease: &str,
    what: &'static str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<()> {
    if end < start {
        return Err(BillingError::NegativeInterval {
            key: key.to_string(),
            lease: lease.to_string(),
            what,
            start,
            end,
        });
    }
    Ok(())
}

fn check_self(fact: &Fact) -> Result<()> {
    let key = fact.key.as_str();
    if key.is_empty() {
        return Err(invalid(key, "empty key".into()));
    }
    match &fact.body {
        FactBody::LeaseAdmitted(f) => {
            for (field, value) in [
                ("lease", &f.lease),
                ("tenant", &f.tenant),
                ("pool", &f.pool),
            ] {
                if value.is_empty() {
                    return Err(invalid(key, format!("{field} is empty")));
                }
            }
            if let Some(end) = f.planned_end {
                check_not_before(key, &f.lease, "plannedEnd", f.at, end)?;
            }
            if let Some(tag) = f.tags.keys().find(|k| k.starts_with(PROVIDER_TAG_PREFIX)) {
                return Err(invalid(
                    key,
                    format!("tag {tag:?} uses the reserved prefix {PROVIDER_TAG_PREFIX:?}"),
                ));
            }
        }
        FactBody::CapacityBound(f) => {
            for resource in Resource::ALL {
                if f.resources.get(resource).is_sign_negative() {
                    return Err(invalid(
                        key,
                        format!(
                            "resources.{resource} is negative ({})",
                            f.resources.get(resource)
                        ),
                    ));
                }
            }
        }
        FactBody::NoticeGiven(f) => check_not_before(key, &f.lease, "deadline", f.at, f.deadline)?,
        FactBody::LeaseEnded(_) => {}
        FactBody::PoolUtilisation(f) => {
            if f.utilisation < Decimal::ZERO || f.utilisation > Decimal::ONE {
                return Err(invalid(
                    key,
                    format!(
                        "utilisation {} of pool {:?} is outside 0..1",
                        f.utilisation, f.pool
                    ),
                ));
            }
        }
        FactBody::RateCard(f) => f.rate_card.validate()?,
    }
    Ok(())
}

/// Checks `batch` against the facts already `known` and returns the indices of the
/// facts that are new (first occurrence of a key not yet known). Nothing is changed.
pub fn validate_batch(known: &FactSet, batch: &[Fact]) -> Result<Vec<usize>> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let mut fresh = Vec::with_capacity(batch.len());
    for (i, fact) in batch.iter().enumerate() {
        if let Some(&j) = seen.get(fact.key.as_str()) {
            if batch[j].body != fact.body {
                return Err(BillingError::KeyConflict {
                    key: fact.key.clone(),
                });
            }
            continue;
        }
        if let Some(existing) = known.get(&fact.key) {
            if existing.body != fact.body {
                return Err(BillingError::KeyConflict {
                    key: fact.key.clone(),
                });
            }
            continue;
        }
        check_self(fact)?;
        seen.insert(&fact.key, i);
        fresh.push(i);
    }

    // Uniqueness of admissions, ends and card versions, within the batch and against
    // what is known.
    let mut admissions: HashMap<&str, &Fact> = HashMap::new();
    let mut ends: HashMap<&str, &str> = HashMap::new();
    let mut cards: Vec<&RateCard> = known.rate_cards().collect();
    for &i in &fresh {
        let fact = &batch[i];
        match &fact.body {
            FactBody::LeaseAdmitted(f) => {
                let existing = known
                    .admission(&f.lease)
                    .map(|(k, _)| k)
                    .or_else(|| admissions.get(f.lease.as_str()).map(|f| f.key.as_str()));
                if let Some(existing) = existing {
                    return Err(BillingError::DuplicateLeaseEvent {
                        key: fact.key.clone(),
                        lease: f.lease.clone(),
                        kind: "leaseAdmitted",
                        existing: existing.to_string(),
                    });
                }
                admissions.insert(&f.lease, fact);
            }
            FactBody::LeaseEnded(f) => {
                let existing = known
                    .end_key(&f.lease)
                    .or_else(|| ends.get(f.lease.as_str()).copied());
                if let Some(existing) = existing {
                    return Err(BillingError::DuplicateLeaseEvent {
                        key: fact.key.clone(),
                        lease: f.lease.clone(),
                        kind: "leaseEnded",
                        existing: existing.to_string(),
                    });
                }
                ends.insert(&f.lease, &fact.key);
            }
            FactBody::RateCard(f) => {
                let card = &f.rate_card;
                for other in &cards {
                    if other.id() == card.id() && *other != card {
                        return Err(BillingError::InvalidRateCard {
                            card: card.id(),
                            message: format!(
                                "fact {:?}: this name@version is already recorded with different content",
                                fact.key
                            ),
                        });
                    }
                    if card.conflicts_with(other) {
                        return Err(BillingError::RateCardConflict {
                            first: other.id(),
                            second: card.id(),
                            pool: card
                                .pools
                                .first()
                                .or(other.pools.first())
                                .cloned()
                                .unwrap_or_else(|| "*".into()),
                            at: card.effective_from,
                        });
                    }
                }
                cards.push(card);
            }
            _ => {}
        }
    }

    // Every lease fact needs an admission, and must not run before it.
    for &i in &fresh {
        let fact = &batch[i];
        let Some(lease) = fact.body.lease() else {
            continue;
        };
        let admitted_at = match admissions.get(lease) {
            Some(f) => f.body.at(),
            None => match known.admission(lease) {
                Some((_, a)) => a.at,
                None => {
                    return Err(BillingError::UnknownLease {
                        key: fact.key.clone(),
                        lease: lease.to_string(),
                    });
                }
            },
        };
        let key = fact.key.as_str();
        match &fact.body {
            FactBody::CapacityBound(f) => {
                check_not_before(key, lease, "capacity bound at", admitted_at, f.at)?
            }
            FactBody::NoticeGiven(f) => {
                check_not_before(key, lease, "notice at", admitted_at, f.at)?
            }
            FactBody::LeaseEnded(f) => check_not_before(key, lease, "end", admitted_at, f.at)?,
            _ => {}
        }
    }
    Ok(fresh)
}

/// One lease, compiled from its facts for billing. Times are unix seconds: facts are
/// truncated to whole seconds, so every boundary falls on a second and a second is
/// never split.
#[derive(Debug, Clone)]
pub(crate) struct LeaseModel {
    pub admitted: LeaseAdmitted,
    /// `(from, amounts)` sorted by `from`; at most one entry per second.
    pub capacity: Vec<(i64, ResourceAmounts)>,
    /// Earliest notice.
    pub notice: Option<i64>,
    /// End and why.
    pub end: Option<(i64, EndReason)>,
}

/// Facts compiled for billing: per-lease timelines, per-pool utilisation, the rate book.
#[derive(Debug)]
pub struct Model {
    pub(crate) leases: Vec<LeaseModel>,
    pub(crate) tenants: BTreeMap<String, Vec<usize>>,
    pub(crate) utilisation: HashMap<String, Vec<(i64, Decimal)>>,
    pub(crate) book: RateBook,
}

impl Model {
    /// Compiles a fact set.
    pub fn compile(facts: &FactSet) -> Result<Model> {
        let mut cards = Vec::new();
        let mut leases: Vec<LeaseModel> = Vec::new();
        // Lease ordinal in the fact set → index in `leases`.
        let mut index: Vec<Option<usize>> = vec![None; facts.lease_count()];
        for (fact, lease) in facts.iter_with_lease() {
            match &fact.body {
                FactBody::LeaseAdmitted(f) => {
                    if let Some(lease) = lease {
                        index[lease] = Some(leases.len());
                    }
                    leases.push(LeaseModel {
                        admitted: (**f).clone(),
                        capacity: Vec::new(),
                        notice: None,
                        end: None,
                    });
                }
                FactBody::RateCard(f) => cards.push(f.rate_card.clone()),
                _ => {}
            }
        }
        // Ties on the same second are broken by the greater key, so the result does
        // not depend on arrival order.
        let mut bound: Vec<Vec<(i64, &str, ResourceAmounts)>> = vec![Vec::new(); leases.len()];
        let mut util: HashMap<&str, Vec<(i64, &str, Decimal)>> = HashMap::new();
        for (fact, lease) in facts.iter_with_lease() {
            let lease_index = |id: &str| {
                lease
                    .and_then(|lease| index[lease])
                    .ok_or_else(|| BillingError::UnknownLease {
                        key: fact.key.clone(),
                        lease: id.to_string(),
                    })
            };
            match &fact.body {
                FactBody::CapacityBound(f) => {
                    bound[lease_index(&f.lease)?].push((f.at.timestamp(), &fact.key, f.resources));
                }
                FactBody::NoticeGiven(f) => {
                    let lease = &mut leases[lease_index(&f.lease)?];
                    let at = f.at.timestamp();
                    lease.notice = Some(lease.notice.map_or(at, |n| n.min(at)));
                }
                FactBody::LeaseEnded(f) => {
                    leases[lease_index(&f.lease)?].end = Some((f.at.timestamp(), f.reason));
                }
                FactBody::PoolUtilisation(f) => {
                    util.entry(&f.pool).or_default().push((
                        f.at.timestamp(),
                        &fact.key,
                        f.utilisation,
                    ));
                }
                _ => {}
            }
        }
        for (lease, mut steps) in leases.iter_mut().zip(bound) {
            steps.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            lease.capacity = last_per_second(steps);
        }
        let utilisation = util
            .into_iter()
            .map(|(pool, mut steps)| {
                steps.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
                (pool.to_string(), last_per_second(steps))
            })
            .collect();
        // Deterministic lease order: by id.
        leases.sort_unstable_by(|a, b| a.admitted.lease.cmp(&b.admitted.lease));
        let mut tenants: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut book = RateBook::new(cards)?;
        for (i, lease) in leases.iter().enumerate() {
            tenants
                .entry(lease.admitted.tenant.clone())
                .or_default()
                .push(i);
            book.prepare_pool(&lease.admitted.pool)?;
        }
        Ok(Model {
            leases,
            tenants,
            utilisation,
            book,
        })
    }

    /// Tenants with at least one lease, sorted.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// The rate book.
    pub fn rate_book(&self) -> &RateBook {
        &self.book
    }
}

/// Keeps, for each second, the last of entries sorted by `(second, key)`.
fn last_per_second<T: Copy>(sorted: Vec<(i64, &str, T)>) -> Vec<(i64, T)> {
    let mut out: Vec<(i64, T)> = Vec::with_capacity(sorted.len());
    for (at, _, value) in sorted {
        match out.last_mut() {
            Some(last) if last.0 == at => last.1 = value,
            _ => out.push((at, value)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIT: &str = r#"{"key":"a1","type":"leaseAdmitted","lease":"l1","tenant":"acme","pool":"general","class":"Spot","at":"2026-11-01T00:00:00Z"}"#;

    #[test]
    fn facts_round_trip_through_json() {
        let fact = parse_fact_line(ADMIT, "f.jsonl", 1).unwrap();
        assert_eq!(fact.key, "a1");
        assert_eq!(fact.body.kind(), "leaseAdmitted");
        let again: Fact = serde_json::from_str(&serde_json::to_string(&fact).unwrap()).unwrap();
        assert_eq!(again, fact);
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let text = format!(
            "{ADMIT}\n\n# comment\n{{\"key\":\"b\",\"type\":\"leaseEnded\",\"lease\":\"l1\"}}\n"
        );
        let err = parse_facts(&text, "facts.jsonl").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("facts.jsonl:4: missing field `at`"),
            "{msg}"
        );
        let err = parse_facts("{\"key\":\"x\",\"type\":\"leaseBorrowed\"}", "f").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f:1: unknown variant `leaseBorrowed`"),
            "{err}"
        );
        let typo = ADMIT.replace("\"pool\"", "\"pol\"");
        assert!(
            parse_facts(&typo, "f")
                .unwrap_err()
                .to_string()
                .contains("unknown field `pol`")
        );
    }

    #[test]
    fn unknown_lease_is_refused_and_nothing_changes() {
        let mut set = FactSet::new();
        set.append(vec![parse_fact_line(ADMIT, "f", 1).unwrap()])
            .unwrap();
        let bound = r#"{"key":"b1","type":"capacityBound","lease":"l1","at":"2026-11-01T00:00:00Z","resources":{"cpu":"4"}}"#;
        let stray = r#"{"key":"b2","type":"capacityBound","lease":"ghost","at":"2026-11-01T00:00:00Z","resources":{"cpu":"4"}}"#;
        let batch = parse_facts(&format!("{bound}\n{stray}"), "f").unwrap();
        let err = set.append(batch).unwrap_err();
        assert_eq!(
            err.to_string(),
            "fact \"b2\": unknown lease \"ghost\" (no leaseAdmitted fact for it in this batch or the ledger)"
        );
        assert_eq!(
            set.len(),
            1,
            "the valid fact of the failed batch was not kept"
        );
    }

    #[test]
    fn replay_is_a_noop_and_a_changed_replay_is_refused() {
        let admit = parse_fact_line(ADMIT, "f", 1).unwrap();
        let mut set = FactSet::from_facts(vec![admit.clone(), admit.clone()]).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.append(vec![admit.clone()]).unwrap(),
            AppendOutcome {
                inserted: 0,
                duplicates: 1
            }
        );
        let mut changed = admit.clone();
        if let FactBody::LeaseAdmitted(f) = &mut changed.body {
            f.tenant = "other".into();
        }
        assert_eq!(
            set.append(vec![changed]).unwrap_err().to_string(),
            "fact key \"a1\" is already recorded with different content"
        );
        let mut second = admit;
        second.key = "a2".into();
        assert_eq!(
            set.append(vec![second]).unwrap_err().to_string(),
            "fact \"a2\": lease \"l1\" already has a leaseAdmitted fact (key \"a1\")"
        );
    }

    #[test]
    fn negative_intervals_are_refused() {
        let ended = r#"{"key":"e1","type":"leaseEnded","lease":"l1","at":"2026-10-31T23:00:00Z","reason":"Expired"}"#;
        let batch = parse_facts(&format!("{ADMIT}\n{ended}"), "f").unwrap();
        assert_eq!(
            FactSet::from_facts(batch).unwrap_err().to_string(),
            "fact \"e1\": negative interval on lease \"l1\": end 2026-10-31 23:00:00 UTC is before 2026-11-01 00:00:00 UTC"
        );
        let notice = r#"{"key":"n1","type":"noticeGiven","lease":"l1","at":"2026-11-02T00:00:00Z","deadline":"2026-11-01T23:58:00Z"}"#;
        let batch = parse_facts(&format!("{ADMIT}\n{notice}"), "f").unwrap();
        assert!(
            FactSet::from_facts(batch)
                .unwrap_err()
                .to_string()
                .contains("negative interval")
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let util = r#"{"key":"u1","type":"poolUtilisation","pool":"general","at":"2026-11-01T00:00:00Z","utilisation":"1.5"}"#;
        assert_eq!(
            FactSet::from_facts(parse_facts(util, "f").unwrap())
                .unwrap_err()
                .to_string(),
            "fact \"u1\": utilisation 1.5 of pool \"general\" is outside 0..1"
        );
        let bound = r#"{"key":"b1","type":"capacityBound","lease":"l1","at":"2026-11-01T00:00:00Z","resources":{"memory":"-4"}}"#;
        assert_eq!(
            FactSet::from_facts(parse_facts(&format!("{ADMIT}\n{bound}"), "f").unwrap())
                .unwrap_err()
                .to_string(),
            "fact \"b1\": resources.memory is negative (-4)"
        );
        let tagged = ADMIT.replace("\"at\"", "\"tags\":{\"offpeak/pool\":\"x\"},\"at\"");
        assert!(
            FactSet::from_facts(parse_facts(&tagged, "f").unwrap())
                .unwrap_err()
                .to_string()
                .contains("reserved prefix")
        );
    }
}
