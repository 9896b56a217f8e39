//! The controllers and what they share: one [`Context`] (client, event recorder, metrics,
//! settings, watch caches, what failed lately), and the loop that runs them.
//!
//! - `pool`: the pool pass (observe → plan → apply): idle nodes, admission, binding, term
//!   ends, returns, finalizers and the status of every lease of the pool, and the pool's.
//!   It is the only writer of the nodes and of the status of leases whose pool exists, so a
//!   pool's admission is decided in one place, first come first served.
//! - `lease`: leases whose pool does not exist.
//! - `tenant`: a tenant's namespaces, RBAC, default requests and lease quota.

pub mod caches;
pub mod lease;
pub mod pool;
pub mod tenant;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

pub use self::caches::Stores;
use self::pool::Memory;
use crate::meter::Meter;
use crate::plan::pool::{Confinement, PlanSettings};
use crate::telemetry::Metrics;

/// How bills are kept.
#[derive(Clone, Debug)]
pub struct BillSettings {
    /// The ledger: `sqlite://PATH?mode=rwc` or `postgres://...`.
    pub ledger: String,
    /// How often open UsageBills are refreshed at most.
    pub refresh: Duration,
    /// How long after its period ends a bill is finalized.
    pub grace: chrono::Duration,
}

impl Default for BillSettings {
    fn default() -> Self {
        BillSettings {
            ledger: "sqlite://offpeak-ledger.db?mode=rwc".into(),
            refresh: Duration::from_secs(60),
            grace: chrono::Duration::hours(1),
        }
    }
}

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The ledger and the UsageBills.
    pub bills: BillSettings,
    /// What shapes every pool's plan (starvation guard, cost refresh).
    pub plan: PlanSettings,
    /// How often a tenant's objects are applied again even if nothing changed, to undo
    /// drift made by hand.
    pub tenant_resync: Duration,
    /// How many leases' writes one pool pass applies at once.
    pub write_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bills: BillSettings::default(),
            plan: PlanSettings::default(),
            tenant_resync: Duration::from_secs(600),
            write_concurrency: 32,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub stores: Stores,
    /// Writes that failed lately, so the next passes back off and say why.
    pub memory: Mutex<Memory>,
    /// Where changes go: to ask a pool to be planned again.
    pub triggers: caches::Triggers,
    /// The meter and its ledger.
    pub meter: Arc<Meter>,
    /// Whether tenant pods are confined (`admission::guard`); `None` until it has looked.
    pub confinement: tokio::sync::watch::Receiver<Option<Confinement>>,
}

impl Context {
    /// Publishes an event about `object`; a failure to publish is logged, never fatal.
    pub async fn event(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        // The recorder folds events of the same action into one series: the same reason
        // with another note is another event, so the note is part of the action.
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            note.hash(&mut hasher);
            hasher.finish() as u32
        };
        let event = Event {
            type_,
            reason: reason.to_string(),
            action: format!("{reason}-{digest:08x}"),
            note: Some(note),
            secondary: None,
        };
        match self.recorder.publish(&event, object).await {
            Ok(()) => self.metrics.write("event", "ok"),
            Err(e) => {
                self.metrics.write("event", "error");
                tracing::warn!(object = object.name.as_deref().unwrap_or_default(), reason, error = %e, "cannot publish event");
            }
        }
    }
}

/// Runs a controller to its end. Failed reconciles were counted and logged by
/// [`retry_after`] already.
async fn drive<T, E>(reconciles: impl futures::Stream<Item = Result<T, E>>) {
    reconciles.for_each(|_| futures::future::ready(())).await;
}

/// The error policy of every controller: count the failure, log it, retry after `retry`.
fn retry_after(
    ctx: &Context,
    controller: &'static str,
    object: &str,
    error: &crate::error::Error,
    retry: Duration,
) -> kube::runtime::controller::Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[controller, error.kind()])
        .inc();
    tracing::warn!(controller, object, error = %error, "reconcile failed; retrying");
    kube::runtime::controller::Action::requeue(retry)
}

