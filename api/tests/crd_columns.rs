//! What `kubectl` shows of each kind, written out by hand: its scope, plural, short names
//! and printer columns (name, type, JSON path, priority), in order. A column renamed,
//! moved, retyped, hidden behind `-o wide` or dropped fails here, as does a short name
//! that changes.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// A printer column: name, type, JSON path, priority (1 shows only with `-o wide`).
type Column = (&'static str, &'static str, &'static str, i32);

struct Kind {
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    columns: &'static [Column],
}

const AGE: Column = ("Age", "date", ".metadata.creationTimestamp", 0);

const KINDS: &[Kind] = &[
    Kind {
        kind: "Tenant",
        plural: "tenants",
        namespaced: false,
        short_names: &["tnt"],
        columns: &[
            ("Display Name", "string", ".spec.displayName", 0),
            ("Suspended", "boolean", ".spec.suspended", 0),
            ("Leases", "integer", ".status.activeLeases", 0),
            AGE,
        ],
    },
    Kind {
        kind: "CapacityPool",
        plural: "capacitypools",
        namespaced: false,
        short_names: &["cpool", "pool"],
        columns: &[
            ("Lendable", "integer", ".status.lendableNodes", 0),
            ("Lent", "integer", ".status.lentNodes", 0),
            ("Headroom", "integer", ".status.headroomNodes", 0),
            ("Spot/core-h", "string", ".status.spotPricePerCoreHour", 0),
            ("Nodes", "integer", ".status.nodes", 1),
            ("Lending", "boolean", ".spec.lendingEnabled", 1),
            AGE,
        ],
    },
    Kind {
        kind: "PeakReservation",
        plural: "peakreservations",
        namespaced: false,
        short_names: &["peak"],
        columns: &[
            ("Pool", "string", ".spec.pool", 0),
            ("Active", "boolean", ".status.active", 0),
            ("Next Start", "string", ".status.nextStart", 0),
            ("Next End", "string", ".status.nextEnd", 0),
            ("Holds", "integer", ".status.nodesHeld", 0),
            ("Zone", "string", ".spec.timeZone", 1),
            AGE,
        ],
    },
    Kind {
        kind: "CapacityLease",
        plural: "capacityleases",
        namespaced: true,
        short_names: &["cl"],
        columns: &[
            ("Class", "string", ".spec.class", 0),
            ("Phase", "string", ".status.phase", 0),
            ("Nodes", "integer", ".status.nodeCount", 0),
            ("Ends", "string", ".status.endsAt", 0),
            ("Deadline", "string", ".status.reclaimDeadline", 0),
            ("Cost", "string", ".status.costSummary", 0),
            ("Pool", "string", ".spec.pool", 1),
            AGE,
        ],
    },
    Kind {
        kind: "RateCard",
        plural: "ratecards",
        namespaced: false,
        short_names: &["rcard"],
        columns: &[
            ("Currency", "string", ".spec.currency", 0),
            ("From", "string", ".spec.effectiveFrom", 0),
            ("Until", "string", ".spec.effectiveUntil", 0),
            AGE,
        ],
    },
    Kind {
        kind: "UsageBill",
        plural: "usagebills",
        namespaced: true,
        short_names: &["ub", "bill"],
        columns: &[
            ("Period", "string", ".spec.period.start", 0),
            ("State", "string", ".spec.state", 0),
            ("Total", "string", ".spec.totals.total", 0),
            ("Currency", "string", ".spec.currency", 0),
            ("As Of", "string", ".spec.asOf", 1),
            ("Tenant", "string", ".spec.tenant", 1),
            AGE,
        ],
    },
];

fn crd_of(kind: &str) -> CustomResourceDefinition {
    offpeak_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

#[test]
fn every_kind_and_no_other_has_a_crd() {
    let mut generated: Vec<String> = offpeak_api::crds()
        .into_iter()
        .map(|c| c.spec.names.kind)
        .collect();
    generated.sort();
    let mut expected: Vec<&str> = KINDS.iter().map(|k| k.kind).collect();
    expected.sort();
    assert_eq!(generated, expected);
}

#[test]
fn each_kind_has_its_scope_plural_and_short_names() {
    for kind in KINDS {
        let crd = crd_of(kind.kind);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{}.offpeak.dev", kind.plural).as_str())
        );
        assert_eq!(crd.spec.names.plural, kind.plural, "{}", kind.kind);
        assert_eq!(
            crd.spec.scope,
            if kind.namespaced {
                "Namespaced"
            } else {
                "Cluster"
            },
            "{}",
            kind.kind
        );
        assert_eq!(
            crd.spec.names.short_names.unwrap_or_default(),
            kind.short_names,
            "short names of {}",
            kind.kind
        );
        assert_eq!(
            crd.spec.names.categories.unwrap_or_default(),
            ["offpeak"],
            "{}",
            kind.kind
        );
    }
}

#[test]
fn each_kind_shows_its_printer_columns_in_order() {
    for kind in KINDS {
        let crd = crd_of(kind.kind);
        assert_eq!(crd.spec.versions.len(), 1, "{}", kind.kind);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let columns: Vec<(String, String, String, i32)> = version
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.type_, c.json_path, c.priority.unwrap_or(0)))
            .collect();
        let expected: Vec<(String, String, String, i32)> = kind
            .columns
            .iter()
            .map(|(name, type_, path, priority)| {
                (
                    name.to_string(),
                    type_.to_string(),
                    path.to_string(),
                    *priority,
                )
            })
            .collect();
        assert_eq!(columns, expected, "printer columns of {}", kind.kind);
    }
}
