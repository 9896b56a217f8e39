//! A node's Offpeak marks as a merge patch. Node taints are an atomic list shared with other
//! writers (the node lifecycle controller, cluster autoscalers, people), so the patch keeps
//! every other taint and carries the resourceVersion the plan saw: if anyone changed the
//! node meanwhile the API server refuses it (409) and the pool is planned again from fresh
//! caches, never overwriting someone else's taint.

use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::{Value, json};

use crate::names::{IDLE_SINCE, LEASE, LEASE_NAME, RECLAIMING, TENANT};
use crate::plan::pool::NodeMarks;

/// The taint that keeps everyone but the tenant off a lent node.
pub fn tenant_taint(tenant: &str) -> Taint {
    Taint {
        key: TENANT.to_string(),
        value: Some(tenant.to_string()),
        effect: "NoSchedule".to_string(),
        time_added: None,
    }
}

/// The taint that keeps new tenant pods off a node during its lease's notice.
pub fn reclaiming_taint() -> Taint {
    Taint {
        key: RECLAIMING.to_string(),
        value: None,
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
        .filter(|t| t.key != TENANT && t.key != RECLAIMING)
        .collect()
}

/// The marks Offpeak has written on `node`.
pub fn marks(node: &Node) -> NodeMarks {
    let label = |key: &str| node.metadata.labels.as_ref()?.get(key).cloned();
    let annotation = |key: &str| node.metadata.annotations.as_ref()?.get(key).cloned();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    NodeMarks {
        lease: label(LEASE),
        lease_name: annotation(LEASE_NAME),
        tenant: label(TENANT),
        tainted_for: taints
            .iter()
            .find(|t| t.key == TENANT)
            .map(|t| t.value.clone().unwrap_or_default()),
        idle_since: annotation(IDLE_SINCE),
        reclaiming: taints.iter().any(|t| t.key == RECLAIMING),
    }
}

/// A merge patch that takes `node` to the marks `to`, locked on `resource_version`. Only
/// what differs from `from` is written; the taint list is written whole when it changes.
pub fn patch(
    node: &Node,
    resource_version: Option<&str>,
    from: &NodeMarks,
    to: &NodeMarks,
) -> Value {
    let mut labels = serde_json::Map::new();
    let mut annotations = serde_json::Map::new();
    let set = |map: &mut serde_json::Map<String, Value>,
               key: &str,
               was: &Option<String>,
               want: &Option<String>| {
        if was != want {
            map.insert(
                key.to_string(),
                want.clone().map_or(Value::Null, Value::String),
            );
        }
    };
    set(&mut labels, LEASE, &from.lease, &to.lease);
    set(&mut labels, TENANT, &from.tenant, &to.tenant);
    set(
        &mut annotations,
        LEASE_NAME,
        &from.lease_name,
        &to.lease_name,
    );
    set(
        &mut annotations,
        IDLE_SINCE,
        &from.idle_since,
        &to.idle_since,
    );
    let mut metadata = json!({ "resourceVersion": resource_version });
    if !labels.is_empty() {
        metadata["labels"] = Value::Object(labels);
    }
    if !annotations.is_empty() {
        metadata["annotations"] = Value::Object(annotations);
    }
    let mut body = json!({ "metadata": metadata });
    if from.tainted_for != to.tainted_for || from.reclaiming != to.reclaiming {
        let mut taints = other_taints(node);
        if let Some(tenant) = &to.tainted_for {
            taints.push(tenant_taint(tenant));
        }
        if to.reclaiming {
            taints.push(reclaiming_taint());
        }
        body["spec"] = json!({ "taints": taints });
    }
    body
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

    fn lent(tenant: &str) -> NodeMarks {
        NodeMarks {
            lease: Some("0b6d6a5e-7c1e-4a57-9a0e-1f2f7d3c9a10".into()),
            lease_name: Some("acme-prod/render".into()),
            tenant: Some(tenant.into()),
            tainted_for: Some(tenant.into()),
            idle_since: None,
            reclaiming: false,
        }
    }

    #[test]
    fn binding_keeps_other_taints_clears_the_idle_clock_and_locks_on_the_version() {
        let idle = NodeMarks {
            idle_since: Some("2026-11-22T20:00:00Z".into()),
            ..NodeMarks::default()
        };
        let node = node_with(vec![not_ready()]);
        let patch = patch(&node, Some("42"), &idle, &lent("acme"));
        assert_eq!(
            patch,
            json!({
                "metadata": {
                    "resourceVersion": "42",
                    "labels": {LEASE: "0b6d6a5e-7c1e-4a57-9a0e-1f2f7d3c9a10", TENANT: "acme"},
                    "annotations": {LEASE_NAME: "acme-prod/render", IDLE_SINCE: null},
                },
                "spec": {"taints": [
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
                    {"key": TENANT, "value": "acme", "effect": "NoSchedule"},
                ]},
            })
        );
    }

    #[test]
    fn a_return_takes_the_labels_first_and_the_taint_last() {
        let node = node_with(vec![not_ready(), tenant_taint("acme")]);
        let labels_off = NodeMarks {
            tainted_for: Some("acme".into()),
            ..NodeMarks::default()
        };
        let first = patch(&node, Some("42"), &lent("acme"), &labels_off);
        assert_eq!(
            first,
            json!({"metadata": {
                "resourceVersion": "42",
                "labels": {LEASE: null, TENANT: null},
                "annotations": {LEASE_NAME: null},
            }})
        );
        let back = NodeMarks {
            idle_since: Some("2026-11-22T21:00:00Z".into()),
            ..NodeMarks::default()
        };
        let last = patch(&node, Some("43"), &labels_off, &back);
        assert_eq!(
            last["spec"]["taints"],
            json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}])
        );
        assert_eq!(
            last["metadata"]["annotations"][IDLE_SINCE],
            "2026-11-22T21:00:00Z"
        );
    }

    #[test]
    fn marks_read_back_what_a_patch_writes() {
        let mut node = node_with(vec![not_ready(), tenant_taint("acme")]);
        node.metadata.labels = Some(
            [
                (LEASE.to_string(), "u1".to_string()),
                (TENANT.to_string(), "acme".to_string()),
            ]
            .into(),
        );
        node.metadata.annotations = Some([(LEASE_NAME.to_string(), "a/b".to_string())].into());
        assert_eq!(
            marks(&node),
            NodeMarks {
                lease: Some("u1".into()),
                lease_name: Some("a/b".into()),
                tenant: Some("acme".into()),
                tainted_for: Some("acme".into()),
                idle_since: None,
                reclaiming: false,
            }
        );
    }
}
