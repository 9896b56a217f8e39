//! The idle-after clock with a real idleAfter: a node becomes lendable only once it has
//! been idle that long (a Spot lease waits until then), and the clock, kept on the node,
//! survives the operator being killed and started again.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use offpeak::local::OperatorProcess;
use offpeak::names::IDLE_SINCE;
use offpeak_api::{CapacityLease, CapacityPool, LeasePhase};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;
use serde_json::json;

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn idle_since(nodes: &Api<Node>, name: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    Ok(nodes
        .get(name)
        .await?
        .metadata
        .annotations
        .unwrap_or_default()
        .get(IDLE_SINCE)
        .map(|t| instant(t)))
}

async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

#[tokio::test]
async fn a_node_is_lent_only_after_idle_after_and_the_clock_survives_a_restart()
-> anyhow::Result<()> {
    let plane = ControlPlane::shared().await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    let dir = plane.dir().join("idle-clock");
    std::fs::create_dir_all(&dir)?;
    let mut operator =
        OperatorProcess::start(plane, env!("CARGO_BIN_EXE_offpeak").as_ref(), &dir, &[])?;
    operator.ready().await?;
    // The tenant first, so the clock has barely started when the lease comes.
    let user = tenant(plane, "acme-ic", &["ic"]).await?;
    let node = pool_with(plane, "ic", 1, json!({"idleAfter": "20s"}), json!({})).await?[0].clone();
    let admin = plane.client().await?;
    let nodes: Api<Node> = Api::all(admin.clone());
    let since = eventually_value("the node's idle clock to start", || async {
        idle_since(&nodes, &node).await
    })
    .await?;
    let lendable_at = since + chrono::Duration::seconds(20);

    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-ic");
    leases
        .create(
            &PostParams::default(),
            &lease("job", "ic", "Spot", "16", "1h"),
        )
        .await?;
    let waiting = wait_pending(&leases, "job", "InsufficientCapacity").await?;
    assert_eq!(
        admitted(&waiting).1,
        "pool ic has 0 free lendable node(s): short of cpu 16"
    );
    let pools: Api<CapacityPool> = Api::all(admin);
    let pool = pools.get("ic").await?.status.unwrap_or_default();
    assert_eq!((pool.nodes, pool.lendable_nodes), (Some(1), Some(0)));
    assert!(
        Utc::now() < lendable_at,
        "the test was too slow to see the node idle but not yet lendable"
    );

    // Killed a few seconds into the clock, back well before it runs out.
    sleep_until(since + chrono::Duration::seconds(3)).await;
    operator.kill();
    sleep_until(since + chrono::Duration::seconds(8)).await;
    assert_eq!(
        leases.get("job").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Pending)
    );
    operator.restart()?;
    operator.ready().await?;
    // The clock goes on from where it was, not from the restart.
    assert_eq!(idle_since(&nodes, &node).await?, Some(since));

    let active = wait_phase(&leases, "job", LeasePhase::Active).await?;
    let admitted_at = instant(
        active
            .status
            .as_ref()
            .and_then(|s| s.admitted_at.as_ref())
            .expect("admittedAt")
            .as_str(),
    );
    // Not before the node was idle for 20 s; had the clock restarted with the operator,
    // not before 28 s (the restart came 8 s in), so by 27 s at the latest.
    assert!(
        admitted_at >= lendable_at && admitted_at < lendable_at + chrono::Duration::seconds(8),
        "admitted at {admitted_at}, idle since {since}"
    );
    assert_eq!(
        active.status.map(|s| s
            .bound_nodes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()),
        Some(vec![node])
    );
    Ok(())
}
