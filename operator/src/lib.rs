//! The Offpeak operator: controllers that lend idle nodes to tenants, and the pure
//! decisions they are built on.

pub mod admission;
pub mod controllers;
pub mod demo;
pub mod desired;
pub mod error;
pub mod local;
pub mod meter;
pub mod names;
pub mod observe;
pub mod plan;
pub mod pricing;
pub mod run;
pub mod telemetry;
