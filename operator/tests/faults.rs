//! Faults on the real control plane: the operator SIGKILLed at random moments while leases
//! are admitted, run, get notice and end; the API server and etcd restarted mid-run;
//! surprises under lent nodes. Afterwards every lease's bill covers its recorded seconds
//! exactly once, every notice was honoured in full, and no node keeps a tenant's marks.
//!
//! The kill moments come from a seed, printed at the start; `OFFPEAK_FAULT_SEED=N` replays
//! a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use offpeak::local::OperatorProcess;
use offpeak::names::{LEASE, RECLAIMING, TENANT};
use offpeak_api::{CapacityLease, CapacityLeaseStatus, LeasePhase, LineItem, UsageBill};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;
use serde_json::json;

/// A small deterministic generator (xorshift64*): the same seed, the same run.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

fn instant(t: &Option<offpeak_api::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::parse_from_rfc3339(t.as_str()).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn tenant_marks(node: &Node) -> bool {
    node.labels().contains_key(LEASE)
        || node.labels().contains_key(TENANT)
        || node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == TENANT || t.key == RECLAIMING))
}

/// The last status each lease was seen with, by namespace/name (names are never reused).
type History = Arc<Mutex<BTreeMap<String, CapacityLeaseStatus>>>;

fn watch_leases(client: &Client) -> History {
    let history: History = Arc::default();
    let out = history.clone();
    let api: Api<CapacityLease> = Api::all(client.clone());
    tokio::spawn(async move {
        watcher::watcher(api, watcher::Config::default())
            .for_each(|event| {
                if let Ok(Event::Apply(l) | Event::InitApply(l)) = event
                    && let Some(status) = l.status.clone()
                    && let Ok(mut h) = out.lock()
                {
                    h.insert(
                        format!("{}/{}", l.namespace().unwrap_or_default(), l.name_any()),
                        status,
                    );
                }
                futures::future::ready(())
            })
            .await;
    });
    history
}

/// Internal pods seen on a node lent to a tenant, sampled every half second. The nodes are
/// listed before and after the pods: a pod counts when its node was lent to the same lease
/// in both lists, so it was lent all along (a node returned between two lists, with an
/// internal pod placed on it at once, is not mistaken for one lent).
fn watch_for_internal_pods_on_lent_nodes(client: &Client) -> Arc<Mutex<BTreeSet<String>>> {
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let out = seen.clone();
    let client = client.clone();
    let lent_nodes = |nodes: kube::core::ObjectList<Node>| -> BTreeSet<(String, String)> {
        nodes
            .items
            .iter()
            .filter_map(|n| Some((n.name_any(), n.labels().get(LEASE)?.clone())))
            .collect()
    };
    tokio::spawn(async move {
        loop {
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await;
            let pods = Api::<Pod>::namespaced(client.clone(), "internal")
                .list(&ListParams::default())
                .await;
            let nodes_after = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await;
            if let (Ok(nodes), Ok(pods), Ok(nodes_after)) = (nodes, pods, nodes_after) {
                let after = lent_nodes(nodes_after);
                let lent: BTreeSet<String> = lent_nodes(nodes)
                    .intersection(&after)
                    .map(|(node, _)| node.clone())
                    .collect();
                for pod in pods.items {
                    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone())
                        && lent.contains(&node)
                        && let Ok(mut seen) = out.lock()
                    {
                        seen.insert(format!("{} on {node}", pod.name_any()));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    seen
}

/// The internal web tier of the pool: `replicas` pods of 12 cores.
async fn web(client: &Client, pool: &str, replicas: i32) -> anyhow::Result<()> {
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "internal"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"nodeSelector": {"offpeak.dev/test-pool": pool},
                                       "containers": [{"name": "web", "image": "web:1", "resources": {"requests": {"cpu": "12"}}}]}}},
    });
    Api::<Deployment>::namespaced(client.clone(), "internal")
        .patch(
            "web",
            &PatchParams::apply("faults").force(),
            &Patch::Apply(d),
        )
        .await?;
    Ok(())
}

