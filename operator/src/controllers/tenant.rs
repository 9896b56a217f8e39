//! The tenant controller: each of a tenant's namespaces exists and is labelled as the
//! tenant's, its people are bound to the tenant role there, pods get default requests, and
//! the namespace's quota equals the capacity of its active leases.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use offpeak_api::{CapacityLease, LeasePhase, Tenant, TenantStatus};
use serde_json::json;

use super::{Context, drive, retry_after};
use crate::desired::tenancy;
use crate::error::{Error, Result};
use crate::names::{FIELD_MANAGER, TENANT};
use crate::observe;
use crate::plan::conditions;
use crate::plan::resources::Resources;

pub async fn run(
    ctx: Arc<Context>,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<Tenant>>,
) {
    let own = futures::stream::pending::<Result<Tenant, kube::runtime::watcher::Error>>();
    let applied = Arc::new(Applied::default());
    drive(
        Controller::for_stream(own, ctx.stores.tenants.clone())
            .reconcile_on(triggers)
            .run(
                move |tenant, ctx| reconcile(tenant, ctx, applied.clone()),
                error_policy,
                ctx,
            ),
    )
    .await;
}

fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(
        &ctx,
        "tenant",
        &tenant.name_any().to_string(),
        error,
        Duration::from_secs(5),
    )
}

/// What was applied lately, so an unchanged object is not sent again until the resync
/// (which puts back whatever someone changed by hand).
#[derive(Default)]
struct Applied(Mutex<HashMap<String, (u64, std::time::Instant)>>);

impl Applied {
    fn fresh(&self, key: &str, digest: u64, resync: Duration) -> bool {
        self.0.lock().is_ok_and(|m| {
            m.get(key)
                .is_some_and(|(d, at)| *d == digest && at.elapsed() < resync)
        })
    }

    fn remember(&self, key: String, digest: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, (digest, std::time::Instant::now()));
        }
    }
}

async fn apply<K>(ctx: &Context, applied: &Applied, api: Api<K>, object: &K) -> Result<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.clone().unwrap_or_default(),
        name
    );
    let digest = {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(object)?.hash(&mut hasher);
        hasher.finish()
    };
    if applied.fresh(&key, digest, ctx.settings.tenant_resync) {
        return Ok(());
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    ctx.metrics.write("tenant_object", "ok");
    applied.remember(key, digest);
    Ok(())
}

#[tracing::instrument(skip_all, fields(tenant = %tenant.name_any()))]
async fn reconcile(
    tenant: Arc<Tenant>,
    ctx: Arc<Context>,
    applied: Arc<Applied>,
) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("tenant");
    let name = tenant.name_any();
    let client = &ctx.client;
    let users: Vec<String> = tenant.spec.users.iter().map(|u| u.to_string()).collect();
    let groups: Vec<String> = tenant.spec.groups.iter().map(|g| g.to_string()).collect();
    let mut conflicts = Vec::new();
    let mut active_leases = 0;
    for namespace in tenant.spec.namespaces.iter().map(|n| n.as_str()) {
        // A namespace already owned by another tenant is never taken over.
        if let Some(owner) = ctx
            .stores
            .namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|ns| ns.labels().get(TENANT).cloned())
            .filter(|owner| *owner != name)
        {
            conflicts.push(format!("namespace {namespace} belongs to tenant {owner}"));
            continue;
        }
        apply(
            &ctx,
            &applied,
            Api::<Namespace>::all(client.clone()),
            &tenancy::namespace(namespace, &name),
        )
        .await?;
        apply(
            &ctx,
            &applied,
            Api::<RoleBinding>::namespaced(client.clone(), namespace),
            &tenancy::role_binding(namespace, &name, &users, &groups),
        )
        .await?;
        apply(
            &ctx,
            &applied,
            Api::<LimitRange>::namespaced(client.clone(), namespace),
            &tenancy::default_requests(namespace, &name),
        )
        .await?;
        let (leased, slots, count) = leased_capacity(&ctx, namespace);
        active_leases += count;
        apply(
            &ctx,
            &applied,
            Api::<ResourceQuota>::namespaced(client.clone(), namespace),
            &tenancy::lease_quota(namespace, &name, &leased, slots),
        )
        .await?;
    }

    let old = tenant.status.clone().unwrap_or_default();
    let (ready, reason, message) = if conflicts.is_empty() {
        (
            true,
            "NamespacesReady",
            format!(
                "{} namespace(s) ready; {active_leases} active lease(s)",
                tenant.spec.namespaces.len()
            ),
        )
    } else {
        (false, "NamespaceConflict", conflicts.join("; "))
    };
    let mut conds = conditions::set(
        &old.conditions,
        "Ready",
        ready,
        reason,
        &message,
        tenant.metadata.generation,
        Utc::now(),
    );
    conds = conditions::set(
        &conds,
        "Suspended",
        tenant.spec.suspended,
        if tenant.spec.suspended {
            "Suspended"
        } else {
            "NotSuspended"
        },
        if tenant.spec.suspended {
            "no new leases are admitted"
        } else {
            "new leases may be admitted"
        },
        tenant.metadata.generation,
        Utc::now(),
    );
    let status = TenantStatus {
        active_leases: i32::try_from(active_leases).ok(),
        open_balance: old.open_balance.clone(),
        conditions: conds,
        observed_generation: tenant.metadata.generation,
    };
    if tenant.status.as_ref() != Some(&status) {
        let api: Api<Tenant> = Api::all(client.clone());
        let body =
            json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant", "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
        let was = old
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.reason.clone());
        if was.as_deref() != Some(reason) {
            let kind = if ready {
                EventType::Normal
            } else {
                EventType::Warning
            };
            let reference = tenant.object_ref(&());
            ctx.event(&reference, kind, reason, message).await;
        }
    }
    Ok(Action::requeue(ctx.settings.tenant_resync))
}

/// The allocatable of the nodes bound to the namespace's active leases, their pod slots,
/// and how many such leases there are.
fn leased_capacity(ctx: &Context, namespace: &str) -> (Resources, i64, usize) {
    let leases = ctx.stores.leases.state();
    let active: Vec<&Arc<CapacityLease>> = leases
        .iter()
        .filter(|l| l.namespace().as_deref() == Some(namespace))
        .filter(|l| l.metadata.deletion_timestamp.is_none())
        .filter(|l| {
            matches!(
                l.status.as_ref().and_then(|s| s.phase),
                Some(LeasePhase::Active) | Some(LeasePhase::Reclaiming)
            )
        })
        .collect();
    let nodes: BTreeSet<String> = active
        .iter()
        .flat_map(|l| {
            l.status
                .iter()
                .flat_map(|s| s.bound_nodes.iter().map(|n| n.to_string()))
        })
        .collect();
    let mut capacity = Resources::ZERO;
    let mut slots = 0;
    for node in nodes
        .iter()
        .filter_map(|n| ctx.stores.nodes.get(&ObjectRef::new(n)))
    {
        capacity += observe::allocatable(&node).unwrap_or(Resources::ZERO);
        slots += observe::pod_slots(&node);
    }
    (capacity, slots, active.len())
}
