//! The objects that make a namespace a tenant's: its labels (the tenant's, and Pod Security
//! `restricted`), what the tenant's people may do there, default requests, a quota equal to
//! what the tenant leases, a quota of objects and storage, a quota that refuses pods
//! selecting other namespaces in their affinity, and NetworkPolicies that keep its traffic
//! within the tenant's namespaces; and how a namespace stops being a tenant's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
    ScopeSelector, ScopedResourceSelectorRequirement,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use offpeak_api::Tenant;

use crate::names::TENANT;
use crate::plan::resources::{Resources, format_bytes, format_cpu};

pub const TENANT_ROLE: &str = "offpeak-tenant";
pub const TENANT_BINDING: &str = "offpeak-tenant";
pub const LEASE_QUOTA: &str = "offpeak-leases";
/// Object counts and storage, from the Tenant's `spec.quota`.
pub const OBJECT_QUOTA: &str = "offpeak-objects";
/// No pod whose affinity selects pods of other namespaces (quota scope
/// CrossNamespacePodAffinity, 0 pods): a tenant's required anti-affinity across all
/// namespaces would keep everyone's pods out of a whole topology domain.
pub const AFFINITY_QUOTA: &str = "offpeak-cross-namespace-affinity";
pub const DEFAULT_REQUESTS: &str = "offpeak-defaults";
/// Every pod of the namespace: no traffic in or out but what the other policies allow.
pub const DEFAULT_DENY: &str = "offpeak-default-deny";
/// Every pod of the namespace may ask the cluster DNS.
pub const ALLOW_DNS: &str = "offpeak-allow-dns";
/// Every pod of the namespace may talk with the pods of the tenant's namespaces.
pub const ALLOW_TENANT: &str = "offpeak-allow-tenant";
/// On a Tenant: its namespaces are released before it goes.
pub const TENANT_FINALIZER: &str = "offpeak.dev/release-namespaces";
/// On a namespace a tenant no longer owns: which tenant it was released from. Only that
/// tenant may take it back; any other tenant naming it is refused (its data was the
/// first tenant's).
pub const RELEASED_FROM: &str = "offpeak.dev/released-from";
/// The Pod Security Standards version enforced: the pinned Kubernetes minor.
pub const POD_SECURITY_VERSION: &str = "v1.34";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const GPU: &str = "nvidia.com/gpu";

/// The Pod Security labels of a tenant namespace: `restricted`, enforced, warned and
/// audited, at a pinned version so a Kubernetes upgrade does not change them unseen.
pub fn pod_security_labels() -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for mode in ["enforce", "warn", "audit"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".to_string(),
        );
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            POD_SECURITY_VERSION.to_string(),
        );
    }
    labels
}

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

/// A tenant's namespace, labelled so the webhook and the policies know whose it is, and
/// enforcing Pod Security `restricted`.
pub fn namespace(name: &str, tenant: &str) -> Namespace {
    let mut metadata = managed(name, None, Some(tenant));
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(pod_security_labels());
    Namespace {
        metadata,
        ..Default::default()
    }
}

/// What a tenant naming a namespace may do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// It does not exist: create it.
    Create,
    /// It is the tenant's (its label says so, or it was released from this tenant).
    Ours,
    /// Someone else's: refused, never adopted. The reason, for the Tenant's condition.
    Refused(String),
}

/// Whether `tenant` may have `namespace` (None: no such namespace).
pub fn claim(name: &str, namespace: Option<&Namespace>, tenant: &str) -> Claim {
    let Some(namespace) = namespace else {
        return Claim::Create;
    };
    let label = |key: &str| {
        namespace
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key).cloned())
    };
    let released_from = namespace
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RELEASED_FROM).cloned());
    match (label(TENANT), released_from) {
        (Some(owner), _) if owner == tenant => Claim::Ours,
        (Some(owner), _) => Claim::Refused(format!("namespace {name} belongs to tenant {owner}")),
        (None, Some(from)) if from == tenant => Claim::Ours,
        (None, Some(from)) => Claim::Refused(format!(
            "namespace {name} was released from tenant {from} and may hold its data; \
             it is not given to another tenant"
        )),
        (None, None) => Claim::Refused(format!(
            "namespace {name} already exists and is not Offpeak's; a tenant is never given an \
             existing namespace: name another, or delete {name} first"
        )),
    }
}

/// The merge patch that makes a namespace no tenant's: Offpeak's labels go (the tenant's,
/// managed-by and Pod Security's), and it remembers whom it was released from.
pub fn release_patch(tenant: &str) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    for key in [TENANT.to_string(), MANAGED_BY.to_string()]
        .into_iter()
        .chain(pod_security_labels().into_keys())
    {
        labels.insert(key, serde_json::Value::Null);
    }
    serde_json::json!({"metadata": {
        "labels": labels,
        "annotations": {RELEASED_FROM: tenant},
    }})
}

