//! The pool plan without a cluster: what each situation writes, that a steady pool writes
//! nothing, and (by property) that applying a plan and planning again converges.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use offpeak_api::{
    CapacityLeaseSpec, ConditionStatus, EndReason, GoDuration, LeaseClass, LeasePhase,
    LeaseResources, Money, Name, Quantity, Timestamp,
};
use offpeak_billing::money::Currency;
use offpeak_billing::rate::{ClassPrices, RateCard, ResourcePrices};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;
use crate::plan::eligibility::TenantView;
use crate::plan::idle::PodFacts;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    utc("2026-11-22T20:00:00Z")
}

fn settings() -> PlanSettings {
    PlanSettings::default()
}

fn node(name: &str, cores: i64) -> NodeView {
    NodeView {
        name: name.into(),
        resource_version: Some("1".into()),
        ready: true,
        cordoned_by_others: false,
        withheld: None,
        marks: NodeMarks {
            idle_since: Some("2026-11-22T19:00:00Z".into()),
            ..NodeMarks::default()
        },
        allocatable: Ok(Resources::new(cores * 1000, 64 << 30, 0)),
        class: Some("standard".into()),
        pods: vec![],
        in_pool: true,
    }
}

fn pod(namespace: &str, name: &str) -> PodFacts {
    PodFacts {
        namespace: namespace.into(),
        name: name.into(),
        node_level: false,
        tenant: namespace.starts_with("tenant-"),
        deleting: false,
        gone_by: None,
        has_finalizers: false,
        disruption_target: false,
        grace_seconds: Some(30),
    }
}

fn spec(class: LeaseClass, cpu: &str, duration: &str) -> CapacityLeaseSpec {
    CapacityLeaseSpec {
        pool: Name::new("general"),
        class,
        resources: Some(LeaseResources {
            cpu: Some(Quantity(cpu.into())),
            memory: None,
            gpu: None,
        }),
        nodes: None,
        duration: Some(GoDuration::new(duration)),
        end_time: None,
        max_price_per_hour: (class == LeaseClass::Spot).then(|| Money::new("4.50")),
    }
}

fn lease(name: &str, namespace: &str, spec: CapacityLeaseSpec) -> LeaseView {
    LeaseView {
        uid: format!("uid-{namespace}-{name}"),
        namespace: namespace.into(),
        name: name.into(),
        resource_version: Some("1".into()),
        generation: Some(1),
        created: now() - Duration::minutes(1),
        deleting: false,
        has_finalizer: true,
        spec,
        status: Default::default(),
        failure: None,
        metered: true,
    }
}

fn card() -> RateCard {
    let prices = |cpu: i64| ResourcePrices {
        cpu: Decimal::new(cpu, 2),
        memory: Decimal::ZERO,
        gpu: Decimal::ZERO,
    };
    RateCard {
        name: "standard".into(),
        version: "1".into(),
        currency: Currency::from_code("USD", "test").unwrap(),
        effective_from: utc("2026-01-01T00:00:00Z"),
        effective_until: None,
        pools: vec![],
        prices: ClassPrices {
            spot: prices(4),
            reserved: prices(6),
        },
        minimum_charge_per_lease: None,
        spot_price_rule: None,
        sla_credit: None,
        precision: Some(4),
    }
}

fn tenant(name: &str) -> TenantView {
    TenantView {
        name: name.into(),
        suspended: false,
        allowed_pools: vec![],
        credit_limit: None,
        open_balance: Decimal::ZERO,
        committed: Decimal::ZERO,
    }
}

fn view(nodes: Vec<NodeView>, leases: Vec<LeaseView>) -> PoolView {
    PoolView {
        name: "general".into(),
        generation: Some(1),
        settings: Ok(PoolSettings {
            idle_after: Duration::zero(),
            notice: Duration::seconds(120),
            headroom: None,
            lending_enabled: true,
            minimum_runtime: Duration::zero(),
            reclaim_advisory: Duration::minutes(10),
            internal_pressure: PressureSettings {
                unschedulable_for: Duration::seconds(30),
                emergency_after: Duration::minutes(5),
            },
        }),
        status: None,
        nodes,
        leases,
        reservations: vec![],
        reservation_objects: vec![],
        pending: vec![],
        rate_card: Some(card()),
        tenants: BTreeMap::from([
            ("acme".to_string(), tenant("acme")),
            ("globex".to_string(), tenant("globex")),
        ]),
        namespace_tenants: BTreeMap::from([
            ("tenant-acme".to_string(), "acme".to_string()),
            ("tenant-globex".to_string(), "globex".to_string()),
        ]),
        held_back: BTreeSet::new(),
        ledger: Ledger::Healthy,
        confinement: Confinement::InPlace,
    }
}

/// Plans and applies in memory until nothing is left to do (at most `passes` times);
/// returns the final view and every plan made.
fn settle(mut view: PoolView, at: DateTime<Utc>, passes: usize) -> (PoolView, Vec<PoolPlan>) {
    let mut plans = Vec::new();
    for _ in 0..passes {
        let plan = plan(&view, at, &settings());
        if plan.is_empty() {
            return (view, plans);
        }
        view = simulate::apply(&view, &plan);
        plans.push(plan);
    }
    panic!("no fixed point after {passes} passes: {:#?}", plans.last());
}

fn lease_of<'v>(view: &'v PoolView, name: &str) -> &'v LeaseView {
    view.leases.iter().find(|l| l.name == name).unwrap()
}

fn condition<'s>(lease: &'s LeaseView, type_: &str) -> (ConditionStatus, &'s str, &'s str) {
    let c = lease
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition on {}", lease.name));
    (c.status, c.reason.as_str(), c.message.as_str())
}

