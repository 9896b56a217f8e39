//! The `offpeak billing` subcommands, through the same `run` the operator binary calls.
#![allow(clippy::unwrap_used)]

mod support;

use clap::Parser;
use offpeak_billing::bill::{Bill, BillState};
use offpeak_billing::cli::{BillingCommand, FactsInput, read_input, run};
use offpeak_billing::focus::{COLUMNS, FocusOptions, write_focus_csv};
use offpeak_billing::ledger::Ledger;
use offpeak_billing::meter::{FactSet, Model};
use offpeak_billing::period::{BillingCycle, Period};
use offpeak_testenv::TempPostgres;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: BillingCommand,
}

async fn offpeak_billing(args: &[&str]) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("billing").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    run(cli.command, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

const REPLAY: [&str; 7] = [
    "replay",
    "--facts",
    "testdata/facts.jsonl",
    "--rate-card",
    "testdata/rate-cards.yaml",
    "--period",
    "2026-11",
];

/// `offpeak billing replay` of the README's example, every line and every column.
/// billing/README.md and the top README show exactly this.
const REPLAY_TABLE: &str = r#"Bill acme 2026-11 (open, as of 2026-12-01T00:00:00Z) in USD
LEASE        KIND           RESOURCE  FROM                  TO                    SECONDS  QTY  UNIT PRICE  AMOUNT
acme/batch   Usage          cpu       2026-11-30T20:00:00Z  2026-12-01T00:00:00Z    14400    8       0.016    0.51
acme/db      Usage          cpu       2026-11-14T00:00:00Z  2026-11-15T00:00:00Z    86400   16        0.04   15.36
acme/db      Usage          cpu       2026-11-15T00:00:00Z  2026-11-15T12:00:00Z    43200   16       0.045    8.64
acme/db      Usage          memory    2026-11-14T00:00:00Z  2026-11-15T00:00:00Z    86400   64       0.005    7.68
acme/db      Usage          memory    2026-11-15T00:00:00Z  2026-11-15T12:00:00Z    43200   64       0.005    3.84
acme/db      SlaCredit      -         2026-11-15T12:00:00Z  2026-11-16T00:00:00Z    43200    -           -   -3.12
acme/probe   Usage          cpu       2026-11-20T10:00:00Z  2026-11-20T10:10:00Z      600    2       0.016    0.01
acme/probe   Usage          memory    2026-11-20T10:00:00Z  2026-11-20T10:10:00Z      600    4       0.002    0.00
acme/probe   MinimumCharge  -         2026-11-20T10:00:00Z  2026-11-20T10:10:00Z      600    -           -    0.49
acme/render  Usage          cpu       2026-11-02T22:00:00Z  2026-11-02T23:00:00Z     3600  128        0.02    2.56
acme/render  Usage          cpu       2026-11-02T23:00:00Z  2026-11-03T02:00:00Z    10800  128        0.03   11.52
acme/render  Usage          cpu       2026-11-03T02:00:00Z  2026-11-03T06:00:00Z    14400  128       0.016    8.19
acme/render  Usage          memory    2026-11-02T22:00:00Z  2026-11-02T23:00:00Z     3600  512      0.0025    1.28
acme/render  Usage          memory    2026-11-02T23:00:00Z  2026-11-03T02:00:00Z    10800  512     0.00375    5.76
acme/render  Usage          memory    2026-11-03T02:00:00Z  2026-11-03T06:00:00Z    14400  512       0.002    4.10
TOTAL                                                                                                        66.82 USD

Bill globex 2026-11 (open, as of 2026-12-01T00:00:00Z) in USD
LEASE         KIND   RESOURCE  FROM                  TO                    SECONDS  QTY  UNIT PRICE  AMOUNT
globex/train  Usage  cpu       2026-11-10T00:00:00Z  2026-11-10T12:00:00Z    43200   32        0.04   15.36
globex/train  Usage  memory    2026-11-10T00:00:00Z  2026-11-10T12:00:00Z    43200  256       0.005   15.36
globex/train  Usage  gpu       2026-11-10T00:00:00Z  2026-11-10T12:00:00Z    43200    4         1.8   86.40
TOTAL                                                                                                117.12 USD
"#;

#[tokio::test]
async fn replay_prints_a_table_per_tenant() {
    let out = offpeak_billing(&REPLAY).await.unwrap();
    assert_eq!(out, REPLAY_TABLE, "got:\n{out}");
}

#[test]
fn the_readmes_show_the_table_the_cli_prints() {
    let block = format!("```\n{REPLAY_TABLE}```");
    for readme in ["README.md", "../README.md"] {
        let text = std::fs::read_to_string(readme).unwrap();
        assert!(
            text.contains(&block),
            "{readme} does not show the output of `offpeak billing replay` (billing/tests/cli.rs REPLAY_TABLE)"
        );
    }
}

#[tokio::test]
async fn replay_as_json_and_focus_csv() {
    let mut args = REPLAY.to_vec();
    args.extend(["--tenant", "globex", "--format", "json"]);
    let bills: Vec<Bill> = serde_json::from_str(&offpeak_billing(&args).await.unwrap()).unwrap();
    assert_eq!(bills.len(), 1);
    assert_eq!(bills[0].total.to_string(), "117.12 USD");
    let mut args = REPLAY.to_vec();
    args.extend(["--format", "focus-csv"]);
    let csv = offpeak_billing(&args).await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
    assert_eq!(lines.count(), 18, "one row per bill line");
}

#[tokio::test]
async fn replay_with_as_of_bills_only_what_happened() {
    let mut args = REPLAY.to_vec();
    args.extend([
        "--tenant",
        "acme",
        "--as-of",
        "2026-11-03T00:00:00Z",
        "--format",
        "json",
    ]);
    let bills: Vec<Bill> = serde_json::from_str(&offpeak_billing(&args).await.unwrap()).unwrap();
    // acme/render from 22:00 to midnight: cpu 2.56 + 128 × 1 h × 0.03 = 3.84; memory 1.28 + 1.92.
    assert_eq!(bills[0].total.to_string(), "9.60 USD");
}

#[tokio::test]
async fn bad_input_is_named_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("facts.jsonl");
    let good = std::fs::read_to_string("testdata/facts.jsonl").unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(
        3,
        "{\"key\":\"x\",\"type\":\"capacityBound\",\"lease\":\"acme/render\"",
    );
    std::fs::write(&facts, lines.join("\n")).unwrap();
    let facts_arg = facts.to_str().unwrap();
    let args = [
        "replay",
        "--facts",
        facts_arg,
        "--rate-card",
        "testdata/rate-cards.yaml",
        "--period",
        "2026-11",
    ];
    let err = offpeak_billing(&args).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{facts_arg}:4: EOF while parsing an object")),
        "{err}"
    );

    let card = dir.path().join("card.yaml");
    std::fs::write(
        &card,
        std::fs::read_to_string("testdata/rate-cards.yaml")
            .unwrap()
            .replacen("USD", "USX", 1),
    )
    .unwrap();
    let args = [
        "replay",
        "--facts",
        "testdata/facts.jsonl",
        "--rate-card",
        card.to_str().unwrap(),
        "--period",
        "2026-11",
    ];
    let err = offpeak_billing(&args).await.unwrap_err().to_string();
    assert!(
        err.contains("card.yaml") && err.contains("unknown currency \"USX\""),
        "{err}"
    );

    let mut args = REPLAY.to_vec();
    args.extend(["--tenant", "initech"]);
    assert_eq!(
        offpeak_billing(&args).await.unwrap_err().to_string(),
        "tenant \"initech\" has no lease in testdata/facts.jsonl"
    );
    let mut args = REPLAY.to_vec();
    args[6] = "2026-13";
    assert!(
        offpeak_billing(&args)
            .await
            .unwrap_err()
            .to_string()
            .contains("invalid period \"2026-13\"")
    );
}

