//! The tenant controller: each of a tenant's namespaces exists and is labelled as the
//! tenant's (Pod Security `restricted` included), pods get default requests, the namespace
//! holds the lease quota (the capacity of its active leases), the objects quota (the
//! Tenant's `spec.quota`), the cross-namespace affinity quota and the tenant's
//! NetworkPolicies, and then, once the API server enforces those quotas, its people are
//! bound to the tenant role there.
//!
//! A namespace is only ever created for a tenant: one that exists already and is not
//! Offpeak's (or was released from another tenant) is refused with a condition, never
//! adopted. A namespace removed from a Tenant, and every namespace of a deleted Tenant (a
//! finalizer holds the Tenant until then), is released: the RoleBinding goes at once, so its
//! people lose access; the quotas, LimitRange, NetworkPolicies and labels go once no lease
//! there holds nodes (the pool pass ends those leases and returns their nodes), so pods
//! still running on leased nodes stay confined until then. The Tenant's `Releasing`
//! condition says which namespaces wait and for which leases. A namespace of Offpeak's
//! whose tenant no longer exists (its finalizer was removed by hand) is released too.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use offpeak_api::{CapacityLease, LeasePhase, Tenant, TenantStatus};
use serde_json::json;

use super::{Context, drive, retry_after};
use crate::desired::tenancy::{self, Claim};
use crate::error::{Error, Result};
use crate::names::{FIELD_MANAGER, TENANT};
use crate::observe;
use crate::plan::conditions;
use crate::plan::resources::Resources;

/// How soon a tenant is looked at again while it waits for the API server (quotas not yet
/// enforced) or for leases to end (namespaces not yet released). Lease changes trigger the
/// tenant too; this is the fallback.
const WAIT: Duration = Duration::from_secs(1);
const RELEASE_WAIT: Duration = Duration::from_secs(10);
/// How long a new quota may go without a usage for one of its resources before it is made
/// again (see [`quotas_enforced`]); until the controller discovered the CRD, each new one
/// is made again after as long.
const QUOTA_RECOUNT_AFTER: chrono::Duration = chrono::Duration::seconds(10);

pub async fn run(
    ctx: Arc<Context>,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<Tenant>>,
) {
    let own = futures::stream::pending::<Result<Tenant, kube::runtime::watcher::Error>>();
    let applied = Arc::new(Applied::default());
    let controller = {
        let applied = applied.clone();
        drive(
            Controller::for_stream(own, ctx.stores.tenants.clone())
                .reconcile_on(triggers)
                .run(
                    move |tenant, ctx| reconcile(tenant, ctx, applied.clone()),
                    error_policy,
                    ctx.clone(),
                ),
        )
    };
    tokio::join!(controller, release_orphans(ctx, applied));
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

    fn forget(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }

    /// Forgets everything applied in (or as) `namespace`, so taking it back applies all.
    fn forget_namespace(&self, namespace: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|key, _| {
                let mut parts = key.splitn(3, '/');
                let (kind, ns, name) = (parts.next(), parts.next(), parts.next());
                ns != Some(namespace) && !(kind == Some("Namespace") && name == Some(namespace))
            });
        }
    }
}

/// The cache key and digest of an object as Offpeak applies it.
fn key_digest<K>(object: &K) -> Result<(String, u64)>
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.clone().unwrap_or_default(),
        object.meta().name.clone().unwrap_or_default()
    );
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(object)?.hash(&mut hasher);
    Ok((key, hasher.finish()))
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
    let (key, digest) = key_digest(object)?;
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

