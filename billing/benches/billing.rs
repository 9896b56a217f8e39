//! Bills for 10,000 leases from 1,000,000 facts, fact ingestion into each ledger backend,
//! and the ledger's part of refreshing 1,000 tenants' open bills.
//! `cargo bench -p offpeak-billing [-- GROUP]`.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::Duration as Span;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use offpeak_billing::ledger::Ledger;
use offpeak_billing::meter::{EndReason, Fact, FactBody, FactSet, Model};
use offpeak_billing::period::{BillingCycle, Period};
use offpeak_billing::rate::{LeaseClass, SpotPriceRule};
use offpeak_testenv::TempPostgres;
use rust_decimal::Decimal;
use support::*;

const LEASES: usize = 10_000;
const BINDS_PER_LEASE: usize = 96;
const UTILISATION_FACTS: usize = 20_000;
const POOLS: usize = 100;
const INGEST_LEASES: usize = 1_000;
const INGEST_BATCH: usize = 10_000;

/// 1 rate card + 20,000 utilisation changes (200 in each of 100 pools, every 3.6 h) +
/// 10,000 leases × (admission, 96 capacity changes 10 minutes apart, end) = 1,000,001
/// facts, for 100 tenants over November 2026. Every capacity change and every
/// utilisation change under a spot lease splits its lines: about 2 million lines.
fn workload() -> Vec<Fact> {
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.spot_price_rule = Some(SpotPriceRule {
        base_utilisation: d("0.5"),
        sensitivity: d("2"),
        floor_multiplier: d("0.5"),
        ceiling_multiplier: d("3"),
    });
    c.minimum_charge_per_lease = Some(d("0.50"));
    let mut facts = vec![card_fact(c)];
    let origin = t("2026-11-01T00:00:00Z");
    for k in 0..UTILISATION_FACTS {
        let pool = format!("pool-{}", k % POOLS);
        let at = origin + Span::seconds(12_960 * (k / POOLS) as i64);
        facts.push(util_at(&pool, at, Decimal::new((k as i64 * 37) % 101, 2)));
    }
    for i in 0..LEASES {
        let lease = format!("tenant-{}/lease-{i}", i % 100);
        let start = origin + Span::seconds((i as i64 * 211) % (25 * 86_400));
        let class = if i % 2 == 0 {
            LeaseClass::Spot
        } else {
            LeaseClass::Reserved
        };
        let mut admitted = admit(
            &lease,
            &format!("tenant-{}", i % 100),
            class,
            &start.to_rfc3339(),
        );
        if let FactBody::LeaseAdmitted(a) = &mut admitted.body {
            a.pool = format!("pool-{}", i % POOLS);
        }
        facts.push(admitted);
        for j in 0..BINDS_PER_LEASE {
            let cpu = Decimal::from(1 + (i + j) % 8);
            facts.push(bind_at(
                &lease,
                start + Span::seconds(600 * j as i64),
                cpu,
                cpu * Decimal::from(4),
                Decimal::ZERO,
            ));
        }
        facts.push(end_at(
            &lease,
            start + Span::seconds(600 * BINDS_PER_LEASE as i64),
            EndReason::Expired,
        ));
    }
    facts
}

fn november() -> Period {
    Period::parse(BillingCycle::Monthly, "2026-11").unwrap()
}

fn bill_in_memory(facts: Vec<Fact>) -> usize {
    let set = FactSet::from_facts(facts).unwrap();
    let model = Model::compile(&set).unwrap();
    let p = november();
    model
        .bills(p, p.end)
        .unwrap()
        .iter()
        .map(|b| b.lines.len())
        .sum()
}

