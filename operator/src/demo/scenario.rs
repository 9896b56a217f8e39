//! What operations book and what tenants do, over the run: pools of two node classes and
//! GPUs (and system nodes that are never lent), a rate card whose spot price follows the
//! pool's utilisation, three tenants, a peak reservation that begins during the run, and
//! tenants renting as themselves.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use offpeak_api::{CapacityLease, CapacityPool, PeakReservation, RateCard, Tenant};
use offpeak_testenv::{ControlPlane, NodeSpec};
use serde_json::{Value, json};

use crate::names::FIELD_MANAGER;

fn object<T: serde::de::DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value).context("a demo object does not match its type")
}

/// The nodes: the general pool's standard and high-memory nodes, the GPU pool, and system
/// nodes in no pool.
pub async fn nodes(plane: &ControlPlane, general: usize, gpu: usize) -> anyhow::Result<()> {
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let highmem = general * 2 / 5;
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "general-std".into(),
            count: general - highmem,
            labels: labels(&[
                ("offpeak.dev/pool", "general"),
                ("node.offpeak.dev/class", "standard"),
            ]),
            ..Default::default()
        })
        .await?;
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "general-mem".into(),
            count: highmem,
            labels: labels(&[
                ("offpeak.dev/pool", "general"),
                ("node.offpeak.dev/class", "highmem"),
            ]),
            memory: "128Gi".into(),
            ..Default::default()
        })
        .await?;
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "gpu".into(),
            count: gpu,
            labels: labels(&[
                ("offpeak.dev/pool", "gpu"),
                ("node.offpeak.dev/class", "a100"),
            ]),
            cpu: "32".into(),
            memory: "256Gi".into(),
            gpus: Some("4".into()),
            ..Default::default()
        })
        .await?;
    plane
        .create_nodes(&NodeSpec {
            name_prefix: "system".into(),
            count: 3,
            labels: labels(&[("node.offpeak.dev/role", "system")]),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Pools, the rate card and the tenants.
pub async fn book(client: &Client) -> anyhow::Result<()> {
    let create = PostParams::default();
    let pools: Api<CapacityPool> = Api::all(client.clone());
    pools
        .create(&create, &object(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool", "metadata": {"name": "general"},
            "spec": {
                "nodeSelector": {"offpeak.dev/pool": "general"},
                "nodeClasses": [
                    {"name": "standard", "nodeSelector": {"node.offpeak.dev/class": "standard"}},
                    {"name": "highmem", "nodeSelector": {"node.offpeak.dev/class": "highmem"}},
                ],
                "headroom": {"nodes": 2}, "idleAfter": "10s", "noticePeriod": "30s",
                "reclaimAdvisory": "45s", "internalPressure": {"unschedulableFor": "10s", "emergencyAfter": "90s"},
            },
        }))?)
        .await?;
    pools
        .create(&create, &object(json!({
            "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityPool", "metadata": {"name": "gpu"},
            "spec": {"nodeSelector": {"offpeak.dev/pool": "gpu"}, "nodeClasses": [{"name": "a100", "nodeSelector": {"node.offpeak.dev/class": "a100"}}],
                     "idleAfter": "10s", "noticePeriod": "30s"},
        }))?)
        .await?;
    let card: RateCard = serde_yaml::from_str(include_str!("../../../examples/rate-card.yaml"))
        .context("examples/rate-card.yaml does not match its type")?;
    Api::<RateCard>::all(client.clone())
        .create(&create, &card)
        .await?;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let acme: Tenant = serde_yaml::from_str(include_str!("../../../examples/tenant.yaml"))
        .context("examples/tenant.yaml does not match its type")?;
    tenants.create(&create, &acme).await?;
    for (name, display, user) in [
        ("globex", "Globex Research", "bob"),
        ("initech", "Initech Batch", "carol"),
    ] {
        tenants
            .create(&create, &object(json!({
                "apiVersion": "offpeak.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
                "spec": {"displayName": display, "namespaces": [format!("tenant-{name}")], "users": [user],
                         "allowedPools": ["general", "gpu"], "creditLimit": {"amount": "2000.00", "currency": "USD"}},
            }))?)
            .await?;
    }
    Ok(())
}

