//! Starting and stopping the real control plane: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok, each on free loopback ports, with a
//! temporary folder for certificates, kubeconfigs, logs and etcd's data.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result, io};
use crate::kubeconfig;
use crate::pki::{CertPair, Pki, service_account_key};
use crate::ports::free_ports;
use crate::process::{Component, Reaper};
use crate::tools::Tools;

/// How to start a control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra kube-apiserver flags, e.g. `--feature-gates=...` or `--runtime-config=...`.
    pub apiserver_args: Vec<String>,
    /// Keep the folder (certificates, kubeconfigs, logs, etcd data) after the control plane
    /// stops. Also on when `OFFPEAK_TESTENV_KEEP=1`.
    pub keep_dir: bool,
    /// An audit policy (YAML, `audit.k8s.io/v1` Policy): the API server logs the requests
    /// it selects as JSON lines to [`ControlPlane::audit_log`], written as they happen.
    pub audit_policy: Option<String>,
}

/// How long each part took to become healthy.
#[derive(Clone, Debug, Default)]
pub struct StartupReport {
    pub etcd: Duration,
    pub kube_apiserver: Duration,
    pub controllers: Duration,
    pub total: Duration,
}

impl fmt::Display for StartupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all components healthy in {:.1}s (etcd {:.1}s, kube-apiserver {:.1}s, \
             controller-manager + scheduler + kwok {:.1}s)",
            self.total.as_secs_f64(),
            self.etcd.as_secs_f64(),
            self.kube_apiserver.as_secs_f64(),
            self.controllers.as_secs_f64()
        )
    }
}

const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Nodes carrying this annotation are simulated by kwok.
pub const KWOK_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// How often start is retried when a port chosen for a component was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// A running control plane. Dropping it stops every component and deletes its folder; if the
/// process dies without dropping it, a watcher process does the same.
pub struct ControlPlane {
    // Stopped in reverse order of start.
    components: Vec<Component>,
    reaper: Reaper,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    pub(crate) pki: Pki,
    server: String,
    admin_kubeconfig: PathBuf,
    tools: Tools,
    startup: StartupReport,
}

