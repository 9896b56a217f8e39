//! `kubectl offpeak`: a tenant's (or an operator's) view of Offpeak from the command line.
//! On PATH as `kubectl-offpeak`, kubectl runs it as `kubectl offpeak ...`. It uses the
//! caller's kubeconfig, so it sees exactly what the caller may see.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use offpeak_api::{CapacityLease, LeasePhase, UsageBill};

/// Offpeak from the command line: your bills and your leases.
#[derive(Parser)]
#[command(name = "kubectl offpeak", version, about)]
struct Cli {
    /// The namespace (the current context's when unset).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A bill as a table: its lines, credits and totals.
    Bill {
        /// The period, such as 2026-11 (the current one when unset).
        #[arg(long)]
        period: Option<String>,
    },
    /// Leases with their phase, cost so far, and time to their end or reclaim deadline.
    Leases {
        /// Every namespace the caller may read.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
    Yaml,
    Csv,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli, &mut std::io::stdout().lock()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot reach the cluster of the current kubeconfig")?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    match cli.command {
        Command::Bill { period } => {
            let bills: Api<UsageBill> = Api::namespaced(client, &namespace);
            let all = bills
                .list(&ListParams::default())
                .await
                .with_context(|| format!("cannot list the bills in namespace {namespace}"))?;
            let period = period.unwrap_or_else(|| Utc::now().format("%Y-%m").to_string());
            let bill = all
                .items
                .into_iter()
                .find(|b| b.spec.period.start.as_str().starts_with(&period))
                .with_context(|| format!("no bill for {period} in namespace {namespace}"))?;
            write_bill(&bill, cli.output, out)
        }
        Command::Leases { all_namespaces } => {
            let leases: Api<CapacityLease> = if all_namespaces {
                Api::all(client)
            } else {
                Api::namespaced(client, &namespace)
            };
            let list = leases
                .list(&ListParams::default())
                .await
                .context("cannot list the leases")?;
            write_leases(&list.items, Utc::now(), cli.output, out)
        }
    }
}

fn write_bill(
    bill: &UsageBill,
    output: Output,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let spec = &bill.spec;
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(spec)?)?,
        Output::Yaml => write!(out, "{}", serde_yaml::to_string(spec)?)?,
        Output::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record([
                "lease",
                "item",
                "class",
                "pool",
                "start",
                "end",
                "seconds",
                "quantity",
                "unit_price",
                "amount",
                "currency",
            ])?;
            for line in &spec.lines {
                csv.write_record([
                    line.lease.as_str(),
                    item(line.item),
                    class(line.class),
                    line.pool.as_str(),
                    line.start.as_str(),
                    line.end.as_str(),
                    &seconds(line.start.as_str(), line.end.as_str()).to_string(),
                    &line.quantity,
                    line.unit_price.as_str(),
                    line.amount.as_str(),
                    spec.currency.as_str(),
                ])?;
            }
            for credit in &spec.credits {
                csv.write_record([
                    credit.lease.as_str(),
                    "credit",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    &format!("-{}", credit.amount.as_str()),
                    spec.currency.as_str(),
                ])?;
            }
            csv.flush()?;
        }
        Output::Table => {
            writeln!(
                out,
                "Bill {} of tenant {}, {} to {} ({}{})",
                bill.name_any(),
                spec.tenant.as_str(),
                spec.period.start.as_str(),
                spec.period.end.as_str(),
                match spec.state {
                    offpeak_api::BillState::Open => "open",
                    offpeak_api::BillState::Finalized => "finalized",
                },
                spec.as_of
                    .as_ref()
                    .map(|t| format!(", as of {}", t.as_str()))
                    .unwrap_or_default()
            )?;
            let mut rows: Vec<Vec<String>> = vec![
                [
                    "LEASE",
                    "ITEM",
                    "CLASS",
                    "START",
                    "END",
                    "SECONDS",
                    "QUANTITY",
                    "UNIT PRICE",
                    "AMOUNT",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for line in &spec.lines {
                rows.push(vec![
                    line.lease.to_string(),
                    item(line.item).to_string(),
                    class(line.class).to_string(),
                    line.start.to_string(),
                    line.end.to_string(),
                    seconds(line.start.as_str(), line.end.as_str()).to_string(),
                    line.quantity.clone(),
                    line.unit_price.to_string(),
                    line.amount.to_string(),
                ]);
            }
            table(out, &rows, &[5, 6, 7, 8])?;
            for credit in &spec.credits {
                writeln!(
                    out,
                    "credit  {}  -{} {}  {}",
                    credit.lease.as_str(),
                    credit.amount.as_str(),
                    spec.currency.as_str(),
                    credit.reason
                )?;
            }
            writeln!(
                out,
                "charges {} {}",
                spec.totals.charges.as_str(),
                spec.currency.as_str()
            )?;
            writeln!(
                out,
                "credits {} {}",
                spec.totals.credits.as_str(),
                spec.currency.as_str()
            )?;
            writeln!(
                out,
                "total   {} {}",
                spec.totals.total.as_str(),
                spec.currency.as_str()
            )?;
        }
    }
    Ok(())
}

