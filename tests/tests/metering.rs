//! Metering on the real control plane: a lease's seconds, as its status records them,
//! reach the ledger and come back as a line of the tenant's UsageBill, to the second and
//! the cent; the FOCUS export carries them; tenants read their bills and cannot write
//! them or read another's; a ledger that is locked away for a while holds facts back,
//! says so, and gets every one when it returns; a tenant namespace deleted under an
//! active lease, and a reservation edited in its window, end in consistent bills.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use offpeak_api::{CapacityLease, CapacityPool, LeasePhase, LineItem, PeakReservation, UsageBill};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::json;
use tokio::sync::OnceCell;

type TestResult = anyhow::Result<()>;

async fn operator() -> anyhow::Result<(&'static ControlPlane, std::net::SocketAddr)> {
    static STARTED: OnceCell<std::net::SocketAddr> = OnceCell::const_new();
    let plane = ControlPlane::shared().await?;
    let metrics = STARTED
        .get_or_try_init(|| async {
            offpeak::local::start(plane, offpeak::local::settings(Duration::from_secs(3)))
                .await
                .map(|o| o.metrics)
        })
        .await?;
    Ok((plane, *metrics))
}

fn ledger_url(plane: &ControlPlane) -> String {
    format!("sqlite://{}/ledger.db?mode=rwc", plane.dir().display())
}

fn instant(t: &Option<offpeak_api::Timestamp>) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t.as_ref().expect("a time").as_str())
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// The period label of now, as bills are named: `2026-12`.
fn this_period() -> String {
    Utc::now().format("%Y-%m").to_string()
}

/// Runs a Spot lease of 16 cores in `pool` for about `seconds`, deletes it, and returns its
/// status as it ended.
async fn run_a_lease(
    leases: &Api<CapacityLease>,
    pool: &str,
    seconds: u64,
) -> anyhow::Result<offpeak_api::CapacityLeaseStatus> {
    leases
        .create(
            &PostParams::default(),
            &lease("job", pool, "Spot", "16", "1h"),
        )
        .await?;
    wait_phase(leases, "job", LeasePhase::Active).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    leases.delete("job", &Default::default()).await?;
    let ended = wait_phase(leases, "job", LeasePhase::Ended).await?;
    eventually("the lease to be gone", || async {
        Ok(leases.get_opt("job").await?.is_none())
    })
    .await?;
    Ok(ended.status.unwrap_or_default())
}

