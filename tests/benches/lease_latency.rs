//! Cluster-scale bench: on the real control plane with 50 kwok nodes in a pool, how long
//! from creating a CapacityLease to the lease Active, and from creating a Deployment in the
//! tenant's namespace to its pods Running on the lease's nodes. The baseline, measured in
//! the same run on the same control plane, is a Deployment in an internal namespace on
//! nodes outside any pool: the scheduler and kwok alone, no operator.
//!
//!     cargo bench -p offpeak-tests --bench lease_latency [-- ROUNDS]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use offpeak_api::{CapacityLease, CapacityPool, LeasePhase, RateCard, Tenant};
use offpeak_testenv::{ControlPlane, NodeSpec};
use offpeak_tests::{deployment, eventually, wait_running};
use serde_json::json;

const POOL_NODES: usize = 50;
const REPLICAS: i32 = 2;

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(value)?)
}

async fn until<F, Fut>(what: &str, done: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    eventually(what, Duration::from_secs(120), done).await
}

/// Creates the deployment and returns how long until all its pods run.
async fn deploy_and_wait(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment(name, REPLICAS, None))
        .await?;
    wait_running(
        &pods,
        &format!("app={name}"),
        REPLICAS as usize,
        Duration::from_secs(120),
    )
    .await?;
    Ok(start.elapsed())
}

fn summary(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64();
    (at(0.5), at(0.9))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    eprintln!(
        "lease_latency: starting a control plane with {POOL_NODES} pool nodes, {rounds} rounds"
    );
    let plane = ControlPlane::start().await?;
    eprintln!("lease_latency: {}", plane.startup());
    offpeak::local::start(&plane, offpeak::local::settings(Duration::from_secs(60))).await?;
    let client = plane.client().await?;
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "pool".into(),
            count: POOL_NODES,
            labels: BTreeMap::from([("offpeak.dev/bench".to_string(), "pool".to_string())]),
            ..Default::default()
        })
        .await?;
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "internal".into(),
            count: 5,
            ..Default::default()
        })
        .await?;
    Api::<CapacityPool>::all(client.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({
                "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool",
                "metadata": {"name": "bench"},
                "spec": {"nodeSelector": {"offpeak.dev/bench": "pool"}, "idleAfter": "0s"},
            }))?,
        )
        .await?;
    Api::<RateCard>::all(client.clone())
        .create(&PostParams::default(), &from_json(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "RateCard",
            "metadata": {"name": "bench"},
            "spec": {"currency": "USD", "precision": 4, "prices": {"spot": {"cpu": "0.04", "memory": "0.005"}, "reserved": {"cpu": "0.06", "memory": "0.008"}},
                     "effectiveFrom": "2026-01-01T00:00:00Z"},
        }))?)
        .await?;
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &from_json(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "bench"},
            "spec": {"displayName": "Bench", "namespaces": ["bench"], "users": ["bench-user"], "allowedPools": ["bench"]},
        }))?)
        .await?;
    plane.create_namespace("internal").await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "bench");
    until("the tenant namespace", || async {
        Ok(accounts.get_opt("default").await?.is_some())
    })
    .await?;
    let tenant = plane.user_client("bench-user", &[]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(tenant.clone(), "bench");

    // Warm up both paths once (first watches, first webhook call).
    deploy_and_wait(&client, "internal", "warmup").await?;

    let (mut baseline, mut to_active, mut to_running, mut end_to_end) =
        (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        baseline.push(deploy_and_wait(&client, "internal", &format!("base-{round}")).await?);

        let name = format!("lease-{round}");
        let lease: CapacityLease = from_json(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease",
            "metadata": {"name": name},
            "spec": {"pool": "bench", "class": "Spot", "resources": {"cpu": "16"}, "duration": "1h", "maxPricePerHour": "10"},
        }))?;
        let start = Instant::now();
        leases.create(&PostParams::default(), &lease).await?;
        let active = until(&format!("{name} Active"), || async {
            Ok(leases.get(&name).await?.status.and_then(|s| s.phase) == Some(LeasePhase::Active))
        })
        .await?;
        let running = deploy_and_wait(&tenant, "bench", &format!("app-{round}")).await?;
        to_active.push(active);
        to_running.push(running);
        end_to_end.push(start.elapsed());
        eprintln!(
            "  round {round}: lease Active {:.2}s, tenant pods Running {:.2}s later; baseline pods Running {:.2}s",
            active.as_secs_f64(),
            running.as_secs_f64(),
            baseline[round].as_secs_f64()
        );
        // Give the node back so every round leases from the same pool state.
        Api::<Deployment>::namespaced(tenant.clone(), "bench")
            .delete(&format!("app-{round}"), &DeleteParams::default())
            .await?;
        leases.delete(&name, &DeleteParams::default()).await?;
        until(&format!("{name} gone"), || async {
            Ok(leases.get_opt(&name).await?.is_none())
        })
        .await?;
    }

    let (base_median, base_p90) = summary(&mut baseline);
    let (active_median, active_p90) = summary(&mut to_active);
    let (running_median, running_p90) = summary(&mut to_running);
    let (total_median, total_p90) = summary(&mut end_to_end);
    println!(
        "lease_latency on {POOL_NODES} kwok pool nodes, {rounds} rounds, {REPLICAS} pods per deployment:"
    );
    println!(
        "  baseline: internal Deployment created -> pods Running   median {base_median:.3}s  p90 {base_p90:.3}s"
    );
    println!(
        "  lease created -> Active (bound)                       median {active_median:.3}s  p90 {active_p90:.3}s"
    );
    println!(
        "  tenant Deployment created -> pods Running on lease    median {running_median:.3}s  p90 {running_p90:.3}s"
    );
    println!(
        "  lease created -> its pods Running (end to end)        median {total_median:.3}s  p90 {total_p90:.3}s"
    );
    println!(
        "  ratio end to end / baseline (medians): {:.2}x; tenant pods / baseline pods: {:.2}x",
        total_median / base_median,
        running_median / base_median
    );
    plane.stop();
    Ok(())
}
