//! Apply: a pool's plan, written to the API server. Each lease's writes run in order and
//! stop at that lease's first failure; leases run side by side, so one lease's failure
//! never holds up another's. Every write is locked on the version the plan saw: a node or
//! lease changed meanwhile is refused (409) and planned again from fresh caches.
//!
//! A failure that is not a conflict is remembered ([`Memory`]): the lease gets a `Synced`
//! condition and a Warning Event saying what failed, its next attempt backs off, and a
//! node that refused to be bound is not offered again for a while, so the lease can be
//! served by others.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use offpeak_api::{CapacityLease, CapacityLeaseStatus, CapacityPool, PeakReservation};
use serde_json::json;

use super::Context;
use crate::desired::binding;
use crate::names::{FIELD_MANAGER, FINALIZER};
use crate::plan::conditions;
use crate::plan::pool::{
    Eviction, Failure, LeasePlan, NodePatch, Note, PoolPlan, PoolView, ReservationPlan, Write,
};

/// How long a node that refused to be bound is passed over.
const HOLD_BACK: chrono::Duration = chrono::Duration::seconds(60);
/// Retries of a failing lease back off from 1 s, doubling, to this.
const MAX_BACKOFF_SECONDS: i64 = 60;

/// What failed lately, between passes.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    leases: HashMap<String, (Failure, u32)>,
    held_back: HashMap<String, DateTime<Utc>>,
}

impl Memory {
    pub fn failure(&self, lease_uid: &str) -> Option<Failure> {
        self.leases.get(lease_uid).map(|(f, _)| f.clone())
    }

    pub fn held_back(&self, now: DateTime<Utc>) -> BTreeSet<String> {
        self.held_back
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn failed(
        &mut self,
        lease_uid: &str,
        reason: &str,
        message: String,
        now: DateTime<Utc>,
    ) -> Failure {
        let attempts = self.leases.get(lease_uid).map_or(0, |(_, a)| *a);
        let backoff = (1i64 << attempts.min(6)).min(MAX_BACKOFF_SECONDS);
        let failure = Failure {
            reason: reason.to_string(),
            message,
            retry_at: now + chrono::Duration::seconds(backoff),
        };
        self.leases
            .insert(lease_uid.to_string(), (failure.clone(), attempts + 1));
        failure
    }

    fn succeeded(&mut self, lease_uid: &str) {
        self.leases.remove(lease_uid);
    }

    fn hold_back(&mut self, node: &str, now: DateTime<Utc>) {
        self.held_back.retain(|_, until| *until > now);
        self.held_back.insert(node.to_string(), now + HOLD_BACK);
    }
}

/// An object this pass wrote, at the version the write made.
pub enum Written {
    Lease {
        namespace: String,
        name: String,
        version: String,
    },
    Node {
        name: String,
        version: String,
    },
}

#[derive(Default)]
pub struct Outcome {
    pub written: Vec<Written>,
    pub conflicts: usize,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.written.extend(other.written);
        self.conflicts += other.conflicts;
    }
}

/// Why a write did not happen.
enum Refused {
    /// The object changed since it was observed; planning again will see how.
    Conflict,
    /// The object is gone.
    Gone,
    /// Anything else: reported on the lease, retried with backoff.
    Failed(String),
}

impl From<kube::Error> for Refused {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(s) if s.code == 409 => Refused::Conflict,
            kube::Error::Api(s) if s.code == 404 => Refused::Gone,
            kube::Error::Api(s) => Refused::Failed(format!("{} ({})", s.message, s.code)),
            other => Refused::Failed(other.to_string()),
        }
    }
}