fn write_leases(
    leases: &[CapacityLease],
    now: DateTime<Utc>,
    output: Output,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let rows: Vec<BTreeMap<&str, String>> = leases
        .iter()
        .map(|l| {
            let status = l.status.clone().unwrap_or_default();
            let phase = status
                .phase
                .map_or("Pending".to_string(), |p| format!("{p:?}"));
            let next = match status.phase {
                Some(LeasePhase::Reclaiming) => status
                    .reclaim_deadline
                    .as_ref()
                    .map(|t| format!("reclaimed in {}", until(now, t.as_str())))
                    .unwrap_or_default(),
                Some(LeasePhase::Active) => status
                    .ends_at
                    .as_ref()
                    .map(|t| format!("ends in {}", until(now, t.as_str())))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            BTreeMap::from([
                ("namespace", l.namespace().unwrap_or_default()),
                ("name", l.name_any()),
                ("class", format!("{:?}", l.spec.class)),
                ("pool", l.spec.pool.to_string()),
                ("phase", phase),
                ("nodes", status.node_count.unwrap_or(0).to_string()),
                ("cost", status.cost_summary.unwrap_or_default()),
                ("next", next),
            ])
        })
        .collect();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        Output::Yaml => write!(out, "{}", serde_yaml::to_string(&rows)?)?,
        Output::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record([
                "namespace",
                "name",
                "class",
                "pool",
                "phase",
                "nodes",
                "cost",
                "next",
            ])?;
            for r in &rows {
                csv.write_record(
                    [
                        "namespace",
                        "name",
                        "class",
                        "pool",
                        "phase",
                        "nodes",
                        "cost",
                        "next",
                    ]
                    .map(|k| r[k].as_str()),
                )?;
            }
            csv.flush()?;
        }
        Output::Table => {
            let mut table_rows = vec![
                [
                    "NAMESPACE",
                    "NAME",
                    "CLASS",
                    "POOL",
                    "PHASE",
                    "NODES",
                    "COST SO FAR",
                    "NEXT",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in &rows {
                table_rows.push(
                    [
                        "namespace",
                        "name",
                        "class",
                        "pool",
                        "phase",
                        "nodes",
                        "cost",
                        "next",
                    ]
                    .map(|k| r[k].clone())
                    .to_vec(),
                );
            }
            table(out, &table_rows, &[5])?;
        }
    }
    Ok(())
}

fn item(item: offpeak_api::LineItem) -> &'static str {
    match item {
        offpeak_api::LineItem::Cpu => "cpu",
        offpeak_api::LineItem::Memory => "memory",
        offpeak_api::LineItem::Gpu => "gpu",
        offpeak_api::LineItem::MinimumCharge => "minimum charge",
        offpeak_api::LineItem::Correction => "correction",
    }
}

fn class(class: offpeak_api::LeaseClass) -> &'static str {
    match class {
        offpeak_api::LeaseClass::Spot => "Spot",
        offpeak_api::LeaseClass::Reserved => "Reserved",
    }
}

fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn seconds(start: &str, end: &str) -> i64 {
    match (instant(start), instant(end)) {
        (Some(s), Some(e)) => (e - s).num_seconds(),
        _ => 0,
    }
}

/// `1h02m`, `45s`, or `overdue`.
fn until(now: DateTime<Utc>, at: &str) -> String {
    let Some(at) = instant(at) else {
        return String::new();
    };
    let left = (at - now).num_seconds();
    if left < 0 {
        return "overdue".into();
    }
    match (left / 3600, (left % 3600) / 60, left % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Columns padded to their widest cell, the `right` ones aligned right (numbers).
fn table(
    out: &mut impl std::io::Write,
    rows: &[Vec<String>],
    right: &[usize],
) -> std::io::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |v| v.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if right.contains(&c) {
                    format!("{v:>w$}", w = widths[c])
                } else {
                    format!("{v:<w$}", w = widths[c])
                }
            })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}
