//! Reclaim with notice on the real control plane: a peak reservation's window takes the
//! nodes back as its notice runs out, internal pods that cannot be scheduled take back the
//! cheapest Spot lease first, a spot price above a lease's maximum ends it, a Reserved lease
//! goes only in an emergency (and earns its credit), the minimum runtime is kept, and a
//! tenant cannot keep a node past its deadline. Each test has its own pool and tenants.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use offpeak::names::{LEASE, RECLAIMING, TENANT};
use offpeak_api::{CapacityLease, CapacityLeaseStatus, EndReason, LeasePhase, PeakReservation};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;
use offpeak_tests::{deployment, node_of, wait_running};
use serde_json::json;
use tokio::sync::OnceCell;

type TestResult = anyhow::Result<()>;

async fn operator() -> anyhow::Result<&'static ControlPlane> {
    static STARTED: OnceCell<()> = OnceCell::const_new();
    let plane = ControlPlane::shared().await?;
    STARTED
        .get_or_try_init(|| async {
            offpeak::local::start(plane, offpeak::local::settings(Duration::from_secs(60)))
                .await
                .map(|_| ())
        })
        .await?;
    Ok(plane)
}

fn instant(t: &Option<offpeak_api::Timestamp>) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t.as_ref().expect("a time").as_str())
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn condition(status: &CapacityLeaseStatus, type_: &str) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                format!("{:?}", c.status),
                c.reason.clone(),
                c.message.clone(),
            )
        })
}

async fn status_when(
    leases: &Api<CapacityLease>,
    name: &str,
    what: &str,
    check: impl Fn(&CapacityLeaseStatus) -> bool,
) -> anyhow::Result<CapacityLeaseStatus> {
    eventually_value(&format!("lease {name}: {what}"), || async {
        let status = leases.get(name).await?.status.unwrap_or_default();
        Ok(check(&status).then_some(status))
    })
    .await
}

/// An internal Deployment on the pool's nodes, each pod requesting `cpu` cores.
async fn internal(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
    pool: &str,
    replicas: i32,
    cpu: &str,
) -> anyhow::Result<Api<Pod>> {
    plane.create_namespace(namespace).await?;
    let client = plane.client().await?;
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
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.into()),
            )])),
            ..Default::default()
        });
    }
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &d)
        .await?;
    Ok(Api::namespaced(client, namespace))
}

/// Whether any of the node's taints or labels is a tenant's.
fn lent(node: &Node) -> bool {
    node.labels().contains_key(LEASE)
        || node.labels().contains_key(TENANT)
        || node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == TENANT || t.key == RECLAIMING))
}

/// Waits until none of `nodes` carries a tenant's marks; returns when that was seen.
async fn nodes_back(plane: &ControlPlane, nodes: &[String]) -> anyhow::Result<DateTime<Utc>> {
    let api: Api<Node> = Api::all(plane.client().await?);
    eventually_value("the nodes back in the pool", || async {
        for name in nodes {
            if lent(&api.get(name).await?) {
                return Ok(None);
            }
        }
        Ok(Some(Utc::now()))
    })
    .await
}

