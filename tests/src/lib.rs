//! The integration harness: Latch against the local AWS emulator, the real SDK on the wire.
//!
//! Each test gets its own table, bus, queues and role path (a unique suffix), so tests run in
//! parallel without seeing each other. The SDK is configured from the environment exactly as in
//! Lambda; the harness only refuses to run unless `AWS_ENDPOINT_URL` points at loopback, so a
//! test can never reach real AWS. Start the emulator with `infra/local/emulator start`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use latch_aws::provision::{Provisioned, Provisioner};
use latch_aws::{Clients, Config};
use latch_core::policy::Policy;
use latch_core::ports::{Ports, SystemClock};
use serde_json::Value;

pub mod faults;
pub mod moto;
pub mod strict;

pub type Item = HashMap<String, AttributeValue>;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: keeps parallel tests apart in one emulator.
pub fn unique(prefix: &str) -> String {
    let nanos = Utc::now().timestamp_subsec_nanos();
    format!(
        "{prefix}{:x}{:x}",
        nanos % 0xfffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A file under `events/`, as JSON.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// A policy with one rule over `roles` roles named `<prefix>-0` … (for campaigns and load runs):
/// pipelines `<prefix>-*` from `ci.github` (claimed identity: the campaigns exercise revocation,
/// not identity), the `deploy-artifacts` set, up to `cap` grants a role. One publisher sends every
/// job, far past the default fair share: the limit is raised to the most a file may say.
pub fn many_roles_policy(prefix: &str, roles: usize, cap: usize) -> String {
    let roles: Vec<String> = (0..roles)
        .map(|r| format!("\"arn:aws:iam::123456789012:role/latch/{prefix}-{r}\""))
        .collect();
    format!(
        r#"version: 1
elevatable_path: /latch/
permission_sets:
  deploy-artifacts:
    description: Upload and read this pipeline's build artifacts.
    max_duration: PT30M
    statements:
      - actions: [s3:PutObject, s3:GetObject]
        resources: ["arn:aws:s3:::latch-artifacts-${{account}}/${{pipeline}}/*"]
rules:
  - name: {prefix}
    identity: claimed
    sources: [ci.github]
    accounts: ["123456789012"]
    pipelines: ["{prefix}-*"]
    roles: [{}]
    permission_sets: [deploy-artifacts]
    max_duration: 30m
    max_active_grants_per_role: {cap}
fair_share:
  grants_per_minute: 100000
"#,
        roles.join(", ")
    )
}

pub fn example_policy_text() -> String {
    std::fs::read_to_string(format!("{}/../events/policy-claimed.yaml", env!("CARGO_MANIFEST_DIR")))
        .expect("events/policy-claimed.yaml")
}

/// Loopback only: tests must never reach real AWS.
pub async fn sdk_config() -> SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "AWS_ENDPOINT_URL must point at the local emulator (got {endpoint:?}); run the README's test command"
    );
    latch_aws::config::sdk_loader().load().await
}

