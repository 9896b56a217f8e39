//! `offpeak billing ...`: offline replay of a facts file, ledger maintenance, and the
//! FOCUS export of a period for finance.
//!
//! The `offpeak` binary (operator crate) wires its `billing` subcommand to
//! [`BillingCommand`] and [`run`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::bill::{Bill, BillState};
use crate::error::BillingError;
use crate::focus::{FocusOptions, write_focus_csv};
use crate::ledger::Ledger;
use crate::meter::{Fact, FactBody, FactSet, Model, RateCardPublished, parse_facts};
use crate::period::{BillingCycle, Period};
use crate::rate::RateCard;

/// Default ledger: an SQLite file in the working directory.
pub const DEFAULT_LEDGER: &str = "sqlite://offpeak-billing.db?mode=rwc";

/// How bills are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    #[default]
    Table,
    /// The bills as a JSON array.
    Json,
    /// FinOps FOCUS 1.2 CSV.
    FocusCsv,
}

/// Billing subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BillingCommand {
    /// Read facts from a JSON Lines file and print bills; no ledger involved.
    Replay(ReplayArgs),
    /// Append the facts of a JSON Lines file (and rate cards) to a ledger.
    Ingest(IngestArgs),
    /// Compute a bill from a ledger, optionally finalizing it.
    Bill(BillArgs),
    /// Export every tenant's bill of a period from a ledger, for finance.
    Export(ExportArgs),
}

/// What `export` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// FinOps FOCUS 1.2 CSV.
    #[default]
    FocusCsv,
}

/// Where facts come from.
#[derive(clap::Args, Debug)]
pub struct FactsInput {
    /// Facts file, JSON Lines (see billing/README.md).
    #[arg(long, value_name = "FILE")]
    pub facts: PathBuf,
    /// Rate card file(s), YAML or JSON: one card or a list. Cards can also be facts.
    #[arg(long = "rate-card", value_name = "FILE")]
    pub rate_cards: Vec<PathBuf>,
}

/// How bills are selected and printed.
#[derive(clap::Args, Debug)]
pub struct BillSelection {
    /// Billing period label: 2026-11 (monthly), 2026-W48 (weekly), 2026-11-23 (daily).
    #[arg(long)]
    pub period: String,
    /// Only this tenant's bill; every tenant's when absent.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// Length of a billing period.
    #[arg(long, value_enum, default_value_t)]
    pub cycle: BillingCycle,
    /// Bill facts up to this instant (RFC 3339); the period end when absent.
    #[arg(long)]
    pub as_of: Option<DateTime<Utc>>,
}

/// `replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub input: FactsInput,
    #[command(flatten)]
    pub selection: BillSelection,
}

/// `ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Ledger URL: sqlite://FILE?mode=rwc or postgres://user@host:port/db.
    #[arg(long, env = "OFFPEAK_LEDGER", default_value = DEFAULT_LEDGER)]
    pub ledger: String,
    /// Length of a billing period (fixed when the ledger is created).
    #[arg(long, value_enum, default_value_t)]
    pub cycle: BillingCycle,
    #[command(flatten)]
    pub input: FactsInput,
}

/// `bill`.
#[derive(clap::Args, Debug)]
pub struct BillArgs {
    /// Ledger URL: sqlite://FILE?mode=rwc or postgres://user@host:port/db.
    #[arg(long, env = "OFFPEAK_LEDGER", default_value = DEFAULT_LEDGER)]
    pub ledger: String,
    /// Freeze the bill (after the period is over); later facts become corrections.
    #[arg(long)]
    pub finalize: bool,
    #[command(flatten)]
    pub selection: BillSelection,
}

/// `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Ledger URL: sqlite://FILE?mode=rwc or postgres://user@host:port/db.
    #[arg(long, env = "OFFPEAK_LEDGER", default_value = DEFAULT_LEDGER)]
    pub ledger: String,
    /// Billing period label: 2026-11 (monthly), 2026-W48 (weekly), 2026-11-23 (daily).
    #[arg(long)]
    pub period: String,
    /// Length of a billing period (the ledger's).
    #[arg(long, value_enum, default_value_t)]
    pub cycle: BillingCycle,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ExportFormat,
    /// Write the export to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Reads a rate card file: YAML or JSON, one card or a list of cards.
pub fn read_rate_cards(path: &Path) -> Result<Vec<RateCard>, BillingError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| BillingError::MalformedInput {
        file: file.clone(),
        line: 0,
        message: e.to_string(),
    })?;
    let malformed = |e: serde_yaml::Error| BillingError::MalformedInput {
        file: file.clone(),
        line: e.location().map_or(0, |l| l.line()),
        message: e.to_string(),
    };
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(malformed)?;
    let cards = if value.is_sequence() {
        serde_yaml::from_value(value).map_err(malformed)?
    } else {
        vec![serde_yaml::from_value(value).map_err(malformed)?]
    };
    Ok(cards)
}

/// Reads facts and rate card files into one batch.
pub fn read_input(input: &FactsInput) -> Result<Vec<Fact>, BillingError> {
    let file = input.facts.display().to_string();
    let text = std::fs::read_to_string(&input.facts).map_err(|e| BillingError::MalformedInput {
        file: file.clone(),
        line: 0,
        message: e.to_string(),
    })?;
    let mut facts = parse_facts(&text, &file)?;
    for path in &input.rate_cards {
        for card in read_rate_cards(path)? {
            facts.push(Fact {
                key: format!("ratecard/{}", card.id()),
                body: FactBody::RateCard(Box::new(RateCardPublished { rate_card: card })),
            });
        }
    }
    Ok(facts)
}