/// Waits until every tenant is Ready: its namespaces made and isolated, its quotas counted
/// by the quota controller (which finds a CRD it was not told about, such as
/// CapacityLease's count, at its next discovery round, up to half a minute on a fresh
/// cluster), its people let in.
pub async fn tenants_ready(client: &Client, within: Duration) -> anyhow::Result<()> {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let list = tenants.list(&Default::default()).await?;
        let waiting: Vec<String> = list
            .items
            .iter()
            .filter_map(|t| {
                let ready = t
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
                match ready {
                    Some(c) if c.status == offpeak_api::ConditionStatus::True => None,
                    Some(c) => Some(format!("{}: {}", t.name_any(), c.message)),
                    None => Some(format!("{}: no status yet", t.name_any())),
                }
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "tenants not ready after {within:?}: {}",
            waiting.join("; ")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The peak reservations: launch week, from `start` for a week.
pub async fn reserve(client: &Client, start: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
    let create = PostParams::default();
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Launch week: the company keeps most of both pools for itself from the start.
    for (name, pool, keep) in [
        ("launch-week", "general", 60),
        ("launch-week-gpu", "gpu", 75),
    ] {
        Api::<PeakReservation>::all(client.clone())
            .create(&create, &object(json!({
                "apiVersion": "offpeak.dev/v1alpha1", "kind": "PeakReservation", "metadata": {"name": name},
                "spec": {"pool": pool, "keep": {"percent": keep},
                         "window": {"start": at(start), "end": at(start + chrono::Duration::days(7))}},
            }))?)
            .await?;
    }
    Ok(())
}

/// A tenant's move: at `at` into the run, `user` (of tenant namespace `namespace`) creates a
/// lease and the pods that use it.
pub struct Rental {
    pub at: f64,
    pub user: &'static str,
    pub namespace: &'static str,
    pub name: &'static str,
    pub spec: Value,
    /// Pods of 2 cores run on the lease.
    pub pods: i32,
}

/// The tenants' day. `run` is the run's length: terms are cut to fit it.
pub fn rentals(run: Duration) -> Vec<Rental> {
    let term = |share: f64| format!("{}s", (run.as_secs_f64() * share).round().max(60.0) as u64);
    vec![
        // Night: the render farm rents big, cheap and reclaimable.
        Rental {
            at: 0.06,
            user: "alice",
            namespace: "tenant-acme",
            name: "nightly-render",
            pods: 14,
            spec: json!({"pool": "general", "class": "Spot", "resources": {"cpu": "64", "memory": "128Gi"}, "duration": term(1.0), "maxPricePerHour": "4.00"}),
        },
        // A batch job with a tight budget: the spot price pushes it out when the day fills up.
        Rental {
            at: 0.07,
            user: "carol",
            namespace: "tenant-initech",
            name: "batch",
            pods: 10,
            spec: json!({"pool": "general", "class": "Spot", "resources": {"cpu": "48"}, "duration": term(1.0), "maxPricePerHour": "1.20"}),
        },
        // A crawler that must not be interrupted: Reserved, admitted around the reservation.
        Rental {
            at: 0.08,
            user: "bob",
            namespace: "tenant-globex",
            name: "steady-crawl",
            pods: 6,
            spec: json!({"pool": "general", "class": "Reserved", "nodes": {"class": "standard", "count": 2}, "duration": term(0.8)}),
        },
        // Training on a GPU node, ending at its term.
        Rental {
            at: 0.09,
            user: "bob",
            namespace: "tenant-globex",
            name: "training",
            pods: 2,
            spec: json!({"pool": "gpu", "class": "Reserved", "nodes": {"class": "a100", "count": 1}, "duration": term(0.3)}),
        },
        // A hyperparameter sweep on spare GPUs, until launch week takes them back.
        Rental {
            at: 0.10,
            user: "carol",
            namespace: "tenant-initech",
            name: "gpu-sweep",
            pods: 4,
            spec: json!({"pool": "gpu", "class": "Spot", "nodes": {"class": "a100", "count": 4}, "duration": term(1.0), "maxPricePerHour": "40.00"}),
        },
        // More cheap capacity on the high-memory nodes.
        Rental {
            at: 0.12,
            user: "alice",
            namespace: "tenant-acme",
            name: "preview",
            pods: 6,
            spec: json!({"pool": "general", "class": "Spot", "nodes": {"class": "highmem", "count": 3}, "duration": term(1.0), "maxPricePerHour": "6.00"}),
        },
        // Evening: renting again as the web tier ebbs.
        Rental {
            at: 0.86,
            user: "carol",
            namespace: "tenant-initech",
            name: "evening-batch",
            pods: 6,
            spec: json!({"pool": "general", "class": "Spot", "resources": {"cpu": "32"}, "duration": term(0.5), "maxPricePerHour": "3.00"}),
        },
    ]
}

/// Creates the rental's lease and its pods with the tenant's own credentials.
pub async fn rent(plane: &ControlPlane, rental: &Rental) -> anyhow::Result<()> {
    let groups: &[&str] = if rental.user == "alice" {
        &["acme-render"]
    } else {
        &[]
    };
    let client = plane.user_client(rental.user, groups).await?;
    let lease: CapacityLease = object(json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease",
        "metadata": {"name": rental.name}, "spec": rental.spec,
    }))?;
    Api::<CapacityLease>::namespaced(client.clone(), rental.namespace)
        .create(&PostParams::default(), &lease)
        .await
        .with_context(|| format!("{} cannot create lease {}", rental.user, rental.name))?;
    let pods = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": rental.name},
        "spec": {"replicas": rental.pods, "selector": {"matchLabels": {"app": rental.name}},
                 "template": {"metadata": {"labels": {"app": rental.name}},
                              "spec": {"containers": [{"name": "work", "image": format!("{}:1", rental.name),
                                                       "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}}},
    });
    Api::<Deployment>::namespaced(client, rental.namespace)
        .patch(
            rental.name,
            &PatchParams::apply(rental.user),
            &Patch::Apply(pods),
        )
        .await
        .with_context(|| format!("{} cannot run pods for {}", rental.user, rental.name))?;
    Ok(())
}

/// The internal web tier and the system pods: Deployments in namespace `internal`.
pub async fn internal(client: &Client, web: i32) -> anyhow::Result<()> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            "internal",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "internal"}}),
            ),
        )
        .await?;
    for (name, replicas, selector, cpu) in [
        ("web", web, json!({"offpeak.dev/pool": "general"}), "4"),
        ("system", 3, json!({"node.offpeak.dev/role": "system"}), "2"),
    ] {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "internal"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"nodeSelector": selector,
                                           "containers": [{"name": name, "image": format!("{name}:1"), "resources": {"requests": {"cpu": cpu, "memory": "4Gi"}}}]}}},
        });
        Api::<Deployment>::namespaced(client.clone(), "internal")
            .patch(
                name,
                &PatchParams::apply("offpeak-demo").force(),
                &Patch::Apply(deployment),
            )
            .await?;
    }
    Ok(())
}

/// Tenants cancel what they still hold at the end of the run.
pub async fn cancel_all(client: &Client) -> anyhow::Result<()> {
    let leases: Api<CapacityLease> = Api::all(client.clone());
    for lease in leases.list(&Default::default()).await? {
        let (Some(namespace), Some(name)) = (lease.metadata.namespace, lease.metadata.name) else {
            continue;
        };
        let _ = Api::<CapacityLease>::namespaced(client.clone(), &namespace)
            .delete(&name, &Default::default())
            .await;
    }
    Ok(())
}