pub async fn apply(ctx: &Context, view: &PoolView, plan: PoolPlan, now: DateTime<Utc>) -> Outcome {
    let PoolPlan {
        leases,
        nodes,
        status,
        events,
        reservations,
        ..
    } = plan;
    let concurrency = ctx.settings.write_concurrency.max(1);
    let mut outcome = Outcome::default();
    let lease_outcomes: Vec<Outcome> = futures::stream::iter(leases)
        .map(|lease| apply_lease(ctx, lease, now))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for o in lease_outcomes {
        outcome.merge(o);
    }
    let node_outcomes: Vec<Outcome> = futures::stream::iter(nodes)
        .map(|write| apply_unowned(ctx, write))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for o in node_outcomes {
        outcome.merge(o);
    }
    let shown = status.as_ref().or(view.status.as_ref());
    if let Some(shown) = shown {
        for (state, value) in [
            ("total", shown.nodes),
            ("lendable", shown.lendable_nodes),
            ("lent", shown.lent_nodes),
            ("headroom", shown.headroom_nodes),
        ] {
            ctx.metrics
                .pool_nodes
                .with_label_values(&[&view.name, state])
                .set(i64::from(value.unwrap_or(0)));
        }
    }
    if let Some(status) = status {
        let api: Api<CapacityPool> = Api::all(ctx.client.clone());
        let body =
            json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool", "status": status});
        match api
            .patch_status(
                &view.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
        {
            Ok(_) => ctx.metrics.write("pool_status", "ok"),
            Err(e) => {
                ctx.metrics.write("pool_status", "error");
                tracing::warn!(error = %e, "cannot write the pool's status; retrying with the next pass");
                outcome.conflicts += 1;
            }
        }
    }
    let reference = ObjectReference {
        api_version: Some("offpeak.dev/v1alpha1".into()),
        kind: Some("CapacityPool".into()),
        name: Some(view.name.clone()),
        ..Default::default()
    };
    for note in events {
        publish(ctx, &reference, note).await;
    }
    for reservation in reservations {
        apply_reservation(ctx, reservation).await;
    }
    outcome
}

async fn apply_reservation(ctx: &Context, plan: ReservationPlan) {
    if let Some(status) = &plan.status {
        let api: Api<PeakReservation> = Api::all(ctx.client.clone());
        let body = json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "PeakReservation", "status": status});
        let result = api
            .patch_status(
                &plan.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await;
        if let Err(Refused::Failed(message)) = counted(ctx, "reservation_status", result) {
            tracing::warn!(
                reservation = plan.name,
                error = message,
                "cannot write the reservation's status; the next pass tries again"
            );
        }
    }
    let reference = ObjectReference {
        api_version: Some("offpeak.dev/v1alpha1".into()),
        kind: Some("PeakReservation".into()),
        name: Some(plan.name.clone()),
        ..Default::default()
    };
    for note in plan.events {
        publish(ctx, &reference, note).await;
    }
}

async fn publish(ctx: &Context, reference: &ObjectReference, note: Note) {
    let type_ = if note.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    ctx.event(reference, type_, &note.reason, note.message)
        .await;
}

fn lease_reference(plan: &LeasePlan) -> ObjectReference {
    ObjectReference {
        api_version: Some("offpeak.dev/v1alpha1".into()),
        kind: Some("CapacityLease".into()),
        name: Some(plan.name.clone()),
        namespace: Some(plan.namespace.clone()),
        uid: Some(plan.uid.clone()),
        ..Default::default()
    }
}

/// One lease's writes, in order, up to the first that does not go through. Its Events go
/// out after its other writes: each still follows the write it tells of, and none holds up
/// the next step (at a reclaim of many leases, a node's way back is writes long).
async fn apply_lease(ctx: &Context, plan: LeasePlan, now: DateTime<Utc>) -> Outcome {
    let reference = lease_reference(&plan);
    let mut notes = Vec::new();
    let outcome = apply_lease_writes(ctx, &plan, &mut notes, now).await;
    for note in notes {
        publish(ctx, &reference, note).await;
    }
    outcome
}

