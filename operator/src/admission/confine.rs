//! What the webhook does to a tenant's pod: places it on the tenant's leased nodes, at the
//! tenant priority, with nothing asked of the tenant. It only adds: a pod that asks for
//! something else (another tenant's selector, a node that is not the tenant's) is refused
//! here or by the confinement policy, never silently rewritten.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, Toleration};

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
            ])
        );
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