/// Prints bills in `format`.
pub fn print_bills(
    bills: &[Bill],
    format: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, bills)?;
            writeln!(out)?;
        }
        OutputFormat::FocusCsv => write_focus_csv(bills, &FocusOptions::default(), out)?,
        OutputFormat::Table => {
            for (i, bill) in bills.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                write_table(bill, out)?;
            }
        }
    }
    Ok(())
}

fn write_table(bill: &Bill, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Bill {} {} ({}, as of {}) in {}",
        bill.tenant,
        bill.period,
        bill.state.name(),
        bill.as_of.format("%Y-%m-%dT%H:%M:%SZ"),
        bill.currency
    )?;
    let header = [
        "LEASE",
        "KIND",
        "RESOURCE",
        "FROM",
        "TO",
        "SECONDS",
        "QTY",
        "UNIT PRICE",
        "AMOUNT",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for line in &bill.lines {
        let kind = match (&line.correction_of, line.kind) {
            (Some(p), kind) => format!("correction {p} {kind:?}"),
            (None, kind) => format!("{kind:?}"),
        };
        rows.push(vec![
            line.lease.clone(),
            kind,
            line.resource
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            line.start.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            line.end.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            line.seconds.to_string(),
            if line.quantity.is_zero() {
                "-".into()
            } else {
                line.quantity.to_string()
            },
            line.unit_price
                .map(|p| p.amount.to_string())
                .unwrap_or_else(|| "-".into()),
            line.amount.amount.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let numeric = |c: usize| c >= 5;
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if numeric(c) {
                    format!("{v:>w$}", w = widths[c])
                } else {
                    format!("{v:<w$}", w = widths[c])
                }
            })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    let width: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    let total = format!("{} {}", bill.total.amount, bill.currency);
    writeln!(
        out,
        "{:<w$}{total:>t$}",
        "TOTAL",
        w = 5,
        t = width.saturating_sub(5) + 4
    )?;
    Ok(())
}

fn selection_period(selection: &BillSelection) -> Result<Period, BillingError> {
    Period::parse(selection.cycle, &selection.period)
}

/// Runs a billing subcommand, printing to `out`. Async because the ledger
/// subcommands talk to a database; `replay` does no I/O besides reading its files.
pub async fn run(cmd: BillingCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        BillingCommand::Replay(args) => {
            let period = selection_period(&args.selection)?;
            let facts = read_input(&args.input)?;
            let set = FactSet::from_facts(facts)
                .with_context(|| format!("replaying {}", args.input.facts.display()))?;
            let model = Model::compile(&set)?;
            let as_of = args.selection.as_of.unwrap_or(period.end);
            let bills = match &args.selection.tenant {
                Some(tenant) => {
                    if model.tenants().all(|t| t != tenant) {
                        anyhow::bail!(
                            "tenant {tenant:?} has no lease in {}",
                            args.input.facts.display()
                        );
                    }
                    vec![model.bill(tenant, period, as_of, &[])?]
                }
                None => model.bills(period, as_of)?,
            };
            print_bills(&bills, args.selection.format, out)
        }
        BillingCommand::Ingest(args) => {
            let facts = read_input(&args.input)?;
            let ledger = Ledger::open(&args.ledger, args.cycle).await?;
            let outcome = ledger
                .append(&facts)
                .await
                .with_context(|| format!("ingesting {}", args.input.facts.display()))?;
            writeln!(
                out,
                "{} facts recorded, {} already known",
                outcome.inserted, outcome.duplicates
            )?;
            ledger.close().await;
            Ok(())
        }
        BillingCommand::Bill(args) => {
            let period = selection_period(&args.selection)?;
            let ledger = Ledger::open(&args.ledger, args.selection.cycle).await?;
            let tenants = match &args.selection.tenant {
                Some(t) => vec![t.clone()],
                None => ledger.tenants().await?,
            };
            let as_of = args.selection.as_of.unwrap_or(period.end);
            let mut bills = Vec::new();
            for tenant in tenants {
                bills.push(if args.finalize {
                    ledger.finalize(&tenant, &period).await?
                } else {
                    ledger.bill(&tenant, &period, as_of).await?
                });
            }
            ledger.close().await;
            print_bills(&bills, args.selection.format, out)
        }
        BillingCommand::Export(args) => {
            let period = Period::parse(args.cycle, &args.period)?;
            let ledger = Ledger::open(&args.ledger, args.cycle).await?;
            // Finalized bills as stored, open ones as the facts say at the period's
            // end; nothing is stored, an export changes no bill.
            let mut bills = Vec::new();
            for tenant in ledger.tenants().await? {
                bills.push(ledger.current_bill(&tenant, &period, period.end).await?);
            }
            ledger.close().await;
            let ExportFormat::FocusCsv = args.format;
            match &args.output {
                None => write_focus_csv(&bills, &FocusOptions::default(), out)?,
                Some(path) => {
                    let mut file = std::io::BufWriter::new(
                        std::fs::File::create(path)
                            .with_context(|| format!("creating {}", path.display()))?,
                    );
                    write_focus_csv(&bills, &FocusOptions::default(), &mut file)
                        .and_then(|()| file.flush())
                        .with_context(|| format!("writing {}", path.display()))?;
                    let rows: usize = bills.iter().map(|b| b.lines.len()).sum();
                    let finalized = bills
                        .iter()
                        .filter(|b| b.state == BillState::Finalized)
                        .count();
                    writeln!(
                        out,
                        "{rows} FOCUS rows of {} bills for {} ({finalized} finalized) written to {}",
                        bills.len(),
                        period.label(),
                        path.display()
                    )?;
                }
            }
            Ok(())
        }
    }
}