async fn apply_lease_writes(
    ctx: &Context,
    plan: &LeasePlan,
    notes: &mut Vec<Note>,
    now: DateTime<Utc>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut version = plan.resource_version.clone();
    let key = format!("{}/{}", plan.namespace, plan.name);
    for write in &plan.writes {
        let step = match write {
            Write::AddFinalizer | Write::RemoveFinalizer => "FinalizerFailed",
            Write::Bind(_) => "BindFailed",
            Write::Node(_) => "NodeWriteFailed",
            Write::Evict(_) | Write::ForceDelete(_) => "EvictionFailed",
            Write::DisruptionTarget { .. } => "PodConditionFailed",
            Write::Status(_) => "StatusWriteFailed",
            Write::Event(_) => "EventFailed",
        };
        let result = match write {
            Write::AddFinalizer => finalizers(ctx, plan, &version, true).await,
            Write::RemoveFinalizer => finalizers(ctx, plan, &version, false).await,
            Write::Status(status) => lease_status(ctx, plan, &version, status).await,
            Write::Bind(patches) => bind(ctx, patches, &mut outcome).await.map(|()| None),
            Write::Node(patch) => node(ctx, patch, &mut outcome).await.map(|()| None),
            Write::Evict(eviction) => evict(ctx, eviction).await.map(|()| None),
            Write::ForceDelete(pod) => force_delete(ctx, pod).await.map(|()| None),
            Write::DisruptionTarget { pod, message } => {
                disruption_target(ctx, pod, message).await.map(|()| None)
            }
            Write::Event(note) => {
                notes.push(note.clone());
                Ok(None)
            }
        };
        match result {
            Ok(Some(new_version)) => {
                outcome.written.push(Written::Lease {
                    namespace: plan.namespace.clone(),
                    name: plan.name.clone(),
                    version: new_version.clone(),
                });
                version = Some(new_version);
            }
            Ok(None) => {}
            Err(Refused::Conflict) => {
                tracing::debug!(lease = key, step, "changed since observed; planning again");
                outcome.conflicts += 1;
                return outcome;
            }
            Err(Refused::Gone) => return outcome,
            Err(Refused::Failed(message)) => {
                // What went through is told before what failed.
                for note in notes.drain(..) {
                    publish(ctx, &lease_reference(plan), note).await;
                }
                report_failure(ctx, plan, &version, write, step, message, now).await;
                return outcome;
            }
        }
    }
    if let Ok(mut memory) = ctx.memory.lock() {
        memory.succeeded(&plan.uid);
    }
    outcome
}

/// A write for the lease failed: remember it, hold back a node that refused binding, and
/// tell the tenant on the lease itself (a condition, if its status can still be written,
/// and an Event).
async fn report_failure(
    ctx: &Context,
    plan: &LeasePlan,
    version: &Option<String>,
    write: &Write,
    step: &str,
    message: String,
    now: DateTime<Utc>,
) {
    let what = match write {
        Write::Bind(patches) => format!(
            "cannot lend node(s) {}",
            patches
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Write::Node(patch) => format!("cannot patch node {}", patch.node),
        Write::Evict(e) | Write::ForceDelete(e) => {
            format!("cannot evict pod {}/{}", e.namespace, e.name)
        }
        Write::DisruptionTarget { pod, .. } => {
            format!(
                "cannot tell pod {}/{} of the reclaim",
                pod.namespace, pod.name
            )
        }
        Write::Status(_) => "cannot write the lease's status".to_string(),
        Write::AddFinalizer | Write::RemoveFinalizer => {
            "cannot update the lease's finalizers".to_string()
        }
        Write::Event(_) => "cannot publish an event".to_string(),
    };
    let failure = {
        let Ok(mut memory) = ctx.memory.lock() else {
            return;
        };
        if let Write::Bind(patches) = write {
            // Every node of the failed bind is passed over for a while: the one that refused
            // is among them, and the lease is better served by others than by waiting.
            for patch in patches {
                memory.hold_back(&patch.node, now);
            }
        }
        memory.failed(&plan.uid, step, format!("{what}: {message}"), now)
    };
    let retry_in = (failure.retry_at - now).num_seconds();
    let note = format!("{}; trying again in {retry_in}s", failure.message);
    tracing::warn!(lease = format!("{}/{}", plan.namespace, plan.name), step, error = %message, "write failed; the rest of the pool goes on");
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["pool", step])
        .inc();
    if !matches!(write, Write::Status(_))
        && let Some(lease) = ctx
            .stores
            .leases
            .get(&ObjectRef::new(&plan.name).within(&plan.namespace))
    {
        let mut status = lease.status.clone().unwrap_or_default();
        status.conditions = conditions::set(
            &status.conditions,
            "Synced",
            false,
            step,
            &note,
            lease.metadata.generation,
            now,
        );
        let _ = lease_status(ctx, plan, version, &status).await;
    }
    ctx.event(&lease_reference(plan), EventType::Warning, step, note)
        .await;
}

