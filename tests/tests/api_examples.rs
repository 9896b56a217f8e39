//! The offpeak.dev/v1alpha1 API on the real API server: the CRDs install, every example
//! under `examples/` is accepted, what may not change once set is refused with nothing
//! stored changed, and `kubectl explain` shows the field docs.

mod api_support;

use std::time::Duration;

use anyhow::Context as _;
use api_support::{apply, causes, examples_dir, namespace, plane, read_manifest, refusal};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use offpeak_api::{CapacityLease, UsageBill};
use serde_json::json;

type TestResult = anyhow::Result<()>;

#[tokio::test]
async fn every_crd_is_established_with_its_names_and_columns() -> TestResult {
    let plane = plane().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(plane.client().await?);
    for expected in offpeak_api::crds() {
        let name = expected.metadata.name.clone().unwrap_or_default();
        let stored = crds.get(&name).await?;
        let established = stored
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        assert!(established, "{name} is not Established");
        assert_eq!(
            stored.spec.names.categories,
            Some(vec!["offpeak".to_string()])
        );
        assert!(
            stored
                .spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{name} has no short name"
        );
    }
    Ok(())
}

/// Every value written is stored unchanged; the API server may only add defaults.
fn written_is_stored(written: &serde_json::Value, stored: &serde_json::Value) -> bool {
    match (written, stored) {
        (serde_json::Value::Object(written), serde_json::Value::Object(stored)) => written
            .iter()
            .all(|(key, value)| stored.get(key).is_some_and(|s| written_is_stored(value, s))),
        _ => written == stored,
    }
}

#[tokio::test]
async fn every_example_is_accepted_and_stored_as_written() -> TestResult {
    let plane = plane().await?;
    let client = namespace(plane, "api-examples").await?;
    let mut paths: Vec<_> = std::fs::read_dir(examples_dir())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 6,
        "examples/ holds {} manifests",
        paths.len()
    );

    let mut kinds = std::collections::BTreeSet::new();
    for path in &paths {
        let manifest = read_manifest(path)?;
        let kind = manifest
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        kinds.insert(kind.clone());
        let stored = apply(&client, manifest.clone(), "api-examples")
            .await?
            .with_context(|| format!("the API server refused {}", path.display()))?;
        assert!(
            written_is_stored(&manifest.data["spec"], &stored.data["spec"]),
            "{} was stored differently from how it was written (defaults aside):\n{:#}",
            path.display(),
            stored.data["spec"]
        );
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "CapacityLease",
            "CapacityPool",
            "PeakReservation",
            "RateCard",
            "Tenant",
            "UsageBill"
        ],
        "examples/ covers every kind"
    );
    Ok(())
}

#[tokio::test]
async fn pool_defaults_fill_notice_period_and_the_rest() -> TestResult {
    let plane = plane().await?;
    let client = plane.client().await?;
    let pools: Api<offpeak_api::CapacityPool> = Api::all(client);
    let pool: offpeak_api::CapacityPool = serde_json::from_value(json!({
        "apiVersion": "offpeak.dev/v1alpha1",
        "kind": "CapacityPool",
        "metadata": {"name": "api-defaults"},
        "spec": {"nodeSelector": {"offpeak.dev/pool": "api-defaults"}}
    }))?;
    let stored = pools
        .patch(
            "api-defaults",
            &PatchParams::apply(api_support::MANAGER).force(),
            &Patch::Apply(&pool),
        )
        .await?;
    assert_eq!(stored.spec.notice_period.as_str(), "120s");
    assert_eq!(stored.spec.idle_after.as_str(), "10m");
    assert!(stored.spec.lending_enabled);
    assert_eq!(
        stored.spec.consolidation_policy,
        offpeak_api::ConsolidationPolicy::WhenEmpty
    );
    Ok(())
}