fn in_memory(c: &mut Criterion) {
    let facts = workload();
    assert_eq!(facts.len(), 1_000_001);
    let mut group = c.benchmark_group("in_memory_1m_facts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Elements(facts.len() as u64));
    group.bench_function("validate_dedupe", |b| {
        b.iter_batched(
            || facts.clone(),
            |f| black_box(FactSet::from_facts(f).unwrap().len()),
            BatchSize::PerIteration,
        )
    });
    let set = FactSet::from_facts(facts.clone()).unwrap();
    group.bench_function("compile_and_bill_10k_leases", |b| {
        b.iter(|| {
            let model = Model::compile(&set).unwrap();
            let p = november();
            black_box(model.bills(p, p.end).unwrap().len())
        })
    });
    group.bench_function("validate_compile_and_bill_10k_leases", |b| {
        b.iter_batched(
            || facts.clone(),
            |f| black_box(bill_in_memory(f)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The first 1,000 leases' facts and the rate card: 98,001 facts, appended in
/// batches of 10,000 to a fresh ledger.
fn ingest_workload() -> Vec<Fact> {
    let all = workload();
    let mut facts = vec![all[0].clone()];
    facts.extend(
        all[1 + UTILISATION_FACTS..]
            .iter()
            .take(INGEST_LEASES * (BINDS_PER_LEASE + 2))
            .cloned(),
    );
    facts
}

async fn ingest(ledger: Ledger, facts: &[Fact]) -> Duration {
    let started = Instant::now();
    for batch in facts.chunks(INGEST_BATCH) {
        ledger.append(batch).await.unwrap();
    }
    let elapsed = started.elapsed();
    ledger.close().await;
    elapsed
}

/// An SQLite ledger at `path` and one in a fresh PostgreSQL database, each holding `facts`.
fn filled(
    runtime: &tokio::runtime::Runtime,
    path: &std::path::Path,
    postgres: &TempPostgres,
    facts: &[Fact],
) -> (Ledger, Ledger) {
    let sqlite = runtime
        .block_on(Ledger::open_sqlite(path, BillingCycle::Monthly))
        .unwrap();
    let pg = runtime
        .block_on(Ledger::open(
            &postgres.fresh_database().expect("a fresh database"),
            BillingCycle::Monthly,
        ))
        .unwrap();
    for ledger in [&sqlite, &pg] {
        runtime.block_on(async {
            for batch in facts.chunks(INGEST_BATCH) {
                ledger.append(batch).await.unwrap();
            }
        });
    }
    (sqlite, pg)
}

/// One tenant's open bill from `ledger`: its number of lines.
fn one_bill(runtime: &tokio::runtime::Runtime, ledger: &Ledger, p: &Period) -> usize {
    runtime
        .block_on(ledger.bill("tenant-7", p, p.end))
        .unwrap()
        .lines
        .len()
}

fn ledgers(c: &mut Criterion) {
    let facts = ingest_workload();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let postgres = TempPostgres::start().expect("a PostgreSQL server");
    let mut group = c.benchmark_group("ingest_98k_facts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(facts.len() as u64));
    let mut n = 0;
    group.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let path = dir.path().join(format!("bench-{n}.db"));
                let ledger = runtime
                    .block_on(Ledger::open_sqlite(&path, BillingCycle::Monthly))
                    .unwrap();
                total += runtime.block_on(ingest(ledger, &facts));
                std::fs::remove_file(&path).ok();
            }
            total
        })
    });
    group.bench_function("postgres", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let ledger = runtime
                    .block_on(Ledger::open(
                        &postgres.fresh_database().expect("a fresh database"),
                        BillingCycle::Monthly,
                    ))
                    .unwrap();
                total += runtime.block_on(ingest(ledger, &facts));
            }
            total
        })
    });
    group.finish();

    // Bill computation from a ledger: load one tenant's facts and bill it.
    let mut group = c.benchmark_group("bill_from_ledger_one_tenant_of_98k_facts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let (sqlite, pg) = filled(&runtime, &dir.path().join("bill.db"), &postgres, &facts);
    let p = november();
    for (name, ledger) in [("sqlite", &sqlite), ("postgres", &pg)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(one_bill(&runtime, ledger, &p)))
        });
    }
    group.finish();
}

const REFRESH_TENANTS: usize = 1_000;

/// 1,000 tenants with two leases each over November (admission, two capacity changes,
/// end): 8,001 facts.
fn tenants_workload() -> Vec<Fact> {
    let mut facts = vec![card_fact(card("1", "2026-01-01T00:00:00Z"))];
    let origin = t("2026-11-01T00:00:00Z");
    for i in 0..REFRESH_TENANTS * 2 {
        let tenant = format!("tenant-{}", i % REFRESH_TENANTS);
        let lease = format!("{tenant}/lease-{i}");
        let start = origin + Span::seconds((i as i64 * 977) % (25 * 86_400));
        facts.push(admit(
            &lease,
            &tenant,
            LeaseClass::Reserved,
            &start.to_rfc3339(),
        ));
        for j in 0..2 {
            let cpu = Decimal::from(2 + j);
            facts.push(bind_at(
                &lease,
                start + Span::seconds(3_600 * j),
                cpu,
                cpu * Decimal::from(4),
                Decimal::ZERO,
            ));
        }
        facts.push(end_at(&lease, start + Span::hours(8), EndReason::Expired));
    }
    facts
}

/// What the operator's bill refresh does for the ledger at 1,000 tenants: list them and
/// compute (and store) each one's open bill; beside it, one tenant's bill alone, measured
/// in the same run (the refresh is linear if it takes 1,000 times that).
fn refresh(c: &mut Criterion) {
    let facts = tenants_workload();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let postgres = TempPostgres::start().expect("a PostgreSQL server");
    let (sqlite, pg) = filled(&runtime, &dir.path().join("tenants.db"), &postgres, &facts);
    let p = november();
    let mut group = c.benchmark_group("refresh_1000_tenants");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (name, ledger) in [("sqlite", &sqlite), ("postgres", &pg)] {
        group.bench_function(format!("{name}/every_tenant"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let tenants = ledger.tenants().await.unwrap();
                    assert_eq!(tenants.len(), REFRESH_TENANTS);
                    for tenant in &tenants {
                        black_box(ledger.bill(tenant, &p, p.end).await.unwrap().lines.len());
                    }
                })
            })
        });
        group.bench_function(format!("{name}/one_tenant"), |b| {
            b.iter(|| black_box(one_bill(&runtime, ledger, &p)))
        });
    }
    group.finish();
}

criterion_group!(benches, in_memory, ledgers, refresh);
criterion_main!(benches);
