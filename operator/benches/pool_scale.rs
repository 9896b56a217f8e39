//! Cluster-scale bench of the pool pass: on the real control plane with kwok, N nodes and N
//! one-node Reserved leases created at once, for each size N. The operator runs as its own
//! process (release build, as `offpeak run`), so its RSS and CPU seconds are its own.
//!
//! Reported per size: leases/s and create → Active p50/p99; the operator's writes per
//! minute once steady and all its requests by verb (from the API server's audit log), pool
//! passes per lease, its RSS and CPU seconds; and the
//! API server's floor for the same writes, measured in the same run by a plain kube client
//! with the same concurrency once the operator is stopped (N creates, N node patches, N
//! status patches). Where the pool pass spent its time comes from the operator's own
//! `offpeak_pool_pass_seconds` histogram. The ledger's part: the facts the operator
//! appended during the burst, per second of the burst and per second spent appending,
//! beside the ledger alone taking the same facts in as many appends (a fresh ledger of the
//! same kind, after the operator stopped).
//!
//!     cargo bench -p offpeak --bench pool_scale [-- SIZES... [--concurrency C] [--steady S] [--ledger sqlite|postgres] [--out FILE]]
//!
//! Sizes default to 500 1000 2000; the table is printed and saved as CSV (default
//! `target/pool_scale.csv`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use offpeak::local::{OPERATOR_USER, OperatorProcess};
use offpeak_api::{CapacityLease, LeasePhase};
use offpeak_testenv::{ControlPlane, Options, TempPostgres};
use serde_json::json;

const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["offpeak-operator"]
- level: None
"#;

/// The verbs that write.
const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

struct Args {
    sizes: Vec<usize>,
    concurrency: usize,
    steady: Duration,
    /// A PostgreSQL ledger (a throwaway server) instead of SQLite.
    postgres: bool,
    out: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        sizes: Vec::new(),
        concurrency: 32,
        steady: Duration::from_secs(60),
        postgres: false,
        out: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/pool_scale.csv"
        )),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--concurrency" => args.concurrency = it.next().unwrap_or_default().parse()?,
            "--steady" => args.steady = Duration::from_secs(it.next().unwrap_or_default().parse()?),
            "--out" => args.out = PathBuf::from(it.next().unwrap_or_default()),
            "--ledger" => match it.next().as_deref() {
                Some("sqlite") => args.postgres = false,
                Some("postgres") => args.postgres = true,
                other => anyhow::bail!("--ledger takes sqlite or postgres, not {other:?}"),
            },
            "--bench" => {}
            size => {
                if let Ok(n) = size.parse() {
                    args.sizes.push(n);
                }
            }
        }
    }
    if args.sizes.is_empty() {
        args.sizes = vec![500, 1000, 2000];
    }
    Ok(args)
}

#[derive(Debug, Default, Clone)]
struct Row {
    nodes: usize,
    operator_seconds: f64,
    leases_per_second: f64,
    p50: f64,
    p99: f64,
    floor_seconds: f64,
    floor_per_second: f64,
    ratio: f64,
    steady_writes_per_minute: f64,
    /// Requests a minute once steady, by verb: "get 0 list 1 patch 2 watch 3".
    steady_requests: String,
    /// Pool passes per lease during the burst.
    reconciles_per_lease: f64,
    rss_steady_mib: f64,
    rss_peak_mib: f64,
    cpu_burst_seconds: f64,
    cpu_steady_seconds: f64,
    passes: u64,
    observe_seconds: f64,
    plan_seconds: f64,
    apply_seconds: f64,
    catch_up_seconds: f64,
    /// "sqlite" or "postgres".
    ledger: &'static str,
    facts: u64,
    appends: u64,
    /// Facts per second of the burst, and per second the operator spent appending.
    facts_per_burst_second: f64,
    facts_per_append_second: f64,
    /// The ledger alone: the same facts in as many appends.
    floor_facts_per_second: f64,
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(value)?)
}

