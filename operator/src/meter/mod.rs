//! The meter: every fact the cluster recorded reaches the ledger exactly once, and every
//! tenant's bill is kept as a UsageBill.
//!
//! Each pass derives the facts of the leases, pools and rate cards that changed
//! ([`facts`]) and appends those the ledger does not hold yet, in one transaction. The
//! ledger is idempotent (a key already recorded with the same content is a no-op), so a
//! restart re-appends everything harmlessly and a second replica that briefly believes it
//! leads appends the same facts, never different ones. A batch the ledger refuses as
//! invalid is split per object, so one malformed object never keeps the others out. While
//! the ledger is unreachable (a locked file, PostgreSQL down) facts wait: the pools show a
//! Metered condition, `offpeak_facts_pending` counts them, and they are written when it
//! returns. A deleted lease keeps its finalizer until its end is in the ledger.

pub mod bills;
pub mod facts;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use offpeak_billing::error::BillingError;
use offpeak_billing::ledger::Ledger;
use offpeak_billing::meter::Fact;
use offpeak_billing::period::BillingCycle;

use crate::controllers::Context;

/// How the ledger is doing, as the pools' Metered condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// No fact has been tried yet.
    Starting,
    Healthy,
    Down {
        since: DateTime<Utc>,
        message: String,
    },
}

/// One object's facts in a batch, so a refused batch can be split.
struct Subject {
    kind: &'static str,
    id: String,
    version: Option<String>,
    facts: Vec<Fact>,
}

pub struct Meter {
    url: String,
    cycle: BillingCycle,
    ledger: tokio::sync::Mutex<Option<Ledger>>,
    /// Keys the ledger holds (as far as this process knows).
    recorded: RwLock<HashSet<String>>,
    /// The version of each object whose facts are all recorded (or refused): unchanged
    /// objects are not derived again.
    settled: RwLock<HashMap<String, Option<String>>>,
    health: RwLock<Health>,
    wake: tokio::sync::Notify,
    /// UsageBills written lately, so an unchanged bill is not sent again.
    pub(crate) written: std::sync::Mutex<HashMap<String, offpeak_api::UsageBillSpec>>,
}

impl Meter {
    pub fn new(url: &str, cycle: BillingCycle) -> Meter {
        Meter {
            url: url.to_string(),
            cycle,
            ledger: tokio::sync::Mutex::new(None),
            recorded: RwLock::default(),
            settled: RwLock::default(),
            health: RwLock::new(Health::Starting),
            wake: tokio::sync::Notify::new(),
            written: std::sync::Mutex::default(),
        }
    }

