//! Proves the local control plane is real and whole: objects round-trip through etcd, the
//! scheduler places pods that kwok runs, RBAC and ValidatingAdmissionPolicy are enforced,
//! several control planes run side by side, and nothing is left behind when one stops.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use offpeak_testenv::{ControlPlane, NodeSpec, Options};
use offpeak_tests::{deployment, node_of, wait_running};

type TestResult = anyhow::Result<()>;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod_spec(image: &str) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "main".into(),
            image: Some(image.into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The HTTP status of a refused request, and its message.
fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected the API server to refuse the request, got {other:?}"),
    }
}

#[tokio::test]
async fn namespace_round_trips_through_etcd() -> TestResult {
    let plane = ControlPlane::shared().await?;
    let namespaces: Api<Namespace> = Api::all(plane.client().await?);
    let mut namespace = Namespace {
        metadata: meta("harness-roundtrip"),
        ..Default::default()
    };
    namespace.metadata.labels = Some(labels(&[("offpeak.dev/test", "roundtrip")]));
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;

    let stored = namespaces.get("harness-roundtrip").await?;
    let stored_labels = stored.metadata.labels.unwrap_or_default();
    assert_eq!(
        stored_labels.get("offpeak.dev/test").map(String::as_str),
        Some("roundtrip")
    );
    // The API server adds its own label on the way in.
    assert_eq!(
        stored_labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("harness-roundtrip")
    );
    assert!(
        stored.metadata.uid.is_some(),
        "the API server assigns a uid"
    );
    let listed = namespaces
        .list(&ListParams::default().labels("offpeak.dev/test=roundtrip"))
        .await?;
    assert_eq!(listed.items.len(), 1);

    namespaces
        .delete("harness-roundtrip", &DeleteParams::default())
        .await?;
    // The namespace controller (in the real controller-manager) finishes the deletion.
    tokio::time::timeout(Duration::from_secs(60), async {
        while namespaces.get_opt("harness-roundtrip").await?.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test]
async fn deployment_pods_are_scheduled_and_run_on_kwok_nodes() -> TestResult {
    let plane = ControlPlane::shared().await?;
    let nodes = plane
        .create_nodes(&NodeSpec {
            name_prefix: "harness-deploy".into(),
            count: 3,
            labels: labels(&[("offpeak.dev/test", "deploy")]),
            ..Default::default()
        })
        .await?;
    plane.create_namespace("harness-deploy").await?;
    let client = plane.client().await?;
    let web = deployment("web", 3, Some(labels(&[("offpeak.dev/test", "deploy")])));
    Api::<Deployment>::namespaced(client.clone(), "harness-deploy")
        .create(&PostParams::default(), &web)
        .await?;

    // The deployment controller makes a ReplicaSet, the ReplicaSet controller pods, the
    // scheduler binds them, and kwok runs them.
    let pods: Api<Pod> = Api::namespaced(client, "harness-deploy");
    let running = wait_running(&pods, "app=web", 3, Duration::from_secs(90)).await?;
    for pod in running {
        let node = node_of(&pod);
        assert!(
            nodes.contains(&node),
            "pod scheduled on {node:?}, not one of {nodes:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn rbac_allows_alice_what_her_group_is_granted_and_nothing_else() -> TestResult {
    let plane = ControlPlane::shared().await?;
    plane.create_namespace("harness-acme").await?;
    plane.create_namespace("harness-other").await?;
    let admin = plane.client().await?;
    Api::<Role>::namespaced(admin.clone(), "harness-acme")
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("read-configmaps"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["configmaps".into()]),
                    verbs: vec!["get".into(), "list".into()],
                    ..Default::default()
                }]),
            },
        )
        .await?;
    Api::<RoleBinding>::namespaced(admin.clone(), "harness-acme")
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("tenant-acme-reads-configmaps"),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "read-configmaps".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "Group".into(),
                    name: "tenant-acme".into(),
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    ..Default::default()
                }]),
            },
        )
        .await?;
    Api::<ConfigMap>::namespaced(admin, "harness-acme")
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("settings"),
                ..Default::default()
            },
        )
        .await?;

    let alice = plane.user_client("alice", &["tenant-acme"]).await?;
    let acme_configmaps: Api<ConfigMap> = Api::namespaced(alice.clone(), "harness-acme");
    // RBAC caches settle within moments of the binding's creation.
    let listed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(list) = acme_configmaps.list(&ListParams::default()).await {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await?;
    assert!(
        listed
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("settings"))
    );
    assert_eq!(
        acme_configmaps
            .get("settings")
            .await?
            .metadata
            .name
            .as_deref(),
        Some("settings")
    );

    let (code, message) = refusal(
        acme_configmaps
            .create(
                &PostParams::default(),
                &ConfigMap {
                    metadata: meta("sneaky"),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("User \"alice\" cannot create resource \"configmaps\""),
        "{message}"
    );

    let (code, message) = refusal(
        Api::<Secret>::namespaced(alice.clone(), "harness-acme")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot list resource \"secrets\""),
        "{message}"
    );

    let (code, message) = refusal(
        Api::<ConfigMap>::namespaced(alice.clone(), "harness-other")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("in the namespace \"harness-other\""),
        "{message}"
    );

    // Another user, outside the group, gets nothing even in alice's namespace.
    let mallory = plane.user_client("mallory", &["tenant-other"]).await?;
    let (code, _) = refusal(
        Api::<ConfigMap>::namespaced(mallory, "harness-acme")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403);
    Ok(())
}

