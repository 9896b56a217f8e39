//! Tenant isolation against a hostile tenant, on the real control plane with the operator
//! running: each test acts with a tenant's own credentials (a client certificate from the
//! plane's CA) and asserts what the API server answers.
//!
//! The local control plane has no network plugin, so nothing enforces NetworkPolicies
//! here: their test checks the objects exactly, and that tenants cannot change them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Event, LimitRange, Namespace, Node, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use kube::core::Status;
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use offpeak::desired::tenancy;
use offpeak::names::TENANT;
use offpeak_api::{
    CapacityLease, CapacityPool, LeasePhase, PeakReservation, RateCard, Tenant, UsageBill,
};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

type TestResult = anyhow::Result<()>;

/// The shared control plane with the operator running beside it.
async fn operator() -> anyhow::Result<&'static ControlPlane> {
    static STARTED: OnceCell<()> = OnceCell::const_new();
    let plane = ControlPlane::shared().await?;
    STARTED
        .get_or_try_init(|| async {
            offpeak::local::start(plane, offpeak::local::settings(Duration::from_secs(5)))
                .await
                .map(|_| ())
        })
        .await?;
    Ok(plane)
}

/// RFC 7386 merge: objects merge, anything else replaces.
fn merge(into: &mut Value, more: Value) {
    match (into, more) {
        (Value::Object(into), Value::Object(more)) => {
            for (k, v) in more {
                merge(into.entry(k).or_insert(Value::Null), v);
            }
        }
        (into, more) => *into = more,
    }
}

/// A pod named `name`: one plain container, with `spec` merged in.
fn pod(name: &str, spec: Value) -> Pod {
    let mut body = json!({"containers": [{"name": "main", "image": "registry.example/app:1"}]});
    merge(&mut body, spec);
    from_json(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}))
}

/// A pod whose one container has `security` as its securityContext.
fn pod_with_container(name: &str, container: Value) -> Pod {
    let mut c = json!({"name": "main", "image": "registry.example/app:1"});
    merge(&mut c, container);
    pod(name, json!({"containers": [c]}))
}

/// The message of a refused create, or an error saying it was not refused.
async fn refusal<K>(api: &Api<K>, object: &K) -> anyhow::Result<Status>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Err(kube::Error::Api(status)) => Ok(*status),
        Err(other) => Err(other.into()),
        Ok(created) => {
            let name = created.name_any();
            api.delete(&name, &DeleteParams::default()).await?;
            anyhow::bail!("{name} was admitted")
        }
    }
}

/// Waits until creating `object` is refused with a message containing `expected` (an
/// admission policy is loaded by the API server moments after it is created), and returns
/// the whole message. Fails if it is refused otherwise, or still admitted after WAIT.
async fn refused_with<K>(api: &Api<K>, object: &K, expected: &str) -> anyhow::Result<String>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually_value(&format!("a refusal saying {expected:?}"), || async {
        match refusal(api, object).await {
            Ok(status) if status.message.contains(expected) => {
                anyhow::ensure!(status.code == 403, "refused with {status:?}");
                Ok(Some(status.message))
            }
            Ok(status) => anyhow::bail!("refused, but with {:?}", status.message),
            Err(e) if e.to_string().ends_with("was admitted") => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
}

/// A tenant with `namespaces`, used by `<name>-user`, with more of its spec merged in; waits
/// until the user may create leases in the first namespace.
async fn tenant_with(
    plane: &ControlPlane,
    name: &str,
    namespaces: &[&str],
    more: Value,
) -> anyhow::Result<Client> {
    let admin = plane.client().await?;
    let mut spec = json!({
        "displayName": format!("Tenant {name}"),
        "namespaces": namespaces,
        "users": [format!("{name}-user")],
        "allowedPools": ["iso-none"],
    });
    merge(&mut spec, more);
    let tenant: Tenant = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name}, "spec": spec,
    }));
    Api::<Tenant>::all(admin)
        .create(&PostParams::default(), &tenant)
        .await?;
    let user = plane.user_client(&format!("{name}-user"), &[]).await?;
    for namespace in namespaces {
        let secrets: Api<Secret> = Api::namespaced(user.clone(), namespace);
        eventually(&format!("{name}-user to work in {namespace}"), || async {
            Ok(secrets.list(&ListParams::default()).await.is_ok())
        })
        .await?;
    }
    Ok(user)
}