#[test]
fn an_admitted_lease_is_bound_then_recorded_active_in_one_patch_per_node() {
    let mut render = lease("render", "tenant-acme", spec(LeaseClass::Spot, "32", "8h"));
    render.has_finalizer = false;
    let v = view(
        vec![node("n0", 16), node("n1", 16), node("n2", 16)],
        vec![render],
    );
    let plan = plan(&v, now(), &settings());
    let writes = &plan.leases[0].writes;
    assert_eq!(writes.len(), 4, "{writes:#?}");
    assert_eq!(writes[0], Write::AddFinalizer);
    let Write::Bind(patches) = &writes[1] else {
        panic!("{writes:#?}")
    };
    assert_eq!(
        patches.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(),
        ["n0", "n1"]
    );
    // The lease is marked by its UID; the idle clock goes in the same patch.
    assert_eq!(
        patches[0].to,
        NodeMarks {
            lease: Some("uid-tenant-acme-render".into()),
            lease_name: Some("tenant-acme/render".into()),
            tenant: Some("acme".into()),
            tainted_for: Some("acme".into()),
            idle_since: None,
            reclaiming: false,
        }
    );
    let Write::Status(status) = &writes[2] else {
        panic!("{writes:#?}")
    };
    assert_eq!(status.phase, Some(LeasePhase::Active));
    assert_eq!(
        status.admitted_at.as_ref().unwrap().as_str(),
        "2026-11-22T20:00:00Z"
    );
    assert_eq!(
        status.ends_at.as_ref().unwrap().as_str(),
        "2026-11-23T04:00:00Z"
    );
    assert_eq!(status.bindings.len(), 1);
    assert_eq!(status.bindings[0].cpu.0, "32");
    assert_eq!(status.bindings[0].memory.0, "128Gi");
    assert_eq!(status.cost_summary.as_deref(), Some("0.0000 USD"));
    assert_eq!(
        writes[3],
        Write::Event(Note::normal(
            "Admitted",
            "admitted and bound 2 node(s): n0, n1; ends at 2026-11-23T04:00:00Z".into()
        ))
    );
    // No separate idle-clock patch for the nodes just bound; n2 keeps its clock.
    assert!(plan.nodes.is_empty(), "{:#?}", plan.nodes);
    let status = plan.status.expect("a pool status");
    assert_eq!(
        (status.lent_nodes, status.lendable_nodes),
        (Some(2), Some(1))
    );
}

#[test]
fn a_steady_pool_plans_nothing_and_the_cost_is_refreshed_only_when_due() {
    let v = view(
        vec![node("n0", 16), node("n1", 16)],
        vec![lease(
            "render",
            "tenant-acme",
            spec(LeaseClass::Spot, "16", "8h"),
        )],
    );
    let (steady, plans) = settle(v, now(), 3);
    assert_eq!(plans.len(), 1, "admitted in one pass");
    // Four minutes on, nothing has changed but the clock: nothing to write.
    let later = now() + Duration::minutes(4);
    let quiet = plan(&steady, later, &settings());
    assert!(quiet.is_empty(), "{quiet:#?}");
    assert_eq!(quiet.wake_at, Some(now() + Duration::minutes(5)));
    // At five minutes the estimate is refreshed: one status write, nothing else.
    let due = plan(&steady, now() + Duration::minutes(5), &settings());
    assert_eq!(due.writes(), 1, "{due:#?}");
    let Write::Status(status) = &due.leases[0].writes[0] else {
        panic!("{due:#?}")
    };
    // 16 cores × 0.04 per core-hour × 5 minutes.
    assert_eq!(status.cost_summary.as_deref(), Some("0.0533 USD"));
    assert_eq!(
        status.cost_as_of.as_ref().unwrap().as_str(),
        "2026-11-22T20:05:00Z"
    );
}

#[test]
fn a_lease_ends_at_its_term_first_in_its_status_then_its_node_goes_back() {
    let mut v = view(
        vec![node("n0", 16)],
        vec![lease(
            "render",
            "tenant-acme",
            spec(LeaseClass::Spot, "16", "1h"),
        )],
    );
    v = settle(v, now(), 3).0;
    // The tenant runs a pod on its node.
    v.nodes[0].pods.push(pod("tenant-acme", "render-1"));
    let end = now() + Duration::hours(1);
    let first = plan(&v, end, &settings());
    let writes = &first.leases[0].writes;
    let Write::Status(status) = &writes[0] else {
        panic!("{writes:#?}")
    };
    assert_eq!(status.phase, Some(LeasePhase::Ended));
    assert_eq!(
        status.ended_at.as_ref().unwrap().as_str(),
        "2026-11-22T21:00:00Z"
    );
    assert_eq!(status.end_reason, Some(EndReason::Expired));
    assert!(matches!(&writes[1], Write::Event(n) if n.reason == "Ended"));
    // Labels off first (the taint stays while the tenant's pod leaves), then the eviction.
    let Write::Node(patch) = &writes[2] else {
        panic!("{writes:#?}")
    };
    assert_eq!(
        patch.to,
        NodeMarks {
            tainted_for: Some("acme".into()),
            ..NodeMarks::default()
        }
    );
    assert_eq!(
        writes[3],
        Write::Evict(Eviction {
            namespace: "tenant-acme".into(),
            name: "render-1".into(),
            node: "n0".into(),
            grace_seconds: Some(0),
        })
    );
    let (done, plans) = settle(simulate::apply(&v, &first), end, 3);
    assert_eq!(
        plans.len(),
        1,
        "one more pass takes the taint off: {plans:#?}"
    );
    assert_eq!(done.nodes[0].marks.tainted_for, None);
    assert_eq!(
        done.nodes[0].marks.idle_since.as_deref(),
        Some("2026-11-22T21:00:00Z")
    );
    let ended = lease_of(&done, "render");
    assert_eq!(condition(ended, "NodesReturned").0, ConditionStatus::True);
    assert_eq!(condition(ended, "Admitted").1, "TermEnded");
}

#[test]
fn a_deleted_lease_ends_cancelled_gives_its_nodes_back_then_lets_go_of_its_finalizer() {
    let mut v = view(
        vec![node("n0", 16), node("n1", 16)],
        vec![lease(
            "render",
            "tenant-acme",
            spec(LeaseClass::Reserved, "32", "8h"),
        )],
    );
    v = settle(v, now(), 3).0;
    v.leases[0].deleting = true;
    let at = now() + Duration::minutes(30);
    let (done, plans) = settle(v, at, 4);
    let Write::Status(status) = &plans[0].leases[0].writes[0] else {
        panic!("{plans:#?}")
    };
    assert_eq!(status.end_reason, Some(EndReason::Cancelled));
    assert_eq!(
        status.ended_at.as_ref().unwrap().as_str(),
        "2026-11-22T20:30:00Z"
    );
    let last = plans.last().unwrap();
    assert!(
        last.leases[0].writes.ends_with(&[Write::RemoveFinalizer]),
        "{last:#?}"
    );
    assert!(
        last.leases[0]
            .writes
            .iter()
            .any(|w| matches!(w, Write::Event(n) if n.reason == "NodesReturned"))
    );
    assert!(done.leases.is_empty(), "the lease is gone");
    assert!(done.nodes.iter().all(|n| !n.marks.is_tenants()));
}

