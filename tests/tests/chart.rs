//! The Helm chart without a cluster: it lints, renders a production install by default and
//! the edge installs ops ask for, refuses wrong values naming them, holds the same CRDs as
//! crds/ and the same tenancy objects the operator applies, and its RBAC is the set its
//! README documents. chart_install.rs installs it for real; chart_rbac.rs asks the API
//! server what its account may do.

mod chart_support;

use std::collections::{BTreeMap, BTreeSet};

use chart_support::{
    CHART, NAMESPACE, documented_permissions, expand_rules, helm, object, refusal, render, repo,
};
use offpeak::admission::{self, policy::WebhookEndpoint};
use offpeak::desired::tenancy;
use serde_json::{Value, json};

fn container(objects: &[Value]) -> &Value {
    &object(objects, "Deployment", "offpeak")["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .expect("the container has args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect()
}

fn env<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    container(objects)["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no env {name} in {}", container(objects)["env"]))
}

fn has(objects: &[Value], kind: &str, name: &str) -> bool {
    objects
        .iter()
        .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

#[test]
fn the_chart_lints_with_default_and_edge_values() -> anyhow::Result<()> {
    for values in [
        vec![],
        vec![
            "replicas=1",
            "ledger.type=sqlite",
            "leaderElection.enabled=false",
        ],
        vec![
            "webhook.certManager.enabled=true",
            "metrics.serviceMonitor.enabled=true",
        ],
    ] {
        let mut lint = vec!["lint", "--strict", CHART];
        for value in &values {
            lint.extend(["--set", value]);
        }
        let out = helm(&lint)?.map_err(anyhow::Error::msg)?;
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{values:?}: {out}"
        );
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{values:?}: {out}"
        );
    }
    Ok(())
}

