//! The same ledger suite against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod support;

use offpeak_billing::bill::{Bill, BillState};
use offpeak_billing::ledger::Ledger;
use offpeak_billing::meter::{EndReason, Fact, FactSet, Model};
use offpeak_billing::period::{BillingCycle, Period};
use offpeak_billing::rate::LeaseClass;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use sqlx::Row;
use support::postgres::TempPostgres;
use support::*;

fn month(label: &str) -> Period {
    Period::parse(BillingCycle::Monthly, label).unwrap()
}

fn october() -> Vec<Fact> {
    vec![
        card_fact(card("1", "2026-01-01T00:00:00Z")),
        admit("l1", "acme", LeaseClass::Spot, "2026-10-10T00:00:00Z"),
        bind("l1", "2026-10-10T00:00:00Z", "10", "0", "0"),
        end("l1", "2026-10-10T01:00:00Z", EndReason::Expired),
        admit("g1", "globex", LeaseClass::Reserved, "2026-10-11T00:00:00Z"),
        bind("g1", "2026-10-11T00:00:00Z", "1", "8", "0"),
        end("g1", "2026-10-11T10:00:00Z", EndReason::Expired),
    ]
}

/// A fresh, empty ledger per scenario.
trait Backend {
    /// URL of a fresh, empty database.
    fn fresh_url(&self) -> String;

    async fn fresh(&self) -> Ledger {
        Ledger::open(&self.fresh_url(), BillingCycle::Monthly)
            .await
            .unwrap()
    }
}

struct Sqlite(tempfile::TempDir, std::sync::atomic::AtomicU32);
impl Backend for Sqlite {
    fn fresh_url(&self) -> String {
        let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        format!(
            "sqlite://{}?mode=rwc",
            self.0.path().join(format!("ledger-{n}.db")).display()
        )
    }
}

impl Backend for TempPostgres {
    fn fresh_url(&self) -> String {
        self.fresh_database()
    }
}

async fn appending_is_idempotent(ledger: Ledger) {
    let facts = october();
    let first = ledger.append(&facts).await.unwrap();
    assert_eq!((first.inserted, first.duplicates), (7, 0));
    let again = ledger.append(&facts).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 7));
    let mut doubled = facts.clone();
    doubled.extend(facts);
    assert_eq!(ledger.append(&doubled).await.unwrap().inserted, 0);
    assert_eq!(ledger.fact_count().await.unwrap(), 7);
    assert_eq!(
        ledger.tenants().await.unwrap(),
        vec!["acme".to_string(), "globex".to_string()]
    );
}

async fn bad_batches_change_nothing(ledger: Ledger) {
    ledger.append(&october()).await.unwrap();
    let before = ledger
        .bill("acme", &month("2026-10"), month("2026-10").end)
        .await
        .unwrap();
    let cases: Vec<(Vec<Fact>, &str)> = vec![
        (
            vec![
                admit("l2", "acme", LeaseClass::Spot, "2026-10-12T00:00:00Z"),
                bind("ghost", "2026-10-12T00:00:00Z", "1", "0", "0"),
            ],
            "fact \"ghost/bound/1791763200\": unknown lease \"ghost\" (no leaseAdmitted fact for it in this batch or the ledger)",
        ),
        (
            vec![
                admit("l3", "acme", LeaseClass::Spot, "2026-10-12T00:00:00Z"),
                end("l3", "2026-10-11T00:00:00Z", EndReason::Expired),
            ],
            "fact \"l3/ended\": negative interval on lease \"l3\": end 2026-10-11 00:00:00 UTC is before 2026-10-12 00:00:00 UTC",
        ),
        (
            vec![end("l1", "2026-10-10T02:00:00Z", EndReason::Expired)],
            "fact key \"l1/ended\" is already recorded with different content",
        ),
        (
            vec![Fact {
                key: "l1/ended-again".into(),
                ..end("l1", "2026-10-10T02:00:00Z", EndReason::Expired)
            }],
            "fact \"l1/ended-again\": lease \"l1\" already has a leaseEnded fact (key \"l1/ended\")",
        ),
        (
            vec![card_fact(card("2", "2026-01-01T00:00:00Z"))],
            "rate cards standard@1 and standard@2 both take effect for pool \"*\" at 2026-01-01 00:00:00 UTC; give one a later effectiveFrom or disjoint pools",
        ),
    ];
    for (batch, message) in cases {
        let err = ledger.append(&batch).await.unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(ledger.fact_count().await.unwrap(), 7, "after: {message}");
    }
    let after = ledger
        .bill("acme", &month("2026-10"), month("2026-10").end)
        .await
        .unwrap();
    assert_eq!(before, after);
}