#[test]
fn a_node_marked_for_no_lease_that_holds_it_goes_back() {
    let mut stray = node("n0", 16);
    stray.marks = NodeMarks::lent(
        &lease("gone", "tenant-acme", spec(LeaseClass::Spot, "16", "1h")),
        "acme",
    );
    let (done, plans) = settle(view(vec![stray], vec![]), now(), 3);
    assert!(matches!(plans[0].nodes[0], Write::Node(_)));
    assert!(!done.nodes[0].marks.is_tenants());
}

#[test]
fn a_lease_whose_write_failed_waits_for_its_retry_and_the_rest_of_the_pool_goes_on() {
    let mut failing = lease("first", "tenant-acme", spec(LeaseClass::Spot, "16", "1h"));
    failing.failure = Some(Failure {
        reason: "BindFailed".into(),
        message: "cannot lend node(s) n0".into(),
        retry_at: now() + Duration::seconds(2),
    });
    let mut other = lease(
        "second",
        "tenant-globex",
        spec(LeaseClass::Spot, "16", "1h"),
    );
    other.created = now();
    let mut v = view(vec![node("n0", 16), node("n1", 16)], vec![failing, other]);
    v.held_back.insert("n0".into());
    let plan = plan(&v, now(), &settings());
    assert_eq!(plan.leases.len(), 1, "{plan:#?}");
    assert_eq!(plan.leases[0].name, "second");
    let Write::Bind(patches) = &plan.leases[0].writes[0] else {
        panic!("{plan:#?}")
    };
    assert_eq!(
        patches[0].node, "n1",
        "the node that refused is passed over"
    );
    assert_eq!(plan.wake_at, Some(now() + Duration::seconds(2)));
}

#[test]
fn a_lease_that_succeeds_after_a_failure_gets_its_synced_condition_back() {
    let mut l = lease("render", "tenant-acme", spec(LeaseClass::Spot, "16", "1h"));
    l.status.conditions = crate::plan::conditions::set(
        &[],
        "Synced",
        false,
        "BindFailed",
        "cannot lend node(s) n0",
        Some(1),
        now() - Duration::seconds(5),
    );
    let (done, _) = settle(view(vec![node("n0", 16)], vec![l]), now(), 3);
    let render = lease_of(&done, "render");
    assert_eq!(render.status.phase, Some(LeasePhase::Active));
    assert_eq!(
        condition(render, "Synced"),
        (
            ConditionStatus::True,
            "Synced",
            "every write for this lease went through"
        )
    );
}

#[test]
fn a_term_past_366_days_is_rejected_and_a_rejected_lease_waits_for_a_new_generation() {
    let mut long = spec(LeaseClass::Spot, "16", "1h");
    long.duration = None;
    long.end_time = Some(Timestamp::new("2028-01-01T00:00:00Z"));
    let (done, _) = settle(
        view(
            vec![node("n0", 16)],
            vec![lease("long", "tenant-acme", long)],
        ),
        now(),
        3,
    );
    let rejected = lease_of(&done, "long");
    assert_eq!(rejected.status.phase, Some(LeasePhase::Rejected));
    assert_eq!(
        condition(rejected, "Admitted").2,
        "spec.endTime 2028-01-01T00:00:00Z is more than 366 days (8784h) away; a lease's term is at most 366 days"
    );
    // Edited: a new generation is decided again.
    let mut edited = done.clone();
    edited.leases[0].generation = Some(2);
    edited.leases[0].spec = spec(LeaseClass::Spot, "16", "1h");
    let (again, _) = settle(edited, now(), 3);
    assert_eq!(
        lease_of(&again, "long").status.phase,
        Some(LeasePhase::Active)
    );
}

#[test]
fn a_pending_lease_is_told_why_once_and_its_message_does_not_move_with_the_clock() {
    let mut v = view(
        vec![node("n0", 16)],
        vec![lease(
            "big",
            "tenant-acme",
            spec(LeaseClass::Reserved, "32", "2h"),
        )],
    );
    v.nodes.push(node("n1", 16));
    v.nodes[1].pods.push(pod("internal", "web-1"));
    let (waiting, plans) = settle(v, now(), 3);
    assert_eq!(plans.len(), 1);
    let big = lease_of(&waiting, "big");
    assert_eq!(
        condition(big, "Admitted"),
        (
            ConditionStatus::False,
            "InsufficientCapacity",
            "pool general has 1 free lendable node(s): short of cpu 16"
        )
    );
    assert!(plans[0].leases[0]
        .writes
        .iter()
        .any(|w| matches!(w, Write::Event(n) if n.message == "Pending: pool general has 1 free lendable node(s): short of cpu 16")));
    assert!(plan(&waiting, now() + Duration::minutes(3), &settings()).is_empty());
}

