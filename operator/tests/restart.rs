//! The operator killed (SIGKILL) while leases are under notice and started again later:
//! a notice already given is never shortened nor stretched. The deadline written in the
//! lease's status holds: a lease whose deadline passed while the operator was down is
//! reclaimed at once on its return, one whose deadline is still ahead at that deadline.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, PostParams};
use offpeak::local::OperatorProcess;
use offpeak_api::{CapacityLease, CapacityLeaseStatus, EndReason, LeasePhase};
use offpeak_testenv::ControlPlane;
#[allow(unused_imports)]
use offpeak_tests::fixtures::pool_with_nodes;
use offpeak_tests::fixtures::*;
use serde_json::json;

fn instant(t: &Option<offpeak_api::Timestamp>) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t.as_ref().expect("a time").as_str())
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn status_when(
    leases: &Api<CapacityLease>,
    name: &str,
    check: impl Fn(&CapacityLeaseStatus) -> bool,
) -> anyhow::Result<CapacityLeaseStatus> {
    eventually_value(&format!("lease {name}"), || async {
        let status = leases.get(name).await?.status.unwrap_or_default();
        Ok(check(&status).then_some(status))
    })
    .await
}

/// A pool of one node with `notice`, whose internal pod cannot be scheduled: its lease gets
/// notice at once.
async fn lease_under_pressure(
    plane: &ControlPlane,
    name: &str,
    notice: &str,
) -> anyhow::Result<Api<CapacityLease>> {
    pool_with(
        plane,
        name,
        1,
        json!({"noticePeriod": notice, "internalPressure": {"unschedulableFor": "1s"}}),
        json!({}),
    )
    .await?;
    let user = tenant(plane, &format!("{name}-t"), &[name]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, &format!("{name}-t"));
    leases
        .create(
            &PostParams::default(),
            &lease("job", name, "Spot", "16", "8h"),
        )
        .await?;
    wait_phase(&leases, "job", LeasePhase::Active).await?;
    let namespace = format!("{name}-internal");
    plane.create_namespace(&namespace).await?;
    let mut web = offpeak_tests::deployment(
        "web",
        1,
        Some([("offpeak.dev/test-pool".to_string(), name.to_string())].into()),
    );
    if let Some(pod) = web.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.containers[0].resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(
                [(
                    "cpu".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("4".into()),
                )]
                .into(),
            ),
            ..Default::default()
        });
    }
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(plane.client().await?, &namespace)
        .create(&PostParams::default(), &web)
        .await?;
    Ok(leases)
}

#[tokio::test]
async fn a_notice_given_before_a_crash_is_honoured_as_written() -> anyhow::Result<()> {
    let plane = ControlPlane::shared().await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    let dir = tempfile_dir(plane, "restart");
    let mut operator =
        OperatorProcess::start(plane, env!("CARGO_BIN_EXE_offpeak").as_ref(), &dir, &[])?;
    operator.ready().await?;
    let short = lease_under_pressure(plane, "rs-short", "15s").await?;
    let long = lease_under_pressure(plane, "rs-long", "60s").await?;
    let short_notice =
        status_when(&short, "job", |s| s.phase == Some(LeasePhase::Reclaiming)).await?;
    let long_notice =
        status_when(&long, "job", |s| s.phase == Some(LeasePhase::Reclaiming)).await?;
    let short_deadline = instant(&short_notice.reclaim_deadline);
    let long_deadline = instant(&long_notice.reclaim_deadline);

    // Killed under both notices; back after the short one's deadline passed.
    operator.kill();
    let down = Utc::now();
    while Utc::now() < short_deadline + chrono::Duration::seconds(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        short.get("job").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Reclaiming),
        "nothing ends while the operator is down"
    );
    operator.restart()?;
    let back = Utc::now();
    eprintln!(
        "restart: down {:.1}s",
        (back - down).num_milliseconds() as f64 / 1000.0
    );

    // The one whose deadline passed is reclaimed at once: within 5 s of the return.
    let ended = status_when(&short, "job", |s| s.phase == Some(LeasePhase::Ended)).await?;
    let ended_at = instant(&ended.ended_at);
    assert_eq!(ended.end_reason, Some(EndReason::Reclaimed));
    assert!(
        ended_at >= back - chrono::Duration::seconds(1)
            && ended_at <= back + chrono::Duration::seconds(5),
        "ended at {ended_at}, back at {back}"
    );
    assert_eq!(
        instant(&ended.reclaim_deadline),
        short_deadline,
        "the deadline was kept as written"
    );

    // The other keeps its notice to the second: not ended before its deadline, nor long after.
    let still = long.get("job").await?.status.unwrap_or_default();
    assert_eq!(still.phase, Some(LeasePhase::Reclaiming));
    assert_eq!(instant(&still.reclaim_deadline), long_deadline);
    assert_eq!(still.notice_given_at, long_notice.notice_given_at);
    let ended = status_when(&long, "job", |s| s.phase == Some(LeasePhase::Ended)).await?;
    let ended_at = instant(&ended.ended_at);
    assert!(
        ended_at >= long_deadline,
        "ended at {ended_at}, before its deadline {long_deadline}"
    );
    assert!(
        ended_at <= long_deadline + chrono::Duration::seconds(5),
        "ended at {ended_at}, deadline {long_deadline}"
    );
    Ok(())
}