/// Keeps the `offpeak_leases{phase,class}` gauge equal to the leases in the cache.
async fn count_leases(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let mut counts: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for lease in ctx.stores.leases.state() {
            let phase = lease
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map_or("Pending".to_string(), |p| format!("{p:?}"));
            *counts
                .entry((phase, format!("{:?}", lease.spec.class)))
                .or_default() += 1;
        }
        ctx.metrics.leases.reset();
        for ((phase, class), count) in counts {
            ctx.metrics
                .leases
                .with_label_values(&[&phase, &class])
                .set(count);
        }
    }
}

/// Every pool is planned again when confinement is lost or back.
async fn replan_on_confinement(
    ctx: Arc<Context>,
    mut confinement: tokio::sync::watch::Receiver<Option<Confinement>>,
) {
    while confinement.changed().await.is_ok() {
        ctx.triggers.pools(ctx.stores.all_pools());
    }
}

/// Tells about objects the caches skipped because they cannot be read.
async fn report_unreadable(
    ctx: Arc<Context>,
    mut unreadable: futures::channel::mpsc::UnboundedReceiver<caches::Unreadable>,
) {
    while let Some(object) = unreadable.next().await {
        ctx.event(
            &object.reference,
            EventType::Warning,
            "Unreadable",
            format!(
                "the operator cannot read this {} and skips it until it is fixed: {}",
                object.kind, object.error
            ),
        )
        .await;
    }
}

/// Runs every controller until the process ends. The caches fill at once (so this replica
/// serves the webhook and is ready to take over); the controllers and the meter, which
/// write, run only while `leader` says this replica leads. Losing the lead ends the run,
/// so the process restarts and competes again from clean state.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    ready: crate::telemetry::Readiness,
    mut leader: tokio::sync::watch::Receiver<bool>,
    mut confinement: tokio::sync::watch::Receiver<Option<Confinement>>,
) -> anyhow::Result<()> {
    let meter = Arc::new(Meter::new(
        &settings.bills.ledger,
        offpeak_billing::period::BillingCycle::Monthly,
    ));
    let (stores, senders, triggers, caches, unreadable) =
        caches::start(&client, metrics.clone(), meter.clone());
    let reporter = Reporter {
        controller: "offpeak".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        settings,
        stores: stores.clone(),
        memory: Mutex::new(Memory::default()),
        triggers: senders,
        meter,
        confinement: confinement.clone(),
    });
    let leads = ctx.metrics.leader.clone();
    let lost_lead = lost(leader.clone(), leads.clone());
    let controllers = async move {
        stores.synced().await?;
        if confinement.wait_for(Option::is_some).await.is_err() {
            anyhow::bail!("the confinement guard stopped before it looked");
        }
        ready.set_ready();
        tracing::info!("caches synced; waiting to lead");
        if leader.wait_for(|leads| *leads).await.is_err() {
            anyhow::bail!("the leader election ended");
        }
        leads.set(1);
        tracing::info!("leading; starting controllers");
        tokio::join!(
            pool::run(ctx.clone(), triggers.pools),
            lease::run(ctx.clone(), triggers.leases),
            tenant::run(ctx.clone(), triggers.tenants),
            count_leases(ctx.clone()),
            replan_on_confinement(ctx.clone(), confinement),
            report_unreadable(ctx.clone(), unreadable),
            crate::meter::run(ctx.clone()),
        );
        anyhow::Ok(())
    };
    tokio::select! {
        () = caches => anyhow::bail!("the watch caches stopped"),
        result = controllers => result,
        () = shutdown() => {
            tracing::info!("asked to stop; stopping");
            Ok(())
        }
        () = lost_lead => anyhow::bail!("lost the leader lease; stopping so that another replica leads"),
    }
}

/// Resolves when this replica stops leading, having led.
async fn lost(mut leader: tokio::sync::watch::Receiver<bool>, leads: prometheus::IntGauge) {
    if leader.wait_for(|l| *l).await.is_err() {
        return std::future::pending().await;
    }
    let _ = leader.wait_for(|l| !*l).await;
    leads.set(0);
}

/// Resolves on Ctrl-C or SIGTERM (a pod being stopped).
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