#[tokio::test]
async fn validating_admission_policy_refuses_a_pod_with_its_message() -> TestResult {
    let plane = ControlPlane::shared().await?;
    plane.create_namespace("harness-vap").await?;
    let client = plane.client().await?;
    let message = "containers must pull from registry.offpeak.dev";
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(
            &PostParams::default(),
            &ValidatingAdmissionPolicy {
                metadata: meta("harness-trusted-registry"),
                spec: Some(ValidatingAdmissionPolicySpec {
                    failure_policy: Some("Fail".into()),
                    match_constraints: Some(MatchResources {
                        resource_rules: Some(vec![
                            k8s_openapi::api::admissionregistration::v1::NamedRuleWithOperations {
                                api_groups: Some(vec![String::new()]),
                                api_versions: Some(vec!["v1".into()]),
                                operations: Some(vec!["CREATE".into()]),
                                resources: Some(vec!["pods".into()]),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }),
                    validations: Some(vec![Validation {
                        expression: "object.spec.containers.all(c, c.image.startsWith('registry.offpeak.dev/'))".into(),
                        message: Some(message.into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                status: None,
            },
        )
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(
            &PostParams::default(),
            &ValidatingAdmissionPolicyBinding {
                metadata: meta("harness-trusted-registry"),
                spec: Some(ValidatingAdmissionPolicyBindingSpec {
                    policy_name: Some("harness-trusted-registry".into()),
                    validation_actions: Some(vec!["Deny".into()]),
                    match_resources: Some(MatchResources {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some(labels(&[(
                                "kubernetes.io/metadata.name",
                                "harness-vap",
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
        )
        .await?;

    let pods: Api<Pod> = Api::namespaced(client, "harness-vap");
    // The policy is enforced once the API server's policy informer has it: retry until then.
    let refused = tokio::time::timeout(Duration::from_secs(30), async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let pod = Pod {
                metadata: meta(&format!("untrusted-{attempt}")),
                spec: Some(pod_spec("docker.io/library/nginx:1")),
                ..Default::default()
            };
            match pods.create(&PostParams::default(), &pod).await {
                Err(kube::Error::Api(status)) => return status,
                Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
    })
    .await?;
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(
        refused
            .message
            .contains("ValidatingAdmissionPolicy 'harness-trusted-registry'")
            && refused.message.contains(message),
        "{}",
        refused.message
    );

    // A pod that follows the policy is admitted.
    let trusted = Pod {
        metadata: meta("trusted"),
        spec: Some(pod_spec("registry.offpeak.dev/web:1")),
        ..Default::default()
    };
    pods.create(&PostParams::default(), &trusted).await?;
    Ok(())
}

#[tokio::test]
async fn two_control_planes_start_side_by_side_and_leave_nothing_behind() -> TestResult {
    let (a, b) = tokio::join!(ControlPlane::start(), ControlPlane::start());
    let (a, b) = (a?, b?);
    assert_ne!(a.server(), b.server());
    assert_ne!(a.dir(), b.dir());
    for plane in [&a, &b] {
        let version = plane.client().await?.apiserver_version().await?;
        assert_eq!(format!("v{}.{}", version.major, version.minor), "v1.34");
        assert_eq!(
            Some(version.git_version.as_str()),
            offpeak_testenv::pinned_version("KUBERNETES_VERSION")
        );
    }
    let (dir, port) = (a.dir().to_path_buf(), port_of(a.server()));
    let processes = running(&a);
    a.stop();
    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the API server still listens"
    );
    let left: Vec<&Process> = processes.iter().filter(|p| p.alive()).collect();
    assert!(left.is_empty(), "still running after stop: {left:?}");
    assert!(
        running(&b).iter().all(Process::alive),
        "the other control plane's processes run on"
    );
    // Stopping one leaves the other serving.
    b.client().await?.apiserver_version().await?;
    Ok(())
}

#[tokio::test]
async fn a_component_that_fails_at_start_is_named_with_its_log() {
    let error = ControlPlane::start_with(Options {
        apiserver_args: vec!["--no-such-flag=1".into()],
        ..Default::default()
    })
    .await
    .err()
    .expect("kube-apiserver must refuse an unknown flag");
    let text = error.to_string();
    assert!(
        text.starts_with("kube-apiserver did not become healthy: it exited at start"),
        "{text}"
    );
    assert!(
        text.contains("unknown flag: --no-such-flag"),
        "the log tail is shown: {text}"
    );
    let log = match &error {
        offpeak_testenv::Error::Component { log, .. } => log.clone(),
        other => panic!("expected a component error, got {other:?}"),
    };
    assert!(
        log.ends_with("logs/kube-apiserver.log") && log.exists(),
        "the log is kept: {}",
        log.display()
    );
    if let Some(dir) = log.parent().and_then(|logs| logs.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Started by `the_watcher_cleans_up_after_a_process_that_aborts` as a child process:
/// starts a control plane, says where it is, and aborts without running any destructor.
#[tokio::test]
#[ignore = "run only as the child of the_watcher_cleans_up_after_a_process_that_aborts"]
async fn child_starts_a_control_plane_and_aborts() {
    let plane = ControlPlane::start().await.expect("control plane starts");
    let processes: Vec<String> = running(&plane)
        .iter()
        .map(|p| format!("{}={}:{}", p.name, p.pid, p.started))
        .collect();
    println!("OFFPEAK_CHILD_PROCESSES {}", processes.join(" "));
    println!(
        "OFFPEAK_CHILD {} {}",
        plane.dir().display(),
        port_of(plane.server())
    );
    std::process::abort();
}

#[tokio::test]
async fn the_watcher_cleans_up_after_a_process_that_aborts() -> TestResult {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_starts_a_control_plane_and_aborts",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .await?;
    assert!(!output.status.success(), "the child aborts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OFFPEAK_CHILD "))
        .unwrap_or_else(|| {
            panic!(
                "child printed no location: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let (dir, port) = line.rsplit_once(' ').expect("dir and port");
    let (dir, port) = (std::path::PathBuf::from(dir), port.parse::<u16>()?);
    let processes: Vec<Process> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OFFPEAK_CHILD_PROCESSES "))
        .expect("the child names its processes")
        .split(' ')
        .map(|p| {
            let (name, rest) = p.split_once('=').expect("name=pid:start");
            let (pid, started) = rest.split_once(':').expect("pid:start");
            Process {
                name: name.to_string(),
                pid: pid.parse().expect("a pid"),
                started: started.to_string(),
            }
        })
        .collect();
    assert_eq!(
        processes
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        COMPONENTS
    );
    tokio::time::timeout(Duration::from_secs(20), async {
        while dir.exists()
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            || processes.iter().any(Process::alive)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .map_err(|_| {
        let left: Vec<&Process> = processes.iter().filter(|p| p.alive()).collect();
        anyhow::anyhow!(
            "{} (exists: {}), the API server on port {port} or these processes {left:?} outlived the aborted process",
            dir.display(),
            dir.exists()
        )
    })?;
    Ok(())
}

/// Every process of a control plane, in start order, and the clean-up watcher.
const COMPONENTS: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "watcher",
];

/// A process of a control plane: its name, PID and start time (in clock ticks after boot,
/// from `/proc/<pid>/stat`), which tells it apart from a later process given the same PID.
#[derive(Debug)]
struct Process {
    name: String,
    pid: u32,
    started: String,
}

/// The state letter and start time of a process, if it exists.
fn stat(pid: u32) -> Option<(String, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: the state is the first field, the start time the 20th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.first()?.to_string(), fields.get(19)?.to_string()))
}

impl Process {
    /// Still running: the same process (not a later one with its PID), not a zombie.
    fn alive(&self) -> bool {
        stat(self.pid)
            .is_some_and(|(state, started)| started == self.started && state != "Z" && state != "X")
    }
}

/// The plane's processes, each checked to be running now.
fn running(plane: &ControlPlane) -> Vec<Process> {
    let processes: Vec<Process> = plane
        .pids()
        .into_iter()
        .map(|(name, pid)| {
            let (state, started) =
                stat(pid).unwrap_or_else(|| panic!("{name} (pid {pid}) is not running"));
            assert!(state != "Z", "{name} (pid {pid}) has exited");
            Process { name, pid, started }
        })
        .collect();
    assert_eq!(
        processes
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        COMPONENTS
    );
    processes
}

fn port_of(server: &str) -> u16 {
    server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("server URL ends with a port")
}