#[tokio::test]
async fn a_leases_seconds_become_its_bill_line_to_the_second_and_the_cent() -> TestResult {
    let (plane, _) = operator().await?;
    pool_with_nodes(plane, "mt-bill", 1).await?;
    let acme = tenant(plane, "acme-mt", &["mt-bill"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(acme.clone(), "acme-mt");
    let status = run_a_lease(&leases, "mt-bill", 6).await?;
    let (admitted, ended) = (instant(&status.admitted_at), instant(&status.ended_at));
    let seconds = (ended - admitted).num_seconds();
    assert!(seconds >= 6, "{seconds}s");

    // The tenant reads its bill: one CPU line, exactly its seconds at 0.04 per core-hour.
    let bills: Api<UsageBill> = Api::namespaced(acme.clone(), "acme-mt");
    let name = format!("acme-mt-{}", this_period());
    let bill = eventually_value("the bill to carry the lease's end", || async {
        Ok(bills.get_opt(&name).await?.filter(|b| {
            b.spec.lines.iter().any(|l| {
                l.item == LineItem::Cpu
                    && l.end.as_str() == status.ended_at.as_ref().map_or("", |t| t.as_str())
            })
        }))
    })
    .await?;
    let cpu: Vec<_> = bill
        .spec
        .lines
        .iter()
        .filter(|l| l.item == LineItem::Cpu)
        .collect();
    assert_eq!(cpu.len(), 1, "{:#?}", bill.spec.lines);
    let line = cpu[0];
    assert_eq!(line.lease.as_str(), "job");
    assert_eq!(instant(&Some(line.start.clone())), admitted);
    assert_eq!(instant(&Some(line.end.clone())), ended);
    assert_eq!(line.quantity, "16");
    assert_eq!(line.unit_price.as_str(), "0.04");
    let amount = (Decimal::from(seconds * 16 * 4) / Decimal::from(360_000))
        .round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(line.amount.as_str(), format!("{amount:.4}"), "{seconds}s");
    assert_eq!(bill.spec.totals.total.as_str(), format!("{amount:.4}"));

    // Finance's export from the ledger carries the same line.
    #[derive(clap::Parser)]
    struct Billing {
        #[command(subcommand)]
        command: offpeak_billing::cli::BillingCommand,
    }
    let export = <Billing as clap::Parser>::try_parse_from([
        "billing",
        "export",
        "--period",
        &this_period(),
        "--format",
        "focus-csv",
        "--ledger",
        &ledger_url(plane),
    ])?;
    let mut csv = Vec::new();
    offpeak_billing::cli::run(export.command, &mut csv).await?;
    let csv = String::from_utf8(csv)?;
    let row = csv
        .lines()
        .find(|l| l.contains("acme-mt/job") && l.contains("Core-Hours"))
        .unwrap_or_else(|| panic!("no row for acme-mt/job in\n{csv}"));
    eprintln!(
        "metering: FOCUS header and row:\n{}\n{row}",
        csv.lines().next().unwrap_or_default()
    );
    assert!(row.contains(&format!(",{amount:.4},")), "{row}");

    // Tenants read bills and nothing more: no creating or editing one, no one else's.
    let refused = bills
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"totals": {"total": "0.00"}}})),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "{refused:?}"
    );
    let forged: UsageBill = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "UsageBill",
        "metadata": {"name": "forged"},
        "spec": {"tenant": "acme-mt", "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
                 "state": "Open", "currency": "USD", "totals": {"charges": "0", "credits": "0", "total": "0"}},
    }));
    let refused = bills.create(&PostParams::default(), &forged).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "{refused:?}"
    );
    let globex = tenant(plane, "globex-mt", &["mt-bill"]).await?;
    let theirs: Api<UsageBill> = Api::namespaced(globex, "acme-mt");
    let refused = theirs.get(&name).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_locked_ledger_holds_facts_back_says_so_and_gets_every_one_when_it_returns() -> TestResult
{
    let (plane, metrics) = operator().await?;
    pool_with_nodes(plane, "mt-lock", 1).await?;
    let user = tenant(plane, "acme-lk", &["mt-lock"]).await?;
    // Another process takes the ledger file's write lock and keeps it for 25 s.
    let path = format!("{}/ledger.db", plane.dir().display());
    let mut lock = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(25)\n\
             c.execute('COMMIT')\n",
            &path,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncBufReadExt;
        let stdout = lock.stdout.take().expect("stdout");
        let mut first = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut first)
            .await?;
        assert_eq!(first.trim(), "locked");
    }
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-lk");
    leases
        .create(
            &PostParams::default(),
            &lease("job", "mt-lock", "Spot", "16", "1h"),
        )
        .await?;
    let active = wait_phase(&leases, "job", LeasePhase::Active)
        .await?
        .status
        .unwrap_or_default();
    let pools: Api<CapacityPool> = Api::all(plane.client().await?);
    let metered = |pool: CapacityPool| {
        pool.status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Metered")
    };
    let down = eventually_value("the pool to say the ledger is unavailable", || async {
        Ok(metered(pools.get("mt-lock").await?).filter(|c| c.reason == "LedgerUnavailable"))
    })
    .await?;
    assert!(
        down.message.starts_with("the ledger is unavailable since "),
        "{}",
        down.message
    );
    assert!(
        down.message
            .ends_with("billing facts wait and are written when it is back"),
        "{}",
        down.message
    );
    let text = scrape(metrics).await?;
    let pending: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("offpeak_facts_pending "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default();
    assert!(pending >= 2, "facts pending: {pending}\n{text}");
    // The lease went through the webhook that gives it its finalizer, timed by path.
    let answered: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("offpeak_webhook_duration_seconds_count{path=\"/mutate-leases\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default();
    assert!(answered >= 1, "webhook answers timed: {answered}\n{text}");
    // Leases go on meanwhile.
    assert_eq!(
        leases.get("job").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );

    lock.wait().await?;
    eventually_value("the pool to say the ledger is back", || async {
        Ok(metered(pools.get("mt-lock").await?).filter(|c| c.reason == "LedgerWritable"))
    })
    .await?;
    let bills: Api<UsageBill> = Api::namespaced(user, "acme-lk");
    let name = format!("acme-lk-{}", this_period());
    let bill = eventually_value(
        "the bill of the lease admitted while the ledger was away",
        || async {
            Ok(bills
                .get_opt(&name)
                .await?
                .filter(|b| b.spec.lines.iter().any(|l| l.item == LineItem::Cpu)))
        },
    )
    .await?;
    let line = bill
        .spec
        .lines
        .iter()
        .find(|l| l.item == LineItem::Cpu)
        .expect("a cpu line");
    assert_eq!(
        instant(&Some(line.start.clone())),
        instant(&active.admitted_at),
        "billed from its admission"
    );
    Ok(())
}

/// The facts of a lease of `tenant` in pool `pool` that held 16 cores over `[from, to)`.
fn lease_facts(
    id: &str,
    tenant: &str,
    pool: &str,
    from: &str,
    to: &str,
) -> Vec<offpeak_billing::meter::Fact> {
    use offpeak_billing::meter::{
        CapacityBound, EndReason, Fact, FactBody, LeaseAdmitted, LeaseEnded, ResourceAmounts,
    };
    let at = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    };
    vec![
        Fact {
            key: format!("{id}/admitted"),
            body: FactBody::LeaseAdmitted(Box::new(LeaseAdmitted {
                lease: id.into(),
                tenant: tenant.into(),
                pool: pool.into(),
                class: offpeak_billing::rate::LeaseClass::Spot,
                at: at(from),
                planned_end: None,
                name: Some(format!("{tenant}/{id}")),
                region: None,
                region_name: None,
                tags: Default::default(),
            })),
        },
        Fact {
            key: format!("{id}/bound/0"),
            body: FactBody::CapacityBound(CapacityBound {
                lease: id.into(),
                at: at(from),
                resources: ResourceAmounts {
                    cpu: Decimal::from(16),
                    memory: Decimal::ZERO,
                    gpu: Decimal::ZERO,
                },
                nodes: vec![],
            }),
        },
        Fact {
            key: format!("{id}/ended"),
            body: FactBody::LeaseEnded(LeaseEnded {
                lease: id.into(),
                at: at(to),
                reason: EndReason::Expired,
            }),
        },
    ]
}

