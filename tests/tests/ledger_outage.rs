//! The ledger in PostgreSQL taken away for most of a minute, on the real control plane:
//! leases go on (one is admitted and one ends while it is away), the pool's Metered
//! condition and `offpeak_facts_pending` say the facts wait, and when the server is back
//! every second of every lease is in the tenant's UsageBill, exactly as the leases'
//! statuses record them. (The SQLite half, a locked file, is in metering.rs.)

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use offpeak_api::{
    CapacityLease, CapacityLeaseStatus, CapacityPool, LeasePhase, LineItem, UsageBill,
};
use offpeak_testenv::{ControlPlane, TempPostgres};
use offpeak_tests::fixtures::*;

const POOL: &str = "pg-down";
const TENANT: &str = "acme-pg";
/// How long PostgreSQL stays away.
const OUTAGE: Duration = Duration::from_secs(45);

fn instant(t: &Option<offpeak_api::Timestamp>) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t.as_ref().expect("a time").as_str())
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn metered(pool: CapacityPool) -> Option<offpeak_api::Condition> {
    pool.status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Metered")
}

async fn facts_pending(metrics: std::net::SocketAddr) -> anyhow::Result<i64> {
    let text = scrape(metrics).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("offpeak_facts_pending "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no offpeak_facts_pending in\n{text}"))
}

/// Seconds of cpu billed to lease `name` across the tenant's bills.
fn billed_seconds(bills: &[UsageBill], name: &str) -> i64 {
    bills
        .iter()
        .flat_map(|b| b.spec.lines.iter())
        .filter(|l| l.lease.as_str() == name && l.item == LineItem::Cpu)
        .map(|l| (instant(&Some(l.end.clone())) - instant(&Some(l.start.clone()))).num_seconds())
        .sum()
}

/// The first billed second of lease `name`.
fn billed_from(bills: &[UsageBill], name: &str) -> Option<DateTime<Utc>> {
    bills
        .iter()
        .flat_map(|b| b.spec.lines.iter())
        .filter(|l| l.lease.as_str() == name && l.item == LineItem::Cpu)
        .map(|l| instant(&Some(l.start.clone())))
        .min()
}

/// Deletes the lease and returns its status once it has Ended.
async fn end(leases: &Api<CapacityLease>, name: &str) -> anyhow::Result<CapacityLeaseStatus> {
    leases.delete(name, &Default::default()).await?;
    Ok(wait_phase(leases, name, LeasePhase::Ended)
        .await?
        .status
        .unwrap_or_default())
}

#[tokio::test]
async fn postgresql_stopped_for_45_s_keeps_leases_going_says_so_and_bills_every_second_when_back()
-> anyhow::Result<()> {
    let mut postgres = TempPostgres::start()?;
    let plane = ControlPlane::shared().await?;
    let mut settings = offpeak::local::settings(Duration::from_secs(3));
    settings.bills.ledger = postgres.fresh_database()?;
    let operator = offpeak::local::start(plane, settings).await?;
    pool_with_nodes(plane, POOL, 2).await?;
    let user = tenant(plane, TENANT, &[POOL]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), TENANT);
    let pools: Api<CapacityPool> = Api::all(plane.client().await?);
    let nodes: Api<Node> = Api::all(plane.client().await?);

    // The first lease runs, and its admission is in the ledger.
    leases
        .create(
            &PostParams::default(),
            &lease("first", POOL, "Spot", "16", "1h"),
        )
        .await?;
    let first_node = wait_phase(&leases, "first", LeasePhase::Active)
        .await?
        .status
        .and_then(|s| s.bound_nodes.first().map(|n| n.to_string()))
        .expect("the first lease holds a node");
    let bills_api: Api<UsageBill> = Api::namespaced(user.clone(), TENANT);
    eventually(
        "the first lease's admission to be billed from the ledger",
        || async {
            let bills = bills_api.list(&ListParams::default()).await?.items;
            Ok(billed_from(&bills, "first").is_some())
        },
    )
    .await?;
    assert_eq!(
        metered(pools.get(POOL).await?).map(|c| c.reason).as_deref(),
        Some("LedgerWritable")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // PostgreSQL goes away. A second lease is admitted and the first one ends meanwhile.
    postgres.stop()?;
    let stopped = Utc::now();
    eprintln!("ledger_outage: PostgreSQL stopped at {stopped}");
    leases
        .create(
            &PostParams::default(),
            &lease("second", POOL, "Spot", "16", "1h"),
        )
        .await?;
    let second = wait_phase(&leases, "second", LeasePhase::Active).await?;
    let second_admitted = instant(&second.status.as_ref().and_then(|s| s.admitted_at.clone()));
    assert!(second_admitted >= stopped - chrono::Duration::seconds(1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = end(&leases, "first").await?;

    // The pool says the ledger is away, to the word, since it went.
    let down = eventually_value("the pool to say the ledger is unavailable", || async {
        Ok(metered(pools.get(POOL).await?).filter(|c| c.reason == "LedgerUnavailable"))
    })
    .await?;
    let since = down
        .message
        .strip_prefix("the ledger is unavailable since ")
        .and_then(|rest| rest.split_once(": "))
        .map(|(since, _)| since.to_string())
        .unwrap_or_default();
    assert_eq!(
        down.message,
        format!(
            "the ledger is unavailable since {since}: pool timed out while waiting for an open connection; \
             billing facts wait and are written when it is back"
        )
    );
    assert_eq!(down.status, offpeak_api::ConditionStatus::False);
    let since: DateTime<Utc> = since.parse()?;
    eprintln!(
        "ledger_outage: the pool said so {} s after the stop: {}",
        (Utc::now() - stopped).num_seconds(),
        down.message
    );
    assert!(
        since >= stopped - chrono::Duration::seconds(1) && since <= Utc::now(),
        "down since {since}, stopped at {stopped}"
    );
    let pending = facts_pending(operator.metrics).await?;
    eprintln!("ledger_outage: {pending} facts pending");
    assert!(
        pending > 0,
        "facts pending while PostgreSQL is away: {pending}"
    );

    // Leases are safe meanwhile: the second runs, the ended first keeps its finalizer
    // until its end is recorded, and its node is back in the pool.
    assert_eq!(
        leases.get("second").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );
    assert_eq!(
        leases.get("first").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Ended),
        "the first lease is kept until the ledger holds its end"
    );
    eventually("the first lease's node to be given back", || async {
        let node = nodes.get(&first_node).await?;
        Ok(!node
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("offpeak.dev/lease"))
    })
    .await?;
    let away = Utc::now() - stopped;
    if let Ok(rest) = (chrono::Duration::from_std(OUTAGE)? - away).to_std() {
        tokio::time::sleep(rest).await;
    }

    // PostgreSQL is back: the facts go in, the condition says so, the first lease goes.
    postgres.start_again()?;
    let back = Utc::now();
    eprintln!(
        "ledger_outage: PostgreSQL back at {back}, after {} s",
        (back - stopped).num_seconds()
    );
    eventually("the pool to say the ledger is writable again", || async {
        Ok(
            metered(pools.get(POOL).await?).is_some_and(|c| c.reason == "LedgerWritable")
                && facts_pending(operator.metrics).await? == 0,
        )
    })
    .await?;
    eventually("the ended first lease to be released", || async {
        Ok(leases.get_opt("first").await?.is_none())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = end(&leases, "second").await?;

    // Every second of both leases, once, from its admission to its end.
    let lifetimes = [("first", &first), ("second", &second)].map(|(name, status)| {
        (
            name,
            instant(&status.admitted_at),
            instant(&status.ended_at),
        )
    });
    let complete = eventually_value("the bill to hold both leases to their ends", || async {
        let bills = bills_api.list(&ListParams::default()).await?.items;
        Ok(lifetimes
            .iter()
            .all(|(name, admitted, ended)| {
                billed_seconds(&bills, name) == (*ended - *admitted).num_seconds()
            })
            .then_some(bills))
    })
    .await;
    let bills = match complete {
        Ok(bills) => bills,
        Err(e) => {
            let bills = bills_api.list(&ListParams::default()).await?.items;
            let billed: Vec<_> = lifetimes
                .iter()
                .map(|(name, admitted, ended)| {
                    (
                        name,
                        billed_seconds(&bills, name),
                        (*ended - *admitted).num_seconds(),
                    )
                })
                .collect();
            anyhow::bail!(
                "{e:#}: (lease, billed s, recorded s) {billed:?}; lifetimes {lifetimes:?}; lines {:#?}",
                bills
                    .iter()
                    .flat_map(|b| b.spec.lines.iter())
                    .collect::<Vec<_>>()
            );
        }
    };
    for (name, admitted, ended) in lifetimes {
        let seconds = (ended - admitted).num_seconds();
        assert_eq!(billed_seconds(&bills, name), seconds, "{name}");
        assert_eq!(
            billed_from(&bills, name),
            Some(admitted),
            "{name} billed from its admission"
        );
        eprintln!("ledger_outage: {name} billed {seconds} s ({admitted} to {ended})");
    }
    assert!(
        instant(&first.ended_at) > stopped && instant(&first.ended_at) < back,
        "the first lease ended while PostgreSQL was away"
    );
    Ok(())
}
