//! `offpeak run`: the operator process. Installs what it owns cluster-wide (the tenant
//! role, the confinement policy and webhook), then serves metrics, the webhook and the
//! controllers until the process ends.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, Patch, PatchParams};

use crate::admission::{self, WebhookTls, policy::WebhookEndpoint};
use crate::controllers::{self, Settings};
use crate::desired::tenancy;
use crate::names::FIELD_MANAGER;
use crate::telemetry::{self, Metrics, Readiness};

/// Everything the operator needs to start.
pub struct Options {
    pub metrics_addr: SocketAddr,
    /// The pod webhook: where it listens, how the API server reaches it, and its TLS.
    pub webhook: Option<Webhook>,
    pub settings: Settings,
}

pub struct Webhook {
    pub addr: SocketAddr,
    pub endpoint: WebhookEndpoint,
    pub tls: WebhookTls,
}

pub async fn run(client: kube::Client, options: Options) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let readiness = Readiness::default();
    Api::<ClusterRole>::all(client.clone())
        .patch(
            tenancy::TENANT_ROLE,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(tenancy::tenant_cluster_role()),
        )
        .await
        .context("cannot install the tenant ClusterRole")?;
    let webhook = async {
        match &options.webhook {
            Some(hook) => {
                admission::install(&client, &hook.endpoint, &hook.tls.ca_pem)
                    .await
                    .context("cannot install the tenant pod policy and webhook")?;
                admission::run(hook.addr, &hook.tls, client.clone()).await
            }
            None => std::future::pending().await,
        }
    };
    tracing::info!(metrics = %options.metrics_addr, webhook = options.webhook.is_some(), "offpeak operator starting");
    tokio::select! {
        result = telemetry::serve(options.metrics_addr, metrics.clone(), readiness.clone()) => result.context("metrics server"),
        result = webhook => result.context("webhook"),
        result = controllers::run(client.clone(), metrics, options.settings, readiness) => result.context("controllers"),
    }
}