/// The objects of a tenant namespace that go when it is released, by kind and name (the
/// RoleBinding first, at once; the rest once no lease holds nodes there).
pub const RELEASED_QUOTAS: &[&str] = &[LEASE_QUOTA, OBJECT_QUOTA, AFFINITY_QUOTA];
pub const RELEASED_POLICIES: &[&str] = &[DEFAULT_DENY, ALLOW_DNS, ALLOW_TENANT];

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

/// Object counts and storage of one tenant namespace, from the Tenant's `spec.quota`; no
/// node ports and no load balancers, whatever it says.
pub fn object_quota(namespace: &str, tenant: &Tenant) -> ResourceQuota {
    let q = &tenant.spec.quota;
    let count = |n: i32| Quantity(n.to_string());
    let hard = BTreeMap::from([
        ("count/secrets".to_string(), count(q.secrets)),
        ("count/configmaps".to_string(), count(q.config_maps)),
        ("count/services".to_string(), count(q.services)),
        ("services.nodeports".to_string(), count(0)),
        ("services.loadbalancers".to_string(), count(0)),
        (
            "count/persistentvolumeclaims".to_string(),
            count(q.persistent_volume_claims),
        ),
        (
            "count/serviceaccounts".to_string(),
            count(q.service_accounts),
        ),
        ("count/deployments.apps".to_string(), count(q.deployments)),
        (
            "count/statefulsets.apps".to_string(),
            count(q.stateful_sets),
        ),
        ("count/replicasets.apps".to_string(), count(q.replica_sets)),
        ("count/jobs.batch".to_string(), count(q.jobs)),
        ("count/cronjobs.batch".to_string(), count(q.cron_jobs)),
        (
            "count/capacityleases.offpeak.dev".to_string(),
            count(q.capacity_leases),
        ),
        (
            "requests.storage".to_string(),
            Quantity(q.storage.as_str().to_string()),
        ),
        (
            "requests.ephemeral-storage".to_string(),
            Quantity(q.ephemeral_storage.as_str().to_string()),
        ),
        (
            "limits.ephemeral-storage".to_string(),
            Quantity(q.ephemeral_storage.as_str().to_string()),
        ),
    ]);
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    ResourceQuota {
        metadata: managed(OBJECT_QUOTA, Some(namespace), Some(name)),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        status: None,
    }
}

/// No pod whose pod affinity or anti-affinity selects pods of other namespaces (the
/// confinement policy refuses them first, naming spec.affinity; this quota holds without
/// it).
pub fn affinity_quota(namespace: &str, tenant: &str) -> ResourceQuota {
    ResourceQuota {
        metadata: managed(AFFINITY_QUOTA, Some(namespace), Some(tenant)),
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([(
                "pods".to_string(),
                Quantity("0".to_string()),
            )])),
            scope_selector: Some(ScopeSelector {
                match_expressions: Some(vec![ScopedResourceSelectorRequirement {
                    scope_name: "CrossNamespacePodAffinity".to_string(),
                    operator: "Exists".to_string(),
                    values: None,
                }]),
            }),
            scopes: None,
        }),
        status: None,
    }
}

