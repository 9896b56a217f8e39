//! Cluster-scale bench of reclaim: K one-node Spot leases, each running a tenant pod, all
//! given notice at once by a peak reservation window; how long after the deadline each node
//! is back for internal pods (no tenant label or taint left), and how long until the
//! internal pods waiting for the pool run there. The operator runs as its own release
//! process. Two floors are measured in the same run: the scheduler and kwok alone (the
//! internal Deployment's pods on free nodes of the same size), and the API server alone
//! doing a node's way back for a plain client once the operator is stopped: for each of K
//! nodes at once (as many at a time as the operator writes), one write standing for the
//! lease's Ended status, one for the node's labels off, its pod deleted, the pod seen
//! gone, one for the node's taints off (each a real change to the node; the operator's
//! Events are not in the floor).
//!
//!     cargo bench -p offpeak --bench reclaim_delay [-- K... [--notice SECONDS] [--out FILE]]
//!
//! K defaults to 1 and 20; the table is printed and saved as CSV (default
//! `target/reclaim_delay.csv`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use offpeak::local::OperatorProcess;
use offpeak::names::{LEASE, RECLAIMING, TENANT};
use offpeak_api::{CapacityLease, LeasePhase};
use offpeak_testenv::{ControlPlane, NodeSpec};
use offpeak_tests::fixtures::{eventually_value, lease, pool_with, tenant_with, wait_phase};
use offpeak_tests::{deployment, wait_running};
use serde_json::json;

struct Row {
    leases: usize,
    node_back_p50: f64,
    node_back_p99: f64,
    node_back_max: f64,
    internal_running_p50: f64,
    internal_running_max: f64,
    baseline_running: f64,
    /// The API server alone: K nodes' way back (p50, max).
    floor_back_p50: f64,
    floor_back_max: f64,
    /// How much later than the window's start the last deadline was (notices given late,
    /// each still in full).
    deadlines_after_start: f64,
}

fn lent(node: &Node) -> bool {
    node.labels().contains_key(LEASE)
        || node.labels().contains_key(TENANT)
        || node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == TENANT || t.key == RECLAIMING))
}

/// The median, the 99th percentile and the largest of `samples`.
fn quantiles(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).saturating_sub(1);
        samples.get(i).copied().unwrap_or(0.0)
    };
    (at(0.5), at(0.99), samples.last().copied().unwrap_or(0.0))
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

/// An internal Deployment of `replicas` pods of 12 cores on nodes labelled `pool`.
fn internal(name: &str, pool: &str, replicas: i32) -> Deployment {
    let mut d = deployment(
        name,
        replicas,
        Some(BTreeMap::from([(
            "offpeak.dev/test-pool".to_string(),
            pool.to_string(),
        )])),
    );
    if let Some(spec) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        spec.containers[0].resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("12".into()),
            )])),
            ..Default::default()
        });
    }
    d
}

