//! The operator beside a local control plane (tests, benches, the demo): CRDs installed,
//! the webhook on loopback with a certificate from the control plane's CA, and the
//! operator on a thread and runtime of its own, so it outlives any one test's runtime.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use offpeak_testenv::ControlPlane;

use crate::admission::{WebhookTls, policy::WebhookEndpoint};
use crate::controllers::Settings;
use crate::run::{Options, Webhook};

/// Where the running operator serves.
pub struct LocalOperator {
    pub metrics: SocketAddr,
    pub webhook: SocketAddr,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Installs the CRDs and starts the operator against `plane` as its admin. It runs until
/// the process ends (the control plane's watcher cleans up after both).
pub async fn start(plane: &ControlPlane, settings: Settings) -> anyhow::Result<LocalOperator> {
    start_as(plane, plane.kubeconfig_path(), settings).await
}

/// Settings for tests: the cost estimate and bills refreshed every `refresh`, tenants
/// applied again as often, the ledger an SQLite file in the control plane's folder.
pub fn settings(refresh: Duration) -> Settings {
    let mut settings = Settings::default();
    settings.bills.ledger = String::new();
    settings.bills.refresh = refresh;
    settings.plan.cost_refresh =
        chrono::Duration::from_std(refresh).unwrap_or(chrono::Duration::minutes(5));
    settings.tenant_resync = refresh;
    settings
}

/// The same, with the operator acting as the user of `kubeconfig` (to prove what RBAC it
/// needs); the CRDs are still installed as the admin.
pub async fn start_as(
    plane: &ControlPlane,
    kubeconfig: &std::path::Path,
    settings: Settings,
) -> anyhow::Result<LocalOperator> {
    plane.install_crds(&offpeak_api::crds()).await?;
    let mut settings = settings;
    if settings.bills.ledger.is_empty() {
        settings.bills.ledger = format!("sqlite://{}/ledger.db?mode=rwc", plane.dir().display());
    }
    let webhook = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let cert = plane.serving_certificate(&["localhost"], &[webhook.ip()])?;
    let options = Options {
        metrics_addr: metrics,
        webhook: Some(Webhook {
            addr: webhook,
            endpoint: WebhookEndpoint::Url(format!("https://{webhook}")),
            tls: WebhookTls {
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
                ca_pem: plane.ca_pem().to_string(),
            },
        }),
        settings,
        leader_election: None,
    };
    let kubeconfig = kubeconfig.to_path_buf();
    std::thread::Builder::new()
        .name("offpeak-operator".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => return tracing::error!(error = %e, "cannot start the operator's runtime"),
            };
            runtime.block_on(async move {
                let client = match offpeak_testenv::client_from_kubeconfig(&kubeconfig).await {
                    Ok(client) => client,
                    Err(e) => return tracing::error!(error = %e, "cannot reach the control plane"),
                };
                if let Err(e) = crate::run::run(client, options).await {
                    tracing::error!(error = format!("{e:#}"), "the operator stopped");
                }
            });
        })?;
    Ok(LocalOperator { metrics, webhook })
}