impl ControlPlane {
    /// Starts a control plane with default options.
    pub async fn start() -> Result<ControlPlane> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Result<ControlPlane> {
        let tools = Tools::locate()?;
        let mut attempt = 1;
        loop {
            match Self::try_start(&tools, &options).await {
                Err(Error::Component {
                    port_in_use: true,
                    component,
                    ..
                }) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "testenv: {component}'s port was taken meanwhile; starting again on fresh ports"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_start(tools: &Tools, options: &Options) -> Result<ControlPlane> {
        let started = Instant::now();
        let keep =
            options.keep_dir || std::env::var("OFFPEAK_TESTENV_KEEP").is_ok_and(|v| v == "1");
        let dir = tempfile::Builder::new()
            .prefix("offpeak-testenv-")
            .tempdir()
            .map_err(io("cannot create the control plane's temporary folder"))?;
        let root = dir.path().to_path_buf();
        let mut reaper = Reaper::start()?;
        if !keep {
            reaper.watch_dir(&root)?;
        }
        let mut plane = ControlPlane {
            components: Vec::new(),
            reaper,
            dir: Some(dir),
            root: root.clone(),
            pki: Pki::new()?,
            server: String::new(),
            admin_kubeconfig: root.join("admin.kubeconfig"),
            tools: tools.clone(),
            startup: StartupReport::default(),
        };
        if keep {
            plane.keep_dir();
        }
        let result = plane.boot(options, started).await;
        match result {
            Ok(()) => Ok(plane),
            Err(e) => {
                // Keep the logs the error points at.
                plane.keep_dir();
                Err(e)
            }
        }
    }

    async fn boot(&mut self, options: &Options, started: Instant) -> Result<()> {
        let root = self.root.clone();
        let [etcd_client, etcd_peer, apiserver, kcm, scheduler, kwok] = free_ports::<6>()?;
        self.server = format!("https://127.0.0.1:{apiserver}");
        let pki_dir = root.join("pki");
        std::fs::create_dir_all(&pki_dir).map_err(io("cannot create the pki folder"))?;

        // Certificates and keys.
        let write = |name: &str, content: &str| -> Result<PathBuf> {
            let path = pki_dir.join(name);
            std::fs::write(&path, content)
                .map_err(io(format!("cannot write {}", path.display())))?;
            Ok(path)
        };
        let ca = write("ca.crt", self.pki.ca_pem())?;
        let ca_key = write("ca.key", &self.pki.ca_key_pem())?;
        let (sa_private, sa_public) = service_account_key()?;
        let sa_key = write("sa.key", &sa_private)?;
        let sa_pub = write("sa.pub", &sa_public)?;
        let serving = self.pki.serving(
            "kube-apiserver",
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            &[LOOPBACK, IpAddr::V4(SERVICE_IP)],
        )?;
        let (apiserver_crt, apiserver_key) = write_pair(&pki_dir, "apiserver", &serving)?;
        let controllers_serving = self.pki.serving("localhost", &["localhost"], &[LOOPBACK])?;
        let (controllers_crt, controllers_key) =
            write_pair(&pki_dir, "controllers", &controllers_serving)?;

        let admin = self.pki.client("admin", Some("system:masters"))?;
        kubeconfig::write(
            &self.admin_kubeconfig,
            &self.server,
            self.pki.ca_pem(),
            "admin",
            &admin,
        )?;
        let kcm_kubeconfig = root.join("controller-manager.kubeconfig");
        let kcm_cert = self.pki.client("system:kube-controller-manager", None)?;
        kubeconfig::write(
            &kcm_kubeconfig,
            &self.server,
            self.pki.ca_pem(),
            "controller-manager",
            &kcm_cert,
        )?;
        let scheduler_kubeconfig = root.join("scheduler.kubeconfig");
        let scheduler_cert = self.pki.client("system:kube-scheduler", None)?;
        kubeconfig::write(
            &scheduler_kubeconfig,
            &self.server,
            self.pki.ca_pem(),
            "scheduler",
            &scheduler_cert,
        )?;

        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).map_err(io("cannot create the logs folder"))?;
        let p = |path: &Path| path.display().to_string();

        // etcd.
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_args = vec![
            format!("--data-dir={}", p(&root.join("etcd"))),
            "--name=offpeak".into(),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=offpeak={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        let mut etcd = Component::spawn(
            "etcd",
            &self.tools.etcd,
            &etcd_args,
            logs.join("etcd.log"),
            &mut self.reaper,
        )?;
        let etcd_addr = format!("127.0.0.1:{etcd_client}");
        let etcd_took = etcd
            .wait_healthy(Duration::from_secs(30), || {
                let addr = etcd_addr.clone();
                async move {
                    let body = plain_http_get(&addr, "/health").await?;
                    if body.contains("\"health\":\"true\"") {
                        Ok(())
                    } else {
                        Err(format!("GET /health answered {body:?}"))
                    }
                }
            })
            .await?;
        self.components.push(etcd);

        // kube-apiserver.
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={apiserver}"),
            format!("--cert-dir={}", p(&pki_dir)),
            format!("--tls-cert-file={}", p(&apiserver_crt)),
            format!("--tls-private-key-file={}", p(&apiserver_key)),
            format!("--client-ca-file={}", p(&ca)),
            format!("--service-account-key-file={}", p(&sa_pub)),
            format!("--service-account-signing-key-file={}", p(&sa_key)),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC".into(),
            // On loopback there is no address to publish for the kubernetes Service.
            "--endpoint-reconciler-type=none".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        if let Some(policy) = &options.audit_policy {
            let policy_file = root.join("audit-policy.yaml");
            std::fs::write(&policy_file, policy).map_err(io("cannot write the audit policy"))?;
            apiserver_args.extend([
                format!("--audit-policy-file={}", p(&policy_file)),
                format!("--audit-log-path={}", p(&root.join("audit.log"))),
                "--audit-log-mode=blocking".into(),
                "--audit-log-format=json".into(),
            ]);
        }
        apiserver_args.extend(options.apiserver_args.iter().cloned());
        let mut kube_apiserver = Component::spawn(
            "kube-apiserver",
            &self.tools.kube_apiserver,
            &apiserver_args,
            logs.join("kube-apiserver.log"),
            &mut self.reaper,
        )?;
        let admin_client = kubeconfig::client(&self.admin_kubeconfig).await?;
        let apiserver_took = kube_apiserver
            .wait_healthy(Duration::from_secs(90), || {
                probe(admin_client.clone(), "/readyz")
            })
            .await?;
        self.components.push(kube_apiserver);

        // Controllers: start all three, then wait for each.
        let controllers_started = Instant::now();
        let serving_args = |port: u16| {
            vec![
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={}", p(&controllers_crt)),
                format!("--tls-private-key-file={}", p(&controllers_key)),
                "--leader-elect=false".into(),
            ]
        };
        let mut kcm_args = serving_args(kcm);
        kcm_args.extend([
            format!("--kubeconfig={}", p(&kcm_kubeconfig)),
            format!("--authentication-kubeconfig={}", p(&kcm_kubeconfig)),
            format!("--authorization-kubeconfig={}", p(&kcm_kubeconfig)),
            format!("--service-account-private-key-file={}", p(&sa_key)),
            format!("--root-ca-file={}", p(&ca)),
            format!("--cluster-signing-cert-file={}", p(&ca)),
            format!("--cluster-signing-key-file={}", p(&ca_key)),
            "--use-service-account-credentials=true".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        ]);
        let mut scheduler_args = serving_args(scheduler);
        scheduler_args.extend([
            format!("--kubeconfig={}", p(&scheduler_kubeconfig)),
            format!("--authentication-kubeconfig={}", p(&scheduler_kubeconfig)),
            format!("--authorization-kubeconfig={}", p(&scheduler_kubeconfig)),
        ]);
        let kwok_config = root.join("kwok.yaml");
        std::fs::write(
            &kwok_config,
            "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n",
        )
        .map_err(io("cannot write kwok's configuration"))?;
        let kwok_args = vec![
            format!("--kubeconfig={}", p(&self.admin_kubeconfig)),
            format!("--config={}", p(&kwok_config)),
            "--manage-all-nodes=false".into(),
            format!(
                "--manage-nodes-with-annotation-selector={}={}",
                KWOK_ANNOTATION.0, KWOK_ANNOTATION.1
            ),
            format!("--server-address=127.0.0.1:{kwok}"),
            "--node-lease-duration-seconds=40".into(),
            "--cidr=10.244.0.1/16".into(),
        ];

        let mut kcm_component = Component::spawn(
            "kube-controller-manager",
            &self.tools.kube_controller_manager,
            &kcm_args,
            logs.join("kube-controller-manager.log"),
            &mut self.reaper,
        )?;
        let mut scheduler_component = Component::spawn(
            "kube-scheduler",
            &self.tools.kube_scheduler,
            &scheduler_args,
            logs.join("kube-scheduler.log"),
            &mut self.reaper,
        )?;
        let mut kwok_component = Component::spawn(
            "kwok",
            &self.tools.kwok,
            &kwok_args,
            logs.join("kwok.log"),
            &mut self.reaper,
        )?;

        let kcm_client = kubeconfig::client_for_server(
            &self.admin_kubeconfig,
            &format!("https://127.0.0.1:{kcm}"),
        )
        .await?;
        kcm_component
            .wait_healthy(Duration::from_secs(60), || {
                probe(kcm_client.clone(), "/healthz")
            })
            .await?;
        self.components.push(kcm_component);
        let scheduler_client = kubeconfig::client_for_server(
            &self.admin_kubeconfig,
            &format!("https://127.0.0.1:{scheduler}"),
        )
        .await?;
        scheduler_component
            .wait_healthy(Duration::from_secs(60), || {
                probe(scheduler_client.clone(), "/healthz")
            })
            .await?;
        self.components.push(scheduler_component);
        let kwok_addr = format!("127.0.0.1:{kwok}");
        kwok_component
            .wait_healthy(Duration::from_secs(60), || {
                let addr = kwok_addr.clone();
                async move { plain_http_get(&addr, "/healthz").await.map(|_| ()) }
            })
            .await?;
        self.components.push(kwok_component);

        self.startup = StartupReport {
            etcd: etcd_took,
            kube_apiserver: apiserver_took,
            controllers: controllers_started.elapsed(),
            total: started.elapsed(),
        };
        Ok(())
    }

    /// Keep the folder after stopping (its path is in [`ControlPlane::dir`]).
    fn keep_dir(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The folder holding certificates, kubeconfigs and `logs/`.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The admin kubeconfig (user `admin`, group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The CA that signs every certificate of this control plane, PEM.
    /// Stops etcd and kube-apiserver and starts them again on the same ports and data
    /// (what a control-plane upgrade or a crash does to clients), and waits until the API
    /// server is ready again. Returns how long it was away.
    pub async fn restart_api_server(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let names = ["kube-apiserver", "etcd"];
        for name in names {
            if let Some(c) = self.components.iter_mut().find(|c| c.name == name) {
                c.stop();
            }
        }
        for name in names.iter().rev() {
            let Some(c) = self.components.iter_mut().find(|c| c.name == *name) else {
                return Err(Error::Usage(format!("no {name} to restart")));
            };
            c.restart(&mut self.reaper)?;
        }
        let admin = kubeconfig::client(&self.admin_kubeconfig).await?;
        let api_server = self
            .components
            .iter_mut()
            .find(|c| c.name == "kube-apiserver")
            .ok_or_else(|| Error::Usage("no kube-apiserver".into()))?;
        api_server
            .wait_healthy(Duration::from_secs(90), || probe(admin.clone(), "/readyz"))
            .await?;
        Ok(started.elapsed())
    }

    /// Where the API server writes its audit log, when started with an audit policy.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.log")
    }

    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// A serving certificate signed by this control plane's CA, for a webhook server that
    /// the API server reaches on loopback (its `caBundle` is [`ControlPlane::ca_pem`]).
    pub fn serving_certificate(&self, dns: &[&str], ips: &[IpAddr]) -> Result<CertPair> {
        self.pki.serving("offpeak-webhook", dns, ips)
    }

    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    pub fn startup(&self) -> &StartupReport {
        &self.startup
    }

    /// Log files of the components, by name.
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        self.components
            .iter()
            .map(|c| (c.name.clone(), c.log().to_path_buf()))
            .collect()
    }

    /// A client with the admin's rights. Each call makes a new client, so each test's
    /// runtime gets its own connections.
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.admin_kubeconfig).await
    }

    /// A kubeconfig for `user` in at most one group, authenticated by a client certificate
    /// from this control plane's CA.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        if groups.len() > 1 {
            return Err(Error::Usage(format!(
                "user {user}: a client certificate carries one group here (the certificate \
                 library writes one organization), got {groups:?}"
            )));
        }
        let safe: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let users = self.root.join("users");
        std::fs::create_dir_all(&users).map_err(io("cannot create the users folder"))?;
        let path = users.join(format!("{safe}.kubeconfig"));
        let cert = self.pki.client(user, groups.first().copied())?;
        kubeconfig::write(&path, &self.server, self.pki.ca_pem(), user, &cert)?;
        Ok(path)
    }