/// Creates `count` kwok nodes of 16 cores at `concurrency`, then waits until all are Ready.
async fn nodes(client: &Client, count: usize, concurrency: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let node: Node = from_json(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {
                        "name": format!("scale-{i:05}"),
                        "labels": {"offpeak.dev/bench": "scale", "type": "kwok", "kubernetes.io/hostname": format!("scale-{i:05}")},
                        "annotations": {offpeak_testenv::KWOK_ANNOTATION.0: offpeak_testenv::KWOK_ANNOTATION.1},
                    },
                    "status": {
                        "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                        "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                    },
                }))?;
                api.create(&PostParams::default(), &node).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let started = Instant::now();
    loop {
        let ready = api
            .list(&ListParams::default().labels("offpeak.dev/bench=scale"))
            .await?
            .items
            .iter()
            .filter(|n| offpeak::observe::is_ready(n))
            .count();
        if ready == count {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {ready} of {count} nodes became Ready");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The sum of a histogram's series with `label`.
fn histogram_sum(metrics: &str, name: &str, label: &str) -> f64 {
    value(metrics, &format!("{name}_sum{{{label}}}"))
}

/// The value of the first series in the scrape that starts with `series` (0 if none).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn counter(metrics: &str, series: &str) -> u64 {
    value(metrics, series) as u64
}

fn lease(name: &str, pool: &str) -> anyhow::Result<CapacityLease> {
    from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease",
        "metadata": {"name": name},
        "spec": {"pool": pool, "class": "Reserved", "resources": {"cpu": "16"}, "duration": "8h"},
    }))
}

fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    if samples.is_empty() {
        return 0.0;
    }
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

