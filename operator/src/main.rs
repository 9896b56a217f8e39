//! `offpeak`: the Offpeak operator's command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use offpeak::admission::{WebhookTls, policy::WebhookEndpoint};
use offpeak::controllers::Settings;
use offpeak::run::{Options, Webhook};

/// Offpeak leases the idle nodes of a Kubernetes cluster to external tenants, reclaims them
/// with notice when internal workloads need them back, and bills every second.
#[derive(Parser)]
#[command(name = "offpeak", version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines (for log pipelines) instead of text.
    #[arg(long, global = true, env = "OFFPEAK_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster).
    Run(RunArgs),
    /// The main job: a real local control plane (etcd, kube-apiserver, controller-manager,
    /// scheduler, kwok) with simulated nodes, the operator, internal load over a compressed
    /// day, tenants renting, a peak reservation, a live view and at the end a summary with
    /// the bills, the FOCUS export and a chart.
    Demo(offpeak::demo::DemoArgs),
    /// The offpeak.dev CustomResourceDefinitions.
    #[command(subcommand)]
    Crd(CrdCommand),
    /// Bills from recorded facts: replay a facts file offline, or keep a ledger.
    #[command(subcommand)]
    Billing(offpeak_billing::cli::BillingCommand),
}

#[derive(Subcommand)]
enum CrdCommand {
    /// Print every CRD as one YAML stream (what crds/ holds), for `kubectl apply -f -`.
    Print,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080", env = "OFFPEAK_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Where the tenant pod webhook listens (TLS).
    #[arg(long, default_value = "0.0.0.0:9443", env = "OFFPEAK_WEBHOOK_ADDR")]
    webhook_addr: SocketAddr,
    /// How the API server reaches the webhook: the operator's Service as
    /// NAMESPACE/NAME:PORT (in a cluster).
    #[arg(long, env = "OFFPEAK_WEBHOOK_SERVICE", conflicts_with = "webhook_url")]
    webhook_service: Option<String>,
    /// How the API server reaches the webhook: a URL (an operator outside the cluster).
    #[arg(long, env = "OFFPEAK_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Folder with the webhook's tls.crt, tls.key and the ca.crt that signed them.
    #[arg(long, env = "OFFPEAK_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<PathBuf>,
    /// How long the first lease in a pool's queue waits before no later lease may pass it.
    #[arg(long, default_value = "10m", value_parser = offpeak::demo::parse_duration)]
    starvation_guard: std::time::Duration,
    /// How often an active lease's cost estimate (status.costSoFar) is refreshed at most;
    /// it is also refreshed at every transition. The UsageBill is the exact figure.
    #[arg(long, default_value = "5m", value_parser = offpeak::demo::parse_duration)]
    cost_refresh: std::time::Duration,
    /// The billing ledger: an SQLite file (sqlite://PATH?mode=rwc, for one replica) or
    /// PostgreSQL (postgres://USER:PASSWORD@HOST:PORT/DB, for several).
    #[arg(
        long,
        default_value = "sqlite://offpeak-ledger.db?mode=rwc",
        env = "OFFPEAK_LEDGER"
    )]
    ledger: String,
    /// How often each tenant's open UsageBill is refreshed at most.
    #[arg(long, default_value = "1m", value_parser = offpeak::demo::parse_duration)]
    bill_refresh: std::time::Duration,
    /// How long after its period ends a bill is finalized (late facts after that become
    /// corrections on the next bill).
    #[arg(long, default_value = "1h", value_parser = offpeak::demo::parse_duration)]
    bill_grace: std::time::Duration,
    /// Run as one of several replicas: only the holder of a coordination.k8s.io Lease
    /// writes; the others keep their caches warm and serve the webhook, and one takes over
    /// within 15 s when the leader goes.
    #[arg(long, env = "OFFPEAK_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "offpeak-system")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "offpeak-operator")]
    leader_election_lease: String,
    /// This replica's name among them (its pod's).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    offpeak::telemetry::init_logging(cli.log_json);
    match cli.command {
        Command::Demo(args) => offpeak::demo::run(args).await.map(|_| ()),
        Command::Crd(CrdCommand::Print) => {
            use std::io::Write;
            match std::io::stdout()
                .lock()
                .write_all(offpeak_api::crds_yaml().as_bytes())
            {
                // `offpeak crd print | head` is fine.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("cannot write the CRDs"),
            }
        }
        Command::Billing(command) => {
            offpeak_billing::cli::run(command, &mut std::io::stdout().lock()).await
        }
        Command::Run(args) => {
            let options = options(args)?;
            let client = kube::Client::try_default()
                .await
                .context("cannot reach the cluster")?;
            offpeak::run::run(client, options).await
        }
    }
}

fn options(args: RunArgs) -> anyhow::Result<Options> {
    let endpoint = match (args.webhook_service, args.webhook_url) {
        (Some(service), None) => Some(parse_service(&service)?),
        (None, Some(url)) => Some(WebhookEndpoint::Url(url)),
        _ => None,
    };
    // Without the webhook tenant pods would run unconfined on lent nodes: no lending then.
    let endpoint = endpoint.context(
        "Offpeak lends nodes only with tenant pod confinement in place: pass \
         --webhook-service NAMESPACE/NAME:PORT (in a cluster) or --webhook-url URL, \
         with --webhook-cert-dir",
    )?;
    let dir = args
        .webhook_cert_dir
        .context("--webhook-cert-dir is required with --webhook-service or --webhook-url")?;
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .with_context(|| format!("cannot read {}", dir.join(file).display()))
    };
    let webhook = Webhook {
        addr: args.webhook_addr,
        endpoint,
        tls: WebhookTls {
            cert_pem: read("tls.crt")?,
            key_pem: read("tls.key")?,
            ca_pem: read("ca.crt")?,
        },
    };
    let leader_election = args.leader_election.then(|| offpeak::run::LeaderElection {
        namespace: args.leader_election_namespace.clone(),
        lease: args.leader_election_lease.clone(),
        identity: args.identity.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "offpeak".into()),
                std::process::id()
            )
        }),
    });
    Ok(Options {
        metrics_addr: args.metrics_addr,
        webhook,
        leader_election,
        settings: {
            let mut settings = Settings::default();
            settings.plan.starvation_guard = chrono::Duration::from_std(args.starvation_guard)?;
            settings.plan.cost_refresh = chrono::Duration::from_std(args.cost_refresh)?;
            settings.bills.ledger = args.ledger;
            settings.bills.refresh = args.bill_refresh;
            settings.bills.grace = chrono::Duration::from_std(args.bill_grace)?;
            settings
        },
    })
}

/// `NAMESPACE/NAME:PORT`.
fn parse_service(text: &str) -> anyhow::Result<WebhookEndpoint> {
    let (namespace, rest) = text
        .split_once('/')
        .context("--webhook-service is NAMESPACE/NAME:PORT")?;
    let (name, port) = rest
        .split_once(':')
        .context("--webhook-service is NAMESPACE/NAME:PORT")?;
    Ok(WebhookEndpoint::Service {
        namespace: namespace.to_string(),
        name: name.to_string(),
        port: port.parse().context("--webhook-service port is a number")?,
    })
}
