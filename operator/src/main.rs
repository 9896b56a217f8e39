//! `offpeak`: the Offpeak operator's command line.

mod demo;

use clap::{Parser, Subcommand};

/// Offpeak leases the idle nodes of a Kubernetes cluster to external tenants, reclaims them
/// with notice when internal workloads need them back, and bills every second.
#[derive(Parser)]
#[command(name = "offpeak", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a real local control plane (etcd, kube-apiserver, controller-manager,
    /// scheduler, kwok) with simulated nodes, print how to reach it, and run until Ctrl-C.
    Demo(demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube's client builder logs every refused connection as an error; the
                // callers report what matters themselves.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args).await,
    }
}
