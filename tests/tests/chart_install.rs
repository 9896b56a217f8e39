//! `helm install` of the chart into the real control plane, then the operator run as the
//! chart's pods would run it, and `helm uninstall`.
//!
//! kwok runs no image, so the test is the kubelet for one of the chart's pods: it runs the
//! `offpeak` binary with that pod's args and environment (downward API and Secret values
//! resolved as the kubelet would), its Secret, emptyDir and PersistentVolume mounts as
//! folders, and a real token of the chart's ServiceAccount. There is no kube-proxy either:
//! the webhook's Service is pointed at loopback (ExternalName) so the API server calls the
//! operator by the Service's name and checks the chart's certificate for it. Ports are
//! loopback ones instead of the pod's.
//!
//! The operator then serves a tenant from admission to a reclaim with notice and a bill,
//! and its log must hold no request the API server refused.

mod chart_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use chart_support::{CHART, NAMESPACE, free_port, helm, parse_yaml_stream};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use offpeak_api::{CapacityLease, EndReason, LeasePhase, PeakReservation, UsageBill};
use offpeak_billing::ledger::Ledger;
use offpeak_billing::period::BillingCycle;
use offpeak_testenv::{ControlPlane, NodeSpec, TempPostgres};
use offpeak_tests::fixtures::{
    WAIT, eventually, eventually_value, from_json, lease, pool_with, tenant, wait_phase,
};
use offpeak_tests::{deployment, node_of, wait_running};
use serde_json::json;

/// The `offpeak` binary beside this test's folder of the target dir, built from the
/// sources as they are now (or `OFFPEAK_BIN`).
fn operator_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("OFFPEAK_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .context("the test runs from target/<profile>/deps")?
        .join("offpeak");
    let hint = "build it first: cargo build -p offpeak --bin offpeak (cargo test --workspace does)";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .with_context(|| format!("no operator binary at {}: {hint}", binary.display()))?;
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut visit = vec![chart_support::repo("Cargo.lock")];
    for dir in [
        "operator/src",
        "operator/Cargo.toml",
        "api/src",
        "billing/src",
        "testenv/src",
    ] {
        visit.push(chart_support::repo(dir));
    }
    while let Some(path) = visit.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                visit.push(entry?.path());
            }
        } else {
            let modified = std::fs::metadata(&path)?.modified()?;
            if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                newest = Some((modified, path));
            }
        }
    }
    if let Some((changed, path)) = newest {
        anyhow::ensure!(
            changed <= built,
            "{} is older than {}: {hint}",
            binary.display(),
            path.display()
        );
    }
    Ok(binary)
}

fn help_of(binary: &Path) -> anyhow::Result<String> {
    let output = std::process::Command::new(binary)
        .args(["run", "--help"])
        .output()?;
    anyhow::ensure!(output.status.success(), "offpeak run --help failed");
    Ok(String::from_utf8(output.stdout)?)
}

/// Every flag the chart passes is one `offpeak run` knows, and every OFFPEAK_ variable
/// it sets is one it reads.
fn check_flags(container: &Container, help: &str) {
    for arg in container
        .args
        .iter()
        .flatten()
        .filter(|a| a.starts_with("--"))
    {
        let flag = arg.split('=').next().unwrap_or_default();
        assert!(
            help.split_whitespace().any(|word| word == flag),
            "the chart passes {arg} but `offpeak run --help` has no {flag}"
        );
    }
    for var in container.env.iter().flatten() {
        if !var.name.starts_with("OFFPEAK_") {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {}=", var.name)),
            "the chart sets {} but `offpeak run` does not read it",
            var.name
        );
    }
}

async fn kubectl(plane: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let output = plane.kubectl().args(args).output().await?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn helm_in(plane: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let kubeconfig = format!("--kubeconfig={}", plane.kubeconfig_path().display());
    let mut all = args.to_vec();
    all.push(&kubeconfig);
    helm(&all)?.map_err(anyhow::Error::msg)
}

/// (`kind.group`, namespace, name) of every object of a manifest, for kubectl.
fn identities(manifest: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    Ok(parse_yaml_stream(manifest)?
        .iter()
        .map(|o| {
            let kind = o["kind"].as_str().unwrap_or_default().to_lowercase();
            let api = o["apiVersion"].as_str().unwrap_or_default();
            let kind = match api.split_once('/') {
                Some((group, _)) => format!("{kind}.{group}"),
                None => kind,
            };
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let namespace = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (kind, namespace, name)
        })
        .collect())
}

async fn exists(
    plane: &ControlPlane,
    (kind, namespace, name): &(String, String, String),
) -> anyhow::Result<bool> {
    let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "name"];
    if !namespace.is_empty() {
        args.extend(["-n", namespace]);
    }
    Ok(!kubectl(plane, &args).await?.trim().is_empty())
}

