//! The controllers and what they share: one [`Context`] (client, event recorder, metrics,
//! settings, watch caches), and the loop that runs them.
//!
//! - `tenant`: a tenant's namespaces, RBAC, default requests and lease quota.
//! - `pool`: idle nodes, admission of the pool's leases, binding, term ends, pool status.
//!   It is the only writer of the status of leases whose pool exists, so admission for a
//!   pool is decided in one place, first come first served.
//! - `lease`: the finalizer that returns a lease's nodes when it is deleted, and the status
//!   of leases whose pool does not exist.

pub mod binding;
pub mod conditions;
pub mod lease;
pub mod pool;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, reflector as reflect};
use kube::{Client, Resource, ResourceExt};
use offpeak_api::{CapacityLease, CapacityPool, PeakReservation, RateCard, Tenant};

use crate::telemetry::Metrics;

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long the head of a pool's queue waits before nothing may pass it.
    pub starvation_guard: chrono::Duration,
    /// How often active leases' cost and pools' state are refreshed at the latest.
    pub resync: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            starvation_guard: chrono::Duration::minutes(10),
            resync: Duration::from_secs(60),
        }
    }
}

/// Watch caches of everything the controllers read.
#[derive(Clone)]
pub struct Stores {
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub tenants: Store<Tenant>,
    pub pools: Store<CapacityPool>,
    pub leases: Store<CapacityLease>,
    pub reservations: Store<PeakReservation>,
    pub rate_cards: Store<RateCard>,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub stores: Stores,
}

impl Context {
    /// Publishes an event about `object`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(object = %object.name_any(), reason, error = %e, "cannot publish event");
        }
    }
}

/// A watch cache for `K`, and the task that fills it. Every change also nudges `changed`
/// (the pool controller re-decides its pools when anything it reads moves).
fn cache<K>(
    api: Api<K>,
    changed: futures::channel::mpsc::UnboundedSender<()>,
) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let task = reflect(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .for_each(move |event| {
            if let Err(e) = &event {
                tracing::warn!(error = %e, kind = K::kind(&()).as_ref(), "watch error; retrying");
            }
            let _ = changed.unbounded_send(());
            futures::future::ready(())
        });
    (store, task)
}

/// Pods carry much the pool controller does not read; keep what it does.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.clear();
        spec.init_containers = None;
        spec.volumes = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
        status.container_statuses = None;
        status.init_container_statuses = None;
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

/// Runs every controller until the process ends.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    ready: crate::telemetry::Readiness,
) -> anyhow::Result<()> {
    let (changed_tx, changed_rx) = futures::channel::mpsc::unbounded::<()>();
    let (nodes, nodes_task) = cache(Api::<Node>::all(client.clone()), changed_tx.clone());
    let (namespaces, namespaces_task) =
        cache(Api::<Namespace>::all(client.clone()), changed_tx.clone());
    let (tenants, tenants_task) = cache(Api::<Tenant>::all(client.clone()), changed_tx.clone());
    let (pools, pools_task) = cache(Api::<CapacityPool>::all(client.clone()), changed_tx.clone());
    let (leases, leases_task) = cache(
        Api::<CapacityLease>::all(client.clone()),
        changed_tx.clone(),
    );
    let (reservations, reservations_task) = cache(
        Api::<PeakReservation>::all(client.clone()),
        changed_tx.clone(),
    );
    let (rate_cards, rate_cards_task) =
        cache(Api::<RateCard>::all(client.clone()), changed_tx.clone());
    let (pods, pods_writer) = reflector::store();
    let pods_changed = changed_tx.clone();
    let pods_task = reflect(
        pods_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).modify(slim_pod),
    )
    .default_backoff()
    .touched_objects()
    .for_each(move |_| {
        let _ = pods_changed.unbounded_send(());
        futures::future::ready(())
    });
    let stores = Stores {
        nodes,
        pods,
        namespaces,
        tenants,
        pools,
        leases,
        reservations,
        rate_cards,
    };
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
    });

    let caches = async {
        tokio::join!(
            nodes_task,
            pods_task,
            namespaces_task,
            tenants_task,
            pools_task,
            leases_task,
            reservations_task,
            rate_cards_task
        );
    };
    let controllers = async {
        for (kind, synced) in [
            ("nodes", stores.nodes.wait_until_ready().await.is_ok()),
            ("pods", stores.pods.wait_until_ready().await.is_ok()),
            (
                "namespaces",
                stores.namespaces.wait_until_ready().await.is_ok(),
            ),
            ("tenants", stores.tenants.wait_until_ready().await.is_ok()),
            ("pools", stores.pools.wait_until_ready().await.is_ok()),
            ("leases", stores.leases.wait_until_ready().await.is_ok()),
            (
                "reservations",
                stores.reservations.wait_until_ready().await.is_ok(),
            ),
            (
                "rate cards",
                stores.rate_cards.wait_until_ready().await.is_ok(),
            ),
        ] {
            if !synced {
                anyhow::bail!("the {kind} cache stopped before it synced");
            }
        }
        tracing::info!("caches synced; starting controllers");
        ready.set_ready();
        tokio::join!(
            pool::run(ctx.clone(), changed_rx),
            lease::run(ctx.clone()),
            tenant::run(ctx.clone()),
            count_leases(ctx.clone())
        );
        anyhow::Ok(())
    };
    tokio::select! {
        () = caches => anyhow::bail!("the watch caches stopped"),
        result = controllers => result,
    }
}
