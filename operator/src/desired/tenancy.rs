//! The objects that make a namespace a tenant's: its label, what the tenant's people may do
//! there, default requests, and a quota equal to what the tenant leases.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use crate::names::TENANT;
use crate::plan::resources::{Resources, format_bytes, format_cpu};

pub const TENANT_ROLE: &str = "offpeak-tenant";
pub const TENANT_BINDING: &str = "offpeak-tenant";
pub const LEASE_QUOTA: &str = "offpeak-leases";
pub const DEFAULT_REQUESTS: &str = "offpeak-defaults";
const GPU: &str = "nvidia.com/gpu";

fn managed(name: &str, namespace: Option<&str>, tenant: Option<&str>) -> ObjectMeta {
    let mut labels = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "offpeak".to_string(),
    )]);
    if let Some(tenant) = tenant {
        labels.insert(TENANT.to_string(), tenant.to_string());
    }
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        ..Default::default()
    }
}

/// A tenant's namespace, labelled so the webhook and the policy know whose it is.
pub fn namespace(name: &str, tenant: &str) -> Namespace {
    Namespace {
        metadata: managed(name, None, Some(tenant)),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

/// What a tenant's users and groups may do in the tenant's namespaces: manage leases, read
/// bills, run ordinary workloads; read (not change) their quota and limits. Nothing
/// cluster-wide, no RBAC, no nodes.
pub fn tenant_cluster_role() -> ClusterRole {
    const READ: &[&str] = &["get", "list", "watch"];
    const ALL: &[&str] = &[
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];
    ClusterRole {
        metadata: managed(TENANT_ROLE, None, None),
        rules: Some(vec![
            rule(
                &["offpeak.dev"],
                &["capacityleases"],
                &[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ],
            ),
            rule(
                &["offpeak.dev"],
                &["capacityleases/status", "usagebills"],
                READ,
            ),
            rule(
                &[""],
                &[
                    "pods",
                    "services",
                    "configmaps",
                    "secrets",
                    "persistentvolumeclaims",
                    "serviceaccounts",
                ],
                ALL,
            ),
            rule(
                &[""],
                &[
                    "pods/log",
                    "pods/status",
                    "events",
                    "resourcequotas",
                    "limitranges",
                ],
                READ,
            ),
            rule(
                &[""],
                &["pods/exec", "pods/portforward", "pods/attach"],
                &["create", "get"],
            ),
            rule(
                &["apps"],
                &["deployments", "statefulsets", "replicasets"],
                ALL,
            ),
            rule(&["batch"], &["jobs", "cronjobs"], ALL),
            rule(&["events.k8s.io"], &["events"], READ),
        ]),
        aggregation_rule: None,
    }
}

/// Binds the tenant's users and groups to the tenant role in one namespace.
pub fn role_binding(
    namespace: &str,
    tenant: &str,
    users: &[String],
    groups: &[String],
) -> RoleBinding {
    let subject = |kind: &str, name: &String| Subject {
        kind: kind.to_string(),
        name: name.clone(),
        api_group: Some("rbac.authorization.k8s.io".to_string()),
        namespace: None,
    };
    let subjects: Vec<Subject> = users
        .iter()
        .map(|u| subject("User", u))
        .chain(groups.iter().map(|g| subject("Group", g)))
        .collect();
    RoleBinding {
        metadata: managed(TENANT_BINDING, Some(namespace), Some(tenant)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: TENANT_ROLE.to_string(),
        },
        subjects: Some(subjects),
    }
}

/// The quota equals the capacity of the namespace's active leases: their bound nodes'
/// allocatable, and pod slots.
pub fn lease_quota(
    namespace: &str,
    tenant: &str,
    leased: &Resources,
    pod_slots: i64,
) -> ResourceQuota {
    let hard = BTreeMap::from([
        (
            "requests.cpu".to_string(),
            Quantity(format_cpu(leased.cpu_millis)),
        ),
        (
            "limits.cpu".to_string(),
            Quantity(format_cpu(leased.cpu_millis)),
        ),
        (
            "requests.memory".to_string(),
            Quantity(format_bytes(leased.memory_bytes)),
        ),
        (
            "limits.memory".to_string(),
            Quantity(format_bytes(leased.memory_bytes)),
        ),
        (format!("requests.{GPU}"), Quantity(leased.gpus.to_string())),
        ("pods".to_string(), Quantity(pod_slots.to_string())),
    ]);
    ResourceQuota {
        metadata: managed(LEASE_QUOTA, Some(namespace), Some(tenant)),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        status: None,
    }
}

/// Default requests and limits, so pods that state none still count against the quota
/// instead of being refused by it.
pub fn default_requests(namespace: &str, tenant: &str) -> LimitRange {
    let amounts = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    LimitRange {
        metadata: managed(DEFAULT_REQUESTS, Some(namespace), Some(tenant)),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_string(),
                default_request: Some(amounts("100m", "128Mi")),
                default: Some(amounts("1", "1Gi")),
                ..Default::default()
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_follows_the_leased_capacity() {
        let q = lease_quota("acme", "acme", &Resources::new(32_000, 128 << 30, 4), 220);
        let hard = q.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"].0, "32");
        assert_eq!(hard["requests.memory"].0, "128Gi");
        assert_eq!(hard["requests.nvidia.com/gpu"].0, "4");
        assert_eq!(hard["pods"].0, "220");
        // No lease: nothing may run.
        let empty = lease_quota("acme", "acme", &Resources::ZERO, 0)
            .spec
            .unwrap()
            .hard
            .unwrap();
        assert!(empty.values().all(|q| q.0 == "0"), "{empty:?}");
    }

    #[test]
    fn the_binding_names_every_user_and_group() {
        let b = role_binding(
            "acme-prod",
            "acme",
            &["alice".into()],
            &["tenant-acme".into()],
        );
        let subjects = b.subjects.unwrap();
        assert_eq!(subjects.len(), 2);
        assert_eq!(
            (subjects[0].kind.as_str(), subjects[0].name.as_str()),
            ("User", "alice")
        );
        assert_eq!(
            (subjects[1].kind.as_str(), subjects[1].name.as_str()),
            ("Group", "tenant-acme")
        );
        assert_eq!(b.role_ref.name, TENANT_ROLE);
    }

    #[test]
    fn tenants_get_no_rbac_node_or_cluster_rights() {
        for rule in tenant_cluster_role().rules.unwrap() {
            let resources = rule.resources.unwrap_or_default();
            for forbidden in [
                "nodes",
                "roles",
                "rolebindings",
                "namespaces",
                "tenants",
                "capacitypools",
            ] {
                assert!(
                    !resources.iter().any(|r| r == forbidden),
                    "tenants may not touch {forbidden}"
                );
            }
            if resources
                .iter()
                .any(|r| r == "usagebills" || r == "resourcequotas")
            {
                assert!(
                    rule.verbs
                        .iter()
                        .all(|v| ["get", "list", "watch"].contains(&v.as_str()))
                );
            }
        }
    }
}
