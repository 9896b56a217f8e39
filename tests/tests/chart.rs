//! The Helm chart: it lints, its objects are accepted by the real API server, and the
//! operator running with exactly the chart's RBAC (as the chart's service account) admits,
//! binds and returns a lease — so the ClusterRole is enough, not merely small.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use offpeak_api::{CapacityLease, CapacityPool, LeasePhase, RateCard, Tenant};
use offpeak_testenv::{ControlPlane, NodeSpec};
use offpeak_tests::{deployment, eventually, wait_running};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/offpeak");
const NAMESPACE: &str = "offpeak-system";
const WAIT: Duration = Duration::from_secs(60);

async fn helm(plane: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(plane.tools().helm()?)
        .args(args)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "helm {args:?} failed: {}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(text)
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a well-formed object")
}

#[tokio::test]
async fn the_chart_installs_and_its_rbac_is_enough_to_run_the_operator() -> anyhow::Result<()> {
    let plane = ControlPlane::shared().await?;
    let lint = helm(plane, &["lint", CHART]).await?;
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    // Every object of the chart, CRDs included, applied for real.
    let manifest = helm(
        plane,
        &[
            "template",
            "offpeak",
            CHART,
            "--namespace",
            NAMESPACE,
            "--include-crds",
        ],
    )
    .await?;
    plane.create_namespace(NAMESPACE).await?;
    let mut apply = plane
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    apply
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .await?;
    let applied = apply.wait_with_output().await?;
    let out = String::from_utf8_lossy(&applied.stdout);
    assert!(
        applied.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    for object in [
        "clusterrole.rbac.authorization.k8s.io/offpeak-operator",
        "deployment.apps/offpeak",
        "secret/offpeak-webhook-tls",
        "customresourcedefinition.apiextensions.k8s.io/capacityleases.offpeak.dev",
    ] {
        assert!(out.contains(object), "{object} not applied: {out}");
    }
    let client = plane.client().await?;
    let account: Option<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE)
        .get_opt("offpeak")
        .await?;
    assert!(account.is_some());

    // The operator, as the chart's service account and nothing more.
    let identity = format!("system:serviceaccount:{NAMESPACE}:offpeak");
    let kubeconfig = plane.user_kubeconfig(&identity, &["system:serviceaccounts"])?;
    offpeak::local::start_as(
        plane,
        Path::new(&kubeconfig),
        offpeak::local::settings(Duration::from_secs(5)),
    )
    .await?;

    plane
        .create_nodes(&NodeSpec {
            name_prefix: "chart".into(),
            count: 2,
            labels: BTreeMap::from([("offpeak.dev/test-pool".to_string(), "chart".to_string())]),
            ..Default::default()
        })
        .await?;
    let create = PostParams::default();
    Api::<CapacityPool>::all(client.clone())
        .create(&create, &from_json(json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool", "metadata": {"name": "chart"},
            "spec": {"nodeSelector": {"offpeak.dev/test-pool": "chart"}, "idleAfter": "0s"}})))
        .await?;
    Api::<RateCard>::all(client.clone())
        .create(&create, &from_json(json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "RateCard", "metadata": {"name": "chart"},
            "spec": {"currency": "USD", "precision": 4, "prices": {"spot": {"cpu": "0.04", "memory": "0"}, "reserved": {"cpu": "0.06", "memory": "0"}},
                     "effectiveFrom": "2026-01-01T00:00:00Z"}})))
        .await?;
    Api::<Tenant>::all(client.clone())
        .create(&create, &from_json(json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "chart-acme"},
            "spec": {"displayName": "Chart", "namespaces": ["chart-acme"], "users": ["carol"], "allowedPools": ["chart"]}})))
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "chart-acme");
    eventually("the tenant namespace", WAIT, || async {
        Ok(accounts.get_opt("default").await?.is_some())
    })
    .await?;

    let carol = plane.user_client("carol", &[]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(carol.clone(), "chart-acme");
    leases
        .create(&create, &from_json(json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease", "metadata": {"name": "job"},
            "spec": {"pool": "chart", "class": "Spot", "resources": {"cpu": "16"}, "duration": "1h", "maxPricePerHour": "4.50"}})))
        .await?;
    eventually("the lease Active", WAIT, || async {
        Ok(leases.get("job").await?.status.and_then(|s| s.phase) == Some(LeasePhase::Active))
    })
    .await?;
    Api::<Deployment>::namespaced(carol.clone(), "chart-acme")
        .create(&create, &deployment("job", 2, None))
        .await?;
    wait_running(
        &Api::<Pod>::namespaced(client.clone(), "chart-acme"),
        "app=job",
        2,
        WAIT,
    )
    .await?;
    leases.delete("job", &DeleteParams::default()).await?;
    eventually("the lease gone, its nodes returned", WAIT, || async {
        Ok(leases.get_opt("job").await?.is_none())
    })
    .await?;
    Ok(())
}