#[test]
fn default_values_render_two_hardened_replicas_with_leader_election_and_postgres()
-> anyhow::Result<()> {
    let objects = render(&[])?;
    let deployment = object(&objects, "Deployment", "offpeak");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    // Replicas prefer different nodes.
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let pdb = object(&objects, "PodDisruptionBudget", "offpeak");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);

    // Hardened: non-root, RuntimeDefault seccomp, read-only root, no privilege, no capability.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container(&objects)["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(container(&objects)["resources"]["requests"]["cpu"].is_string());
    assert!(container(&objects)["resources"]["limits"]["memory"].is_string());

    // JSON logs, leader election from the downward API, the ledger URL from a Secret.
    let args = args(&objects);
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--log-json".to_string()), "{args:?}");
    assert!(
        args.contains(&format!(
            "--webhook-service={NAMESPACE}/offpeak-webhook:443"
        )),
        "{args:?}"
    );
    assert_eq!(env(&objects, "OFFPEAK_LEADER_ELECTION")["value"], "true");
    assert_eq!(
        env(&objects, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(&objects, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env(&objects, "OFFPEAK_LEDGER")["valueFrom"]["secretKeyRef"],
        json!({"name": "offpeak-ledger", "key": "url"})
    );
    assert!(!has(&objects, "PersistentVolumeClaim", "offpeak-ledger"));
    assert!(!has(&objects, "ServiceMonitor", "offpeak"));

    // The leader Lease and the Role to hold it, in the release namespace.
    assert_eq!(
        object(&objects, "Lease", "offpeak-operator")["metadata"]["namespace"],
        NAMESPACE
    );
    assert_eq!(
        object(&objects, "Role", "offpeak-leader-election")["metadata"]["namespace"],
        NAMESPACE
    );

    // The webhook's certificate: the Secret's CA is the one both webhooks trust, and it is
    // issued for the Service they call.
    let secret = object(&objects, "Secret", "offpeak-webhook-tls");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(
            secret["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}"
        );
    }
    assert_eq!(
        secret["metadata"]["annotations"]["offpeak.dev/certificate-host"],
        format!("offpeak-webhook.{NAMESPACE}.svc")
    );
    for hook in ["offpeak-tenant-pods", "offpeak-leases"] {
        let config =
            &object(&objects, "MutatingWebhookConfiguration", hook)["webhooks"][0]["clientConfig"];
        assert_eq!(config["caBundle"], secret["data"]["ca.crt"], "{hook}");
        assert_eq!(
            config["service"],
            json!({"namespace": NAMESPACE, "name": "offpeak-webhook", "port": 443, "path": config["service"]["path"]})
        );
    }
    let service = object(&objects, "Service", "offpeak-webhook");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
    Ok(())
}

#[test]
fn one_replica_keeps_its_sqlite_ledger_on_a_volume_that_uninstall_keeps() -> anyhow::Result<()> {
    let objects = render(&[
        "replicas=1",
        "ledger.type=sqlite",
        "ledger.sqlite.size=5Gi",
        "ledger.sqlite.storageClassName=fast",
    ])?;
    let claim = object(&objects, "PersistentVolumeClaim", "offpeak-ledger");
    assert_eq!(
        claim["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
    assert_eq!(claim["spec"]["storageClassName"], "fast");
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    let deployment = object(&objects, "Deployment", "offpeak");
    assert_eq!(deployment["spec"]["replicas"], 1);
    // The old pod lets go of the file (and the volume) before the new one opens it.
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let mount = container(&objects)["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "ledger"))
        .expect("the ledger volume is mounted");
    let path = mount["mountPath"].as_str().unwrap_or_default();
    assert_eq!(
        env(&objects, "OFFPEAK_LEDGER")["value"],
        format!("sqlite://{path}/ledger.db?mode=rwc")
    );
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "ledger"))
        .expect("the ledger volume");
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        "offpeak-ledger"
    );
    // One replica: no budget (it would block every drain of its node).
    assert!(!has(&objects, "PodDisruptionBudget", "offpeak"));

    // A claim of one's own instead of the chart's.
    let objects = render(&[
        "replicas=1",
        "ledger.type=sqlite",
        "ledger.sqlite.existingClaim=mine",
    ])?;
    assert!(!has(&objects, "PersistentVolumeClaim", "offpeak-ledger"));
    let volumes = &object(&objects, "Deployment", "offpeak")["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes.as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "mine")),
        "{volumes}"
    );
    Ok(())
}

#[test]
fn several_replicas_read_the_postgres_url_from_the_secret_named() -> anyhow::Result<()> {
    let objects = render(&[
        "replicas=3",
        "ledger.postgres.existingSecret=billing-db",
        "ledger.postgres.key=dsn",
        "podDisruptionBudget.minAvailable=2",
    ])?;
    assert_eq!(
        object(&objects, "Deployment", "offpeak")["spec"]["replicas"],
        3
    );
    assert_eq!(
        env(&objects, "OFFPEAK_LEDGER")["valueFrom"]["secretKeyRef"],
        json!({"name": "billing-db", "key": "dsn"})
    );
    assert_eq!(
        object(&objects, "PodDisruptionBudget", "offpeak")["spec"]["minAvailable"],
        2
    );
    Ok(())
}

#[test]
fn cert_manager_issues_the_webhook_certificate_and_injects_its_ca() -> anyhow::Result<()> {
    let objects = render(&["webhook.certManager.enabled=true"])?;
    // Helm makes no certificate of its own.
    assert!(!has(&objects, "Secret", "offpeak-webhook-tls"));
    let certificate = object(&objects, "Certificate", "offpeak-webhook");
    assert_eq!(certificate["spec"]["secretName"], "offpeak-webhook-tls");
    assert_eq!(
        certificate["spec"]["dnsNames"][0],
        format!("offpeak-webhook.{NAMESPACE}.svc")
    );
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"],
        "offpeak-webhook-ca"
    );
    assert!(certificate["spec"]["renewBefore"].is_string());
    assert_eq!(
        object(&objects, "Certificate", "offpeak-webhook-ca")["spec"]["isCA"],
        true
    );
    assert!(
        object(&objects, "Issuer", "offpeak-webhook-ca")["spec"]["ca"]["secretName"]
            == "offpeak-webhook-ca"
    );
    assert!(object(&objects, "Issuer", "offpeak-selfsigned")["spec"]["selfSigned"].is_object());
    for hook in ["offpeak-tenant-pods", "offpeak-leases"] {
        let config = object(&objects, "MutatingWebhookConfiguration", hook);
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NAMESPACE}/offpeak-webhook"),
            "{hook}"
        );
        assert!(
            config["webhooks"][0]["clientConfig"]["caBundle"].is_null(),
            "{hook}"
        );
    }
    // The pods mount the Secret cert-manager writes.
    let volumes = &object(&objects, "Deployment", "offpeak")["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes.as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["secret"]["secretName"] == "offpeak-webhook-tls")),
        "{volumes}"
    );

    // An issuer of one's own: the chart makes none.
    let objects = render(&[
        "webhook.certManager.enabled=true",
        "webhook.certManager.issuerRef.kind=ClusterIssuer",
        "webhook.certManager.issuerRef.name=corporate-ca",
    ])?;
    assert!(!has(&objects, "Issuer", "offpeak-selfsigned"));
    assert!(!has(&objects, "Issuer", "offpeak-webhook-ca"));
    assert_eq!(
        object(&objects, "Certificate", "offpeak-webhook")["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "corporate-ca"})
    );
    Ok(())
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service() -> anyhow::Result<()> {
    let objects = render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
    ])?;
    let monitor = object(&objects, "ServiceMonitor", "offpeak");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service = object(&objects, "Service", "offpeak-metrics");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (key, value) in selector {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    let port = monitor["spec"]["endpoints"][0]["port"].clone();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == port)),
        "{port} is not a port of {service}"
    );
    // The webhook's Service is not scraped.
    let webhook = object(&objects, "Service", "offpeak-webhook");
    assert!(
        selector
            .iter()
            .any(|(k, v)| &webhook["metadata"]["labels"][k] != v)
    );
    Ok(())
}

