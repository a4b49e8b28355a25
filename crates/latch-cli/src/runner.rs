//! The local runner: Latch's three handlers in-process, fed the way Lambda feeds them.
//!
//! - Pipeline events reach the grant handler through the bus rule's queue target, one delivery
//!   at a time; a failed delivery stays on the queue and returns after its visibility timeout,
//!   as Lambda's async retries would.
//! - The table's stream, read through the DynamoDB Streams API, feeds the revoke handler in
//!   batches; failed records are re-read from the reported sequence number on the next poll.
//! - The sweep runs on a timer.
//! - The emulator never expires TTL items, so [`LocalLatch::expire_ttl`] deletes the items whose
//!   `ttl` has passed, as DynamoDB would, and marks their stream records as TTL deletions.

use std::collections::HashSet;

use aws_lambda_events::event::dynamodb::EventRecord;
use aws_sdk_dynamodb::types::AttributeValue;
use grant::Outcome;
use lambda_runtime::{Context, LambdaEvent};
use latch_aws::stream::StreamReader;
use latch_core::sweep::SweepReport;
use revoke::RecordOutcome;
use serde_json::Value;

use crate::CliError;

/// One pipeline event handled: its detail-type and detail, and what the grant handler made of it.
#[derive(Debug)]
pub struct Handled {
    pub detail_type: String,
    pub detail: Value,
    pub outcome: Result<Outcome, String>,
}

pub struct LocalLatch {
    pub grant: grant::AwsGrantService,
    pub revoke: revoke::AwsRevokeFunction,
    pub sweep: sweep::AwsSweepFunction,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub table: String,
    pub inbox_url: String,
    /// The emulator may deliver an envelope without `account` (EMULATOR-NOTES.md). Lambda never
    /// sees that; locally we fill it from configuration, never from `detail`.
    pub account: String,
    pub stream: StreamReader,
    /// Keys (`pk|sk`) this runner deleted as TTL would: their REMOVE records are TTL deletions.
    ttl_deleted: HashSet<String>,
    /// Records the revoke handler asked to retry (its batch item failures), fed again next poll.
    retry: Vec<EventRecord>,
}

fn aws(context: &'static str) -> impl Fn(String) -> CliError {
    move |e| CliError::Aws(format!("{context}: {e}"))
}

fn key_of(pk: Option<&str>, sk: Option<&str>) -> String {
    format!("{}|{}", pk.unwrap_or_default(), sk.unwrap_or_default())
}

impl LocalLatch {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        grant: grant::AwsGrantService,
        revoke: revoke::AwsRevokeFunction,
        sweep: sweep::AwsSweepFunction,
        sdk: &aws_config::SdkConfig,
        table: &str,
        inbox_url: &str,
        account: &str,
        stream: StreamReader,
    ) -> Self {
        Self {
            grant,
            revoke,
            sweep,
            sqs: aws_sdk_sqs::Client::new(sdk),
            dynamo: aws_sdk_dynamodb::Client::new(sdk),
            table: table.to_owned(),
            inbox_url: inbox_url.to_owned(),
            account: account.to_owned(),
            stream,
            ttl_deleted: HashSet::new(),
            retry: Vec::new(),
        }
    }

    /// Receives what waits on the grant inbox (waiting up to `wait_secs`) and hands each
    /// delivery to the grant handler. Handled deliveries are deleted; failed ones come back.
    pub async fn pump_inbox(&self, wait_secs: i32) -> Result<Vec<Handled>, CliError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.inbox_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .visibility_timeout(5)
            .send()
            .await
            .map_err(|e| CliError::Aws(format!("receiving from the grant inbox: {e}")))?;
        let mut handled = Vec::new();
        for message in out.messages() {
            let Some(mut v) = message.body().and_then(|b| serde_json::from_str::<Value>(b).ok()) else {
                tracing::warn!("inbox message is not JSON; dropped");
                continue;
            };
            if v.get("account").is_none_or(Value::is_null) {
                v["account"] = Value::String(self.account.clone());
            }
            let detail_type = v["detail-type"].as_str().unwrap_or("-").to_owned();
            let detail = v["detail"].clone();
            // As Lambda hands it over: a message that is not an EventBridge event is denied and
            // audited by the function, not dropped here.
            let outcome = grant::handle_payload(&self.grant, LambdaEvent::new(v, Context::default()))
                .await
                .map_err(|e| e.to_string());
            if outcome.is_ok()
                && let Some(h) = message.receipt_handle()
            {
                self.sqs
                    .delete_message()
                    .queue_url(&self.inbox_url)
                    .receipt_handle(h)
                    .send()
                    .await
                    .map_err(|e| aws("deleting a handled delivery")(e.to_string()))?;
            }
            handled.push(Handled {
                detail_type,
                detail,
                outcome,
            });
        }
        Ok(handled)
    }

    /// Feeds new stream records to the revoke handler as one batch; returns what it did with
    /// each REMOVE (other records are skipped by the handler and not reported here).
    pub async fn pump_stream(&mut self) -> Result<Vec<(EventRecord, RecordOutcome)>, CliError> {
        let deleted = &self.ttl_deleted;
        let records = self
            .stream
            .poll(|r| {
                let key = |name: &str| {
                    r.change.keys.get(name).and_then(|v| match v {
                        serde_dynamo::AttributeValue::S(s) => Some(s.as_str()),
                        _ => None,
                    })
                };
                deleted.contains(&key_of(key("pk"), key("sk")))
            })
            .await
            .map_err(|e| CliError::Aws(e.to_string()))?;
        tracing::debug!(records = records.len(), "stream poll");
        let mut outcomes = Vec::new();
        let batch: Vec<EventRecord> = self.retry.drain(..).chain(records).collect();
        for record in batch.into_iter().filter(|r| r.event_name == "REMOVE") {
            let outcome = self.revoke.on_record(&record).await;
            if outcome == RecordOutcome::Retry {
                self.retry.push(record.clone());
            }
            outcomes.push((record, outcome));
        }
        Ok(outcomes)
    }

    pub async fn run_sweep(&self) -> Result<SweepReport, CliError> {
        self.sweep.sweep(None).await.map_err(|e| CliError::Aws(e.to_string()))
    }

    /// Deletes every item whose `ttl` has passed, as DynamoDB's TTL would (it is a scan: fine
    /// for a local table). Returns how many went.
    pub async fn expire_ttl(&mut self) -> Result<usize, CliError> {
        let now = chrono::Utc::now().timestamp().to_string();
        let mut start = None;
        let mut expired = Vec::new();
        loop {
            let out = self
                .dynamo
                .scan()
                .table_name(&self.table)
                .filter_expression("#ttl <= :now")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":now", AttributeValue::N(now.clone()))
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| aws("scanning for expired items")(format!("{e:?}")))?;
            expired.extend(out.items().iter().cloned());
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        for item in &expired {
            let pk = item.get("pk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            let sk = item.get("sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            self.ttl_deleted.insert(key_of(Some(&pk), Some(&sk)));
            self.dynamo
                .delete_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(pk))
                .key("sk", AttributeValue::S(sk))
                .send()
                .await
                .map_err(|e| aws("deleting an expired item")(format!("{e:?}")))?;
        }
        Ok(expired.len())
    }
}
