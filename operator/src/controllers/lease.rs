//! The lease controller: leases whose pool does not exist (the pool pass writes every other
//! lease). Such a lease waits with `PoolNotFound`; deleted, it gives back any node still
//! marked for it (its pool was deleted under it) and lets go of its finalizer.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::ResourceExt;
use kube::api::{Api, EvictParams, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use offpeak_api::{CapacityLease, CapacityLeaseStatus, LeasePhase};
use serde_json::json;

use super::{Context, drive, retry_after};
use crate::desired::binding;
use crate::error::{Error, Result};
use crate::names::{FIELD_MANAGER, FINALIZER};
use crate::observe::lease_name;
use crate::plan::conditions;
use crate::plan::pool::NodeMarks;

pub async fn run(
    ctx: Arc<Context>,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<CapacityLease>>,
) {
    let own = futures::stream::pending::<Result<CapacityLease, kube::runtime::watcher::Error>>();
    drive(
        Controller::for_stream(own, ctx.stores.leases.clone())
            .reconcile_on(triggers)
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

fn error_policy(lease: Arc<CapacityLease>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(
        &ctx,
        "lease",
        &lease_name(&lease),
        error,
        Duration::from_secs(5),
    )
}

#[tracing::instrument(skip_all, fields(lease = %lease_name(&lease)))]
async fn reconcile(lease: Arc<CapacityLease>, ctx: Arc<Context>) -> Result<Action> {
    if ctx
        .stores
        .pools
        .get(&ObjectRef::new(lease.spec.pool.as_str()))
        .is_some()
    {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile("lease");
    if lease.metadata.deletion_timestamp.is_some() {
        return let_go(&lease, &ctx).await;
    }
    let old = lease.status.clone().unwrap_or_default();
    if matches!(
        old.phase,
        Some(LeasePhase::Ended) | Some(LeasePhase::Rejected)
    ) {
        return Ok(Action::await_change());
    }
    let pool = lease.spec.pool.as_str();
    let message = format!("CapacityPool {pool} does not exist; the lease waits until it does");
    let status = CapacityLeaseStatus {
        phase: Some(LeasePhase::Pending),
        conditions: conditions::set(
            &old.conditions,
            "Admitted",
            false,
            "PoolNotFound",
            &message,
            lease.metadata.generation,
            Utc::now(),
        ),
        observed_generation: lease.metadata.generation,
        ..Default::default()
    };
    if lease.status.as_ref() == Some(&status) {
        return Ok(Action::await_change());
    }
    let api: Api<CapacityLease> =
        Api::namespaced(ctx.client.clone(), &lease.namespace().unwrap_or_default());
    let body =
        json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease", "status": status});
    api.patch_status(
        &lease.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    let was = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Admitted")
        .map(|c| c.reason.as_str());
    if was != Some("PoolNotFound") {
        ctx.event(
            &reference(&lease),
            EventType::Warning,
            "PoolNotFound",
            message,
        )
        .await;
    }
    Ok(Action::await_change())
}

fn reference(lease: &CapacityLease) -> ObjectReference {
    ObjectReference {
        api_version: Some("offpeak.dev/v1alpha1".into()),
        kind: Some("CapacityLease".into()),
        name: lease.metadata.name.clone(),
        namespace: lease.metadata.namespace.clone(),
        uid: lease.metadata.uid.clone(),
        ..Default::default()
    }
}

/// A deleted lease of a pool that no longer exists: its tenant's pods leave any node still
/// marked for it, the node is unmarked, and the finalizer goes.
async fn let_go(lease: &CapacityLease, ctx: &Context) -> Result<Action> {
    let uid = lease.uid().unwrap_or_default();
    let marked: Vec<Arc<Node>> = ctx
        .stores
        .nodes
        .state()
        .into_iter()
        .filter(|n| binding::marks(n).lease.as_deref() == Some(uid.as_str()))
        .collect();
    let namespace = lease.namespace().unwrap_or_default();
    let mut waiting = false;
    for node in &marked {
        let tenant_pods: Vec<_> = ctx
            .stores
            .pods
            .on_node(&node.name_any())
            .into_iter()
            .filter(|p| p.namespace == namespace && !p.node_level)
            .collect();
        if tenant_pods.is_empty() {
            let from = binding::marks(node);
            let body = binding::patch(
                node,
                node.resource_version().as_deref(),
                &from,
                &NodeMarks::default(),
            );
            Api::<Node>::all(ctx.client.clone())
                .patch(
                    &node.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(body),
                )
                .await?;
        } else {
            waiting = true;
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            for pod in tenant_pods.iter().filter(|p| !p.deleting) {
                match pods.evict(&pod.name, &EvictParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    if waiting {
        // The tenant's pods are leaving; this is waiting, not an error.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if lease.finalizers().iter().any(|f| f == FINALIZER) {
        let rest: Vec<String> = lease
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let api: Api<CapacityLease> = Api::namespaced(ctx.client.clone(), &namespace);
        let body =
            json!({"metadata": {"resourceVersion": lease.resource_version(), "finalizers": rest}});
        api.patch(
            &lease.name_any(),
            &PatchParams::default(),
            &Patch::Merge(body),
        )
        .await?;
    }
    Ok(Action::await_change())
}
