//! The pool pass on the real control plane: one bad lease never blocks its pool (a name
//! too long for a label, a bind refused part-way, an object that cannot be read), and a
//! steady cluster writes nothing (counted in the API server's audit log). The operator
//! runs as its own user, so the audit log tells its writes apart.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use offpeak::local::OPERATOR_USER;
use offpeak::names::{IDLE_SINCE, LEASE, TENANT};
use offpeak_api::{CapacityLease, ConditionStatus, LeasePhase};
use offpeak_testenv::{ControlPlane, Options};
use offpeak_tests::fixtures::*;
use offpeak_tests::{deployment, wait_running};
use serde_json::json;
use tokio::sync::OnceCell;

type TestResult = anyhow::Result<()>;

/// Every write request of the operator's user.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["offpeak-operator"]
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
"#;

struct Harness {
    plane: ControlPlane,
    metrics: std::net::SocketAddr,
}

/// A control plane of this binary's own (with the audit log), and the operator beside it
/// as user `offpeak-operator` with default settings.
async fn harness() -> anyhow::Result<&'static Harness> {
    static HARNESS: OnceCell<Harness> = OnceCell::const_new();
    HARNESS
        .get_or_try_init(|| async {
            let plane = ControlPlane::start_with(Options {
                audit_policy: Some(AUDIT_POLICY.into()),
                ..Options::default()
            })
            .await?;
            let kubeconfig = plane.user_kubeconfig(OPERATOR_USER, &["system:masters"])?;
            // Default settings, but for bills: refreshed every minute, they would be the
            // one write of a steady minute (the ledger lives in the plane's folder).
            let mut settings = offpeak::controllers::Settings::default();
            settings.bills.ledger = String::new();
            settings.bills.refresh = Duration::from_secs(600);
            let operator = offpeak::local::start_as(&plane, &kubeconfig, settings).await?;
            anyhow::Ok(Harness {
                plane,
                metrics: operator.metrics,
            })
        })
        .await
}