/// Every ended lease's bill lines against its recorded life.
async fn bills_match(
    client: &Client,
    history: &BTreeMap<String, CapacityLeaseStatus>,
) -> anyhow::Result<usize> {
    let bills = Api::<UsageBill>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut checked = 0;
    for (key, status) in history {
        let (Some(admitted), Some(ended)) =
            (instant(&status.admitted_at), instant(&status.ended_at))
        else {
            continue;
        };
        let (namespace, name) = key.split_once('/').unwrap_or_default();
        let billed: i64 = bills
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(namespace))
            .flat_map(|b| b.spec.lines.iter())
            .filter(|l| l.lease.as_str() == name && l.item == LineItem::Cpu)
            .filter_map(|l| {
                Some(
                    (instant(&Some(l.end.clone()))? - instant(&Some(l.start.clone()))?)
                        .num_seconds(),
                )
            })
            .sum();
        anyhow::ensure!(
            billed == (ended - admitted).num_seconds(),
            "{key}: {billed}s billed, {}s recorded ({admitted} to {ended})",
            (ended - admitted).num_seconds()
        );
        checked += 1;
    }
    Ok(checked)
}

#[tokio::test]
async fn twenty_sigkills_lose_no_second_count_none_twice_and_shorten_no_notice()
-> anyhow::Result<()> {
    let seed: u64 = std::env::var("OFFPEAK_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64 | 1);
    eprintln!("faults: seed {seed} (replay with OFFPEAK_FAULT_SEED={seed})");
    let mut dice = Dice(seed);
    let plane = ControlPlane::start().await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    let dir = plane.dir().join("operator");
    std::fs::create_dir_all(&dir)?;
    let mut operator = OperatorProcess::start(
        &plane,
        env!("CARGO_BIN_EXE_offpeak").as_ref(),
        &dir,
        &["--bill-refresh=2s"],
    )?;
    operator.ready().await?;
    let notice = Duration::from_secs(10);
    pool_with(
        &plane,
        "kill",
        6,
        json!({"noticePeriod": "10s", "internalPressure": {"unschedulableFor": "2s"}}),
        json!({}),
    )
    .await?;
    let admin = plane.client().await?;
    plane.create_namespace("internal").await?;
    let tenants = [
        tenant(&plane, "acme-k", &["kill"]).await?,
        tenant(&plane, "globex-k", &["kill"]).await?,
    ];
    let history = watch_leases(&admin);
    let violations = watch_for_internal_pods_on_lent_nodes(&admin);

    // The tenants and the internal load go on while the operator is killed and restarted.
    let scenario = {
        let tenants = tenants.clone();
        let admin = admin.clone();
        let mut dice = Dice(seed ^ 0x9e37_79b9_7f4a_7c15);
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let who = dice.between(0, 1) as usize;
                let namespace = ["acme-k", "globex-k"][who];
                let leases: Api<CapacityLease> = Api::namespaced(tenants[who].clone(), namespace);
                match dice.between(0, 5) {
                    0..=2 => {
                        let class = if dice.between(0, 3) == 0 {
                            "Reserved"
                        } else {
                            "Spot"
                        };
                        let name = format!("l{n:03}");
                        n += 1;
                        let _ = leases
                            .create(
                                &PostParams::default(),
                                &lease(
                                    &name,
                                    "kill",
                                    class,
                                    "16",
                                    &format!("{}s", dice.between(20, 80)),
                                ),
                            )
                            .await;
                    }
                    3 => {
                        if let Ok(list) = leases.list(&ListParams::default()).await
                            && !list.items.is_empty()
                        {
                            let victim =
                                &list.items[dice.between(0, list.items.len() as u64 - 1) as usize];
                            let _ = leases.delete(&victim.name_any(), &Default::default()).await;
                        }
                    }
                    _ => {
                        let _ = web(&admin, "kill", dice.between(0, 3) as i32).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(dice.between(1500, 4000))).await;
            }
        })
    };

    // Twenty kills at random moments, each restart after 1 to 30 s.
    let mut outages: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(dice.between(1000, 6000))).await;
        operator.kill();
        let down = Utc::now();
        tokio::time::sleep(Duration::from_secs(dice.between(1, 30))).await;
        operator.restart()?;
        operator.ready().await?;
        outages.push((down, Utc::now()));
    }
    scenario.abort();
    let _ = web(&admin, "kill", 0).await;

    // Everything ends: the tenants cancel, the meter writes the ends, the bills settle.
    for (who, namespace) in ["acme-k", "globex-k"].iter().enumerate() {
        let leases: Api<CapacityLease> = Api::namespaced(tenants[who].clone(), namespace);
        for l in leases.list(&ListParams::default()).await?.items {
            let _ = leases.delete(&l.name_any(), &Default::default()).await;
        }
    }
    let all: Api<CapacityLease> = Api::all(admin.clone());
    offpeak_tests::eventually_value_within(
        "every lease gone",
        Duration::from_secs(180),
        || async {
            Ok(all
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let history = history.lock().map(|h| h.clone()).unwrap_or_default();

    // Every second once.
    let checked = bills_match(&admin, &history).await?;
    assert!(checked >= 10, "only {checked} leases ran: {history:#?}");
    // Every notice in full, and a deadline that passed while the operator was down kept
    // within 5 s of its return.
    for (key, status) in &history {
        let (Some(given), Some(deadline)) = (
            instant(&status.notice_given_at),
            instant(&status.reclaim_deadline),
        ) else {
            continue;
        };
        let ended = instant(&status.ended_at);
        assert!(
            (deadline - given).to_std()? >= notice,
            "{key}: notice {given} to {deadline}"
        );
        if let Some(ended) = ended
            && status.end_reason == Some(offpeak_api::EndReason::Reclaimed)
        {
            assert!(
                ended >= deadline,
                "{key} ended at {ended}, before its deadline {deadline}"
            );
            // The first moment from the deadline on when the operator was up and had 5 s
            // to act: after any outage the deadline fell in, or that began within 5 s of it.
            let mut due = deadline;
            for (down, up) in &outages {
                if *down <= due + chrono::Duration::seconds(5) && due <= *up {
                    due = due.max(*up);
                }
            }
            let late = (ended - due).num_milliseconds();
            assert!(
                late <= 5_000,
                "{key}: ended {late} ms after its deadline (or the operator's return)"
            );
        }
    }
    // No node keeps a tenant's marks, and no internal pod ran on a lent node.
    let marked: Vec<String> = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|n| tenant_marks(n))
        .map(|n| n.name_any())
        .collect();
    assert!(marked.is_empty(), "{marked:?} still marked with no lease");
    let violations = violations.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(violations.is_empty(), "{violations:?}");
    Ok(())
}

#[tokio::test]
async fn the_api_server_and_etcd_restarted_mid_notice_lose_nothing() -> anyhow::Result<()> {
    let mut plane = ControlPlane::start().await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    let dir = plane.dir().join("operator");
    std::fs::create_dir_all(&dir)?;
    let operator = OperatorProcess::start(
        &plane,
        env!("CARGO_BIN_EXE_offpeak").as_ref(),
        &dir,
        &["--bill-refresh=2s"],
    )?;
    operator.ready().await?;
    pool_with(
        &plane,
        "ar",
        2,
        json!({"noticePeriod": "20s", "internalPressure": {"unschedulableFor": "2s"}}),
        json!({}),
    )
    .await?;
    let user = tenant(&plane, "acme-ar", &["ar"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-ar");
    for name in ["stays", "goes"] {
        leases
            .create(
                &PostParams::default(),
                &lease(name, "ar", "Spot", "16", "1h"),
            )
            .await?;
        wait_phase(&leases, name, LeasePhase::Active).await?;
    }
    let admin = plane.client().await?;
    plane.create_namespace("internal").await?;
    web(&admin, "ar", 1).await?;
    let noticed = eventually_value("a notice", || async {
        Ok(leases
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|l| l.status.as_ref().and_then(|s| s.phase) == Some(LeasePhase::Reclaiming)))
    })
    .await?;
    let deadline = instant(
        &noticed
            .status
            .as_ref()
            .and_then(|s| s.reclaim_deadline.clone()),
    )
    .expect("a deadline");
    let away = plane.restart_api_server().await?;
    eprintln!(
        "faults: the API server and etcd were away {:.1}s",
        away.as_secs_f64()
    );
    let user = plane.user_client("acme-ar-user", &[]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-ar");
    let name = noticed.name_any();
    let ended = wait_phase(&leases, &name, LeasePhase::Ended)
        .await?
        .status
        .expect("status");
    assert!(
        instant(&ended.ended_at)
            .is_some_and(|e| e >= deadline && (e - deadline).num_seconds() <= 5),
        "{ended:?}"
    );
    let other = if name == "stays" { "goes" } else { "stays" };
    assert_eq!(
        leases.get(other).await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );
    // The operator lived through it, and billed the ended lease's seconds once.
    let log = std::fs::read_to_string(dir.join("operator.log"))?;
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
    let metrics = operator.scrape().await?;
    assert!(
        metrics.contains("offpeak_leader 1"),
        "the operator stopped leading"
    );
    let admin = plane.client().await?;
    let history = BTreeMap::from([(format!("acme-ar/{name}"), ended)]);
    eventually("the bill to count the lease once", || async {
        Ok(bills_match(&admin, &history).await.is_ok_and(|n| n == 1))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn surprises_under_lent_nodes_end_in_conditions_events_and_consistent_bills()
-> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    let dir = plane.dir().join("operator");
    std::fs::create_dir_all(&dir)?;
    let _operator = OperatorProcess::start(
        &plane,
        env!("CARGO_BIN_EXE_offpeak").as_ref(),
        &dir,
        &["--bill-refresh=2s"],
    )?;
    _operator.ready().await?;
    let nodes = pool_with(&plane, "sp", 4, json!({}), json!({})).await?;
    let user = tenant(&plane, "acme-sp", &["sp"]).await?;
    let admin = plane.client().await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-sp");
    leases
        .create(
            &PostParams::default(),
            &lease("wide", "sp", "Spot", "48", "1h"),
        )
        .await?;
    let active = wait_phase(&leases, "wide", LeasePhase::Active)
        .await?
        .status
        .expect("status");
    let bound: Vec<String> = active.bound_nodes.iter().map(|n| n.to_string()).collect();
    assert_eq!(bound.len(), 3);
    let node_api: Api<Node> = Api::all(admin.clone());

    // Each binding lasts whole seconds (the bill's resolution) before the next surprise.
    let a_few_seconds = || tokio::time::sleep(std::time::Duration::from_secs(2));
    a_few_seconds().await;
    // A lent node deleted by someone else: the lease goes on with two, billed for two.
    node_api.delete(&bound[0], &Default::default()).await?;
    let lost = eventually_value("the lease to know it lost a node", || async {
        let s = leases.get("wide").await?.status.unwrap_or_default();
        Ok((s.bound_nodes.len() == 2).then_some(s))
    })
    .await?;
    assert!(
        lost.conditions
            .iter()
            .any(|c| c.type_ == "NodesLost" && c.message.contains(&bound[0])),
        "{lost:?}"
    );
    assert_eq!(lost.bindings.len(), 2);
    assert_eq!(lost.bindings[1].cpu.0, "32");
    a_few_seconds().await;
    // A node relabelled out of its pool while lent: it goes back, the lease holds one.
    node_api
        .patch(
            &bound[1],
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"offpeak.dev/test-pool": "elsewhere"}}})),
        )
        .await?;
    eventually(
        "the relabelled node unmarked and dropped from the lease",
        || async {
            let s = leases.get("wide").await?.status.unwrap_or_default();
            Ok(s.bound_nodes.len() == 1 && !tenant_marks(&node_api.get(&bound[1]).await?))
        },
    )
    .await?;
    let events = events_of(&admin, "acme-sp", "wide").await?;
    assert!(
        events.iter().filter(|(r, _)| r == "NodesLost").count() >= 2,
        "{events:?}"
    );
    // The rate card deleted mid-period: the lease runs on, new Spot leases wait.
    Api::<offpeak_api::RateCard>::all(admin.clone())
        .delete("sp", &Default::default())
        .await?;
    leases
        .create(
            &PostParams::default(),
            &lease("unpriced", "sp", "Spot", "16", "1h"),
        )
        .await?;
    wait_pending(&leases, "unpriced", "NoSpotPrice").await?;
    assert_eq!(
        leases.get("wide").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );

    a_few_seconds().await;
    // The bill: 48 cores until the first loss, 32 until the second, 16 after.
    leases.delete("wide", &Default::default()).await?;
    let ended = wait_phase(&leases, "wide", LeasePhase::Ended)
        .await?
        .status
        .expect("status");
    let bills: Api<UsageBill> = Api::namespaced(user, "acme-sp");
    let name = format!("acme-sp-{}", Utc::now().format("%Y-%m"));
    let bill = eventually_value("the bill of the lease to its end", || async {
        Ok(bills.get_opt(&name).await?.filter(|b| {
            b.spec.lines.iter().any(|l| {
                l.lease.as_str() == "wide"
                    && l.item == LineItem::Cpu
                    && instant(&Some(l.end.clone())) == instant(&ended.ended_at)
            })
        }))
    })
    .await?;
    let mut cpu: Vec<(String, String, String)> = bill
        .spec
        .lines
        .iter()
        .filter(|l| l.lease.as_str() == "wide" && l.item == LineItem::Cpu)
        .map(|l| (l.start.to_string(), l.end.to_string(), l.quantity.clone()))
        .collect();
    cpu.sort();
    let quantities: Vec<&str> = cpu.iter().map(|(_, _, q)| q.as_str()).collect();
    assert_eq!(quantities, ["48", "32", "16"], "{cpu:?}");
    for pair in cpu.windows(2) {
        assert_eq!(
            pair[0].1, pair[1].0,
            "no second lost or doubled between bindings"
        );
    }
    let _ = nodes;
    Ok(())
}
