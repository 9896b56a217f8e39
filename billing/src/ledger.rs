//! The durable ledger: facts appended idempotently, bills stored with their lines.
//!
//! One code path for both backends through `sqlx::Any`: an embedded SQLite file by
//! default (nothing to install), PostgreSQL for clusters running several operator
//! replicas. The schema is in `billing/migrations/` and is applied on open.
//!
//! Every write is one transaction: a batch of facts is validated against the ledger
//! and stored whole or not at all; a bill is replaced with all its lines or not at
//! all. A crash between two writes loses nothing that was acknowledged, and a replay
//! of the same facts after a crash is a no-op, so no second is lost or counted twice.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::bill::{Bill, BillState};
use crate::error::{BillingError, Result};
use crate::meter::{AppendOutcome, Fact, FactBody, FactSet, Model, validate_batch};
use crate::money::Currency;
use crate::period::{BillingCycle, Period};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows per multi-row INSERT and ids per `IN (...)`: well under SQLite's and
/// PostgreSQL's bind-parameter limits.
const CHUNK: usize = 500;

/// Key of the PostgreSQL advisory lock that serializes appends (ASCII `offpeak1`).
const APPEND_LOCK: i64 = 0x6f66_6670_6561_6b31;

/// The ledger.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: AnyPool,
    cycle: BillingCycle,
    /// PostgreSQL: several replicas may append at once.
    postgres: bool,
}

fn corrupt(what: &'static str, err: impl std::fmt::Display) -> BillingError {
    BillingError::Corrupt {
        what,
        message: err.to_string(),
    }
}

fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_fact(row: &AnyRow) -> Result<Fact> {
    let body: String = row.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| corrupt("fact", e))
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `url`: `sqlite://PATH?mode=rwc` or
    /// `postgres://user@host:port/db`. Applies migrations. A ledger remembers the
    /// billing cycle it was created with and refuses to be opened with another.
    pub async fn open(url: &str, cycle: BillingCycle) -> Result<Ledger> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let options = AnyPoolOptions::new().after_connect(move |conn, _meta| {
            Box::pin(async move {
                if sqlite {
                    // WAL keeps readers off the writer's back; FULL sync makes every
                    // acknowledged commit survive a power cut.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                }
                Ok(())
            })
        });
        // One SQLite connection: writers serialize anyway, and a single connection
        // cannot deadlock upgrading a read transaction to a write.
        // PostgreSQL: a server that is away is noticed within 5 s (sqlx's default would
        // wait 30 s per attempt, so an outage would show late and retries crawl).
        let options = if sqlite {
            options.max_connections(1)
        } else {
            options
                .max_connections(4)
                .acquire_timeout(std::time::Duration::from_secs(5))
        };
        let pool = options.connect(url).await?;
        MIGRATOR.run(&pool).await?;
        sqlx::query(
            "INSERT INTO ledger_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind("billingCycle")
        .bind(cycle.name())
        .execute(&pool)
        .await?;
        let stored: String = sqlx::query("SELECT value FROM ledger_meta WHERE name = $1")
            .bind("billingCycle")
            .fetch_one(&pool)
            .await?
            .try_get("value")?;
        if stored != cycle.name() {
            return Err(BillingError::CycleMismatch {
                stored,
                requested: cycle.name().to_string(),
            });
        }
        Ok(Ledger {
            pool,
            cycle,
            postgres: url.starts_with("postgres:") || url.starts_with("postgresql:"),
        })
    }

    /// Opens (creating if needed) an SQLite ledger file.
    pub async fn open_sqlite(path: &Path, cycle: BillingCycle) -> Result<Ledger> {
        Ledger::open(&format!("sqlite://{}?mode=rwc", path.display()), cycle).await
    }

    /// The ledger's billing cycle.
    pub fn cycle(&self) -> BillingCycle {
        self.cycle
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Appends a batch of facts in one transaction. Facts already recorded with the
    /// same content are skipped; any invalid fact (see [`crate::meter`]) fails the
    /// whole batch and leaves the ledger as it was.
    pub async fn append(&self, batch: &[Fact]) -> Result<AppendOutcome> {
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            // A batch is validated against what the ledger holds, then written: two
            // writers doing that at once would each miss the other's facts (and the
            // database, not the rules, would refuse one of two identical batches with
            // a unique violation on a second index). One append at a time, then; the
            // lock goes with the transaction.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK)
                .execute(&mut *tx)
                .await?;
        }

        // What the ledger already knows that the batch could clash with.
        let mut known = FactSet::new();
        let keys: Vec<&str> = batch.iter().map(|f| f.key.as_str()).collect();
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT body FROM facts WHERE fact_key IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query.bind(*key);
            }
            for row in query.fetch_all(&mut *tx).await? {
                known.insert_unchecked(parse_fact(&row)?);
            }
        }
        let mut leases: Vec<&str> = batch.iter().filter_map(|f| f.body.lease()).collect();
        leases.sort_unstable();
        leases.dedup();
        for chunk in leases.chunks(CHUNK) {
            let sql = format!(
                "SELECT body FROM facts WHERE kind IN ('leaseAdmitted', 'leaseEnded') AND subject IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for lease in chunk {
                query = query.bind(*lease);
            }
            for row in query.fetch_all(&mut *tx).await? {
                known.insert_unchecked(parse_fact(&row)?);
            }
        }
        if batch
            .iter()
            .any(|f| matches!(f.body, FactBody::RateCard(_)))
        {
            for row in sqlx::query("SELECT body FROM facts WHERE kind = 'rateCard'")
                .fetch_all(&mut *tx)
                .await?
            {
                known.insert_unchecked(parse_fact(&row)?);
            }
        }

        let fresh = validate_batch(&known, batch)?;
        let tenant_of: HashMap<&str, &str> = batch
            .iter()
            .filter_map(|f| match &f.body {
                FactBody::LeaseAdmitted(a) => Some((a.lease.as_str(), a.tenant.as_str())),
                _ => None,
            })
            .chain(
                leases
                    .iter()
                    .filter_map(|l| known.admission(l).map(|(_, a)| (*l, a.tenant.as_str()))),
            )
            .collect();

        let mut inserted = 0;
        for chunk in fresh.chunks(CHUNK) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(i * 6 + 1, 6)))
                .collect();
            let sql = format!(
                "INSERT INTO facts (fact_key, kind, subject, tenant, at_unix, body) VALUES {} \
                 ON CONFLICT (fact_key) DO NOTHING RETURNING fact_key",
                rows.join(",")
            );
            let mut query = sqlx::query(&sql);
            for &i in chunk {
                let fact = &batch[i];
                let tenant = fact
                    .body
                    .lease()
                    .and_then(|l| tenant_of.get(l))
                    .map(|t| t.to_string());
                let body = serde_json::to_string(fact).map_err(|e| corrupt("fact", e))?;
                query = query
                    .bind(fact.key.clone())
                    .bind(fact.body.kind())
                    .bind(fact.body.subject())
                    .bind(tenant)
                    .bind(fact.body.at().timestamp())
                    .bind(body);
            }
            let stored = query.fetch_all(&mut *tx).await?;
            inserted += stored.len();
            if stored.len() < chunk.len() {
                // Another writer recorded some of these keys since we looked (one that
                // does not take the append lock: an older replica during an upgrade):
                // fine if it recorded the same facts.
                let stored: std::collections::HashSet<String> = stored
                    .iter()
                    .map(|r| r.try_get::<String, _>("fact_key"))
                    .collect::<Result<_, _>>()?;
                for &i in chunk {
                    let fact = &batch[i];
                    if stored.contains(&fact.key) {
                        continue;
                    }
                    let row = sqlx::query("SELECT body FROM facts WHERE fact_key = $1")
                        .bind(fact.key.clone())
                        .fetch_one(&mut *tx)
                        .await?;
                    if parse_fact(&row)?.body != fact.body {
                        return Err(BillingError::KeyConflict {
                            key: fact.key.clone(),
                        });
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(AppendOutcome {
            inserted,
            duplicates: batch.len() - inserted,
        })
    }

    /// Number of facts recorded.
    pub async fn fact_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM facts")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Tenants with at least one lease, sorted.
    pub async fn tenants(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT tenant FROM facts WHERE tenant IS NOT NULL ORDER BY tenant",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("tenant").map_err(Into::into))
            .collect()
    }

    /// Every fact a bill of `tenant` reads: its leases' facts, pool utilisation and
    /// rate cards.
    pub async fn facts_for_tenant(&self, tenant: &str) -> Result<FactSet> {
        let mut conn = self.pool.acquire().await?;
        load_tenant_facts(&mut conn, tenant).await
    }

    /// The stored bill of `tenant` for `period`, if any.
    pub async fn stored_bill(&self, tenant: &str, period: &Period) -> Result<Option<Bill>> {
        let mut conn = self.pool.acquire().await?;
        load_bill(&mut conn, tenant, &period.label()).await
    }

    /// Recomputes and stores the open bill of `tenant` for `period` from the facts up
    /// to `as_of`. A finalized bill is returned as stored, never recomputed.
    pub async fn bill(&self, tenant: &str, period: &Period, as_of: DateTime<Utc>) -> Result<Bill> {
        self.compute_and_store(tenant, period, as_of, BillState::Open)
            .await
    }

    /// Computes the bill of `tenant` for `period` from every fact up to the period's
    /// end and freezes it. Idempotent: finalizing a finalized bill returns it unchanged.
    /// Facts that arrive later for this period become correction lines on the next
    /// open bill.
    pub async fn finalize(&self, tenant: &str, period: &Period) -> Result<Bill> {
        self.compute_and_store(tenant, period, period.end, BillState::Finalized)
            .await
    }

    /// The bill of `tenant` for `period` as it stands, without storing anything: the
    /// stored bill if it is finalized, else the open bill computed from the facts up
    /// to `as_of` (with corrections of the finalized periods before it).
    pub async fn current_bill(
        &self,
        tenant: &str,
        period: &Period,
        as_of: DateTime<Utc>,
    ) -> Result<Bill> {
        let mut conn = self.pool.acquire().await?;
        match current(&mut conn, tenant, period, as_of).await? {
            Current::Finalized(bill) | Current::Open(bill) => Ok(bill),
        }
    }

    async fn compute_and_store(
        &self,
        tenant: &str,
        period: &Period,
        as_of: DateTime<Utc>,
        state: BillState,
    ) -> Result<Bill> {
        let label = period.label();
        let mut tx = self.pool.begin().await?;
        let mut bill = match current(&mut tx, tenant, period, as_of).await? {
            Current::Finalized(bill) => return Ok(bill),
            Current::Open(bill) => bill,
        };
        bill.state = state;

        let header = Bill {
            lines: Vec::new(),
            ..bill.clone()
        };
        let header = serde_json::to_string(&header).map_err(|e| corrupt("bill", e))?;
        let written = sqlx::query(
            "INSERT INTO bills (tenant, period, state, currency, total, as_of_unix, header) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant, period) DO UPDATE SET state = excluded.state, currency = excluded.currency, \
             total = excluded.total, as_of_unix = excluded.as_of_unix, header = excluded.header \
             WHERE bills.state = 'open'",
        )
        .bind(tenant)
        .bind(label.clone())
        .bind(state.name())
        .bind(bill.currency.code())
        .bind(bill.total.amount.to_string())
        .bind(bill.as_of.timestamp())
        .bind(header)
        .execute(&mut *tx)
        .await?;
        if written.rows_affected() == 0 {
            // Finalized by another replica since we looked: theirs stands.
            drop(tx);
            return self.stored_bill(tenant, period).await?.ok_or_else(|| {
                BillingError::Finalized {
                    tenant: tenant.to_string(),
                    period: label,
                }
            });
        }
        sqlx::query("DELETE FROM bill_lines WHERE tenant = $1 AND period = $2")
            .bind(tenant)
            .bind(label.clone())
            .execute(&mut *tx)
            .await?;
        let numbered: Vec<(usize, &crate::bill::BillLine)> =
            bill.lines.iter().enumerate().collect();
        for chunk in numbered.chunks(CHUNK) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(i * 8 + 1, 8)))
                .collect();
            let sql = format!(
                "INSERT INTO bill_lines (tenant, period, line_no, kind, lease, correction_of, amount, body) VALUES {}",
                rows.join(",")
            );
            let mut query = sqlx::query(&sql);
            for (no, line) in chunk {
                let body = serde_json::to_string(line).map_err(|e| corrupt("bill line", e))?;
                let kind = serde_json::to_value(line.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                query = query
                    .bind(tenant)
                    .bind(label.clone())
                    .bind(i64::try_from(*no).unwrap_or(i64::MAX))
                    .bind(kind)
                    .bind(line.lease.clone())
                    .bind(line.correction_of.clone())
                    .bind(line.amount.amount.to_string())
                    .bind(body);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(bill)
    }
}

/// A bill as the ledger has it now.
enum Current {
    /// Stored and frozen.
    Finalized(Bill),
    /// Computed from the facts, not stored by this.
    Open(Bill),
}

/// The stored bill when it is finalized, else the open bill computed from the facts
/// up to `as_of`, with corrections of the finalized periods before it.
async fn current(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    period: &Period,
    as_of: DateTime<Utc>,
) -> Result<Current> {
    if let Some(existing) = load_bill(&mut *conn, tenant, &period.label()).await?
        && existing.state == BillState::Finalized
    {
        return Ok(Current::Finalized(existing));
    }
    let facts = load_tenant_facts(&mut *conn, tenant).await?;
    let mut finalized = Vec::new();
    let rows = sqlx::query("SELECT period FROM bills WHERE tenant = $1 AND state = 'finalized'")
        .bind(tenant)
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let p: String = row.try_get("period")?;
        if let Some(b) = load_bill(&mut *conn, tenant, &p).await? {
            finalized.push(b);
        }
    }
    let model = Model::compile(&facts)?;
    Ok(Current::Open(
        model.bill(tenant, *period, as_of, &finalized)?,
    ))
}