fn is_forbidden<T>(result: &kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

/// Every verb on `resource` (named `name`) through `api`: the ones not refused with 403.
async fn not_forbidden(api: &Api<DynamicObject>, ar: &ApiResource, name: &str) -> Vec<String> {
    let mut open = Vec::new();
    let mut object = DynamicObject::new(name, ar);
    object.data = json!({});
    let checks: Vec<(&str, bool)> = vec![
        ("get", is_forbidden(&api.get(name).await)),
        (
            "list",
            is_forbidden(&api.list(&ListParams::default()).await),
        ),
        (
            "watch",
            match api.watch(&WatchParams::default(), "0").await {
                Err(kube::Error::Api(s)) => s.code == 403,
                Err(_) => false,
                Ok(stream) => {
                    use futures::StreamExt;
                    let mut stream = Box::pin(stream);
                    matches!(
                        tokio::time::timeout(Duration::from_secs(5), stream.next()).await,
                        Ok(Some(Err(kube::Error::Api(s)))) if s.code == 403
                    )
                }
            },
        ),
        (
            "create",
            is_forbidden(&api.create(&PostParams::default(), &object).await),
        ),
        (
            "update",
            is_forbidden(&api.replace(name, &PostParams::default(), &object).await),
        ),
        (
            "patch",
            is_forbidden(
                &api.patch(name, &PatchParams::default(), &Patch::Merge(json!({})))
                    .await,
            ),
        ),
        (
            "delete",
            is_forbidden(&api.delete(name, &DeleteParams::default()).await),
        ),
        (
            "deletecollection",
            is_forbidden(
                &api.delete_collection(&DeleteParams::default(), &ListParams::default())
                    .await,
            ),
        ),
    ];
    for (verb, forbidden) in checks {
        if !forbidden {
            open.push(format!("{verb} {}", ar.plural));
        }
    }
    open
}

#[tokio::test]
async fn a_tenant_reaches_nothing_outside_its_own_namespace() -> TestResult {
    let plane = operator().await?;
    let a = tenant_with(plane, "iso-rbac-a", &["iso-rbac-a"], json!({})).await?;
    let _b = tenant_with(plane, "iso-rbac-b", &["iso-rbac-b"], json!({})).await?;
    let admin = plane.client().await?;
    // Something of B's to reach for.
    let secret: Secret =
        from_json(json!({"metadata": {"name": "b-secret"}, "stringData": {"k": "v"}}));
    Api::<Secret>::namespaced(admin.clone(), "iso-rbac-b")
        .create(&PostParams::default(), &secret)
        .await?;

    // The same client works in A's own namespace: the refusals below are RBAC's.
    Api::<Secret>::namespaced(a.clone(), "iso-rbac-a")
        .list(&ListParams::default())
        .await?;

    let mut open = Vec::new();
    for ar in [
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<CapacityLease>(&()),
        ApiResource::erase::<UsageBill>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<Event>(&()),
        ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&()),
        ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    ] {
        let api = Api::<DynamicObject>::namespaced_with(a.clone(), "iso-rbac-b", &ar);
        open.extend(not_forbidden(&api, &ar, "b-secret").await);
    }
    // In its own namespace: no quota, limit range, network policy or RBAC of its own.
    for ar in [
        ApiResource::erase::<ResourceQuota>(&()),
        ApiResource::erase::<LimitRange>(&()),
    ] {
        let api = Api::<DynamicObject>::namespaced_with(a.clone(), "iso-rbac-a", &ar);
        let verbs = not_forbidden(&api, &ar, tenancy::OBJECT_QUOTA).await;
        // Reading them is allowed (the tenant sees its limits), changing them is not.
        let expected: Vec<String> = ["get", "list", "watch"]
            .iter()
            .map(|v| format!("{v} {}", ar.plural))
            .collect();
        if verbs != expected {
            open.push(format!("{}: {verbs:?}", ar.plural));
        }
    }
    for ar in [
        ApiResource::erase::<NetworkPolicy>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&()),
    ] {
        let api = Api::<DynamicObject>::namespaced_with(a.clone(), "iso-rbac-a", &ar);
        open.extend(not_forbidden(&api, &ar, tenancy::DEFAULT_DENY).await);
    }
    // Cluster-wide: nothing.
    for ar in [
        ApiResource::erase::<Node>(&()),
        ApiResource::erase::<CapacityPool>(&()),
        ApiResource::erase::<PeakReservation>(&()),
        ApiResource::erase::<RateCard>(&()),
        ApiResource::erase::<Tenant>(&()),
        ApiResource::erase::<Namespace>(&()),
        ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&()),
    ] {
        let api = Api::<DynamicObject>::all_with(a.clone(), &ar);
        open.extend(not_forbidden(&api, &ar, "iso-rbac-a").await);
    }
    assert!(open.is_empty(), "tenant A may: {open:?}");

    // Its own lease's status is the operator's.
    let leases: Api<CapacityLease> = Api::namespaced(a.clone(), "iso-rbac-a");
    leases
        .create(
            &PostParams::default(),
            &lease("mine", "iso-none", "Spot", "1", "1h"),
        )
        .await?;
    let forged = json!({"status": {"phase": "Active", "boundNodes": ["any"]}});
    let result = leases
        .patch_status("mine", &PatchParams::default(), &Patch::Merge(&forged))
        .await;
    assert!(is_forbidden(&result), "{result:?}");
    Ok(())
}

