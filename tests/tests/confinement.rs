//! Tenant pods land only on their tenant's lent nodes and cannot escape. The operator's
//! webhook runs here, reached by the real API server on loopback, and the confinement
//! policy is enforced by the API server itself. The nodes here are marked by the fixture;
//! that internal pods stay off nodes the operator itself lent is in `leases.rs`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Taint, Toleration};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use offpeak::admission::{self, WebhookTls, policy::WebhookEndpoint};
use offpeak::names::{TENANT, TENANT_PRIORITY, TENANT_PRIORITY_CLASS};
use offpeak_testenv::{ControlPlane, NodeSpec};
use offpeak_tests::{deployment, node_of, wait_running};
use tokio::sync::OnceCell;

type TestResult = anyhow::Result<()>;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Nodes lent to `tenant`, as the lease controller leaves them.
fn lent_nodes(prefix: &str, tenant: &str, count: usize) -> NodeSpec {
    NodeSpec {
        name_prefix: prefix.into(),
        count,
        labels: labels(&[(TENANT, tenant)]),
        taints: vec![Taint {
            key: TENANT.into(),
            value: Some(tenant.into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }],
        ..Default::default()
    }
}

/// One control plane with: acme's two lent nodes, globex's one, two internal nodes, a
/// namespace for each tenant, and the webhook and policy installed.
async fn setup() -> anyhow::Result<&'static ControlPlane> {
    static READY: OnceCell<()> = OnceCell::const_new();
    let plane = ControlPlane::shared().await?;
    READY
        .get_or_try_init(|| async {
            plane
                .create_nodes(&lent_nodes("conf-acme", "acme", 2))
                .await?;
            plane
                .create_nodes(&lent_nodes("conf-globex", "globex", 1))
                .await?;
            plane
                .create_nodes(&NodeSpec {
                    name_prefix: "conf-internal".into(),
                    count: 2,
                    ..Default::default()
                })
                .await?;
            let client = plane.client().await?;
            let namespaces: Api<Namespace> = Api::all(client.clone());
            for (namespace, tenant) in [("conf-acme", "acme"), ("conf-globex", "globex")] {
                plane.create_namespace(namespace).await?;
                let patch = serde_json::json!({"metadata": {"labels": {TENANT: tenant}}});
                namespaces
                    .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }

            // The webhook serves from a thread of its own, outliving each test's runtime.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let cert = plane.serving_certificate(&["localhost"], &[addr.ip()])?;
            let tls = WebhookTls {
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
                ca_pem: plane.ca_pem().to_string(),
            };
            let kubeconfig = plane.kubeconfig_path().to_path_buf();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().expect("webhook runtime");
                runtime.block_on(async move {
                    let client = offpeak_testenv::client_from_kubeconfig(&kubeconfig)
                        .await
                        .expect("client");
                    let metrics =
                        std::sync::Arc::new(offpeak::telemetry::Metrics::new().expect("metrics"));
                    if let Err(e) = admission::run(addr, &tls, client, metrics).await {
                        eprintln!("webhook stopped: {e:#}");
                    }
                });
            });
            admission::install(
                &client,
                &WebhookEndpoint::Url(format!("https://{addr}")),
                plane.ca_pem(),
            )
            .await?;
            anyhow::Ok(())
        })
        .await?;
    Ok(plane)
}

fn container() -> Container {
    Container {
        name: "main".into(),
        image: Some("registry.example/app:1".into()),
        ..Default::default()
    }
}

fn pod(name: &str, spec: PodSpec) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container()],
            ..spec
        }),
        ..Default::default()
    }
}