/// The messages are pinned: each names the value that is wrong.
#[test]
fn wrong_values_are_refused_at_template_time_naming_the_value() -> anyhow::Result<()> {
    for (values, message) in [
        (vec!["replicas=0"], "at '/replicas': minimum: got 0, want 1"),
        (
            vec!["replicas=two"],
            "at '/replicas': got string, want integer",
        ),
        (
            vec!["replica=3"],
            "at '': additional properties 'replica' not allowed",
        ),
        (
            vec!["ledger.type=mysql"],
            "at '/ledger/type': value must be one of 'postgres', 'sqlite'",
        ),
        (
            vec!["ledger.postgres.existingSecret="],
            "at '/ledger/postgres/existingSecret': '' does not match pattern",
        ),
        (
            vec!["starvationGuard=10min"],
            "at '/starvationGuard': '10min' does not match pattern '^[0-9]+[smh]$'",
        ),
        (
            vec!["billing.grace=1d"],
            "at '/billing/grace': '1d' does not match pattern '^[0-9]+[smh]$'",
        ),
        (
            vec!["podSecurityContext.runAsUser=0"],
            "at '/podSecurityContext/runAsUser': minimum: got 0, want 1",
        ),
        (
            vec!["metrics.port=70000"],
            "at '/metrics/port': maximum: got 70,000, want 65,535",
        ),
        (
            vec!["logJson=yes"],
            "at '/logJson': got string, want boolean",
        ),
        (
            vec!["image.digest=latest"],
            "at '/image/digest': 'latest' does not match pattern '^(sha256:[a-f0-9]{64})?$'",
        ),
        (
            vec!["webhook.certManager.issuerRef.name=corporate-ca"],
            "at '/webhook/certManager/issuerRef': missing property 'kind'",
        ),
        (
            vec!["ledger.sqlite.accessMode=ReadWriteMany"],
            "at '/ledger/sqlite/accessMode': value must be one of 'ReadWriteOnce', 'ReadWriteOncePod'",
        ),
    ] {
        let refused = refusal(&values)?;
        assert!(
            refused.contains("values don't meet the specifications of the schema")
                && refused.contains(message),
            "{values:?}: expected {message:?}, got: {refused}"
        );
    }
    Ok(())
}

