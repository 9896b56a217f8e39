//! The pool plan alone, without a cluster: how long one pass's planning takes for a pool of
//! N nodes, in the three passes that matter at scale. Pure CPU; the figures locate where
//! the operator's own time goes beside the API server's (see `pool_scale`).
//!
//! - `admit`: N free nodes and N pending one-node Spot leases (a burst) in one pass.
//! - `steady`: the same pool with every lease Active; the plan must be empty.
//! - `reclaim`: the steady pool when a peak window that keeps every node is booked to
//!   start after the notice: every lease is given notice in one pass.
//!
//! `cargo bench -p offpeak --bench pool_plan` (criterion prints each figure; the ratio
//! `per node` column is the time divided by N, flat when planning grows linearly).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use offpeak::plan::admission::{Keep, Reservation};
use offpeak::plan::calendar::{Calendar, Schedule};
use offpeak::plan::eligibility::TenantView;
use offpeak::plan::pool::{
    Confinement, LeaseView, Ledger, NodeMarks, NodeView, PlanSettings, PoolSettings, PoolView,
    PressureSettings, plan, simulate,
};
use offpeak::plan::resources::Resources;
use offpeak_api::{
    CapacityLeaseSpec, GoDuration, LeaseClass, LeaseResources, Money, Name, Quantity,
};
use offpeak_billing::money::Currency;
use offpeak_billing::rate::{ClassPrices, RateCard, ResourcePrices};
use rust_decimal::Decimal;

const SIZES: [usize; 3] = [1000, 2000, 5000];
/// Leases come from this many tenants (each with its own namespace).
const TENANTS: usize = 50;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T20:00:00Z")
        .expect("an instant")
        .with_timezone(&Utc)
}

fn node(i: usize) -> NodeView {
    NodeView {
        name: format!("node-{i:05}"),
        resource_version: Some("1".into()),
        ready: true,
        cordoned_by_others: false,
        withheld: None,
        marks: NodeMarks {
            idle_since: Some("2026-11-22T19:00:00Z".into()),
            ..NodeMarks::default()
        },
        allocatable: Ok(Resources::new(16_000, 64 << 30, 0)),
        class: Some("standard".into()),
        pods: vec![],
        in_pool: true,
    }
}

fn lease(i: usize) -> LeaseView {
    let namespace = format!("tenant-{}", i % TENANTS);
    LeaseView {
        uid: format!("uid-{i:05}"),
        name: format!("lease-{i:05}"),
        namespace,
        resource_version: Some("1".into()),
        generation: Some(1),
        created: now() - Duration::seconds(30),
        deleting: false,
        has_finalizer: true,
        spec: CapacityLeaseSpec {
            pool: Name::new("general"),
            class: LeaseClass::Spot,
            resources: Some(LeaseResources {
                cpu: Some(Quantity("16".into())),
                memory: None,
                gpu: None,
            }),
            nodes: None,
            duration: Some(GoDuration::new("8h")),
            end_time: None,
            max_price_per_hour: Some(Money::new("100")),
        },
        status: Default::default(),
        failure: None,
        metered: true,
    }
}

fn card() -> RateCard {
    let prices = |cpu: i64| ResourcePrices {
        cpu: Decimal::new(cpu, 2),
        memory: Decimal::ZERO,
        gpu: Decimal::ZERO,
    };
    RateCard {
        name: "standard".into(),
        version: "1".into(),
        currency: Currency::from_code("USD", "bench").expect("USD"),
        effective_from: now() - Duration::days(30),
        effective_until: None,
        pools: vec![],
        prices: ClassPrices {
            spot: prices(4),
            reserved: prices(6),
        },
        minimum_charge_per_lease: None,
        spot_price_rule: None,
        sla_credit: None,
        precision: Some(4),
    }
}

/// N free nodes and N pending leases.
fn burst(n: usize) -> PoolView {
    let tenants: Vec<String> = (0..TENANTS).map(|t| t.to_string()).collect();
    PoolView {
        name: "general".into(),
        generation: Some(1),
        settings: Ok(PoolSettings {
            idle_after: Duration::zero(),
            notice: Duration::seconds(120),
            headroom: None,
            lending_enabled: true,
            minimum_runtime: Duration::zero(),
            reclaim_advisory: Duration::minutes(10),
            internal_pressure: PressureSettings {
                unschedulable_for: Duration::seconds(30),
                emergency_after: Duration::minutes(5),
            },
        }),
        status: None,
        nodes: (0..n).map(node).collect(),
        leases: (0..n).map(lease).collect(),
        reservations: vec![],
        reservation_objects: vec![],
        pending: vec![],
        rate_card: Some(card()),
        tenants: tenants
            .iter()
            .map(|t| {
                let view = TenantView {
                    name: t.clone(),
                    suspended: false,
                    allowed_pools: vec![],
                    credit_limit: None,
                    open_balance: Decimal::ZERO,
                    committed: Decimal::ZERO,
                };
                (t.clone(), view)
            })
            .collect(),
        namespace_tenants: tenants
            .iter()
            .map(|t| (format!("tenant-{t}"), t.clone()))
            .collect::<BTreeMap<_, _>>(),
        held_back: BTreeSet::new(),
        ledger: Ledger::Healthy,
        confinement: Confinement::InPlace,
    }
}

/// The burst planned and applied in memory until nothing is left to do.
fn settled(n: usize) -> PoolView {
    let settings = PlanSettings::default();
    let mut view = burst(n);
    for _ in 0..10 {
        let next = plan(&view, now(), &settings);
        if next.is_empty() {
            return view;
        }
        view = simulate::apply(&view, &next);
    }
    panic!("the burst of {n} leases did not settle in 10 passes");
}

fn peak_window(mut view: PoolView) -> PoolView {
    let start = now() + Duration::minutes(3);
    view.reservations.push(Reservation {
        name: "launch".into(),
        calendar: Calendar {
            schedule: Schedule::Once {
                start,
                end: start + Duration::hours(4),
            },
            valid_from: None,
            valid_until: None,
        },
        keep: Keep::Percent(100),
    });
    view
}

fn bench(c: &mut Criterion) {
    let settings = PlanSettings::default();
    let mut group = c.benchmark_group("pool_plan");
    group.sample_size(10);
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        let admit = burst(n);
        let steady = settled(n);
        let active = steady.leases.iter().filter(|l| l.holds_nodes()).count();
        assert_eq!(active, n, "every lease of the burst is admitted");
        assert!(
            plan(&steady, now(), &settings).is_empty(),
            "a settled pool plans nothing"
        );
        let reclaim = peak_window(steady.clone());
        let notices = plan(&reclaim, now(), &settings).leases.len();
        assert_eq!(
            notices, n,
            "the window gives every lease notice in one pass"
        );
        for (name, view) in [
            ("admit", &admit),
            ("steady", &steady),
            ("reclaim", &reclaim),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), view, |b, view| {
                b.iter(|| plan(view, now(), &settings))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