#[test]
fn idle_clocks_start_when_a_node_goes_idle_and_stop_when_it_is_busy() {
    let mut fresh = node("n0", 16);
    fresh.marks.idle_since = None;
    let mut busy = node("n1", 16);
    busy.pods.push(pod("internal", "web-1"));
    let mut v = view(vec![fresh, busy], vec![]);
    v.settings = Ok(PoolSettings {
        idle_after: Duration::minutes(3),
        ..v.settings.unwrap()
    });
    let plan = plan(&v, now(), &settings());
    let clocks: Vec<(&str, Option<&str>)> = plan
        .nodes
        .iter()
        .map(|w| match w {
            Write::Node(p) => (p.node.as_str(), p.to.idle_since.as_deref()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(clocks, [("n0", Some("2026-11-22T20:00:00Z")), ("n1", None)]);
    assert_eq!(
        plan.wake_at,
        Some(now() + Duration::minutes(3)),
        "when n0 matures"
    );
}

#[test]
fn tenants_in_one_pass_cannot_pass_their_credit_limit_together() {
    let mut v = view(
        (0..4).map(|i| node(&format!("n{i}"), 16)).collect(),
        (0..3)
            .map(|i| {
                let mut l = lease(
                    &format!("l{i}"),
                    "tenant-acme",
                    spec(LeaseClass::Spot, "16", "2h"),
                );
                l.created = now() + Duration::seconds(i);
                l
            })
            .collect(),
    );
    // Each may cost 4.50 × 2 h = 9.00: two fit in 20.00.
    v.tenants.get_mut("acme").unwrap().credit_limit = Some(Decimal::new(2000, 2));
    let (done, _) = settle(v, now(), 3);
    let phases: Vec<_> = done.leases.iter().map(|l| l.status.phase).collect();
    assert_eq!(
        phases,
        [
            Some(LeasePhase::Active),
            Some(LeasePhase::Active),
            Some(LeasePhase::Pending)
        ]
    );
    assert_eq!(
        condition(lease_of(&done, "l2"), "Admitted").1,
        "CreditLimit"
    );
}

// Random pools: nodes of a few sizes, some busy or not ready, some already lent; leases
// pending, active (bound consistently), ended or deleted; at random instants.
fn arb_view() -> impl Strategy<Value = (PoolView, i64)> {
    let nodes = prop::collection::vec((prop::sample::select(vec![8i64, 16, 32]), 0u8..6), 1..8);
    let leases = prop::collection::vec(
        (
            prop::bool::ANY, // spot or reserved
            prop::sample::select(vec!["8", "16", "24", "48", "100"]),
            prop::sample::select(vec!["30m", "1h", "3h"]),
            0u8..6,          // pending, active, ended, deleted...
            prop::bool::ANY, // tenant acme or globex
        ),
        0..6,
    );
    (nodes, leases, 0i64..240).prop_map(|(nodes, leases, minutes)| {
        let mut nodes: Vec<NodeView> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, (cores, kind))| {
                let mut n = node(&format!("n{i}"), cores);
                match kind {
                    0 => n.pods.push(pod("internal", &format!("web-{i}"))),
                    1 => n.ready = false,
                    2 => n.marks.idle_since = None,
                    _ => {}
                }
                n
            })
            .collect();
        let mut views = Vec::new();
        for (i, (spot, cpu, duration, phase, acme)) in leases.into_iter().enumerate() {
            let class = if spot {
                LeaseClass::Spot
            } else {
                LeaseClass::Reserved
            };
            let namespace = if acme { "tenant-acme" } else { "tenant-globex" };
            let mut l = lease(&format!("l{i}"), namespace, spec(class, cpu, duration));
            l.created = now() - Duration::minutes(10) + Duration::seconds(i as i64);
            let free = nodes
                .iter()
                .position(|n| n.ready && n.pods.is_empty() && !n.marks.is_tenants());
            match (phase, free) {
                (1..=3, Some(at)) => {
                    // Active since ten minutes ago on one node, with a tenant pod.
                    let tenant = if acme { "acme" } else { "globex" };
                    nodes[at].marks = NodeMarks::lent(&l, tenant);
                    nodes[at].pods.push(pod(namespace, &format!("p{i}")));
                    let term = crate::plan::calendar::Interval::new(
                        now() - Duration::minutes(10),
                        now() - Duration::minutes(10)
                            + observe::duration(&GoDuration::new(duration)).unwrap(),
                    );
                    l.status = status::admitted(
                        &l,
                        &[nodes[at].name.clone()],
                        &nodes[at].capacity(),
                        term,
                        now() - Duration::minutes(10),
                    );
                    l.deleting = phase == 3;
                }
                (4, _) => l.deleting = true,
                _ => {}
            }
            views.push(l);
        }
        (view(nodes, views), minutes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn applying_a_plan_and_planning_again_converges_to_a_consistent_pool((view, minutes) in arb_view()) {
        let at = now() + Duration::minutes(minutes);
        let (done, plans) = settle(view, at, 8);
        // A plan that starts no return is a fixed point at once.
        if let Some(first) = plans.first()
            && !first.leases.iter().flat_map(|l| &l.writes).chain(&first.nodes).any(|w| matches!(w, Write::Evict(_) | Write::Node(_)))
        {
            prop_assert!(plans.len() == 1, "{plans:#?}");
        }
        let holders: BTreeMap<&str, &LeaseView> = done.leases.iter().filter(|l| l.holds_nodes()).map(|l| (l.uid.as_str(), l)).collect();
        for node in &done.nodes {
            match &node.marks.lease {
                Some(uid) => {
                    let lease = holders.get(uid.as_str());
                    prop_assert!(lease.is_some(), "{} is marked for {uid}, which does not hold it", node.name);
                    prop_assert!(lease.unwrap().status.bound_nodes.iter().any(|n| n.as_str() == node.name));
                }
                None => prop_assert!(!node.marks.is_tenants(), "{} kept a tenant's marks: {:?}", node.name, node.marks),
            }
        }
        for lease in done.leases.iter().filter(|l| l.holds_nodes()) {
            let end = observe::instant(lease.status.ends_at.as_ref().unwrap()).unwrap();
            prop_assert!(end > at, "{} is Active past its term", lease.name);
            for bound in &lease.status.bound_nodes {
                let node = done.nodes.iter().find(|n| n.name == bound.as_str()).unwrap();
                prop_assert_eq!(node.marks.lease.as_deref(), Some(lease.uid.as_str()));
                prop_assert!(node.pods.iter().all(|p| !p.tenant || p.namespace == lease.namespace), "two tenants on {}", node.name);
            }
        }
        for lease in &done.leases {
            prop_assert!(!lease.deleting || lease.has_finalizer, "a deleted lease without finalizer stays: {}", lease.name);
        }
        // Nodes with internal pods are never lent.
        for node in done.nodes.iter().filter(|n| n.pods.iter().any(|p| !p.tenant && !p.node_level)) {
            prop_assert!(!node.marks.is_tenants(), "{} runs internal pods and is lent", node.name);
        }
    }

    #[test]
    fn a_lease_that_fits_alone_on_free_nodes_is_admitted(cores in prop::sample::select(vec![8i64, 16, 32]), count in 1usize..6, ask in 1i64..64, spot in prop::bool::ANY) {
        let nodes: Vec<NodeView> = (0..count).map(|i| node(&format!("n{i}"), cores)).collect();
        let class = if spot { LeaseClass::Spot } else { LeaseClass::Reserved };
        let fits = ask <= cores * count as i64;
        let (done, _) = settle(view(nodes, vec![lease("l", "tenant-acme", spec(class, &ask.to_string(), "1h"))]), now(), 3);
        let phase = lease_of(&done, "l").status.phase;
        if fits {
            prop_assert_eq!(phase, Some(LeasePhase::Active));
        } else {
            prop_assert_eq!(phase, Some(LeasePhase::Rejected));
        }
    }
}

// Reclaim with notice.

fn reclaim_view(leases: Vec<LeaseView>, nodes: usize, at: DateTime<Utc>) -> PoolView {
    let mut v = view(
        (0..nodes).map(|i| node(&format!("n{i}"), 16)).collect(),
        leases,
    );
    if let Ok(settings) = v.settings.as_mut() {
        settings.notice = Duration::seconds(60);
    }
    let (mut v, _) = settle(v, at, 3);
    // The tenant runs a pod on every lent node.
    for node in &mut v.nodes {
        if let Some(name) = node.marks.lease_name.clone() {
            let (namespace, lease) = name.split_once('/').unwrap();
            node.pods.push(pod(namespace, &format!("{lease}-pod")));
        }
    }
    v
}

fn window(
    name: &str,
    start: DateTime<Utc>,
    keep: crate::plan::admission::Keep,
) -> crate::plan::admission::Reservation {
    crate::plan::admission::Reservation {
        name: name.into(),
        calendar: crate::plan::calendar::Calendar {
            schedule: crate::plan::calendar::Schedule::Once {
                start,
                end: start + Duration::hours(4),
            },
            valid_from: None,
            valid_until: None,
        },
        keep,
    }
}

fn spot(name: &str, namespace: &str, max: &str) -> LeaseView {
    let mut s = spec(LeaseClass::Spot, "16", "8h");
    s.max_price_per_hour = Some(Money::new(max));
    lease(name, namespace, s)
}

#[test]
fn a_peak_window_gives_notice_that_runs_out_as_it_starts_and_the_nodes_come_back() {
    let start = now() + Duration::minutes(3);
    let mut v = reclaim_view(vec![spot("render", "tenant-acme", "4.50")], 1, now());
    v.reservations.push(window(
        "launch",
        start,
        crate::plan::admission::Keep::Percent(100),
    ));

    // Three minutes ahead, within the advisory: likely, no notice yet.
    let (v, plans) = settle(v, now(), 3);
    let render = lease_of(&v, "render");
    assert_eq!(render.status.phase, Some(LeasePhase::Active));
    assert_eq!(
        condition(render, "ReclaimLikely"),
        (
            ConditionStatus::True,
            "PeakReservation",
            "peak reservation launch lets pool lend at most 0 node(s) from 2026-11-22T20:03:00Z"
        )
    );
    assert!(
        plans[0].leases[0]
            .writes
            .iter()
            .any(|w| matches!(w, Write::Event(n) if n.reason == "ReclaimLikely"))
    );
    assert_eq!(
        plans.last().unwrap().wake_at,
        Some(start - Duration::seconds(60)),
        "woken for the notice"
    );

    // At the start less the notice: Reclaiming until the start, the node cordoned for
    // tenants by Offpeak's own taint, the pod told.
    let at = start - Duration::seconds(60);
    let notice = plan(&v, at, &settings());
    let writes = &notice.leases[0].writes;
    let Write::Status(status) = &writes[0] else {
        panic!("{writes:#?}")
    };
    assert_eq!(status.phase, Some(LeasePhase::Reclaiming));
    assert_eq!(
        status.notice_given_at.as_ref().unwrap().as_str(),
        "2026-11-22T20:02:00Z"
    );
    assert_eq!(
        status.reclaim_deadline.as_ref().unwrap().as_str(),
        "2026-11-22T20:03:00Z"
    );
    assert_eq!(status.reclaim_reason.as_deref(), Some("PeakReservation"));
    assert_eq!(
        status.sla_credit_reason, None,
        "a Spot lease earns no credit"
    );
    assert!(
        matches!(&writes[1], Write::Event(n) if n.message == "notice to tenant-acme/render: 60 s, until 2026-11-22T20:03:00Z; peak reservation launch lets pool lend at most 0 node(s) from 2026-11-22T20:03:00Z")
    );
    assert!(matches!(&writes[2], Write::Node(p) if p.to.reclaiming && p.to.lease.is_some()));
    assert_eq!(
        writes[3],
        Write::DisruptionTarget {
            pod: Eviction { namespace: "tenant-acme".into(), name: "render-pod".into(), node: "n0".into(), grace_seconds: None },
            message: "lease tenant-acme/render is reclaimed; its pods are evicted at 2026-11-22T20:03:00Z".into(),
        }
    );
    assert_eq!(notice.wake_at, Some(start));
    let (v, _) = settle(simulate::apply(&v, &notice), at, 3);
    // Halfway through the notice nothing more happens.
    assert!(plan(&v, at + Duration::seconds(30), &settings()).is_empty());

    // At the deadline: Ended, Reclaimed, the pod evicted with no grace, then the node back.
    let (done, plans) = settle(v, start, 4);
    let Write::Status(ended) = &plans[0].leases[0].writes[0] else {
        panic!("{plans:#?}")
    };
    assert_eq!(
        (ended.phase, ended.end_reason),
        (Some(LeasePhase::Ended), Some(EndReason::Reclaimed))
    );
    assert_eq!(
        ended.ended_at.as_ref().unwrap().as_str(),
        "2026-11-22T20:03:00Z"
    );
    assert!(
        plans[0].leases[0]
            .writes
            .iter()
            .any(|w| matches!(w, Write::Evict(e) if e.grace_seconds == Some(0)))
    );
    assert!(!done.nodes[0].marks.is_tenants());
}

#[test]
fn a_restart_never_moves_a_notice_written_before() {
    let start = now() + Duration::minutes(3);
    let mut v = reclaim_view(vec![spot("render", "tenant-acme", "4.50")], 1, now());
    v.reservations.push(window(
        "launch",
        start,
        crate::plan::admission::Keep::Percent(100),
    ));
    let (v, _) = settle(v, start - Duration::seconds(60), 3);
    // Seen again later (a restart), the window since removed: the deadline holds.
    let mut later = v.clone();
    later.reservations.clear();
    let quiet = plan(&later, start - Duration::seconds(10), &settings());
    assert!(quiet.is_empty(), "{quiet:#?}");
    assert_eq!(quiet.wake_at, Some(start));
    // Back only after the deadline passed: reclaimed at once.
    let late = plan(&later, start + Duration::seconds(40), &settings());
    let Write::Status(ended) = &late.leases[0].writes[0] else {
        panic!("{late:#?}")
    };
    assert_eq!(ended.end_reason, Some(EndReason::Reclaimed));
    assert_eq!(
        ended.ended_at.as_ref().unwrap().as_str(),
        "2026-11-22T20:03:40Z"
    );
}

#[test]
fn internal_pressure_takes_the_cheapest_spot_lease_first_and_spares_reserved_until_an_emergency() {
    let mut cheap = spot("cheap", "tenant-acme", "1.00");
    cheap.created = now() - Duration::minutes(3);
    let mut dear = spot("dear", "tenant-globex", "4.00");
    dear.created = now() - Duration::minutes(2);
    let mut steady = lease(
        "steady",
        "tenant-globex",
        spec(LeaseClass::Reserved, "16", "8h"),
    );
    steady.created = now() - Duration::minutes(1);
    let mut v = reclaim_view(vec![cheap, dear, steady], 3, now());
    let pending = |since: i64| PendingPod {
        namespace: "internal".into(),
        name: "web-7".into(),
        since: now() - Duration::seconds(since),
        requests: Resources::new(4000, 8 << 30, 0),
    };
    // Pending 10 s: likely for the cheapest, no notice.
    v.pending = vec![pending(10)];
    let p = plan(&v, now(), &settings());
    assert_eq!(p.leases.len(), 1, "{p:#?}");
    assert_eq!(p.leases[0].name, "cheap");
    assert_eq!(p.wake_at, Some(now() + Duration::seconds(20)));
    // Pending 40 s: notice to the cheapest Spot lease only.
    v.pending = vec![pending(40)];
    let (after, _) = settle(v.clone(), now(), 3);
    let phases: Vec<_> = after
        .leases
        .iter()
        .map(|l| (l.name.as_str(), l.status.phase))
        .collect();
    assert_eq!(
        phases,
        [
            ("cheap", Some(LeasePhase::Reclaiming)),
            ("dear", Some(LeasePhase::Active)),
            ("steady", Some(LeasePhase::Active))
        ]
    );
    assert_eq!(
        lease_of(&after, "cheap").status.reclaim_reason.as_deref(),
        Some("InternalPressure")
    );
    assert_eq!(
        condition(lease_of(&after, "cheap"), "Reclaiming").2,
        "1 internal pod(s) cannot be scheduled (internal/web-7) and need cpu 4, memory 8Gi; the tenant's pods are evicted at 2026-11-22T20:01:00Z"
    );
    // Still pending past emergencyAfter with every Spot lease taken: the Reserved lease too,
    // with an SLA credit.
    let mut urgent = after.clone();
    urgent.pending = vec![
        pending(400),
        PendingPod {
            name: "web-8".into(),
            requests: Resources::new(40_000, 0, 0),
            ..pending(400)
        },
    ];
    let (urgent, _) = settle(urgent, now(), 3);
    let steady = lease_of(&urgent, "steady");
    assert_eq!(steady.status.phase, Some(LeasePhase::Reclaiming));
    assert_eq!(
        steady.status.reclaim_reason.as_deref(),
        Some("InternalPressureEmergency")
    );
    assert!(
        steady
            .status
            .sla_credit_reason
            .as_deref()
            .is_some_and(|r| r.starts_with(
                "a Reserved lease reclaimed before its term in an emergency: 2 internal pod(s)"
            ))
    );
}

#[test]
fn a_lease_younger_than_the_minimum_runtime_is_not_reclaimed_for_pressure() {
    let mut young = spot("young", "tenant-acme", "1.00");
    young.created = now();
    let mut v = reclaim_view(vec![young], 1, now() - Duration::minutes(2));
    if let Ok(settings) = v.settings.as_mut() {
        settings.minimum_runtime = Duration::minutes(5);
    }
    v.pending = vec![PendingPod {
        namespace: "internal".into(),
        name: "web-1".into(),
        since: now() - Duration::minutes(1),
        requests: Resources::new(1000, 0, 0),
    }];
    // Admitted two minutes ago: three to go.
    let (v, _) = settle(v, now(), 3);
    assert_eq!(lease_of(&v, "young").status.phase, Some(LeasePhase::Active));
    let (v, _) = settle(v, now() + Duration::minutes(3) + Duration::seconds(1), 3);
    assert_eq!(
        lease_of(&v, "young").status.phase,
        Some(LeasePhase::Reclaiming)
    );
}

#[test]
fn a_spot_lease_whose_nodes_cost_more_than_its_maximum_ends_after_notice_price_exceeded() {
    let mut v = reclaim_view(vec![spot("thrifty", "tenant-acme", "0.70")], 2, now());
    // Internal load fills the other node: utilisation 1, and the spot price doubles.
    v.nodes[1].pods.push(pod("internal", "web-1"));
    if let Some(card) = v.rate_card.as_mut() {
        card.spot_price_rule = Some(offpeak_billing::rate::SpotPriceRule {
            base_utilisation: Decimal::new(5, 1),
            sensitivity: Decimal::from(2),
            floor_multiplier: Decimal::new(5, 1),
            ceiling_multiplier: Decimal::from(2),
        });
    }
    let (v, _) = settle(v, now(), 3);
    let thrifty = lease_of(&v, "thrifty");
    assert_eq!(
        thrifty.status.reclaim_reason.as_deref(),
        Some("PriceExceeded")
    );
    assert_eq!(
        condition(thrifty, "Reclaiming").2,
        "the spot price now makes its 1 node(s) cost 1.28 per hour, above maxPricePerHour 0.70; the tenant's pods are evicted at 2026-11-22T20:01:00Z"
    );
    let (done, _) = settle(v, now() + Duration::seconds(60), 4);
    assert_eq!(
        lease_of(&done, "thrifty").status.end_reason,
        Some(EndReason::PriceExceeded)
    );
    // The pool's history says how the price moved, for the bill.
    let history = &done.status.as_ref().unwrap().utilisation_history;
    let last = history.last().unwrap();
    assert_eq!(
        (
            last.utilisation.as_str(),
            last.spot_price_per_core_hour.as_ref().map(|m| m.as_str())
        ),
        ("0.5", Some("0.04"))
    );
}

#[test]
fn spot_waits_rather_than_be_admitted_into_a_window_it_could_not_get_notice_for() {
    let mut v = view(
        vec![node("n0", 16)],
        vec![spot("late", "tenant-acme", "4.50")],
    );
    v.reservations.push(window(
        "launch",
        now() + Duration::seconds(90),
        crate::plan::admission::Keep::Percent(100),
    ));
    let (v, _) = settle(v, now(), 3);
    let late = lease_of(&v, "late");
    assert_eq!(late.status.phase, Some(LeasePhase::Pending));
    assert_eq!(
        condition(late, "Admitted").2,
        "peak reservation launch lets pool general lend at most 0 node(s) from 2026-11-22T20:01:30Z, sooner than this Spot lease's notice and minimum runtime (120s)"
    );
}

#[test]
fn a_reservation_reports_its_windows_and_says_when_one_starts_and_ends() {
    let start = now() + Duration::minutes(3);
    let mut v = view(vec![node("n0", 16), node("n1", 16)], vec![]);
    let reservation = window("launch", start, crate::plan::admission::Keep::Nodes(1));
    v.reservations.push(reservation.clone());
    v.reservation_objects.push(ReservationView {
        name: "launch".into(),
        generation: Some(1),
        reservation: Ok(reservation),
        status: None,
    });
    let (v, plans) = settle(v, now(), 3);
    let before = plans[0].reservations[0].status.clone().unwrap();
    assert_eq!(before.active, Some(false));
    assert_eq!(
        before.next_start.as_ref().unwrap().as_str(),
        "2026-11-22T20:03:00Z"
    );
    assert_eq!(
        before.next_end.as_ref().unwrap().as_str(),
        "2026-11-23T00:03:00Z"
    );
    assert_eq!(before.nodes_held, Some(1));
    assert!(plans[0].reservations[0].events.is_empty());
    let started = plan(&v, start, &settings());
    let during = started.reservations[0].status.clone().unwrap();
    assert_eq!(during.active, Some(true));
    assert_eq!(
        started.reservations[0].events,
        [Note::normal("WindowStarted", "peak reservation window started: keeps 1 of pool general's 2 node(s) internal until 2026-11-23T00:03:00Z".into())]
    );
    let (v, _) = settle(simulate::apply(&v, &started), start, 3);
    let ended = plan(&v, start + Duration::hours(4), &settings());
    assert_eq!(ended.reservations[0].events[0].reason, "WindowEnded");
}

#[test]
fn an_internal_pod_found_on_a_lent_node_is_evicted_and_the_pool_says_so() {
    let mut v = reclaim_view(vec![spot("render", "tenant-acme", "4.50")], 1, now());
    v.nodes[0].pods.push(pod("internal", "tolerates-all"));
    let p = plan(&v, now(), &settings());
    assert_eq!(
        p.nodes,
        [Write::Evict(Eviction {
            namespace: "internal".into(),
            name: "tolerates-all".into(),
            node: "n0".into(),
            grace_seconds: None,
        })]
    );
    assert_eq!(
        p.events,
        [Note::warning(
            "InternalPodOnLentNode",
            "internal pod internal/tolerates-all was on node n0, lent to tenant acme: evicted"
                .into()
        )]
    );
}

#[test]
fn a_node_that_leaves_the_pool_under_a_lease_stops_being_billed_from_then_on() {
    let v = view(
        vec![node("n0", 16), node("n1", 16), node("n2", 16)],
        vec![lease(
            "render",
            "tenant-acme",
            spec(LeaseClass::Spot, "32", "8h"),
        )],
    );
    let (mut v, _) = settle(v, now(), 3);
    // n1 is deleted; later n0 is relabelled out of the pool.
    v.nodes.retain(|n| n.name != "n1");
    let at = now() + Duration::minutes(10);
    let (after, plans) = settle(v, at, 3);
    let render = lease_of(&after, "render");
    assert_eq!(render.status.phase, Some(LeasePhase::Active));
    assert_eq!(
        render
            .status
            .bound_nodes
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>(),
        ["n0"]
    );
    let last = render.status.bindings.last().unwrap();
    assert_eq!(
        (last.at.as_str(), last.cpu.0.as_str()),
        ("2026-11-22T20:10:00Z", "16")
    );
    assert_eq!(
        render.status.bindings.len(),
        2,
        "the first binding stays, for the bill"
    );
    assert_eq!(
        condition(render, "NodesLost").2,
        "node(s) n1 left pool general (deleted, or relabelled out of it) under the lease"
    );
    assert!(
        plans[0].leases[0]
            .writes
            .iter()
            .any(|w| matches!(w, Write::Event(n) if n.warning && n.reason == "NodesLost"))
    );

    let mut relabelled = after.clone();
    relabelled
        .nodes
        .iter_mut()
        .find(|n| n.name == "n0")
        .unwrap()
        .in_pool = false;
    let later = at + Duration::minutes(1);
    let (done, _) = settle(relabelled, later, 4);
    let render = lease_of(&done, "render");
    assert_eq!(render.status.phase, Some(LeasePhase::Ended), "no node left");
    assert_eq!(render.status.end_reason, Some(EndReason::Reclaimed));
    assert!(
        !done
            .nodes
            .iter()
            .find(|n| n.name == "n0")
            .unwrap()
            .marks
            .is_tenants(),
        "the relabelled node is unmarked"
    );
}

#[test]
fn a_second_utilisation_change_within_one_second_is_recorded_at_the_next() {
    // Each history entry is a billing fact keyed by its second: two in one second would
    // give the ledger two different facts under one key.
    let v = view(vec![node("n0", 16), node("n1", 16)], vec![]);
    let (mut v, _) = settle(v, now(), 3);
    let at = |v: &PoolView| {
        let h = &v.status.as_ref().unwrap().utilisation_history;
        h.iter()
            .map(|c| (c.at.as_str().to_owned(), c.utilisation.clone()))
            .collect::<Vec<_>>()
    };
    let before = at(&v);
    v.nodes[1].pods.push(pod("internal", "web-1"));
    let same_second = plan(&v, now(), &settings());
    let v = simulate::apply(&v, &same_second);
    assert_eq!(at(&v), before, "a change in the second of the last waits");
    assert_eq!(same_second.wake_at, Some(now() + Duration::seconds(1)));
    let (v, _) = settle(v, now() + Duration::seconds(1), 3);
    let mut after = before.clone();
    after.push(("2026-11-22T20:00:01Z".to_owned(), "0.5".to_owned()));
    assert_eq!(at(&v), after);
}

#[test]
fn a_withheld_node_is_never_lent_and_the_pool_says_why() {
    let mut v = view(
        vec![node("n0", 16), node("n1", 16)],
        vec![lease(
            "render",
            "tenant-acme",
            spec(LeaseClass::Spot, "32", "2h"),
        )],
    );
    v.nodes[1].withheld =
        Some("a control-plane node (label node-role.kubernetes.io/control-plane)".into());
    let (waiting, plans) = settle(v, now(), 3);
    assert_eq!(plans.len(), 1);
    assert_eq!(
        condition(lease_of(&waiting, "render"), "Admitted"),
        (
            ConditionStatus::False,
            "InsufficientCapacity",
            "pool general has 1 free lendable node(s): short of cpu 16"
        )
    );
    let pool = waiting.status.as_ref().expect("a pool status");
    let withheld = pool
        .conditions
        .iter()
        .find(|c| c.type_ == "Withheld")
        .expect("a Withheld condition");
    assert_eq!(
        (
            withheld.status,
            withheld.reason.as_str(),
            withheld.message.as_str()
        ),
        (
            ConditionStatus::True,
            "NodesWithheld",
            "1 node(s) are never lent: n1: a control-plane node (label node-role.kubernetes.io/control-plane)"
        )
    );
    assert_eq!(pool.lendable_nodes, Some(1));
}

#[test]
fn without_confinement_no_lease_is_admitted_and_the_pool_says_why_until_it_is_back() {
    let mut v = view(
        vec![node("n0", 16)],
        vec![lease(
            "render",
            "tenant-acme",
            spec(LeaseClass::Spot, "16", "8h"),
        )],
    );
    v.confinement = Confinement::Broken {
        since: utc("2026-11-22T19:59:30Z"),
        message: "ValidatingAdmissionPolicy offpeak-tenant-confinement missing".into(),
    };
    let (held, plans) = settle(v, now(), 3);
    let render = lease_of(&held, "render");
    assert_eq!(render.phase(), Some(LeasePhase::Pending));
    assert_eq!(
        condition(render, "Admitted"),
        (
            ConditionStatus::False,
            "ConfinementMissing",
            "tenant pod confinement is not in place (ValidatingAdmissionPolicy \
             offpeak-tenant-confinement missing); no lease is admitted until it is"
        )
    );
    assert!(plans.iter().all(|p| {
        p.nodes.is_empty()
            && p.leases
                .iter()
                .all(|l| !l.writes.iter().any(|w| matches!(w, Write::Bind(_))))
    }));
    let pool = held.status.as_ref().expect("a pool status");
    let confined = pool
        .conditions
        .iter()
        .find(|c| c.type_ == "Confined")
        .expect("a Confined condition");
    assert_eq!(
        (
            confined.status,
            confined.reason.as_str(),
            confined.message.as_str()
        ),
        (
            ConditionStatus::False,
            "ConfinementMissing",
            "since 2026-11-22T19:59:30Z: ValidatingAdmissionPolicy offpeak-tenant-confinement \
             missing; no lease is admitted until it is back"
        )
    );
    let warnings: Vec<&Note> = plans
        .iter()
        .flat_map(|p| &p.events)
        .filter(|n| n.reason == "ConfinementMissing")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    // Back in place: the lease is admitted at the next pass, and the pool says so.
    let mut back = held;
    back.confinement = Confinement::InPlace;
    let (admitted, _) = settle(back, now() + Duration::seconds(2), 3);
    assert_eq!(
        lease_of(&admitted, "render").phase(),
        Some(LeasePhase::Active)
    );
    let confined = admitted
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Confined"))
        .expect("a Confined condition");
    assert_eq!(
        (confined.status, confined.reason.as_str()),
        (ConditionStatus::True, "ConfinementInPlace")
    );
}

#[test]
fn a_window_raised_while_under_way_takes_back_only_what_the_raise_needs_with_full_notice() {
    let v = reclaim_view(
        vec![
            spot("left", "tenant-acme", "4.50"),
            spot("right", "tenant-acme", "4.50"),
        ],
        3,
        now(),
    );
    assert!(
        v.leases
            .iter()
            .all(|l| l.status.phase == Some(LeasePhase::Active))
    );
    // The window began a minute ago; ops raise it to keep two of the three nodes.
    let mut v = v;
    v.reservations.push(window(
        "sale",
        now() - Duration::minutes(1),
        crate::plan::admission::Keep::Nodes(2),
    ));
    let at = now() + Duration::seconds(5);
    let (v, _) = settle(v, at, 3);
    let reclaiming: Vec<&LeaseView> = v
        .leases
        .iter()
        .filter(|l| l.status.phase == Some(LeasePhase::Reclaiming))
        .collect();
    assert_eq!(
        reclaiming
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["left"],
        "one lease of two (of equal price and age: by name)"
    );
    assert_eq!(
        reclaiming[0]
            .status
            .reclaim_deadline
            .as_ref()
            .unwrap()
            .as_str(),
        "2026-11-22T20:01:05Z",
        "the full notice, though the window is under way"
    );
    // Halfway through the notice, no second lease is told.
    assert!(plan(&v, at + Duration::seconds(30), &settings()).is_empty());
}
