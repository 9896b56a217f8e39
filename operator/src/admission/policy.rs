//! The cluster objects that confine tenant pods: a ValidatingAdmissionPolicy the API server
//! enforces with CEL (no webhook round trip, so it holds even when the operator is down),
//! the MutatingWebhookConfiguration that sends tenant pods to the operator for placement,
//! and the tenant PriorityClass.

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

use crate::names::{
    CONFINEMENT_POLICY, CONFINEMENT_WEBHOOK, LEASE_WEBHOOK, TENANT, TENANT_PREEMPTION,
    TENANT_PRIORITY, TENANT_PRIORITY_CLASS,
};

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
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: TENANT.to_string(),
            operator: "Exists".to_string(),
            values: None,
        }]),
        match_labels: None,
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

pub fn confinement_policy() -> ValidatingAdmissionPolicy {
    let tenant_key = TENANT;
    ValidatingAdmissionPolicy {
        metadata: meta(CONFINEMENT_POLICY),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_string()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".to_string()]),
                    operations: Some(vec!["CREATE".to_string(), "UPDATE".to_string()]),
                    resources: Some(vec!["pods".to_string()]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            variables: Some(vec![
                Variable {
                    name: "tenant".to_string(),
                    expression: format!("namespaceObject.metadata.labels['{tenant_key}']"),
                },
                Variable {
                    name: "tolerations".to_string(),
                    expression: "has(object.spec.tolerations) ? object.spec.tolerations : []"
                        .to_string(),
                },
            ]),
            validations: Some(vec![
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
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn confinement_binding() -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: meta(CONFINEMENT_POLICY),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(CONFINEMENT_POLICY.to_string()),
            validation_actions: Some(vec!["Deny".to_string()]),
            match_resources: Some(MatchResources {
                namespace_selector: Some(tenant_namespaces()),
                ..Default::default()
            }),
            param_ref: None,
        }),
    }
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
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_string()]),
                operations: Some(vec!["CREATE".to_string()]),
                resources: Some(vec!["pods".to_string()]),
                scope: Some("Namespaced".to_string()),
            }]),
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
        let policy = confinement_policy();
        for v in policy.spec.unwrap().validations.unwrap() {
            let message = v.message.unwrap();
            assert!(message.starts_with("spec."), "{message}");
        }
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
