//! What the chart's ServiceAccount may do, as the API server answers it
//! (SelfSubjectRulesReview, asked with the account's own token): exactly the permissions
//! charts/offpeak/README.md documents — beyond what every authenticated account may — and
//! the leader Lease is its to renew in the release namespace only.

mod chart_support;

use std::collections::BTreeSet;
use std::process::Stdio;

use chart_support::{
    NAMESPACE, documented_permissions, expand_rules, render, service_account_kubeconfig,
};
use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams, PostParams};
use offpeak_testenv::ControlPlane;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// (API group, resource, name, verb), the scope dropped: a review answers for one namespace.
type Rule = (String, String, String, String);

/// The account's rules in `namespace`, and its non-resource URLs as "verb url".
async fn rules_in(
    client: &kube::Client,
    namespace: &str,
) -> anyhow::Result<(BTreeSet<Rule>, BTreeSet<String>)> {
    let review = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(
            &PostParams::default(),
            &SelfSubjectRulesReview {
                spec: SelfSubjectRulesReviewSpec {
                    namespace: Some(namespace.to_string()),
                },
                ..Default::default()
            },
        )
        .await?;
    let status = serde_json::to_value(review.status)?;
    anyhow::ensure!(
        status["incomplete"] == false,
        "the API server could not list every rule in {namespace}: {status}"
    );
    let rules = expand_rules("", &status["resourceRules"])
        .into_iter()
        .map(|(_, group, resource, name, verb)| (group, resource, name, verb))
        .collect();
    let mut urls = BTreeSet::new();
    for rule in status["nonResourceRules"].as_array().into_iter().flatten() {
        for url in rule["nonResourceURLs"].as_array().into_iter().flatten() {
            for verb in rule["verbs"].as_array().into_iter().flatten() {
                urls.insert(format!(
                    "{} {}",
                    verb.as_str().unwrap_or(""),
                    url.as_str().unwrap_or("")
                ));
            }
        }
    }
    Ok((rules, urls))
}

fn documented(scopes: &[&str]) -> anyhow::Result<BTreeSet<Rule>> {
    Ok(documented_permissions()?
        .into_iter()
        .filter(|(scope, ..)| scopes.contains(&scope.as_str()))
        .map(|(_, group, resource, name, verb)| (group, resource, name, verb))
        .collect())
}

async fn apply(plane: &ControlPlane, objects: &[Value]) -> anyhow::Result<()> {
    let mut text = String::new();
    for object in objects {
        text.push_str(&serde_json::to_string(object)?);
        text.push('\n');
    }
    let mut kubectl = plane
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    kubectl
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .await?;
    let out = kubectl.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn is_forbidden<T>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(e)) if e.code == 403)
}

#[tokio::test]
async fn the_service_account_may_do_exactly_what_the_readme_documents() -> anyhow::Result<()> {
    let plane = ControlPlane::shared().await?;
    plane.create_namespace(NAMESPACE).await?;
    plane.create_namespace("elsewhere").await?;
    // Every object of the default install but the workload (no nodes run it here).
    let objects: Vec<Value> = render(&[])?
        .into_iter()
        .filter(|o| o["kind"] != "Deployment")
        .collect();
    apply(plane, &objects).await?;
    // An account bound to nothing: what every authenticated account may.
    let admin = plane.client().await?;
    Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "nobody"}}))?,
        )
        .await?;
    let operator = offpeak_testenv::client_from_kubeconfig(
        &service_account_kubeconfig(plane, NAMESPACE, "offpeak").await?,
    )
    .await?;
    let nobody = offpeak_testenv::client_from_kubeconfig(
        &service_account_kubeconfig(plane, NAMESPACE, "nobody").await?,
    )
    .await?;

    for (namespace, scopes) in [
        (NAMESPACE, &["cluster", "release namespace"][..]),
        ("elsewhere", &["cluster"][..]),
    ] {
        let (granted, non_resource) = rules_in(&operator, namespace).await?;
        let (baseline, baseline_non_resource) = rules_in(&nobody, namespace).await?;
        let beyond: BTreeSet<Rule> = granted.difference(&baseline).cloned().collect();
        let expected = documented(scopes)?;
        assert_eq!(
            beyond.difference(&expected).collect::<Vec<_>>(),
            Vec::<&Rule>::new(),
            "in {namespace}, the account may do more than charts/offpeak/README.md says"
        );
        assert_eq!(
            expected.difference(&beyond).collect::<Vec<_>>(),
            Vec::<&Rule>::new(),
            "in {namespace}, the account may not do what charts/offpeak/README.md says"
        );
        assert_eq!(
            non_resource, baseline_non_resource,
            "the account has non-resource URLs of its own"
        );

        for (group, resource, name, verb) in &beyond {
            let rule = format!("{verb} {resource}.{group} {name} in {namespace}");
            assert!(
                verb != "*" && resource != "*" && group != "*",
                "a wildcard: {rule}"
            );
            assert!(resource != "secrets", "Secrets: {rule}");
            assert!(verb != "impersonate", "impersonate: {rule}");
            if verb == "escalate" || verb == "bind" {
                assert_eq!(
                    (group.as_str(), resource.as_str(), name.as_str()),
                    (
                        "rbac.authorization.k8s.io",
                        "clusterroles",
                        "offpeak-tenant"
                    ),
                    "{rule}: bind and escalate are documented for offpeak-tenant only"
                );
            }
        }
    }

    // The leader Lease: renewable by the account in the release namespace, no other Lease
    // there and none anywhere else.
    let leases: Api<Lease> = Api::namespaced(operator.clone(), NAMESPACE);
    let mut lease = leases.get("offpeak-operator").await?;
    lease.spec.get_or_insert_default().holder_identity = Some("offpeak-0".into());
    leases
        .replace("offpeak-operator", &PostParams::default(), &lease)
        .await?;
    leases
        .patch(
            "offpeak-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"leaseDurationSeconds": 15}})),
        )
        .await?;
    let other: Lease = serde_json::from_value(json!({"metadata": {"name": "not-offpeak"}}))?;
    Api::<Lease>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &other)
        .await?;
    assert!(
        is_forbidden(
            leases
                .patch(
                    "not-offpeak",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"holderIdentity": "x"}}))
                )
                .await
        ),
        "the account may take over a Lease that is not offpeak-operator"
    );
    assert!(
        is_forbidden(
            Api::<Lease>::namespaced(operator.clone(), "elsewhere")
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": "offpeak-operator"}}))?
                )
                .await
        ),
        "the account may make Leases outside the release namespace"
    );
    Ok(())
}