    /// Something changed that may make facts: meter soon.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    pub fn health(&self) -> Health {
        self.health
            .read()
            .map(|h| h.clone())
            .unwrap_or(Health::Starting)
    }

    pub fn cycle(&self) -> BillingCycle {
        self.cycle
    }

    /// Whether every key is in the ledger.
    pub fn recorded(&self, keys: &[String]) -> bool {
        self.recorded
            .read()
            .is_ok_and(|r| keys.iter().all(|k| r.contains(k)))
    }

    /// The ledger, opened on first use (and again after it failed).
    pub async fn ledger(&self) -> Result<Ledger, BillingError> {
        let mut ledger = self.ledger.lock().await;
        if let Some(open) = ledger.as_ref() {
            return Ok(open.clone());
        }
        let opened = Ledger::open(&self.url, self.cycle).await?;
        *ledger = Some(opened.clone());
        Ok(opened)
    }

    async fn forget_ledger(&self) {
        if let Some(ledger) = self.ledger.lock().await.take() {
            ledger.close().await;
        }
    }

    fn set_health(&self, ctx: &Context, health: Health) {
        let changed = self.health.read().is_ok_and(|h| *h != health);
        if let Ok(mut h) = self.health.write() {
            *h = health.clone();
        }
        if changed {
            match &health {
                Health::Down { message, .. } => {
                    tracing::warn!(error = message, "the ledger is unavailable; facts wait");
                }
                Health::Healthy => tracing::info!("the ledger takes facts"),
                Health::Starting => {}
            }
            // The pools show it in their Metered condition.
            for pool in ctx.stores.pools.state() {
                let _ = ctx
                    .triggers
                    .pools
                    .unbounded_send(kube::runtime::reflector::ObjectRef::from_obj(pool.as_ref()));
            }
        }
    }

    /// The facts of every object that changed since it was last settled.
    fn derive(&self, ctx: &Context) -> Vec<Subject> {
        // Read in place: a copy of every key recorded, each pass, grows with the cluster.
        let settled = self.settled.read().unwrap_or_else(|e| e.into_inner());
        let recorded = self.recorded.read().unwrap_or_else(|e| e.into_inner());
        let unsettled = |id: &str, version: &Option<String>| settled.get(id) != Some(version);
        let mut subjects = Vec::new();
        let mut keep = |kind: &'static str,
                        id: String,
                        version: Option<String>,
                        facts: Result<Vec<Fact>, String>| {
            match facts {
                Ok(facts) => {
                    let facts: Vec<Fact> = facts
                        .into_iter()
                        .filter(|f| !recorded.contains(&f.key))
                        .collect();
                    subjects.push(Subject {
                        kind,
                        id,
                        version,
                        facts,
                    });
                }
                Err(message) => {
                    tracing::warn!(
                        kind,
                        id,
                        error = message,
                        "cannot derive billing facts; skipped until the object changes"
                    );
                    ctx.metrics.meter_refused.with_label_values(&[kind]).inc();
                    subjects.push(Subject {
                        kind,
                        id,
                        version,
                        facts: Vec::new(),
                    });
                }
            }
        };
        for card in ctx.stores.rate_cards.state() {
            let id = format!("rateCard/{}", card.name_any());
            if unsettled(&id, &card.resource_version()) {
                keep(
                    "RateCard",
                    id,
                    card.resource_version(),
                    facts::rate_card(&card).map(|f| vec![f]),
                );
            }
        }
        for pool in ctx.stores.pools.state() {
            let id = format!("pool/{}", pool.name_any());
            if unsettled(&id, &pool.resource_version()) {
                keep(
                    "CapacityPool",
                    id,
                    pool.resource_version(),
                    facts::pool(&pool),
                );
            }
        }
        for lease in ctx.stores.leases.state() {
            let id = format!("lease/{}", lease.uid().unwrap_or_default());
            if !unsettled(&id, &lease.resource_version()) {
                continue;
            }
            let namespace = lease.namespace().unwrap_or_default();
            let Some(tenant) = ctx.stores.tenant_of_namespace(&namespace) else {
                continue;
            };
            keep(
                "CapacityLease",
                id,
                lease.resource_version(),
                facts::lease(&lease, &tenant),
            );
        }
        subjects
    }

    /// One pass: whatever is new goes to the ledger.
    pub async fn pass(&self, ctx: &Context) {
        let subjects = self.derive(ctx);
        let pending: usize = subjects.iter().map(|s| s.facts.len()).sum();
        ctx.metrics
            .facts_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        if pending == 0 {
            self.settle(&subjects);
            if self.health() == Health::Starting {
                self.set_health(ctx, Health::Healthy);
            }
            return;
        }
        let ledger = match self.ledger().await {
            Ok(ledger) => ledger,
            Err(e) => return self.down(ctx, e.to_string()).await,
        };
        let batch: Vec<Fact> = subjects
            .iter()
            .flat_map(|s| s.facts.iter().cloned())
            .collect();
        let started = Instant::now();
        let result = ledger.append(&batch).await;
        ctx.metrics
            .ledger_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(outcome) => {
                ctx.metrics.facts_written.inc_by(outcome.inserted as u64);
                self.recorded_all(&subjects);
                self.settle(&subjects);
                self.healthy(ctx);
            }
            Err(BillingError::Database(e)) => self.down(ctx, e.to_string()).await,
            Err(refused) => {
                // Something in the batch is invalid: write object by object, so the rest
                // goes in and the refused object is named.
                tracing::warn!(error = %refused, "the ledger refused a batch; writing object by object");
                for subject in &subjects {
                    if subject.facts.is_empty() {
                        continue;
                    }
                    match ledger.append(&subject.facts).await {
                        Ok(outcome) => {
                            ctx.metrics.facts_written.inc_by(outcome.inserted as u64);
                            self.recorded_all(std::slice::from_ref(subject));
                        }
                        Err(BillingError::Database(e)) => {
                            return self.down(ctx, e.to_string()).await;
                        }
                        Err(e) => {
                            tracing::warn!(kind = subject.kind, id = subject.id, error = %e, "the ledger refused this object's facts; skipped until it changes");
                            ctx.metrics
                                .meter_refused
                                .with_label_values(&[subject.kind])
                                .inc();
                        }
                    }
                }
                self.settle(&subjects);
                self.healthy(ctx);
            }
        }
    }

    fn recorded_all(&self, subjects: &[Subject]) {
        if let Ok(mut recorded) = self.recorded.write() {
            recorded.extend(
                subjects
                    .iter()
                    .flat_map(|s| s.facts.iter().map(|f| f.key.clone())),
            );
        }
    }

    fn settle(&self, subjects: &[Subject]) {
        if let Ok(mut settled) = self.settled.write() {
            for s in subjects {
                settled.insert(s.id.clone(), s.version.clone());
            }
        }
    }

    fn healthy(&self, ctx: &Context) {
        ctx.metrics.facts_pending.set(0);
        ctx.metrics.meter_last_success.set(Utc::now().timestamp());
        self.set_health(ctx, Health::Healthy);
    }

    async fn down(&self, ctx: &Context, message: String) {
        ctx.metrics.ledger_errors.inc();
        self.forget_ledger().await;
        let since = match self.health() {
            Health::Down { since, .. } => since,
            _ => Utc::now(),
        };
        self.set_health(ctx, Health::Down { since, message });
    }
}

/// Meters until the process ends: on every change, and every few seconds while facts wait.
pub async fn run(ctx: Arc<Context>) {
    let mut last_bills: Option<Instant> = None;
    loop {
        ctx.meter.pass(&ctx).await;
        let refresh = ctx.settings.bills.refresh;
        if ctx.meter.health() == Health::Healthy
            && last_bills.is_none_or(|t| t.elapsed() >= refresh)
        {
            bills::refresh(&ctx).await;
            last_bills = Some(Instant::now());
        }
        let retry = if matches!(ctx.meter.health(), Health::Down { .. }) {
            Duration::from_secs(2)
        } else {
            refresh.min(Duration::from_secs(30))
        };
        tokio::select! {
            () = ctx.meter.wake.notified() => {
                // Let a burst of changes land before the next pass.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            () = tokio::time::sleep(retry) => {}
        }
    }
}