/// Deletes an object; one already gone is fine.
async fn delete<K>(ctx: &Context, api: Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            ctx.metrics.write("tenant_object_delete", "ok");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the namespace is the tenant's to use, creating it when it does not exist. A
/// namespace is created, never taken over: when it appeared meanwhile (the create is
/// refused as a conflict), what it is decides.
async fn claim_namespace(ctx: &Context, namespace: &str, tenant: &str) -> Result<Claim> {
    let cached = ctx.stores.namespaces.get(&ObjectRef::new(namespace));
    match tenancy::claim(namespace, cached.as_deref(), tenant) {
        Claim::Create => {}
        decided => return Ok(decided),
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api
        .create(&params, &tenancy::namespace(namespace, tenant))
        .await
    {
        Ok(_) => {
            ctx.metrics.write("tenant_object", "ok");
            Ok(Claim::Ours)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get_opt(namespace).await?;
            Ok(match tenancy::claim(namespace, existing.as_ref(), tenant) {
                // Deleted again meanwhile: the next pass creates it.
                Claim::Create => Claim::Refused(format!(
                    "namespace {namespace} is being deleted; it is created again once it is gone"
                )),
                decided => decided,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the API server enforces the namespace's quotas yet: the quota controller has
/// written each one's status for its spec, with a usage for every resource. Until then the
/// API server refuses what the quota counts ("status unknown for quota"), so the tenant's
/// people are let in after.
///
/// The quota controller counts a custom resource (count/capacityleases.offpeak.dev) only
/// once its discovery (every 30 s) found the CRD, and looks again at a quota it already
/// synced only at its full resync (every 5 minutes by default). A quota left without that
/// usage for longer than [`QUOTA_RECOUNT_AFTER`] is deleted here and created again by the
/// next pass, which makes the controller count it at once: harmless, since nobody has
/// access yet. (In a cluster whose CRDs were installed before its tenants this never
/// happens.)
async fn quotas_enforced(ctx: &Context, applied: &Applied, namespace: &str) -> Result<bool> {
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), namespace);
    for name in tenancy::RELEASED_QUOTAS {
        let Some(quota) = api.get_opt(name).await? else {
            return Ok(false);
        };
        let wanted = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
        let status = quota.status.as_ref();
        let enforced = status.and_then(|s| s.hard.as_ref());
        if wanted.is_none() || wanted != enforced {
            return Ok(false);
        }
        let used = status.and_then(|s| s.used.as_ref());
        let uncounted: Vec<&String> = wanted
            .iter()
            .flat_map(|w| w.keys())
            .filter(|k| !used.is_some_and(|u| u.contains_key(*k)))
            .collect();
        if uncounted.is_empty() {
            continue;
        }
        let age = observe::created(&quota.metadata).map(|created| Utc::now() - created);
        if age.is_some_and(|age| age > QUOTA_RECOUNT_AFTER) {
            tracing::info!(
                namespace,
                quota = name,
                ?uncounted,
                "creating the quota again so that it is counted"
            );
            delete(ctx, api.clone(), name).await?;
            applied.forget(&format!("ResourceQuota/{namespace}/{name}"));
        }
        return Ok(false);
    }
    Ok(true)
}

/// Makes one namespace the tenant's. Returns false when its people must wait for the
/// quotas to be enforced.
async fn provide(
    ctx: &Context,
    applied: &Applied,
    tenant: &Tenant,
    namespace: &str,
    leased: &Leased,
) -> Result<bool> {
    let name = tenant.name_any();
    let client = &ctx.client;
    let users: Vec<String> = tenant.spec.users.iter().map(|u| u.to_string()).collect();
    let groups: Vec<String> = tenant.spec.groups.iter().map(|g| g.to_string()).collect();
    apply(
        ctx,
        applied,
        Api::<Namespace>::all(client.clone()),
        &tenancy::namespace(namespace, &name),
    )
    .await?;
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), namespace);
    for quota in [
        tenancy::lease_quota(namespace, &name, &leased.capacity, leased.pod_slots),
        tenancy::object_quota(namespace, tenant),
        tenancy::affinity_quota(namespace, &name),
    ] {
        apply(ctx, applied, quotas.clone(), &quota).await?;
    }
    apply(
        ctx,
        applied,
        Api::<LimitRange>::namespaced(client.clone(), namespace),
        &tenancy::default_requests(namespace, &name),
    )
    .await?;
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
    for policy in tenancy::network_policies(namespace, &name) {
        apply(ctx, applied, policies.clone(), &policy).await?;
    }
    let binding = tenancy::role_binding(namespace, &name, &users, &groups);
    let (key, digest) = key_digest(&binding)?;
    if !applied.fresh(&key, digest, ctx.settings.tenant_resync)
        && !quotas_enforced(ctx, applied, namespace).await?
    {
        return Ok(false);
    }
    apply(
        ctx,
        applied,
        Api::<RoleBinding>::namespaced(client.clone(), namespace),
        &binding,
    )
    .await?;
    Ok(true)
}

/// The leases of `namespace` that hold nodes: the namespace stays confined until they
/// ended and gave their nodes back.
fn leases_holding_nodes(ctx: &Context, namespace: &str) -> Vec<String> {
    let mut names: Vec<String> = ctx
        .stores
        .leases
        .state()
        .iter()
        .filter(|l| l.namespace().as_deref() == Some(namespace))
        .filter(|l| {
            l.status.as_ref().is_some_and(|s| {
                !s.bound_nodes.is_empty()
                    || matches!(s.phase, Some(LeasePhase::Active | LeasePhase::Reclaiming))
            })
        })
        .map(|l| l.name_any())
        .collect();
    names.sort();
    names
}

/// Releases a namespace from `tenant`. Returns why it waits, if it does.
async fn release(
    ctx: &Context,
    applied: &Applied,
    namespace: &str,
    tenant: &str,
) -> Result<Option<String>> {
    let client = &ctx.client;
    // Access goes first and at once: the tenant's people never act in a namespace that is
    // no longer theirs.
    let revoked = format!("Revoked/{namespace}/{}", tenancy::TENANT_BINDING);
    if !applied.fresh(&revoked, 0, ctx.settings.tenant_resync) {
        delete(
            ctx,
            Api::<RoleBinding>::namespaced(client.clone(), namespace),
            tenancy::TENANT_BINDING,
        )
        .await?;
        applied.remember(revoked, 0);
    }
    let holding = leases_holding_nodes(ctx, namespace);
    if !holding.is_empty() {
        return Ok(Some(format!(
            "namespace {namespace} is released once its leases ended ({} still hold nodes); \
             its people's access is revoked",
            holding.join(", ")
        )));
    }
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
    for name in tenancy::RELEASED_POLICIES {
        delete(ctx, policies.clone(), name).await?;
    }
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), namespace);
    for name in tenancy::RELEASED_QUOTAS {
        delete(ctx, quotas.clone(), name).await?;
    }
    delete(
        ctx,
        Api::<LimitRange>::namespaced(client.clone(), namespace),
        tenancy::DEFAULT_REQUESTS,
    )
    .await?;
    // The labels go last: until here the confinement policy and Pod Security still hold.
    match Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(tenancy::release_patch(tenant)),
        )
        .await
    {
        Ok(_) => ctx.metrics.write("tenant_object", "ok"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    applied.forget_namespace(namespace);
    tracing::info!(namespace, tenant, "namespace released");
    Ok(None)
}

/// The namespaces Offpeak made for `tenant` (its label and Offpeak's managed-by label).
fn namespaces_of(ctx: &Context, tenant: &str) -> Vec<String> {
    let mut names: Vec<String> = ctx
        .stores
        .namespaces
        .state()
        .iter()
        .filter(|ns| {
            let labels = ns.labels();
            labels.get(TENANT).map(String::as_str) == Some(tenant)
                && labels
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str)
                    == Some("offpeak")
        })
        .map(|ns| ns.name_any())
        .collect();
    names.sort();
    names
}

/// Adds or removes the Tenant's finalizer, guarded by the list it read.
async fn set_finalizer(ctx: &Context, tenant: &Tenant, present: bool) -> Result<()> {
    let current = tenant.finalizers().to_vec();
    let has = current.iter().any(|f| f == tenancy::TENANT_FINALIZER);
    if has == present {
        return Ok(());
    }
    let wanted: Vec<String> = if present {
        current
            .iter()
            .cloned()
            .chain([tenancy::TENANT_FINALIZER.to_string()])
            .collect()
    } else {
        current
            .iter()
            .filter(|f| *f != tenancy::TENANT_FINALIZER)
            .cloned()
            .collect()
    };
    // The resourceVersion test makes it a compare-and-swap: a finalizer someone else added
    // meanwhile is never overwritten (the patch fails and the next pass reads again).
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": tenant.resource_version()},
        {"op": "add", "path": "/metadata/finalizers", "value": wanted},
    ]))?;
    let result = Api::<Tenant>::all(ctx.client.clone())
        .patch(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await;
    match result {
        Ok(_) => {
            ctx.metrics.write("tenant_finalizer", "ok");
            Ok(())
        }
        // Gone already: nothing holds it.
        Err(kube::Error::Api(s)) if s.code == 404 && !present => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[tracing::instrument(skip_all, fields(tenant = %tenant.name_any()))]
async fn reconcile(
    tenant: Arc<Tenant>,
    ctx: Arc<Context>,
    applied: Arc<Applied>,
) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("tenant");
    let name = tenant.name_any();
    let deleting = tenant.metadata.deletion_timestamp.is_some();
    if !deleting {
        set_finalizer(&ctx, &tenant, true).await?;
    }
    let wanted: BTreeSet<&str> = if deleting {
        BTreeSet::new()
    } else {
        tenant.spec.namespaces.iter().map(|n| n.as_str()).collect()
    };

    let mut conflicts = Vec::new();
    let mut waiting_for_quota = Vec::new();
    let mut active_leases = 0;
    for namespace in wanted.iter().copied() {
        match claim_namespace(&ctx, namespace, &name).await? {
            Claim::Ours => {}
            Claim::Create => continue,
            Claim::Refused(why) => {
                conflicts.push(why);
                continue;
            }
        }
        let leased = leased_capacity(&ctx, namespace);
        if !provide(&ctx, &applied, &tenant, namespace, &leased).await? {
            waiting_for_quota.push(namespace.to_string());
        }
        active_leases += leased.leases;
    }

    let mut releasing = Vec::new();
    for namespace in namespaces_of(&ctx, &name)
        .iter()
        .filter(|ns| !wanted.contains(ns.as_str()))
    {
        if let Some(why) = release(&ctx, &applied, namespace, &name).await? {
            releasing.push(why);
        }
    }
    if deleting && releasing.is_empty() {
        set_finalizer(&ctx, &tenant, false).await?;
        return Ok(Action::await_change());
    }

    let old = tenant.status.clone().unwrap_or_default();
    let (ready, reason, message) = if deleting {
        (
            false,
            "Deleting",
            "the tenant is deleted once its namespaces are released".to_string(),
        )
    } else if !conflicts.is_empty() {
        (false, "NamespaceConflict", conflicts.join("; "))
    } else if !waiting_for_quota.is_empty() {
        (
            false,
            "QuotaPending",
            format!(
                "waiting for the API server to enforce the quotas of {} before the tenant's people get access",
                waiting_for_quota.join(", ")
            ),
        )
    } else {
        (
            true,
            "NamespacesReady",
            format!(
                "{} namespace(s) ready; {active_leases} active lease(s)",
                tenant.spec.namespaces.len()
            ),
        )
    };
    let now = Utc::now();
    let generation = tenant.metadata.generation;
    let mut conds = conditions::set(
        &old.conditions,
        "Ready",
        ready,
        reason,
        &message,
        generation,
        now,
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
        generation,
        now,
    );
    let (releasing_reason, releasing_message) = if releasing.is_empty() {
        (
            "NothingToRelease",
            "no namespace waits to be released".to_string(),
        )
    } else {
        ("WaitingForLeases", releasing.join("; "))
    };
    conds = conditions::set(
        &conds,
        "Releasing",
        !releasing.is_empty(),
        releasing_reason,
        &releasing_message,
        generation,
        now,
    );
    let status = TenantStatus {
        active_leases: i32::try_from(active_leases).ok(),
        open_balance: old.open_balance.clone(),
        conditions: conds,
        observed_generation: generation,
    };
    if tenant.status.as_ref() != Some(&status) {
        let api: Api<Tenant> = Api::all(ctx.client.clone());
        let body =
            json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant", "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
        let reference = tenant.object_ref(&());
        let reason_of = |type_: &str| {
            old.conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| c.reason.clone())
        };
        if reason_of("Ready").as_deref() != Some(reason) {
            let kind = if ready {
                EventType::Normal
            } else {
                EventType::Warning
            };
            ctx.event(&reference, kind, reason, message).await;
        }
        if !releasing.is_empty() && reason_of("Releasing").as_deref() != Some(releasing_reason) {
            ctx.event(
                &reference,
                EventType::Normal,
                releasing_reason,
                releasing_message,
            )
            .await;
        }
    }
    Ok(Action::requeue(if !waiting_for_quota.is_empty() {
        WAIT
    } else if !releasing.is_empty() {
        RELEASE_WAIT.min(ctx.settings.tenant_resync)
    } else {
        ctx.settings.tenant_resync
    }))
}