async fn lease_status(
    ctx: &Context,
    plan: &LeasePlan,
    version: &Option<String>,
    status: &CapacityLeaseStatus,
) -> Result<Option<String>, Refused> {
    let api: Api<CapacityLease> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    let body = json!({
        "apiVersion": "offpeak.dev/v1alpha1",
        "kind": "CapacityLease",
        "metadata": {"name": plan.name, "resourceVersion": version},
        "status": status,
    });
    let result = api
        .patch_status(
            &plan.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await;
    counted(ctx, "lease_status", result).map(|l| l.resource_version())
}

async fn finalizers(
    ctx: &Context,
    plan: &LeasePlan,
    version: &Option<String>,
    add: bool,
) -> Result<Option<String>, Refused> {
    let Some(lease) = ctx
        .stores
        .leases
        .get(&ObjectRef::new(&plan.name).within(&plan.namespace))
    else {
        return Err(Refused::Gone);
    };
    if lease.resource_version() != *version {
        return Err(Refused::Conflict);
    }
    let mut list: Vec<String> = lease
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if add {
        list.push(FINALIZER.to_string());
    }
    let api: Api<CapacityLease> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    let body = json!({"metadata": {"resourceVersion": version, "finalizers": list}});
    let result = api
        .patch(&plan.name, &PatchParams::default(), &Patch::Merge(body))
        .await;
    counted(ctx, "finalizer", result).map(|l| l.resource_version())
}

/// Lends every node or none: a failure part-way takes back those already lent.
async fn bind(ctx: &Context, patches: &[NodePatch], outcome: &mut Outcome) -> Result<(), Refused> {
    let mut done: Vec<(&NodePatch, Node)> = Vec::new();
    for patch in patches {
        match patch_node(ctx, patch).await {
            Ok(node) => done.push((patch, node)),
            Err(refused) => {
                for (patch, node) in done.into_iter().rev() {
                    let back = NodePatch {
                        node: patch.node.clone(),
                        resource_version: node.resource_version(),
                        from: patch.to.clone(),
                        to: patch.from.clone(),
                    };
                    let undo = binding::patch(
                        &node,
                        back.resource_version.as_deref(),
                        &back.from,
                        &back.to,
                    );
                    let api: Api<Node> = Api::all(ctx.client.clone());
                    let result = api
                        .patch(&back.node, &PatchParams::default(), &Patch::Merge(undo))
                        .await;
                    match counted(ctx, "node", result) {
                        Ok(node) => outcome.written.push(Written::Node {
                            name: back.node.clone(),
                            version: node.resource_version().unwrap_or_default(),
                        }),
                        // Left marked for a lease that does not hold it: the next pass returns it.
                        Err(_) => tracing::warn!(
                            node = back.node,
                            "cannot take back a partly bound node; the next pass returns it"
                        ),
                    }
                }
                return Err(refused);
            }
        }
    }
    for (patch, node) in done {
        outcome.written.push(Written::Node {
            name: patch.node.clone(),
            version: node.resource_version().unwrap_or_default(),
        });
    }
    Ok(())
}

async fn node(ctx: &Context, patch: &NodePatch, outcome: &mut Outcome) -> Result<(), Refused> {
    let node = patch_node(ctx, patch).await?;
    outcome.written.push(Written::Node {
        name: patch.node.clone(),
        version: node.resource_version().unwrap_or_default(),
    });
    Ok(())
}

async fn patch_node(ctx: &Context, patch: &NodePatch) -> Result<Node, Refused> {
    let Some(seen) = ctx.stores.nodes.get(&ObjectRef::new(&patch.node)) else {
        return Err(Refused::Gone);
    };
    if seen.resource_version() != patch.resource_version {
        return Err(Refused::Conflict);
    }
    // A node is lent only if, as the pod watch shows it now (not as it was when the pass
    // was planned), nothing but node-level pods runs there: the scheduler may have placed
    // an internal pod since.
    if patch.from.lease.is_none()
        && patch.to.lease.is_some()
        && ctx
            .stores
            .pods
            .on_node(&patch.node)
            .iter()
            .any(|p| !p.node_level)
    {
        return Err(Refused::Conflict);
    }
    let body = binding::patch(
        &seen,
        patch.resource_version.as_deref(),
        &patch.from,
        &patch.to,
    );
    let api: Api<Node> = Api::all(ctx.client.clone());
    let result = api
        .patch(&patch.node, &PatchParams::default(), &Patch::Merge(body))
        .await;
    counted(ctx, "node", result)
}

async fn evict(ctx: &Context, eviction: &Eviction) -> Result<(), Refused> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &eviction.namespace);
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            grace_period_seconds: eviction
                .grace_seconds
                .and_then(|g| u32::try_from(g.max(0)).ok()),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    match counted(ctx, "eviction", api.evict(&eviction.name, &params).await) {
        Ok(_) | Err(Refused::Gone) => Ok(()),
        // A PodDisruptionBudget refuses (429): the pod is deleted once it outstays its grace.
        Err(Refused::Failed(message)) if message.ends_with("(429)") => {
            tracing::info!(
                pod = eviction.name,
                "eviction refused by a disruption budget; it is deleted at the cap"
            );
            Ok(())
        }
        Err(other) => Err(other),
    }
}

