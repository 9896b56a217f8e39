//! Two replicas with leader election: only the leader writes; when it is SIGKILLed the
//! other takes over within 15 s, goes on admitting and reclaiming, and the bill of a lease
//! running across the takeovers counts every second once. No lease is admitted twice and
//! no node is bound to two leases.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::api::{Api, PostParams};
use offpeak::local::OperatorProcess;
use offpeak_api::{CapacityLease, LeasePhase, LineItem, UsageBill};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;

fn instant(t: &Option<offpeak_api::Timestamp>) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t.as_ref().expect("a time").as_str())
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn leads(operator: &OperatorProcess) -> bool {
    operator
        .scrape()
        .await
        .is_ok_and(|m| m.lines().any(|l| l == "offpeak_leader 1"))
}

/// Waits until `operator` leads; how long that took.
async fn takes_over(operator: &OperatorProcess) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !leads(operator).await {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no takeover within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(started.elapsed())
}

#[tokio::test]
async fn the_other_replica_takes_over_within_15s_and_nothing_is_billed_twice() -> anyhow::Result<()>
{
    let plane = ControlPlane::start().await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    plane.create_namespace("offpeak-system").await?;
    let binary = env!("CARGO_BIN_EXE_offpeak");
    // Both replicas share the ledger (an SQLite file here: one writes at a time).
    let ledger = format!(
        "--ledger=sqlite://{}/ledger.db?mode=rwc",
        plane.dir().display()
    );
    let flags = |name: &'static str| {
        vec![
            "--leader-election".to_string(),
            "--leader-election-namespace=offpeak-system".into(),
            format!("--identity={name}"),
            "--bill-refresh=2s".into(),
            ledger.clone(),
        ]
    };
    let start = |name: &'static str| -> anyhow::Result<OperatorProcess> {
        let dir = plane.dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let flags = flags(name);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        OperatorProcess::start(&plane, binary.as_ref(), &dir, &flags)
    };
    let mut a = start("replica-a")?;
    a.ready().await?;
    takes_over(&a).await?;
    let mut b = start("replica-b")?;
    b.ready().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!leads(&b).await, "two leaders");

    pool_with_nodes(&plane, "fo", 4).await?;
    let user = tenant(&plane, "acme-fo", &["fo"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-fo");
    leases
        .create(
            &PostParams::default(),
            &lease("long", "fo", "Spot", "16", "1h"),
        )
        .await?;
    let admitted = instant(
        &wait_phase(&leases, "long", LeasePhase::Active)
            .await?
            .status
            .expect("status")
            .admitted_at,
    );

    // Takeovers, each SIGKILLing the leader; the survivor goes on admitting. Three by
    // default; OFFPEAK_FAILOVER_ROUNDS=10 measures more.
    let rounds: usize = std::env::var("OFFPEAK_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut times = Vec::new();
    for round in 0..rounds {
        let (dead, alive) = if round % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        dead.kill();
        let took = takes_over(alive).await?;
        eprintln!(
            "failover: round {round}: the other replica leads after {:.1}s",
            took.as_secs_f64()
        );
        times.push(took);
        let name = format!("after-{round}");
        leases
            .create(
                &PostParams::default(),
                &lease(&name, "fo", "Spot", "16", "1h"),
            )
            .await?;
        wait_phase(&leases, &name, LeasePhase::Active).await?;
        leases.delete(&name, &Default::default()).await?;
        dead.restart()?;
        dead.ready().await?;
    }
    let mut sorted = times.clone();
    sorted.sort();
    eprintln!(
        "failover: {} takeovers, median {:.1}s, max {:.1}s",
        sorted.len(),
        sorted[sorted.len() / 2].as_secs_f64(),
        sorted.last().map_or(0.0, Duration::as_secs_f64)
    );
    assert!(
        times.iter().all(|t| *t < Duration::from_secs(15)),
        "takeovers took {times:?}"
    );

    // No node bound to two leases, no lease bound twice.
    let all = leases.list(&Default::default()).await?;
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for l in &all.items {
        for node in l.status.iter().flat_map(|s| s.bound_nodes.iter()) {
            if let Some(other) = owner.insert(
                node.to_string(),
                l.metadata.name.clone().unwrap_or_default(),
            ) {
                anyhow::bail!("{node} bound to {other} and {:?}", l.metadata.name);
            }
        }
    }

    // The lease that ran across every takeover: billed every second once.
    leases.delete("long", &Default::default()).await?;
    let ended = instant(
        &wait_phase(&leases, "long", LeasePhase::Ended)
            .await?
            .status
            .expect("status")
            .ended_at,
    );
    let bills: Api<UsageBill> = Api::namespaced(user, "acme-fo");
    let name = format!("acme-fo-{}", Utc::now().format("%Y-%m"));
    let bill = eventually_value("the bill of the long lease", || async {
        Ok(bills.get_opt(&name).await?.filter(|b| {
            b.spec.lines.iter().any(|l| {
                l.lease.as_str() == "long"
                    && l.item == LineItem::Cpu
                    && instant(&Some(l.end.clone())) == ended
            })
        }))
    })
    .await?;
    let billed: i64 = bill
        .spec
        .lines
        .iter()
        .filter(|l| l.lease.as_str() == "long" && l.item == LineItem::Cpu)
        .map(|l| (instant(&Some(l.end.clone())) - instant(&Some(l.start.clone()))).num_seconds())
        .sum();
    assert_eq!(
        billed,
        (ended - admitted).num_seconds(),
        "every second of the long lease once"
    );
    Ok(())
}