/// A folder for the operator's files inside the control plane's (removed with it).
fn tempfile_dir(plane: &ControlPlane, name: &str) -> std::path::PathBuf {
    let dir = plane.dir().join(name);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A lease billed across a SIGKILL and a 30 s outage of the operator, on the ledger `ledger`
/// (or the default SQLite file when none): its bill counts every second from admission to
/// end once, the outage included.
async fn billed_across_a_crash(ledger: Option<String>) -> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    let dir = tempfile_dir(&plane, "billing");
    let mut flags = vec!["--bill-refresh=2s".to_string()];
    if let Some(url) = &ledger {
        flags.push(format!("--ledger={url}"));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut operator =
        OperatorProcess::start(&plane, env!("CARGO_BIN_EXE_offpeak").as_ref(), &dir, &flags)?;
    operator.ready().await?;
    pool_with_nodes(&plane, "crash", 1).await?;
    let user = tenant(&plane, "acme-cr", &["crash"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-cr");
    leases
        .create(
            &PostParams::default(),
            &lease("job", "crash", "Spot", "16", "1h"),
        )
        .await?;
    let admitted = instant(
        &wait_phase(&leases, "job", LeasePhase::Active)
            .await?
            .status
            .expect("status")
            .admitted_at,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    operator.kill();
    tokio::time::sleep(Duration::from_secs(30)).await;
    operator.restart()?;
    operator.ready().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    leases.delete("job", &Default::default()).await?;
    let ended = instant(
        &wait_phase(&leases, "job", LeasePhase::Ended)
            .await?
            .status
            .expect("status")
            .ended_at,
    );
    let seconds = (ended - admitted).num_seconds();
    assert!(
        seconds >= 36,
        "the lease ran {seconds}s, the outage included"
    );
    let bills: Api<offpeak_api::UsageBill> = Api::namespaced(user, "acme-cr");
    let name = format!("acme-cr-{}", Utc::now().format("%Y-%m"));
    let bill = eventually_value("the bill to carry the lease to its end", || async {
        Ok(bills.get_opt(&name).await?.filter(|b| {
            b.spec.lines.iter().any(|l| {
                l.item == offpeak_api::LineItem::Cpu && instant(&Some(l.end.clone())) == ended
            })
        }))
    })
    .await?;
    let cpu: Vec<_> = bill
        .spec
        .lines
        .iter()
        .filter(|l| l.item == offpeak_api::LineItem::Cpu)
        .collect();
    let billed: i64 = cpu
        .iter()
        .map(|l| (instant(&Some(l.end.clone())) - instant(&Some(l.start.clone()))).num_seconds())
        .sum();
    assert_eq!(billed, seconds, "every second once: {cpu:#?}");
    assert_eq!(instant(&Some(cpu[0].start.clone())), admitted);
    Ok(())
}

#[tokio::test]
async fn a_lease_billed_across_a_crash_counts_every_second_once() -> anyhow::Result<()> {
    billed_across_a_crash(None).await
}

#[tokio::test]
async fn the_same_with_the_ledger_on_postgresql() -> anyhow::Result<()> {
    let server = offpeak_testenv::TempPostgres::start()?;
    billed_across_a_crash(Some(server.fresh_database()?)).await
}