/// A tenant's pod that outstayed its eviction: its finalizers go (a tenant's finalizer must
/// not keep a node), then the pod, at once.
async fn force_delete(ctx: &Context, pod: &Eviction) -> Result<(), Refused> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace);
    let strip = json!({"metadata": {"finalizers": null}});
    match counted(
        ctx,
        "pod",
        api.patch(&pod.name, &PatchParams::default(), &Patch::Merge(strip))
            .await,
    ) {
        Ok(_) | Err(Refused::Gone) => {}
        Err(other) => return Err(other),
    }
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    match counted(ctx, "pod", api.delete(&pod.name, &now).await.map(|_| ())) {
        Ok(()) | Err(Refused::Gone) => Ok(()),
        Err(other) => Err(other),
    }
}

/// The pod's DisruptionTarget condition, as Kubernetes itself marks pods it is about to
/// disrupt.
async fn disruption_target(ctx: &Context, pod: &Eviction, message: &str) -> Result<(), Refused> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace);
    let body = json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": crate::observe::OFFPEAK_DISRUPTION,
        "message": message,
        "lastTransitionTime": crate::observe::timestamp(Utc::now()).as_str(),
    }]}});
    let result = api
        .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(body))
        .await;
    match counted(ctx, "pod_condition", result) {
        Ok(_) | Err(Refused::Gone) => Ok(()),
        Err(other) => Err(other),
    }
}

/// A write no lease answers for (an idle clock, a node lent to nothing): a failure is
/// logged and the next pass tries again.
async fn apply_unowned(ctx: &Context, write: Write) -> Outcome {
    let mut outcome = Outcome::default();
    let result = match &write {
        Write::Node(patch) => node(ctx, patch, &mut outcome).await,
        Write::Evict(eviction) => evict(ctx, eviction).await,
        Write::ForceDelete(pod) => force_delete(ctx, pod).await,
        _ => Ok(()),
    };
    match result {
        Ok(()) | Err(Refused::Gone) => {}
        Err(Refused::Conflict) => outcome.conflicts += 1,
        Err(Refused::Failed(message)) => {
            tracing::warn!(
                ?write,
                error = message,
                "write failed; the next pass tries again"
            );
            outcome.conflicts += 1;
        }
    }
    outcome
}

/// Counts a write by its outcome.
fn counted<T>(ctx: &Context, kind: &str, result: Result<T, kube::Error>) -> Result<T, Refused> {
    let result = result.map_err(Refused::from);
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Refused::Conflict) => "conflict",
        Err(Refused::Gone) => "gone",
        Err(Refused::Failed(_)) => "error",
    };
    ctx.metrics.write(kind, outcome);
    result
}

/// Waits (a few seconds at most) until the caches show every object at least at the
/// version this pass wrote, so the next pass never plans from older state than its own
/// writes. Resource versions are compared as the numbers etcd makes them; one that is not a
/// number counts as seen.
pub async fn caught_up(ctx: &Context, written: &[Written]) {
    if written.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let behind = |have: Option<String>, want: &str| match (have, want.parse::<u64>()) {
        (Some(have), Ok(want)) => have.parse::<u64>().is_ok_and(|have| have < want),
        _ => false,
    };
    loop {
        let lagging = written.iter().any(|w| match w {
            Written::Lease {
                namespace,
                name,
                version,
            } => ctx
                .stores
                .leases
                .get(&ObjectRef::new(name).within(namespace))
                .is_some_and(|l| behind(l.resource_version(), version)),
            Written::Node { name, version } => ctx
                .stores
                .nodes
                .get(&ObjectRef::new(name))
                .is_some_and(|n| behind(n.resource_version(), version)),
        });
        if !lagging || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
