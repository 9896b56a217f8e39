//! Every CEL rule of the CRDs evaluated client-side with `kube::core::cel`, against the
//! schemas `crds()` generates: the examples pass, and each rule refuses what it is for with
//! its message at its field. The same rules are applied for real by the API server in
//! `tests/tests/api_validation.rs`; this catches a broken rule in a second, without a
//! cluster.

use std::path::PathBuf;

use kube::core::cel::Validator;
use serde_json::{Value, json};

/// The openAPIV3Schema of `kind`.
fn schema(kind: &str) -> Value {
    let crd = offpeak_api::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("a schema"),
    )
    .expect("the schema serializes")
}

fn example(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// RFC 7386 merge patch: objects merge, null removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn patched(file: &str, patch: Value) -> Value {
    let mut object = example(file);
    merge(&mut object, &patch);
    object
}

/// `field: message` of every rule `object` breaks.
fn broken(kind: &str, object: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    match Validator::new().validate(&schema(kind), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| (e.field_path.clone(), e.message.clone()))
            .collect(),
    }
}

#[track_caller]
fn assert_refused(kind: &str, object: &Value, old: Option<&Value>, field: &str, message: &str) {
    let broken = broken(kind, object, old);
    assert!(
        broken
            .iter()
            .any(|(f, m)| f == field && m.contains(message)),
        "expected {field}: {message:?}, got {broken:?}"
    );
}

const EXAMPLES: &[(&str, &str)] = &[
    ("Tenant", "tenant.yaml"),
    ("CapacityPool", "capacity-pool.yaml"),
    ("CapacityPool", "capacity-pool-gpu.yaml"),
    ("PeakReservation", "peak-reservation-recurring.yaml"),
    ("PeakReservation", "peak-reservation-once.yaml"),
    ("CapacityLease", "capacity-lease-spot.yaml"),
    ("CapacityLease", "capacity-lease-reserved.yaml"),
    ("RateCard", "rate-card.yaml"),
    ("UsageBill", "usage-bill.yaml"),
];

#[test]
fn every_example_passes_every_rule() {
    for (kind, file) in EXAMPLES {
        let object = example(file);
        assert_eq!(object["kind"], *kind, "{file}");
        assert_eq!(broken(kind, &object, None), Vec::new(), "{file}");
        // An unchanged update passes the transition rules too.
        assert_eq!(broken(kind, &object, Some(&object)), Vec::new(), "{file}");
    }
}

#[test]
fn lease_rules() {
    let spot = "capacity-lease-spot.yaml";
    let reserved = "capacity-lease-reserved.yaml";
    let lease = "CapacityLease";
    assert_refused(
        lease,
        &patched(spot, json!({"spec": {"maxPricePerHour": null}})),
        None,
        "spec.maxPricePerHour",
        "required for a Spot lease",
    );
    assert_refused(
        lease,
        &patched(reserved, json!({"spec": {"maxPricePerHour": "4.50"}})),
        None,
        "spec.maxPricePerHour",
        "only for Spot leases",
    );
    assert_refused(
        lease,
        &patched(spot, json!({"spec": {"endTime": "2026-11-23T06:00:00Z"}})),
        None,
        "spec",
        "set exactly one of spec.duration",
    );
    assert_refused(
        lease,
        &patched(spot, json!({"spec": {"duration": null}})),
        None,
        "spec",
        "set exactly one of spec.duration",
    );
    assert_refused(
        lease,
        &patched(
            spot,
            json!({"spec": {"nodes": {"class": "a100", "count": 1}}}),
        ),
        None,
        "spec",
        "set exactly one of spec.resources",
    );
    assert_refused(
        lease,
        &patched(
            spot,
            json!({"spec": {"resources": {"cpu": null, "memory": null}}}),
        ),
        None,
        "spec.resources",
        "at least one of cpu, memory or gpu",
    );
    for (resources, field, message) in [
        (
            json!({"cpu": "0"}),
            "spec.resources.cpu",
            "must be more than 0",
        ),
        (
            json!({"cpu": "0m"}),
            "spec.resources.cpu",
            "must be more than 0",
        ),
        (
            json!({"cpu": "100001"}),
            "spec.resources.cpu",
            "at most 100000 cores",
        ),
        (
            json!({"memory": "2Pi"}),
            "spec.resources.memory",
            "at most 1Pi",
        ),
        (
            json!({"gpu": "1500m"}),
            "spec.resources.gpu",
            "whole number",
        ),
        (
            json!({"gpu": "5000"}),
            "spec.resources.gpu",
            "at most 4096 GPUs",
        ),
    ] {
        assert_refused(
            lease,
            &patched(spot, json!({"spec": {"resources": resources}})),
            None,
            field,
            message,
        );
    }
    for duration in ["30s", "8785h"] {
        assert_refused(
            lease,
            &patched(spot, json!({"spec": {"duration": duration}})),
            None,
            "spec.duration",
            "between 1m and 8784h",
        );
    }
    // A malformed quantity is the pattern's to report; the CEL rules stay quiet.
    assert_eq!(
        broken(
            lease,
            &patched(spot, json!({"spec": {"resources": {"cpu": "-4"}}})),
            None
        ),
        Vec::new()
    );
}