fn has_synced_false(lease: &CapacityLease) -> Option<(String, String)> {
    lease
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Synced" && c.status == ConditionStatus::False)
        .map(|c| (c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_lease_whose_name_and_namespace_exceed_a_label_is_admitted_and_so_is_its_neighbour()
-> TestResult {
    let plane = &harness().await?.plane;
    pool_with_nodes(plane, "pp-long", 2).await?;
    let acme = tenant(plane, "tenant-acme-long", &["pp-long"]).await?;
    let globex = tenant(plane, "tenant-globex-long", &["pp-long"]).await?;
    // 55 characters: with its namespace, far past a label value's 63.
    let name = "a-render-job-with-a-very-long-descriptive-name-for-test";
    assert_eq!(name.len(), 55);
    let acme_leases: Api<CapacityLease> = Api::namespaced(acme, "tenant-acme-long");
    acme_leases
        .create(
            &PostParams::default(),
            &lease(name, "pp-long", "Spot", "16", "1h"),
        )
        .await?;
    let globex_leases: Api<CapacityLease> = Api::namespaced(globex, "tenant-globex-long");
    globex_leases
        .create(
            &PostParams::default(),
            &lease("crawl", "pp-long", "Spot", "16", "1h"),
        )
        .await?;
    let long = wait_phase(&acme_leases, name, LeasePhase::Active).await?;
    wait_phase(&globex_leases, "crawl", LeasePhase::Active).await?;
    let node = &long.status.clone().expect("status").bound_nodes[0];
    let labels = Api::<Node>::all(plane.client().await?)
        .get(node.as_str())
        .await?
        .labels()
        .clone();
    assert_eq!(labels.get(LEASE), long.metadata.uid.as_ref());
    Ok(())
}

/// A policy that refuses to lend nodes labelled `offpeak.dev/test-refuse`, so a bind fails
/// on that node after succeeding on another.
async fn refuse_lending_on_marked_nodes(plane: &ControlPlane) -> anyhow::Result<()> {
    let client = plane.client().await?;
    let policy: ValidatingAdmissionPolicy = from_json(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "test-refuse-lending"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}]},
            "validations": [{
                "expression": "!has(object.metadata.labels) || !('offpeak.dev/lease' in object.metadata.labels)",
                "message": "this node refuses to be lent (test policy)",
            }],
        },
    }));
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    let binding: ValidatingAdmissionPolicyBinding = from_json(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "test-refuse-lending"},
        "spec": {
            "policyName": "test-refuse-lending",
            "validationActions": ["Deny"],
            "matchResources": {"objectSelector": {"matchLabels": {"offpeak.dev/test-refuse": "true"}}},
        },
    }));
    Api::<ValidatingAdmissionPolicyBinding>::all(client)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_bind_refused_part_way_leaves_nothing_bound_says_why_and_the_pool_goes_on() -> TestResult
{
    let plane = &harness().await?.plane;
    refuse_lending_on_marked_nodes(plane).await?;
    let nodes = pool_with_nodes(plane, "pp-partial", 3).await?;
    let admin = plane.client().await?;
    let node_api: Api<Node> = Api::all(admin.clone());
    node_api
        .patch(
            &nodes[1],
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"offpeak.dev/test-refuse": "true"}}})),
        )
        .await?;
    // The policy takes a moment to be enforced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_since = |node: &Node| node.annotations().get(IDLE_SINCE).cloned();
    let clock_before = eventually_value("the first node's idle clock", || async {
        Ok(idle_since(&node_api.get(&nodes[0]).await?))
    })
    .await?;
    let acme = tenant(plane, "acme-p", &["pp-partial"]).await?;
    let globex = tenant(plane, "globex-p", &["pp-partial"]).await?;

    // 32 cores take two 16-core nodes, pp-partial-0 then pp-partial-1, which refuses.
    let acme_leases: Api<CapacityLease> = Api::namespaced(acme, "acme-p");
    acme_leases
        .create(
            &PostParams::default(),
            &lease("wide", "pp-partial", "Reserved", "32", "1h"),
        )
        .await?;
    // (Under a loaded machine a first attempt can fail otherwise, a timeout say; the refusal
    // is reported when the bind is tried again.)
    let refused = offpeak_tests::eventually_value_within(
        "the refused bind to be reported on the lease",
        Duration::from_secs(150),
        || async {
            let l = acme_leases.get("wide").await?;
            Ok(has_synced_false(&l)
                .filter(|(_, message)| message.contains("refuses to be lent"))
                .map(|c| (l, c)))
        },
    )
    .await?;
    let (wide, (reason, message)) = refused;
    assert_eq!(reason, "BindFailed");
    assert!(
        message.contains(&format!("cannot lend node(s) {}, {}", nodes[0], nodes[1]))
            && message.contains("this node refuses to be lent (test policy)")
            && message.contains("trying again in"),
        "{message}"
    );
    assert_ne!(
        wide.status.as_ref().and_then(|s| s.phase),
        Some(LeasePhase::Active)
    );

    // Another tenant's lease in the same pool is admitted meanwhile, on the third node.
    let globex_leases: Api<CapacityLease> = Api::namespaced(globex, "globex-p");
    globex_leases
        .create(
            &PostParams::default(),
            &lease("narrow", "pp-partial", "Spot", "16", "1h"),
        )
        .await?;
    let narrow = wait_phase(&globex_leases, "narrow", LeasePhase::Active).await?;
    let bound: Vec<String> = narrow
        .status
        .expect("status")
        .bound_nodes
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(bound, [nodes[2].clone()]);

    // Nothing of the failed bind is left on the node that accepted it: it was taken back
    // at once, idle clock and all (a later sweep would have restarted the clock).
    let first = node_api.get(&nodes[0]).await?;
    assert_eq!(
        idle_since(&first),
        Some(clock_before),
        "the idle clock moved"
    );
    let labels = first.labels();
    assert!(
        !labels.contains_key(LEASE) && !labels.contains_key(TENANT),
        "{labels:?}"
    );
    assert!(
        first
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .all(|t| t.key != TENANT),
        "the tenant's taint stayed on {}",
        nodes[0]
    );
    let events = Api::<Event>::namespaced(admin, "acme-p")
        .list(&ListParams::default())
        .await?;
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("BindFailed")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.name.as_deref() == Some("wide")),
        "no BindFailed event: {:?}",
        events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    Ok(())
}

