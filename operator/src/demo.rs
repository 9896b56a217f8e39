//! The main job on a laptop: a real control plane with kwok nodes, the operator beside it,
//! internal load that ebbs and flows, two tenants renting, and a peak reservation, with a
//! status report every few seconds.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use offpeak::names::FIELD_MANAGER;
use offpeak_api::{CapacityLease, CapacityPool, PeakReservation, RateCard, Tenant};
use offpeak_testenv::{ControlPlane, NodeSpec};
use serde_json::json;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Simulated nodes in the `general` pool (16 CPU, 64 GiB each).
    #[arg(long, default_value_t = 8)]
    general_nodes: usize,
    /// Simulated GPU nodes in the `gpu` pool (32 CPU, 256 GiB, 4 GPUs each).
    #[arg(long, default_value_t = 2)]
    gpu_nodes: usize,
    /// Stop by itself after this long (e.g. `90s`, `10m`); without it, run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    run_for: Option<Duration>,
    /// Seconds between status reports.
    #[arg(long, default_value_t = 15)]
    report_every: u64,
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(value).context("a demo object does not match its type")
}

fn example<T: serde::de::DeserializeOwned>(yaml: &str) -> anyhow::Result<T> {
    serde_yaml::from_str(yaml).context("an example manifest does not match its type")
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    eprintln!(
        "offpeak demo: starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    );
    let plane = ControlPlane::start()
        .await
        .context("the local control plane did not start")?;
    eprintln!("offpeak demo: {}", plane.startup());
    let pool_label =
        |name: &str| BTreeMap::from([("offpeak.dev/pool".to_string(), name.to_string())]);
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "general".into(),
            count: args.general_nodes,
            labels: pool_label("general"),
            ..Default::default()
        })
        .await?;
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "gpu".into(),
            count: args.gpu_nodes,
            labels: pool_label("gpu"),
            cpu: "32".into(),
            memory: "256Gi".into(),
            gpus: Some("4".into()),
            ..Default::default()
        })
        .await?;
    eprintln!(
        "offpeak demo: {} general and {} gpu nodes Ready (simulated by kwok)",
        args.general_nodes, args.gpu_nodes
    );
    offpeak::local::start(&plane, offpeak::local::settings(Duration::from_secs(60))).await?;
    eprintln!("offpeak demo: operator running (CRDs installed, tenant pod webhook on loopback)");
    let client = plane.client().await?;
    book(&client).await?;

    println!("\nThe cluster is up. In another shell:\n");
    println!("  export KUBECONFIG={}", plane.kubeconfig_path().display());
    println!("  alias kubectl={}", plane.tools().kubectl.display());
    println!(
        "  kubectl get offpeak -A            # tenants, pools, reservations, leases, rate cards"
    );
    println!("  kubectl get nodes -L offpeak.dev/pool,offpeak.dev/tenant\n");
    println!("Component logs are in {}/logs.", plane.dir().display());
    match args.run_for {
        Some(limit) => {
            println!("Stopping by itself in {limit:?} (or on Ctrl-C); everything is cleaned up.\n")
        }
        None => println!("Press Ctrl-C to stop; everything is cleaned up.\n"),
    }

    let deadline = args.run_for.map(|d| tokio::time::Instant::now() + d);
    let mut tick = 0u64;
    let mut rented = false;
    loop {
        // Internal load ebbs and flows: 1 to 9 replicas of 4 cores, one step every 10 s.
        let replicas = [1, 3, 5, 7, 9, 7, 5, 3][(tick as usize / 2) % 8];
        scale_internal(&client, replicas).await?;
        // Tenants rent once the general pool's idle nodes have been idle long enough.
        if !rented && tick >= 2 {
            rent(&plane).await?;
            rented = true;
        }
        if tick.is_multiple_of((args.report_every / 5).max(1)) {
            report(&client, replicas).await?;
        }
        tick += 1;
        let pause = tokio::time::sleep(Duration::from_secs(5));
        tokio::select! {
            _ = pause => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
    }
    eprintln!("offpeak demo: stopping");
    plane.stop();
    Ok(())
}

/// What operations set up: pools, a rate card, two tenants, a peak reservation.
async fn book(client: &Client) -> anyhow::Result<()> {
    let create = PostParams::default();
    let pools: Api<CapacityPool> = Api::all(client.clone());
    pools
        .create(&create, &object(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool", "metadata": {"name": "general"},
            "spec": {"nodeSelector": {"offpeak.dev/pool": "general"}, "headroom": {"nodes": 1}, "idleAfter": "10s"},
        }))?)
        .await?;
    pools
        .create(&create, &object(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool", "metadata": {"name": "gpu"},
            "spec": {"nodeSelector": {"offpeak.dev/pool": "gpu"}, "nodeClasses": [{"name": "a100", "nodeSelector": {"offpeak.dev/pool": "gpu"}}], "idleAfter": "10s"},
        }))?)
        .await?;
    Api::<RateCard>::all(client.clone())
        .create(
            &create,
            &example(include_str!("../../examples/rate-card.yaml"))?,
        )
        .await?;
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .create(
            &create,
            &example(include_str!("../../examples/tenant.yaml"))?,
        )
        .await?;
    tenants
        .create(&create, &object(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "globex"},
            "spec": {"displayName": "Globex Research", "namespaces": ["tenant-globex"], "users": ["bob"], "allowedPools": ["general", "gpu"],
                     "creditLimit": {"amount": "2000.00", "currency": "USD"}},
        }))?)
        .await?;
    // Peak season starts in five minutes: three quarters of the general pool stay internal.
    let start = chrono::Utc::now() + chrono::Duration::minutes(5);
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Api::<PeakReservation>::all(client.clone())
        .create(&create, &object(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "PeakReservation", "metadata": {"name": "launch-week"},
            "spec": {"pool": "general", "keep": {"percent": 75},
                     "window": {"start": at(start), "end": at(start + chrono::Duration::days(7))}},
        }))?)
        .await?;
    eprintln!(
        "offpeak demo: booked pools general and gpu, rate card standard-2026, tenants acme and globex, peak reservation launch-week (75 % of general from {})",
        at(start)
    );
    Ok(())
}

