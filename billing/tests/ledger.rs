//! The same ledger suite against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use offpeak_billing::bill::{Bill, BillState};
use offpeak_billing::ledger::Ledger;
use offpeak_billing::meter::{EndReason, Fact, FactSet, Model};
use offpeak_billing::period::{BillingCycle, Period};
use offpeak_billing::rate::LeaseClass;
use offpeak_testenv::TempPostgres;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use sqlx::Row;
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
        self.fresh_database().expect("a fresh database")
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

async fn random_histories_bill_as_in_memory(url: String, seed_offset: u64) {
    let ledger = Ledger::open(&url, BillingCycle::Monthly).await.unwrap();
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
            let computed = model.bill(tenant, p, p.end, &[]).unwrap();
            assert_eq!(stored, computed, "{tenant} {label}");
            // Digit for digit, places included (`Decimal` equality ignores them).
            assert_eq!(
                serde_json::to_string(&ledger.stored_bill(tenant, &p).await.unwrap()).unwrap(),
                serde_json::to_string(&Some(computed)).unwrap()
            );
        }
    }
    ledger.close().await;
    // What SQL users read: every stored amount and total with exactly two places.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let amounts: Vec<String> =
        sqlx::query("SELECT amount AS v FROM bill_lines UNION ALL SELECT total AS v FROM bills")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("v"))
            .collect();
    assert!(!amounts.is_empty());
    for amount in &amounts {
        let places = amount.split_once('.').map(|(_, f)| f.len());
        assert_eq!(places, Some(2), "stored amount {amount:?}");
    }
    pool.close().await;
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
        random_histories_bill_as_in_memory(backend.fresh_url(), seed).await;
    }
}

#[tokio::test]
async fn sqlite_ledger() {
    let dir = tempfile::tempdir().unwrap();
    suite(&Sqlite(dir, Default::default())).await;
}

#[tokio::test]
async fn postgres_ledger() {
    let server = TempPostgres::start().expect("a PostgreSQL server");
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

/// Sessions of the current database waiting for a lock, and what they run.
async fn waiting(watcher: &mut sqlx::AnyConnection) -> Vec<String> {
    sqlx::query(
        "SELECT query FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' ORDER BY query",
    )
    .fetch_all(watcher)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("query"))
    .collect()
}

