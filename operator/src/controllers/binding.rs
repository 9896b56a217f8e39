//! Lending nodes to a lease and taking them back, and writing a lease's status. Shared by
//! the pool controller (admission, term ends) and the lease controller (deletion).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, EvictParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use offpeak_api::{CapacityLease, CapacityLeaseStatus};
use serde_json::json;

use super::Context;
use crate::desired::binding;
use crate::error::Result;
use crate::names::{FIELD_MANAGER, TENANT};

/// Lends each node to the lease. A node that changed since it was read is refused by the
/// API server (409): the caller re-decides from fresh caches.
pub async fn bind_nodes(
    ctx: &Context,
    nodes: &[String],
    tenant: &str,
    lease_key: &str,
) -> Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    for name in nodes {
        let node = ctx.stores.nodes.get(&ObjectRef::new(name)).ok_or_else(|| {
            crate::error::Error::Spec {
                object: format!("node {name}"),
                message: "is gone".into(),
            }
        })?;
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(binding::bind(&node, tenant, lease_key)),
        )
        .await?;
    }
    Ok(())
}

/// Takes the nodes back: first the tenant's pods on them are evicted, then, once none is
/// left, the nodes lose the lease's label and taint. Returns whether every node is back.
pub async fn return_nodes(ctx: &Context, nodes: &BTreeSet<String>) -> Result<bool> {
    let tenant_pods: Vec<(String, String)> = ctx
        .stores
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| nodes.contains(n))
        })
        .filter(|p| is_tenant_namespace(ctx, p.metadata.namespace.as_deref().unwrap_or_default()))
        .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    if !tenant_pods.is_empty() {
        for (namespace, name) in &tenant_pods {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            match pods.evict(name, &EvictParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(false);
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    for name in nodes {
        if let Some(node) = ctx.stores.nodes.get(&ObjectRef::new(name))
            && binding::lease_of(&node).is_some()
        {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(binding::unbind(&node)),
            )
            .await?;
        }
    }
    Ok(true)
}

fn is_tenant_namespace(ctx: &Context, namespace: &str) -> bool {
    ctx.stores
        .namespaces
        .get(&ObjectRef::new(namespace))
        .is_some_and(|ns| ns.labels().contains_key(TENANT))
}

/// Writes the lease's status when it differs from what is stored (a steady state writes
/// nothing).
pub async fn write_status(
    ctx: &Context,
    lease: &CapacityLease,
    status: CapacityLeaseStatus,
) -> Result<bool> {
    if lease.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let api: Api<CapacityLease> =
        Api::namespaced(ctx.client.clone(), &lease.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": "offpeak.dev/v1alpha1",
        "kind": "CapacityLease",
        "status": status,
    });
    api.patch_status(
        &lease.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(true)
}