/// The operator's write requests in the audit log from `from` on that touch `namespace`,
/// one of `names` (nodes, the pool, the tenant), as `verb resource/name`.
fn operator_writes(
    plane: &ControlPlane,
    from: chrono::DateTime<chrono::Utc>,
    namespace: &str,
    names: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let log = std::fs::read_to_string(plane.audit_log())?;
    let mut writes = Vec::new();
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)?;
        if entry["user"]["username"] != OPERATOR_USER {
            continue;
        }
        let at = chrono::DateTime::parse_from_rfc3339(
            entry["stageTimestamp"].as_str().unwrap_or_default(),
        )?;
        let object = &entry["objectRef"];
        let touches = object["namespace"].as_str() == Some(namespace)
            || object["name"].as_str().is_some_and(|n| names.contains(n));
        if at >= from && touches {
            writes.push(format!(
                "{} {}/{}{}",
                entry["verb"].as_str().unwrap_or_default(),
                object["resource"].as_str().unwrap_or_default(),
                object["name"].as_str().unwrap_or_default(),
                object["subresource"]
                    .as_str()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default(),
            ));
        }
    }
    Ok(writes)
}

/// How many pool passes the operator has run.
async fn pool_passes(metrics: std::net::SocketAddr) -> anyhow::Result<u64> {
    let text = scrape(metrics).await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("offpeak_reconciles_total{controller=\"pool\"} "))
        .ok_or_else(|| anyhow::anyhow!("no pool reconciles in {text}"))?;
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

#[tokio::test]
async fn a_steady_cluster_makes_the_operator_write_nothing_for_a_minute() -> TestResult {
    let harness = harness().await?;
    let plane = &harness.plane;
    let nodes = pool_with_nodes(plane, "pp-steady", 3).await?;
    let user = tenant(plane, "acme-s", &["pp-steady"]).await?;
    let leases: Api<CapacityLease> = Api::namespaced(user.clone(), "acme-s");
    leases
        .create(
            &PostParams::default(),
            &lease("spot", "pp-steady", "Spot", "16", "2h"),
        )
        .await?;
    leases
        .create(
            &PostParams::default(),
            &lease("reserved", "pp-steady", "Reserved", "16", "2h"),
        )
        .await?;
    wait_phase(&leases, "spot", LeasePhase::Active).await?;
    wait_phase(&leases, "reserved", LeasePhase::Active).await?;
    eventually("the quota to follow the leases", || async {
        Ok(quota_cpu(&plane.client().await?, "acme-s")
            .await?
            .as_deref()
            == Some("32"))
    })
    .await?;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(user, "acme-s")
        .create(&PostParams::default(), &deployment("steady", 2, None))
        .await?;
    let pods: Api<Pod> = Api::namespaced(plane.client().await?, "acme-s");
    wait_running(&pods, "app=steady", 2, WAIT).await?;

    // Let the admission settle, then watch a minute in which only the clock moves (and
    // kwok's heartbeats): the cost estimate is not due for five minutes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = chrono::Utc::now();
    let before = leases.list(&ListParams::default()).await?;
    let passes_before = pool_passes(harness.metrics).await?;
    // Meanwhile a label nobody reads changes on a node every few seconds, so the pool is
    // planned again and again: a status that moved with the clock would be written.
    let node_api: Api<Node> = Api::all(plane.client().await?);
    for tick in 0..12 {
        node_api
            .patch(
                &nodes[2],
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"labels": {"example.com/tick": tick.to_string()}}}),
                ),
            )
            .await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let passes = pool_passes(harness.metrics).await? - passes_before;
    assert!(
        passes >= 12,
        "the pool was planned {passes} times in the minute"
    );
    let mut names: BTreeSet<String> = nodes.iter().cloned().collect();
    names.extend(["pp-steady".to_string(), "acme-s".to_string()]);
    let writes = operator_writes(plane, from, "acme-s", &names)?;
    assert!(
        writes.is_empty(),
        "the operator wrote in a steady minute: {writes:#?}"
    );
    let after = leases.list(&ListParams::default()).await?;
    let versions = |list: &kube::core::ObjectList<CapacityLease>| {
        list.items
            .iter()
            .map(|l| (l.name_any(), l.resource_version()))
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&before), versions(&after));
    Ok(())
}

