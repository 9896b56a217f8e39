//! The operator on the real control plane: tenants get namespaces, RBAC and quota; leases
//! are admitted, bound, confined and returned; Reserved leases respect peak reservations;
//! what can never fit is rejected; busy nodes are never lent; malformed input becomes
//! conditions and events. Each test has its own pool, nodes, tenant and namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Event, Node, Pod, PodSpec};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use offpeak::names::{LEASE, LEASE_NAME, TENANT};
use offpeak_api::{CapacityLease, CapacityPool, LeasePhase, PeakReservation};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;
use offpeak_tests::{deployment, node_of, wait_running};
use serde_json::json;
use tokio::sync::OnceCell;

type TestResult = anyhow::Result<()>;

/// The shared control plane with the operator running beside it.
async fn operator() -> anyhow::Result<&'static ControlPlane> {
    Ok(operator_with_metrics().await?.0)
}

/// The same, with the address of the operator's metrics endpoint.
async fn operator_with_metrics() -> anyhow::Result<(&'static ControlPlane, std::net::SocketAddr)> {
    static STARTED: OnceCell<std::net::SocketAddr> = OnceCell::const_new();
    let plane = ControlPlane::shared().await?;
    let metrics = STARTED
        .get_or_try_init(|| async {
            offpeak::local::start(plane, offpeak::local::settings(Duration::from_secs(5)))
                .await
                .map(|o| o.metrics)
        })
        .await?;
    Ok((plane, *metrics))
}

#[tokio::test]
async fn a_lease_is_admitted_bound_confined_and_returned_with_quota_following() -> TestResult {
    let plane = operator().await?;
    let nodes = pool_with_nodes(plane, "lease-a", 4).await?;
    let alice = tenant(plane, "acme-a", &["lease-a"]).await?;
    let admin = plane.client().await?;
    assert_eq!(
        quota_cpu(&admin, "acme-a").await?.as_deref(),
        Some("0"),
        "no lease, no quota"
    );

    // The tenant rents 32 cores: two whole 16-core nodes.
    let leases: Api<CapacityLease> = Api::namespaced(alice.clone(), "acme-a");
    let created = leases
        .create(
            &PostParams::default(),
            &lease("render", "lease-a", "Spot", "32", "1h"),
        )
        .await?;
    // The finalizer comes with the create (the lease webhook), not as a write of its own.
    assert_eq!(
        created.finalizers(),
        [offpeak::names::FINALIZER.to_string()]
    );
    let active = wait_phase(&leases, "render", LeasePhase::Active).await?;
    let status = active.status.clone().expect("status");
    let bound: Vec<String> = status.bound_nodes.iter().map(|n| n.to_string()).collect();
    assert_eq!(bound.len(), 2, "{bound:?}");
    assert!(bound.iter().all(|n| nodes.contains(n)));
    assert_eq!(status.node_count, Some(2));
    assert!(status.admitted_at.is_some() && status.ends_at.is_some());
    assert_eq!(status.observed_generation, active.metadata.generation);
    assert_eq!(admitted(&active).0, "Admitted");
    let uid = active.metadata.uid.clone().expect("a uid");
    for node in &bound {
        let node = Api::<Node>::all(admin.clone()).get(node).await?;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(TENANT).map(String::as_str), Some("acme-a"));
        // The lease is marked by its UID, its readable name kept beside it.
        assert_eq!(labels.get(LEASE), Some(&uid));
        assert_eq!(
            node.metadata
                .annotations
                .unwrap_or_default()
                .get(LEASE_NAME)
                .map(String::as_str),
            Some("acme-a/render")
        );
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        assert!(
            taints.iter().any(|t| t.key == TENANT
                && t.value.as_deref() == Some("acme-a")
                && t.effect == "NoSchedule"),
            "{taints:?}"
        );
    }
    eventually("the quota to follow the lease", || async {
        Ok(quota_cpu(&admin, "acme-a").await?.as_deref() == Some("32"))
    })
    .await?;

    // The tenant's pods land on its nodes, with no placement of its own.
    Api::<Deployment>::namespaced(alice.clone(), "acme-a")
        .create(&PostParams::default(), &deployment("render", 4, None))
        .await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "acme-a");
    for pod in wait_running(&pods, "app=render", 4, WAIT).await? {
        let node = node_of(&pod);
        assert!(
            bound.contains(&node),
            "pod on {node}, not on the lease's nodes {bound:?}"
        );
    }

    // The cost estimate is refreshed within the refresh interval (5 s here): the seconds
    // from admission to costAsOf × 32 cores × 0.04 per core-hour, at 4 decimals.
    let refreshed = eventually_value("a refreshed cost so far", || async {
        let status = leases.get("render").await?.status.unwrap_or_default();
        Ok((status.cost_as_of != status.admitted_at).then_some(status))
    })
    .await?;
    let instant = |t: &Option<offpeak_api::Timestamp>| {
        chrono::DateTime::parse_from_rfc3339(t.as_ref().expect("a time").as_str())
            .expect("RFC 3339")
    };
    let seconds = (instant(&refreshed.cost_as_of) - instant(&refreshed.admitted_at)).num_seconds();
    let cost = (rust_decimal::Decimal::from(seconds * 32 * 4)
        / rust_decimal::Decimal::from(360_000))
    .round_dp_with_strategy(4, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(
        refreshed.cost_summary.as_deref(),
        Some(format!("{cost:.4} USD").as_str()),
        "after {seconds}s"
    );

    // Deleting the lease evicts the tenant's pods and returns the nodes before it goes.
    leases.delete("render", &DeleteParams::default()).await?;
    eventually("the lease to be gone", || async {
        Ok(leases.get_opt("render").await?.is_none())
    })
    .await?;
    for node in &bound {
        let labels = Api::<Node>::all(admin.clone())
            .get(node)
            .await?
            .metadata
            .labels
            .unwrap_or_default();
        assert!(
            !labels.contains_key(LEASE) && !labels.contains_key(TENANT),
            "{node} still lent: {labels:?}"
        );
    }
    eventually("the quota to drop back to 0", || async {
        Ok(quota_cpu(&admin, "acme-a").await?.as_deref() == Some("0"))
    })
    .await?;
    let events = Api::<Event>::namespaced(admin, "acme-a")
        .list(&ListParams::default())
        .await?;
    let reasons: Vec<String> = events
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(reasons.iter().any(|r| r == "Admitted"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "NodesReturned"), "{reasons:?}");
    Ok(())
}