#[test]
fn an_admitted_lease_keeps_its_class_pool_and_amount() {
    let lease = "CapacityLease";
    let pending = example("capacity-lease-spot.yaml");
    let admitted = patched(
        "capacity-lease-spot.yaml",
        json!({"status": {"phase": "Active", "admittedAt": "2026-11-22T22:00:00Z"}}),
    );
    for (change, field) in [
        (json!({"spec": {"pool": "gpu"}}), ".spec.pool"),
        (
            json!({"spec": {"class": "Reserved", "maxPricePerHour": null}}),
            ".spec.class",
        ),
        (
            json!({"spec": {"resources": {"cpu": "256"}}}),
            ".spec.resources",
        ),
        (
            json!({"spec": {"resources": null, "nodes": {"class": "a100", "count": 1}}}),
            ".spec.resources",
        ),
    ] {
        let mut after = admitted.clone();
        merge(&mut after, &change);
        let broken = broken(lease, &after, Some(&admitted));
        let leaf = field.rsplit('.').next().unwrap_or(field);
        assert!(
            broken.iter().any(|(_, m)| m.contains(&format!(
                "spec.{leaf} cannot change once the lease is admitted"
            ))),
            "{change}: {broken:?}"
        );
        // Before admission the same change is allowed.
        let mut before = pending.clone();
        merge(&mut before, &change);
        assert_eq!(
            crate::broken(lease, &before, Some(&pending))
                .into_iter()
                .filter(|(_, m)| m.contains("cannot change"))
                .collect::<Vec<_>>(),
            Vec::new(),
            "{change}"
        );
    }
    // The bid is fixed once admitted, up or down; before admission it may change.
    for bid in ["0.01", "9.00"] {
        let mut changed = admitted.clone();
        merge(&mut changed, &json!({"spec": {"maxPricePerHour": bid}}));
        assert_refused(
            lease,
            &changed,
            Some(&admitted),
            ".spec.maxPricePerHour",
            "spec.maxPricePerHour cannot change once the lease is admitted",
        );
        let mut before = pending.clone();
        merge(&mut before, &json!({"spec": {"maxPricePerHour": bid}}));
        assert_eq!(broken(lease, &before, Some(&pending)), Vec::new(), "{bid}");
    }
    // Unchanged, the admitted lease may still be written (its labels, say).
    let mut relabelled = admitted.clone();
    merge(
        &mut relabelled,
        &json!({"metadata": {"labels": {"team": "render"}}}),
    );
    assert_eq!(broken(lease, &relabelled, Some(&admitted)), Vec::new());
}

#[test]
fn pool_rules() {
    let pool = "CapacityPool";
    let file = "capacity-pool.yaml";
    assert_refused(
        pool,
        &patched(file, json!({"spec": {"headroom": {"nodes": 2}}})),
        None,
        "spec.headroom",
        "exactly one of percent",
    );
    assert_refused(
        pool,
        &patched(file, json!({"spec": {"headroom": {"percent": null}}})),
        None,
        "spec.headroom",
        "exactly one of percent",
    );
    assert_refused(
        pool,
        &patched(file, json!({"spec": {"noticePeriod": "61m"}})),
        None,
        "spec.noticePeriod",
        "between 0s and 1h",
    );
    assert_refused(
        pool,
        &patched(file, json!({"spec": {"idleAfter": "25h"}})),
        None,
        "spec.idleAfter",
        "between 0s and 24h",
    );
    assert_refused(
        pool,
        &patched(file, json!({"spec": {"nodeSelector": {"not a key!": "x"}}})),
        None,
        "spec.nodeSelector",
        "label keys",
    );
    assert_refused(
        pool,
        &patched(
            file,
            json!({"spec": {"nodeClasses": [{"name": "big", "nodeSelector": {"instance type": "x"}}]}}),
        ),
        None,
        "spec.nodeClasses[0].nodeSelector",
        "label keys",
    );
}

