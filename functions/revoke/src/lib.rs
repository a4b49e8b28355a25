//! The revoke function: the DynamoDB stream's fast path for grants that TTL deleted.
//!
//! It acts only on REMOVE records made by TTL (user identity `Service` /
//! `dynamodb.amazonaws.com`) of active grant items, checked here even though the template's
//! filter already selects them; every other record is skipped. A record proves nothing by
//! itself (any principal allowed to invoke the function can fabricate one): before acting, one
//! consistent GetItem per such record confirms the grant item is gone; a record for a grant the
//! table still holds changes nothing and is logged as a warning with the grant id. Each
//! confirmed grant is revoked from the record's OldImage with reason `expired_ttl`. A record whose
//! revocation may succeed on retry is reported by sequence number (ReportBatchItemFailures), so
//! it neither blocks nor repeats the others. A record that can never be handled (an OldImage that is not a grant) is logged and
//! skipped: retrying cannot help, and the sweep and drift repair remain the guarantee (I2, I4).
//!
//! A batch's records are handled concurrently, [`RECORD_CONCURRENCY`] at a time, one role's
//! records one after another (two writes on one role would only conflict in IAM and in the
//! role's counter). The deadline is checked before each record: a record not started
//! [`DEADLINE_MARGIN`] before it is reported for retry instead, so one throttled record costs
//! its own redelivery, never the batch's timeout. Each batch's metrics go out as EMF lines.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lambda_runtime::{Diagnostic, LambdaEvent};
use latch_aws::dynamo::DynamoStore;
use latch_aws::events::EventBridgeSink;
use latch_aws::iam::IamAdapter;
use latch_aws::items::{EXPIRES_AT_EPOCH, GrantItem, RECORD_GRANT, RECORD_TYPE};
use latch_aws::{Clients, Config};
use latch_core::metrics::{self, MetricRecord};
use latch_core::ports::{AuditSink, Clock, GrantStore, IamWriter, Ports, RecordState, Retryable, SystemClock};
use latch_core::revoke::{RevokeOutcome, RevokeReason, Revoker};
use tracing::{info, warn};

/// Records in flight at once (different roles). Lambda's own limit is one batch per shard.
pub const RECORD_CONCURRENCY: usize = 10;

/// Room left for the records in flight when no new one is started (each AWS call is bounded to
/// 10 s; a revoke is three of them).
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(15);

/// The function never fails a batch as a whole: a record that may succeed later is reported
/// by sequence number. This is the one way a batch can fail (nothing to report it by).
#[derive(Debug, thiserror::Error)]
pub enum RevokeBatchError {
    #[error("a record to retry has no sequence number (event {event_id}); the whole batch is retried")]
    NoSequenceNumber { event_id: String },
}

impl RevokeBatchError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoSequenceNumber { .. } => "NoSequenceNumber",
        }
    }
}

impl Retryable for RevokeBatchError {
    fn is_retryable(&self) -> bool {
        true
    }
}

impl From<RevokeBatchError> for Diagnostic {
    fn from(e: RevokeBatchError) -> Self {
        let verdict = if e.is_retryable() { "Retryable" } else { "Permanent" };
        Diagnostic {
            error_type: format!("Revoke.{}.{verdict}", e.kind()),
            error_message: format!("{e} (retryable: {})", e.is_retryable()),
        }
    }
}

/// The ports the function holds, built once at init.
pub struct RevokeFunction<I, S, A, C> {
    pub ports: Ports<I, S, A, C>,
}

pub type AwsRevokeFunction = RevokeFunction<IamAdapter, DynamoStore, EventBridgeSink, SystemClock>;

pub async fn init() -> Result<AwsRevokeFunction, latch_aws::ConfigError> {
    let config = Config::from_env()?;
    let clients = Clients::from_env(&config).await;
    Ok(RevokeFunction {
        ports: Ports::new(clients.iam, clients.store, clients.audit, SystemClock),
    })
}