#[tokio::test]
async fn a_reserved_lease_is_refused_for_a_later_peak_window_while_spot_of_the_same_size_is_admitted()
-> TestResult {
    let plane = operator().await?;
    pool_with_nodes(plane, "lease-b", 2).await?;
    let user = tenant(plane, "acme-b", &["lease-b"]).await?;
    let admin = plane.client().await?;
    // In 30 minutes, the whole pool goes back to internal use for an hour.
    let start = chrono::Utc::now() + chrono::Duration::minutes(30);
    let end = start + chrono::Duration::hours(1);
    let peak: PeakReservation = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "PeakReservation",
        "metadata": {"name": "lease-b-launch"},
        "spec": {
            "pool": "lease-b", "keep": {"percent": 100},
            "window": {
                "start": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "end": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        },
    }));
    Api::<PeakReservation>::all(admin)
        .create(&PostParams::default(), &peak)
        .await?;

    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-b");
    leases
        .create(
            &PostParams::default(),
            &lease("steady", "lease-b", "Reserved", "16", "2h"),
        )
        .await?;
    let refused = wait_phase(&leases, "steady", LeasePhase::Rejected).await?;
    let (reason, message) = admitted(&refused);
    assert_eq!(reason, "PeakReservation");
    assert!(
        message.contains("peak reservation lease-b-launch")
            && message.contains("at most 0 node(s)"),
        "{message}"
    );

    leases
        .create(
            &PostParams::default(),
            &lease("burst", "lease-b", "Spot", "16", "2h"),
        )
        .await?;
    let spot = wait_phase(&leases, "burst", LeasePhase::Active).await?;
    assert_eq!(spot.status.map(|s| s.bound_nodes.len()), Some(1));
    Ok(())
}