#[test]
fn sqlite_with_two_replicas_is_refused_naming_the_values() -> anyhow::Result<()> {
    let refused = refusal(&["ledger.type=sqlite"])?;
    assert!(
        refused.contains(
            "ledger.type=sqlite keeps the ledger in a file only one replica may write, but \
             replicas=2: set replicas=1, or ledger.type=postgres with \
             ledger.postgres.existingSecret for several replicas"
        ),
        "{refused}"
    );
    let refused = refusal(&["leaderElection.enabled=false"])?;
    assert!(
        refused.contains("replicas=2 needs leaderElection.enabled=true"),
        "{refused}"
    );
    let refused = refusal(&["podDisruptionBudget.minAvailable=2"])?;
    assert!(
        refused.contains("podDisruptionBudget.minAvailable=2 must be below replicas=2"),
        "{refused}"
    );
    Ok(())
}

/// crds/ is generated from the Rust types; the chart carries a copy (a real folder: Helm
/// packages do not follow links out of the chart).
#[test]
fn the_charts_crds_are_a_copy_of_crds() -> anyhow::Result<()> {
    let chart_crds = repo("charts/offpeak/crds");
    let meta = std::fs::symlink_metadata(&chart_crds)?;
    assert!(
        meta.is_dir() && !meta.file_type().is_symlink(),
        "charts/offpeak/crds must be a folder, not a link"
    );
    let read = |dir: &std::path::Path| -> anyhow::Result<BTreeMap<String, String>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            files.insert(name, std::fs::read_to_string(&path)?);
        }
        Ok(files)
    };
    let source = read(&repo("crds"))?;
    if std::env::var_os("OFFPEAK_UPDATE_CRDS").is_some_and(|v| v == "1") {
        for name in read(&chart_crds)?.keys() {
            std::fs::remove_file(chart_crds.join(name))?;
        }
        for (name, text) in &source {
            std::fs::write(chart_crds.join(name), text)?;
        }
    }
    let copy = read(&chart_crds)?;
    let differing: Vec<&String> = source
        .keys()
        .chain(copy.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|name| source.get(*name) != copy.get(*name))
        .collect();
    assert!(
        differing.is_empty(),
        "charts/offpeak/crds differs from crds/ in {differing:?}. Sync it with \
         `OFFPEAK_UPDATE_CRDS=1 cargo test -p offpeak-tests --test chart -- crds` \
         (or `rm charts/offpeak/crds/* && cp crds/*.yaml charts/offpeak/crds/`) and commit both"
    );
    assert_eq!(copy.len(), offpeak_api::crds().len());
    Ok(())
}

/// The tenancy objects the operator applies at start (the tenant ClusterRole, then the
/// confinement objects in their order) with the webhooks pointed at `endpoint`, without
/// labels or CA: those are the install's.
fn operator_tenancy_objects(endpoint: &WebhookEndpoint) -> Vec<Value> {
    let role = serde_json::to_value(tenancy::tenant_cluster_role()).expect("serializable");
    let mut objects = vec![role];
    objects.extend(
        admission::cluster_objects(endpoint, "")
            .into_iter()
            .map(|o| o.body),
    );
    objects.iter_mut().for_each(without_install_parts);
    objects
}

/// An object without what differs by install: labels, annotations, webhooks' CA.
fn without_install_parts(object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("labels");
        meta.remove("annotations");
    }
    for hook in object["webhooks"].as_array_mut().into_iter().flatten() {
        if let Some(config) = hook["clientConfig"].as_object_mut() {
            config.remove("caBundle");
        }
    }
}

