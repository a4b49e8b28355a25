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

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::{Error, LambdaEvent};
use latch_aws::dynamo::DynamoStore;
use latch_aws::events::EventBridgeSink;
use latch_aws::iam::IamAdapter;
use latch_aws::items::{GrantItem, RECORD_GRANT, RECORD_TYPE};
use latch_aws::{Clients, Config};
use latch_core::ports::{AuditSink, Clock, GrantStore, IamWriter, RecordState, Retryable, SystemClock};
use latch_core::revoke::{RevokeOutcome, RevokeReason, Revoker};
use tracing::{info, warn};

/// The ports the function holds, built once at init.
pub struct RevokeFunction<I, S, A, C> {
    pub iam: I,
    pub store: S,
    pub audit: A,
    pub clock: C,
}

pub type AwsRevokeFunction = RevokeFunction<IamAdapter, DynamoStore, EventBridgeSink, SystemClock>;

pub async fn init() -> Result<AwsRevokeFunction, latch_aws::ConfigError> {
    let config = Config::from_env()?;
    let clients = Clients::from_env(&config).await;
    Ok(RevokeFunction {
        iam: clients.iam,
        store: clients.store,
        audit: clients.audit,
        clock: SystemClock,
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
        Revoker {
            iam: &self.iam,
            store: &self.store,
            audit: &self.audit,
            clock: &self.clock,
        }
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
        match self.store.grant(&grant.id).await {
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

    /// Handles a batch; every record is tried, and the ones to retry are reported.
    pub async fn handle(&self, event: LambdaEvent<Event>) -> Result<DynamoDbEventResponse, Error> {
        let mut response = DynamoDbEventResponse::default();
        for record in &event.payload.records {
            let outcome = self.on_record(record).await;
            info!(event_id = %record.event_id, ?outcome, "stream record");
            if outcome == RecordOutcome::Retry {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = record.change.sequence_number.clone();
                response.batch_item_failures.push(failure);
            }
        }
        Ok(response)
    }
}
