//! Latch's domain: the pipeline event contract, policy-as-code, grant decisions and the ports
//! they run over. No AWS SDK type appears here; `latch-aws` adapts these ports to AWS, and
//! [`memory`] provides in-memory ones for tests.
//!
//! Where things are:
//!
//! | module | what it holds |
//! |---|---|
//! | [`event`] | the pipeline event contract: parsing starts, finishes and extensions strictly |
//! | [`identity`] | verified identity: ID tokens, their keys, claims into a job's identity |
//! | [`native`] | CodePipeline and CodeBuild state-change events |
//! | [`policy`] | the policy file: loading, rules, permission sets, rendering, guardrails |
//! | [`grant`] | the grant decision end to end (starts, finishes, extensions), its deny paths and reasons |
//! | [`revoke`] | taking a grant away, on every path |
//! | [`sweep`] | the scheduled sweep and drift repair |
//! | [`audit`] | audit records: every kind, ids included |
//! | [`archive`] | which table changes reach the audit archive, and in which form |
//! | [`model`] | validated values (role ARN, grant id, duration, deployment, job key) and the [`model::Grant`] they make up |
//! | [`ports`] | the traits the domain runs over (IAM, store, audit sink, clock, native runs) |
//! | [`probe`] | the propagation probe every grant document carries |
//! | [`metrics`] | operational metrics and their EMF form |
//! | [`memory`] | in-memory ports for tests |

pub mod archive;
pub mod audit;
pub mod event;
pub mod grant;
pub mod identity;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod native;
pub mod policy;
pub mod ports;
pub mod probe;
pub mod revoke;
pub mod sweep;

pub use policy::render::iam_time;

#[cfg(test)]
#[path = "crash_tests.rs"]
mod crash_tests;
#[cfg(test)]
mod schema_files;
#[cfg(test)]
mod test_fixtures;
