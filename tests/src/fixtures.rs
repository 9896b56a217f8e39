//! Fixtures of the integration tests: pools with their nodes and rate card, tenants with
//! their users, leases, and ways to wait for what the operator does with them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ResourceQuota, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use offpeak_api::{CapacityLease, CapacityPool, LeasePhase, RateCard, Tenant};
use offpeak_testenv::{ControlPlane, NodeSpec};
use serde_json::json;

/// How long a test waits for the operator at most.
pub const WAIT: Duration = Duration::from_secs(60);

/// The operator's `/metrics` text.
pub async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: offpeak\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

pub fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a well-formed object")
}

/// A pool named `name` over `count` nodes `<name>-<i>` (16 cores, 64 GiB), lendable at
/// once, with a rate card: spot 0.04 and reserved 0.06 per core-hour, memory free.
pub async fn pool_with_nodes(
    plane: &ControlPlane,
    name: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    pool_with(plane, name, count, json!({}), json!({})).await
}

/// The same, with more of the pool's spec (`pool_spec`, such as a notice period) and of the
/// rate card's (`card_spec`, such as a spot price rule).
pub async fn pool_with(
    plane: &ControlPlane,
    name: &str,
    count: usize,
    pool_spec: serde_json::Value,
    card_spec: serde_json::Value,
) -> anyhow::Result<Vec<String>> {
    let nodes = plane
        .create_nodes(&NodeSpec {
            name_prefix: name.into(),
            count,
            labels: BTreeMap::from([("offpeak.dev/test-pool".to_string(), name.to_string())]),
            ..Default::default()
        })
        .await?;
    let client = plane.client().await?;
    let mut spec = json!({"nodeSelector": {"offpeak.dev/test-pool": name}, "idleAfter": "0s"});
    merge(&mut spec, pool_spec);
    let pool: CapacityPool = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool",
        "metadata": {"name": name},
        "spec": spec,
    }));
    Api::<CapacityPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await?;
    let mut card_body = json!({
        "currency": "USD", "precision": 4,
        "prices": {"spot": {"cpu": "0.04", "memory": "0"}, "reserved": {"cpu": "0.06", "memory": "0"}},
        "effectiveFrom": "2026-01-01T00:00:00Z",
        "pools": [name],
    });
    merge(&mut card_body, card_spec);
    let card: RateCard = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "RateCard",
        "metadata": {"name": name},
        "spec": card_body,
    }));
    Api::<RateCard>::all(client)
        .create(&PostParams::default(), &card)
        .await?;
    Ok(nodes)
}

fn merge(into: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(more)) = (into.as_object_mut(), more) {
        into.extend(more);
    }
}

/// A tenant owning namespace `name`, used by user `<name>-user`; waits until the operator
/// made the namespace ready for pods.
pub async fn tenant(plane: &ControlPlane, name: &str, pools: &[&str]) -> anyhow::Result<Client> {
    tenant_with(plane, name, pools, json!({})).await
}

/// [`tenant`] with the fields of `spec` set over the defaults (e.g. a bench that holds more
/// leases than the default quota of 50 and the default credit limit allow:
/// `{"quota": {"capacityLeases": 1000}, "creditLimit": {...}}`).
pub async fn tenant_with(
    plane: &ControlPlane,
    name: &str,
    pools: &[&str],
    spec: serde_json::Value,
) -> anyhow::Result<Client> {
    let client = plane.client().await?;
    let mut body = json!({
        "displayName": format!("Tenant {name}"),
        "namespaces": [name],
        "users": [format!("{name}-user")],
        "allowedPools": pools,
        "creditLimit": {"amount": "1000", "currency": "USD"},
    });
    if let (Some(body), Some(spec)) = (body.as_object_mut(), spec.as_object()) {
        body.extend(spec.clone());
    }
    let tenant: Tenant = from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": body,
    }));
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &tenant)
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client, name);
    eventually(
        &format!("namespace {name} and its default service account"),
        || async { Ok(accounts.get_opt("default").await?.is_some()) },
    )
    .await?;
    // And the tenant's people may work there (the operator binds them moments later).
    let user = plane.user_client(&format!("{name}-user"), &[]).await?;
    let reviews: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
        Api::all(user.clone());
    eventually(&format!("tenant {name}'s user may create leases"), || async {
        let review = from_json(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": name, "verb": "create", "group": "offpeak.dev", "resource": "capacityleases"}},
        }));
        let answer = reviews.create(&PostParams::default(), &review).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    })
    .await?;
    Ok(user)
}

pub fn lease(name: &str, pool: &str, class: &str, cpu: &str, duration: &str) -> CapacityLease {
    let mut spec =
        json!({"pool": pool, "class": class, "resources": {"cpu": cpu}, "duration": duration});
    if class == "Spot" {
        spec["maxPricePerHour"] = json!("4.50");
    }
    from_json(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease",
        "metadata": {"name": name}, "spec": spec,
    }))
}

/// Polls `check` until it holds, for at most [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    crate::eventually(what, WAIT, check).await.map(|_| ())
}

/// Polls `check` until it gives a value, for at most [`WAIT`], and returns it.
pub async fn eventually_value<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    crate::eventually_value_within(what, WAIT, check).await
}

/// Waits until the lease reaches `phase` and returns it.
pub async fn wait_phase(
    leases: &Api<CapacityLease>,
    name: &str,
    phase: LeasePhase,
) -> anyhow::Result<CapacityLease> {
    let reached = eventually(&format!("lease {name} to be {phase:?}"), || async {
        Ok(leases.get(name).await?.status.and_then(|s| s.phase) == Some(phase))
    })
    .await;
    if let Err(e) = reached {
        // Say why: the lease's conditions as last seen.
        let conditions: Vec<String> = leases
            .get(name)
            .await
            .ok()
            .and_then(|l| l.status)
            .map(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| format!("{} {:?} {}: {}", c.type_, c.status, c.reason, c.message))
            .collect();
        return Err(e.context(format!("lease {name}, last seen with {conditions:?}")));
    }
    Ok(leases.get(name).await?)
}

/// Waits until the lease is Pending for `reason` and returns it.
pub async fn wait_pending(
    leases: &Api<CapacityLease>,
    name: &str,
    reason: &str,
) -> anyhow::Result<CapacityLease> {
    eventually(&format!("lease {name} Pending for {reason}"), || async {
        let l = leases.get(name).await?;
        Ok(
            l.status.as_ref().and_then(|s| s.phase) == Some(LeasePhase::Pending)
                && admitted(&l).0 == reason,
        )
    })
    .await?;
    Ok(leases.get(name).await?)
}

pub fn admitted(lease: &CapacityLease) -> (String, String) {
    let condition = lease
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Admitted").cloned())
        .expect("an Admitted condition");
    (condition.reason, condition.message)
}

pub async fn quota_cpu(client: &Client, namespace: &str) -> anyhow::Result<Option<String>> {
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), namespace)
        .get_opt("offpeak-leases")
        .await?;
    Ok(quota.and_then(|q| q.spec?.hard?.get("requests.cpu").map(|q| q.0.clone())))
}

/// The Events about `object` in `namespace`, as (reason, message).
pub async fn events_of(
    client: &Client,
    namespace: &str,
    object: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), namespace);
    Ok(events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(object))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}
