//! The operator beside a local control plane (tests, benches, the demo): CRDs installed,
//! the webhook on loopback with a certificate from the control plane's CA, and the
//! operator either on a thread and runtime of its own (so it outlives any one test's
//! runtime) or as a process of its own ([`OperatorProcess`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    settings.bills.grace = chrono::Duration::zero();
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
        webhook: Webhook {
            addr: webhook,
            endpoint: WebhookEndpoint::Url(format!("https://{webhook}")),
            tls: WebhookTls {
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
                ca_pem: plane.ca_pem().to_string(),
            },
        },
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

/// The user the operator acts as (in `system:masters`), so the API server's audit log tells
/// its requests apart.
pub const OPERATOR_USER: &str = "offpeak-operator";

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)))
}

/// The operator as a process of its own (`offpeak run`, as the chart runs it), for the
/// demo, tests that kill it and benches that measure it alone. The caller names the binary
/// (Cargo gives an integration test or bench of the operator's package its path as
/// `CARGO_BIN_EXE_offpeak`; the demo uses its own executable). Dropping it kills it.
pub struct OperatorProcess {
    child: std::process::Child,
    binary: PathBuf,
    args: Vec<String>,
    kubeconfig: PathBuf,
    log: PathBuf,
    /// Where it serves /metrics, /healthz and /readyz.
    pub metrics: SocketAddr,
}

impl OperatorProcess {
    /// Starts `binary run` against `plane` with its webhook on loopback, certificates from
    /// the plane's CA under `dir`, its log at `dir/operator.log`, and `extra` flags.
    pub fn start(
        plane: &ControlPlane,
        binary: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let kubeconfig = plane.user_kubeconfig(OPERATOR_USER, &["system:masters"])?;
        let webhook = free_addr()?;
        let metrics = free_addr()?;
        let cert = plane.serving_certificate(&["localhost"], &[webhook.ip()])?;
        let certs = dir.join("webhook");
        std::fs::create_dir_all(&certs)?;
        std::fs::write(certs.join("tls.crt"), cert.cert_pem)?;
        std::fs::write(certs.join("tls.key"), cert.key_pem)?;
        std::fs::write(certs.join("ca.crt"), plane.ca_pem())?;
        let mut args = vec![
            "--log-json".to_string(),
            "run".to_string(),
            format!("--metrics-addr={metrics}"),
            format!("--webhook-addr={webhook}"),
            format!("--webhook-url=https://{webhook}"),
            format!("--webhook-cert-dir={}", certs.display()),
        ];
        if !extra.iter().any(|a| a.starts_with("--ledger")) {
            args.push(format!(
                "--ledger=sqlite://{}/ledger.db?mode=rwc",
                dir.display()
            ));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = dir.join("operator.log");
        let child = spawn(binary, &args, &kubeconfig, &log)?;
        Ok(OperatorProcess {
            child,
            binary: binary.to_path_buf(),
            args,
            kubeconfig,
            log,
            metrics,
        })
    }

    /// SIGKILL: no chance to clean up, as when a node dies under it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again with the same flags (after [`kill`](Self::kill)).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = spawn(&self.binary, &self.args, &self.kubeconfig, &self.log)?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn get(&self, path: &str) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: offpeak\r\n\r\n").as_bytes())
            .await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        Ok(body)
    }

    /// Its `/metrics` text.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        self.get("/metrics").await
    }

    /// Waits until `/readyz` says its caches are synced.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(body) = self.get("/readyz").await
                && (body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200"))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "the operator did not become ready; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// CPU seconds so far, and RSS now and at its peak, in MiB.
    pub fn usage(&self) -> anyhow::Result<(f64, f64, f64)> {
        let pid = self.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name; utime and stime are the 12th and 13th of them.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((
            (field(11) + field(12)) / 100.0,
            kib("VmRSS:") / 1024.0,
            kib("VmHWM:") / 1024.0,
        ))
    }
}

fn spawn(
    binary: &Path,
    args: &[String],
    kubeconfig: &Path,
    log: &Path,
) -> anyhow::Result<std::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(std::process::Command::new(binary)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()?)
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