#[tokio::test]
async fn a_finalized_bill_never_changes_and_a_late_fact_corrects_the_next_one() -> TestResult {
    let (plane, _) = operator().await?;
    pool_with_nodes(plane, "mt-final", 1).await?;
    let user = tenant(plane, "acme-fn", &["mt-final"]).await?;
    // Last period's usage reached the ledger (the pool's rate card is there: the operator
    // meters it).
    let now = Utc::now();
    let last = offpeak_billing::period::Period::containing(
        offpeak_billing::period::BillingCycle::Monthly,
        now,
    )
    .previous();
    let day = |d: u32, h: u32| {
        format!(
            "{}T{h:02}:00:00Z",
            (last.start + chrono::Duration::days(i64::from(d))).format("%Y-%m-%d")
        )
    };
    let ledger = offpeak_billing::ledger::Ledger::open(
        &ledger_url(plane),
        offpeak_billing::period::BillingCycle::Monthly,
    )
    .await?;
    eventually("the pool's rate card in the ledger", || async {
        Ok(ledger
            .append(&lease_facts(
                "early",
                "acme-fn",
                "mt-final",
                &day(9, 10),
                &day(9, 12),
            ))
            .await
            .is_ok())
    })
    .await?;
    let bills: Api<UsageBill> = Api::namespaced(user, "acme-fn");
    let finalized_name = format!("acme-fn-{}", last.label());
    let finalized = eventually_value("last period's bill finalized", || async {
        Ok(bills
            .get_opt(&finalized_name)
            .await?
            .filter(|b| b.spec.state == offpeak_api::BillState::Finalized))
    })
    .await?;
    // 2 h × 16 cores × 0.04 = 1.28, topped up to no minimum (the card has none).
    assert_eq!(finalized.spec.totals.total.as_str(), "1.2800");

    // A fact of last period arrives late (retried while the operator holds the file).
    eventually("the late fact in the ledger", || async {
        Ok(ledger
            .append(&lease_facts(
                "late",
                "acme-fn",
                "mt-final",
                &day(12, 0),
                &day(12, 1),
            ))
            .await
            .is_ok())
    })
    .await?;
    let open_name = format!("acme-fn-{}", this_period());
    let open = eventually_value("the correction on this period's bill", || async {
        Ok(bills
            .get_opt(&open_name)
            .await?
            .filter(|b| b.spec.lines.iter().any(|l| l.item == LineItem::Correction)))
    })
    .await?;
    let corrections: Vec<_> = open
        .spec
        .lines
        .iter()
        .filter(|l| l.item == LineItem::Correction)
        .collect();
    assert!(
        corrections
            .iter()
            .all(|l| l.id.ends_with(&format!(".correction-{}", last.label()))),
        "{corrections:#?}"
    );
    let corrected: Decimal = corrections
        .iter()
        .map(|l| l.amount.as_str().parse::<Decimal>().unwrap_or_default())
        .sum();
    assert_eq!(corrected, Decimal::new(6400, 4), "1 h × 16 cores × 0.04");
    // The finalized bill is as it was, to the byte and the version.
    let again = bills.get(&finalized_name).await?;
    assert_eq!(again.spec, finalized.spec);
    assert_eq!(
        again.metadata.resource_version,
        finalized.metadata.resource_version
    );
    ledger.close().await;

    // The namespace deleted by someone and made again from the Tenant: the finalized
    // bill, unchanged in the ledger, is written into it again.
    let admin = plane.client().await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin);
    let first = namespaces.get("acme-fn").await?.uid();
    namespaces.delete("acme-fn", &Default::default()).await?;
    eventually("the namespace made again", || async {
        Ok(namespaces
            .get_opt("acme-fn")
            .await?
            .is_some_and(|ns| ns.uid() != first && ns.metadata.deletion_timestamp.is_none()))
    })
    .await?;
    let back = eventually_value("the finalized bill in the new namespace", || async {
        Ok(bills.get_opt(&finalized_name).await?)
    })
    .await?;
    assert_eq!(back.spec, finalized.spec);
    Ok(())
}