pub struct Harness {
    pub sdk: SdkConfig,
    pub config: Config,
    pub policy: Policy,
    /// Role names in this harness start with `<id>-` (IAM role names are account-wide).
    pub id: String,
    pub provisioned: Provisioned,
    pub clients: Clients,
    pub iam: aws_sdk_iam::Client,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Harness {
    /// A fresh table, bus and role path, provisioned from the example policy file.
    pub async fn new() -> Self {
        Self::with_policy(&example_policy_text()).await
    }

    pub async fn with_policy(policy_text: &str) -> Self {
        Self::with_sdk(sdk_config().await, policy_text).await
    }

    /// A fresh harness on an emulator of the caller's choosing (a private one, say).
    pub async fn with_sdk(sdk: SdkConfig, policy_text: &str) -> Self {
        let id = unique("t");
        let text = policy_text.replace(":role/latch/", &format!(":role/latch/{id}-"));
        let policy = Policy::load(&text, "test policy").expect("test policy loads");
        let config = Config::from_lookup(|name| match name {
            latch_aws::config::ENV_TABLE => Some(format!("latch-{id}")),
            latch_aws::config::ENV_BUS => Some(format!("latch-{id}")),
            _ => None,
        })
        .expect("test config");
        // Provisioning is the test's setup, not a verdict under test: it retries the bare 500s the
        // shared emulator sometimes answers under concurrent requests, even where the test's own
        // clients retry nothing (strict mode, so that every verdict reaches the test).
        let provisioning = sdk.to_builder().retry_config(RetryConfig::standard()).build();
        let provisioned = Provisioner::new(&provisioning)
            .all(&config.table, &config.bus, &policy)
            .await
            .unwrap_or_else(|e| panic!("{e}; is the emulator running (infra/local/emulator start)?"));
        Self {
            clients: Clients::from_sdk_config(&sdk, &config),
            iam: aws_sdk_iam::Client::new(&sdk),
            dynamo: aws_sdk_dynamodb::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sdk,
            config,
            policy,
            id,
            provisioned,
        }
    }

    /// This harness's clients as the ports a function holds, on `clock`.
    pub fn ports<C>(
        &self,
        clock: C,
    ) -> Ports<latch_aws::iam::IamAdapter, latch_aws::dynamo::DynamoStore, latch_aws::events::EventBridgeSink, C> {
        Ports::new(
            self.clients.iam.clone(),
            self.clients.store.clone(),
            self.clients.audit.clone(),
            clock,
        )
    }

    /// The grant service as Lambda runs it, on this harness's resources.
    pub fn grant_service(&self) -> grant::AwsGrantService {
        latch_core::grant::GrantService::new(self.policy.clone(), self.ports(SystemClock))
            .with_keys(latch_aws::jwks::HttpKeySource::new().expect("roots for the key fetcher"))
            .with_native(self.clients.native.clone())
    }

    /// A role ARN of the example file, renamed for this harness.
    pub fn role(&self, name: &str) -> String {
        format!("arn:aws:iam::123456789012:role/latch/{}-{name}", self.id)
    }

    /// An events/ fixture as the Lambda runtime would hand it over: fresh id and time, the
    /// role renamed for this harness, `detail` fields overridden.
    pub fn event(&self, fixture_name: &str, overrides: Value) -> LambdaEvent<EventBridgeEvent<Value>> {
        let mut v = fixture(fixture_name);
        v["id"] = Value::String(unique("evt-"));
        v["time"] = Value::String(latch_core::iam_time(Utc::now()));
        if let Some(role) = v["detail"]["role_arn"].as_str() {
            v["detail"]["role_arn"] = Value::String(role.replace(":role/latch/", &format!(":role/latch/{}-", self.id)));
        }
        for (k, val) in overrides.as_object().into_iter().flatten() {
            v["detail"][k] = val.clone();
        }
        lambda_event(v)
    }

    /// The inline policy document on a role, URL-decoded (IAM returns it encoded).
    pub async fn role_policy(&self, role_arn: &str, policy_name: &str) -> Option<Value> {
        let name = role_arn.rsplit('/').next().unwrap_or_default();
        let out = self
            .iam
            .get_role_policy()
            .role_name(name)
            .policy_name(policy_name)
            .send()
            .await
            .ok()?;
        let decoded = percent_encoding::percent_decode_str(out.policy_document())
            .decode_utf8()
            .ok()?;
        serde_json::from_str(&decoded).ok()
    }

    pub async fn role_policy_names(&self, role_arn: &str) -> Vec<String> {
        let name = role_arn.rsplit('/').next().unwrap_or_default();
        let out = self
            .iam
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .expect("ListRolePolicies");
        out.policy_names().to_vec()
    }

    /// Every item in the table whose `record_type` is `kind` (`grant`, `audit`, ...).
    pub async fn items(&self, kind: &str) -> Vec<Item> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .dynamo
                .scan()
                .table_name(&self.config.table)
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .expect("Scan");
            all.extend(
                out.items()
                    .iter()
                    .filter(|i| i.get("record_type") == Some(&AttributeValue::S(kind.into())))
                    .cloned(),
            );
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return all,
            }
        }
    }

    /// Audit events that reached the bus (through the tap rule's queue), waiting up to `within`
    /// for at least `at_least` of them.
    pub async fn audit_events(&self, at_least: usize, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        while seen.len() < at_least && tokio::time::Instant::now() < deadline {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.provisioned.audit_queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            for m in out.messages() {
                if let Some(body) = m.body().and_then(|b| serde_json::from_str::<Value>(b).ok()) {
                    seen.push(body);
                }
                if let Some(h) = m.receipt_handle() {
                    let _ = self
                        .sqs
                        .delete_message()
                        .queue_url(&self.provisioned.audit_queue_url)
                        .receipt_handle(h)
                        .send()
                        .await;
                }
            }
        }
        seen
    }
}

pub fn s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

/// An EventBridge event JSON as the Lambda runtime hands it to a handler.
pub fn lambda_event(v: Value) -> LambdaEvent<EventBridgeEvent<Value>> {
    let payload: EventBridgeEvent<Value> = serde_json::from_value(v).expect("an EventBridge event");
    LambdaEvent::new(payload, Context::default())
}

impl Harness {
    /// The revoke function as Lambda runs it, on this harness's resources.
    pub fn revoke_function(&self) -> revoke::AwsRevokeFunction {
        revoke::RevokeFunction {
            ports: self.ports(SystemClock),
        }
    }

    /// The sweep function on this harness's resources, its clock set by the test.
    pub fn sweep_function(
        &self,
        clock: latch_core::memory::FixedClock,
        drift_grace: chrono::Duration,
    ) -> sweep::SweepFunction<
        latch_aws::iam::IamAdapter,
        latch_aws::dynamo::DynamoStore,
        latch_aws::events::EventBridgeSink,
        latch_core::memory::FixedClock,
    > {
        sweep::SweepFunction {
            policy: self.policy.clone(),
            ports: self.ports(clock),
            settings: latch_core::sweep::SweepSettings {
                page_size: 50,
                concurrency: 4,
                drift_grace,
                deployment: self.clients.deployment.clone(),
                // Tests do not wait on drift repair's pace.
                drift_iam_per_second: 1_000.0,
                ..Default::default()
            },
        }
    }

    /// Deletes an item as DynamoDB's TTL would (the emulator never expires items by itself).
    pub async fn delete_item(&self, pk: &str, sk: &str) {
        self.dynamo
            .delete_item()
            .table_name(&self.config.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .send()
            .await
            .expect("DeleteItem");
    }

    /// Every record on the table's stream so far, shaped as Lambda delivers them; with
    /// `ttl_identity`, REMOVE records carry the identity AWS gives TTL deletions.
    pub async fn stream_records(&self, ttl_identity: bool) -> Vec<aws_lambda_events::event::dynamodb::EventRecord> {
        let mut reader = latch_aws::stream::StreamReader::open(&self.sdk, &self.config.table)
            .await
            .expect("stream");
        reader.poll(|_| ttl_identity).await.expect("stream records")
    }
}
