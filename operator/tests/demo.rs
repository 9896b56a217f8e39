//! A short run of the main job (a day in 90 s, the demo's own pools), judged by its outcomes: no
//! internal pod ever ran on a lent node, every reclaimed lease got its full notice and gave
//! its nodes back soon after the deadline, every ended lease's bill lines hold exactly its
//! recorded seconds, the summary's totals equal the UsageBill objects and the FOCUS CSV,
//! and the chart and CSV files are there and parse.

use std::collections::BTreeMap;
use std::time::Duration;

use offpeak::demo::DemoArgs;
use rust_decimal::Decimal;

#[tokio::test]
async fn a_short_demo_tells_the_story_and_its_numbers_agree() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let summary = offpeak::demo::run(DemoArgs {
        run_for: Duration::from_secs(90),
        day: Duration::from_secs(90),
        // The demo's own pools: the tenants' asks are sized for them.
        general_nodes: 40,
        gpu_nodes: 8,
        out: Some(out.path().to_path_buf()),
        keep: false,
        verbose: false,
        operator: Some(env!("CARGO_BIN_EXE_offpeak").into()),
    })
    .await?;
    eprintln!("{}", summary.text);

    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    assert!(
        !summary.reclaims.is_empty(),
        "the day's load reclaims something"
    );
    for reclaim in &summary.reclaims {
        let notice = (reclaim.deadline - reclaim.notice_given).to_std()?;
        assert!(
            notice >= reclaim.promised,
            "{} got {notice:?} of notice, {:?} promised",
            reclaim.lease,
            reclaim.promised
        );
        let back = reclaim
            .back
            .unwrap_or_else(|| panic!("{}: its nodes never came back", reclaim.lease));
        let late = (back - reclaim.deadline).num_milliseconds();
        assert!(
            late < 10_000,
            "{}: nodes back {late} ms after the deadline",
            reclaim.lease
        );
    }
    assert!(summary.lifetimes.len() >= 3, "{:?}", summary.lifetimes);
    for (lease, _, recorded, billed) in &summary.lifetimes {
        assert_eq!(
            recorded, billed,
            "{lease}: recorded seconds against billed seconds"
        );
    }
    assert!(!summary.tenants.is_empty());
    for t in &summary.tenants {
        assert_eq!(
            t.usage_bill_total,
            Some(t.total),
            "{}: the UsageBill and the ledger",
            t.tenant
        );
    }

    // The FOCUS CSV: what the summary says, tenant by tenant.
    let mut reader = csv::Reader::from_path(out.path().join("focus.csv"))?;
    let header = reader.headers()?.clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    let (cost, account) = (column("BilledCost"), column("SubAccountId"));
    let mut billed: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut rows = 0;
    for row in reader.records() {
        let row = row?;
        rows += 1;
        *billed.entry(row[account].to_string()).or_default() += row[cost].parse::<Decimal>()?;
    }
    assert_eq!(rows, summary.focus_rows);
    for t in &summary.tenants {
        assert_eq!(
            billed.get(&t.tenant).copied(),
            Some(t.total),
            "{}: FOCUS against the bill",
            t.tenant
        );
    }
    let svg = std::fs::read_to_string(out.path().join("utilisation.svg"))?;
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "an SVG document"
    );
    assert!(svg.contains("pool general") && svg.contains("pool gpu"));
    let samples = std::fs::read_to_string(out.path().join("utilisation.csv"))?;
    let mut lines = samples.lines();
    assert_eq!(
        lines.next(),
        Some("seconds,pool,internal,leased,idle,spot_per_core_hour")
    );
    assert!(lines.all(|l| l.split(',').count() == 6));
    Ok(())
}