/// A namespace labelled as a tenant's by hand, with Pod Security switched off for it (as a
/// cluster-wide exemption would), and `user` bound to the tenant role there: only the
/// confinement policy stands between the tenant and the host.
async fn exempt_namespace(plane: &ControlPlane, namespace: &str, user: &str) -> anyhow::Result<()> {
    let admin = plane.client().await?;
    let ns: Namespace = from_json(json!({"metadata": {"name": namespace, "labels": {
        TENANT: "iso-exempt",
        "pod-security.kubernetes.io/enforce": "privileged",
    }}}));
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let binding: RoleBinding = from_json(json!({
        "metadata": {"name": "tenant", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": tenancy::TENANT_ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }));
    Api::<RoleBinding>::namespaced(admin, namespace)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// Each escape the hostile tenant tried, and the field the refusal must name: what the
/// confinement policy says, and what Pod Security says in a tenant namespace.
fn pod_escapes() -> Vec<(Pod, &'static str, Vec<&'static str>)> {
    vec![
        (
            pod(
                "host-everything",
                json!({"hostPID": true, "hostNetwork": true, "hostIPC": true,
                       "containers": [{"name": "main", "image": "registry.example/app:1",
                                       "securityContext": {"privileged": true}}]}),
            ),
            "spec.hostNetwork: tenant pods may not use the host's network namespace",
            vec![
                "host namespaces (hostNetwork=true, hostPID=true, hostIPC=true)",
                "privileged (container \"main\" must not set securityContext.privileged=true)",
            ],
        ),
        (
            pod("host-pid", json!({"hostPID": true})),
            "spec.hostPID: tenant pods may not use the host's process namespace",
            vec!["host namespaces (hostPID=true)"],
        ),
        (
            pod("host-ipc", json!({"hostIPC": true})),
            "spec.hostIPC: tenant pods may not use the host's IPC namespace",
            vec!["host namespaces (hostIPC=true)"],
        ),
        (
            pod_with_container(
                "privileged",
                json!({"securityContext": {"privileged": true}}),
            ),
            "spec.containers[*].securityContext.privileged: tenant containers (init and ephemeral ones too) may not be privileged",
            vec!["securityContext.privileged=true"],
        ),
        (
            pod(
                "privileged-init",
                json!({"initContainers": [{"name": "init", "image": "registry.example/app:1",
                                           "securityContext": {"privileged": true}}]}),
            ),
            "spec.containers[*].securityContext.privileged",
            vec!["container \"init\" must not set securityContext.privileged=true"],
        ),
        (
            pod_with_container(
                "sys-admin-root-unconfined",
                json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}, "runAsUser": 0,
                       "seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"}}}),
            ),
            "spec.containers[*].securityContext.capabilities.add: tenant containers may add only NET_BIND_SERVICE",
            vec![
                "unrestricted capabilities (container \"main\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)",
                "forbidden AppArmor profile (container \"main\" must not set AppArmor profile type to \"Unconfined\")",
                "runAsUser=0 (container \"main\" must not set runAsUser=0)",
                "seccompProfile (container \"main\" must not set securityContext.seccompProfile.type to \"Unconfined\")",
            ],
        ),
        (
            pod_with_container("root", json!({"securityContext": {"runAsUser": 0}})),
            "spec.securityContext.runAsUser: tenant pods and containers may not run as UID 0 (root)",
            vec!["runAsUser=0"],
        ),
        (
            pod(
                "root-pod",
                json!({"securityContext": {"runAsNonRoot": false}}),
            ),
            "spec.securityContext.runAsNonRoot: tenant pods must run as non-root",
            vec!["runAsNonRoot != true"],
        ),
        (
            pod_with_container(
                "seccomp-unconfined",
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            ),
            "spec.securityContext.seccompProfile.type: tenant pods must run with seccomp RuntimeDefault or Localhost",
            vec!["seccompProfile.type to \"Unconfined\""],
        ),
        (
            pod_with_container(
                "apparmor-unconfined",
                json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            ),
            "spec.securityContext.appArmorProfile.type: tenant pods and containers may not run AppArmor Unconfined",
            vec![
                "forbidden AppArmor profile (container \"main\" must not set AppArmor profile type to \"Unconfined\")",
            ],
        ),
        (
            pod(
                "kubelet-dir",
                json!({"volumes": [{"name": "kubelet", "hostPath": {"path": "/var/lib/kubelet"}}],
                       "containers": [{"name": "main", "image": "registry.example/app:1",
                                       "volumeMounts": [{"name": "kubelet", "mountPath": "/host"}]}]}),
            ),
            "spec.volumes[*].hostPath: tenant pods may not mount the host's files",
            vec![
                "restricted volume types (volume \"kubelet\" uses restricted volume type \"hostPath\")",
            ],
        ),
        (
            pod(
                "static-pods",
                json!({"volumes": [{"name": "manifests", "hostPath": {"path": "/etc/kubernetes/manifests", "type": "DirectoryOrCreate"}}],
                       "containers": [{"name": "main", "image": "registry.example/app:1",
                                       "volumeMounts": [{"name": "manifests", "mountPath": "/m", "readOnly": false}]}]}),
            ),
            "spec.volumes[*].hostPath: tenant pods may not mount the host's files",
            vec![
                "restricted volume types (volume \"manifests\" uses restricted volume type \"hostPath\")",
            ],
        ),
        (
            pod(
                "inline-nfs",
                json!({"volumes": [{"name": "nfs-data", "nfs": {"server": "10.0.0.9", "path": "/exports"}}]}),
            ),
            "spec.volumes[nfs-data]: tenant pods may use only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret volumes",
            vec![
                "restricted volume types (volume \"nfs-data\" uses restricted volume type \"nfs\")",
            ],
        ),
        (
            pod_with_container(
                "host-port",
                json!({"ports": [{"containerPort": 8080, "hostPort": 8080}]}),
            ),
            "spec.containers[*].ports[*].hostPort: tenant containers may not open ports on the host",
            vec!["hostPort (container \"main\" uses hostPort 8080)"],
        ),
        (
            pod_with_container(
                "escalation",
                json!({"securityContext": {"allowPrivilegeEscalation": true}}),
            ),
            "spec.containers[*].securityContext.allowPrivilegeEscalation: tenant containers must set it to false",
            vec!["allowPrivilegeEscalation != false"],
        ),
        (
            pod("sandbox", json!({"runtimeClassName": "iso-sandbox"})),
            "spec.runtimeClassName: tenant pods run in the node's default runtime",
            vec![],
        ),
    ]
}

