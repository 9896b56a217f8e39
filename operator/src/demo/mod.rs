//! The main job on a laptop: a real control plane with kwok nodes (two pools and system
//! nodes that are never lent), the operator beside it as its own process, internal load
//! that follows a day compressed into the run, three tenants renting as themselves, a peak
//! reservation that begins during the run, a live view, and at the end a summary with the
//! bills, the FOCUS export and a chart in an output folder.

mod chart;
mod load;
mod record;
mod scenario;
mod summary;
mod view;

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use offpeak_testenv::ControlPlane;

pub use self::load::Clock;
pub use self::summary::Summary;
use crate::local::OperatorProcess;

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// How long to run, e.g. 90s or 10m; Ctrl-C ends it sooner, with the same summary.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub run_for: Duration,
    /// How long one simulated day lasts: the internal load follows a day's curve (quiet
    /// night, morning ramp, busy afternoon, evening ebb) compressed into it.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub day: Duration,
    /// Nodes of the general pool (16 cores each; three fifths standard, two fifths with
    /// 128 GiB).
    #[arg(long, default_value_t = 40)]
    pub general_nodes: usize,
    /// GPU nodes of the gpu pool (32 cores, 256 GiB, 4 GPUs each).
    #[arg(long, default_value_t = 8)]
    pub gpu_nodes: usize,
    /// The output folder (summary, FOCUS CSV, bills, operator log, chart);
    /// offpeak-demo-<time> when unset.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Leave the control plane and the operator running at the end, and print how to
    /// reach them as ops and as each tenant; Ctrl-C then stops them.
    #[arg(long)]
    pub keep: bool,
    /// Show the operator's log on the terminal as well as in the output folder.
    #[arg(long)]
    pub verbose: bool,
    /// The operator binary (this one when unset).
    #[arg(long, hide = true)]
    pub operator: Option<PathBuf>,
}

impl DemoArgs {
    /// Where the run writes its files.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "offpeak-demo-{}",
                Utc::now().format("%Y%m%d-%H%M%S")
            ))
        })
    }
}

fn say(text: impl AsRef<str>) {
    eprintln!("offpeak demo: {}", text.as_ref());
}