#[tokio::test]
async fn ingest_then_bill_from_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("ledger.db").display()
    );
    let ingest = [
        "ingest",
        "--ledger",
        &url,
        "--facts",
        "testdata/facts.jsonl",
        "--rate-card",
        "testdata/rate-cards.yaml",
    ];
    assert_eq!(
        offpeak_billing(&ingest).await.unwrap(),
        "19 facts recorded, 0 already known\n"
    );
    assert_eq!(
        offpeak_billing(&ingest).await.unwrap(),
        "0 facts recorded, 19 already known\n"
    );
    let bill = [
        "bill",
        "--ledger",
        &url,
        "--period",
        "2026-11",
        "--format",
        "json",
        "--finalize",
    ];
    let bills: Vec<Bill> = serde_json::from_str(&offpeak_billing(&bill).await.unwrap()).unwrap();
    let totals: Vec<String> = bills
        .iter()
        .map(|b| format!("{} {}", b.tenant, b.total))
        .collect();
    assert_eq!(totals, vec!["acme 66.82 USD", "globex 117.12 USD"]);
    let replayed = offpeak_billing(&{
        let mut a = REPLAY.to_vec();
        a.extend(["--format", "json"]);
        a
    })
    .await
    .unwrap();
    let replayed: Vec<Bill> = serde_json::from_str(&replayed).unwrap();
    assert_eq!(
        bills.iter().map(|b| &b.lines).collect::<Vec<_>>(),
        replayed.iter().map(|b| &b.lines).collect::<Vec<_>>()
    );
}