fn spot_lease(name: &str) -> anyhow::Result<CapacityLease> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "offpeak.dev/v1alpha1",
        "kind": "CapacityLease",
        "metadata": {"name": name},
        "spec": {
            "pool": "general",
            "class": "Spot",
            "resources": {"cpu": "16", "memory": "64Gi"},
            "duration": "2h",
            "maxPricePerHour": "1.25"
        }
    }))?)
}

#[tokio::test]
async fn an_admitted_lease_keeps_its_class_pool_amount_and_bid() -> TestResult {
    let plane = plane().await?;
    let ns = "api-lease-immutable";
    let client = namespace(plane, ns).await?;
    let leases: Api<CapacityLease> = Api::namespaced(client, ns);
    leases
        .create(&PostParams::default(), &spot_lease("render")?)
        .await?;

    // Before admission the tenant may still change its mind.
    let patch = json!({"spec": {"pool": "gpu"}});
    let changed = leases
        .patch("render", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    assert_eq!(changed.spec.pool.as_str(), "gpu");

    // The operator admits it.
    let admitted = json!({"status": {
        "phase": "Active",
        "admittedAt": "2026-11-22T22:00:00Z",
        "endsAt": "2026-11-23T00:00:00Z",
        "boundNodes": ["node-1"],
        "nodeCount": 1
    }});
    leases
        .patch_status("render", &PatchParams::default(), &Patch::Merge(&admitted))
        .await?;
    let before = leases.get("render").await?;

    let attempts = [
        (
            json!({"spec": {"class": "Reserved", "maxPricePerHour": null}}),
            "spec.class",
            "spec.class cannot change once the lease is admitted",
        ),
        (
            json!({"spec": {"pool": "general"}}),
            "spec.pool",
            "spec.pool cannot change once the lease is admitted",
        ),
        (
            json!({"spec": {"resources": {"cpu": "32"}}}),
            "spec.resources",
            "spec.resources cannot change once the lease is admitted",
        ),
        // The admitted bid stands: a lowered one would let the lease stay past the price
        // it was admitted at, and a moved one cheats the credit limit.
        (
            json!({"spec": {"maxPricePerHour": "2.00"}}),
            "spec.maxPricePerHour",
            "spec.maxPricePerHour cannot change once the lease is admitted",
        ),
    ];
    for (patch, field, message) in attempts {
        let status = refusal(
            leases
                .patch("render", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
            &format!("changing {field} of an admitted lease"),
        )?;
        assert_eq!(status.code, 422, "{status:?}");
        let causes = causes(&status);
        assert!(
            causes
                .iter()
                .any(|(f, m)| f == field && m.contains(message)),
            "expected {field}: {message}, got {causes:?}"
        );
    }
    let after = leases.get("render").await?;
    assert_eq!(after.spec, before.spec, "nothing stored changed");
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );

    // What may change still does: the tenant's own labels.
    let label = json!({"metadata": {"labels": {"team": "render"}}});
    let labelled = leases
        .patch("render", &PatchParams::default(), &Patch::Merge(&label))
        .await?;
    assert_eq!(
        labelled
            .metadata
            .labels
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("render")
    );
    Ok(())
}

#[tokio::test]
async fn a_finalized_bill_never_changes() -> TestResult {
    let plane = plane().await?;
    let ns = "api-bill-final";
    let client = namespace(plane, ns).await?;
    let bills: Api<UsageBill> = Api::namespaced(client, ns);
    let mut bill: UsageBill = serde_yaml::from_str(&std::fs::read_to_string(
        examples_dir().join("usage-bill.yaml"),
    )?)?;
    bill.metadata.namespace = None;
    bills.create(&PostParams::default(), &bill).await?;

    // Open: lines may still be added, and it may be finalized.
    let finalize = json!({"spec": {"state": "Finalized", "finalizedAt": "2026-12-01T00:05:00Z"}});
    bills
        .patch(
            "acme-2026-11",
            &PatchParams::default(),
            &Patch::Merge(&finalize),
        )
        .await?;
    let before = bills.get("acme-2026-11").await?;

    for (patch, what) in [
        (json!({"spec": {"totals": {"total": "0"}}}), "its total"),
        (json!({"spec": {"state": "Open"}}), "its state back to Open"),
        (
            json!({"spec": {"credits": [{"id": "late", "lease": "nightly-render", "reason": "goodwill", "amount": "5.00"}]}}),
            "a late credit",
        ),
    ] {
        let status = refusal(
            bills
                .patch(
                    "acme-2026-11",
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await,
            &format!("changing {what} on a finalized bill"),
        )?;
        assert_eq!(status.code, 422);
        assert!(
            causes(&status)
                .iter()
                .any(|(f, m)| f == "spec" && m.contains("a Finalized bill never changes")),
            "{status:?}"
        );
    }
    let after = bills.get("acme-2026-11").await?;
    assert_eq!(after.spec, before.spec);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    Ok(())
}

/// `kubectl explain`'s output with whitespace collapsed. It reads the published OpenAPI v3
/// document, which the API server updates a moment after a CRD is established.
async fn explain(plane: &offpeak_testenv::ControlPlane, path: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let output = plane.kubectl().args(["explain", path]).output().await?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            // kubectl wraps lines to the terminal; compare words.
            return Ok(stdout.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "kubectl explain {path} failed: {}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() -> TestResult {
    let plane = plane().await?;
    let max_price = explain(plane, "capacitylease.spec.maxPricePerHour").await?;
    for words in [
        "KIND: CapacityLease",
        "maxPricePerHour <string>",
        "required for Spot",
        "Not allowed for Reserved leases",
    ] {
        assert!(
            max_price.contains(words),
            "missing {words:?} in:\n{max_price}"
        );
    }
    let headroom = explain(plane, "capacitypool.spec.headroom").await?;
    assert!(headroom.contains("percent"), "{headroom}");
    assert!(headroom.contains("kept for internal bursts"), "{headroom}");
    let zone = explain(plane, "peakreservation.spec.timeZone").await?;
    assert!(zone.contains("IANA time zone"), "{zone}");
    Ok(())
}

#[tokio::test]
async fn kubectl_get_offpeak_lists_every_kind_with_its_columns() -> TestResult {
    let plane = plane().await?;
    let ns = "api-get-columns";
    let client = namespace(plane, ns).await?;
    let leases: Api<CapacityLease> = Api::namespaced(client, ns);
    leases
        .create(&PostParams::default(), &spot_lease("columns")?)
        .await?;
    let status = json!({"status": {
        "phase": "Active",
        "admittedAt": "2026-11-22T22:00:00Z",
        "endsAt": "2026-11-23T06:00:00Z",
        "nodeCount": 2,
        "boundNodes": ["node-a", "node-b"],
        "costSoFar": {"amount": "3.12", "currency": "USD"},
        "costSummary": "3.1200 USD"
    }});
    leases
        .patch_status("columns", &PatchParams::default(), &Patch::Merge(&status))
        .await?;

    let output = plane
        .kubectl()
        .args(["get", "cl", "-n", ns])
        .output()
        .await?;
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "CLASS", "PHASE", "NODES", "ENDS", "DEADLINE", "COST", "AGE"
        ]
    );
    let row = table.lines().nth(1).unwrap_or_default();
    for cell in [
        "columns",
        "Spot",
        "Active",
        "2",
        "2026-11-23T06:00:00Z",
        "3.1200 USD",
    ] {
        assert!(row.contains(cell), "missing {cell} in {row:?}");
    }

    let output = plane
        .kubectl()
        .args(["get", "offpeak", "-A"])
        .output()
        .await?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.contains("capacitylease.offpeak.dev/columns"),
        "kubectl get offpeak lists leases:\n{listing}"
    );
    Ok(())
}
