//! Provisioning for the local emulator: the same table, bus, rules and elevatable roles the
//! SAM template creates in AWS, made through the SDK. Every step is idempotent, so provisioning
//! twice is harmless. Only tests and `latch dev` use this (feature `local`).

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_eventbridge::types::Target;
use latch_core::model::RoleArn;
use latch_core::native;
use latch_core::policy::Policy;
use serde_json::json;

use crate::items::{EXPIRES_AT_EPOCH, EXPIRY_BUCKET, EXPIRY_INDEX, PK, SK, TTL};

/// The pipeline detail-types the grant function handles; the template's rule uses the same list.
pub const PIPELINE_DETAIL_TYPES: [&str; 3] = [
    latch_core::event::DETAIL_TYPE_STARTED,
    latch_core::event::DETAIL_TYPE_FINISHED,
    latch_core::event::DETAIL_TYPE_EXTEND,
];

/// The pipeline rule's pattern, exactly the template's `PipelineEventsRule`: every event of these
/// detail-types, whatever its source, reaches the grant function, which audits an untrusted source
/// as a denial (a rule filtering on the policy's sources would drop it without a trace).
pub fn pipeline_events_pattern() -> serde_json::Value {
    json!({ "detail-type": PIPELINE_DETAIL_TYPES })
}

#[derive(Debug, thiserror::Error)]
#[error("provisioning {step}: {message}")]
pub struct ProvisionError {
    pub step: &'static str,
    pub message: String,
}

fn fail(step: &'static str) -> impl Fn(String) -> ProvisionError {
    move |message| ProvisionError { step, message }
}

/// Names of what was provisioned.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub table: String,
    pub bus: String,
    /// Receives every Latch audit event (rule on source `latch`).
    pub audit_queue_url: String,
    /// Receives pipeline events, as the grant function would (rule on the detail-types).
    pub inbox_queue_url: String,
}

pub struct Provisioner {
    iam: aws_sdk_iam::Client,
    dynamo: aws_sdk_dynamodb::Client,
    events: aws_sdk_eventbridge::Client,
    sqs: aws_sdk_sqs::Client,
}

fn already<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

impl Provisioner {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            iam: aws_sdk_iam::Client::new(sdk),
            dynamo: aws_sdk_dynamodb::Client::new(sdk),
            events: aws_sdk_eventbridge::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
        }
    }

    pub async fn table(&self, table: &str) -> Result<(), ProvisionError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(|e| e.to_string())
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(|e| e.to_string())
        };
        let step = fail("table");
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(EXPIRY_INDEX)
            .key_schema(key(EXPIRY_BUCKET, KeyType::Hash).map_err(&step)?)
            .key_schema(key(EXPIRES_AT_EPOCH, KeyType::Range).map_err(&step)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(|e| step(e.to_string()))?;
        let created = self
            .dynamo
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK, ScalarAttributeType::S).map_err(&step)?)
            .attribute_definitions(attr(SK, ScalarAttributeType::S).map_err(&step)?)
            .attribute_definitions(attr(EXPIRY_BUCKET, ScalarAttributeType::S).map_err(&step)?)
            .attribute_definitions(attr(EXPIRES_AT_EPOCH, ScalarAttributeType::N).map_err(&step)?)
            .key_schema(key(PK, KeyType::Hash).map_err(&step)?)
            .key_schema(key(SK, KeyType::Range).map_err(&step)?)
            .global_secondary_indexes(gsi)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    // New images for the audit archive (INSERTs), old images for the revoke function (TTL REMOVEs).
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .map_err(|e| step(e.to_string()))?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_in_use_exception()) => {
                return Ok(());
            }
            Err(e) => return Err(step(format!("{e:?}"))),
        }
        self.dynamo
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL)
                    .enabled(true)
                    .build()
                    .map_err(|e| step(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| step(format!("{e:?}")))?;
        Ok(())
    }

    async fn queue(&self, name: &str) -> Result<(String, String), ProvisionError> {
        let step = fail("queue");
        let url = self
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| step(format!("{e:?}")))?
            .queue_url
            .ok_or_else(|| step("no queue url".into()))?;
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| step(format!("{e:?}")))?;
        let arn = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| step("no queue arn".into()))?;
        Ok((url, arn))
    }

    async fn rule_to_queue(
        &self,
        bus: &str,
        rule: &str,
        pattern: serde_json::Value,
        queue_arn: &str,
    ) -> Result<(), ProvisionError> {
        let step = fail("rule");
        self.events
            .put_rule()
            .event_bus_name(bus)
            .name(rule)
            .event_pattern(pattern.to_string())
            .send()
            .await
            .map_err(|e| step(format!("{e:?}")))?;
        self.events
            .put_targets()
            .event_bus_name(bus)
            .rule(rule)
            .targets(
                Target::builder()
                    .id("queue")
                    .arn(queue_arn)
                    .build()
                    .map_err(|e| step(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| step(format!("{e:?}")))?;
        Ok(())
    }

    /// The bus, the grant function's rule (to an inbox queue standing in for the Lambda target)
    /// and an audit tap (every event from source `latch`, to a queue).
    pub async fn bus(&self, bus: &str) -> Result<(String, String), ProvisionError> {
        let step = fail("bus");
        match self.events.create_event_bus().name(bus).send().await {
            Ok(_) => {}
            Err(e) if already(&e, &["ResourceAlreadyExistsException"]) => {}
            Err(e) => return Err(step(format!("{e:?}"))),
        }
        let (inbox_url, inbox_arn) = self.queue(&format!("{bus}-grant-inbox")).await?;
        let (audit_url, audit_arn) = self.queue(&format!("{bus}-audit-tap")).await?;
        self.rule_to_queue(bus, "latch-pipeline-events", pipeline_events_pattern(), &inbox_arn)
            .await?;
        // In AWS these arrive on the default bus (template: NativePipelineEventsRule); locally a
        // sample put on this bus stands in for them, so `latch dev` handles them the same way.
        let native_pattern = json!({
            "source": [native::SOURCE_CODEPIPELINE, native::SOURCE_CODEBUILD],
            "detail-type": [native::DETAIL_TYPE_CODEPIPELINE_ACTION, native::DETAIL_TYPE_CODEBUILD_BUILD],
        });
        self.rule_to_queue(bus, "latch-native-events", native_pattern, &inbox_arn)
            .await?;
        self.rule_to_queue(
            bus,
            "latch-audit-tap",
            json!({"source": [latch_core::audit::AUDIT_SOURCE]}),
            &audit_arn,
        )
        .await?;
        Ok((inbox_url, audit_url))
    }

    /// Creates a role (idempotent), with its path, trusting the account.
    pub async fn role(&self, role: &RoleArn) -> Result<(), ProvisionError> {
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{}:root", role.account().as_str())}, "Action": "sts:AssumeRole"}]});
        match self
            .iam
            .create_role()
            .role_name(role.name())
            .path(role.path())
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_entity_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(fail("role")(format!("{e:?}"))),
        }
    }

    /// Everything: table, bus with rules and queues, and each exact role the policy names.
    pub async fn all(&self, table: &str, bus: &str, policy: &Policy) -> Result<Provisioned, ProvisionError> {
        self.table(table).await?;
        let (inbox_queue_url, audit_queue_url) = self.bus(bus).await?;
        for role in policy.exact_roles() {
            self.role(&role).await?;
        }
        Ok(Provisioned {
            table: table.to_owned(),
            bus: bus.to_owned(),
            audit_queue_url,
            inbox_queue_url,
        })
    }
}