const TENANCY_FILE: &str = "charts/offpeak/files/tenancy.yaml";

/// The chart's copy of the tenancy objects is generated from the operator's code:
/// `files/tenancy.yaml` is exactly what the operator applies (the webhooks' Service a
/// placeholder the template fills in), so the chart cannot drift from it.
#[test]
fn the_charts_tenancy_file_is_generated_from_the_operator() -> anyhow::Result<()> {
    let placeholder = WebhookEndpoint::Service {
        namespace: "RELEASE-NAMESPACE".into(),
        name: "WEBHOOK-SERVICE".into(),
        port: 443,
    };
    let mut text = String::from(
        "# Generated from operator/src/admission and operator/src/desired/tenancy.rs: do not edit.\n\
         # Regenerate with `OFFPEAK_UPDATE_CRDS=1 cargo test -p offpeak-tests --test chart -- tenancy`.\n\
         # templates/tenancy.yaml adds the chart's labels and the webhooks' Service and CA.\n",
    );
    for object in operator_tenancy_objects(&placeholder) {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(&object)?);
    }
    let path = repo(TENANCY_FILE);
    if std::env::var_os("OFFPEAK_UPDATE_CRDS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text)?;
    }
    assert!(
        std::fs::read_to_string(&path)? == text,
        "{TENANCY_FILE} differs from the operator's objects. Regenerate it with \
         `OFFPEAK_UPDATE_CRDS=1 cargo test -p offpeak-tests --test chart -- tenancy` and commit it"
    );
    Ok(())
}

/// What the chart installs is what the operator applies at start, object by object, with
/// the webhooks pointed at the chart's Service: otherwise the chart's copy would be what
/// runs until the operator first starts, and what `helm upgrade` writes back.
#[test]
fn the_charts_tenancy_objects_are_the_ones_the_operator_applies() -> anyhow::Result<()> {
    let rendered = render(&[])?;
    let endpoint = WebhookEndpoint::Service {
        namespace: NAMESPACE.into(),
        name: "offpeak-webhook".into(),
        port: 443,
    };
    let expected = operator_tenancy_objects(&endpoint);
    assert_eq!(
        expected.len(),
        11,
        "the tenant role and ten confinement objects"
    );
    for operator in expected {
        let (kind, name) = (
            operator["kind"].as_str().unwrap_or_default(),
            operator["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let mut chart = object(&rendered, kind, name).clone();
        assert_eq!(
            chart["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{kind} {name} carries the chart's labels"
        );
        without_install_parts(&mut chart);
        assert_eq!(chart, operator, "{kind} {name}");
    }
    Ok(())
}

/// The ClusterRole and Role of the chart grant exactly the README's table.
#[test]
fn the_charts_rbac_is_the_documented_set() -> anyhow::Result<()> {
    let objects = render(&[])?;
    let mut granted = expand_rules(
        "cluster",
        &object(&objects, "ClusterRole", "offpeak-operator")["rules"],
    );
    granted.extend(expand_rules(
        "release namespace",
        &object(&objects, "Role", "offpeak-leader-election")["rules"],
    ));
    let documented = documented_permissions()?;
    assert_eq!(
        granted.difference(&documented).collect::<Vec<_>>(),
        Vec::<&chart_support::Permission>::new(),
        "granted by charts/offpeak/templates but not in charts/offpeak/README.md"
    );
    assert_eq!(
        documented.difference(&granted).collect::<Vec<_>>(),
        Vec::<&chart_support::Permission>::new(),
        "in charts/offpeak/README.md but not granted"
    );
    // Both bindings name the chart's account and no one else.
    for binding in [
        object(&objects, "ClusterRoleBinding", "offpeak-operator"),
        object(&objects, "RoleBinding", "offpeak-leader-election"),
    ] {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "offpeak", "namespace": NAMESPACE}])
        );
    }
    Ok(())
}