async fn stored_bills_match_the_pure_function(ledger: Ledger) {
    let facts = october();
    ledger.append(&facts).await.unwrap();
    let model = Model::compile(&FactSet::from_facts(facts).unwrap()).unwrap();
    let oct = month("2026-10");
    for tenant in ["acme", "globex"] {
        let stored = ledger.bill(tenant, &oct, oct.end).await.unwrap();
        assert_eq!(stored, model.bill(tenant, oct, oct.end, &[]).unwrap());
        assert_eq!(
            ledger.stored_bill(tenant, &oct).await.unwrap().unwrap(),
            stored
        );
    }
    // 1 core × 10 h × 0.04 + 8 GiB × 10 h × 0.004 = 0.40 + 0.32.
    assert_eq!(
        ledger
            .stored_bill("globex", &oct)
            .await
            .unwrap()
            .unwrap()
            .total
            .to_string(),
        "0.72 USD"
    );
}

async fn finalized_bills_never_change(ledger: Ledger) {
    ledger.append(&october()).await.unwrap();
    let oct = month("2026-10");
    let nov = month("2026-11");
    let finalized = ledger.finalize("acme", &oct).await.unwrap();
    assert_eq!(finalized.state, BillState::Finalized);
    assert_eq!(finalized.total.amount, d("0.20"));
    assert_eq!(
        ledger.finalize("acme", &oct).await.unwrap(),
        finalized,
        "finalize is idempotent"
    );

    // A late lease of October, and a new one in November.
    ledger
        .append(&[
            admit("l2", "acme", LeaseClass::Spot, "2026-10-20T00:00:00Z"),
            bind("l2", "2026-10-20T00:00:00Z", "5", "0", "0"),
            end("l2", "2026-10-20T02:00:00Z", EndReason::Expired),
            admit("l3", "acme", LeaseClass::Spot, "2026-11-02T00:00:00Z"),
            bind("l3", "2026-11-02T00:00:00Z", "1", "0", "0"),
            end("l3", "2026-11-02T01:00:00Z", EndReason::Expired),
        ])
        .await
        .unwrap();
    assert_eq!(ledger.bill("acme", &oct, oct.end).await.unwrap(), finalized);
    assert_eq!(
        ledger.stored_bill("acme", &oct).await.unwrap().unwrap(),
        finalized
    );

    let nov_bill = ledger.bill("acme", &nov, nov.end).await.unwrap();
    let lines: Vec<(Option<&str>, &str, String)> = nov_bill
        .lines
        .iter()
        .map(|l| {
            (
                l.correction_of.as_deref(),
                l.lease.as_str(),
                l.amount.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (None, "l3", "0.02".into()),
            (Some("2026-10"), "l2", "0.20".into())
        ]
    );
    let nov_final = ledger.finalize("acme", &nov).await.unwrap();
    assert_eq!(nov_final.lines, nov_bill.lines);
    let dec = month("2026-12");
    assert!(
        ledger
            .bill("acme", &dec, dec.end)
            .await
            .unwrap()
            .lines
            .is_empty(),
        "a correction is made once"
    );
}

async fn random_histories_bill_as_in_memory(ledger: Ledger, seed_offset: u64) {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &[seed_offset as u8; 32],
        ),
    );
    let scenario = support::scenarios::scenario()
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let facts = scenario.facts();
    // Batches in arrival order, each replaying part of the previous one.
    let mut previous: Vec<Fact> = Vec::new();
    for chunk in facts.chunks(5) {
        let mut batch: Vec<Fact> = previous.iter().rev().take(2).cloned().collect();
        batch.extend(chunk.iter().cloned());
        ledger.append(&batch).await.unwrap();
        previous = chunk.to_vec();
    }
    let model = Model::compile(&FactSet::from_facts(facts).unwrap()).unwrap();
    for label in ["2026-10", "2026-11", "2026-12"] {
        let p = month(label);
        for tenant in model.tenants() {
            let stored: Bill = ledger.bill(tenant, &p, p.end).await.unwrap();
            assert_eq!(
                stored,
                model.bill(tenant, p, p.end, &[]).unwrap(),
                "{tenant} {label}"
            );
        }
    }
}

