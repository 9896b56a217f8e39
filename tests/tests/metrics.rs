//! What the operator exports and estimates, checked to the value: the `offpeak_leases`
//! gauge counts every lease by phase and class, the pool gauges count its nodes, and a
//! lease's cost so far is its seconds at the rate card's price. This binary has a control
//! plane of its own, so no other test's leases are counted.

use std::time::Duration;

use kube::api::{Api, PostParams};
use offpeak_api::{CapacityLease, CapacityLeaseStatus, LeasePhase};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;
use rust_decimal::{Decimal, RoundingStrategy};

type TestResult = anyhow::Result<()>;

/// The metric lines whose name is `name`, sorted.
fn lines_of(text: &str, name: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// What the status should say the lease has cost: the seconds from its admission to its
/// `costAsOf`, times the 16 cores of its one node at `per_core_hour` USD, at the card's
/// four decimals, rounded half away from zero as bills are.
fn cost_by_hand(status: &CapacityLeaseStatus, per_core_hour: &str) -> String {
    let instant = |t: &Option<offpeak_api::Timestamp>| {
        chrono::DateTime::parse_from_rfc3339(t.as_ref().expect("a time").as_str())
            .expect("RFC 3339")
    };
    let seconds = (instant(&status.cost_as_of) - instant(&status.admitted_at)).num_seconds();
    let price: Decimal = per_core_hour.parse().expect("a price");
    let cost = (Decimal::from(seconds * 16) * price / Decimal::from(3600))
        .round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    format!("{cost:.4} USD")
}

#[tokio::test]
async fn the_leases_gauge_and_cost_estimates_have_exact_values() -> TestResult {
    let plane = ControlPlane::shared().await?;
    let operator =
        offpeak::local::start(plane, offpeak::local::settings(Duration::from_secs(3))).await?;
    // Three 16-core nodes; spot 0.04 and reserved 0.06 per core-hour.
    pool_with_nodes(plane, "mx", 3).await?;
    let user = tenant(plane, "acme-mx", &["mx"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "acme-mx");
    for (name, class, cpu) in [("spot", "Spot", "16"), ("reserved", "Reserved", "16")] {
        leases
            .create(&PostParams::default(), &lease(name, "mx", class, cpu, "1h"))
            .await?;
        wait_phase(&leases, name, LeasePhase::Active).await?;
    }
    // One node is left: 32 cores wait for a second; 64 are more than the pool has (two
    // Spot leases, so one count is not 1).
    leases
        .create(
            &PostParams::default(),
            &lease("waiting", "mx", "Spot", "32", "1h"),
        )
        .await?;
    wait_pending(&leases, "waiting", "InsufficientCapacity").await?;
    for (name, class) in [
        ("huge-spot", "Spot"),
        ("huge-spot-2", "Spot"),
        ("huge-reserved", "Reserved"),
    ] {
        leases
            .create(
                &PostParams::default(),
                &lease(name, "mx", class, "64", "1h"),
            )
            .await?;
        wait_phase(&leases, name, LeasePhase::Rejected).await?;
    }

    let expected = [
        "offpeak_leases{class=\"Reserved\",phase=\"Active\"} 1",
        "offpeak_leases{class=\"Reserved\",phase=\"Rejected\"} 1",
        "offpeak_leases{class=\"Spot\",phase=\"Active\"} 1",
        "offpeak_leases{class=\"Spot\",phase=\"Pending\"} 1",
        "offpeak_leases{class=\"Spot\",phase=\"Rejected\"} 2",
    ];
    // The gauge is recounted from the cache every 5 s.
    let last = std::sync::Mutex::new(Vec::new());
    let counted = offpeak_tests::eventually(
        "the leases gauge to count every lease",
        Duration::from_secs(20),
        || async {
            let lines = lines_of(&scrape(operator.metrics).await?, "offpeak_leases");
            let exact = lines == expected;
            *last.lock().expect("not poisoned") = lines;
            Ok(exact)
        },
    )
    .await;
    assert!(counted.is_ok(), "offpeak_leases is {last:#?}");
    let text = scrape(operator.metrics).await?;
    assert_eq!(
        lines_of(&text, "offpeak_pool_nodes"),
        [
            "offpeak_pool_nodes{pool=\"mx\",state=\"headroom\"} 0",
            "offpeak_pool_nodes{pool=\"mx\",state=\"lendable\"} 1",
            "offpeak_pool_nodes{pool=\"mx\",state=\"lent\"} 2",
            "offpeak_pool_nodes{pool=\"mx\",state=\"total\"} 3",
        ]
    );

    // Admitted at 0.0000 USD, the estimates are refreshed every 3 s.
    for (name, price) in [("spot", "0.04"), ("reserved", "0.06")] {
        let status = eventually_value(&format!("a refreshed cost of lease {name}"), || async {
            let status = leases.get(name).await?.status.unwrap_or_default();
            Ok((status.cost_as_of != status.admitted_at).then_some(status))
        })
        .await?;
        assert_eq!(
            status.cost_summary,
            Some(cost_by_hand(&status, price)),
            "lease {name}: admitted {:?}, cost as of {:?}",
            status.admitted_at,
            status.cost_as_of
        );
        let amount = status.cost_so_far.clone().expect("a cost so far");
        assert_eq!(
            format!("{} {}", amount.amount.as_str(), amount.currency.as_str()),
            cost_by_hand(&status, price)
        );
    }
    Ok(())
}
