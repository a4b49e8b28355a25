//! Latch's domain: the pipeline event contract, policy-as-code, grant decisions and the ports
//! they run over. No AWS SDK type appears here; `latch-aws` adapts these ports to AWS, and
//! [`memory`] provides in-memory ones for tests.

pub mod archive;
pub mod audit;
pub mod decision;
pub mod event;
pub mod identity;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod native;
pub mod policy;
pub mod ports;
pub mod probe;
pub mod revoke;
pub mod service;
pub mod sweep;

pub use policy::render::iam_time;

#[cfg(test)]
#[path = "crash_tests.rs"]
mod crash_tests;
#[cfg(test)]
mod test_fixtures;