#[tokio::test]
async fn a_peak_window_reclaims_with_notice_that_runs_out_as_it_starts() -> TestResult {
    let plane = operator().await?;
    let nodes = pool_with(
        plane,
        "rc-peak",
        2,
        json!({"noticePeriod": "60s", "reclaimAdvisory": "60s"}),
        json!({}),
    )
    .await?;
    let user = tenant(plane, "acme-rp", &["rc-peak"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-rp");
    leases
        .create(
            &PostParams::default(),
            &lease("render", "rc-peak", "Spot", "32", "8h"),
        )
        .await?;
    wait_phase(&leases, "render", LeasePhase::Active).await?;
    Api::<Deployment>::namespaced(user.clone(), "acme-rp")
        .create(&PostParams::default(), &deployment("render", 2, None))
        .await?;
    let admin = plane.client().await?;
    let tenant_pods: Api<Pod> = Api::namespaced(admin.clone(), "acme-rp");
    wait_running(&tenant_pods, "app=render", 2, WAIT).await?;
    // Internal load waits for the pool: both nodes are lent.
    let web = internal(plane, "internal-rp", "web", "rc-peak", 2, "8").await?;

    // Peak season starts in 90 s and keeps the whole pool internal.
    let start = chrono::SubsecRound::trunc_subsecs(Utc::now() + chrono::Duration::seconds(90), 0);
    let reservation: PeakReservation = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "PeakReservation",
        "metadata": {"name": "rc-peak-launch"},
        "spec": {"pool": "rc-peak", "keep": {"percent": 100},
                 "window": {"start": rfc3339(start), "end": rfc3339(start + chrono::Duration::minutes(30))}},
    }));
    let reservations: Api<PeakReservation> = Api::all(admin.clone());
    reservations
        .create(&PostParams::default(), &reservation)
        .await?;

    // Told first that it is likely, then notice at the window's start less 60 s.
    let likely = status_when(&leases, "render", "ReclaimLikely", |s| {
        condition(s, "ReclaimLikely").is_some_and(|c| c.0 == "True")
    })
    .await?;
    assert_eq!(likely.phase, Some(LeasePhase::Active));
    let message = format!(
        "peak reservation rc-peak-launch lets pool lend at most 0 node(s) from {}",
        rfc3339(start)
    );
    assert_eq!(
        condition(&likely, "ReclaimLikely"),
        Some(("True".into(), "PeakReservation".into(), message.clone()))
    );
    let noticed = status_when(&leases, "render", "Reclaiming", |s| {
        s.phase == Some(LeasePhase::Reclaiming)
    })
    .await?;
    assert_eq!(
        instant(&noticed.reclaim_deadline),
        start,
        "the notice runs out as the window starts"
    );
    let given = instant(&noticed.notice_given_at);
    assert!(
        given >= start - chrono::Duration::seconds(61)
            && given <= start - chrono::Duration::seconds(55),
        "notice given at {given}, the window starts at {start}"
    );
    assert_eq!(noticed.reclaim_reason.as_deref(), Some("PeakReservation"));
    // The tenant's pods are told, and the nodes take no new tenant pods.
    eventually("DisruptionTarget on the tenant's pods", || async {
        let pods = tenant_pods.list(&ListParams::default().labels("app=render")).await?;
        Ok(pods.items.len() == 2
            && pods.items.iter().all(|p| {
                p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "DisruptionTarget"
                            && c.status == "True"
                            && c.reason.as_deref() == Some("OffpeakReclaim")
                            && c.message.as_deref() == Some(format!("lease acme-rp/render is reclaimed; its pods are evicted at {}", rfc3339(start)).as_str())
                    })
                })
            }))
    })
    .await?;
    let node_api: Api<Node> = Api::all(admin.clone());
    for node in &nodes {
        let taints = node_api
            .get(node)
            .await?
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default();
        assert!(
            taints
                .iter()
                .any(|t| t.key == RECLAIMING && t.effect == "NoSchedule"),
            "{taints:?}"
        );
        assert!(
            taints
                .iter()
                .all(|t| t.key != "node.kubernetes.io/unschedulable")
        );
    }
    let events = offpeak_tests::fixtures::events_of(&admin, "acme-rp", "render").await?;
    assert!(
        events.iter().any(|(reason, note)| reason == "Reclaiming"
            && note.starts_with("notice to acme-rp/render: ")
            && note.ends_with(&format!("until {}; {message}", rfc3339(start)))),
        "{events:?}"
    );

    // At the deadline: ended, the pods gone, the nodes back, the internal pods on them.
    let ended = status_when(&leases, "render", "Ended", |s| {
        s.phase == Some(LeasePhase::Ended)
    })
    .await?;
    assert_eq!(ended.end_reason, Some(EndReason::Reclaimed));
    assert!(instant(&ended.ended_at) >= start);
    let back = nodes_back(plane, &nodes).await?;
    let delay = (back - start).num_milliseconds() as f64 / 1000.0;
    eprintln!("reclaim: nodes back {delay:.1}s after the deadline");
    assert!(
        delay < 10.0,
        "the nodes came back {delay:.1}s after the deadline"
    );
    for pod in wait_running(&web, "app=web", 2, WAIT).await? {
        assert!(nodes.contains(&node_of(&pod)));
    }
    let reservation = reservations
        .get("rc-peak-launch")
        .await?
        .status
        .unwrap_or_default();
    assert_eq!(
        (reservation.active, reservation.nodes_held),
        (Some(true), Some(2))
    );
    Ok(())
}

