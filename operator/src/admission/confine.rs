//! What the webhooks do to pods. A tenant's pod is placed on the tenant's leased nodes, at
//! the tenant priority, and given the Pod Security `restricted` settings it left unset
//! (seccomp RuntimeDefault, runAsNonRoot, no privilege escalation, all capabilities
//! dropped), with nothing asked of the tenant. It only adds: a pod that asks for something
//! else (another tenant's selector, a node that is not the tenant's, root, a capability)
//! is refused here, by Pod Security or by the confinement policy, never silently rewritten.
//!
//! An internal pod that tolerates the lent nodes' taint is steered: it gets the required
//! node affinity `offpeak.dev/tenant DoesNotExist`, in every node selector term.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodSecurityContext, SeccompProfile, SecurityContext, Toleration,
};

use crate::names::{TENANT, TENANT_PREEMPTION, TENANT_PRIORITY, TENANT_PRIORITY_CLASS};

/// The pod as it should be admitted.
pub fn confine(pod: &Pod, tenant: &str) -> Pod {
    let mut pod = pod.clone();
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_selector
        .get_or_insert_with(Default::default)
        .entry(TENANT.to_string())
        .or_insert_with(|| tenant.to_string());
    let toleration = tenant_toleration(tenant);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&toleration) {
        tolerations.push(toleration);
    }
    if spec.priority_class_name.is_none() {
        spec.priority_class_name = Some(TENANT_PRIORITY_CLASS.to_string());
        // The API server resolved the default priority before webhooks run, and checks
        // again after them: keep the number and the preemption policy in step with the class.
        spec.priority = Some(TENANT_PRIORITY);
        spec.preemption_policy = Some(TENANT_PREEMPTION.to_string());
    }
    restrict(spec);
    always_pull(spec);
    pod
}

/// Fills in the Pod Security `restricted` settings the pod left unset. A setting the pod
/// states is kept, so a pod that asks for root or privilege is refused with the field it
/// set, and a container that is privileged or adds a capability keeps its
/// allowPrivilegeEscalation unset (false would make the API server refuse the pod for the
/// combination instead of Pod Security for the privilege).
fn restrict(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    let containers_state = |f: &dyn Fn(&SecurityContext) -> bool| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .all(|c| c.security_context.as_ref().is_some_and(f))
    };
    let every_container_seccomp = containers_state(&|sc| sc.seccomp_profile.is_some());
    let every_container_non_root = containers_state(&|sc| sc.run_as_non_root.is_some());
    let pod_sc = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    if pod_sc.seccomp_profile.is_none() && !every_container_seccomp {
        pod_sc.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        });
    }
    if pod_sc.run_as_non_root.is_none() && !every_container_non_root {
        pod_sc.run_as_non_root = Some(true);
    }
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        restrict_container(container);
    }
}

/// Tenant containers pull their image every time (the one setting the webhook rewrites, as
/// the AlwaysPullImages admission plugin would: the API server has already defaulted it to
/// IfNotPresent, so an unset policy cannot be told from a stated one). A lent node keeps
/// the images of earlier tenants in its runtime's cache; with Always, the registry checks
/// this tenant's credentials before a cached private image of another tenant is used.
fn always_pull(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container.image_pull_policy = Some("Always".to_string());
    }
}

fn restrict_container(container: &mut Container) {
    let sc = container
        .security_context
        .get_or_insert_with(SecurityContext::default);
    let adds_beyond_restricted = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_some_and(|add| add.iter().any(|a| a != "NET_BIND_SERVICE"));
    if sc.allow_privilege_escalation.is_none()
        && sc.privileged != Some(true)
        && !adds_beyond_restricted
    {
        sc.allow_privilege_escalation = Some(false);
    }
    let capabilities = sc.capabilities.get_or_insert_with(Capabilities::default);
    let drop = capabilities.drop.get_or_insert_with(Vec::new);
    if !drop.iter().any(|d| d == "ALL") {
        drop.push("ALL".to_string());
    }
}

/// Whether tolerations tolerate the NoSchedule taint of nodes lent to some tenant: one
/// without a key and operator Exists, or one of the `offpeak.dev/tenant` key (whatever
/// its value), with no effect or NoSchedule. (The same test as the policies' CEL.)
pub fn tolerates_lent_nodes(tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let effect_matches = matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
        let key = t.key.as_deref().unwrap_or_default();
        let wildcard = key.is_empty() && t.operator.as_deref() == Some("Exists");
        effect_matches && (wildcard || key == TENANT)
    })
}