/// Releases Offpeak's namespaces whose tenant no longer exists (its finalizer was removed
/// by hand, or it went while an older operator ran), every resync.
async fn release_orphans(ctx: Arc<Context>, applied: Arc<Applied>) {
    let mut tick = tokio::time::interval(ctx.settings.tenant_resync);
    loop {
        tick.tick().await;
        let tenants: BTreeSet<String> = ctx
            .stores
            .tenants
            .state()
            .iter()
            .map(|t| t.name_any())
            .collect();
        let orphans: Vec<(String, String)> = ctx
            .stores
            .namespaces
            .state()
            .iter()
            .filter(|ns| {
                ns.labels()
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str)
                    == Some("offpeak")
            })
            .filter_map(|ns| Some((ns.name_any(), ns.labels().get(TENANT)?.clone())))
            .filter(|(_, tenant)| !tenants.contains(tenant))
            .collect();
        for (namespace, tenant) in orphans {
            match release(&ctx, &applied, &namespace, &tenant).await {
                Ok(None) => {}
                Ok(Some(why)) => tracing::info!(namespace, tenant, why, "orphaned namespace waits"),
                Err(e) => {
                    tracing::warn!(namespace, tenant, error = %e, "cannot release an orphaned namespace")
                }
            }
        }
    }
}