/// The internal workload: a Deployment in namespace `internal`, 4 cores a replica.
async fn scale_internal(client: &Client, replicas: i32) -> anyhow::Result<()> {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "internal"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"offpeak.dev/pool": "general"},
                    "containers": [{"name": "web", "image": "web:1", "resources": {"requests": {"cpu": "4", "memory": "8Gi"}}}],
                },
            },
        },
    });
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            "internal",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "internal"}}),
            ),
        )
        .await?;
    Api::<Deployment>::namespaced(client.clone(), "internal")
        .patch(
            "web",
            &PatchParams::apply("offpeak-demo").force(),
            &Patch::Apply(deployment),
        )
        .await?;
    Ok(())
}

/// The tenants rent, as themselves: acme a Spot lease and a render job, globex a Reserved
/// lease that runs into the peak reservation and a GPU lease.
async fn rent(plane: &ControlPlane) -> anyhow::Result<()> {
    let alice = plane.user_client("alice", &["acme-render"]).await?;
    let bob = plane.user_client("bob", &[]).await?;
    let create = PostParams::default();
    let lease = |name: &str, spec: serde_json::Value| -> anyhow::Result<CapacityLease> {
        object(
            json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease", "metadata": {"name": name}, "spec": spec}),
        )
    };
    Api::<CapacityLease>::namespaced(alice.clone(), "tenant-acme")
        .create(&create, &lease("nightly-render", json!({"pool": "general", "class": "Spot", "resources": {"cpu": "32", "memory": "64Gi"}, "duration": "8h", "maxPricePerHour": "4.50"}))?)
        .await?;
    let render = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "render"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "render"}},
                 "template": {"metadata": {"labels": {"app": "render"}}, "spec": {"containers": [{"name": "render", "image": "render:1"}]}}},
    });
    Api::<Deployment>::namespaced(alice, "tenant-acme")
        .patch(
            "render",
            &PatchParams::apply("alice"),
            &Patch::Apply(render),
        )
        .await?;
    let globex: Api<CapacityLease> = Api::namespaced(bob, "tenant-globex");
    globex
        .create(&create, &lease("steady-crawl", json!({"pool": "general", "class": "Reserved", "resources": {"cpu": "48"}, "duration": "24h"}))?)
        .await?;
    globex
        .create(&create, &lease("training", json!({"pool": "gpu", "class": "Reserved", "nodes": {"class": "a100", "count": 1}, "duration": "4h"}))?)
        .await?;
    eprintln!(
        "offpeak demo: acme (alice) leased nightly-render and runs 6 render pods; globex (bob) asked for steady-crawl and training"
    );
    Ok(())
}

async fn report(client: &Client, replicas: i32) -> anyhow::Result<()> {
    let now = chrono::Utc::now().format("%H:%M:%S");
    println!("[{now}] internal web replicas: {replicas}");
    for pool in Api::<CapacityPool>::all(client.clone())
        .list(&Default::default())
        .await?
    {
        let s = pool.status.clone().unwrap_or_default();
        let n = |v: Option<i32>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "  pool {:<8} nodes {:>2}  lendable {:>2}  lent {:>2}  headroom {:>2}  spot/core-h {}",
            pool.name_any(),
            n(s.nodes),
            n(s.lendable_nodes),
            n(s.lent_nodes),
            n(s.headroom_nodes),
            s.spot_price_per_core_hour
                .map_or("-".into(), |p| p.to_string())
        );
    }
    for lease in Api::<CapacityLease>::all(client.clone())
        .list(&Default::default())
        .await?
    {
        let s = lease.status.clone().unwrap_or_default();
        let why = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Admitted")
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default();
        println!(
            "  lease {:<28} {:<8} {:<9} nodes {:>2}  cost {:<14} {}",
            format!(
                "{}/{}",
                lease.namespace().unwrap_or_default(),
                lease.name_any()
            ),
            format!("{:?}", lease.spec.class),
            s.phase.map_or("-".into(), |p| format!("{p:?}")),
            s.node_count.unwrap_or(0),
            s.cost_summary.unwrap_or_else(|| "-".into()),
            why
        );
    }
    Ok(())
}

/// `90s`, `10m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 2h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("2d").is_err_and(|e| e.contains("unit must be")));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_examples_the_demo_applies_match_their_types() {
        example::<RateCard>(include_str!("../../examples/rate-card.yaml")).unwrap();
        example::<Tenant>(include_str!("../../examples/tenant.yaml")).unwrap();
    }
}