/// What SQL users read from the `bills` and `bill_lines` columns: amounts with every
/// decimal place of the bill's precision, never `216` for `216.00`.
async fn stored_amounts_keep_their_precision(url: String) {
    let ledger = Ledger::open(&url, BillingCycle::Monthly).await.unwrap();
    let mut c = card("1", "2026-01-01T00:00:00Z");
    c.prices.reserved.gpu = d("36");
    ledger
        .append(&[
            card_fact(c),
            admit("g", "acme", LeaseClass::Reserved, "2026-10-01T00:00:00Z"),
            bind("g", "2026-10-01T00:00:00Z", "0", "0", "6"),
            end("g", "2026-10-01T01:00:00Z", EndReason::Expired),
        ])
        .await
        .unwrap();
    let oct = month("2026-10");
    ledger.finalize("acme", &oct).await.unwrap();
    ledger.close().await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let total: String = sqlx::query("SELECT total FROM bills WHERE tenant = 'acme'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("total");
    assert_eq!(total, "216.00");
    let rows: Vec<(String, String)> =
        sqlx::query("SELECT amount, body FROM bill_lines WHERE tenant = 'acme' ORDER BY line_no")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("amount"), r.get("body")))
            .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "216.00");
    let body: serde_json::Value = serde_json::from_str(&rows[0].1).unwrap();
    assert_eq!(
        body["amount"],
        serde_json::json!({"amount": "216.00", "currency": "USD"})
    );
    // November, with nothing in it, is stored with a zero at the same precision.
    let ledger = Ledger::open(&url, BillingCycle::Monthly).await.unwrap();
    let nov = month("2026-11");
    assert_eq!(
        ledger
            .bill("acme", &nov, nov.end)
            .await
            .unwrap()
            .total
            .to_string(),
        "0.00 USD"
    );
    let total: String =
        sqlx::query("SELECT total FROM bills WHERE tenant = 'acme' AND period = '2026-11'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("total");
    assert_eq!(total, "0.00");
    pool.close().await;
    ledger.close().await;
}

async fn suite(backend: &impl Backend) {
    stored_amounts_keep_their_precision(backend.fresh_url()).await;
    appending_is_idempotent(backend.fresh().await).await;
    bad_batches_change_nothing(backend.fresh().await).await;
    stored_bills_match_the_pure_function(backend.fresh().await).await;
    finalized_bills_never_change(backend.fresh().await).await;
    for seed in 0..6 {
        random_histories_bill_as_in_memory(backend.fresh().await, seed).await;
    }
}

#[tokio::test]
async fn sqlite_ledger() {
    let dir = tempfile::tempdir().unwrap();
    suite(&Sqlite(dir, Default::default())).await;
}

#[tokio::test]
async fn postgres_ledger() {
    let server = TempPostgres::start();
    suite(&server).await;
}

#[tokio::test]
async fn sqlite_ledger_survives_reopening_and_keeps_its_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open_sqlite(&path, BillingCycle::Monthly)
        .await
        .unwrap();
    ledger.append(&october()).await.unwrap();
    let oct = month("2026-10");
    let finalized = ledger.finalize("acme", &oct).await.unwrap();
    ledger.close().await;
    let reopened = Ledger::open_sqlite(&path, BillingCycle::Monthly)
        .await
        .unwrap();
    assert_eq!(reopened.fact_count().await.unwrap(), 7);
    assert_eq!(
        reopened.stored_bill("acme", &oct).await.unwrap().unwrap(),
        finalized
    );
    reopened.close().await;
    let err = Ledger::open_sqlite(&path, BillingCycle::Weekly)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ledger was created with a monthly billing cycle, opened with weekly"
    );
}