#[test]
fn reservation_rules() {
    let kind = "PeakReservation";
    let once = "peak-reservation-once.yaml";
    let weekly = "peak-reservation-recurring.yaml";
    assert_refused(
        kind,
        &patched(
            once,
            json!({"spec": {"window": {"end": "2026-11-19T00:00:00Z"}}}),
        ),
        None,
        "spec.window.end",
        "must be after spec.window.start",
    );
    // Same instant, written in two offsets: not after.
    assert_refused(
        kind,
        &patched(
            once,
            json!({"spec": {"window": {"start": "2026-11-20T01:00:00+01:00", "end": "2026-11-20T00:00:00Z"}}}),
        ),
        None,
        "spec.window.end",
        "must be after spec.window.start",
    );
    assert_refused(
        kind,
        &patched(
            once,
            json!({"spec": {"recurring": {"days": ["Monday"], "startTime": "08:00", "endTime": "20:00"}, "timeZone": "UTC"}}),
        ),
        None,
        "spec",
        "exactly one of spec.window",
    );
    assert_refused(
        kind,
        &patched(weekly, json!({"spec": {"timeZone": null}})),
        None,
        "spec.timeZone",
        "required with spec.recurring",
    );
    for zone in [
        "Mars/Olympus_Mons",
        "europe/berlin",
        "CEST",
        "Europe/Berlin ",
    ] {
        assert_refused(
            kind,
            &patched(weekly, json!({"spec": {"timeZone": zone}})),
            None,
            "spec.timeZone",
            "IANA time zone",
        );
    }
    for zone in [
        "UTC",
        "America/Argentina/Buenos_Aires",
        "Etc/GMT+5",
        "US/Pacific",
    ] {
        assert_eq!(
            broken(
                kind,
                &patched(weekly, json!({"spec": {"timeZone": zone}})),
                None
            ),
            Vec::new(),
            "{zone}"
        );
    }
    assert_refused(
        kind,
        &patched(weekly, json!({"spec": {"recurring": {"endTime": "08:00"}}})),
        None,
        "spec.recurring.endTime",
        "must differ from startTime",
    );
    // Overnight windows are fine.
    assert_eq!(
        broken(
            kind,
            &patched(
                weekly,
                json!({"spec": {"recurring": {"startTime": "22:00", "endTime": "06:00"}}})
            ),
            None
        ),
        Vec::new()
    );
    assert_refused(
        kind,
        &patched(
            weekly,
            json!({"spec": {"validUntil": "2025-06-01T00:00:00Z"}}),
        ),
        None,
        "spec.validUntil",
        "must be after spec.validFrom",
    );
}

#[test]
fn rate_card_rules() {
    let kind = "RateCard";
    let file = "rate-card.yaml";
    assert_refused(
        kind,
        &patched(
            file,
            json!({"spec": {"effectiveUntil": "2025-12-31T23:59:59Z"}}),
        ),
        None,
        "spec.effectiveUntil",
        "must be after spec.effectiveFrom",
    );
    // precision 4 allows 4 decimal places, not 5.
    assert_refused(
        kind,
        &patched(
            file,
            json!({"spec": {"prices": {"spot": {"memory": "0.00161"}}}}),
        ),
        None,
        "spec.prices.spot.memory",
        "more decimal places than allowed",
    );
    // Without precision, the currency decides: 2 for USD, 0 for JPY, 3 for KWD.
    let usd = patched(file, json!({"spec": {"precision": null}}));
    assert_refused(
        kind,
        &usd,
        None,
        "spec.prices.spot.cpu",
        "more decimal places than allowed",
    );
    let cents = patched(
        file,
        json!({"spec": {"precision": null, "prices": {
            "spot": {"cpu": "0.01", "memory": "0.01", "gpu": "0.90"},
            "reserved": {"cpu": "0.03", "memory": "0.01", "gpu": "2.10"}}}}),
    );
    assert_eq!(broken(kind, &cents, None), Vec::new());
    let mut yen = cents.clone();
    merge(&mut yen, &json!({"spec": {"currency": "JPY"}}));
    assert_refused(
        kind,
        &yen,
        None,
        "spec.prices.reserved.gpu",
        "more decimal places than allowed",
    );
    assert_refused(
        kind,
        &yen,
        None,
        "spec.minimumChargePerLease",
        "more decimal places than allowed",
    );
    let mut dinar = cents.clone();
    merge(
        &mut dinar,
        &json!({"spec": {"currency": "KWD", "prices": {"spot": {"cpu": "0.012"}}}}),
    );
    assert_eq!(broken(kind, &dinar, None), Vec::new());
    assert_refused(
        kind,
        &patched(
            file,
            json!({"spec": {"spotPriceRule": {"floorMultiplier": "3.5"}}}),
        ),
        None,
        "spec.spotPriceRule.floorMultiplier",
        "at most ceilingMultiplier",
    );
    assert_refused(
        kind,
        &patched(file, json!({"spec": {"slaCredit": {"percent": null}}})),
        None,
        "spec.slaCredit.percent",
        "required with rule PercentOfRemainingTerm",
    );
    assert_refused(
        kind,
        &patched(
            file,
            json!({"spec": {"slaCredit": {"rule": "NoticeSecondsFree"}}}),
        ),
        None,
        "spec.slaCredit.percent",
        "only for rule PercentOfRemainingTerm",
    );
}