#[tokio::test]
async fn unschedulable_internal_pods_reclaim_the_cheapest_spot_lease_first() -> TestResult {
    let plane = operator().await?;
    pool_with(
        plane,
        "rc-press",
        3,
        json!({"noticePeriod": "10s", "internalPressure": {"unschedulableFor": "5s"}}),
        json!({}),
    )
    .await?;
    let acme = tenant(plane, "acme-pr", &["rc-press"]).await?;
    let globex = tenant(plane, "globex-pr", &["rc-press"]).await?;
    let cheap: Api<CapacityLease> = Api::namespaced(acme, "acme-pr");
    let mut lease_cheap = lease("cheap", "rc-press", "Spot", "16", "8h");
    lease_cheap.spec.max_price_per_hour = Some(offpeak_api::Money::new("1.00"));
    cheap.create(&PostParams::default(), &lease_cheap).await?;
    let dear: Api<CapacityLease> = Api::namespaced(globex, "globex-pr");
    let mut lease_dear = lease("dear", "rc-press", "Spot", "16", "8h");
    lease_dear.spec.max_price_per_hour = Some(offpeak_api::Money::new("4.00"));
    dear.create(&PostParams::default(), &lease_dear).await?;
    let cheap_node = wait_phase(&cheap, "cheap", LeasePhase::Active)
        .await?
        .status
        .expect("status")
        .bound_nodes[0]
        .to_string();
    wait_phase(&dear, "dear", LeasePhase::Active).await?;

    // Two 12-core internal pods: one fits the free node, the other cannot be scheduled.
    let web = internal(plane, "internal-pr", "web", "rc-press", 2, "12").await?;
    let noticed = status_when(&cheap, "cheap", "Reclaiming", |s| {
        s.phase == Some(LeasePhase::Reclaiming)
    })
    .await?;
    assert_eq!(noticed.reclaim_reason.as_deref(), Some("InternalPressure"));
    let (_, reason, message) = condition(&noticed, "Reclaiming").expect("a Reclaiming condition");
    assert_eq!(reason, "InternalPressure");
    assert!(
        message.starts_with("1 internal pod(s) cannot be scheduled (internal-pr/web-")
            && message.contains("and need cpu 12"),
        "{message}"
    );
    assert_eq!(
        dear.get("dear").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );
    let ended = status_when(&cheap, "cheap", "Ended", |s| {
        s.phase == Some(LeasePhase::Ended)
    })
    .await?;
    assert_eq!(ended.end_reason, Some(EndReason::Reclaimed));
    let running = wait_running(&web, "app=web", 2, WAIT).await?;
    assert!(
        running.iter().any(|p| node_of(p) == cheap_node),
        "an internal pod took the reclaimed node"
    );
    assert_eq!(
        dear.get("dear").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );
    Ok(())
}

