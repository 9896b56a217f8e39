//! The lease controller: a finalizer so that a deleted lease's nodes come back before the
//! object goes, and the status of leases whose pool does not exist (the pool controller
//! writes every other lease status).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use offpeak_api::{CapacityLease, CapacityLeaseStatus, LeasePhase};

use super::binding::{return_nodes, write_status};
use super::{Context, conditions, drive, retry_after};
use crate::desired::binding::lease_of;
use crate::error::{Error, Result};
use crate::observe::lease_key;

pub const FINALIZER: &str = "offpeak.dev/return-nodes";

pub async fn run(ctx: Arc<Context>) {
    drive(
        Controller::new(
            Api::<CapacityLease>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx),
    )
    .await;
}

fn error_policy(lease: Arc<CapacityLease>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(
        &ctx,
        "lease",
        &lease_key(&lease),
        error,
        Duration::from_secs(5),
    )
}

#[tracing::instrument(skip_all, fields(lease = %lease_key(&lease)))]
async fn reconcile(lease: Arc<CapacityLease>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("lease");
    let api: Api<CapacityLease> =
        Api::namespaced(ctx.client.clone(), &lease.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, lease, |event| async {
        match event {
            Finalizer::Apply(lease) => apply(&lease, &ctx).await,
            Finalizer::Cleanup(lease) => cleanup(&lease, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

async fn apply(lease: &CapacityLease, ctx: &Context) -> Result<Action> {
    let pool = lease.spec.pool.as_str();
    if ctx.stores.pools.get(&ObjectRef::new(pool)).is_some() {
        return Ok(Action::await_change());
    }
    let old = lease.status.clone().unwrap_or_default();
    if matches!(
        old.phase,
        Some(LeasePhase::Ended) | Some(LeasePhase::Rejected)
    ) {
        return Ok(Action::await_change());
    }
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
    let was = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Admitted")
        .map(|c| c.reason.clone());
    if write_status(ctx, lease, status).await? && was.as_deref() != Some("PoolNotFound") {
        ctx.event(lease, EventType::Warning, "PoolNotFound", message)
            .await;
    }
    // Pools are not watched here; look again shortly.
    Ok(Action::requeue(Duration::from_secs(15)))
}

/// Returns every node lent to the lease (from the nodes' labels, so nodes bound moments
/// before the deletion are found too).
async fn cleanup(lease: &CapacityLease, ctx: &Context) -> Result<Action> {
    let key = lease_key(lease);
    let nodes: BTreeSet<String> = ctx
        .stores
        .nodes
        .state()
        .iter()
        .filter(|n| lease_of(n) == Some(key.as_str()))
        .map(|n| n.name_any())
        .collect();
    if nodes.is_empty() {
        return Ok(Action::await_change());
    }
    if return_nodes(ctx, &nodes).await? {
        ctx.event(
            lease,
            EventType::Normal,
            "NodesReturned",
            format!(
                "lease deleted; nodes {} returned to pool {}",
                nodes.iter().cloned().collect::<Vec<_>>().join(", "),
                lease.spec.pool
            ),
        )
        .await;
        Ok(Action::await_change())
    } else {
        // The tenant's pods are being evicted; the finalizer stays until they are gone.
        Err(Error::Spec {
            object: key,
            message: "waiting for the tenant's pods to leave its nodes".into(),
        })
    }
}