/// The CPU lines of `lease` on the tenant's bill of this period, as (start, end, cores),
/// once one of them ends at `end`.
async fn cpu_lines_to(
    bills: &Api<UsageBill>,
    tenant: &str,
    lease: &str,
    end: DateTime<Utc>,
) -> anyhow::Result<Vec<(DateTime<Utc>, DateTime<Utc>, String)>> {
    let name = format!("{tenant}-{}", this_period());
    let bill = eventually_value(&format!("{name} to carry {lease} to its end"), || async {
        Ok(bills.get_opt(&name).await?.filter(|b| {
            b.spec.lines.iter().any(|l| {
                l.lease.as_str() == lease
                    && l.item == LineItem::Cpu
                    && instant(&Some(l.end.clone())) == end
            })
        }))
    })
    .await?;
    let mut lines: Vec<_> = bill
        .spec
        .lines
        .iter()
        .filter(|l| l.lease.as_str() == lease && l.item == LineItem::Cpu)
        .map(|l| {
            (
                instant(&Some(l.start.clone())),
                instant(&Some(l.end.clone())),
                l.quantity.clone(),
            )
        })
        .collect();
    lines.sort();
    Ok(lines)
}

#[tokio::test]
async fn a_tenant_namespace_deleted_under_an_active_lease_ends_it_and_its_bill_comes_back()
-> TestResult {
    let (plane, _) = operator().await?;
    let nodes = pool_with_nodes(plane, "mt-gone", 1).await?;
    let user = tenant(plane, "acme-gone", &["mt-gone"]).await?;
    let admin = plane.client().await?;
    let leases: Api<CapacityLease> = Api::namespaced(admin.clone(), "acme-gone");
    leases
        .create(
            &PostParams::default(),
            &lease("doomed", "mt-gone", "Spot", "16", "1h"),
        )
        .await?;
    let active = wait_phase(&leases, "doomed", LeasePhase::Active).await?;
    let admitted = instant(&active.status.as_ref().and_then(|s| s.admitted_at.clone()));
    // The lease's last status before it goes with its namespace.
    let last = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = last.clone();
    let watch = {
        use futures::StreamExt;
        let stream = kube::runtime::watcher(
            leases.clone(),
            kube::runtime::watcher::Config::default().fields("metadata.name=doomed"),
        );
        tokio::spawn(stream.for_each(move |event| {
            if let Ok(kube::runtime::watcher::Event::Apply(l)) = event
                && let Ok(mut seen) = seen.lock()
            {
                *seen = l.status;
            }
            futures::future::ready(())
        }))
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    let deleted_at = Utc::now();
    namespaces.delete("acme-gone", &Default::default()).await?;

    // The lease ends Cancelled with its node back, so the namespace can go.
    let ended = eventually_value("the lease to end as its namespace goes", || async {
        let status = last.lock().ok().and_then(|s| s.clone());
        Ok(status.filter(|s| s.phase == Some(LeasePhase::Ended)))
    })
    .await?;
    watch.abort();
    assert_eq!(ended.end_reason, Some(offpeak_api::EndReason::Cancelled));
    let ended_at = instant(&ended.ended_at);
    assert!(
        ended_at >= deleted_at.trunc_subsecs(0)
            && ended_at <= deleted_at + chrono::Duration::seconds(10),
        "ended at {ended_at}, its namespace deleted at {deleted_at}"
    );
    let node: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());
    eventually("the node back without the tenant's marks", || async {
        let n = node.get(&nodes[0]).await?;
        Ok(!n.labels().contains_key(offpeak::names::LEASE)
            && !n.labels().contains_key(offpeak::names::TENANT))
    })
    .await?;

    // The Tenant still names the namespace: it is made again, and its bill with it, where
    // the lease's seconds are billed once, from its admission to its end.
    let bills: Api<UsageBill> = Api::namespaced(user, "acme-gone");
    let lines = cpu_lines_to(&bills, "acme-gone", "doomed", ended_at).await?;
    assert_eq!(lines, [(admitted, ended_at, "16".to_string())]);

    Ok(())
}