#[test]
fn tenant_rules() {
    let kind = "Tenant";
    let file = "tenant.yaml";
    for namespace in ["default", "kube-system", "kube-public", "offpeak-system"] {
        assert_refused(
            kind,
            &patched(
                file,
                json!({"spec": {"namespaces": ["tenant-acme", namespace]}}),
            ),
            None,
            "spec.namespaces",
            "must not name default",
        );
    }
    assert_refused(
        kind,
        &patched(file, json!({"spec": {"groups": ["system:masters"]}})),
        None,
        "spec.groups",
        "system: group",
    );
    for user in [
        "system:anonymous",
        "system:serviceaccount:kube-system:default",
        "system:kube-controller-manager",
    ] {
        assert_refused(
            kind,
            &patched(file, json!({"spec": {"users": ["alice", user]}})),
            None,
            "spec.users",
            "spec.users must not name a system: user",
        );
    }
    // A user whose name merely contains "system:" is a person.
    assert_eq!(
        broken(
            kind,
            &patched(file, json!({"spec": {"users": ["alice@system:west"]}})),
            None
        ),
        Vec::new()
    );
    for (field, value) in [("storage", "2Pi"), ("ephemeralStorage", "5Pi")] {
        assert_refused(
            kind,
            &patched(file, json!({"spec": {"quota": {field: value}}})),
            None,
            &format!("spec.quota.{field}"),
            &format!("spec.quota.{field} must be at most 1Pi"),
        );
    }
    assert_eq!(
        broken(
            kind,
            &patched(
                file,
                json!({"spec": {"quota": {"secrets": 5, "storage": "10Gi"}}})
            ),
            None
        ),
        Vec::new()
    );
    assert_refused(
        kind,
        &patched(file, json!({"spec": {"creditLimit": {"amount": "10.005"}}})),
        None,
        "spec.creditLimit.amount",
        "more decimal places than allowed",
    );
    assert_refused(
        kind,
        &patched(
            file,
            json!({"spec": {"creditLimit": {"amount": "10.5", "currency": "JPY"}}}),
        ),
        None,
        "spec.creditLimit.amount",
        "more decimal places than allowed",
    );
}

#[test]
fn a_finalized_bill_never_changes() {
    let kind = "UsageBill";
    let open = example("usage-bill.yaml");
    let mut finalized = open.clone();
    merge(
        &mut finalized,
        &json!({"spec": {"state": "Finalized", "finalizedAt": "2026-12-01T00:05:00Z"}}),
    );
    // Open → Finalized is allowed; Finalized without finalizedAt is not.
    assert_eq!(broken(kind, &finalized, Some(&open)), Vec::new());
    let mut undated = finalized.clone();
    merge(&mut undated, &json!({"spec": {"finalizedAt": null}}));
    assert_refused(
        kind,
        &undated,
        None,
        "spec.finalizedAt",
        "required when spec.state is Finalized",
    );
    for change in [
        json!({"spec": {"totals": {"total": "0"}}}),
        json!({"spec": {"state": "Open", "finalizedAt": null}}),
        json!({"spec": {"credits": [{"id": "late", "lease": "x", "reason": "goodwill", "amount": "1.00"}]}}),
    ] {
        let mut after = finalized.clone();
        merge(&mut after, &change);
        assert_refused(
            kind,
            &after,
            Some(&finalized),
            "spec",
            "a Finalized bill never changes",
        );
    }
    assert_refused(
        kind,
        &patched(
            "usage-bill.yaml",
            json!({"spec": {"period": {"end": "2026-10-01T00:00:00Z"}}}),
        ),
        None,
        "spec.period.end",
        "must be after spec.period.start",
    );
}

#[test]
fn resource_names_are_dns_labels_where_they_become_label_values() {
    for (kind, file) in [
        ("Tenant", "tenant.yaml"),
        ("CapacityPool", "capacity-pool.yaml"),
        ("CapacityLease", "capacity-lease-spot.yaml"),
    ] {
        for name in ["has.dots", &"x".repeat(64)] {
            let object = patched(file, json!({"metadata": {"name": name}}));
            let broken = broken(kind, &object, None);
            assert!(
                broken
                    .iter()
                    .any(|(_, m)| m.contains("must be a DNS label")),
                "{kind} {name}: {broken:?}"
            );
        }
    }
}