/// The hostile tenant's affinity: required anti-affinity with every pod of every namespace
/// over a cluster-wide topology key.
fn everyone_repelled() -> Pod {
    pod(
        "repel-everyone",
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {}, "namespaceSelector": {}, "topologyKey": "kubernetes.io/os"}
        ]}}}),
    )
}

const AFFINITY_REFUSED: &str = "spec.affinity: tenant pods' podAffinity and podAntiAffinity terms may select pods of their own namespace only";

#[tokio::test]
async fn pod_escapes_are_refused_naming_the_field_even_without_pod_security() -> TestResult {
    let plane = operator().await?;
    let user = tenant_with(plane, "iso-pods", &["iso-pods"], json!({})).await?;
    exempt_namespace(plane, "iso-pods-exempt", "iso-pods-user").await?;
    // A sandbox runtime class exists, and still is not the tenant's to name.
    let sandbox: k8s_openapi::api::node::v1::RuntimeClass =
        from_json(json!({"metadata": {"name": "iso-sandbox"}, "handler": "runsc"}));
    Api::<k8s_openapi::api::node::v1::RuntimeClass>::all(plane.client().await?)
        .create(&PostParams::default(), &sandbox)
        .await?;
    let exempt: Api<Pod> = Api::namespaced(user.clone(), "iso-pods-exempt");
    // A pod that asks for nothing is admitted there: the policy refuses escapes, not pods
    // (the webhook gave it the restricted settings it left unset).
    let plain = eventually_value("a plain pod admitted with restricted settings", || async {
        match exempt
            .create(&PostParams::default(), &pod("plain", json!({})))
            .await
        {
            Ok(created) => Ok(Some(created)),
            // The webhook or the policy is not loaded yet.
            Err(kube::Error::Api(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    let spec = plain.spec.clone().unwrap_or_default();
    assert_eq!(
        spec.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    // It pulls its image every time: no cached image of another tenant without credentials.
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("Always")
    );

    let mut escapes = pod_escapes();
    escapes.push((everyone_repelled(), AFFINITY_REFUSED, vec![]));
    let tenant_pods: Api<Pod> = Api::namespaced(user, "iso-pods");
    let mut misses = Vec::new();
    for (pod, policy_says, pod_security_says) in escapes {
        let name = pod.name_any();
        // Pod Security off: the confinement policy refuses it, naming the field.
        let message = refused_with(&exempt, &pod, policy_says)
            .await
            .map_err(|e| e.context(format!("{name} in the exempt namespace")))?;
        assert!(
            message.contains("ValidatingAdmissionPolicy 'offpeak-tenant-confinement'"),
            "{name}: {message}"
        );
        // In the tenant's namespace Pod Security restricted refuses it first, naming the
        // fields too (the affinity and runtime class are the policy's alone).
        let expected = if pod_security_says.is_empty() {
            policy_says
        } else {
            "violates PodSecurity \"restricted:v1.34\""
        };
        let message = refused_with(&tenant_pods, &pod, expected)
            .await
            .map_err(|e| e.context(format!("{name} in the tenant namespace")))?;
        // What a person sees, for `--nocapture` readers judging the messages.
        eprintln!("{name}:\n    {message}");
        for part in pod_security_says {
            if !message.contains(part) {
                misses.push(format!("{name}: {part:?} not in {message}"));
            }
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
    Ok(())
}

#[tokio::test]
async fn cross_namespace_affinity_is_refused_by_the_quota_alone_too() -> TestResult {
    let plane = operator().await?;
    let admin = plane.client().await?;
    // An internal namespace with only the quota a tenant namespace gets: no policy there.
    plane.create_namespace("iso-affinity-quota").await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(admin.clone(), "iso-affinity-quota");
    quotas
        .create(
            &PostParams::default(),
            &tenancy::affinity_quota("iso-affinity-quota", "nobody"),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(admin, "iso-affinity-quota");
    let message = refused_with(
        &pods,
        &everyone_repelled(),
        "exceeded quota: offpeak-cross-namespace-affinity, requested: pods=1, used: pods=0, limited: pods=0",
    )
    .await?;
    assert!(message.contains("forbidden"), "{message}");
    // A pod with no cross-namespace affinity is not counted.
    pods.create(&PostParams::default(), &pod("plain", json!({})))
        .await?;
    Ok(())
}

#[tokio::test]
async fn service_escapes_are_refused_naming_the_field() -> TestResult {
    let plane = operator().await?;
    let user = tenant_with(plane, "iso-svc", &["iso-svc"], json!({})).await?;
    let services: Api<Service> = Api::namespaced(user, "iso-svc");
    let service = |name: &str, spec: Value| -> Service {
        let mut body = json!({"ports": [{"port": 80}], "selector": {"app": "web"}});
        merge(&mut body, spec);
        from_json(json!({"metadata": {"name": name}, "spec": body}))
    };
    for (svc, says) in [
        (
            service("external-ips", json!({"externalIPs": ["203.0.113.10"]})),
            "spec.externalIPs: tenant Services may not claim external IPs",
        ),
        (
            service("node-port", json!({"type": "NodePort"})),
            "spec.type: tenant Services may not be NodePort",
        ),
        (
            service("load-balancer", json!({"type": "LoadBalancer"})),
            "spec.type: tenant Services may not be LoadBalancer",
        ),
    ] {
        let message = refused_with(&services, &svc, says).await?;
        assert!(
            message.contains("ValidatingAdmissionPolicy 'offpeak-tenant-services'"),
            "{message}"
        );
    }
    // A ClusterIP Service is fine.
    services
        .create(&PostParams::default(), &service("web", json!({})))
        .await?;

    // The objects quota holds node ports and load balancers at 0 on its own.
    let admin = plane.client().await?;
    plane.create_namespace("iso-svc-quota").await?;
    let tenant = Api::<Tenant>::all(admin.clone()).get("iso-svc").await?;
    Api::<ResourceQuota>::namespaced(admin.clone(), "iso-svc-quota")
        .create(
            &PostParams::default(),
            &tenancy::object_quota("iso-svc-quota", &tenant),
        )
        .await?;
    let internal: Api<Service> = Api::namespaced(admin, "iso-svc-quota");
    refused_with(
        &internal,
        &service("node-port", json!({"type": "NodePort"})),
        "exceeded quota: offpeak-objects, requested: services.nodeports=1, used: services.nodeports=0, limited: services.nodeports=0",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_quota_refuses_the_next_secret_past_its_count_and_ops_can_raise_it() -> TestResult {
    let plane = operator().await?;
    let user = tenant_with(
        plane,
        "iso-quota",
        &["iso-quota"],
        json!({"quota": {"secrets": 3}}),
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(user, "iso-quota");
    // Large secrets: 512 KiB each.
    let big = |name: &str| -> Secret {
        from_json(
            json!({"metadata": {"name": name}, "stringData": {"blob": "x".repeat(512 << 10)}}),
        )
    };
    for i in 0..3 {
        secrets
            .create(&PostParams::default(), &big(&format!("blob-{i}")))
            .await?;
    }
    let status = refusal(&secrets, &big("blob-3")).await?;
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains(
            "exceeded quota: offpeak-objects, requested: count/secrets=1, used: count/secrets=3, limited: count/secrets=3"
        ),
        "{}",
        status.message
    );
    // Ops raise it in the Tenant; the next one fits.
    let admin = plane.client().await?;
    Api::<Tenant>::all(admin)
        .patch(
            "iso-quota",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quota": {"secrets": 4}}})),
        )
        .await?;
    eventually("the raised quota to admit a fourth secret", || async {
        match secrets.create(&PostParams::default(), &big("blob-3")).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.message.contains("exceeded quota") => Ok(false),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_tenant_namespace_has_exactly_the_objects_that_isolate_it() -> TestResult {
    let plane = operator().await?;
    let user = tenant_with(plane, "iso-objects", &["iso-objects"], json!({})).await?;
    let admin = plane.client().await?;
    let labels = Api::<Namespace>::all(admin.clone())
        .get("iso-objects")
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    for mode in ["enforce", "warn", "audit"] {
        assert_eq!(
            labels
                .get(&format!("pod-security.kubernetes.io/{mode}"))
                .map(String::as_str),
            Some("restricted"),
            "{labels:?}"
        );
        assert_eq!(
            labels
                .get(&format!("pod-security.kubernetes.io/{mode}-version"))
                .map(String::as_str),
            Some("v1.34"),
            "{labels:?}"
        );
    }

    // The NetworkPolicies, exactly (no network plugin enforces them here).
    let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), "iso-objects")
        .list(&ListParams::default())
        .await?;
    let specs: BTreeMap<String, Value> = policies
        .items
        .iter()
        .map(|p| {
            (
                p.name_any(),
                serde_json::to_value(&p.spec).unwrap_or_default(),
            )
        })
        .collect();
    let tenant_peer = json!([{"namespaceSelector": {"matchLabels": {TENANT: "iso-objects"}}}]);
    let expected = BTreeMap::from([
        (
            "offpeak-default-deny".to_string(),
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
        (
            "offpeak-allow-dns".to_string(),
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            }]}),
        ),
        (
            "offpeak-allow-tenant".to_string(),
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": tenant_peer}], "egress": [{"to": tenant_peer}]}),
        ),
    ]);
    assert_eq!(specs, expected);
    // Nothing reaches an address block: not the metadata address 169.254.169.254, not the
    // internet; no peer selects the operator's or the company's namespaces (they carry no
    // tenant label, and tenants cannot label namespaces).
    assert!(!serde_json::to_string(&specs)?.contains("ipBlock"));

    // The quotas.
    let quotas = Api::<ResourceQuota>::namespaced(admin.clone(), "iso-objects");
    let hard = quotas
        .get(tenancy::OBJECT_QUOTA)
        .await?
        .spec
        .and_then(|s| s.hard)
        .unwrap_or_default();
    let hard: BTreeMap<&str, &str> = hard
        .iter()
        .map(|(k, v)| (k.as_str(), v.0.as_str()))
        .collect();
    assert_eq!(
        hard,
        BTreeMap::from([
            ("count/capacityleases.offpeak.dev", "50"),
            ("count/configmaps", "50"),
            ("count/cronjobs.batch", "20"),
            ("count/deployments.apps", "50"),
            ("count/jobs.batch", "200"),
            ("count/persistentvolumeclaims", "20"),
            ("count/replicasets.apps", "600"),
            ("count/secrets", "50"),
            ("count/serviceaccounts", "20"),
            ("count/services", "20"),
            ("count/statefulsets.apps", "20"),
            ("limits.ephemeral-storage", "200Gi"),
            ("requests.ephemeral-storage", "200Gi"),
            ("requests.storage", "500Gi"),
            ("services.loadbalancers", "0"),
            ("services.nodeports", "0"),
        ])
    );
    let affinity = quotas
        .get(tenancy::AFFINITY_QUOTA)
        .await?
        .spec
        .unwrap_or_default();
    assert_eq!(
        serde_json::to_value(&affinity)?,
        json!({"hard": {"pods": "0"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"}]}})
    );
    // The lease quota is still there, following leases (none: nothing may run).
    assert_eq!(
        quota_cpu(&admin, "iso-objects").await?.as_deref(),
        Some("0")
    );

    // The tenant cannot change any of it.
    let mine: Api<NetworkPolicy> = Api::namespaced(user.clone(), "iso-objects");
    let result = mine
        .delete(tenancy::DEFAULT_DENY, &DeleteParams::default())
        .await;
    assert!(is_forbidden(&result), "{result:?}");
    let result = Api::<ResourceQuota>::namespaced(user, "iso-objects")
        .patch(
            tenancy::OBJECT_QUOTA,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"count/secrets": "1000"}}})),
        )
        .await;
    assert!(is_forbidden(&result), "{result:?}");
    Ok(())
}

fn condition(tenant: &Tenant, type_: &str) -> Option<(String, String, String)> {
    tenant.status.as_ref().and_then(|s| {
        s.conditions.iter().find(|c| c.type_ == type_).map(|c| {
            (
                format!("{:?}", c.status),
                c.reason.clone(),
                c.message.clone(),
            )
        })
    })
}

/// What Offpeak put in the namespace that is still there.
async fn tenancy_left(admin: &Client, namespace: &str) -> anyhow::Result<Vec<String>> {
    let mut left = Vec::new();
    let ns = Api::<Namespace>::all(admin.clone()).get(namespace).await?;
    for key in ns.labels().keys() {
        if key == TENANT || key.starts_with("pod-security.kubernetes.io/") {
            left.push(format!("label {key}"));
        }
    }
    if Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .get_opt(tenancy::TENANT_BINDING)
        .await?
        .is_some()
    {
        left.push("RoleBinding".into());
    }
    for quota in Api::<ResourceQuota>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await?
    {
        left.push(format!("ResourceQuota {}", quota.name_any()));
    }
    for range in Api::<LimitRange>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await?
    {
        left.push(format!("LimitRange {}", range.name_any()));
    }
    for policy in Api::<NetworkPolicy>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await?
    {
        left.push(format!("NetworkPolicy {}", policy.name_any()));
    }
    Ok(left)
}

#[tokio::test]
async fn a_namespace_removed_from_its_tenant_is_released_and_access_revoked() -> TestResult {
    let plane = operator().await?;
    let user = tenant_with(
        plane,
        "iso-release",
        &["iso-release-1", "iso-release-2"],
        json!({}),
    )
    .await?;
    let admin = plane.client().await?;
    let secrets: Api<Secret> = Api::namespaced(user.clone(), "iso-release-2");
    secrets.list(&ListParams::default()).await?;
    assert_eq!(tenancy_left(&admin, "iso-release-2").await?.len(), 15);

    Api::<Tenant>::all(admin.clone())
        .patch(
            "iso-release",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"namespaces": ["iso-release-1"]}})),
        )
        .await?;
    // The tenant's certificate is refused there from now on...
    eventually("access to iso-release-2 to be revoked", || async {
        Ok(is_forbidden(&secrets.list(&ListParams::default()).await))
    })
    .await?;
    // ... and everything Offpeak put there goes; the namespace itself stays.
    eventually("iso-release-2 to be released", || async {
        Ok(tenancy_left(&admin, "iso-release-2").await?.is_empty())
    })
    .await?;
    let released = Api::<Namespace>::all(admin.clone())
        .get("iso-release-2")
        .await?;
    assert_eq!(
        released
            .annotations()
            .get(tenancy::RELEASED_FROM)
            .map(String::as_str),
        Some("iso-release")
    );
    // The namespace it keeps is untouched.
    Api::<Secret>::namespaced(user, "iso-release-1")
        .list(&ListParams::default())
        .await?;
    assert_eq!(tenancy_left(&admin, "iso-release-1").await?.len(), 15);

    // Deleting the tenant releases the rest, then lets the Tenant go.
    Api::<Tenant>::all(admin.clone())
        .delete("iso-release", &DeleteParams::default())
        .await?;
    eventually("the tenant to be gone", || async {
        Ok(Api::<Tenant>::all(admin.clone())
            .get_opt("iso-release")
            .await?
            .is_none())
    })
    .await?;
    assert_eq!(
        tenancy_left(&admin, "iso-release-1").await?,
        Vec::<String>::new()
    );
    Ok(())
}

#[tokio::test]
async fn a_namespace_whose_lease_holds_nodes_is_released_once_the_lease_ended() -> TestResult {
    let plane = operator().await?;
    pool_with_nodes(plane, "iso-held", 1).await?;
    let user = tenant_with(
        plane,
        "iso-held",
        &["iso-held-keep", "iso-held-go"],
        json!({"allowedPools": ["iso-held"], "creditLimit": {"amount": "1000", "currency": "USD"}}),
    )
    .await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "iso-held-go");
    leases
        .create(
            &PostParams::default(),
            &lease("held", "iso-held", "Spot", "16", "1h"),
        )
        .await?;
    wait_phase(&leases, "held", LeasePhase::Active).await?;
    let admin = plane.client().await?;
    let tenants: Api<Tenant> = Api::all(admin.clone());
    tenants
        .patch(
            "iso-held",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"namespaces": ["iso-held-keep"]}})),
        )
        .await?;
    // Access goes at once; the namespace says it waits for its lease.
    eventually("access to iso-held-go to be revoked", || async {
        Ok(is_forbidden(&leases.list(&ListParams::default()).await))
    })
    .await?;
    let held = Api::<CapacityLease>::namespaced(admin.clone(), "iso-held-go");
    let still_bound = held
        .get("held")
        .await?
        .status
        .is_some_and(|s| !s.bound_nodes.is_empty());
    // A Spot lease ends only after its notice (120 s here): its node is still bound.
    assert!(still_bound, "the lease gave its node back at once");
    let (status, reason, message) = eventually_value("the Releasing condition", || async {
        let tenant = tenants.get("iso-held").await?;
        Ok(condition(&tenant, "Releasing").filter(|(s, _, _)| s == "True"))
    })
    .await?;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "WaitingForLeases")
    );
    assert!(
        message.contains(
            "namespace iso-held-go is released once its leases ended (held still hold nodes)"
        ),
        "{message}"
    );
    let left = tenancy_left(&admin, "iso-held-go").await?;
    assert!(left.contains(&format!("label {TENANT}")), "{left:?}");
    assert!(!left.contains(&"RoleBinding".to_string()), "{left:?}");
    // The lease ends (here: deleted; its nodes go back first), then the namespace goes.
    held.delete("held", &DeleteParams::default()).await?;
    eventually("iso-held-go to be released", || async {
        Ok(tenancy_left(&admin, "iso-held-go").await?.is_empty())
    })
    .await?;
    let tenant = tenants.get("iso-held").await?;
    assert_eq!(
        condition(&tenant, "Releasing").map(|(s, r, _)| (s, r)),
        Some(("False".to_string(), "NothingToRelease".to_string()))
    );
    Ok(())
}