/// The NetworkPolicies of a tenant namespace. Policies only ever allow, so what is not
/// allowed here is denied: everything in and out but DNS and the tenant's own namespaces.
/// The cloud metadata address (169.254.169.254), the operator's namespace, the company's
/// namespaces, other tenants and the internet are reached by no rule. Tenants have no
/// rights on NetworkPolicies, so they cannot add any.
pub fn network_policies(namespace: &str, tenant: &str) -> Vec<NetworkPolicy> {
    let all_pods = || Some(LabelSelector::default());
    let labels = |pairs: &[(&str, &str)]| LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        match_expressions: None,
    };
    let tenant_namespaces = || NetworkPolicyPeer {
        namespace_selector: Some(labels(&[(TENANT, tenant)])),
        ..Default::default()
    };
    let policy = |name: &str, spec: NetworkPolicySpec| NetworkPolicy {
        metadata: managed(name, Some(namespace), Some(tenant)),
        spec: Some(spec),
    };
    let dns_port = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.to_string()),
        end_port: None,
    };
    vec![
        policy(
            DEFAULT_DENY,
            NetworkPolicySpec {
                pod_selector: all_pods(),
                policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
                ingress: None,
                egress: None,
            },
        ),
        policy(
            ALLOW_DNS,
            NetworkPolicySpec {
                pod_selector: all_pods(),
                policy_types: Some(vec!["Egress".to_string()]),
                ingress: None,
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(labels(&[(
                            "kubernetes.io/metadata.name",
                            "kube-system",
                        )])),
                        pod_selector: Some(labels(&[("k8s-app", "kube-dns")])),
                        ip_block: None,
                    }]),
                    ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
                }]),
            },
        ),
        policy(
            ALLOW_TENANT,
            NetworkPolicySpec {
                pod_selector: all_pods(),
                policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![tenant_namespaces()]),
                    ports: None,
                }]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![tenant_namespaces()]),
                    ports: None,
                }]),
            },
        ),
    ]
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

    /// Every (API group, resource, verb) the tenant role grants, written out: the role must
    /// grant exactly these, no wildcard, no resource names, no URLs.
    const TENANT_ALLOWLIST: &[(&str, &[&str], &[&str])] = &[
        (
            "offpeak.dev",
            &["capacityleases"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        (
            "offpeak.dev",
            &["capacityleases/status", "usagebills"],
            &["get", "list", "watch"],
        ),
        (
            "",
            &[
                "pods",
                "services",
                "configmaps",
                "secrets",
                "persistentvolumeclaims",
                "serviceaccounts",
            ],
            &[
                "get",
                "list",
                "watch",
                "create",
                "update",
                "patch",
                "delete",
                "deletecollection",
            ],
        ),
        (
            "",
            &[
                "pods/log",
                "pods/status",
                "events",
                "resourcequotas",
                "limitranges",
            ],
            &["get", "list", "watch"],
        ),
        (
            "",
            &["pods/exec", "pods/portforward", "pods/attach"],
            &["create", "get"],
        ),
        (
            "apps",
            &["deployments", "statefulsets", "replicasets"],
            &[
                "get",
                "list",
                "watch",
                "create",
                "update",
                "patch",
                "delete",
                "deletecollection",
            ],
        ),
        (
            "batch",
            &["jobs", "cronjobs"],
            &[
                "get",
                "list",
                "watch",
                "create",
                "update",
                "patch",
                "delete",
                "deletecollection",
            ],
        ),
        ("events.k8s.io", &["events"], &["get", "list", "watch"]),
    ];

    fn triples(rules: &[PolicyRule]) -> std::collections::BTreeSet<(String, String, String)> {
        let mut set = std::collections::BTreeSet::new();
        for rule in rules {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        set.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        set
    }

    #[test]
    fn the_tenant_role_grants_exactly_the_allowlist() {
        let rules = tenant_cluster_role().rules.unwrap();
        for rule in &rules {
            let words = rule
                .api_groups
                .iter()
                .flatten()
                .chain(rule.resources.iter().flatten())
                .chain(&rule.verbs);
            for word in words {
                assert!(!word.contains('*'), "a wildcard in {rule:?}");
            }
            assert!(rule.api_groups.as_ref().is_some_and(|g| !g.is_empty()));
            assert!(rule.resources.as_ref().is_some_and(|r| !r.is_empty()));
            assert_eq!(rule.resource_names, None, "{rule:?}");
            assert_eq!(rule.non_resource_urls, None, "{rule:?}");
        }
        let expected: Vec<PolicyRule> = TENANT_ALLOWLIST
            .iter()
            .map(|(group, resources, verbs)| rule(&[group], resources, verbs))
            .collect();
        assert_eq!(triples(&rules), triples(&expected));
        let role = tenant_cluster_role();
        assert_eq!(role.aggregation_rule, None);
    }

    #[test]
    fn the_namespace_enforces_pod_security_restricted_at_the_pinned_version() {
        let labels = namespace("acme-prod", "acme").metadata.labels.unwrap();
        for mode in ["enforce", "warn", "audit"] {
            assert_eq!(
                labels[&format!("pod-security.kubernetes.io/{mode}")],
                "restricted"
            );
            assert_eq!(
                labels[&format!("pod-security.kubernetes.io/{mode}-version")],
                "v1.34"
            );
        }
        assert_eq!(labels[TENANT], "acme");
        // The pinned version is the minor of the pinned Kubernetes.
        let kubernetes = offpeak_testenv::pinned_version("KUBERNETES_VERSION").unwrap();
        assert!(
            kubernetes.starts_with(&format!("{POD_SECURITY_VERSION}.")),
            "Pod Security {POD_SECURITY_VERSION} for Kubernetes {kubernetes}"
        );
    }

    fn ns(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Namespace {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        Namespace {
            metadata: ObjectMeta {
                name: Some("web".into()),
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn an_existing_namespace_is_never_adopted() {
        assert_eq!(claim("web", None, "acme"), Claim::Create);
        assert_eq!(
            claim("web", Some(&ns(&[(TENANT, "acme")], &[])), "acme"),
            Claim::Ours
        );
        let Claim::Refused(why) = claim("web", Some(&ns(&[("team", "web")], &[])), "acme") else {
            panic!("an internal namespace was adopted");
        };
        assert!(why.contains("already exists and is not Offpeak's"), "{why}");
        let Claim::Refused(why) = claim("web", Some(&ns(&[(TENANT, "globex")], &[])), "acme")
        else {
            panic!("another tenant's namespace was adopted");
        };
        assert!(why.contains("belongs to tenant globex"), "{why}");
        // Released from acme: acme may take it back, globex may not.
        let released = ns(&[], &[(RELEASED_FROM, "acme")]);
        assert_eq!(claim("web", Some(&released), "acme"), Claim::Ours);
        assert!(matches!(
            claim("web", Some(&released), "globex"),
            Claim::Refused(_)
        ));
    }

    #[test]
    fn releasing_removes_every_offpeak_label() {
        let patch = release_patch("acme");
        let labels = patch["metadata"]["labels"].as_object().unwrap();
        let mine = namespace("web", "acme").metadata.labels.unwrap();
        assert_eq!(
            labels
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            mine.keys().cloned().collect()
        );
        assert!(labels.values().all(serde_json::Value::is_null));
        assert_eq!(patch["metadata"]["annotations"][RELEASED_FROM], "acme");
    }

    fn tenant_with_quota(quota: serde_json::Value) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme"},
            "spec": {"displayName": "ACME", "namespaces": ["acme"], "allowedPools": ["general"],
                     "quota": quota},
        }))
        .unwrap()
    }

    #[test]
    fn the_object_quota_follows_the_tenant_and_never_opens_node_ports() {
        let hard = |t: &Tenant| object_quota("acme", t).spec.unwrap().hard.unwrap();
        let defaults = hard(&tenant_with_quota(serde_json::json!({})));
        assert_eq!(defaults["count/secrets"].0, "50");
        assert_eq!(defaults["count/capacityleases.offpeak.dev"].0, "50");
        assert_eq!(defaults["requests.storage"].0, "500Gi");
        assert_eq!(defaults["services.nodeports"].0, "0");
        assert_eq!(defaults["services.loadbalancers"].0, "0");
        assert_eq!(defaults.len(), 16);
        let custom = hard(&tenant_with_quota(
            serde_json::json!({"secrets": 3, "ephemeralStorage": "10Gi"}),
        ));
        assert_eq!(custom["count/secrets"].0, "3");
        assert_eq!(custom["count/configmaps"].0, "50");
        assert_eq!(custom["requests.ephemeral-storage"].0, "10Gi");
        assert_eq!(custom["limits.ephemeral-storage"].0, "10Gi");
    }

    #[test]
    fn cross_namespace_affinity_is_held_at_zero_pods() {
        let spec = affinity_quota("acme", "acme").spec.unwrap();
        assert_eq!(spec.hard.unwrap()["pods"].0, "0");
        let scope = &spec.scope_selector.unwrap().match_expressions.unwrap()[0];
        assert_eq!(scope.scope_name, "CrossNamespacePodAffinity");
        assert_eq!(scope.operator, "Exists");
    }

    #[test]
    fn network_policies_allow_dns_and_the_tenants_namespaces_only() {
        let policies = network_policies("acme-prod", "acme");
        let names: Vec<_> = policies
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, [DEFAULT_DENY, ALLOW_DNS, ALLOW_TENANT]);
        for p in &policies {
            let spec = p.spec.as_ref().unwrap();
            assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
            // No address block anywhere: the metadata address and the internet are never
            // allowed.
            let peers = spec
                .ingress
                .iter()
                .flatten()
                .flat_map(|r| r.from.iter().flatten())
                .chain(
                    spec.egress
                        .iter()
                        .flatten()
                        .flat_map(|r| r.to.iter().flatten()),
                );
            for peer in peers {
                assert_eq!(peer.ip_block, None);
                assert!(peer.namespace_selector.is_some(), "{peer:?}");
            }
        }
        let deny = policies[0].spec.as_ref().unwrap();
        assert_eq!(
            deny.policy_types.as_deref(),
            Some(&["Ingress".to_string(), "Egress".to_string()][..])
        );
        assert_eq!((deny.ingress.as_ref(), deny.egress.as_ref()), (None, None));
    }
}
