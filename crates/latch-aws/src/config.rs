//! Configuration from the environment, read once at init.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LATCH_TABLE` | `latch-grants` | the grants/audit table |
//! | `LATCH_BUS` | `latch` | the bus audit events go to |
//! | `LATCH_POLICY_PATH` | `/opt/latch/policies.yaml` | the policy file (a Lambda layer in AWS) |
//! | `LATCH_BOUNDARY_ARN` | unset: not checked | the permissions boundary every elevatable role must carry |
//! | `LATCH_DEPLOYMENT` | unset: names `latch-<id>` | 1-16 of `a-z 0-9`, written into every policy name (`latch-<deployment>-<id>`) |
//!
//! Region, credentials and `AWS_ENDPOINT_URL` are the SDK's own variables. Every call is
//! bounded ([`timeouts`]): a stalled connection costs one attempt, not the Lambda's whole timeout.

use std::path::PathBuf;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

use crate::dynamo::DynamoStore;
use crate::events::EventBridgeSink;
use crate::iam::IamAdapter;
use crate::native::NativeRunsAdapter;

pub const ENV_TABLE: &str = "LATCH_TABLE";
pub const ENV_BUS: &str = "LATCH_BUS";
pub const ENV_POLICY_PATH: &str = "LATCH_POLICY_PATH";
pub const ENV_BOUNDARY_ARN: &str = "LATCH_BOUNDARY_ARN";
pub const ENV_DEPLOYMENT: &str = "LATCH_DEPLOYMENT";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub table: String,
    pub bus: String,
    pub policy_path: PathBuf,
    pub boundary_arn: Option<String>,
    pub deployment: latch_core::model::Deployment,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is set but empty")]
    Empty { name: &'static str },
    #[error("{name}: {why}")]
    Invalid { name: &'static str, why: String },
}

/// Why a function that decides with the policy file could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("policy file refused:\n{0}")]
    Policy(#[from] latch_core::policy::LoadError),
    #[error("cannot fetch issuer keys: {0}")]
    Keys(#[from] latch_core::identity::KeyError),
}

/// Configuration, the policy file it names, and the clients: what the grant and sweep
/// functions load once at init.
pub async fn load_with_policy() -> Result<(latch_core::policy::Policy, Clients), InitError> {
    let config = Config::from_env()?;
    let policy = latch_core::policy::Policy::load_path(&config.policy_path)?;
    Ok((policy, Clients::from_env(&config).await))
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The same rules over any lookup, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str, default: &str| match lookup(name) {
            Some(v) if v.trim().is_empty() => Err(ConfigError::Empty { name }),
            Some(v) => Ok(v),
            None => Ok(default.to_owned()),
        };
        Ok(Self {
            table: get(ENV_TABLE, "latch-grants")?,
            bus: get(ENV_BUS, "latch")?,
            policy_path: PathBuf::from(get(ENV_POLICY_PATH, "/opt/latch/policies.yaml")?),
            boundary_arn: lookup(ENV_BOUNDARY_ARN).filter(|v| !v.trim().is_empty()),
            deployment: match lookup(ENV_DEPLOYMENT) {
                None => latch_core::model::Deployment::default(),
                Some(v) => latch_core::model::Deployment::parse(v.trim()).map_err(|e| ConfigError::Invalid {
                    name: ENV_DEPLOYMENT,
                    why: e.to_string(),
                })?,
            },
        })
    }
}

/// Each of Latch's calls moves a few KiB and answers in well under a second; an attempt that
/// has not answered in 3 s is retried (the SDK's standard retries), and no call, retries
/// included, takes more than 10 s, well inside the functions' 30 s timeout. Without these the
/// SDK bounds only the connect, so one stalled response would hold an invocation to its end.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(10))
        .build()
}

/// The adapters over one shared `SdkConfig`.
#[derive(Debug, Clone)]
pub struct Clients {
    pub iam: IamAdapter,
    pub store: DynamoStore,
    pub audit: EventBridgeSink,
    /// Confirms native starts with CodeBuild and CodePipeline.
    pub native: NativeRunsAdapter,
    /// The deployment these clients act for (its policy names).
    pub deployment: latch_core::model::Deployment,
}

impl Clients {
    /// Loads the SDK configuration once (region, credentials, `AWS_ENDPOINT_URL`) and builds
    /// every client from it.
    pub async fn from_env(config: &Config) -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts())
            .load()
            .await;
        Self::from_sdk_config(&sdk, config)
    }

    pub fn from_sdk_config(sdk: &SdkConfig, config: &Config) -> Self {
        Self {
            iam: IamAdapter::new(aws_sdk_iam::Client::new(sdk))
                .requiring_boundary(config.boundary_arn.clone())
                .for_deployment(config.deployment.clone()),
            store: DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), &config.table),
            audit: EventBridgeSink::new(aws_sdk_eventbridge::Client::new(sdk), &config.bus),
            native: NativeRunsAdapter::new(
                aws_sdk_codebuild::Client::new(sdk),
                aws_sdk_codepipeline::Client::new(sdk),
            ),
            deployment: config.deployment.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_empty_values_are_refused() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!((c.table.as_str(), c.bus.as_str()), ("latch-grants", "latch"));
        let c = Config::from_lookup(|n| (n == ENV_TABLE).then(|| "t".to_owned())).unwrap();
        assert_eq!(c.table, "t");
        assert!(Config::from_lookup(|n| (n == ENV_BUS).then(|| " ".to_owned())).is_err());
    }
}