/// The operator's writes logged from `from` on.
/// The operator's requests since `from`, by verb, from the API server's audit log (each
/// request once: at its completion; a watch still open is counted at its start).
fn audit_requests(
    plane: &ControlPlane,
    from: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let log = std::fs::read_to_string(plane.audit_log())?;
    let mut by_verb = std::collections::BTreeMap::new();
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)?;
        let at = chrono::DateTime::parse_from_rfc3339(
            entry["stageTimestamp"].as_str().unwrap_or_default(),
        )?;
        let counted = match entry["stage"].as_str() {
            Some("ResponseComplete" | "Panic") => entry["verb"] != "watch",
            Some("ResponseStarted") => entry["verb"] == "watch",
            _ => false,
        };
        if counted && entry["user"]["username"] == OPERATOR_USER && at >= from {
            *by_verb
                .entry(entry["verb"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    Ok(by_verb)
}

/// The facts in the ledger at `url`, and how long a fresh ledger at `fresh` takes them in
/// `appends` appends.
async fn ledger_floor(url: &str, fresh: &str, appends: u64) -> anyhow::Result<(usize, f64)> {
    use offpeak_billing::ledger::Ledger;
    use offpeak_billing::period::BillingCycle;
    let ledger = Ledger::open(url, BillingCycle::Monthly).await?;
    let mut facts = Vec::new();
    for tenant in ledger.tenants().await? {
        facts.extend(ledger.facts_for_tenant(&tenant).await?.iter().cloned());
    }
    ledger.close().await;
    let floor = Ledger::open(fresh, BillingCycle::Monthly).await?;
    let per_append = facts.len().div_ceil(appends.max(1) as usize).max(1);
    let started = Instant::now();
    for batch in facts.chunks(per_append) {
        floor.append(batch).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        floor.fact_count().await? as usize == facts.len(),
        "the floor's ledger holds other than the {} facts appended",
        facts.len()
    );
    floor.close().await;
    Ok((facts.len(), seconds))
}

async fn run_size(n: usize, args: &Args, postgres: Option<&TempPostgres>) -> anyhow::Result<Row> {
    let concurrency = args.concurrency;
    eprintln!("pool_scale: N={n}: starting a control plane and {n} kwok nodes");
    let plane = ControlPlane::start_with(Options {
        audit_policy: Some(AUDIT_POLICY.into()),
        ..Options::default()
    })
    .await?;
    plane.install_crds(&offpeak_api::crds()).await?;
    let admin = plane.client().await?;
    nodes(&admin, n, concurrency).await?;
    let (ledger_url, floor_url) = match postgres {
        Some(server) => (server.fresh_database()?, server.fresh_database()?),
        None => (
            format!("sqlite://{}/ledger.db?mode=rwc", plane.dir().display()),
            format!(
                "sqlite://{}/floor-ledger.db?mode=rwc",
                plane.dir().display()
            ),
        ),
    };
    let ledger_arg = format!("--ledger={ledger_url}");
    let operator = OperatorProcess::start(
        &plane,
        env!("CARGO_BIN_EXE_offpeak").as_ref(),
        plane.dir(),
        &[ledger_arg.as_str()],
    )?;
    operator.ready().await?;
    eprintln!("pool_scale: N={n}: operator ready; booking the pool, rate card and tenant");
    let create = PostParams::default();
    Api::<offpeak_api::CapacityPool>::all(admin.clone())
        .create(&create, &from_json(json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool", "metadata": {"name": "scale"},
            "spec": {"nodeSelector": {"offpeak.dev/bench": "scale"}, "idleAfter": "0s"}}))?)
        .await?;
    Api::<offpeak_api::RateCard>::all(admin.clone())
        .create(&create, &from_json(json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "RateCard", "metadata": {"name": "scale"},
            "spec": {"currency": "USD", "precision": 4, "prices": {"spot": {"cpu": "0.04", "memory": "0"}, "reserved": {"cpu": "0.06", "memory": "0"}},
                     "effectiveFrom": "2026-01-01T00:00:00Z"}}))?)
        .await?;
    Api::<offpeak_api::Tenant>::all(admin.clone())
        .create(&create, &from_json(json!({"apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "bench"},
            "spec": {"displayName": "Bench", "namespaces": ["bench"], "users": ["bench"], "allowedPools": ["scale"],
                     "quota": {"capacityLeases": 10000}}}))?)
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "bench");
    while accounts.get_opt("default").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Leases can be created once the quota controller counts the namespace's quotas: the
    // Tenant is Ready then.
    let tenants: Api<offpeak_api::Tenant> = Api::all(admin.clone());
    loop {
        let ready = tenants.get("bench").await?.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == offpeak_api::ConditionStatus::True)
        });
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Wait until every node's idle clock is written: the pool is ready to lend.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Watch for leases turning Active.
    let active: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let active = active.clone();
        let leases: Api<CapacityLease> = Api::namespaced(admin.clone(), "bench");
        tokio::spawn(async move {
            watcher::watcher(leases, watcher::Config::default())
                .for_each(|event| {
                    if let Ok(Event::Apply(l) | Event::InitApply(l)) = event
                        && l.status.as_ref().and_then(|s| s.phase) == Some(LeasePhase::Active)
                        && let Ok(mut seen) = active.lock()
                    {
                        seen.entry(l.name_any()).or_insert_with(Instant::now);
                    }
                    futures::future::ready(())
                })
                .await;
        })
    };
    let (cpu_before, _, _) = operator.usage()?;
    let leases: Api<CapacityLease> = Api::namespaced(admin.clone(), "bench");
    let started = Instant::now();
    let sent: Vec<(String, Instant)> = futures::stream::iter(0..n)
        .map(|i| {
            let leases = leases.clone();
            async move {
                let name = format!("lease-{i:05}");
                let at = Instant::now();
                leases
                    .create(&PostParams::default(), &lease(&name, "scale")?)
                    .await?;
                anyhow::Ok((name, at))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    eprintln!(
        "pool_scale: N={n}: {n} leases created in {:.1}s; waiting for all to be Active",
        started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last_report = Instant::now();
    loop {
        let done = active.lock().map(|a| a.len()).unwrap_or(0);
        if done >= n {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {done} of {n} leases became Active within 15 minutes");
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "pool_scale: N={n}: {done} of {n} Active after {:.0}s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = active.lock().map(|a| a.clone()).unwrap_or_default();
    watch.abort();
    let last = seen.values().max().copied().unwrap_or(started);
    let operator_seconds = (last - started).as_secs_f64();
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(name, at)| seen.get(name).map(|t| (*t - *at).as_secs_f64()))
        .collect();
    let (cpu_after, _, _) = operator.usage()?;
    let metrics = operator.scrape().await?;

    eprintln!(
        "pool_scale: N={n}: all Active in {operator_seconds:.1}s; {}s of steady state",
        args.steady.as_secs()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (cpu_steady_start, _, _) = operator.usage()?;
    let from = chrono::Utc::now();
    tokio::time::sleep(args.steady).await;
    let steady = audit_requests(&plane, from)?;
    let steady_writes: usize = steady
        .iter()
        .filter(|(verb, _)| WRITES.contains(&verb.as_str()))
        .map(|(_, count)| count)
        .sum();
    let per_minute = 60.0 / args.steady.as_secs_f64();
    let steady_requests = steady
        .iter()
        .map(|(verb, count)| format!("{verb} {:.0}", *count as f64 * per_minute))
        .collect::<Vec<_>>()
        .join(" ");
    let (cpu_steady_end, rss, peak) = operator.usage()?;
    drop(operator);

    // The floor: the same writes by a plain client at the same concurrency, no operator.
    eprintln!("pool_scale: N={n}: the floor (N creates, N node patches, N status patches)");
    Api::<Namespace>::all(admin.clone())
        .create(
            &create,
            &from_json(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "floor"}}),
            )?,
        )
        .await?;
    let floor: Api<CapacityLease> = Api::namespaced(admin.clone(), "floor");
    let node_api: Api<Node> = Api::all(admin.clone());
    let floor_started = Instant::now();
    let created: Vec<(String, String)> = futures::stream::iter(0..n)
        .map(|i| {
            let floor = floor.clone();
            async move {
                let name = format!("lease-{i:05}");
                let made = floor
                    .create(&PostParams::default(), &lease(&name, "none")?)
                    .await?;
                anyhow::Ok((name, made.uid().unwrap_or_default()))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    futures::stream::iter(created.iter().enumerate())
        .map(|(i, (name, uid))| {
            let node_api = node_api.clone();
            async move {
                let node = format!("scale-{i:05}");
                let patch = json!({
                    "metadata": {
                        "labels": {"floor.offpeak.dev/lease": uid, "floor.offpeak.dev/tenant": "bench"},
                        "annotations": {"floor.offpeak.dev/lease-name": format!("floor/{name}"), "floor.offpeak.dev/idle-since": null},
                    },
                    "spec": {"taints": [{"key": "floor.offpeak.dev/tenant", "value": "bench", "effect": "NoSchedule"}]},
                });
                node_api.patch(&node, &PatchParams::default(), &Patch::Merge(patch)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    futures::stream::iter(created.iter().enumerate())
        .map(|(i, (name, _))| {
            let floor = floor.clone();
            async move {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let node = format!("scale-{i:05}");
                let body = json!({
                    "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease",
                    "metadata": {"name": name},
                    "status": {
                        "phase": "Active",
                        "conditions": [{"type": "Admitted", "status": "True", "reason": "Admitted", "message": format!("bound 1 node(s): {node}"), "lastTransitionTime": now, "observedGeneration": 1}],
                        "bindings": [{"at": now, "nodes": [node], "cpu": "16", "memory": "64Gi", "gpu": "0"}],
                        "boundNodes": [node], "nodeCount": 1, "admittedAt": now, "endsAt": now,
                        "costSoFar": {"amount": "0", "currency": "USD"}, "costSummary": "0 USD", "costAsOf": now,
                        "observedGeneration": 1,
                    },
                });
                floor
                    .patch_status(name, &PatchParams::apply("floor").force(), &Patch::Apply(body))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let floor_seconds = floor_started.elapsed().as_secs_f64();
    let pass = |phase: &str| {
        histogram_sum(
            &metrics,
            "offpeak_pool_pass_seconds",
            &format!("phase=\"{phase}\""),
        )
    };
    let passes = counter(&metrics, "offpeak_reconciles_total{controller=\"pool\"}");
    let facts = counter(&metrics, "offpeak_facts_written_total");
    let appends = counter(&metrics, "offpeak_ledger_write_seconds_count");
    let append_seconds = value(&metrics, "offpeak_ledger_write_seconds_sum");
    eprintln!("pool_scale: N={n}: the ledger alone taking the same {facts} facts");
    let (in_ledger, floor_ledger_seconds) = ledger_floor(&ledger_url, &floor_url, appends).await?;
    anyhow::ensure!(
        in_ledger as u64 >= facts,
        "the operator counted {facts} facts written, its ledger holds {in_ledger}"
    );
    Ok(Row {
        nodes: n,
        operator_seconds,
        leases_per_second: n as f64 / operator_seconds,
        p50: quantile(&mut latencies, 0.5),
        p99: quantile(&mut latencies, 0.99),
        floor_seconds,
        floor_per_second: n as f64 / floor_seconds,
        ratio: operator_seconds / floor_seconds,
        steady_writes_per_minute: steady_writes as f64 * per_minute,
        steady_requests,
        reconciles_per_lease: passes as f64 / n as f64,
        rss_steady_mib: rss,
        rss_peak_mib: peak,
        cpu_burst_seconds: cpu_after - cpu_before,
        cpu_steady_seconds: cpu_steady_end - cpu_steady_start,
        passes,
        observe_seconds: pass("observe"),
        plan_seconds: pass("plan"),
        apply_seconds: pass("apply"),
        catch_up_seconds: pass("catch_up"),
        ledger: if postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        facts,
        appends,
        facts_per_burst_second: facts as f64 / operator_seconds,
        facts_per_append_second: facts as f64 / append_seconds.max(1e-9),
        floor_facts_per_second: in_ledger as f64 / floor_ledger_seconds.max(1e-9),
    })
}

const HEADER: &str = "nodes,operator_s,leases_per_s,p50_s,p99_s,floor_s,floor_leases_per_s,ratio_to_floor,steady_writes_per_min,steady_requests_per_min_by_verb,rss_steady_mib,rss_peak_mib,cpu_burst_s,cpu_steady_s,pool_passes,pool_passes_per_lease,observe_s,plan_s,apply_s,catch_up_s,ledger,facts,appends,facts_per_burst_s,facts_per_append_s,floor_facts_per_s";

fn csv(row: &Row) -> String {
    format!(
        "{},{:.2},{:.1},{:.3},{:.3},{:.2},{:.1},{:.2},{:.1},{},{:.1},{:.1},{:.2},{:.2},{},{:.3},{:.3},{:.3},{:.2},{:.2},{},{},{},{:.1},{:.1},{:.1}",
        row.nodes,
        row.operator_seconds,
        row.leases_per_second,
        row.p50,
        row.p99,
        row.floor_seconds,
        row.floor_per_second,
        row.ratio,
        row.steady_writes_per_minute,
        row.steady_requests,
        row.rss_steady_mib,
        row.rss_peak_mib,
        row.cpu_burst_seconds,
        row.cpu_steady_seconds,
        row.passes,
        row.reconciles_per_lease,
        row.observe_seconds,
        row.plan_seconds,
        row.apply_seconds,
        row.catch_up_seconds,
        row.ledger,
        row.facts,
        row.appends,
        row.facts_per_burst_second,
        row.facts_per_append_second,
        row.floor_facts_per_second
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let postgres = if args.postgres {
        Some(TempPostgres::start()?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let row = run_size(n, &args, postgres.as_ref()).await?;
        eprintln!("pool_scale: {}", csv(&row));
        rows.push(row);
    }
    println!(
        "\n| nodes = leases | operator: all Active | leases/s | create→Active p50 / p99 | floor (same writes, plain client) | floor leases/s | ratio to floor | steady writes/min | RSS steady / peak | CPU s burst / steady min |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} s | {:.0} | {:.2} s / {:.2} s | {:.1} s | {:.0} | {:.2}× | {:.0} | {:.0} / {:.0} MiB | {:.1} / {:.1} |",
            r.nodes,
            r.operator_seconds,
            r.leases_per_second,
            r.p50,
            r.p99,
            r.floor_seconds,
            r.floor_per_second,
            r.ratio,
            r.steady_writes_per_minute,
            r.rss_steady_mib,
            r.rss_peak_mib,
            r.cpu_burst_seconds,
            r.cpu_steady_seconds
        );
    }
    println!(
        "\nWhere the pool passes spent their time (operator's own histogram, seconds in all):"
    );
    println!(
        "| nodes | passes | passes per lease | observe | plan | apply | wait for caches | steady requests/min by verb |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.nodes,
            r.passes,
            r.reconciles_per_lease,
            r.observe_seconds,
            r.plan_seconds,
            r.apply_seconds,
            r.catch_up_seconds,
            r.steady_requests
        );
    }
    println!("\nThe ledger's part of the burst (facts the operator appended):");
    println!(
        "| nodes | ledger | facts | appends | facts/s of the burst | facts/s appending | ledger alone, same facts and appends: facts/s | ratio to floor |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2}× |",
            r.nodes,
            r.ledger,
            r.facts,
            r.appends,
            r.facts_per_burst_second,
            r.facts_per_append_second,
            r.floor_facts_per_second,
            r.floor_facts_per_second / r.facts_per_append_second.max(1e-9)
        );
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = format!("{HEADER}\n");
    for r in &rows {
        text.push_str(&csv(r));
        text.push('\n');
    }
    std::fs::write(&args.out, text)?;
    println!("\nSaved as {}", args.out.display());
    Ok(())
}
