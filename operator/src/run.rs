//! `offpeak run`: the operator process. Installs what it owns cluster-wide (the tenant
//! role, the confinement policy and webhook), then serves metrics, the webhook, the
//! confinement guard and the controllers until the process ends.

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
    /// The pod webhook: where it listens, how the API server reaches it, and its TLS. It is
    /// not optional: without it tenant pods would run unconfined on lent nodes.
    pub webhook: Webhook,
    pub settings: Settings,
    /// Several replicas: only the holder of this coordination Lease writes.
    pub leader_election: Option<LeaderElection>,
}

/// The Lease replicas compete for.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease: String,
    /// This replica's name (its pod's).
    pub identity: String,
}

/// How long a leader's hold lasts without renewal, and how early it renews: a replica
/// takes over at most this long after the leader died.
const LEASE_SECONDS: u64 = 10;
const RENEW_BEFORE_SECONDS: u64 = 4;

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
    // Confinement is in place before anything can be lent.
    let hook = &options.webhook;
    admission::install(&client, &hook.endpoint, &hook.tls.ca_pem)
        .await
        .context("cannot install the tenant pod policy and webhook")?;
    let webhook = admission::run(hook.addr, &hook.tls, client.clone(), metrics.clone());
    tracing::info!(metrics = %options.metrics_addr, webhook = %hook.addr, "offpeak operator starting");
    let (leader, elect) = leadership(&client, options.leader_election.clone()).await?;
    // Confinement stays in place while the operator runs: what is deleted or changed is
    // applied again, and no lease is admitted until it is.
    let (confined, confinement) = tokio::sync::watch::channel(None);
    let guard = admission::guard::run(
        client.clone(),
        admission::cluster_objects(&hook.endpoint, &hook.tls.ca_pem),
        leader.clone(),
        confined,
        metrics.clone(),
    );
    tokio::select! {
        result = telemetry::serve(options.metrics_addr, metrics.clone(), readiness.clone()) => result.context("metrics server"),
        result = webhook => result.context("webhook"),
        result = elect => result.context("leader election"),
        () = guard => anyhow::bail!("the confinement guard stopped"),
        result = controllers::run(client.clone(), metrics, options.settings, readiness, leader, confinement) => result.context("controllers"),
    }
}

/// Whether this replica leads, as it changes, and the task that keeps it so. Without
/// leader election the one replica always leads.
async fn leadership(
    client: &kube::Client,
    election: Option<LeaderElection>,
) -> anyhow::Result<(
    tokio::sync::watch::Receiver<bool>,
    futures::future::BoxFuture<'static, anyhow::Result<()>>,
)> {
    use futures::FutureExt;
    let Some(election) = election else {
        let (tx, rx) = tokio::sync::watch::channel(true);
        return Ok((
            rx,
            async move {
                let _keep = tx;
                std::future::pending::<()>().await;
                Ok(())
            }
            .boxed(),
        ));
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(RENEW_BEFORE_SECONDS)
        .build()
        .await
        .with_context(|| {
            format!(
                "cannot use the leader Lease {}/{}",
                election.namespace, election.lease
            )
        })?;
    tracing::info!(lease = %election.lease, namespace = %election.namespace, identity = %election.identity, "competing for leadership");
    let (rx, task) = manager.watch().await;
    Ok((
        rx,
        async move {
            match task.await {
                Ok(Ok(_)) => anyhow::bail!("the leader election stopped"),
                Ok(Err(e)) => Err(anyhow::anyhow!(e).context("the leader election failed")),
                Err(e) => Err(anyhow::anyhow!(e).context("the leader election task died")),
            }
        }
        .boxed(),
    ))
}