/// Whether an internal pod must be kept off lent nodes: it tolerates their taint and is
/// neither a DaemonSet's pod (a lent node needs its DaemonSets) nor a kubelet's mirror pod.
pub fn needs_steering(pod: &Pod) -> bool {
    let daemon =
        pod.metadata.owner_references.iter().flatten().any(|o| {
            o.kind == "DaemonSet" && o.api_version == "apps/v1" && o.controller == Some(true)
        });
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    tolerates_lent_nodes(tolerations) && !daemon && !mirror
}

/// The requirement that keeps a pod off lent nodes.
pub fn not_lent() -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: TENANT.to_string(),
        operator: "DoesNotExist".to_string(),
        values: None,
    }
}

/// The internal pod with `offpeak.dev/tenant DoesNotExist` required in every node selector
/// term (terms are alternatives, so each must carry it), or in a new term when it had none.
pub fn steer(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    let spec = pod.spec.get_or_insert_with(Default::default);
    let required = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        let expressions = term.match_expressions.get_or_insert_with(Vec::new);
        if !expressions.contains(&not_lent()) {
            expressions.push(not_lent());
        }
    }
    pod
}

/// The toleration of the taint on the tenant's lent nodes.
pub fn tenant_toleration(tenant: &str) -> Toleration {
    Toleration {
        key: Some(TENANT.to_string()),
        operator: Some("Equal".to_string()),
        value: Some(tenant.to_string()),
        effect: Some("NoSchedule".to_string()),
        toleration_seconds: None,
    }
}

/// Why a pod may not be admitted for `tenant`, given the nodes lent to it: a pod that names
/// a node by `kubernetes.io/hostname` must name one of them. (Rules that need no node list
/// are in the confinement policy, enforced by the API server itself.)
pub fn refusal(pod: &Pod, tenant: &str, tenant_nodes: &BTreeSet<String>) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.node_selector.as_ref()?.get("kubernetes.io/hostname")?;
    (!tenant_nodes.contains(host)).then(|| {
        format!(
            "spec.nodeSelector[\"kubernetes.io/hostname\"]: node {host} is not leased to tenant {tenant}; \
             tenant pods run only on the tenant's leased nodes"
        )
    })
}

