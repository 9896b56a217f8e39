//! The cluster objects that confine tenants: ValidatingAdmissionPolicies the API server
//! enforces with CEL (no webhook round trip, so they hold even when the operator is down),
//! the MutatingWebhookConfigurations that send pods to the operator, and the tenant
//! PriorityClass.
//!
//! - `offpeak-tenant-confinement`: tenant pods stay on their tenant's nodes and meet Pod
//!   Security `restricted` (no privilege, no host namespaces, ports or paths, only
//!   restricted's volume types and capabilities, non-root, seccomp), repeated here beside
//!   the namespace's Pod Security label so that a cluster-wide Pod Security exemption
//!   (by user, runtime class or namespace) cannot open a tenant namespace; and they select
//!   pods of their own namespace only in pod (anti-)affinity.
//! - `offpeak-tenant-services`: tenant Services have no externalIPs and are neither
//!   NodePort nor LoadBalancer.
//! - `offpeak-internal-pods-off-lent-nodes`, with the `offpeak-internal-pods` webhook:
//!   internal pods that tolerate the lent nodes' taint (a toleration without a key, or of
//!   `offpeak.dev/tenant`) are *steered*: the webhook adds the required node affinity
//!   `offpeak.dev/tenant DoesNotExist`, so the scheduler and the kubelet keep them off lent
//!   nodes, and the policy refuses such a pod when it arrives without that affinity (the
//!   webhook was away: its failure policy is Ignore, so internal pods never wait for the
//!   operator, and the policy fails closed for these few pods only). DaemonSet pods and
//!   mirror pods are left alone: a lent node needs its DaemonSets.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, MutatingWebhook, MutatingWebhookConfiguration, NamedRuleWithOperations,
    RuleWithOperations, ServiceReference, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable, WebhookClientConfig,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::ObjectMeta;

use k8s_openapi::api::admissionregistration::v1::MatchCondition;

use crate::names::{
    CONFINEMENT_POLICY, CONFINEMENT_WEBHOOK, LEASE_WEBHOOK, TENANT, TENANT_PREEMPTION,
    TENANT_PRIORITY, TENANT_PRIORITY_CLASS,
};

/// The ValidatingAdmissionPolicy (and binding) that keeps tenant Services inside the cluster.
pub const SERVICES_POLICY: &str = "offpeak-tenant-services";
/// The ValidatingAdmissionPolicy (and binding) that refuses internal pods that could land
/// on a lent node.
pub const INTERNAL_PODS_POLICY: &str = "offpeak-internal-pods-off-lent-nodes";
/// The MutatingWebhookConfiguration that steers internal pods off lent nodes.
pub const INTERNAL_PODS_WEBHOOK: &str = "offpeak-internal-pods";

/// Volume types Pod Security `restricted` allows.
pub const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls Pod Security `baseline` (and so `restricted`) allows at v1.34.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// SELinux types Pod Security `baseline` allows.
pub const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "offpeak".to_string(),
        )])),
        ..Default::default()
    }
}

/// Namespaces that belong to a tenant.
fn tenant_namespaces() -> LabelSelector {
    namespaces_where(TENANT, "Exists")
}

/// Namespaces that belong to no tenant.
fn internal_namespaces() -> LabelSelector {
    namespaces_where(TENANT, "DoesNotExist")
}

fn namespaces_where(key: &str, operator: &str) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values: None,
        }]),
        match_labels: None,
    }
}

/// A CEL list literal of strings.
fn cel_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}

fn variable(name: &str, expression: &str) -> Variable {
    Variable {
        name: name.to_string(),
        expression: expression.to_string(),
    }
}

