//! Marking a node lent to a lease, and returning it. Node taints are an atomic list shared
//! with other writers (the node lifecycle controller, cluster autoscalers, people), so the
//! patch keeps every other taint and carries the node's resourceVersion: if anyone changed
//! the node meanwhile the API server refuses it (409) and the controller retries from a
//! fresh read, never overwriting someone else's taint.

use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::{Value, json};

use crate::names::{LEASE, TENANT};

/// The taint that keeps everyone but the tenant off a lent node.
pub fn tenant_taint(tenant: &str) -> Taint {
    Taint {
        key: TENANT.to_string(),
        value: Some(tenant.to_string()),
        effect: "NoSchedule".to_string(),
        time_added: None,
    }
}

fn other_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != TENANT)
        .collect()
}

/// A merge patch that lends `node` to `lease_key` (`<namespace>.<name>`) of `tenant`.
pub fn bind(node: &Node, tenant: &str, lease_key: &str) -> Value {
    let mut taints = other_taints(node);
    taints.push(tenant_taint(tenant));
    json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "labels": { TENANT: tenant, LEASE: lease_key },
        },
        "spec": { "taints": taints },
    })
}

/// A merge patch that returns `node` to the pool.
pub fn unbind(node: &Node) -> Value {
    json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "labels": { TENANT: null, LEASE: null },
        },
        "spec": { "taints": other_taints(node) },
    })
}

/// The lease a node is lent to, from its label.
pub fn lease_of(node: &Node) -> Option<&str> {
    node.metadata
        .labels
        .as_ref()?
        .get(LEASE)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node_with(taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n0".into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn not_ready() -> Taint {
        Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }
    }

    #[test]
    fn binding_keeps_other_taints_and_locks_on_the_version() {
        let patch = bind(&node_with(vec![not_ready()]), "acme", "acme-prod.render");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["metadata"]["labels"][LEASE], "acme-prod.render");
        let taints = patch["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(taints[1]["key"], TENANT);
        assert_eq!(taints[1]["value"], "acme");
    }

    #[test]
    fn unbinding_removes_only_offpeaks_marks() {
        let lent = node_with(vec![not_ready(), tenant_taint("acme")]);
        let patch = unbind(&lent);
        assert_eq!(patch["metadata"]["labels"][TENANT], Value::Null);
        let taints = patch["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0]["key"], "node.kubernetes.io/not-ready");
    }

    #[test]
    fn rebinding_replaces_the_previous_tenants_taint() {
        let patch = bind(&node_with(vec![tenant_taint("globex")]), "acme", "a.b");
        let taints = patch["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0]["value"], "acme");
    }
}
