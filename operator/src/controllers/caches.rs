//! One watch per kind, shared by every controller: each fills a cache, and each change is
//! mapped to the objects it concerns (a node to its pools, a pod to its node's pools, a lease
//! to its pool, its tenant and itself) and sent to the controllers that reconcile them.
//! Changes nobody reads (a node's heartbeat, a pod's container restarts) trigger nothing, so
//! a large cluster's churn never holds a pool back.
//!
//! Objects of Offpeak's own kinds that cannot be read (written by an older or newer version,
//! or by hand past the schema) are skipped: they never reach the caches, and each is reported
//! once per change with a log line, a metric and a Warning Event.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource, ResourceExt};
use offpeak_api::{CapacityLease, CapacityPool, PeakReservation, RateCard, Tenant};

use crate::desired::binding;
use crate::names::TENANT;
use crate::observe;
use crate::plan::idle::PodFacts;
use crate::telemetry::Metrics;

/// The watch caches every controller reads.
#[derive(Clone)]
pub struct Stores {
    pub nodes: Store<Node>,
    pub pods: PodIndex,
    pub namespaces: Store<Namespace>,
    pub tenants: Store<Tenant>,
    pub pools: Store<CapacityPool>,
    pub leases: Store<CapacityLease>,
    pub reservations: Store<PeakReservation>,
    pub rate_cards: Store<RateCard>,
}

impl Stores {
    /// Waits until every cache has listed its kind once.
    pub async fn synced(&self) -> anyhow::Result<()> {
        let ready = [
            ("nodes", self.nodes.wait_until_ready().await.is_ok()),
            (
                "namespaces",
                self.namespaces.wait_until_ready().await.is_ok(),
            ),
            ("tenants", self.tenants.wait_until_ready().await.is_ok()),
            ("pools", self.pools.wait_until_ready().await.is_ok()),
            ("leases", self.leases.wait_until_ready().await.is_ok()),
            (
                "reservations",
                self.reservations.wait_until_ready().await.is_ok(),
            ),
            (
                "rate cards",
                self.rate_cards.wait_until_ready().await.is_ok(),
            ),
            ("pods", self.pods.synced().await),
        ];
        for (kind, synced) in ready {
            if !synced {
                anyhow::bail!("the {kind} cache stopped before it synced");
            }
        }
        Ok(())
    }

    /// The pools whose selector matches `labels`.
    pub fn pools_selecting(
        &self,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Vec<ObjectRef<CapacityPool>> {
        self.pools
            .state()
            .iter()
            .filter(|p| observe::labels_match(labels, &p.spec.node_selector))
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }

    pub fn all_pools(&self) -> Vec<ObjectRef<CapacityPool>> {
        self.pools
            .state()
            .iter()
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }

    /// The tenant that owns `namespace`, by its label.
    pub fn tenant_of_namespace(&self, namespace: &str) -> Option<String> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|ns| ns.labels().get(TENANT).cloned())
    }
}

/// The pods bound to each node, reduced to what the pool pass reads. Kept from the pod
/// watch directly (no full pod cache: pods are the most numerous objects of a cluster).
#[derive(Clone, Default)]
pub struct PodIndex {
    inner: Arc<RwLock<PodIndexInner>>,
    synced: Arc<tokio::sync::Notify>,
    is_synced: Arc<std::sync::atomic::AtomicBool>,
}

type PodKey = (String, String);
type PodsByNode = HashMap<String, BTreeMap<PodKey, PodFacts>>;

/// A pod the scheduler could not place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unscheduled {
    pub namespace: String,
    pub name: String,
    pub since: chrono::DateTime<chrono::Utc>,
    pub requests: crate::plan::resources::Resources,
    pub node_selector: BTreeMap<String, String>,
}

/// The pods by node, their nodes, and those waiting: the index as a relist rebuilds it.
type Relist = (
    PodsByNode,
    HashMap<PodKey, String>,
    BTreeMap<PodKey, Unscheduled>,
);

