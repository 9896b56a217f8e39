//! The `offpeak billing` subcommands, through the same `run` the operator binary calls.
#![allow(clippy::unwrap_used)]

use clap::Parser;
use offpeak_billing::bill::Bill;
use offpeak_billing::cli::{BillingCommand, run};
use offpeak_billing::focus::COLUMNS;

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