/// The chart's pod `pod`, run as a process.
struct PodProcess {
    child: std::process::Child,
    log: PathBuf,
    metrics: SocketAddr,
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PodProcess {
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        let log = self.log.clone();
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the operator exited ({status}); its log:\n{}", self.log());
            }
            if self
                .get("/readyz")
                .await
                .is_ok_and(|b| b.lines().next().is_some_and(|l| l.contains(" 200 ")))
            {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < WAIT,
                "the operator was not ready within {WAIT:?}; {}:\n{}",
                log.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Replaces the mount path `value` names (a path, or a URL holding one) by its folder.
fn on_host(value: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount, dir) in mounts {
        if let Some(at) = value.find(mount.as_str()) {
            let rest = &value[at + mount.len()..];
            if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                return format!("{}{}{rest}", &value[..at], dir.display());
            }
        }
    }
    value.to_string()
}

/// Runs `pod`'s container as the kubelet would, with `kubeconfig` for its account's
/// token; its webhook listens where the Service sends the API server (`webhook`).
async fn run_pod(
    plane: &ControlPlane,
    pod: &Pod,
    binary: &Path,
    kubeconfig: &Path,
    webhook: SocketAddr,
) -> anyhow::Result<PodProcess> {
    let admin = plane.client().await?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.clone().context("a pod spec")?;
    let container = spec.containers.first().context("a container")?.clone();
    let root = plane.dir().join("pods").join(&name);
    std::fs::create_dir_all(&root)?;

    // Volumes.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
    let mut volumes = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let dir = if let Some(secret) = &volume.secret {
            let dir = root.join(&volume.name);
            std::fs::create_dir_all(&dir)?;
            let secret = secrets
                .get(secret.secret_name.as_deref().unwrap_or_default())
                .await?;
            for (key, value) in secret.data.unwrap_or_default() {
                std::fs::write(dir.join(key), value.0)?;
            }
            dir
        } else if volume.empty_dir.is_some() || volume.projected.is_some() {
            // The projected one is the account's token, which reaches the process through
            // KUBECONFIG instead.
            let dir = root.join(&volume.name);
            std::fs::create_dir_all(&dir)?;
            dir
        } else if let Some(claim) = &volume.persistent_volume_claim {
            let claim = Api::<PersistentVolumeClaim>::namespaced(admin.clone(), &namespace)
                .get(&claim.claim_name)
                .await?;
            let bound = claim
                .spec
                .and_then(|s| s.volume_name)
                .context("the ledger's claim is bound")?;
            let volume = Api::<PersistentVolume>::all(admin.clone())
                .get(&bound)
                .await?;
            PathBuf::from(
                volume
                    .spec
                    .and_then(|s| s.host_path)
                    .context("a hostPath volume")?
                    .path,
            )
        } else {
            anyhow::bail!(
                "volume {} is of a kind this test does not mount",
                volume.name
            );
        };
        volumes.insert(volume.name.clone(), dir);
    }
    let mut mounts: Vec<(String, PathBuf)> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), volumes[&m.name].clone()))
        .collect();
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));

    // Args: the pod's, with loopback addresses for its ports.
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|arg| match arg.split_once('=') {
            Some(("--metrics-addr", _)) => format!("--metrics-addr={metrics}"),
            Some(("--webhook-addr", _)) => format!("--webhook-addr={webhook}"),
            _ => on_host(arg, &mounts),
        })
        .collect();

    // Environment: the pod's, resolved.
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), None) => on_host(value, &mounts),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    match field.field_path.as_str() {
                        "metadata.name" => name.clone(),
                        "metadata.namespace" => namespace.clone(),
                        other => anyhow::bail!("env {} from field {other}", var.name),
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    let secret = secrets.get(&key.name).await?;
                    let bytes = secret
                        .data
                        .and_then(|d| d.get(&key.key).cloned())
                        .with_context(|| format!("Secret {} has no {}", key.name, key.key))?;
                    String::from_utf8(bytes.0)?
                } else {
                    anyhow::bail!("env {} from a source this test does not read", var.name)
                }
            }
            _ => String::new(),
        };
        env.insert(var.name.clone(), value);
    }

    let log = root.join("operator.log");
    let file = std::fs::File::create(&log)?;
    let child = std::process::Command::new(binary)
        .args(&args)
        .env_clear()
        .envs(&env)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(&root)
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    Ok(PodProcess {
        child,
        log,
        metrics,
    })
}