#[tokio::test]
async fn a_spot_lease_whose_nodes_come_to_cost_more_than_its_maximum_ends_price_exceeded()
-> TestResult {
    let plane = operator().await?;
    pool_with(
        plane,
        "rc-price",
        2,
        json!({"noticePeriod": "5s"}),
        json!({"spotPriceRule": {"baseUtilisation": "0.5", "sensitivity": "2", "floorMultiplier": "0.5", "ceilingMultiplier": "3"}}),
    )
    .await?;
    let user = tenant(plane, "acme-pe", &["rc-price"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-pe");
    let mut thrifty = lease("thrifty", "rc-price", "Spot", "16", "8h");
    thrifty.spec.max_price_per_hour = Some(offpeak_api::Money::new("0.70"));
    leases.create(&PostParams::default(), &thrifty).await?;
    wait_phase(&leases, "thrifty", LeasePhase::Active).await?;
    // Internal load takes the other node: utilisation 1, the spot price doubles to 0.08 a
    // core-hour, and 16 cores cost 1.28 an hour.
    internal(plane, "internal-pe", "web", "rc-price", 1, "4").await?;
    let noticed = status_when(&leases, "thrifty", "Reclaiming", |s| {
        s.phase == Some(LeasePhase::Reclaiming)
    })
    .await?;
    assert_eq!(noticed.reclaim_reason.as_deref(), Some("PriceExceeded"));
    assert!(
        condition(&noticed, "Reclaiming").is_some_and(|c| c.2.starts_with(
            "the spot price now makes its 1 node(s) cost 1.28 per hour, above maxPricePerHour 0.70"
        )),
        "{:?}",
        condition(&noticed, "Reclaiming")
    );
    let ended = status_when(&leases, "thrifty", "Ended", |s| {
        s.phase == Some(LeasePhase::Ended)
    })
    .await?;
    assert_eq!(ended.end_reason, Some(EndReason::PriceExceeded));
    Ok(())
}

#[tokio::test]
async fn a_reserved_lease_outlasts_pressure_until_an_emergency_and_then_earns_its_credit()
-> TestResult {
    let plane = operator().await?;
    pool_with(
        plane,
        "rc-emerg",
        1,
        json!({"noticePeriod": "5s", "internalPressure": {"unschedulableFor": "2s", "emergencyAfter": "25s"}}),
        json!({}),
    )
    .await?;
    let user = tenant(plane, "acme-em", &["rc-emerg"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-em");
    leases
        .create(
            &PostParams::default(),
            &lease("steady", "rc-emerg", "Reserved", "16", "8h"),
        )
        .await?;
    wait_phase(&leases, "steady", LeasePhase::Active).await?;
    let pending_since = Instant::now();
    internal(plane, "internal-em", "web", "rc-emerg", 1, "4").await?;
    // Past unschedulableFor the pressure is there, but only Reserved capacity is lent.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        leases.get("steady").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );
    let noticed = status_when(&leases, "steady", "Reclaiming", |s| {
        s.phase == Some(LeasePhase::Reclaiming)
    })
    .await?;
    // (The pod's unschedulable-since is whole seconds, so up to a second before our clock.)
    assert!(
        pending_since.elapsed() >= Duration::from_secs(24),
        "an emergency {:?} into a 25s emergencyAfter",
        pending_since.elapsed()
    );
    assert_eq!(
        noticed.reclaim_reason.as_deref(),
        Some("InternalPressureEmergency")
    );
    let credit = noticed.sla_credit_reason.clone().unwrap_or_default();
    assert!(
        credit.starts_with("a Reserved lease reclaimed before its term in an emergency: 1 internal pod(s) cannot be scheduled (internal-em/web-"),
        "{credit}"
    );
    let ended = status_when(&leases, "steady", "Ended", |s| {
        s.phase == Some(LeasePhase::Ended)
    })
    .await?;
    assert_eq!(ended.end_reason, Some(EndReason::Reclaimed));
    assert_eq!(ended.sla_credit_reason, noticed.sla_credit_reason);
    Ok(())
}

#[tokio::test]
async fn the_minimum_runtime_holds_off_a_reclaim_for_pressure() -> TestResult {
    let plane = operator().await?;
    pool_with(
        plane,
        "rc-minrt",
        1,
        json!({"noticePeriod": "5s", "minimumRuntime": "30s", "internalPressure": {"unschedulableFor": "2s"}}),
        json!({}),
    )
    .await?;
    let user = tenant(plane, "acme-mr", &["rc-minrt"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-mr");
    leases
        .create(
            &PostParams::default(),
            &lease("young", "rc-minrt", "Spot", "16", "8h"),
        )
        .await?;
    let active = wait_phase(&leases, "young", LeasePhase::Active)
        .await?
        .status
        .expect("status");
    internal(plane, "internal-mr", "web", "rc-minrt", 1, "4").await?;
    let noticed = status_when(&leases, "young", "Reclaiming", |s| {
        s.phase == Some(LeasePhase::Reclaiming)
    })
    .await?;
    let ran = instant(&noticed.notice_given_at) - instant(&active.admitted_at);
    assert!(
        ran >= chrono::Duration::seconds(30),
        "notice after {}s of a 30s minimum runtime",
        ran.num_seconds()
    );
    Ok(())
}

#[tokio::test]
async fn a_tenant_cannot_keep_its_node_past_the_deadline() -> TestResult {
    let plane = operator().await?;
    let nodes = pool_with(
        plane,
        "rc-hold",
        1,
        json!({"noticePeriod": "15s", "internalPressure": {"unschedulableFor": "1s"}}),
        json!({}),
    )
    .await?;
    let user = tenant(plane, "acme-hd", &["rc-hold"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-hd");
    leases
        .create(
            &PostParams::default(),
            &lease("sticky", "rc-hold", "Spot", "16", "8h"),
        )
        .await?;
    wait_phase(&leases, "sticky", LeasePhase::Active).await?;
    // Pods that would take an hour to stop, and hold on with a finalizer of their own.
    let mut sticky = deployment("sticky", 2, None);
    if let Some(spec) = sticky.spec.as_mut() {
        spec.template
            .metadata
            .get_or_insert_with(Default::default)
            .finalizers = Some(vec!["example.com/hold".into()]);
        if let Some(pod) = spec.template.spec.as_mut() {
            pod.termination_grace_period_seconds = Some(3600);
        }
    }
    Api::<Deployment>::namespaced(user.clone(), "acme-hd")
        .create(&PostParams::default(), &sticky)
        .await?;
    let admin = plane.client().await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "acme-hd");
    let running = wait_running(&pods, "app=sticky", 2, WAIT).await?;
    internal(plane, "internal-hd", "web", "rc-hold", 1, "4").await?;
    let noticed = status_when(&leases, "sticky", "Reclaiming", |s| {
        s.phase == Some(LeasePhase::Reclaiming)
    })
    .await?;
    // The tenant cannot take the DisruptionTarget condition off its pods.
    let tenant_pods: Api<Pod> = Api::namespaced(user, "acme-hd");
    let refused = tenant_pods
        .patch_status(
            &running[0].name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": []}})),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "{refused:?}"
    );
    let deadline = instant(&noticed.reclaim_deadline);
    let back = nodes_back(plane, &nodes).await?;
    let after = (back - deadline).num_milliseconds() as f64 / 1000.0;
    eprintln!("reclaim: a held node back {after:.1}s after the deadline");
    assert!(
        after < 10.0,
        "the node came back {after:.1}s after the deadline"
    );
    Ok(())
}
