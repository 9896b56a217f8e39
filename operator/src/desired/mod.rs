//! The objects Offpeak owns, built from decisions with no I/O (the "build" step between
//! deciding and applying).

pub mod binding;
pub mod tenancy;