/// What the operator does for a tenant, start to end, with what the chart allows it:
/// a tenant set up, a lease admitted and its pods placed through the webhook, a bill, a
/// reclaim with notice for a peak reservation (DisruptionTarget, evictions, nodes back),
/// and the ended lease deleted.
async fn serve_a_tenant(plane: &ControlPlane, tag: &str) -> anyhow::Result<()> {
    let admin = plane.client().await?;
    let pool = format!("chart-{tag}");
    let nodes = pool_with(plane, &pool, 2, json!({"noticePeriod": "5s"}), json!({})).await?;
    let user = tenant(plane, &pool, &[&pool]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), &pool);
    leases
        .create(
            &PostParams::default(),
            &lease("job", &pool, "Spot", "16", "1h"),
        )
        .await?;
    let active = wait_phase(&leases, "job", LeasePhase::Active).await?;
    let leased: Vec<String> = active
        .status
        .map(|s| s.bound_nodes.into_iter().map(|n| n.0).collect())
        .unwrap_or_default();
    Api::<Deployment>::namespaced(user.clone(), &pool)
        .create(&PostParams::default(), &deployment("job", 2, None))
        .await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &pool);
    for pod in wait_running(&pods, "app=job", 2, WAIT).await? {
        assert!(
            leased.contains(&node_of(&pod)),
            "{} is not on {leased:?}",
            node_of(&pod)
        );
    }
    eventually_value("the tenant's UsageBill", || async {
        let bills = Api::<UsageBill>::namespaced(admin.clone(), &pool)
            .list(&ListParams::default())
            .await?;
        Ok(bills.items.into_iter().next())
    })
    .await?;

    // Peak season in 15 s keeps the whole pool: 5 s of notice, then the nodes go back.
    let start = chrono::Utc::now() + chrono::Duration::seconds(15);
    let format = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let reservations: Api<PeakReservation> = Api::all(admin.clone());
    reservations
        .create(
            &PostParams::default(),
            &from_json(json!({
                "apiVersion": "offpeak.dev/v1alpha1", "kind": "PeakReservation",
                "metadata": {"name": format!("{pool}-peak")},
                "spec": {"pool": pool, "keep": {"percent": 100},
                         "window": {"start": format(start), "end": format(start + chrono::Duration::hours(1))}},
            })),
        )
        .await?;
    eventually("DisruptionTarget on the tenant's pods", || async {
        let listed = pods.list(&ListParams::default().labels("app=job")).await?;
        Ok(!listed.items.is_empty()
            && listed.items.iter().all(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
                    })
            }))
    })
    .await?;
    let ended = wait_phase(&leases, "job", LeasePhase::Ended).await?;
    assert_eq!(
        ended.status.and_then(|s| s.end_reason),
        Some(EndReason::Reclaimed)
    );
    let node_api: Api<Node> = Api::all(admin.clone());
    eventually("the nodes back, unmarked", || async {
        for node in &nodes {
            let labels = node_api
                .get(node)
                .await?
                .metadata
                .labels
                .unwrap_or_default();
            if labels.contains_key("offpeak.dev/tenant") {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    eventually("the reservation's status", || async {
        let status = reservations.get(&format!("{pool}-peak")).await?.status;
        Ok(status.and_then(|s| s.active) == Some(true))
    })
    .await?;
    leases.delete("job", &DeleteParams::default()).await?;
    eventually("the ended lease gone", || async {
        Ok(leases.get_opt("job").await?.is_none())
    })
    .await?;
    Ok(())
}

/// Installs the chart with `values`, runs one of its pods as the operator through
/// [`serve_a_tenant`], uninstalls it, and returns the objects of its manifest.
async fn install_run_uninstall(
    plane: &ControlPlane,
    tag: &str,
    values: &[String],
    binary: &Path,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let admin = plane.client().await?;
    let webhook_port = free_port()?;
    let mut install = vec![
        "install".to_string(),
        "offpeak".into(),
        CHART.into(),
        "--namespace".into(),
        NAMESPACE.into(),
        "--wait".into(),
        "--timeout=3m".into(),
        // Loopback has one port 443; the Service's port is the one the API server dials.
        format!("--set=webhook.servicePort={webhook_port}"),
        // Bills and costs refreshed within the test's patience.
        "--set=billing.refresh=2s".into(),
        "--set=costRefresh=2s".into(),
    ];
    install.extend(values.iter().map(|v| format!("--set={v}")));
    let notes = helm_in(
        plane,
        &install.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    assert!(notes.contains("examples/capacity-pool.yaml"), "{notes}");
    let manifest = helm_in(plane, &["get", "manifest", "offpeak", "-n", NAMESPACE])?;
    let objects = identities(&manifest)?;
    for object in &objects {
        assert!(exists(plane, object).await?, "{object:?} was not installed");
    }
    let crds = kubectl(plane, &["get", "crd", "-o", "name"]).await?;
    assert_eq!(
        crds.lines().filter(|l| l.ends_with(".offpeak.dev")).count(),
        offpeak_api::crds().len(),
        "{crds}"
    );

    // helm waited for the Deployment: its pods are scheduled. (Which nodes proves nothing
    // about the chart's anti-affinity: the scheduler spreads replicas by default.)
    let deployment: Deployment = Api::namespaced(admin.clone(), NAMESPACE)
        .get("offpeak")
        .await?;
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or_default();
    let pods = Api::<Pod>::namespaced(admin.clone(), NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/name=offpeak"))
        .await?
        .items;
    assert_eq!(pods.len(), replicas as usize);
    if replicas > 1 {
        // The budget lets a drain take one replica at a time.
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), NAMESPACE);
        eventually("the disruption budget's status", || async {
            let status = budgets.get("offpeak").await?.status;
            Ok(status.is_some_and(|s| {
                s.disruptions_allowed == replicas - 1 && s.current_healthy == replicas
            }))
        })
        .await?;
    }

    // An upgrade with the same values keeps the certificate, so the pods are not restarted.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let certificate = |s: Secret| s.data.and_then(|d| d.get("tls.crt").cloned());
    let before = certificate(secrets.get("offpeak-webhook-tls").await?);
    let mut upgrade = vec![
        "upgrade",
        "offpeak",
        CHART,
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--wait",
    ];
    upgrade.push("--timeout=3m");
    helm_in(plane, &upgrade)?;
    assert_eq!(
        certificate(secrets.get("offpeak-webhook-tls").await?),
        before
    );
    let upgraded: Deployment = Api::namespaced(admin.clone(), NAMESPACE)
        .get("offpeak")
        .await?;
    assert_eq!(
        upgraded.metadata.generation, deployment.metadata.generation,
        "the upgrade changed the pods"
    );

    // No kube-proxy: the webhook's Service points at loopback.
    kubectl(
        plane,
        &[
            "patch", "service", "offpeak-webhook", "-n", NAMESPACE, "--type=merge", "-p",
            &json!({"spec": {"type": "ExternalName", "externalName": "127.0.0.1", "clusterIP": null,
                             "clusterIPs": null, "ipFamilies": null, "ipFamilyPolicy": null,
                             "internalTrafficPolicy": null, "selector": null}})
            .to_string(),
        ],
    )
    .await?;

    let container = &pods[0].spec.as_ref().context("spec")?.containers[0];
    check_flags(container, &help_of(binary)?);
    let kubeconfig = chart_support::service_account_kubeconfig(plane, NAMESPACE, "offpeak").await?;
    let webhook: SocketAddr = format!("127.0.0.1:{webhook_port}").parse()?;
    let mut operator = run_pod(plane, &pods[0], binary, &kubeconfig, webhook).await?;
    operator.ready().await?;
    let served = serve_a_tenant(plane, tag).await;
    let log = operator.log();
    served.with_context(|| format!("the operator's log:\n{log}"))?;
    // The confinement guard, as the chart's account: a policy someone deleted is back.
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
    policies
        .delete("offpeak-tenant-confinement", &Default::default())
        .await?;
    eventually(
        "the deleted confinement policy to be applied again",
        || async {
            Ok(policies
                .get_opt("offpeak-tenant-confinement")
                .await?
                .is_some())
        },
    )
    .await
    .with_context(|| format!("the operator's log:\n{}", operator.log()))?;
    let log = operator.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| {
            // kube's errors carry the API server's reason and code; a bare "403" could be
            // part of a UID.
            let l = l.to_lowercase();
            l.contains("forbidden") || l.contains("code: 403")
        })
        .collect();
    assert!(
        refused.is_empty(),
        "the API server refused the operator: {refused:#?}"
    );
    drop(operator);

    helm_in(
        plane,
        &[
            "uninstall",
            "offpeak",
            "-n",
            NAMESPACE,
            "--wait",
            "--timeout=2m",
        ],
    )?;
    Ok(objects)
}

/// The ledger at `url` holds facts of `tenant`'s leases.
async fn assert_tenant_in_ledger(url: &str, tenant: &str) -> anyhow::Result<()> {
    let ledger = Ledger::open(url, BillingCycle::Monthly).await?;
    let tenants = ledger.tenants().await?;
    ledger.close().await;
    assert!(
        tenants.iter().any(|t| t == tenant),
        "no facts of {tenant} in {url}: {tenants:?}"
    );
    Ok(())
}

#[tokio::test]
async fn helm_installs_the_operator_that_runs_as_its_account_and_uninstall_keeps_crds_and_ledger()
-> anyhow::Result<()> {
    let plane = ControlPlane::shared().await?;
    let binary = operator_binary()?;
    let admin = plane.client().await?;
    plane.create_namespace(NAMESPACE).await?;
    // The nodes the chart's replicas land on, made before any pool's nodes.
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "system".into(),
            count: 2,
            ..Default::default()
        })
        .await?;

    // Default values: two replicas, the ledger in PostgreSQL, its URL in the Secret ops
    // make before installing.
    let postgres = TempPostgres::start()?;
    let secret: Secret = from_json(json!({
        "metadata": {"name": "offpeak-ledger"},
        "stringData": {"url": postgres.url()},
    }));
    Api::<Secret>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await?;
    let objects = install_run_uninstall(plane, "pg", &[], &binary).await?;
    let pdb = objects
        .iter()
        .any(|(kind, ..)| kind == "poddisruptionbudget.policy");
    assert!(pdb, "no PodDisruptionBudget in {objects:?}");
    for object in &objects {
        assert!(
            !exists(plane, object).await?,
            "{object:?} outlived helm uninstall"
        );
    }
    let crds = kubectl(plane, &["get", "crd", "-o", "name"]).await?;
    assert_eq!(
        crds.lines().filter(|l| l.ends_with(".offpeak.dev")).count(),
        offpeak_api::crds().len(),
        "helm uninstall removed CRDs: {crds}"
    );
    // The operator kept its facts in the PostgreSQL the Secret named.
    assert_tenant_in_ledger(&postgres.url(), "chart-pg").await?;

    // One replica with SQLite on a volume (a hostPath PersistentVolume stands for the
    // cluster's storage): uninstall keeps the claim and the file.
    let volume_dir = plane.dir().join("ledger-volume");
    std::fs::create_dir_all(&volume_dir)?;
    let volume: PersistentVolume = from_json(json!({
        "metadata": {"name": "offpeak-ledger-volume"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "chart-test", "hostPath": {"path": volume_dir}},
    }));
    Api::<PersistentVolume>::all(admin.clone())
        .create(&PostParams::default(), &volume)
        .await?;
    let sqlite = [
        "replicas=1".to_string(),
        "leaderElection.enabled=false".into(),
        "ledger.type=sqlite".into(),
        "ledger.sqlite.storageClassName=chart-test".into(),
    ];
    let objects = install_run_uninstall(plane, "lite", &sqlite, &binary).await?;
    let claim = (
        "persistentvolumeclaim".to_string(),
        NAMESPACE.to_string(),
        "offpeak-ledger".to_string(),
    );
    assert!(objects.contains(&claim), "{objects:?}");
    for object in &objects {
        assert_eq!(
            exists(plane, object).await?,
            object == &claim,
            "{object:?} after helm uninstall"
        );
    }
    // Installed again, the release takes its ledger's claim over.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), NAMESPACE);
    let kept = claims.get("offpeak-ledger").await?.metadata.uid;
    let mut again = vec![
        "install",
        "offpeak",
        CHART,
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout=3m",
    ];
    let sets: Vec<String> = sqlite.iter().map(|v| format!("--set={v}")).collect();
    again.extend(sets.iter().map(String::as_str));
    helm_in(plane, &again)?;
    assert_eq!(claims.get("offpeak-ledger").await?.metadata.uid, kept);
    helm_in(plane, &["uninstall", "offpeak", "-n", NAMESPACE, "--wait"])?;
    assert_eq!(claims.get("offpeak-ledger").await?.metadata.uid, kept);

    let ledger = volume_dir.join("ledger.db");
    assert!(
        ledger.exists(),
        "the operator kept no ledger at {}",
        ledger.display()
    );
    assert_tenant_in_ledger(&format!("sqlite://{}", ledger.display()), "chart-lite").await?;
    Ok(())
}
