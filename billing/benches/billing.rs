//! Bills for 10,000 leases from 1,000,000 facts, and fact ingestion into each ledger
//! backend. `cargo bench -p offpeak-billing`.
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
    let sqlite = runtime
        .block_on(Ledger::open_sqlite(
            &dir.path().join("bill.db"),
            BillingCycle::Monthly,
        ))
        .unwrap();
    runtime.block_on(ingest(sqlite.clone(), &facts));
    let sqlite = runtime
        .block_on(Ledger::open_sqlite(
            &dir.path().join("bill.db"),
            BillingCycle::Monthly,
        ))
        .unwrap();
    let pg = runtime
        .block_on(Ledger::open(
            &postgres.fresh_database().expect("a fresh database"),
            BillingCycle::Monthly,
        ))
        .unwrap();
    runtime.block_on(async {
        for batch in facts.chunks(INGEST_BATCH) {
            pg.append(batch).await.unwrap();
        }
    });
    let p = november();
    for (name, ledger) in [("sqlite", &sqlite), ("postgres", &pg)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    runtime
                        .block_on(ledger.bill("tenant-7", &p, p.end))
                        .unwrap()
                        .lines
                        .len(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, in_memory, ledgers);
criterion_main!(benches);