#[tokio::test]
async fn a_lease_larger_than_its_pool_is_rejected_with_the_shortfall() -> TestResult {
    let plane = operator().await?;
    pool_with_nodes(plane, "lease-c", 2).await?;
    let user = tenant(plane, "acme-c", &["lease-c"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-c");
    leases
        .create(
            &PostParams::default(),
            &lease("huge", "lease-c", "Spot", "64", "1h"),
        )
        .await?;
    let rejected = wait_phase(&leases, "huge", LeasePhase::Rejected).await?;
    let (reason, message) = admitted(&rejected);
    assert_eq!(reason, "ExceedsPool");
    assert!(message.contains("short of cpu 32"), "{message}");
    Ok(())
}

#[tokio::test]
async fn a_node_running_an_internal_pod_is_never_lent() -> TestResult {
    let plane = operator().await?;
    let nodes = pool_with_nodes(plane, "lease-d", 2).await?;
    let user = tenant(plane, "acme-d", &["lease-d"]).await?;
    let admin = plane.client().await?;
    plane.create_namespace("internal-d").await?;
    let busy = &nodes[0];
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("batch".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(busy.clone()),
            containers: vec![Container {
                name: "batch".into(),
                image: Some("batch:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Pod>::namespaced(admin.clone(), "internal-d")
        .create(&PostParams::default(), &pod)
        .await?;
    let pools: Api<CapacityPool> = Api::all(admin);
    eventually("the pool to count one lendable node", || async {
        Ok(pools
            .get("lease-d")
            .await?
            .status
            .and_then(|s| s.lendable_nodes)
            == Some(1))
    })
    .await?;

    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-d");
    leases
        .create(
            &PostParams::default(),
            &lease("both", "lease-d", "Spot", "32", "1h"),
        )
        .await?;
    wait_pending(&leases, "both", "InsufficientCapacity").await?;
    leases
        .create(
            &PostParams::default(),
            &lease("one", "lease-d", "Spot", "16", "1h"),
        )
        .await?;
    let one = wait_phase(&leases, "one", LeasePhase::Active).await?;
    let bound: Vec<String> = one
        .status
        .map(|s| s.bound_nodes.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    assert_eq!(bound, vec![nodes[1].clone()], "only the idle node is lent");
    Ok(())
}

/// The pool's Ready condition, as (status, reason, message).
fn pool_ready(pool: &CapacityPool) -> Option<(bool, String, String)> {
    let ready = pool
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        ready.status == offpeak_api::ConditionStatus::True,
        ready.reason.clone(),
        ready.message.clone(),
    ))
}

#[tokio::test]
async fn malformed_or_missing_references_become_conditions_and_events() -> TestResult {
    let plane = operator().await?;
    pool_with_nodes(plane, "lease-e", 1).await?;
    let user = tenant(plane, "acme-e", &["no-such-pool", "lease-e"]).await?;
    let admin = plane.client().await?;

    // A lease for a pool that does not exist.
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-e");
    leases
        .create(
            &PostParams::default(),
            &lease("nowhere", "no-such-pool", "Spot", "1", "1h"),
        )
        .await?;
    let waiting = wait_pending(&leases, "nowhere", "PoolNotFound").await?;
    let not_found = "CapacityPool no-such-pool does not exist; the lease waits until it does";
    assert_eq!(admitted(&waiting).1, not_found);
    eventually("a PoolNotFound event", || async {
        Ok(events_of(&admin, "acme-e", "nowhere").await?
            == [("PoolNotFound".to_string(), not_found.to_string())])
    })
    .await?;

    // A lease whose end time has passed can never be served.
    let mut past = lease("past", "lease-e", "Spot", "1", "1h");
    past.spec.duration = None;
    past.spec.end_time = Some(offpeak_api::Timestamp::new("2020-01-01T00:00:00Z"));
    leases.create(&PostParams::default(), &past).await?;
    let rejected = wait_phase(&leases, "past", LeasePhase::Rejected).await?;
    let (reason, message) = admitted(&rejected);
    assert_eq!(reason, "InvalidSpec");
    // It names the end and the instant of the pass that judged it, the instant the
    // condition moved (to the second).
    let judged_at = message
        .strip_prefix("the lease's end 2020-01-01T00:00:00+00:00 is not after ")
        .unwrap_or_else(|| panic!("{message}"));
    let judged_at = chrono::DateTime::parse_from_rfc3339(judged_at)?.with_timezone(&chrono::Utc);
    let condition = rejected
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Admitted"))
        .expect("an Admitted condition");
    assert_eq!(
        condition.last_transition_time.as_str(),
        judged_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(
        message,
        format!(
            "the lease's end 2020-01-01T00:00:00+00:00 is not after {}",
            judged_at.to_rfc3339()
        )
    );
    eventually("an InvalidSpec event", || async {
        Ok(events_of(&admin, "acme-e", "past").await?
            == [("InvalidSpec".to_string(), format!("Rejected: {message}"))])
    })
    .await?;

    // A pool whose selector selects nothing.
    let empty: CapacityPool = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool",
        "metadata": {"name": "lease-e-empty"},
        "spec": {"nodeSelector": {"offpeak.dev/test-pool": "nothing-here"}},
    }));
    let pools: Api<CapacityPool> = Api::all(admin.clone());
    pools.create(&PostParams::default(), &empty).await?;
    let no_nodes = eventually_value("a Ready condition on the empty pool", || async {
        Ok(pool_ready(&pools.get("lease-e-empty").await?))
    })
    .await?;
    assert_eq!(
        no_nodes,
        (
            false,
            "NoNodes".to_string(),
            "the node selector selects no node".to_string()
        )
    );

    // A node that reports no allocatable counts as empty (and, with no Ready condition,
    // is not lendable); the pool still reports.
    let nodes: Api<Node> = Api::all(admin.clone());
    let node = |name: &str, pool: &str| Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "offpeak.dev/test-pool".to_string(),
                pool.to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes
        .create(
            &PostParams::default(),
            &node("lease-e-bare", "lease-e-bare"),
        )
        .await?;
    let bare_pool: CapacityPool = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool",
        "metadata": {"name": "lease-e-bare"},
        "spec": {"nodeSelector": {"offpeak.dev/test-pool": "lease-e-bare"}},
    }));
    pools.create(&PostParams::default(), &bare_pool).await?;
    let bare = eventually_value("the bare node's pool to report it", || async {
        let pool = pools.get("lease-e-bare").await?;
        Ok((pool.status.as_ref().and_then(|s| s.nodes) == Some(1)).then_some(pool))
    })
    .await?;
    assert_eq!(
        pool_ready(&bare),
        Some((
            true,
            "Observed".to_string(),
            "1 node(s): 0 lendable, 0 lent, 0 kept as headroom".to_string()
        ))
    );
    assert_eq!(bare.status.and_then(|s| s.lendable_nodes), Some(0));

    // A node whose allocatable the operator cannot count: the pool says which and why.
    nodes
        .create(
            &PostParams::default(),
            &node("lease-e-huge", "lease-e-huge"),
        )
        .await?;
    let allocatable = json!({"status": {"allocatable": {"cpu": "10E", "memory": "64Gi"}}});
    nodes
        .patch_status(
            "lease-e-huge",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&allocatable),
        )
        .await?;
    let huge_pool: CapacityPool = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool",
        "metadata": {"name": "lease-e-huge"},
        "spec": {"nodeSelector": {"offpeak.dev/test-pool": "lease-e-huge"}},
    }));
    pools.create(&PostParams::default(), &huge_pool).await?;
    let malformed = eventually_value("MalformedNodes on the pool", || async {
        Ok(pool_ready(&pools.get("lease-e-huge").await?).filter(|r| r.1 == "MalformedNodes"))
    })
    .await?;
    assert_eq!(
        malformed,
        (
            false,
            "MalformedNodes".to_string(),
            "node lease-e-huge: \"10E\" is not a Kubernetes quantity: it is too large".to_string()
        )
    );

    // The operator keeps serving: the lease above still has its condition.
    assert_eq!(
        admitted(&leases.get("nowhere").await?),
        ("PoolNotFound".to_string(), not_found.to_string())
    );
    Ok(())
}

