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
//!
//! Every SDK configuration in the workspace, production and tests, starts from [`sdk_loader`],
//! which carries the one HTTPS client ([`https_client`]): the SDK crates are built without a
//! default client of their own, so a configuration loaded any other way has none and its first
//! call fails (clippy.toml refuses `aws_config::defaults` and its kin outside this module).

use std::path::PathBuf;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::Provider;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::call_metrics::CallTimer;
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
    if let Some(account) = config.own_account() {
        let problems = policy.roles_outside_account(&account);
        if !problems.is_empty() {
            return Err(InitError::Policy(latch_core::policy::LoadError {
                origin: config.policy_path.display().to_string(),
                problems,
            }));
        }
    }
    Ok((policy, Clients::from_env(&config).await))
}

impl Config {
    /// The account Latch runs in, read off its boundary's ARN (the template sets it); `None`
    /// outside a deployment.
    pub fn own_account(&self) -> Option<latch_core::model::AccountId> {
        let arn = self.boundary_arn.as_deref()?;
        latch_core::model::AccountId::parse(arn.split(':').nth(4)?).ok()
    }

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

/// The HTTPS client the SDK's `default-https-client` feature would build, built here instead:
/// hyper 1 with rustls over aws-lc, the platform's native roots, proxies from `HTTP(S)_PROXY`
/// and `NO_PROXY` (what the SDK does for behavior versions from 2025-08-07), and the
/// configuration's connect timeout and sleep. Built here so the client library is latch-aws's
/// own dependency and the SDK crates do not change with its features.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, runtime_components| {
        let mut connector = aws_smithy_http_client::Connector::builder()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .proxy_config(ProxyConfig::from_env());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = runtime_components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.build()
    })
}

/// The SDK configuration loader every client in the workspace starts from: the latest
/// behavior version and [`https_client`]. Callers add what is theirs (timeouts, endpoint,
/// region, credentials) and load.
#[allow(clippy::disallowed_methods)] // the one place the SDK's loader is made
pub fn sdk_loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(https_client())
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
        let sdk = sdk_loader().timeout_config(timeouts()).load().await;
        Self::from_sdk_config(&sdk, config)
    }

    pub fn from_sdk_config(sdk: &SdkConfig, config: &Config) -> Self {
        Self {
            // Every call timed for the metrics (crate::call_metrics).
            iam: IamAdapter::new(iam_client(sdk))
                .requiring_boundary(config.boundary_arn.clone())
                .for_deployment(config.deployment.clone()),
            store: DynamoStore::new(
                aws_sdk_dynamodb::Client::from_conf(
                    aws_sdk_dynamodb::config::Builder::from(sdk)
                        .interceptor(CallTimer)
                        .build(),
                ),
                &config.table,
            ),
            audit: EventBridgeSink::new(
                aws_sdk_eventbridge::Client::from_conf(
                    aws_sdk_eventbridge::config::Builder::from(sdk)
                        .interceptor(CallTimer)
                        .build(),
                ),
                &config.bus,
            ),
            native: NativeRunsAdapter::new(
                aws_sdk_codebuild::Client::from_conf(
                    aws_sdk_codebuild::config::Builder::from(sdk)
                        .interceptor(CallTimer)
                        .build(),
                ),
                aws_sdk_codepipeline::Client::from_conf(
                    aws_sdk_codepipeline::config::Builder::from(sdk)
                        .interceptor(CallTimer)
                        .build(),
                ),
            ),
            deployment: config.deployment.clone(),
        }
    }
}

/// Attempts per IAM call (the SDK's standard retry: exponential backoff with jitter, 1 s then
/// 2, 4, 8 s ceilings). IAM's request rate is account-wide and low; a burst of jobs starts as many
/// cold containers at once, each resolving its role and writing once, so throttling is what a
/// burst meets first. The SDK's default of 3 attempts gives up within about 3 s and sends the
/// event into Lambda's minute-scale retries; 5 rides out a burst of ~100 jobs inside the
/// functions' timeout (`cargo run -p latch-tests --example load_bench -- --strict 100`).
pub const IAM_MAX_ATTEMPTS: u32 = 5;

