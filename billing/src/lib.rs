//! Offpeak billing: facts in, bills out. Knows nothing of Kubernetes.
pub mod bill;
pub mod cli;
pub mod error;
pub mod focus;
pub mod ledger;
pub mod meter;
pub mod money;
pub mod period;
pub mod rate;