async fn load_tenant_facts(conn: &mut sqlx::AnyConnection, tenant: &str) -> Result<FactSet> {
    let rows = sqlx::query("SELECT body FROM facts WHERE tenant = $1 OR tenant IS NULL")
        .bind(tenant)
        .fetch_all(&mut *conn)
        .await?;
    let mut facts = FactSet::new();
    for row in &rows {
        facts.insert_unchecked(parse_fact(row)?);
    }
    Ok(facts)
}

async fn load_bill(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    period: &str,
) -> Result<Option<Bill>> {
    let Some(row) =
        sqlx::query("SELECT header, total, currency FROM bills WHERE tenant = $1 AND period = $2")
            .bind(tenant)
            .bind(period)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let header: String = row.try_get("header")?;
    let mut bill: Bill = serde_json::from_str(&header).map_err(|e| corrupt("bill", e))?;
    // The columns are what SQL users see; they must agree with the JSON.
    let total: String = row.try_get("total")?;
    let currency: String = row.try_get("currency")?;
    let total = Decimal::from_str(&total).map_err(|e| corrupt("bill total", e))?;
    if total != bill.total.amount
        || Currency::from_code(&currency, "bills.currency")? != bill.currency
    {
        return Err(corrupt(
            "bill",
            format!("{tenant} {period}: columns disagree with the header"),
        ));
    }
    let rows = sqlx::query(
        "SELECT body FROM bill_lines WHERE tenant = $1 AND period = $2 ORDER BY line_no",
    )
    .bind(tenant)
    .bind(period)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let body: String = row.try_get("body")?;
        bill.lines
            .push(serde_json::from_str(&body).map_err(|e| corrupt("bill line", e))?);
    }
    Ok(Some(bill))
}