fn matching(resources: &[&str], operations: &[&str]) -> MatchResources {
    MatchResources {
        resource_rules: Some(vec![NamedRuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".to_string()]),
            operations: Some(operations.iter().map(|o| o.to_string()).collect()),
            resources: Some(resources.iter().map(|r| r.to_string()).collect()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn binding(policy: &str, namespaces: LabelSelector) -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: meta(policy),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(policy.to_string()),
            validation_actions: Some(vec!["Deny".to_string()]),
            match_resources: Some(MatchResources {
                namespace_selector: Some(namespaces),
                ..Default::default()
            }),
            param_ref: None,
        }),
    }
}

fn rule(expression: &str, message: &str) -> Validation {
    Validation {
        expression: expression.to_string(),
        message: Some(message.to_string()),
        reason: Some("Forbidden".to_string()),
        message_expression: None,
    }
}

/// A CEL test that a pod tolerates the NoSchedule taint of lent nodes (`pod` is `object`
/// or `oldObject`): a toleration without a key and operator Exists, or one of the
/// `offpeak.dev/tenant` key, with no effect or NoSchedule.
fn tolerates_lent_nodes(pod: &str) -> String {
    format!(
        "has({pod}.spec.tolerations) && {pod}.spec.tolerations.exists(t, \
         (!has(t.effect) || t.effect == '' || t.effect == 'NoSchedule') && \
         (((!has(t.key) || t.key == '') && has(t.operator) && t.operator == 'Exists') || \
         (has(t.key) && t.key == '{TENANT}')))"
    )
}

/// A CEL test that the pod is managed by a DaemonSet or is a kubelet's mirror pod.
const DAEMON_OR_MIRROR: &str = "(has(object.metadata.ownerReferences) && \
    object.metadata.ownerReferences.exists(o, o.kind == 'DaemonSet' && o.apiVersion == 'apps/v1' && has(o.controller) && o.controller)) || \
    (has(object.metadata.annotations) && 'kubernetes.io/config.mirror' in object.metadata.annotations)";

/// The rules of Pod Security `restricted` (v1.34) that matter for a tenant, in CEL over
/// `variables.containers` (containers, init containers and ephemeral containers).
fn pod_security_rules() -> Vec<Validation> {
    let sc = "object.spec.securityContext";
    let volumes = RESTRICTED_VOLUMES
        .iter()
        .map(|v| format!("has(v.{v})"))
        .collect::<Vec<_>>()
        .join(" || ");
    vec![
        rule(
            "!has(object.spec.hostNetwork) || !object.spec.hostNetwork",
            "spec.hostNetwork: tenant pods may not use the host's network namespace",
        ),
        rule(
            "!has(object.spec.hostPID) || !object.spec.hostPID",
            "spec.hostPID: tenant pods may not use the host's process namespace",
        ),
        rule(
            "!has(object.spec.hostIPC) || !object.spec.hostIPC",
            "spec.hostIPC: tenant pods may not use the host's IPC namespace",
        ),
        rule(
            "variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.privileged) || !c.securityContext.privileged)",
            "spec.containers[*].securityContext.privileged: tenant containers (init and ephemeral ones too) may not be privileged",
        ),
        rule(
            "variables.containers.all(c, !has(c.ports) || c.ports.all(p, !has(p.hostPort) || p.hostPort == 0))",
            "spec.containers[*].ports[*].hostPort: tenant containers may not open ports on the host",
        ),
        rule(
            "!has(object.spec.volumes) || object.spec.volumes.all(v, !has(v.hostPath))",
            "spec.volumes[*].hostPath: tenant pods may not mount the host's files",
        ),
        Validation {
            expression: format!(
                "!has(object.spec.volumes) || object.spec.volumes.all(v, {volumes})"
            ),
            message: Some(format!(
                "spec.volumes[*]: tenant pods may use only {} volumes (Pod Security restricted)",
                RESTRICTED_VOLUMES.join(", ")
            )),
            message_expression: Some(format!(
                "'spec.volumes[' + string(object.spec.volumes.filter(v, !({volumes}))[0].name) + ']: tenant pods may use only {} volumes (Pod Security restricted)'",
                RESTRICTED_VOLUMES.join(", ")
            )),
            reason: Some("Forbidden".to_string()),
        },
        rule(
            "variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.capabilities) || !has(c.securityContext.capabilities.add) || c.securityContext.capabilities.add.all(a, a == 'NET_BIND_SERVICE'))",
            "spec.containers[*].securityContext.capabilities.add: tenant containers may add only NET_BIND_SERVICE",
        ),
        rule(
            "variables.containers.all(c, has(c.securityContext) && has(c.securityContext.capabilities) && has(c.securityContext.capabilities.drop) && c.securityContext.capabilities.drop.exists(d, d == 'ALL'))",
            "spec.containers[*].securityContext.capabilities.drop: tenant containers must drop ALL capabilities",
        ),
        rule(
            "variables.containers.all(c, has(c.securityContext) && has(c.securityContext.allowPrivilegeEscalation) && !c.securityContext.allowPrivilegeEscalation)",
            "spec.containers[*].securityContext.allowPrivilegeEscalation: tenant containers must set it to false",
        ),
        rule(
            &format!(
                "(!has({sc}) || !has({sc}.runAsUser) || {sc}.runAsUser != 0) && \
                 variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.runAsUser) || c.securityContext.runAsUser != 0)"
            ),
            "spec.securityContext.runAsUser: tenant pods and containers may not run as UID 0 (root)",
        ),
        rule(
            &format!(
                "(has({sc}) && has({sc}.runAsNonRoot) && {sc}.runAsNonRoot) ? \
                 variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.runAsNonRoot) || c.securityContext.runAsNonRoot) : \
                 variables.containers.all(c, has(c.securityContext) && has(c.securityContext.runAsNonRoot) && c.securityContext.runAsNonRoot)"
            ),
            "spec.securityContext.runAsNonRoot: tenant pods must run as non-root (true for the pod, or for every container, and false for none)",
        ),
        rule(
            &format!(
                "(has({sc}) && has({sc}.seccompProfile) && {sc}.seccompProfile.type in ['RuntimeDefault', 'Localhost']) ? \
                 variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.seccompProfile) || c.securityContext.seccompProfile.type in ['RuntimeDefault', 'Localhost']) : \
                 variables.containers.all(c, has(c.securityContext) && has(c.securityContext.seccompProfile) && c.securityContext.seccompProfile.type in ['RuntimeDefault', 'Localhost'])"
            ),
            "spec.securityContext.seccompProfile.type: tenant pods must run with seccomp RuntimeDefault or Localhost (for the pod, or for every container), and no container Unconfined",
        ),
        rule(
            &format!(
                "(!has({sc}) || !has({sc}.appArmorProfile) || {sc}.appArmorProfile.type != 'Unconfined') && \
                 variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.appArmorProfile) || c.securityContext.appArmorProfile.type != 'Unconfined')"
            ),
            "spec.securityContext.appArmorProfile.type: tenant pods and containers may not run AppArmor Unconfined",
        ),
        rule(
            "!has(object.metadata.annotations) || object.metadata.annotations.all(k, !k.startsWith('container.apparmor.security.beta.kubernetes.io/') || object.metadata.annotations[k] == 'runtime/default' || object.metadata.annotations[k].startsWith('localhost/'))",
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/*]: tenant containers may use only runtime/default or localhost/ AppArmor profiles",
        ),
        rule(
            &format!(
                "(!has({sc}) || !has({sc}.seLinuxOptions) || (!has({sc}.seLinuxOptions.user) && !has({sc}.seLinuxOptions.role) && (!has({sc}.seLinuxOptions.type) || {sc}.seLinuxOptions.type == '' || {sc}.seLinuxOptions.type in {types}))) && \
                 variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.seLinuxOptions) || (!has(c.securityContext.seLinuxOptions.user) && !has(c.securityContext.seLinuxOptions.role) && (!has(c.securityContext.seLinuxOptions.type) || c.securityContext.seLinuxOptions.type == '' || c.securityContext.seLinuxOptions.type in {types})))",
                types = cel_list(SELINUX_TYPES)
            ),
            "spec.securityContext.seLinuxOptions: tenant pods may not set an SELinux user or role, and only a container_* type",
        ),
        rule(
            "variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.procMount) || c.securityContext.procMount == 'Default')",
            "spec.containers[*].securityContext.procMount: tenant containers keep the default (masked) /proc",
        ),
        rule(
            &format!(
                "!has({sc}) || !has({sc}.sysctls) || {sc}.sysctls.all(s, s.name in {})",
                cel_list(SAFE_SYSCTLS)
            ),
            "spec.securityContext.sysctls: tenant pods may set only the safe sysctls of Pod Security baseline",
        ),
        rule(
            &format!(
                "(!has({sc}) || !has({sc}.windowsOptions) || !has({sc}.windowsOptions.hostProcess) || !{sc}.windowsOptions.hostProcess) && \
                 variables.containers.all(c, !has(c.securityContext) || !has(c.securityContext.windowsOptions) || !has(c.securityContext.windowsOptions.hostProcess) || !c.securityContext.windowsOptions.hostProcess)"
            ),
            "spec.securityContext.windowsOptions.hostProcess: tenant pods may not run as host processes",
        ),
        rule(
            "object.spec.containers.all(c, has(c.imagePullPolicy) && c.imagePullPolicy == 'Always') && \
             (!has(object.spec.initContainers) || object.spec.initContainers.all(c, has(c.imagePullPolicy) && c.imagePullPolicy == 'Always'))",
            "spec.containers[*].imagePullPolicy: tenant containers pull their images every time (Always), so no tenant runs another's cached private image",
        ),
        rule(
            "!has(object.spec.runtimeClassName) || object.spec.runtimeClassName == ''",
            "spec.runtimeClassName: tenant pods run in the node's default runtime (no runtime class is offered to tenants)",
        ),
        rule(
            "variables.affinityTerms.all(t, !has(t.namespaceSelector) && (!has(t.namespaces) || t.namespaces.all(n, n == request.namespace)))",
            "spec.affinity: tenant pods' podAffinity and podAntiAffinity terms may select pods of their own namespace only (no namespaces, no namespaceSelector)",
        ),
    ]
}

pub fn confinement_policy() -> ValidatingAdmissionPolicy {
    let tenant_key = TENANT;
    let affinity = |kind: &str| {
        format!(
            "(has(object.spec.affinity) && has(object.spec.affinity.{kind}) && has(object.spec.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution) ? \
             object.spec.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution : []) + \
             (has(object.spec.affinity) && has(object.spec.affinity.{kind}) && has(object.spec.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution) ? \
             object.spec.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution.map(w, w.podAffinityTerm) : [])"
        )
    };
    let mut validations = vec![
        rule(
            "request.operation != 'CREATE' || !has(object.spec.nodeName) || object.spec.nodeName == ''",
            "spec.nodeName: tenant pods may not name a node; the scheduler places them on the tenant's leased nodes",
        ),
        rule(
            &format!(
                "has(object.spec.nodeSelector) && '{tenant_key}' in object.spec.nodeSelector && \
                 object.spec.nodeSelector['{tenant_key}'] == variables.tenant"
            ),
            &format!(
                "spec.nodeSelector['{tenant_key}']: tenant pods run only on their own tenant's leased nodes"
            ),
        ),
        rule(
            "variables.tolerations.all(t, (has(t.key) && t.key != '') || !has(t.operator) || t.operator != 'Exists')",
            "spec.tolerations: a toleration without a key tolerates every taint, other tenants' included; name the taint",
        ),
        rule(
            &format!(
                "variables.tolerations.all(t, !has(t.key) || t.key != '{tenant_key}' || \
                 (has(t.value) && t.value == variables.tenant))"
            ),
            &format!(
                "spec.tolerations: tenant pods may tolerate only their own tenant's '{tenant_key}' taint"
            ),
        ),
        rule(
            &format!(
                "has(object.spec.priorityClassName) && object.spec.priorityClassName == '{TENANT_PRIORITY_CLASS}'"
            ),
            &format!(
                "spec.priorityClassName: tenant pods run at priority class {TENANT_PRIORITY_CLASS}"
            ),
        ),
    ];
    validations.extend(pod_security_rules());
    ValidatingAdmissionPolicy {
        metadata: meta(CONFINEMENT_POLICY),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_string()),
            match_constraints: Some(matching(
                &["pods", "pods/ephemeralcontainers"],
                &["CREATE", "UPDATE"],
            )),
            variables: Some(vec![
                variable(
                    "tenant",
                    &format!("namespaceObject.metadata.labels['{tenant_key}']"),
                ),
                variable(
                    "tolerations",
                    "has(object.spec.tolerations) ? object.spec.tolerations : []",
                ),
                variable(
                    "containers",
                    "object.spec.containers + \
                     (has(object.spec.initContainers) ? object.spec.initContainers : []) + \
                     (has(object.spec.ephemeralContainers) ? object.spec.ephemeralContainers : [])",
                ),
                variable(
                    "affinityTerms",
                    &format!(
                        "{} + {}",
                        affinity("podAffinity"),
                        affinity("podAntiAffinity")
                    ),
                ),
            ]),
            validations: Some(validations),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn confinement_binding() -> ValidatingAdmissionPolicyBinding {
    binding(CONFINEMENT_POLICY, tenant_namespaces())
}

/// Tenant Services stay inside the cluster: no external IPs, no node ports, no load
/// balancers (the objects quota also holds services.nodeports and
/// services.loadbalancers at 0).
pub fn services_policy() -> ValidatingAdmissionPolicy {
    ValidatingAdmissionPolicy {
        metadata: meta(SERVICES_POLICY),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_string()),
            match_constraints: Some(matching(&["services"], &["CREATE", "UPDATE"])),
            validations: Some(vec![
                rule(
                    "!has(object.spec.externalIPs) || size(object.spec.externalIPs) == 0",
                    "spec.externalIPs: tenant Services may not claim external IPs",
                ),
                rule(
                    "!has(object.spec.type) || object.spec.type != 'NodePort'",
                    "spec.type: tenant Services may not be NodePort (it opens a port on every node); use ClusterIP",
                ),
                rule(
                    "!has(object.spec.type) || object.spec.type != 'LoadBalancer'",
                    "spec.type: tenant Services may not be LoadBalancer; use ClusterIP",
                ),
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn services_binding() -> ValidatingAdmissionPolicyBinding {
    binding(SERVICES_POLICY, tenant_namespaces())
}

/// The CEL test that an internal pod needs steering: it tolerates the lent nodes' taint
/// and is neither a DaemonSet's nor a mirror pod. The webhook's match condition.
pub fn needs_steering() -> String {
    format!(
        "({}) && !({DAEMON_OR_MIRROR})",
        tolerates_lent_nodes("object")
    )
}

/// Refuses an internal pod that tolerates the lent nodes' taint without requiring a node
/// that is not lent (the steering webhook adds that requirement; this holds when it is
/// away). On update, only a toleration added then is refused: pods admitted before keep
/// working.
pub fn internal_pods_policy() -> ValidatingAdmissionPolicy {
    let steered = format!(
        "has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity) && \
         has(object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution) && \
         object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.all(t, \
         has(t.matchExpressions) && t.matchExpressions.exists(e, e.key == '{TENANT}' && e.operator == 'DoesNotExist'))"
    );
    ValidatingAdmissionPolicy {
        metadata: meta(INTERNAL_PODS_POLICY),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_string()),
            match_constraints: Some(matching(&["pods"], &["CREATE", "UPDATE"])),
            match_conditions: Some(vec![MatchCondition {
                name: "tolerates-lent-nodes".to_string(),
                expression: needs_steering(),
            }]),
            variables: Some(vec![variable(
                "toleratedBefore",
                &format!(
                    "request.operation == 'UPDATE' && {}",
                    tolerates_lent_nodes("oldObject")
                ),
            )]),
            validations: Some(vec![rule(
                &format!("variables.toleratedBefore || ({steered})"),
                &format!(
                    "spec.affinity.nodeAffinity: a pod outside tenant namespaces that tolerates the '{TENANT}' taint \
                     must require node affinity '{TENANT}' DoesNotExist, so it never runs on a node lent to a tenant \
                     (Offpeak's {INTERNAL_PODS_WEBHOOK} webhook adds it; it was not reached)"
                ),
            )]),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn internal_pods_binding() -> ValidatingAdmissionPolicyBinding {
    binding(INTERNAL_PODS_POLICY, internal_namespaces())
}

/// Where the API server reaches the operator's webhook.
#[derive(Clone, Debug)]
pub enum WebhookEndpoint {
    /// A URL, for an operator outside the cluster (tests, the demo).
    Url(String),
    /// A Service in the cluster (the Helm chart).
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
}

pub const MUTATE_PODS_PATH: &str = "/mutate-tenant-pods";

/// Where the API server sends admission reviews of `path`.
fn client_config(endpoint: &WebhookEndpoint, ca_pem: &str, path: &str) -> WebhookClientConfig {
    match endpoint {
        WebhookEndpoint::Url(base) => WebhookClientConfig {
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            service: None,
        },
        WebhookEndpoint::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            url: None,
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(path.to_string()),
                port: Some(*port),
            }),
        },
    }
}

/// The rule both pod webhooks match: pods being created.
fn pod_creation() -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![String::new()]),
        api_versions: Some(vec!["v1".to_string()]),
        operations: Some(vec!["CREATE".to_string()]),
        resources: Some(vec!["pods".to_string()]),
        scope: Some("Namespaced".to_string()),
    }
}

pub fn confinement_webhook(
    endpoint: &WebhookEndpoint,
    ca_pem: &str,
) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: meta(CONFINEMENT_WEBHOOK),
        webhooks: Some(vec![MutatingWebhook {
            name: "tenant-pods.offpeak.dev".to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config(endpoint, ca_pem, MUTATE_PODS_PATH),
            failure_policy: Some("Fail".to_string()),
            side_effects: "None".to_string(),
            namespace_selector: Some(tenant_namespaces()),
            rules: Some(vec![pod_creation()]),
            timeout_seconds: Some(5),
            reinvocation_policy: Some("IfNeeded".to_string()),
            ..Default::default()
        }]),
    }
}

pub const STEER_INTERNAL_PODS_PATH: &str = "/steer-internal-pods";

/// Internal pods that tolerate the lent nodes' taint go to the operator, which adds the
/// node affinity that keeps them off lent nodes. Only those pods are sent (a match
/// condition), and a pod is never held up by an absent operator (failurePolicy Ignore):
/// the internal pods policy then refuses it instead of letting it reach a lent node.
pub fn internal_pods_webhook(
    endpoint: &WebhookEndpoint,
    ca_pem: &str,
) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: meta(INTERNAL_PODS_WEBHOOK),
        webhooks: Some(vec![MutatingWebhook {
            name: "internal-pods.offpeak.dev".to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config(endpoint, ca_pem, STEER_INTERNAL_PODS_PATH),
            failure_policy: Some("Ignore".to_string()),
            side_effects: "None".to_string(),
            namespace_selector: Some(internal_namespaces()),
            match_conditions: Some(vec![MatchCondition {
                name: "tolerates-lent-nodes".to_string(),
                expression: needs_steering(),
            }]),
            rules: Some(vec![pod_creation()]),
            timeout_seconds: Some(5),
            reinvocation_policy: Some("IfNeeded".to_string()),
            ..Default::default()
        }]),
    }
}

pub const MUTATE_LEASES_PATH: &str = "/mutate-leases";

/// New leases get the finalizer that makes their nodes come back before they go, as they
/// are created: one write less per lease than adding it afterwards. When the webhook is
/// unreachable the lease is created without it (failurePolicy Ignore) and the pool pass
/// adds it before the lease can be admitted.
pub fn lease_webhook(endpoint: &WebhookEndpoint, ca_pem: &str) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: meta(LEASE_WEBHOOK),
        webhooks: Some(vec![MutatingWebhook {
            name: "leases.offpeak.dev".to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config(endpoint, ca_pem, MUTATE_LEASES_PATH),
            failure_policy: Some("Ignore".to_string()),
            side_effects: "None".to_string(),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["offpeak.dev".to_string()]),
                api_versions: Some(vec!["v1alpha1".to_string()]),
                operations: Some(vec!["CREATE".to_string()]),
                resources: Some(vec!["capacityleases".to_string()]),
                scope: Some("Namespaced".to_string()),
            }]),
            timeout_seconds: Some(2),
            ..Default::default()
        }]),
    }
}

pub fn tenant_priority_class() -> PriorityClass {
    PriorityClass {
        metadata: meta(TENANT_PRIORITY_CLASS),
        value: TENANT_PRIORITY,
        global_default: Some(false),
        preemption_policy: Some(TENANT_PREEMPTION.to_string()),
        description: Some(
            "Pods of Offpeak tenants: below every internal workload, never preempting.".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_message_that_names_its_field() {
        for policy in [
            confinement_policy(),
            services_policy(),
            internal_pods_policy(),
        ] {
            for v in policy.spec.unwrap().validations.unwrap() {
                let message = v.message.unwrap();
                assert!(
                    message.starts_with("spec.") || message.starts_with("metadata."),
                    "{message}"
                );
                if let Some(expression) = v.message_expression {
                    assert!(expression.starts_with("'spec."), "{expression}");
                }
            }
        }
    }

    #[test]
    fn the_pod_rules_cover_pod_security_restricted() {
        let policy = confinement_policy();
        let messages: Vec<String> = policy
            .spec
            .unwrap()
            .validations
            .unwrap()
            .into_iter()
            .filter_map(|v| v.message)
            .collect();
        for field in [
            "spec.hostNetwork:",
            "spec.hostPID:",
            "spec.hostIPC:",
            "securityContext.privileged:",
            "hostPort:",
            "spec.volumes[*].hostPath:",
            "spec.volumes[*]:",
            "capabilities.add:",
            "capabilities.drop:",
            "allowPrivilegeEscalation:",
            "runAsUser:",
            "runAsNonRoot:",
            "seccompProfile.type:",
            "appArmorProfile.type:",
            "container.apparmor.security.beta.kubernetes.io/*]:",
            "seLinuxOptions:",
            "procMount:",
            "sysctls:",
            "hostProcess:",
            "spec.runtimeClassName:",
            "spec.affinity:",
            "imagePullPolicy:",
        ] {
            assert!(
                messages.iter().any(|m| m.contains(field)),
                "no rule names {field}"
            );
        }
    }

    #[test]
    fn internal_pods_are_steered_where_they_are_not_tenants() {
        let hook = internal_pods_webhook(&WebhookEndpoint::Url("https://h".into()), "PEM");
        let webhook = &hook.webhooks.unwrap()[0];
        assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(
            webhook.namespace_selector.as_ref(),
            Some(&internal_namespaces())
        );
        let binding = internal_pods_binding();
        assert_eq!(
            binding
                .spec
                .unwrap()
                .match_resources
                .unwrap()
                .namespace_selector,
            Some(internal_namespaces())
        );
        assert!(needs_steering().contains("DaemonSet"));
    }

    #[test]
    fn the_webhook_points_at_the_url_with_the_ca() {
        let hook = confinement_webhook(
            &WebhookEndpoint::Url("https://127.0.0.1:9443/".into()),
            "PEM",
        );
        let webhook = &hook.webhooks.unwrap()[0];
        assert_eq!(
            webhook.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/mutate-tenant-pods")
        );
        assert_eq!(
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.as_slice()),
            Some(&b"PEM"[..])
        );
    }
}