/// What a namespace's active leases hold: their nodes' allocatable and pod slots.
struct Leased {
    capacity: Resources,
    pod_slots: i64,
    leases: usize,
}

/// The allocatable of the nodes bound to the namespace's active leases, their pod slots,
/// and how many such leases there are. Runs on every lease change of the tenant's: one
/// pass over its leases, borrowing names rather than copying them.
fn leased_capacity(ctx: &Context, namespace: &str) -> Leased {
    let leases = ctx.stores.leases.state();
    let active: Vec<&Arc<CapacityLease>> = leases
        .iter()
        .filter(|l| l.metadata.namespace.as_deref() == Some(namespace))
        .filter(|l| l.metadata.deletion_timestamp.is_none())
        .filter(|l| {
            matches!(
                l.status.as_ref().and_then(|s| s.phase),
                Some(LeasePhase::Active) | Some(LeasePhase::Reclaiming)
            )
        })
        .collect();
    let nodes: BTreeSet<&str> = active
        .iter()
        .flat_map(|l| {
            l.status
                .iter()
                .flat_map(|s| s.bound_nodes.iter().map(|n| n.as_str()))
        })
        .collect();
    let mut capacity = Resources::ZERO;
    let mut pod_slots = 0;
    for node in nodes
        .iter()
        .filter_map(|n| ctx.stores.nodes.get(&ObjectRef::new(n)))
    {
        capacity += observe::allocatable(&node).unwrap_or(Resources::ZERO);
        pod_slots += observe::pod_slots(&node);
    }
    Leased {
        capacity,
        pod_slots,
        leases: active.len(),
    }
}