/// When each pod matching `selector` was first seen Running.
fn watch_running(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Arc<Mutex<HashMap<String, DateTime<Utc>>>> {
    let seen: Arc<Mutex<HashMap<String, DateTime<Utc>>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().labels(selector);
    let out = seen.clone();
    tokio::spawn(async move {
        watcher::watcher(pods, config)
            .for_each(|event| {
                if let Ok(Event::Apply(p) | Event::InitApply(p)) = event
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && let Ok(mut seen) = out.lock()
                {
                    seen.entry(p.name_any()).or_insert_with(Utc::now);
                }
                futures::future::ready(())
            })
            .await;
    });
    seen
}

async fn run(k: usize, notice: u64) -> anyhow::Result<Row> {
    // The scheduler and kwok place pods at some rate: waits grow with K (200 took 44 s here).
    let patience = Duration::from_secs(120 + k as u64 / 2);
    eprintln!("reclaim_delay: K={k}: starting a control plane");
    let plane = ControlPlane::start().await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    let admin = plane.client().await?;
    let mut operator = OperatorProcess::start(
        &plane,
        env!("CARGO_BIN_EXE_offpeak").as_ref(),
        plane.dir(),
        &[],
    )?;
    operator.ready().await?;

    // The baseline: the same internal pods on free nodes of another pool.
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "free".into(),
            count: k,
            labels: BTreeMap::from([("offpeak.dev/test-pool".to_string(), "free".to_string())]),
            ..Default::default()
        })
        .await?;
    plane.create_namespace("internal").await?;
    let started = Utc::now();
    let running = watch_running(&admin, "internal", "app=baseline");
    Api::<Deployment>::namespaced(admin.clone(), "internal")
        .create(
            &PostParams::default(),
            &internal("baseline", "free", k as i32),
        )
        .await?;
    wait_running(
        &Api::namespaced(admin.clone(), "internal"),
        "app=baseline",
        k,
        patience,
    )
    .await?;
    let baseline = running
        .lock()
        .map(|r| r.values().map(|t| seconds(started, *t)).fold(0.0, f64::max))
        .unwrap_or(0.0);

    let nodes = pool_with(
        &plane,
        "reclaim",
        k,
        json!({"noticePeriod": format!("{notice}s")}),
        json!({}),
    )
    .await?;
    // More leases in one namespace than a tenant's default quota of 50 and credit limit allow.
    let user = tenant_with(
        &plane,
        "bench-r",
        &["reclaim"],
        json!({"quota": {"capacityLeases": k + 10},
               "creditLimit": {"amount": format!("{}", 100 * (k + 10)), "currency": "USD"}}),
    )
    .await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "bench-r");
    for i in 0..k {
        leases
            .create(
                &PostParams::default(),
                &lease(&format!("l{i:02}"), "reclaim", "Spot", "16", "8h"),
            )
            .await?;
    }
    for i in 0..k {
        wait_phase(&leases, &format!("l{i:02}"), LeasePhase::Active).await?;
    }
    Api::<Deployment>::namespaced(user.clone(), "bench-r")
        .create(&PostParams::default(), &deployment("job", k as i32, None))
        .await?;
    wait_running(
        &Api::namespaced(admin.clone(), "bench-r"),
        "app=job",
        k,
        patience,
    )
    .await?;

    // Watch the nodes and the internal pods that wait for them.
    let back: Arc<Mutex<HashMap<String, DateTime<Utc>>>> = Arc::default();
    {
        let back = back.clone();
        let api: Api<Node> = Api::all(admin.clone());
        let config = watcher::Config::default().labels("offpeak.dev/test-pool=reclaim");
        tokio::spawn(async move {
            watcher::watcher(api, config)
                .for_each(|event| {
                    if let Ok(Event::Apply(n)) = event
                        && !lent(&n)
                        && let Ok(mut back) = back.lock()
                    {
                        back.entry(n.name_any()).or_insert_with(Utc::now);
                    }
                    futures::future::ready(())
                })
                .await;
        });
    }
    let running = watch_running(&admin, "internal", "app=web");
    Api::<Deployment>::namespaced(admin.clone(), "internal")
        .create(
            &PostParams::default(),
            &internal("web", "reclaim", k as i32),
        )
        .await?;
    // The window is booked ahead of its notice by a lead that grows with K, so the
    // operator has seen it before the notices are due.
    let start = chrono::SubsecRound::trunc_subsecs(
        Utc::now() + chrono::Duration::seconds(notice as i64 + 5 + k as i64 / 20),
        0,
    );
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Api::<offpeak_api::PeakReservation>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "offpeak.dev/v1alpha1", "kind": "PeakReservation",
                "metadata": {"name": "peak"},
                "spec": {"pool": "reclaim", "keep": {"percent": 100},
                         "window": {"start": at(start), "end": at(start + chrono::Duration::hours(1))}},
            }))?,
        )
        .await?;
    eprintln!(
        "reclaim_delay: K={k}: window at {}; waiting for the nodes",
        at(start)
    );
    wait_running(
        &Api::namespaced(admin.clone(), "internal"),
        "app=web",
        k,
        Duration::from_secs(notice) + patience,
    )
    .await?;
    // Each node's deadline, as its lease's status records it: notice is full (the lease
    // was told at least `notice` before), and not before the window's start.
    let mut deadline_of: HashMap<String, DateTime<Utc>> = HashMap::new();
    for lease in leases.list(&ListParams::default()).await?.items {
        let name = lease.name_any();
        let status = lease.status.unwrap_or_default();
        let instant = |t: &Option<offpeak_api::Timestamp>| {
            t.as_ref()
                .and_then(|t| DateTime::parse_from_rfc3339(t.as_str()).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let (Some(deadline), Some(given)) = (
            instant(&status.reclaim_deadline),
            instant(&status.notice_given_at),
        ) else {
            anyhow::bail!("lease {name} has no deadline");
        };
        anyhow::ensure!(
            deadline >= start && deadline - given >= chrono::Duration::seconds(notice as i64),
            "lease {name}: notice from {given} to {deadline}, the window starts at {start}"
        );
        for node in status.bound_nodes {
            deadline_of.insert(node.to_string(), deadline);
        }
    }
    let late = deadline_of
        .values()
        .map(|d| seconds(start, *d))
        .fold(0.0, f64::max);
    let back = eventually_value("every node seen back", || async {
        let back = back.lock().map(|b| b.clone()).unwrap_or_default();
        Ok((nodes.iter().all(|n| back.contains_key(n))).then_some(back))
    })
    .await?;
    let running = running.lock().map(|r| r.clone()).unwrap_or_default();
    let (node_back_p50, node_back_p99, node_back_max) = quantiles(
        back.iter()
            .map(|(node, t)| seconds(deadline_of.get(node).copied().unwrap_or(start), *t))
            .collect(),
    );
    // Internal pods may run on whichever node is back first: from the first deadline.
    let first_deadline = deadline_of.values().min().copied().unwrap_or(start);
    let (internal_running_p50, _, internal_running_max) = quantiles(
        running
            .values()
            .map(|t| seconds(first_deadline, *t))
            .collect(),
    );
    operator.kill();
    let (floor_back_p50, _, floor_back_max) = quantiles(write_floor(&admin, k).await?);
    Ok(Row {
        leases: k,
        node_back_p50,
        node_back_p99,
        node_back_max,
        internal_running_p50,
        internal_running_max,
        baseline_running: baseline,
        floor_back_p50,
        floor_back_max,
        deadlines_after_start: late,
    })
}

/// The writes of K nodes' way back, by a plain client on the baseline's nodes and pods:
/// seconds from the start to each node's last write.
async fn write_floor(admin: &Client, k: usize) -> anyhow::Result<Vec<f64>> {
    const CONCURRENCY: usize = 32; // the operator's default --write-concurrency
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "internal");
    let nodes: Api<Node> = Api::all(admin.clone());
    let on_node: Vec<(String, String)> = pods
        .list(&ListParams::default().labels("app=baseline"))
        .await?
        .items
        .iter()
        .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p.name_any())))
        .collect();
    anyhow::ensure!(
        on_node.len() == k,
        "{} baseline pods on nodes, {k} wanted",
        on_node.len()
    );
    let gone: Arc<Mutex<HashMap<String, DateTime<Utc>>>> = Arc::default();
    {
        let (gone, pods) = (gone.clone(), pods.clone());
        let config = watcher::Config::default().labels("app=baseline");
        tokio::spawn(async move {
            watcher::watcher(pods, config)
                .for_each(|event| {
                    if let Ok(Event::Delete(p)) = event
                        && let Ok(mut gone) = gone.lock()
                    {
                        gone.insert(p.name_any(), Utc::now());
                    }
                    futures::future::ready(())
                })
                .await;
        });
    }
    eprintln!("reclaim_delay: K={k}: the API server's floor for {k} nodes' way back");
    let started = Utc::now();
    let patch = |node: String, body: serde_json::Value| {
        let nodes = nodes.clone();
        async move {
            nodes
                .patch(
                    &node,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(body),
                )
                .await
                .map(|_| ())
        }
    };
    let times: Vec<anyhow::Result<f64>> = futures::stream::iter(on_node)
        .map(|(node, pod)| {
            let (pods, gone, patch) = (pods.clone(), gone.clone(), &patch);
            async move {
                patch(
                    node.clone(),
                    json!({"metadata": {"annotations": {"offpeak.dev/floor": "ended"}}}),
                )
                .await?;
                patch(
                    node.clone(),
                    json!({"metadata": {"annotations": {"offpeak.dev/floor-labels": "off"}}}),
                )
                .await?;
                pods.delete(&pod, &kube::api::DeleteParams::default().grace_period(0))
                    .await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
                while !gone.lock().is_ok_and(|g| g.contains_key(&pod)) {
                    anyhow::ensure!(
                        tokio::time::Instant::now() < deadline,
                        "pod {pod} never went"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                patch(
                    node,
                    json!({"metadata": {"annotations": {"offpeak.dev/floor": "back"}}}),
                )
                .await?;
                Ok(seconds(started, Utc::now()))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    times.into_iter().collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut sizes = Vec::new();
    let mut notice = 20;
    let mut out = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/reclaim_delay.csv"
    ));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--notice" => notice = args.next().unwrap_or_default().parse()?,
            "--out" => out = PathBuf::from(args.next().unwrap_or_default()),
            other => sizes.extend(other.parse::<usize>().ok()),
        }
    }
    if sizes.is_empty() {
        sizes = vec![1, 20];
    }
    let mut rows = Vec::new();
    for k in sizes {
        rows.push(run(k, notice).await?);
    }
    println!(
        "\n| leases reclaimed at once | deadline → node back p50 / p99 / max | floor: API server alone, way back p50 / max | max ratio to floor | deadline → internal pods Running p50 / max | baseline: internal pods Running on free nodes (max) | last deadline after the window's start |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut csv = String::from(
        "leases,node_back_p50_s,node_back_p99_s,node_back_max_s,floor_back_p50_s,floor_back_max_s,ratio_to_floor,internal_running_p50_s,internal_running_max_s,baseline_running_max_s,deadlines_after_start_s\n",
    );
    for r in &rows {
        let ratio = r.node_back_max / r.floor_back_max.max(0.001);
        println!(
            "| {} | {:.2} s / {:.2} s / {:.2} s | {:.2} s / {:.2} s | {:.2}x | {:.2} s / {:.2} s | {:.2} s | {:.0} s |",
            r.leases,
            r.node_back_p50,
            r.node_back_p99,
            r.node_back_max,
            r.floor_back_p50,
            r.floor_back_max,
            ratio,
            r.internal_running_p50,
            r.internal_running_max,
            r.baseline_running,
            r.deadlines_after_start
        );
        csv.push_str(&format!(
            "{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.2},{:.3},{:.3},{:.3},{:.0}\n",
            r.leases,
            r.node_back_p50,
            r.node_back_p99,
            r.node_back_max,
            r.floor_back_p50,
            r.floor_back_max,
            ratio,
            r.internal_running_p50,
            r.internal_running_max,
            r.baseline_running,
            r.deadlines_after_start
        ));
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, csv)?;
    println!("\nSaved as {}", out.display());
    Ok(())
}
