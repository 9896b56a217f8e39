//! A plan applied to its view in memory, as the API server would take it (with evicted pods
//! gone at once), for tests that plan again afterwards.

use super::{PoolPlan, PoolView, Write};

pub fn apply(view: &PoolView, plan: &PoolPlan) -> PoolView {
    let mut next = view.clone();
    let mut gone = Vec::new();
    for lease_plan in &plan.leases {
        for write in &lease_plan.writes {
            write_one(&mut next, Some(&lease_plan.uid), write, &mut gone);
        }
    }
    for write in &plan.nodes {
        write_one(&mut next, None, write, &mut gone);
    }
    next.leases.retain(|l| !gone.contains(&l.uid));
    if let Some(status) = &plan.status {
        next.status = Some(status.clone());
    }
    for written in &plan.reservations {
        if let Some(status) = &written.status
            && let Some(r) = next
                .reservation_objects
                .iter_mut()
                .find(|r| r.name == written.name)
        {
            r.status = Some(status.clone());
        }
    }
    next
}

fn write_one(view: &mut PoolView, lease: Option<&String>, write: &Write, gone: &mut Vec<String>) {
    let lease = lease.and_then(|uid| view.leases.iter_mut().find(|l| &l.uid == uid));
    match write {
        Write::AddFinalizer => {
            if let Some(lease) = lease {
                lease.has_finalizer = true;
            }
        }
        Write::RemoveFinalizer => {
            if let Some(lease) = lease {
                lease.has_finalizer = false;
                if lease.deleting {
                    gone.push(lease.uid.clone());
                }
            }
        }
        Write::Status(status) => {
            if let Some(lease) = lease {
                lease.status = status.as_ref().clone();
            }
        }
        Write::Bind(patches) => {
            for patch in patches {
                set_marks(view, &patch.node, &patch.to);
            }
        }
        Write::Node(patch) => set_marks(view, &patch.node, &patch.to),
        Write::Evict(eviction) | Write::ForceDelete(eviction) => {
            if let Some(node) = view.nodes.iter_mut().find(|n| n.name == eviction.node) {
                node.pods
                    .retain(|p| !(p.namespace == eviction.namespace && p.name == eviction.name));
            }
        }
        Write::DisruptionTarget { pod, .. } => {
            if let Some(node) = view.nodes.iter_mut().find(|n| n.name == pod.node)
                && let Some(p) = node
                    .pods
                    .iter_mut()
                    .find(|p| p.namespace == pod.namespace && p.name == pod.name)
            {
                p.disruption_target = true;
            }
        }
        Write::Event(_) => {}
    }
}

fn set_marks(view: &mut PoolView, node: &str, marks: &super::NodeMarks) {
    if let Some(node) = view.nodes.iter_mut().find(|n| n.name == node) {
        node.marks = marks.clone();
    }
}