    /// A client acting as `user` in `groups` (at most one), to test what RBAC allows.
    pub async fn user_client(&self, user: &str, groups: &[&str]) -> Result<kube::Client> {
        kubeconfig::client(&self.user_kubeconfig(user, groups)?).await
    }

    /// The process IDs of the running components by name, and of the clean-up watcher
    /// (`watcher`), so a test can prove none outlives the control plane.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut pids: Vec<(String, u32)> = self
            .components
            .iter()
            .map(|c| (c.name.clone(), c.pid()))
            .collect();
        pids.push(("watcher".to_string(), self.reaper.pid()));
        pids
    }

    /// The pinned `kubectl`, pointed at this control plane as admin.
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.tools.kubectl);
        cmd.arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()));
        cmd
    }

    /// Stops every component, newest first, and deletes the folder unless it is kept.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        while let Some(mut component) = self.components.pop() {
            component.stop();
        }
        self.reaper.dismiss();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn write_pair(dir: &Path, name: &str, pair: &CertPair) -> Result<(PathBuf, PathBuf)> {
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&crt, &pair.cert_pem).map_err(io(format!("cannot write {}", crt.display())))?;
    std::fs::write(&key, &pair.key_pem).map_err(io(format!("cannot write {}", key.display())))?;
    Ok((crt, key))
}

/// GET `path` with `client`; healthy when the answer is `ok`.
async fn probe(client: kube::Client, path: &str) -> std::result::Result<(), String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(format!("GET {path} answered {body:?}")),
        Err(e) => Err(format!("GET {path}: {e}")),
    }
}

/// A minimal HTTP/1.0 GET for the components that serve health on plain HTTP
/// (etcd's client port, kwok's server); returns the body of a 200 answer.
async fn plain_http_get(addr: &str, path: &str) -> std::result::Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(body.to_string())
    } else {
        Err(format!("GET {path} answered {status:?}"))
    }
}