/// The IAM client every function uses: the SDK configuration's retry policy (the standard
/// one by default) with [`IAM_MAX_ATTEMPTS`], every call timed for the metrics.
pub fn iam_client(sdk: &SdkConfig) -> aws_sdk_iam::Client {
    let retry = sdk
        .retry_config()
        .cloned()
        .unwrap_or_else(aws_sdk_iam::config::retry::RetryConfig::standard)
        .with_max_attempts(IAM_MAX_ATTEMPTS);
    aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(sdk)
            .retry_config(retry)
            .interceptor(CallTimer)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_naming_roles_outside_latchs_own_account_is_refused_at_init() {
        // GIVEN a deployment in 123456789012 (its boundary's account)
        let config = Config::from_lookup(|n| {
            (n == ENV_BOUNDARY_ARN).then(|| "arn:aws:iam::123456789012:policy/latch-boundary".to_owned())
        })
        .unwrap();
        let own = config.own_account().unwrap();
        let policy = |roles: &str| {
            latch_core::policy::Policy::load(
                &format!(
                    "version: 1\nelevatable_path: /latch/\npermission_sets:\n  s:\n    description: d\n    max_duration: 10m\n    statements:\n      - actions: [s3:GetObject]\n        resources: [\"arn:aws:s3:::b/*\"]\nrules:\n  - name: r\n    identity: claimed\n    sources: [ci.github]\n    accounts: [\"123456789012\", \"210987654321\"]\n    pipelines: [\"*\"]\n    roles: [{roles}]\n    permission_sets: [s]\n    max_duration: 10m\n"
                ),
                "test.yaml",
            )
            .unwrap()
        };
        // THEN its own roles pass; a role in another account the rule lists does not (a wildcard
        // account is refused by the loader itself)
        assert!(
            policy("\"arn:aws:iam::123456789012:role/latch/*\"")
                .roles_outside_account(&own)
                .is_empty()
        );
        let other = policy("\"arn:aws:iam::210987654321:role/latch/x\"").roles_outside_account(&own);
        assert_eq!(other.len(), 1);
        assert!(
            other[0].message.contains("role_in_other_account"),
            "{}",
            other[0].message
        );
        // AND outside a deployment (no boundary) nothing says which account is Latch's
        assert!(Config::from_lookup(|_| None).unwrap().own_account().is_none());
    }

    #[tokio::test]
    async fn a_configuration_from_the_workspaces_loader_carries_the_https_client() {
        // GIVEN the SDK crates built without a default HTTP client of their own: a loader not
        // given one cannot even load (a debug build's SDK asserts that every operation has a
        // client; a release build would fail at the first call)
        let bare = tokio::spawn(async {
            #[allow(clippy::disallowed_methods)] // the premise: what any other loader gives
            aws_config::defaults(BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .load()
                .await
        })
        .await;
        if cfg!(debug_assertions) {
            assert!(
                bare.is_err_and(|e| e.is_panic()),
                "the SDK brought an HTTP client of its own"
            );
        }
        // WHEN a configuration is loaded the workspace's way
        let sdk = sdk_loader().region(aws_config::Region::new("us-east-1")).load().await;
        // THEN it has one, and every client built from it inherits it
        assert!(sdk.http_client().is_some());
        let iam = aws_sdk_iam::config::Builder::from(&sdk).build();
        assert!(iam.http_client().is_some());
    }

    #[test]
    fn defaults_apply_and_empty_values_are_refused() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!((c.table.as_str(), c.bus.as_str()), ("latch-grants", "latch"));
        let c = Config::from_lookup(|n| (n == ENV_TABLE).then(|| "t".to_owned())).unwrap();
        assert_eq!(c.table, "t");
        assert!(Config::from_lookup(|n| (n == ENV_BUS).then(|| " ".to_owned())).is_err());
    }
}