#[derive(Default)]
struct PodIndexInner {
    by_node: PodsByNode,
    node_of: HashMap<PodKey, String>,
    unscheduled: BTreeMap<PodKey, Unscheduled>,
    /// A relist in progress: the new index, swapped in when the list is complete.
    relist: Option<Relist>,
}

impl PodIndex {
    /// The unfinished pods bound to `node`.
    pub fn on_node(&self, node: &str) -> Vec<PodFacts> {
        match self.inner.read() {
            Ok(index) => index
                .by_node
                .get(node)
                .map(|pods| pods.values().cloned().collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Pods the scheduler could not place.
    pub fn unscheduled(&self) -> Vec<Unscheduled> {
        match self.inner.read() {
            Ok(index) => index.unscheduled.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn synced(&self) -> bool {
        if !self.is_synced.load(std::sync::atomic::Ordering::Acquire) {
            self.synced.notified().await;
        }
        true
    }

    /// Applies a watch event; returns the nodes whose pods changed in a way the pool pass
    /// reads, and whether the pods waiting for a node changed.
    fn apply(&self, event: &Event<Pod>) -> (BTreeSet<String>, bool) {
        let Ok(mut index) = self.inner.write() else {
            return (BTreeSet::new(), false);
        };
        let mut touched = BTreeSet::new();
        let mut waiting_changed = false;
        match event {
            Event::Apply(pod) => {
                index.put(pod, &mut touched);
                waiting_changed = index.wait(pod);
            }
            Event::Delete(pod) => {
                index.remove(&key(pod), &mut touched);
                waiting_changed = index.unscheduled.remove(&key(pod)).is_some();
            }
            Event::Init => index.relist = Some(Default::default()),
            Event::InitApply(pod) => {
                if let Some((by_node, node_of, unscheduled)) = index.relist.as_mut() {
                    if let Some((node, facts)) = bound_facts(pod) {
                        node_of.insert(key(pod), node.clone());
                        by_node.entry(node).or_default().insert(key(pod), facts);
                    }
                    if let Some(waiting) = unscheduled_facts(pod) {
                        unscheduled.insert(key(pod), waiting);
                    }
                }
            }
            Event::InitDone => {
                if let Some((by_node, node_of, unscheduled)) = index.relist.take() {
                    touched.extend(index.by_node.keys().cloned());
                    touched.extend(by_node.keys().cloned());
                    index.by_node = by_node;
                    index.node_of = node_of;
                    index.unscheduled = unscheduled;
                    waiting_changed = true;
                }
                self.is_synced
                    .store(true, std::sync::atomic::Ordering::Release);
                self.synced.notify_waiters();
            }
        }
        (touched, waiting_changed)
    }
}

impl PodIndexInner {
    /// Keeps the pod among those waiting for a node, or not; whether that changed.
    fn wait(&mut self, pod: &Pod) -> bool {
        let key = key(pod);
        match unscheduled_facts(pod) {
            Some(waiting) => {
                self.unscheduled.insert(key, waiting.clone()).as_ref() != Some(&waiting)
            }
            None => self.unscheduled.remove(&key).is_some(),
        }
    }

    fn put(&mut self, pod: &Pod, touched: &mut BTreeSet<String>) {
        let key = key(pod);
        match bound_facts(pod) {
            None => self.remove(&key, touched),
            Some((node, facts)) => {
                if let Some(old) = self.node_of.get(&key).cloned()
                    && old != node
                {
                    self.remove(&key, touched);
                }
                let pods = self.by_node.entry(node.clone()).or_default();
                if pods.get(&key) != Some(&facts) {
                    pods.insert(key.clone(), facts);
                    touched.insert(node.clone());
                }
                self.node_of.insert(key, node);
            }
        }
    }

    fn remove(&mut self, key: &(String, String), touched: &mut BTreeSet<String>) {
        if let Some(node) = self.node_of.remove(key) {
            if let Some(pods) = self.by_node.get_mut(&node) {
                pods.remove(key);
                if pods.is_empty() {
                    self.by_node.remove(&node);
                }
            }
            touched.insert(node);
        }
    }
}

fn unscheduled_facts(pod: &Pod) -> Option<Unscheduled> {
    let (since, requests) = observe::unschedulable(pod)?;
    Some(Unscheduled {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        since,
        requests,
        node_selector: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default(),
    })
}

fn key(pod: &Pod) -> (String, String) {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The node a pod holds and what the pool pass reads of it; nothing for pods not bound
/// or finished.
fn bound_facts(pod: &Pod) -> Option<(String, PodFacts)> {
    let node = observe::holds_node(pod)?.to_string();
    Some((node, observe::pod_facts(pod)))
}

/// Where changes are sent: the objects each controller should reconcile.
#[derive(Clone)]
pub struct Triggers {
    pub pools: UnboundedSender<ObjectRef<CapacityPool>>,
    pub leases: UnboundedSender<ObjectRef<CapacityLease>>,
    pub tenants: UnboundedSender<ObjectRef<Tenant>>,
}

/// The receiving ends, one per controller.
pub struct TriggerStreams {
    pub pools: UnboundedReceiver<ObjectRef<CapacityPool>>,
    pub leases: UnboundedReceiver<ObjectRef<CapacityLease>>,
    pub tenants: UnboundedReceiver<ObjectRef<Tenant>>,
}

impl Triggers {
    fn new() -> (Triggers, TriggerStreams) {
        let (pools, pools_rx) = unbounded();
        let (leases, leases_rx) = unbounded();
        let (tenants, tenants_rx) = unbounded();
        (
            Triggers {
                pools,
                leases,
                tenants,
            },
            TriggerStreams {
                pools: pools_rx,
                leases: leases_rx,
                tenants: tenants_rx,
            },
        )
    }

    pub fn pools(&self, pools: impl IntoIterator<Item = ObjectRef<CapacityPool>>) {
        for pool in pools {
            let _ = self.pools.unbounded_send(pool);
        }
    }

    fn tenant(&self, tenant: Option<String>) {
        if let Some(tenant) = tenant {
            let _ = self.tenants.unbounded_send(ObjectRef::new(&tenant));
        }
    }
}

/// An unreadable object of one of Offpeak's kinds.
pub struct Unreadable {
    pub kind: String,
    pub reference: k8s_openapi::api::core::v1::ObjectReference,
    pub error: String,
}

/// Starts every watch. Returns the caches, where changes go, and the tasks to run (until
/// the process ends) together with the receiver of unreadable objects.
pub fn start(
    client: &Client,
    metrics: Arc<Metrics>,
    meter: Arc<crate::meter::Meter>,
) -> (
    Stores,
    Triggers,
    TriggerStreams,
    impl std::future::Future<Output = ()>,
    UnboundedReceiver<Unreadable>,
) {
    let (triggers, streams) = Triggers::new();
    let (unreadable_tx, unreadable_rx) = unbounded();
    let (nodes, nodes_w) = reflector::store();
    let (namespaces, namespaces_w) = reflector::store();
    let (tenants, tenants_w) = reflector::store();
    let (pools, pools_w) = reflector::store();
    let (leases, leases_w) = reflector::store();
    let (reservations, reservations_w) = reflector::store();
    let (rate_cards, rate_cards_w) = reflector::store();
    let stores = Stores {
        nodes,
        pods: PodIndex::default(),
        namespaces,
        tenants,
        pools,
        leases,
        reservations,
        rate_cards,
    };

    let node_task = {
        let stores = stores.clone();
        let triggers = triggers.clone();
        let mut seen: HashMap<String, (u64, Option<BTreeMap<String, String>>)> = HashMap::new();
        watch_plain(
            Api::<Node>::all(client.clone()),
            slim_node,
            nodes_w,
            move |event| {
                for node in touched(event) {
                    let name = node.name_any();
                    let deleted = matches!(event, Event::Delete(_));
                    let print = fingerprint(node);
                    let labels = node.metadata.labels.clone();
                    let before = if deleted {
                        seen.remove(&name)
                    } else {
                        seen.insert(name, (print, labels.clone()))
                    };
                    if !deleted && before.as_ref().is_some_and(|(p, _)| *p == print) {
                        continue; // a heartbeat: nothing the pools read changed
                    }
                    let mut concerned = stores.pools_selecting(labels.as_ref());
                    if let Some((_, old)) = &before {
                        concerned.extend(stores.pools_selecting(old.as_ref()));
                    }
                    triggers.pools(concerned);
                }
            },
        )
    };
    let pod_task = {
        let stores = stores.clone();
        let triggers = triggers.clone();
        let index = stores.pods.clone();
        let api: Api<Pod> = Api::all(client.clone());
        async move {
            watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .for_each(|event| {
                    match event {
                        Ok(event) => {
                            let (nodes, waiting_changed) = index.apply(&event);
                            for node in nodes {
                                let labels = stores
                                    .nodes
                                    .get(&ObjectRef::new(&node))
                                    .and_then(|n| n.metadata.labels.clone());
                                triggers.pools(stores.pools_selecting(labels.as_ref()));
                            }
                            if waiting_changed {
                                triggers.pools(stores.all_pools());
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, kind = "Pod", "watch error; retrying"),
                    }
                    futures::future::ready(())
                })
                .await;
        }
    };
    let namespace_task = {
        let stores = stores.clone();
        let triggers = triggers.clone();
        watch_plain(
            Api::<Namespace>::all(client.clone()),
            slim_meta,
            namespaces_w,
            move |event| {
                for ns in touched(event) {
                    triggers.tenant(ns.labels().get(TENANT).cloned());
                }
                if !matches!(event, Event::InitApply(_)) {
                    triggers.pools(stores.all_pools());
                }
            },
        )
    };
    let tenant_task = {
        let stores = stores.clone();
        let triggers = triggers.clone();
        watch_guarded(
            client,
            tenants_w,
            unreadable_tx.clone(),
            metrics.clone(),
            move |event| {
                for tenant in touched(event) {
                    triggers.tenant(Some(tenant.name_any()));
                }
                if !matches!(event, Event::InitApply(_)) {
                    triggers.pools(stores.all_pools());
                }
            },
        )
    };
    let pool_task = {
        let stores = stores.clone();
        let triggers = triggers.clone();
        let meter = meter.clone();
        watch_guarded(
            client,
            pools_w,
            unreadable_tx.clone(),
            metrics.clone(),
            move |event| {
                meter.nudge();
                for pool in touched(event) {
                    triggers.pools([ObjectRef::from_obj(pool)]);
                    // Leases of a pool that comes or goes change hands between controllers.
                    for lease in stores
                        .leases
                        .state()
                        .iter()
                        .filter(|l| l.spec.pool.as_str() == pool.name_any())
                    {
                        let _ = triggers
                            .leases
                            .unbounded_send(ObjectRef::from_obj(lease.as_ref()));
                    }
                }
            },
        )
    };
    let lease_task = {
        let stores = stores.clone();
        let triggers = triggers.clone();
        let meter = meter.clone();
        watch_guarded(
            client,
            leases_w,
            unreadable_tx.clone(),
            metrics.clone(),
            move |event| {
                meter.nudge();
                for lease in touched(event) {
                    triggers.pools([ObjectRef::new(lease.spec.pool.as_str())]);
                    let _ = triggers.leases.unbounded_send(ObjectRef::from_obj(lease));
                    triggers
                        .tenant(stores.tenant_of_namespace(&lease.namespace().unwrap_or_default()));
                }
            },
        )
    };
    let reservation_task = {
        let triggers = triggers.clone();
        watch_guarded(
            client,
            reservations_w,
            unreadable_tx.clone(),
            metrics.clone(),
            move |event| {
                for reservation in touched(event) {
                    triggers.pools([ObjectRef::new(reservation.spec.pool.as_str())]);
                }
            },
        )
    };
    let rate_card_task = {
        let stores = stores.clone();
        let triggers = triggers.clone();
        watch_guarded(client, rate_cards_w, unreadable_tx, metrics, move |event| {
            meter.nudge();
            for card in touched(event) {
                if card.spec.pools.is_empty() {
                    triggers.pools(stores.all_pools());
                } else {
                    triggers.pools(card.spec.pools.iter().map(|p| ObjectRef::new(p.as_str())));
                }
            }
        })
    };
    let tasks = async move {
        tokio::join!(
            node_task,
            pod_task,
            namespace_task,
            tenant_task,
            pool_task,
            lease_task,
            reservation_task,
            rate_card_task
        );
    };
    (stores, triggers, streams, tasks, unreadable_rx)
}

/// The objects an event carries (none for the markers of a relist).
fn touched<K>(event: &Event<K>) -> Vec<&K> {
    match event {
        Event::Apply(k) | Event::Delete(k) | Event::InitApply(k) => vec![k],
        Event::Init | Event::InitDone => vec![],
    }
}

/// Watches a built-in kind into `writer`, calling `changed` after the cache took each event.
async fn watch_plain<K>(
    api: Api<K>,
    slim: fn(&mut K),
    mut writer: Writer<K>,
    mut changed: impl FnMut(&Event<K>),
) where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .for_each(|event| {
            match event {
                Ok(event) => {
                    let event = event.modify(slim);
                    writer.apply_watcher_event(&event);
                    changed(&event);
                }
                Err(e) => tracing::warn!(error = %e, kind = K::kind(&()).as_ref(), "watch error; retrying"),
            }
            futures::future::ready(())
        })
        .await;
}

/// Watches one of Offpeak's kinds through a `DeserializeGuard`: readable objects go to the
/// cache, unreadable ones are reported and dropped from it.
async fn watch_guarded<K>(
    client: &Client,
    mut writer: Writer<K>,
    unreadable: UnboundedSender<Unreadable>,
    metrics: Arc<Metrics>,
    mut changed: impl FnMut(&Event<K>),
) where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<DeserializeGuard<K>> = Api::all(client.clone());
    let reader = writer.as_reader();
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .for_each(|event| {
            match event {
                Ok(event) => {
                    let (event, invalid) = readable(event, &reader);
                    for object in invalid {
                        report::<K>(&unreadable, &metrics, object);
                    }
                    if let Some(event) = event {
                        let event = event.modify(slim_meta);
                        writer.apply_watcher_event(&event);
                        changed(&event);
                    }
                }
                Err(e) => tracing::warn!(error = %e, kind = K::kind(&()).as_ref(), "watch error; retrying"),
            }
            futures::future::ready(())
        })
        .await;
}

/// The event in terms of readable objects: an object that became unreadable leaves the
/// cache as if deleted.
fn readable<K>(
    event: Event<DeserializeGuard<K>>,
    cache: &Store<K>,
) -> (Option<Event<K>>, Vec<InvalidObject>)
where
    K: Resource<DynamicType = ()> + Clone,
{
    let drop_cached = |invalid: &InvalidObject| -> Option<Event<K>> {
        let name = invalid.metadata.name.clone().unwrap_or_default();
        let mut reference = ObjectRef::<K>::new(&name);
        if let Some(ns) = &invalid.metadata.namespace {
            reference = reference.within(ns);
        }
        cache
            .get(&reference)
            .map(|old| Event::Delete(old.as_ref().clone()))
    };
    match event {
        Event::Apply(DeserializeGuard(Ok(k))) => (Some(Event::Apply(k)), vec![]),
        Event::Apply(DeserializeGuard(Err(e))) => (drop_cached(&e), vec![e]),
        Event::Delete(DeserializeGuard(Ok(k))) => (Some(Event::Delete(k)), vec![]),
        Event::Delete(DeserializeGuard(Err(e))) => (drop_cached(&e), vec![]),
        Event::InitApply(DeserializeGuard(Ok(k))) => (Some(Event::InitApply(k)), vec![]),
        Event::InitApply(DeserializeGuard(Err(e))) => (None, vec![e]),
        Event::Init => (Some(Event::Init), vec![]),
        Event::InitDone => (Some(Event::InitDone), vec![]),
    }
}

fn report<K: Resource<DynamicType = ()>>(
    unreadable: &UnboundedSender<Unreadable>,
    metrics: &Metrics,
    invalid: InvalidObject,
) {
    let kind = K::kind(&());
    let name = invalid.metadata.name.clone().unwrap_or_default();
    tracing::warn!(kind = kind.as_ref(), name, namespace = invalid.metadata.namespace, error = %invalid.error, "skipping an object that cannot be read");
    metrics.unreadable.with_label_values(&[kind.as_ref()]).inc();
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(kind.to_string()),
        name: Some(name),
        namespace: invalid.metadata.namespace.clone(),
        uid: invalid.metadata.uid.clone(),
        resource_version: invalid.metadata.resource_version.clone(),
        field_path: None,
    };
    let _ = unreadable.unbounded_send(Unreadable {
        kind: kind.to_string(),
        reference,
        error: invalid.error,
    });
}

/// What only the API server needs: managed fields are large and nobody here reads them.
fn slim_meta<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Nodes also carry the list of their images, which nothing here reads.
fn slim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

/// A digest of what the pool pass reads of a node: its labels, Offpeak's annotations, its
/// taints, whether it is cordoned and Ready, and its allocatable.
fn fingerprint(node: &Node) -> u64 {
    let marks = binding::marks(node);
    let spec = node.spec.as_ref();
    let mut hasher = DefaultHasher::new();
    node.metadata.labels.hash(&mut hasher);
    format!("{marks:?}").hash(&mut hasher);
    serde_json::to_string(&spec.and_then(|s| s.taints.as_ref()))
        .unwrap_or_default()
        .hash(&mut hasher);
    spec.and_then(|s| s.unschedulable).hash(&mut hasher);
    observe::is_ready(node).hash(&mut hasher);
    serde_json::to_string(&node.status.as_ref().and_then(|s| s.allocatable.as_ref()))
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn node(ready: &str, heartbeat: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n0".into()),
                labels: Some([("offpeak.dev/pool".to_string(), "general".to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    last_heartbeat_time: Some(
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            heartbeat.parse().unwrap(),
                        ),
                    ),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_heartbeat_changes_no_fingerprint_but_readiness_and_labels_do() {
        let base = fingerprint(&node("True", "2026-11-22T20:00:00Z"));
        assert_eq!(base, fingerprint(&node("True", "2026-11-22T20:00:40Z")));
        assert_ne!(base, fingerprint(&node("False", "2026-11-22T20:00:00Z")));
        let mut relabelled = node("True", "2026-11-22T20:00:00Z");
        relabelled.metadata.labels =
            Some([("offpeak.dev/pool".to_string(), "gpu".to_string())].into());
        assert_ne!(base, fingerprint(&relabelled));
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("internal".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_pod_index_follows_binding_moves_and_endings_and_names_the_nodes_it_touched() {
        let index = PodIndex::default();
        assert!(
            index
                .apply(&Event::Apply(pod("web-1", None, "Pending")))
                .0
                .is_empty()
        );
        assert_eq!(
            index
                .apply(&Event::Apply(pod("web-1", Some("n0"), "Pending")))
                .0,
            BTreeSet::from(["n0".to_string()])
        );
        assert_eq!(index.on_node("n0").len(), 1);
        // Running on the same node changes nothing the pools read.
        assert!(
            index
                .apply(&Event::Apply(pod("web-1", Some("n0"), "Running")))
                .0
                .is_empty()
        );
        assert_eq!(
            index
                .apply(&Event::Apply(pod("web-1", Some("n0"), "Succeeded")))
                .0,
            BTreeSet::from(["n0".to_string()])
        );
        assert!(index.on_node("n0").is_empty());
        // A relist replaces the index whole.
        index.apply(&Event::Apply(pod("web-2", Some("n1"), "Running")));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(pod("web-3", Some("n2"), "Running")));
        assert_eq!(index.on_node("n1").len(), 1);
        let (touched, _) = index.apply(&Event::InitDone);
        assert!(touched.contains("n1") && touched.contains("n2"));
        assert!(index.on_node("n1").is_empty());
        assert_eq!(index.on_node("n2")[0].name, "web-3");
    }
}
