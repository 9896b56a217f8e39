//! `kubectl offpeak` with a tenant's own credentials: its bill as a table (and as JSON and
//! CSV), its leases; another tenant's bill is refused by the API server.

use std::time::Duration;

use kube::api::{Api, PostParams};
use offpeak_api::{CapacityLease, LeasePhase, UsageBill};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;

async fn plugin(
    plane: &ControlPlane,
    user: &str,
    args: &[&str],
) -> anyhow::Result<(bool, String, String)> {
    let kubeconfig = plane.user_kubeconfig(user, &[])?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-offpeak"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await?;
    Ok((
        output.status.success(),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

#[tokio::test]
async fn a_tenant_reads_its_bill_and_leases_with_kubectl_offpeak_and_no_one_elses()
-> anyhow::Result<()> {
    let plane = ControlPlane::shared().await?;
    offpeak::local::start(plane, offpeak::local::settings(Duration::from_secs(2))).await?;
    pool_with_nodes(plane, "pl", 2).await?;
    let acme = tenant(plane, "acme-pl", &["pl"]).await?;
    tenant(plane, "globex-pl", &["pl"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(acme.clone(), "acme-pl");
    leases
        .create(
            &PostParams::default(),
            &lease("render", "pl", "Spot", "16", "1h"),
        )
        .await?;
    leases
        .create(
            &PostParams::default(),
            &lease("job", "pl", "Spot", "16", "1h"),
        )
        .await?;
    wait_phase(&leases, "render", LeasePhase::Active).await?;
    wait_phase(&leases, "job", LeasePhase::Active).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    leases.delete("job", &Default::default()).await?;
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let bills: Api<UsageBill> = Api::namespaced(acme, "acme-pl");
    let name = format!("acme-pl-{period}");
    let bill = eventually_value("a bill with both leases", || async {
        Ok(bills.get_opt(&name).await?.filter(|b| {
            ["render", "job"]
                .iter()
                .all(|l| b.spec.lines.iter().any(|line| line.lease.as_str() == *l))
        }))
    })
    .await?;

    let (ok, table, err) = plugin(plane, "acme-pl-user", &["bill", "-n", "acme-pl"]).await?;
    assert!(ok, "{err}");
    eprintln!("kubectl offpeak bill:\n{table}");
    let mut lines = table.lines();
    let title = lines.next().unwrap_or_default();
    assert!(
        title.starts_with(&format!(
            "Bill {name} of tenant acme-pl, {period}-01T00:00:00Z to "
        )) && title.contains("(open, as of "),
        "{title}"
    );
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "LEASE",
            "ITEM",
            "CLASS",
            "START",
            "END",
            "SECONDS",
            "QUANTITY",
            "UNIT PRICE",
            "AMOUNT"
        ]
    );
    for line in &bill.spec.lines {
        let row = format!("{}  ", line.lease.as_str());
        assert!(
            table.lines().any(|l| l.starts_with(&row)
                && l.contains(line.start.as_str())
                && l.trim_end().ends_with(line.amount.as_str())),
            "no row for {line:?} in\n{table}"
        );
    }
    assert!(
        table.ends_with(&format!(
            "total   {} USD\n",
            bill.spec.totals.total.as_str()
        )),
        "{table}"
    );

    let (ok, json, err) = plugin(
        plane,
        "acme-pl-user",
        &["bill", "-n", "acme-pl", "-o", "json"],
    )
    .await?;
    assert!(ok, "{err}");
    let parsed: offpeak_api::UsageBillSpec = serde_json::from_str(&json)?;
    assert_eq!(parsed.totals, bill.spec.totals);
    let (ok, csv, _) = plugin(
        plane,
        "acme-pl-user",
        &["bill", "-n", "acme-pl", "-o", "csv"],
    )
    .await?;
    assert!(
        ok && csv.starts_with(
            "lease,item,class,pool,start,end,seconds,quantity,unit_price,amount,currency\n"
        ),
        "{csv}"
    );

    // The leases table shows the lease's cost estimate to the digit: the seconds from its
    // admission to its costAsOf, its one 16-core node at 0.04 per core-hour. The estimate
    // moves every 2 s, so the table is read between two reads of the same estimate.
    let mut attempts = 0;
    let (row, status) = loop {
        let before = leases.get("render").await?.status.unwrap_or_default();
        let (ok, leases_table, err) =
            plugin(plane, "acme-pl-user", &["leases", "-n", "acme-pl"]).await?;
        assert!(ok, "{err}");
        let after = leases.get("render").await?.status.unwrap_or_default();
        let row: Vec<String> = leases_table
            .lines()
            .find(|l| l.starts_with("acme-pl    render"))
            .unwrap_or_else(|| panic!("{leases_table}"))
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(|c| c.trim().to_string())
            .collect();
        attempts += 1;
        if before.cost_as_of == after.cost_as_of || attempts == 10 {
            break (row, after);
        }
    };
    let instant = |t: &Option<offpeak_api::Timestamp>| {
        chrono::DateTime::parse_from_rfc3339(t.as_ref().expect("a time").as_str())
            .expect("RFC 3339")
    };
    let seconds = (instant(&status.cost_as_of) - instant(&status.admitted_at)).num_seconds();
    let cost = (rust_decimal::Decimal::from(seconds * 16 * 4)
        / rust_decimal::Decimal::from(360_000))
    .round_dp_with_strategy(4, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(
        row[..7],
        [
            "acme-pl".to_string(),
            "render".into(),
            "Spot".into(),
            "pl".into(),
            "Active".into(),
            "1".into(),
            format!("{cost:.4} USD"),
        ],
        "after {seconds}s"
    );
    assert!(row.len() == 8 && row[7].starts_with("ends in "), "{row:?}");

    // Another tenant's bill: the API server says no, and the plugin says so.
    let (ok, _, err) = plugin(plane, "globex-pl-user", &["bill", "-n", "acme-pl"]).await?;
    assert!(!ok);
    assert!(
        err.starts_with("error: cannot list the bills in namespace acme-pl")
            && err.contains("forbidden"),
        "{err}"
    );
    Ok(())
}
