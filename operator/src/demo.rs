//! The main job on a laptop: a real control plane with kwok nodes in two pools.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use offpeak_testenv::{ControlPlane, NodeSpec};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Simulated nodes in the `general` pool (16 CPU, 64 GiB each).
    #[arg(long, default_value_t = 8)]
    general_nodes: usize,
    /// Simulated GPU nodes in the `gpu` pool (32 CPU, 256 GiB, 4 GPUs each).
    #[arg(long, default_value_t = 2)]
    gpu_nodes: usize,
    /// Stop by itself after this long (e.g. `90s`, `10m`); without it, run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    run_for: Option<Duration>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    eprintln!(
        "offpeak demo: starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    );
    let plane = ControlPlane::start()
        .await
        .context("the local control plane did not start")?;
    eprintln!("offpeak demo: {}", plane.startup());

    let pool = |name: &str| BTreeMap::from([("offpeak.dev/pool".to_string(), name.to_string())]);
    let general = plane
        .create_nodes(&NodeSpec {
            name_prefix: "general".into(),
            count: args.general_nodes,
            labels: pool("general"),
            ..Default::default()
        })
        .await?;
    let gpu = plane
        .create_nodes(&NodeSpec {
            name_prefix: "gpu".into(),
            count: args.gpu_nodes,
            labels: pool("gpu"),
            cpu: "32".into(),
            memory: "256Gi".into(),
            gpus: Some("4".into()),
            ..Default::default()
        })
        .await?;
    eprintln!(
        "offpeak demo: {} general and {} gpu nodes Ready (simulated by kwok)",
        general.len(),
        gpu.len()
    );

    println!("\nThe control plane is up. In another shell:\n");
    println!("  export KUBECONFIG={}", plane.kubeconfig_path().display());
    println!("  alias kubectl={}", plane.tools().kubectl.display());
    println!("  kubectl get nodes -L offpeak.dev/pool\n");
    println!("Component logs are in {}/logs.", plane.dir().display());
    match args.run_for {
        Some(limit) => {
            println!("Stopping by itself in {limit:?} (or on Ctrl-C); everything is cleaned up.");
            tokio::select! {
                _ = tokio::time::sleep(limit) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        None => {
            println!("Press Ctrl-C to stop; everything is cleaned up.");
            tokio::signal::ctrl_c()
                .await
                .context("cannot wait for Ctrl-C")?;
        }
    }
    eprintln!("offpeak demo: stopping");
    plane.stop();
    Ok(())
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
}