#[tokio::test]
async fn a_reservation_edited_in_its_window_takes_more_with_full_notice_and_bills_hold()
-> TestResult {
    let (plane, _) = operator().await?;
    pool_with(
        plane,
        "mt-peak",
        3,
        json!({"noticePeriod": "8s"}),
        json!({}),
    )
    .await?;
    let user = tenant(plane, "acme-peak", &["mt-peak"]).await?;
    let admin = plane.client().await?;
    // A window in force since a minute ago keeps one node of three.
    let now = Utc::now().trunc_subsecs(0);
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let reservations: Api<PeakReservation> = Api::all(admin.clone());
    reservations
        .create(
            &PostParams::default(),
            &from_json(json!({
                "apiVersion": "offpeak.dev/v1alpha1", "kind": "PeakReservation",
                "metadata": {"name": "mt-peak-sale"},
                "spec": {"pool": "mt-peak", "keep": {"nodes": 1},
                         "window": {"start": at(now - chrono::Duration::minutes(1)),
                                    "end": at(now + chrono::Duration::minutes(30))}},
            })),
        )
        .await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-peak");
    for name in ["left", "right"] {
        leases
            .create(
                &PostParams::default(),
                &lease(name, "mt-peak", "Spot", "16", "1h"),
            )
            .await?;
    }
    for name in ["left", "right"] {
        wait_phase(&leases, name, LeasePhase::Active).await?;
    }
    leases
        .create(
            &PostParams::default(),
            &lease("third", "mt-peak", "Spot", "16", "1h"),
        )
        .await?;
    let third = eventually_value("lease third to wait", || async {
        let l = leases.get("third").await?;
        let waits = l.status.as_ref().is_some_and(|s| {
            s.phase == Some(LeasePhase::Pending)
                && s.conditions.iter().any(|c| c.type_ == "Admitted")
        });
        Ok(waits.then_some(l))
    })
    .await?;
    assert_eq!(
        admitted(&third),
        (
            "PeakReservation".to_string(),
            "pool mt-peak: peak reservation mt-peak-sale allows 2 lent node(s) now, 2 are lent \
             and this lease needs 1"
                .to_string()
        )
    );

    // Ops raise the reservation to two nodes mid-window: one lease gets its full notice.
    reservations
        .patch(
            "mt-peak-sale",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keep": {"nodes": 2}}})),
        )
        .await?;
    let noticed = eventually_value("one lease to get notice", || async {
        for name in ["left", "right"] {
            let l = leases.get(name).await?;
            if l.status.as_ref().and_then(|s| s.phase) == Some(LeasePhase::Reclaiming) {
                return Ok(Some(l));
            }
        }
        Ok(None)
    })
    .await?;
    let name = noticed.metadata.name.clone().unwrap_or_default();
    let status = noticed.status.unwrap_or_default();
    assert_eq!(status.reclaim_reason.as_deref(), Some("PeakReservation"));
    assert_eq!(
        instant(&status.reclaim_deadline) - instant(&status.notice_given_at),
        chrono::Duration::seconds(8),
        "the full notice, though the window had started"
    );
    let ended = wait_phase(&leases, &name, LeasePhase::Ended)
        .await?
        .status
        .unwrap_or_default();
    assert_eq!(ended.end_reason, Some(offpeak_api::EndReason::Reclaimed));
    assert!(instant(&ended.ended_at) >= instant(&status.reclaim_deadline));
    let other = if name == "left" { "right" } else { "left" };
    assert_eq!(
        leases.get(other).await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active),
        "only as many leases as the edit takes are reclaimed"
    );
    eventually("the reservation to hold two nodes", || async {
        Ok(reservations
            .get("mt-peak-sale")
            .await?
            .status
            .is_some_and(|s| s.active == Some(true) && s.nodes_held == Some(2)))
    })
    .await?;
    let events = events_of(&admin, "acme-peak", &name).await?;
    assert!(
        events.iter().any(|(reason, note)| reason == "Reclaiming"
            && note.starts_with(&format!("notice to acme-peak/{name}: 8 s, until "))),
        "{events:?}"
    );

    // Ops lower it to none: the waiting lease gets the node back.
    reservations
        .patch(
            "mt-peak-sale",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keep": {"nodes": 0}}})),
        )
        .await?;
    wait_phase(&leases, "third", LeasePhase::Active).await?;

    // The reclaimed lease is billed from its admission to its end, once.
    let bills: Api<UsageBill> = Api::namespaced(user, "acme-peak");
    let lines = cpu_lines_to(&bills, "acme-peak", &name, instant(&ended.ended_at)).await?;
    assert_eq!(
        lines,
        [(
            instant(&ended.admitted_at),
            instant(&ended.ended_at),
            "16".to_string()
        )]
    );
    Ok(())
}