pub async fn run(args: DemoArgs) -> anyhow::Result<Summary> {
    let out = args.out_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out.canonicalize()?;
    say(
        "starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)",
    );
    let plane = ControlPlane::start()
        .await
        .context("the local control plane did not start")?;
    say(plane.startup().to_string());
    scenario::nodes(&plane, args.general_nodes, args.gpu_nodes).await?;
    say(format!(
        "{} general, {} gpu and 3 system nodes Ready (simulated by kwok)",
        args.general_nodes, args.gpu_nodes
    ));
    plane.install_crds(&offpeak_api::crds()).await?;
    let client = plane.client().await?;
    scenario::book(&client).await?;
    let operator_binary = match &args.operator {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let ledger = format!("sqlite://{}/ledger.db?mode=rwc", out.display());
    let flags = [
        format!("--ledger={ledger}"),
        "--bill-refresh=5s".to_string(),
        "--cost-refresh=30s".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let operator = OperatorProcess::start(&plane, &operator_binary, &out, &flags)?;
    operator.ready().await?;
    say("waiting for the tenants to be ready (namespaces isolated, quotas counted, people let in)");
    let waited = Instant::now();
    scenario::tenants_ready(&client, Duration::from_secs(180)).await?;
    say(format!(
        "tenants ready in {:.1}s; the day begins",
        waited.elapsed().as_secs_f64()
    ));
    let started = Instant::now();
    let start_time = Utc::now();
    let reservation_start = start_time + chrono::Duration::from_std(args.run_for.mul_f64(0.55))?;
    scenario::reserve(&client, reservation_start).await?;
    say(format!(
        "operator running (log: {}); pools general and gpu, rate card standard-2026, tenants acme (alice), globex (bob), initech (carol); peak reservations launch-week (60 % of general) and launch-week-gpu (75 % of gpu) from {}",
        out.join("operator.log").display(),
        reservation_start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    if args.verbose {
        say(format!(
            "follow the operator with: tail -f {}",
            out.join("operator.log").display()
        ));
    }
    let clock = Clock { day: args.day };
    let capacity = args.general_nodes * 4;
    let mut record = record::Record {
        started: Some(start_time),
        ..Default::default()
    };
    let tty = std::io::stdout().is_terminal();
    let mut rentals = scenario::rentals(args.run_for).into_iter().peekable();
    let mut web = -1;
    let mut last_line = Instant::now() - Duration::from_secs(60);
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let elapsed = started.elapsed();
        if elapsed >= args.run_for {
            break;
        }
        let want = load::web_replicas(clock.hour(elapsed), capacity);
        if want != web {
            scenario::internal(&client, want).await?;
            web = want;
        }
        while rentals
            .peek()
            .is_some_and(|r| elapsed.as_secs_f64() >= r.at * args.run_for.as_secs_f64())
        {
            if let Some(rental) = rentals.next()
                && let Err(e) = scenario::rent(&plane, &rental).await
            {
                record.events.push((Utc::now(), format!("{e:#}")));
            }
        }
        if let Err(e) = record.sample(&client, elapsed).await {
            record
                .events
                .push((Utc::now(), format!("cannot sample the cluster: {e}")));
        }
        if tty {
            print!(
                "\x1b[H\x1b[2J{}",
                view::frame(&record, elapsed, args.run_for, clock, web)
            );
            let _ = std::io::stdout().flush();
        } else if last_line.elapsed() >= Duration::from_secs(10) {
            println!("{}", view::line(&record, elapsed, clock, web));
            last_line = Instant::now();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = &mut stop => {
                say("Ctrl-C: winding down");
                break;
            }
        }
    }

    // Wind down: tenants cancel what they hold, the nodes come back, the bills settle.
    say("the run is over: tenants cancel their leases; waiting for the bills to settle");
    scenario::cancel_all(&client).await?;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(60) {
        record.sample(&client, started.elapsed()).await.ok();
        let leases = kube::Api::<offpeak_api::CapacityLease>::all(client.clone())
            .list(&Default::default())
            .await?;
        if leases.items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // One more bill refresh after the last end.
    tokio::time::sleep(Duration::from_secs(7)).await;
    record.sample(&client, started.elapsed()).await.ok();
    let summary = summary::collect(&client, &ledger, &record, &out).await?;
    chart::write(&out.join("utilisation.svg"), &record, clock)?;
    println!("\n{}", summary.text);
    println!(
        "Written to {}: summary.txt, focus.csv, bills.json, utilisation.svg, utilisation.csv, operator.log, ledger.db",
        out.display()
    );
    if args.keep {
        println!("\nThe control plane and the operator keep running. As ops:\n");
        println!("  export KUBECONFIG={}", plane.kubeconfig_path().display());
        println!("  alias kubectl={}", plane.tools().kubectl.display());
        for (user, groups) in [
            ("alice", vec!["acme-render"]),
            ("bob", vec![]),
            ("carol", vec![]),
        ] {
            let path = plane.user_kubeconfig(user, &groups)?;
            println!(
                "  # as {user}: KUBECONFIG={} kubectl offpeak bill",
                path.display()
            );
        }
        println!("\nPress Ctrl-C to stop everything.");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(operator);
    plane.stop();
    Ok(summary)
}

/// `90s`, `10m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 2h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("2d").is_err_and(|e| e.contains("unit must be")));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_examples_the_demo_applies_match_their_types() {
        serde_yaml::from_str::<offpeak_api::RateCard>(include_str!(
            "../../../examples/rate-card.yaml"
        ))
        .unwrap();
        serde_yaml::from_str::<offpeak_api::Tenant>(include_str!("../../../examples/tenant.yaml"))
            .unwrap();
    }
}
