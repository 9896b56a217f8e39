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

#[tokio::test]
async fn replay_prints_a_table_per_tenant() {
    let out = offpeak_billing(&REPLAY).await.unwrap();
    assert!(
        out.starts_with("Bill acme 2026-11 (open, as of 2026-12-01T00:00:00Z) in USD\n"),
        "{out}"
    );
    assert!(out.contains("\nBill globex 2026-11 (open, as of 2026-12-01T00:00:00Z) in USD\n"));
    let totals: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("TOTAL"))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(totals, vec!["66.82", "117.12"]);
    let credit = out.lines().find(|l| l.contains("SlaCredit")).unwrap();
    assert!(credit.trim_end().ends_with("-3.12"), "{credit}");
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
