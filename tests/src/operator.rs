//! The operator as a process of its own (`offpeak run`, as the chart runs it), for tests
//! that kill it and benches that measure it alone. The caller names the binary (Cargo
//! gives an integration test or bench of the operator's package its path as
//! `CARGO_BIN_EXE_offpeak`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offpeak_testenv::ControlPlane;

/// The user the operator acts as (in `system:masters`), so the API server's audit log tells
/// its requests apart.
pub const OPERATOR_USER: &str = "offpeak-operator";

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?)
}

/// A running `offpeak run`. Dropping it kills it.
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
