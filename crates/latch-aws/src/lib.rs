//! Adapters from latch-core's ports to AWS: IAM ([`iam::IamAdapter`]), DynamoDB
//! ([`dynamo::DynamoStore`]), EventBridge ([`events::EventBridgeSink`]), CodeBuild and
//! CodePipeline ([`native::NativeRunsAdapter`]) and OIDC issuer keys
//! ([`jwks::HttpKeySource`]), the client's propagation probe ([`probe`]), plus configuration
//! from the environment. The SDK is configured once ([`Clients::from_env`]) and its clients are
//! reused; the endpoint comes from the SDK's own `AWS_ENDPOINT_URL`, never from code, so the
//! same binary talks to AWS or to the local emulator.

#[cfg(feature = "local")]
pub mod archive;
pub mod call_metrics;
pub mod config;
pub mod conflicts;
pub mod dynamo;
mod errors;
pub mod events;
pub mod iam;
pub mod items;
pub mod jwks;
#[cfg(feature = "local")]
pub mod local_issuer;
pub mod native;
pub mod probe;
#[cfg(feature = "local")]
pub mod provision;
#[cfg(feature = "local")]
pub mod stream;
pub mod telemetry;

pub use config::{Clients, Config, ConfigError, InitError, load_with_policy};
pub use conflicts::ConflictRetry;