/// The example ingested into the ledger at `url`, with acme's November finalized.
async fn example_ledger(url: &str) {
    let ingest = [
        "ingest",
        "--ledger",
        url,
        "--facts",
        "testdata/facts.jsonl",
        "--rate-card",
        "testdata/rate-cards.yaml",
    ];
    assert_eq!(
        offpeak_billing(&ingest).await.unwrap(),
        "19 facts recorded, 0 already known\n"
    );
    let finalize = [
        "bill",
        "--ledger",
        url,
        "--period",
        "2026-11",
        "--tenant",
        "acme",
        "--finalize",
        "--format",
        "json",
    ];
    let bills: Vec<Bill> =
        serde_json::from_str(&offpeak_billing(&finalize).await.unwrap()).unwrap();
    assert_eq!(bills[0].state, BillState::Finalized);
}

/// November's FOCUS CSV computed without a ledger: acme's bill finalized, globex's open.
fn november_focus_csv() -> String {
    let facts = read_input(&FactsInput {
        facts: "testdata/facts.jsonl".into(),
        rate_cards: vec!["testdata/rate-cards.yaml".into()],
    })
    .unwrap();
    let nov = Period::parse(BillingCycle::Monthly, "2026-11").unwrap();
    let mut bills = Model::compile(&FactSet::from_facts(facts).unwrap())
        .unwrap()
        .bills(nov, nov.end)
        .unwrap();
    bills[0].state = BillState::Finalized;
    let mut out = Vec::new();
    write_focus_csv(&bills, &FocusOptions::default(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// `offpeak billing export` of November from the ledger at `url`: every tenant, the
/// finalized bill as stored and the open one as the facts say, to stdout or a file.
async fn export_exports_every_tenants_bill(url: &str, dir: &std::path::Path) {
    example_ledger(url).await;
    let export = [
        "export",
        "--ledger",
        url,
        "--period",
        "2026-11",
        "--format",
        "focus-csv",
    ];
    let csv = offpeak_billing(&export).await.unwrap();
    assert_eq!(csv, november_focus_csv());
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
    assert!(
        lines.next().unwrap().starts_with(
            "0.51,offpeak,Offpeak,USD,2026-12-01T00:00:00Z,2026-11-01T00:00:00Z,Usage,,"
        ),
        "{csv}"
    );
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|c| c == name).unwrap();
    let (tenant, invoice) = (column("SubAccountId"), column("InvoiceId"));
    let mut invoices: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[tenant].to_string(), r[invoice].to_string())
        })
        .collect();
    invoices.dedup();
    assert_eq!(
        invoices,
        [
            ("acme".to_string(), "acme/2026-11".to_string()),
            ("globex".into(), "".into())
        ]
    );

    let file = dir.join("focus-2026-11.csv");
    let mut to_file = export.to_vec();
    to_file.extend(["--output", file.to_str().unwrap()]);
    assert_eq!(
        offpeak_billing(&to_file).await.unwrap(),
        format!(
            "18 FOCUS rows of 2 bills for 2026-11 (1 finalized) written to {}\n",
            file.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), csv);

    // The export stored nothing: globex's open bill is not in the ledger.
    let ledger = Ledger::open(url, BillingCycle::Monthly).await.unwrap();
    let nov = Period::parse(BillingCycle::Monthly, "2026-11").unwrap();
    assert_eq!(ledger.stored_bill("globex", &nov).await.unwrap(), None);
    ledger.close().await;

    // A weekly export of a monthly ledger, and a period that is no month.
    let mut weekly = export.to_vec();
    weekly.extend(["--cycle", "weekly"]);
    weekly[4] = "2026-W48";
    assert_eq!(
        offpeak_billing(&weekly).await.unwrap_err().to_string(),
        "ledger was created with a monthly billing cycle, opened with weekly"
    );
    let mut bad = export.to_vec();
    bad[4] = "2026-13";
    assert!(
        offpeak_billing(&bad)
            .await
            .unwrap_err()
            .to_string()
            .starts_with("invalid period \"2026-13\" for a monthly cycle")
    );
}

#[tokio::test]
async fn export_from_an_sqlite_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("ledger.db").display()
    );
    export_exports_every_tenants_bill(&url, dir.path()).await;
}

#[tokio::test]
async fn export_from_a_postgres_ledger() {
    let server = TempPostgres::start().expect("a PostgreSQL server");
    let dir = tempfile::tempdir().unwrap();
    export_exports_every_tenants_bill(
        &server.fresh_database().expect("a fresh database"),
        dir.path(),
    )
    .await;
}