/// DynamoDB's own TTL deletion, as AWS marks it on the stream record.
pub fn is_ttl_removal(record: &EventRecord) -> bool {
    record.event_name == "REMOVE"
        && record
            .user_identity
            .as_ref()
            .is_some_and(|u| u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com")
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Skipped(&'static str),
    Revoked,
    AlreadyRevoked,
    /// IAM refused for good: audited as Revoke Failed; drift repair removes the policy later.
    Failed,
    /// Reported as a batch item failure: Lambda retries from this record.
    Retry,
}

impl<I: IamWriter, S: GrantStore, A: AuditSink, C: Clock> RevokeFunction<I, S, A, C> {
    fn revoker(&self) -> Revoker<'_, I, S, A, C> {
        self.ports.revoker()
    }

    pub async fn on_record(&self, record: &EventRecord) -> RecordOutcome {
        if !is_ttl_removal(record) {
            return RecordOutcome::Skipped("not a TTL removal");
        }
        let old = &record.change.old_image;
        if old.get(RECORD_TYPE) != Some(&serde_dynamo::AttributeValue::S(RECORD_GRANT.into())) {
            return RecordOutcome::Skipped("not a grant item");
        }
        let grant = match serde_dynamo::from_item::<_, GrantItem>(old.clone()).map(GrantItem::into_grant) {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                warn!(event_id = %record.event_id, error = %e, "TTL-removed grant item is invalid; skipped");
                return RecordOutcome::Skipped("invalid grant item");
            }
            Err(e) => {
                warn!(event_id = %record.event_id, error = %e, "TTL-removed item is not a grant; skipped");
                return RecordOutcome::Skipped("invalid grant item");
            }
        };
        if !grant.status.is_live() {
            return RecordOutcome::Skipped("grant already revoked");
        }
        // The record is a claim: anyone allowed to invoke this function can hand it one. Only a
        // consistent read showing the item gone makes it TTL's deletion of a grant.
        match self.ports.store.grant(&grant.id).await {
            Ok(None) => {}
            Ok(Some(recorded)) => {
                warn!(
                    grant_id = %grant.id,
                    event_id = %record.event_id,
                    status = ?recorded.status,
                    "TTL removal record for a grant the table still holds: not acted on"
                );
                return RecordOutcome::Skipped("grant item still recorded");
            }
            Err(e) if e.is_retryable() => {
                warn!(grant_id = %grant.id, error = %e, "confirming the removal will be retried");
                return RecordOutcome::Retry;
            }
            Err(e) => {
                warn!(grant_id = %grant.id, error = %e, "removal cannot be confirmed; left to the sweep");
                return RecordOutcome::Skipped("removal not confirmed");
            }
        }
        match self
            .revoker()
            .revoke(&grant, RevokeReason::ExpiredTtl, RecordState::DeletedByTtl)
            .await
        {
            Ok(RevokeOutcome::Revoked) => RecordOutcome::Revoked,
            Ok(RevokeOutcome::AlreadyRevoked) => RecordOutcome::AlreadyRevoked,
            Ok(RevokeOutcome::Failed(_)) => RecordOutcome::Failed,
            Err(e) if e.is_retryable() => {
                warn!(grant_id = %grant.id, error = %e, "revoke will be retried");
                RecordOutcome::Retry
            }
            Err(e) => {
                warn!(grant_id = %grant.id, error = %e, "revoke failed for good; drift repair will remove the policy");
                RecordOutcome::Failed
            }
        }
    }

    /// Handles a batch; every record is tried (or, past the deadline, left for retry), and the
    /// ones to retry are reported by sequence number.
    pub async fn handle(&self, event: LambdaEvent<Event>) -> Result<DynamoDbEventResponse, RevokeBatchError> {
        let stop_by = stop_by(event.context.deadline);
        let records = &event.payload.records;
        let outcomes = self.on_batch(records, stop_by).await;
        let mut response = DynamoDbEventResponse::default();
        let mut observed = Vec::new();
        let now = self.ports.clock.now();
        for (record, outcome) in records.iter().zip(&outcomes) {
            info!(event_id = %record.event_id, ?outcome, "stream record");
            match outcome {
                RecordOutcome::Revoked => {
                    observed.push(MetricRecord::revocation(RevokeReason::ExpiredTtl));
                    if let Some(expiry) = expires_at_epoch(record) {
                        let lag = now.timestamp() - expiry;
                        observed.push(MetricRecord::expiry_to_revocation(RevokeReason::ExpiredTtl, lag));
                    }
                }
                RecordOutcome::Failed => observed.push(MetricRecord::revoke_failure(RevokeReason::ExpiredTtl)),
                RecordOutcome::Retry => {
                    observed.push(MetricRecord::revoke_retry());
                    let Some(sequence) = record.change.sequence_number.clone() else {
                        return Err(RevokeBatchError::NoSequenceNumber {
                            event_id: record.event_id.clone(),
                        });
                    };
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = Some(sequence);
                    response.batch_item_failures.push(failure);
                }
                RecordOutcome::Skipped(_) | RecordOutcome::AlreadyRevoked => {}
            }
        }
        observed.extend(latch_aws::call_metrics::drain());
        metrics::emit(&observed, "revoke", now);
        Ok(response)
    }

    /// Each record's outcome, in the batch's order: roles concurrently, one role's records in
    /// order; a record not started by `stop_by` is [`RecordOutcome::Retry`].
    pub async fn on_batch(&self, records: &[EventRecord], stop_by: Option<Instant>) -> Vec<RecordOutcome> {
        let out_of_time = || stop_by.is_some_and(|t| Instant::now() >= t);
        let mut outcomes: Vec<(usize, RecordOutcome)> = futures::stream::iter(by_role(records))
            .map(|group| async move {
                let mut done = Vec::with_capacity(group.len());
                for i in group {
                    let outcome = if out_of_time() {
                        RecordOutcome::Retry
                    } else {
                        self.on_record(&records[i]).await
                    };
                    done.push((i, outcome));
                }
                done
            })
            .buffer_unordered(RECORD_CONCURRENCY)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        outcomes.sort_by_key(|(i, _)| *i);
        outcomes.into_iter().map(|(_, o)| o).collect()
    }
}

/// Record positions by the OldImage's role (case-insensitive, as IAM names are), in batch
/// order; a record without one is a group of its own.
fn by_role(records: &[EventRecord]) -> Vec<Vec<usize>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let role = match record.change.old_image.get("role_arn") {
            Some(serde_dynamo::AttributeValue::S(role)) => role.to_ascii_lowercase(),
            _ => format!("#record-{i}"),
        };
        let slot = *index.entry(role).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push(i);
    }
    groups
}

fn expires_at_epoch(record: &EventRecord) -> Option<i64> {
    match record.change.old_image.get(EXPIRES_AT_EPOCH) {
        Some(serde_dynamo::AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// When to stop starting records: the invocation's deadline less [`DEADLINE_MARGIN`]; none
/// without a deadline (local runs).
pub fn stop_by(deadline_epoch_ms: u64) -> Option<Instant> {
    if deadline_epoch_ms == 0 {
        return None;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms));
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN))
}