#[tokio::test]
async fn tenant_limits_hold_leases_back_with_their_reason_and_the_pool_gauges_count_nodes()
-> TestResult {
    let (plane, metrics) = operator_with_metrics().await?;
    pool_with_nodes(plane, "lease-f", 2).await?;
    pool_with_nodes(plane, "lease-f-other", 1).await?;
    // Credit limit 1000 USD; a Spot lease's worst case is maxPricePerHour 4.50 x its term.
    let user = tenant(plane, "acme-f", &["lease-f"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-f");

    leases
        .create(
            &PostParams::default(),
            &lease("elsewhere", "lease-f-other", "Spot", "16", "1h"),
        )
        .await?;
    let rejected = wait_phase(&leases, "elsewhere", LeasePhase::Rejected).await?;
    let (reason, message) = admitted(&rejected);
    assert_eq!(reason, "PoolNotAllowed");
    assert!(
        message.contains("may lease from pools [lease-f], not lease-f-other"),
        "{message}"
    );

    // 300 h at up to 4.50 an hour is 1350, above the 1000 limit.
    leases
        .create(
            &PostParams::default(),
            &lease("too-long", "lease-f", "Spot", "16", "300h"),
        )
        .await?;
    wait_pending(&leases, "too-long", "CreditLimit").await?;
    let (_, message) = admitted(&leases.get("too-long").await?);
    assert!(message.contains("above the credit limit 1000"), "{message}");

    // Nothing was admitted: the pool's gauges show both nodes lendable, none lent. (The
    // leases gauge counts every test's leases here; tests/tests/metrics.rs pins it.)
    let text = scrape(metrics).await?;
    assert!(
        text.lines()
            .any(|l| l.starts_with("offpeak_reconciles_total{controller=\"pool\"} ")),
        "{text}"
    );
    let mut gauges: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("offpeak_pool_nodes{pool=\"lease-f\","))
        .collect();
    gauges.sort();
    assert_eq!(
        gauges,
        [
            "offpeak_pool_nodes{pool=\"lease-f\",state=\"headroom\"} 0",
            "offpeak_pool_nodes{pool=\"lease-f\",state=\"lendable\"} 2",
            "offpeak_pool_nodes{pool=\"lease-f\",state=\"lent\"} 0",
            "offpeak_pool_nodes{pool=\"lease-f\",state=\"total\"} 2",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_lease_ends_at_its_term_and_its_nodes_go_back() -> TestResult {
    let plane = operator().await?;
    let nodes = pool_with_nodes(plane, "lease-g", 1).await?;
    let user = tenant(plane, "acme-g", &["lease-g"]).await?;
    let admin = plane.client().await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-g");
    // Whole seconds, as endTime is written.
    let end =
        chrono::SubsecRound::trunc_subsecs(chrono::Utc::now() + chrono::Duration::seconds(15), 0);
    let mut short: CapacityLease = lease("short", "lease-g", "Spot", "16", "1h");
    short.spec.duration = None;
    short.spec.end_time = Some(offpeak_api::Timestamp::new(
        end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ));
    leases.create(&PostParams::default(), &short).await?;
    let active = wait_phase(&leases, "short", LeasePhase::Active).await?;
    assert_eq!(
        active.status.and_then(|s| s.ends_at).map(|t| t.to_string()),
        Some(end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    // The end is recorded first, then the node goes back.
    let ended = eventually_value("the lease's node to be back", || async {
        let l = leases.get("short").await?;
        let back = l.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "NodesReturned" && c.status == offpeak_api::ConditionStatus::True
            })
        });
        Ok(back.then_some(l))
    })
    .await?;
    let status = ended.status.clone().expect("a status");
    assert_eq!(status.phase, Some(LeasePhase::Ended));
    assert_eq!(admitted(&ended).0, "TermEnded");
    assert_eq!(status.end_reason, Some(offpeak_api::EndReason::Expired));
    let ended_at =
        chrono::DateTime::parse_from_rfc3339(status.ended_at.expect("endedAt").as_str())?;
    assert!(
        ended_at >= end,
        "ended at {ended_at}, before its end time {end}"
    );
    let node = Api::<Node>::all(admin.clone()).get(&nodes[0]).await?;
    let labels = node.metadata.labels.unwrap_or_default();
    assert!(
        !labels.contains_key(LEASE) && !labels.contains_key(TENANT),
        "the node is still lent: {labels:?}"
    );
    assert!(
        node.spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .all(|t| t.key != TENANT),
        "the tenant's taint stayed"
    );
    eventually("the quota to drop back to 0", || async {
        Ok(quota_cpu(&admin, "acme-g").await?.as_deref() == Some("0"))
    })
    .await?;
    Ok(())
}

/// The operator's count of node writes the API server refused as conflicting (409).
async fn node_conflicts(metrics: std::net::SocketAddr) -> anyhow::Result<u64> {
    Ok(scrape(metrics)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("offpeak_writes_total{kind=\"node\",outcome=\"conflict\"} "))
        .map_or(Ok(0), str::parse)?)
}

#[tokio::test]
async fn internal_pods_stay_off_lent_nodes() -> TestResult {
    let (plane, metrics) = operator_with_metrics().await?;
    let nodes = pool_with_nodes(plane, "lease-h", 3).await?;
    let user = tenant(plane, "acme-h", &["lease-h"]).await?;
    let admin = plane.client().await?;
    let node_api: Api<Node> = Api::all(admin.clone());
    // Someone else's taint, there before the operator lends the nodes.
    let maintenance = k8s_openapi::api::core::v1::Taint {
        key: "example.com/maintenance".into(),
        value: Some("soon".into()),
        effect: "PreferNoSchedule".into(),
        time_added: None,
    };
    for node in &nodes[..2] {
        let patch = json!({"spec": {"taints": [maintenance]}});
        node_api
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    // While the operator binds 32 cores (two nodes), someone keeps changing the first node:
    // a bind planned on the version before is refused (409) and planned again.
    let conflicts_before = node_conflicts(metrics).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-h");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (node_api, node, stop) = (node_api.clone(), nodes[0].clone(), stop.clone());
        tokio::spawn(async move {
            let mut written = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let patch = json!({"metadata": {"labels": {"example.com/touched": (written + 1).to_string()}}});
                node_api
                    .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                written += 1;
            }
            anyhow::Ok(written)
        })
    };
    leases
        .create(
            &PostParams::default(),
            &lease("render", "lease-h", "Spot", "32", "1h"),
        )
        .await?;
    let conflicted = offpeak_tests::eventually(
        "a bind refused as conflicting",
        Duration::from_secs(20),
        || async { Ok(node_conflicts(metrics).await? > conflicts_before) },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let touched = writer.await??;
    conflicted?;
    let active = wait_phase(&leases, "render", LeasePhase::Active).await?;
    let uid = active.metadata.uid.clone().expect("a uid");
    let mut bound: Vec<String> = active
        .status
        .map(|s| s.bound_nodes.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    bound.sort();
    assert_eq!(bound, nodes[..2], "the two nodes with the taint are lent");

    // Both changes landed: the operator's marks, the other writer's last label, and the
    // taint that was there before, kept beside the tenant's.
    for node in &bound {
        let node = node_api.get(node).await?;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(TENANT).map(String::as_str), Some("acme-h"));
        assert_eq!(labels.get(LEASE), Some(&uid));
        assert_eq!(
            node.metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .get(LEASE_NAME)
                .map(String::as_str),
            Some("acme-h/render")
        );
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        assert_eq!(
            taints,
            [
                maintenance.clone(),
                offpeak::desired::binding::tenant_taint("acme-h")
            ],
            "taints of {}",
            node.metadata.name.unwrap_or_default()
        );
    }
    let first = node_api.get(&nodes[0]).await?;
    assert_eq!(
        first
            .metadata
            .labels
            .unwrap_or_default()
            .get("example.com/touched")
            .cloned(),
        Some(touched.to_string())
    );

    // Internal pods that may run anywhere in the pool all land on the node not lent.
    plane.create_namespace("internal-h").await?;
    let selector = BTreeMap::from([("offpeak.dev/test-pool".to_string(), "lease-h".to_string())]);
    Api::<Deployment>::namespaced(admin.clone(), "internal-h")
        .create(
            &PostParams::default(),
            &deployment("web", 6, Some(selector)),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(admin, "internal-h");
    for pod in wait_running(&pods, "app=web", 6, WAIT).await? {
        assert_eq!(node_of(&pod), nodes[2], "internal pod on a lent node");
    }
    Ok(())
}
