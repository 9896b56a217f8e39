//! Pure decisions, made from a snapshot of the cluster with no I/O: unit- and
//! property-tested without a cluster. Controllers observe, call these, then apply.

pub mod admission;
pub mod calendar;
pub mod conditions;
pub mod eligibility;
pub mod idle;
pub mod node_choice;
pub mod pool;
pub mod resources;