#[tokio::test]
async fn an_existing_namespace_is_refused_never_adopted() -> TestResult {
    let plane = operator().await?;
    plane.create_namespace("iso-internal-web").await?;
    let admin = plane.client().await?;
    let tenant: Tenant = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "iso-adopt"},
        "spec": {"displayName": "Adopter", "namespaces": ["iso-internal-web", "iso-adopt"],
                 "users": ["iso-adopt-user"], "allowedPools": ["iso-none"]},
    }));
    let tenants: Api<Tenant> = Api::all(admin.clone());
    tenants.create(&PostParams::default(), &tenant).await?;
    let (status, _, message) = eventually_value("the NamespaceConflict condition", || async {
        Ok(condition(&tenants.get("iso-adopt").await?, "Ready")
            .filter(|(_, r, _)| r == "NamespaceConflict"))
    })
    .await?;
    assert_eq!(status, "False");
    assert_eq!(
        message,
        "namespace iso-internal-web already exists and is not Offpeak's; a tenant is never given an \
         existing namespace: name another, or delete iso-internal-web first"
    );
    // Its own new namespace is made; the internal one is left exactly as it was.
    let user = plane.user_client("iso-adopt-user", &[]).await?;
    eventually("the tenant's own namespace", || async {
        Ok(Api::<Secret>::namespaced(user.clone(), "iso-adopt")
            .list(&ListParams::default())
            .await
            .is_ok())
    })
    .await?;
    assert_eq!(
        tenancy_left(&admin, "iso-internal-web").await?,
        Vec::<String>::new()
    );
    let result = Api::<Secret>::namespaced(user, "iso-internal-web")
        .list(&ListParams::default())
        .await;
    assert!(is_forbidden(&result), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn system_users_and_a_moved_bid_are_refused_by_the_schema() -> TestResult {
    let plane = operator().await?;
    let admin = plane.client().await?;
    let tenant: Tenant = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "iso-system"},
        "spec": {"displayName": "System", "namespaces": ["iso-system"],
                 "users": ["system:serviceaccount:kube-system:default"], "allowedPools": ["iso-none"]},
    }));
    let status = refusal(&Api::<Tenant>::all(admin.clone()), &tenant).await?;
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.users: Invalid value")
            && status
                .message
                .contains("spec.users must not name a system: user"),
        "{}",
        status.message
    );

    // An admitted lease keeps its bid: neither lowered nor raised.
    let user = tenant_with(plane, "iso-bid", &["iso-bid"], json!({})).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "iso-bid");
    leases
        .create(
            &PostParams::default(),
            &lease("bid", "iso-none", "Spot", "1", "1h"),
        )
        .await?;
    Api::<CapacityLease>::namespaced(admin, "iso-bid")
        .patch_status(
            "bid",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"admittedAt": "2026-11-22T22:00:00Z"}})),
        )
        .await?;
    for bid in ["0.01", "9.00"] {
        let result = leases
            .patch(
                "bid",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"maxPricePerHour": bid}})),
            )
            .await;
        match result {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{s:?}");
                assert!(
                    s.message.contains("spec.maxPricePerHour: Invalid value")
                        && s.message.contains(
                            "spec.maxPricePerHour cannot change once the lease is admitted"
                        ),
                    "{}",
                    s.message
                );
            }
            other => panic!("bid {bid}: {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn internal_pods_that_tolerate_everything_never_land_on_a_lent_node() -> TestResult {
    let plane = operator().await?;
    // Internal pods waiting for a lent node must not take it back during the test.
    let nodes = pool_with(
        plane,
        "iso-lent",
        2,
        json!({"internalPressure": {"unschedulableFor": "1h", "emergencyAfter": "24h"}}),
        json!({}),
    )
    .await?;
    let user = tenant_with(
        plane,
        "iso-lent",
        &["iso-lent"],
        json!({"allowedPools": ["iso-lent"], "creditLimit": {"amount": "1000", "currency": "USD"}}),
    )
    .await?;
    let leases: Api<CapacityLease> = Api::namespaced(user, "iso-lent");
    leases
        .create(
            &PostParams::default(),
            &lease("one", "iso-lent", "Spot", "16", "1h"),
        )
        .await?;
    let active = wait_phase(&leases, "one", LeasePhase::Active).await?;
    let lent = active
        .status
        .as_ref()
        .and_then(|s| s.bound_nodes.first())
        .map(|n| n.to_string())
        .unwrap_or_default();
    let free = nodes
        .iter()
        .find(|n| **n != lent)
        .cloned()
        .unwrap_or_default();

    let admin = plane.client().await?;
    plane.create_namespace("iso-internal").await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "iso-internal");
    let wildcard = json!([{"operator": "Exists"}]);
    // Asked onto the lent node by name, tolerating everything: it stays Pending.
    let onto_lent = pod(
        "onto-lent",
        json!({"tolerations": wildcard, "nodeSelector": {"kubernetes.io/hostname": lent}}),
    );
    let created = eventually_value("the internal pod steered at creation", || async {
        let created = pods.create(&PostParams::default(), &onto_lent).await?;
        if steered(&created) {
            return Ok(Some(created));
        }
        // The webhook was not loaded yet.
        pods.delete("onto-lent", &DeleteParams::default()).await?;
        eventually("the unsteered probe to go", || async {
            Ok(pods.get_opt("onto-lent").await?.is_none())
        })
        .await?;
        Ok(None)
    })
    .await?;
    assert!(steered(&created));
    eventually("the scheduler to find no node for it", || async {
        let p = pods.get("onto-lent").await?;
        Ok(p.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
        }))
    })
    .await?;
    assert_eq!(
        pods.get("onto-lent").await?.spec.and_then(|s| s.node_name),
        None
    );
    // The lease still holds the node: the pod was kept off a lent node, not let onto a
    // returned one.
    assert_eq!(
        leases.get("one").await?.status.and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );
    // Pointed at the pool, the same pod runs on the node that is not lent.
    let in_pool = pod(
        "in-pool",
        json!({"tolerations": wildcard, "nodeSelector": {"offpeak.dev/test-pool": "iso-lent"}}),
    );
    pods.create(&PostParams::default(), &in_pool).await?;
    let node = eventually_value("the pool pod to be placed", || async {
        Ok(pods.get("in-pool").await?.spec.and_then(|s| s.node_name))
    })
    .await?;
    assert_eq!(node, free);

    // A toleration added later to a pod admitted without one is refused by the policy
    // (pods' node affinity cannot change after creation, so it could not be steered).
    pods.create(
        &PostParams::default(),
        &pod(
            "late",
            json!({"nodeSelector": {"kubernetes.io/hostname": lent}}),
        ),
    )
    .await?;
    let result = pods
        .patch(
            "late",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"tolerations": [{"key": TENANT, "operator": "Exists"}]}}),
            ),
        )
        .await;
    match result {
        Err(kube::Error::Api(s)) => assert!(
            s.message.contains(
                "spec.affinity.nodeAffinity: a pod outside tenant namespaces that tolerates the 'offpeak.dev/tenant' taint must require node affinity 'offpeak.dev/tenant' DoesNotExist"
            ),
            "{}",
            s.message
        ),
        other => panic!("the toleration was added: {other:?}"),
    }
    Ok(())
}

/// Whether the pod requires, in every node selector term, a node without the tenant label.
fn steered(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|r| {
            !r.node_selector_terms.is_empty()
                && r.node_selector_terms.iter().all(|t| {
                    t.match_expressions
                        .iter()
                        .flatten()
                        .any(|e| e.key == TENANT && e.operator == "DoesNotExist")
                })
        })
}