/// The JSON patch that turns `before` into `after`.
pub fn patch(before: &Pod, after: &Pod) -> Result<json_patch::Patch, serde_json::Error> {
    Ok(json_patch::diff(
        &serde_json::to_value(before)?,
        &serde_json::to_value(after)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use std::collections::BTreeMap;

    fn pod() -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("render:1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_pod_gets_selector_toleration_and_priority() {
        let confined = confine(&pod(), "acme");
        let spec = confined.spec.unwrap();
        assert_eq!(
            spec.node_selector.unwrap().get(TENANT).map(String::as_str),
            Some("acme")
        );
        assert_eq!(spec.tolerations.unwrap(), vec![tenant_toleration("acme")]);
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some(TENANT_PRIORITY_CLASS)
        );
        assert_eq!(spec.priority, Some(TENANT_PRIORITY));
    }

    #[test]
    fn confining_twice_changes_nothing_more() {
        let once = confine(&pod(), "acme");
        assert_eq!(confine(&once, "acme"), once);
        assert!(patch(&once, &confine(&once, "acme")).unwrap().0.is_empty());
    }

    #[test]
    fn another_tenants_selector_is_left_for_the_policy_to_refuse() {
        let mut p = pod();
        p.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([(TENANT.to_string(), "globex".to_string())]));
        let confined = confine(&p, "acme");
        assert_eq!(
            confined
                .spec
                .unwrap()
                .node_selector
                .unwrap()
                .get(TENANT)
                .map(String::as_str),
            Some("globex")
        );
    }

    #[test]
    fn a_plain_pod_gets_the_restricted_settings_it_left_unset() {
        let spec = confine(&pod(), "acme").spec.unwrap();
        let pod_sc = spec.security_context.unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(
            pod_sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let sc = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    }

    #[test]
    fn what_a_pod_states_is_kept_for_the_policy_to_judge() {
        let mut p = pod();
        {
            let spec = p.spec.as_mut().unwrap();
            spec.security_context = Some(PodSecurityContext {
                run_as_non_root: Some(false),
                run_as_user: Some(0),
                seccomp_profile: Some(SeccompProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            });
            spec.containers[0].security_context = Some(SecurityContext {
                capabilities: Some(Capabilities {
                    add: Some(vec!["SYS_ADMIN".into()]),
                    drop: Some(vec!["NET_RAW".into()]),
                }),
                ..Default::default()
            });
            let mut privileged = spec.containers[0].clone();
            privileged.name = "privileged".into();
            privileged.security_context = Some(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            });
            spec.init_containers = Some(vec![privileged]);
        }
        let spec = confine(&p, "acme").spec.unwrap();
        let pod_sc = spec.security_context.unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(false));
        assert_eq!(pod_sc.run_as_user, Some(0));
        assert_eq!(pod_sc.seccomp_profile.unwrap().type_, "Unconfined");
        let main = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(main.allow_privilege_escalation, None);
        let caps = main.capabilities.unwrap();
        assert_eq!(caps.add, Some(vec!["SYS_ADMIN".to_string()]));
        assert_eq!(
            caps.drop,
            Some(vec!["NET_RAW".to_string(), "ALL".to_string()])
        );
        let init = spec.init_containers.unwrap()[0]
            .security_context
            .clone()
            .unwrap();
        assert_eq!(init.privileged, Some(true));
        assert_eq!(init.allow_privilege_escalation, None);
    }

    #[test]
    fn the_patch_adds_exactly_the_placement() {
        let p = pod();
        let ops = serde_json::to_value(patch(&p, &confine(&p, "acme")).unwrap()).unwrap();
        let paths: BTreeSet<String> = ops
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            paths,
            BTreeSet::from([
                "/spec/nodeSelector".to_string(),
                "/spec/tolerations".to_string(),
                "/spec/priorityClassName".to_string(),
                "/spec/priority".to_string(),
                "/spec/preemptionPolicy".to_string(),
                "/spec/securityContext".to_string(),
                "/spec/containers/0/securityContext".to_string(),
                "/spec/containers/0/imagePullPolicy".to_string(),
            ])
        );
    }

    fn toleration(key: Option<&str>, operator: &str, effect: Option<&str>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some(operator.into()),
            value: (operator == "Equal").then(|| "acme".to_string()),
            effect: effect.map(str::to_string),
            toleration_seconds: None,
        }
    }

    #[test]
    fn which_tolerations_reach_lent_nodes() {
        for (t, reaches) in [
            (toleration(None, "Exists", None), true),
            (toleration(Some(""), "Exists", Some("NoSchedule")), true),
            (toleration(None, "Exists", Some("NoExecute")), false),
            (toleration(Some(TENANT), "Exists", None), true),
            (toleration(Some(TENANT), "Equal", Some("NoSchedule")), true),
            (
                toleration(Some(TENANT), "Equal", Some("PreferNoSchedule")),
                false,
            ),
            (
                toleration(Some("node.kubernetes.io/not-ready"), "Exists", None),
                false,
            ),
        ] {
            assert_eq!(
                tolerates_lent_nodes(std::slice::from_ref(&t)),
                reaches,
                "{t:?}"
            );
        }
    }

    fn wildcard_pod() -> Pod {
        let mut p = pod();
        p.spec.as_mut().unwrap().tolerations = Some(vec![toleration(None, "Exists", None)]);
        p
    }

    #[test]
    fn daemonset_and_mirror_pods_are_not_steered() {
        assert!(needs_steering(&wildcard_pod()));
        assert!(!needs_steering(&pod()));
        let mut daemon = wildcard_pod();
        daemon.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "DaemonSet".into(),
                name: "cni".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        ]);
        assert!(!needs_steering(&daemon));
        let mut mirror = wildcard_pod();
        mirror.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.mirror".to_string(),
            "x".to_string(),
        )]));
        assert!(!needs_steering(&mirror));
    }

    #[test]
    fn steering_adds_the_requirement_to_every_term_once() {
        let steered = steer(&wildcard_pod());
        let terms = |p: &Pod| {
            p.spec
                .as_ref()
                .unwrap()
                .affinity
                .as_ref()
                .unwrap()
                .node_affinity
                .as_ref()
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()
                .node_selector_terms
                .clone()
        };
        assert_eq!(terms(&steered).len(), 1);
        assert_eq!(terms(&steered)[0].match_expressions, Some(vec![not_lent()]));
        assert_eq!(steer(&steered), steered);

        // Two alternatives: each keeps its own and gains the requirement.
        let zone = |z: &str| NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "topology.kubernetes.io/zone".into(),
                operator: "In".into(),
                values: Some(vec![z.into()]),
            }]),
            match_fields: None,
        };
        let mut p = wildcard_pod();
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![zone("a"), zone("b")],
                }),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        });
        for term in terms(&steer(&p)) {
            let expressions = term.match_expressions.unwrap();
            assert_eq!(expressions.len(), 2);
            assert_eq!(expressions[1], not_lent());
        }
    }

    #[test]
    fn naming_a_node_that_is_not_the_tenants_is_refused() {
        let mut p = pod();
        p.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            "internal-7".to_string(),
        )]));
        let mine = BTreeSet::from(["general-1".to_string()]);
        let why = refusal(&p, "acme", &mine).unwrap();
        assert!(
            why.contains("node internal-7 is not leased to tenant acme"),
            "{why}"
        );
        p.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            "general-1".to_string(),
        )]));
        assert_eq!(refusal(&p, "acme", &mine), None);
    }
}