#[tokio::test]
async fn a_lease_that_cannot_be_read_is_skipped_and_reported_and_its_pool_goes_on() -> TestResult {
    let harness = harness().await?;
    let plane = &harness.plane;
    pool_with_nodes(plane, "pp-unreadable", 1).await?;
    let user = tenant(plane, "acme-u", &["pp-unreadable"]).await?;
    let admin = plane.client().await?;
    // An older or hand-edited schema let a class the operator does not know be stored.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let strict = crds.get("capacityleases.offpeak.dev").await?;
    let mut loose = strict.clone();
    let schema = loose.spec.versions[0]
        .schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
        .expect("a schema");
    let class = schema
        .properties
        .as_mut()
        .and_then(|p| p.get_mut("spec"))
        .and_then(|s| s.properties.as_mut())
        .and_then(|p| p.get_mut("class"))
        .expect("spec.class");
    class.enum_.get_or_insert_with(Vec::new).push(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(json!("Weird")),
    );
    crds.replace("capacityleases.offpeak.dev", &PostParams::default(), &loose)
        .await?;
    let weird = json!({
        "apiVersion": "offpeak.dev/v1alpha1", "kind": "CapacityLease",
        "metadata": {"name": "weird", "namespace": "acme-u"},
        "spec": {"pool": "pp-unreadable", "class": "Weird", "resources": {"cpu": "16"}, "duration": "1h"},
    });
    let raw: Api<kube::core::DynamicObject> = Api::namespaced_with(
        admin.clone(),
        "acme-u",
        &kube::core::ApiResource::erase::<CapacityLease>(&()),
    );
    eventually("the loose schema to take effect", || async {
        Ok(raw
            .create(&PostParams::default(), &from_json(weird.clone()))
            .await
            .is_ok())
    })
    .await?;
    let current = crds.get("capacityleases.offpeak.dev").await?;
    let mut restored = strict.clone();
    restored.metadata.resource_version = current.metadata.resource_version;
    crds.replace(
        "capacityleases.offpeak.dev",
        &PostParams::default(),
        &restored,
    )
    .await?;

    let events: Api<Event> = Api::namespaced(admin.clone(), "acme-u");
    let note = eventually_value("an Unreadable event on the lease", || async {
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("Unreadable")
                    && e.involved_object.name.as_deref() == Some("weird")
            })
            .and_then(|e| e.message))
    })
    .await?;
    assert!(
        note.starts_with(
            "the operator cannot read this CapacityLease and skips it until it is fixed: "
        ) && note.contains("Weird"),
        "{note}"
    );
    let metrics = scrape(harness.metrics).await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("offpeak_unreadable_objects_total{kind=\"CapacityLease\"} ")),
        "{metrics}"
    );
    // The pool is not held back by what it cannot read.
    let tenant_leases: Api<CapacityLease> = Api::namespaced(user, "acme-u");
    tenant_leases
        .create(
            &PostParams::default(),
            &lease("fine", "pp-unreadable", "Spot", "16", "1h"),
        )
        .await?;
    wait_phase(&tenant_leases, "fine", LeasePhase::Active).await?;
    raw.delete("weird", &Default::default()).await?;
    Ok(())
}