/// Creates the pod, retrying while the API server has not yet loaded the webhook and the
/// policy (a pod created before then is refused by the policy: it fails safe).
async fn create_when_ready(pods: &Api<Pod>, pod: &Pod) -> kube::Result<Pod> {
    let mut last = None;
    for _ in 0..60 {
        match pods.create(&PostParams::default(), pod).await {
            Err(kube::Error::Api(s))
                if s.message
                    .contains("spec.nodeSelector['offpeak.dev/tenant']")
                    && pod_is_plain(pod) =>
            {
                last = Some(kube::Error::Api(s));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
    Err(last.expect("at least one attempt"))
}

fn pod_is_plain(pod: &Pod) -> bool {
    pod.spec.as_ref().is_none_or(|s| s.node_selector.is_none())
}

/// Waits until the API server enforces the confinement policy: a probe pod with a
/// wildcard toleration is refused (probes admitted before then are deleted).
async fn wait_for_policy(pods: &Api<Pod>) -> anyhow::Result<()> {
    for attempt in 0..120 {
        let wildcard = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        let name = format!("policy-probe-{attempt}");
        match pods
            .create(
                &PostParams::default(),
                &pod(
                    &name,
                    PodSpec {
                        tolerations: Some(vec![wildcard]),
                        ..Default::default()
                    },
                ),
            )
            .await
        {
            Err(kube::Error::Api(s)) if s.message.contains("a toleration without a key") => {
                return Ok(());
            }
            Ok(_) => {
                pods.delete(&name, &Default::default()).await?;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(other) => return Err(other.into()),
        }
    }
    anyhow::bail!(
        "the API server did not start enforcing {} within 30s",
        offpeak::names::CONFINEMENT_POLICY
    )
}

/// Refused by the API server (policy or webhook): the message a user sees.
async fn refused(pods: &Api<Pod>, pod: Pod) -> String {
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.code == 422 || status.code == 400 || status.code == 403,
                "{status:?}"
            );
            status.message
        }
        other => panic!("expected the pod to be refused, got {other:?}"),
    }
}

async fn deployment_nodes(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> anyhow::Result<Vec<Pod>> {
    let client = plane.client().await?;
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment(name, replicas, None))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    wait_running(
        &pods,
        &format!("app={name}"),
        replicas as usize,
        Duration::from_secs(90),
    )
    .await
}

#[tokio::test]
async fn tenant_pods_run_only_on_their_tenants_nodes_at_tenant_priority() -> TestResult {
    let plane = setup().await?;
    // Wait until the webhook is live, with a throwaway pod.
    let pods: Api<Pod> = Api::namespaced(plane.client().await?, "conf-acme");
    create_when_ready(&pods, &pod("probe", PodSpec::default())).await?;

    let running = deployment_nodes(plane, "conf-acme", "render", 4).await?;
    for p in &running {
        assert!(
            node_of(p).starts_with("conf-acme-"),
            "acme pod on {}",
            node_of(p)
        );
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some(TENANT_PRIORITY_CLASS)
        );
        assert_eq!(spec.priority, Some(TENANT_PRIORITY));
    }
    Ok(())
}

#[tokio::test]
async fn a_second_tenants_pods_never_land_on_the_firsts_nodes() -> TestResult {
    let plane = setup().await?;
    let pods: Api<Pod> = Api::namespaced(plane.client().await?, "conf-globex");
    create_when_ready(&pods, &pod("probe", PodSpec::default())).await?;
    for p in deployment_nodes(plane, "conf-globex", "crawler", 3).await? {
        assert_eq!(node_of(&p), "conf-globex-0");
    }
    Ok(())
}

#[tokio::test]
async fn escapes_are_refused_with_the_rule_that_stops_them() -> TestResult {
    let plane = setup().await?;
    let pods: Api<Pod> = Api::namespaced(plane.client().await?, "conf-acme");
    create_when_ready(&pods, &pod("probe-escapes", PodSpec::default())).await?;
    wait_for_policy(&pods).await?;

    let message = refused(
        &pods,
        pod(
            "pinned",
            PodSpec {
                node_name: Some("conf-internal-0".into()),
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(
        message.contains("spec.nodeName: tenant pods may not name a node"),
        "{message}"
    );

    let foreign = Toleration {
        key: Some(TENANT.into()),
        operator: Some("Equal".into()),
        value: Some("globex".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    };
    let message = refused(
        &pods,
        pod(
            "foreign-toleration",
            PodSpec {
                tolerations: Some(vec![foreign]),
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(
        message.contains("may tolerate only their own tenant's 'offpeak.dev/tenant' taint"),
        "{message}"
    );

    let wildcard = Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    };
    let message = refused(
        &pods,
        pod(
            "wildcard",
            PodSpec {
                tolerations: Some(vec![wildcard]),
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(
        message.contains("a toleration without a key tolerates every taint"),
        "{message}"
    );

    let selector = labels(&[(TENANT, "globex")]);
    let message = refused(
        &pods,
        pod(
            "foreign-selector",
            PodSpec {
                node_selector: Some(selector),
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(
        message.contains("spec.nodeSelector['offpeak.dev/tenant']"),
        "{message}"
    );

    let selector = labels(&[("kubernetes.io/hostname", "conf-internal-0")]);
    let message = refused(
        &pods,
        pod(
            "hostname",
            PodSpec {
                node_selector: Some(selector),
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(
        message.contains("node conf-internal-0 is not leased to tenant acme"),
        "{message}"
    );
    Ok(())
}