/// Waits until `count` sessions wait for a lock.
async fn until_waiting(watcher: &mut sqlx::AnyConnection, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let queries = waiting(watcher).await;
        if queries.len() == count {
            return queries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {count} sessions waiting for a lock, got {queries:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

type Appended = offpeak_billing::error::Result<offpeak_billing::meter::AppendOutcome>;

/// Runs `first` and `second` as two writers (two operator replicas) with their own
/// connections, both inside `append` at once: a third session holds a SHARE lock on
/// `facts`, so neither can write until both have started.
async fn race(url: &str, first: Vec<Fact>, second: Vec<Fact>) -> [Appended; 2] {
    use sqlx::Connection;
    let writers = [
        Ledger::open(url, BillingCycle::Monthly).await.unwrap(),
        Ledger::open(url, BillingCycle::Monthly).await.unwrap(),
    ];
    let mut gate = sqlx::AnyConnection::connect(url).await.unwrap();
    let mut watcher = sqlx::AnyConnection::connect(url).await.unwrap();
    let mut held = Connection::begin(&mut gate).await.unwrap();
    sqlx::query("LOCK TABLE facts IN SHARE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    let tasks: Vec<_> = [first, second]
        .into_iter()
        .zip(writers.clone())
        .map(|(batch, ledger)| tokio::spawn(async move { ledger.append(&batch).await }))
        .collect();
    // One has read the ledger and waits to write, the other waits to begin.
    until_waiting(&mut watcher, 2).await;
    held.commit().await.unwrap();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    for ledger in writers {
        ledger.close().await;
    }
    let [a, b]: [Appended; 2] = results.try_into().ok().unwrap();
    [a, b]
}

/// Appends `batch` while another session that does not take the append lock (an
/// older replica during an upgrade) has inserted `theirs` without committing: the
/// append has read a ledger without those facts and meets them at its INSERT.
async fn append_against_uncommitted(url: &str, theirs: &[Fact], batch: Vec<Fact>) -> Appended {
    use sqlx::Connection;
    let ledger = Ledger::open(url, BillingCycle::Monthly).await.unwrap();
    let mut other = sqlx::AnyConnection::connect(url).await.unwrap();
    let mut watcher = sqlx::AnyConnection::connect(url).await.unwrap();
    let tenants: BTreeMap<String, String> = theirs
        .iter()
        .filter_map(|f| match &f.body {
            offpeak_billing::meter::FactBody::LeaseAdmitted(a) => {
                Some((a.lease.clone(), a.tenant.clone()))
            }
            _ => None,
        })
        .collect();
    let mut tx = Connection::begin(&mut other).await.unwrap();
    for fact in theirs {
        sqlx::query(
            "INSERT INTO facts (fact_key, kind, subject, tenant, at_unix, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(fact.key.clone())
        .bind(fact.body.kind())
        .bind(fact.body.subject())
        .bind(fact.body.lease().and_then(|l| tenants.get(l)).cloned())
        .bind(fact.body.at().timestamp())
        .bind(serde_json::to_string(fact).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let task = {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.append(&batch).await })
    };
    let queries = until_waiting(&mut watcher, 1).await;
    assert!(queries[0].starts_with("INSERT INTO facts"), "{queries:?}");
    tx.commit().await.unwrap();
    let result = task.await.unwrap();
    ledger.close().await;
    result
}

/// Every fact of a ledger, by key, as JSON.
async fn stored(url: &str) -> BTreeMap<String, serde_json::Value> {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query("SELECT fact_key, body FROM facts")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let body: String = r.get("body");
            (r.get("fact_key"), serde_json::from_str(&body).unwrap())
        })
        .collect()
}

fn as_stored(batch: &[Fact]) -> BTreeMap<String, serde_json::Value> {
    batch
        .iter()
        .map(|f| (f.key.clone(), serde_json::to_value(f).unwrap()))
        .collect()
}

/// October, except that `l1` ends an hour later under the same key, and a lease `g2`
/// whose facts only this batch has, one before and one after the conflicting fact.
fn october_rewritten() -> Vec<Fact> {
    let mut batch = vec![admit(
        "g2",
        "globex",
        LeaseClass::Spot,
        "2026-10-12T00:00:00Z",
    )];
    batch.extend(october().into_iter().map(|f| {
        if f.key == "l1/ended" {
            end("l1", "2026-10-10T02:00:00Z", EndReason::Expired)
        } else {
            f
        }
    }));
    batch.push(end("g2", "2026-10-12T01:00:00Z", EndReason::Expired));
    batch
}

/// The one writer that succeeded and the other's error.
fn winner_and_loser(
    results: [Appended; 2],
    batches: [Vec<Fact>; 2],
) -> (Vec<Fact>, offpeak_billing::meter::AppendOutcome, String) {
    match results {
        [Ok(won), Err(lost)] => (batches[0].clone(), won, lost.to_string()),
        [Err(lost), Ok(won)] => (batches[1].clone(), won, lost.to_string()),
        other => panic!("exactly one writer must win: {other:?}"),
    }
}

#[tokio::test]
async fn postgres_writers_racing_on_the_same_keys() {
    sqlx::any::install_default_drivers();
    let server = TempPostgres::start().expect("a PostgreSQL server");

    // Two replicas record the same facts at once: one records them, the other finds
    // them recorded with the same content, and neither fails.
    let url = server.fresh_database().expect("a fresh database");
    let mut outcomes: Vec<(usize, usize)> = race(&url, october(), october())
        .await
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            (r.inserted, r.duplicates)
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, vec![(0, 7), (7, 0)]);
    assert_eq!(stored(&url).await, as_stored(&october()));

    // The same key with different content: whoever comes second is refused, and
    // nothing of its batch is kept, not even the facts under keys only it had.
    let url = server.fresh_database().expect("a fresh database");
    let batches = [october(), october_rewritten()];
    let results = race(&url, batches[0].clone(), batches[1].clone()).await;
    let (winner, won, lost) = winner_and_loser(results, batches);
    assert_eq!(
        lost,
        "fact key \"l1/ended\" is already recorded with different content"
    );
    assert_eq!((won.inserted, won.duplicates), (winner.len(), 0));
    assert_eq!(stored(&url).await, as_stored(&winner));

    // Two versions of a rate card from the same instant, under different keys: no
    // index stops that, the rules do, and only if each writer sees the other's card.
    let url = server.fresh_database().expect("a fresh database");
    let batches = [
        vec![card_fact(card("1", "2026-01-01T00:00:00Z"))],
        vec![card_fact(card("2", "2026-01-01T00:00:00Z"))],
    ];
    let results = race(&url, batches[0].clone(), batches[1].clone()).await;
    let (winner, _, lost) = winner_and_loser(results, batches);
    let (first, second) = if winner[0].key == "ratecard/standard@1" {
        ("standard@1", "standard@2")
    } else {
        ("standard@2", "standard@1")
    };
    assert_eq!(
        lost,
        format!(
            "rate cards {first} and {second} both take effect for pool \"*\" at 2026-01-01 00:00:00 UTC; give one a later effectiveFrom or disjoint pools"
        )
    );
    assert_eq!(stored(&url).await, as_stored(&winner));
}

#[tokio::test]
async fn postgres_append_meets_facts_another_writer_has_not_committed() {
    sqlx::any::install_default_drivers();
    let server = TempPostgres::start().expect("a PostgreSQL server");

    // Same keys, same content: the append waits for the other writer, then counts
    // its facts as already known.
    let url = server.fresh_database().expect("a fresh database");
    let outcome = append_against_uncommitted(&url, &october(), october())
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (0, 7));
    assert_eq!(stored(&url).await, as_stored(&october()));

    // Same key, different content: refused, and the facts the append had already
    // inserted (g2's admission) are rolled back with the rest.
    let url = server.fresh_database().expect("a fresh database");
    let err = append_against_uncommitted(&url, &october(), october_rewritten())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "fact key \"l1/ended\" is already recorded with different content"
    );
    assert_eq!(stored(&url).await, as_stored(&october()));
}
