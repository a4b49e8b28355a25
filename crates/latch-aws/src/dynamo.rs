//! [`GrantStore`] on DynamoDB (item layout: [`crate::items`]).
//!
//! An activation is two TransactWriteItems around IAM's PutRolePolicy (I8). Before: the grant
//! as `pending` (only if new), the job item (grant id added, refused once the job has finished:
//! the tombstone), the role's live-grant counter (refused at the cap), and with a verified token,
//! the token's use (refused when it was used for another job). After IAM accepted the document:
//! the grant marked `active` (only if still live) with its activation audit (only if new). A
//! refusal instead marks it `failed`, frees its counter slot and writes the refusal's audit. A revocation is one TransactWriteItems too:
//! the grant marked revoked (only if active), the Revoked audit (only if new), the counter. A
//! cancelled transaction says which condition failed, and that is the answer.
//!
//! Every TransactWriteItems goes through [`DynamoStore::transact`], every single-item write
//! through [`ConflictRetry::run`] too: a transaction cancelled only for `TransactionConflict`, or
//! a single write answered `TransactionConflictException`, is retried in process (nothing was
//! written); what outlasts the budget is [`StoreError::Transient`]. A cancellation naming a
//! `ValidationError` is [`StoreError::Rejected`]: the same request would be refused again.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};
use latch_core::audit::AuditRecord;
use latch_core::model::{AccountId, Grant, GrantId, GrantStatus, JobKey, RoleArn};
use latch_core::ports::{
    Activation, AuditWrite, Confirmation, Extension, GrantStore, RateWindow, RecordState, Revocation, RoleLimits,
    StoreError, TokenUse,
};

use crate::conflicts::ConflictRetry;
use crate::errors::{describe, is_transient};
use crate::items::{
    ACTIVE_BUCKET, ACTIVE_GRANTS, AuditItem, EXPIRES_AT_EPOCH, EXPIRY_BUCKET, EXPIRY_INDEX, FINISHED_AT,
    FIRST_SEEN_EPOCH, GRANT_IDS, GrantItem, JOB_SCOPE, PK, POLICY_CHARS, PUBLISHER, RECORD_TYPE, SK, SK_AUDIT,
    SK_COUNTER, SK_DRIFT, SK_GRANT, SK_JOB, SK_RATE_WINDOW, SK_TOKEN, STATUS, STATUS_ACTIVE, STATUS_FAILED,
    STATUS_PENDING, STATUS_REVOKED, TTL, WINDOW_GRANTS, audit_pk, drift_pk, grant_pk, job_pk, rate_window_pk, role_pk,
    token_pk,
};

type Item = HashMap<String, AttributeValue>;

#[path = "sweep_state.rs"]
pub mod sweep_state;

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    conflicts: ConflictRetry,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn rejected(e: impl std::fmt::Display) -> StoreError {
    StoreError::Rejected(e.to_string())
}

fn sdk_error<E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error>(e: &SdkError<E>) -> StoreError {
    if is_transient(e) {
        StoreError::Transient(describe(e))
    } else {
        StoreError::Rejected(describe(e))
    }
}

pub(crate) fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

const NOT_EXISTS: &str = "attribute_not_exists(pk)";

/// Positions of the activation transaction's items, to read cancellation reasons by.
const TX_GRANT: usize = 0;
const TX_JOB: usize = 1;
const TX_COUNTER: usize = 2;
const TX_RATE: usize = 3;
const TX_TOKEN: usize = 4;

/// A rate window outlives its minute by this much, then TTL removes it (never read again).
const RATE_WINDOW_KEPT: chrono::Duration = chrono::Duration::minutes(2);

/// Positions of the confirmation transaction's items.
const TX_CONFIRM_GRANT: usize = 0;
const TX_CONFIRM_AUDIT: usize = 1;

/// Positions of the extension transaction's items.
const TX_EXTEND_GRANT: usize = 0;
const TX_EXTEND_AUDIT: usize = 1;

/// The reasons of a cancelled transaction, or the error as it stands.
fn cancellation(err: &SdkError<TransactWriteItemsError>) -> Option<&[CancellationReason]> {
    match err {
        SdkError::ServiceError(se) => match se.err() {
            TransactWriteItemsError::TransactionCanceledException(c) => Some(c.cancellation_reasons()),
            _ => None,
        },
        _ => None,
    }
}

/// A transaction cancelled only because another transaction held one of its items: every
/// reason `TransactionConflict` or `None` (no condition failed, nothing invalid). Nothing was
/// written; the same request may pass a moment later.
fn is_transaction_conflict(err: &SdkError<TransactWriteItemsError>) -> bool {
    cancellation(err).is_some_and(|reasons| {
        reasons.iter().any(|r| r.code() == Some("TransactionConflict"))
            && reasons
                .iter()
                .all(|r| matches!(r.code(), None | Some("None" | "TransactionConflict")))
    })
}

/// The errors of the single-item writes, which say when a transaction in flight holds the item.
trait SingleWriteError {
    fn is_transaction_conflict(&self) -> bool;
}

macro_rules! single_write_error {
    ($($e:ty),*) => {$(
        impl SingleWriteError for $e {
            fn is_transaction_conflict(&self) -> bool {
                self.is_transaction_conflict_exception()
            }
        }
    )*};
}

single_write_error!(PutItemError, UpdateItemError, DeleteItemError);

/// A single-item write answered `TransactionConflictException`: nothing was written.
fn is_held_by_a_transaction<E: SingleWriteError>(err: &SdkError<E>) -> bool {
    err.as_service_error()
        .is_some_and(SingleWriteError::is_transaction_conflict)
}

/// What a failed TransactWriteItems means to its caller.
enum TxFailure<'a> {
    /// Cancelled with at least one failed condition: the caller reads which.
    Conditions(&'a [CancellationReason]),
    /// Anything else, classified: a `ValidationError` among the reasons is permanent
    /// (`Rejected`); conflicts that outlasted the retries, throttling and capacity are
    /// `Transient`; errors other than a cancellation as [`sdk_error`] says.
    Error(StoreError),
}

fn tx_failure(err: &SdkError<TransactWriteItemsError>) -> TxFailure<'_> {
    let Some(reasons) = cancellation(err) else {
        return TxFailure::Error(sdk_error(err));
    };
    if reasons.iter().any(|r| r.code() == Some("ValidationError")) {
        TxFailure::Error(StoreError::Rejected(describe(err)))
    } else if reasons.iter().any(|r| r.code() == Some("ConditionalCheckFailed")) {
        TxFailure::Conditions(reasons)
    } else {
        TxFailure::Error(StoreError::Transient(describe(err)))
    }
}

fn failed_condition(reasons: &[CancellationReason], index: usize) -> Option<&CancellationReason> {
    reasons
        .get(index)
        .filter(|r| r.code() == Some("ConditionalCheckFailed"))
}

pub fn grant_from_item(item: Item) -> Result<Grant, StoreError> {
    let parsed: GrantItem = serde_dynamo::from_item(item).map_err(rejected)?;
    parsed.into_grant().map_err(rejected)
}

pub fn audit_from_item(item: Item) -> Result<AuditRecord, StoreError> {
    let parsed: AuditItem = serde_dynamo::from_item(item).map_err(rejected)?;
    Ok(parsed.record)
}

impl DynamoStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            conflicts: ConflictRetry::default(),
        }
    }

    /// The same store, retrying conflicting writes as `conflicts` says.
    pub fn with_conflict_retry(mut self, conflicts: ConflictRetry) -> Self {
        self.conflicts = conflicts;
        self
    }

    /// One TransactWriteItems, retried in process while it is cancelled only for
    /// `TransactionConflict` (see the module doc). `what` names it in logs.
    async fn transact(
        &self,
        what: &str,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), SdkError<TransactWriteItemsError>> {
        let request = self.client.transact_write_items().set_transact_items(Some(items));
        self.conflicts
            .run(what, is_transaction_conflict, || request.clone().send())
            .await
            .map(|_| ())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// One item, read consistently: what a retry must see is what was last written.
    async fn read(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&e))?;
        Ok(out.item)
    }

    fn put_new(&self, item: Item) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NOT_EXISTS)
            .build()
            .map_err(rejected)
    }

    /// The audit's Put, returning the stored item when it exists (a retry publishes that one).
    fn audit_put(&self, audit: &AuditRecord) -> Result<TransactWriteItem, StoreError> {
        let item = serde_dynamo::to_item(AuditItem::from_record(audit)).map_err(rejected)?;
        let mut put = self.put_new(item)?;
        put.return_values_on_condition_check_failure = Some(ReturnValuesOnConditionCheckFailure::AllOld);
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The role's counter: `delta` live grants holding `chars` characters of inline policy.
    /// With `limits` (an activation), refused at the cap or past the budget, returning the
    /// counter as it was so the caller can tell which.
    fn counter(
        &self,
        role: &RoleArn,
        delta: i32,
        chars: usize,
        limits: Option<RoleLimits>,
    ) -> Result<TransactWriteItem, StoreError> {
        let signed_chars = i64::try_from(chars).unwrap_or(i64::MAX) * i64::from(delta.signum());
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(role_pk(role), SK_COUNTER)))
            .update_expression("SET #type = :type ADD #active :delta, #chars :chars")
            .expression_attribute_names("#type", RECORD_TYPE)
            .expression_attribute_names("#active", ACTIVE_GRANTS)
            .expression_attribute_names("#chars", POLICY_CHARS)
            .expression_attribute_values(":type", s("role_counter"))
            .expression_attribute_values(":delta", n(delta))
            .expression_attribute_values(":chars", n(signed_chars));
        if let Some(limits) = limits {
            // The document fits when the live ones leave it room: their chars + this <= budget.
            let mut condition = match limits.policy_budget.checked_sub(chars) {
                Some(room) => {
                    update = update.expression_attribute_values(":room", n(room));
                    "(attribute_not_exists(#chars) OR #chars <= :room)".to_owned()
                }
                // Bigger than the whole budget: refused, whatever the role holds.
                None => "(attribute_exists(#type) AND attribute_not_exists(#type))".to_owned(),
            };
            if let Some(cap) = limits.cap {
                condition = format!("(attribute_not_exists(#active) OR #active < :cap) AND {condition}");
                update = update.expression_attribute_values(":cap", n(cap));
            }
            update = update
                .condition_expression(condition)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        }
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(rejected)?)
            .build())
    }

    fn activation_items(
        &self,
        grant: &Grant,
        limits: RoleLimits,
        rate: &RateWindow,
        token: Option<&TokenUse>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let grant_item = serde_dynamo::to_item(GrantItem::from_grant(grant)).map_err(rejected)?;
        let grant_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(grant_item))
            .condition_expression(NOT_EXISTS)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(rejected)?;
        let job = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(&grant.account, &grant.source, &grant.job), SK_JOB)))
            .update_expression("SET #type = :type, #ttl = :ttl ADD #ids :id")
            .condition_expression("attribute_not_exists(#finished)")
            .expression_attribute_names("#type", RECORD_TYPE)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#ids", GRANT_IDS)
            .expression_attribute_names("#finished", FINISHED_AT)
            .expression_attribute_values(":type", s("job"))
            .expression_attribute_values(
                ":ttl",
                n((grant.expires_at + latch_core::revoke::TOMBSTONE_LIFETIME).timestamp()),
            )
            .expression_attribute_values(":id", AttributeValue::Ss(vec![grant.id.as_str().to_owned()]))
            .build()
            .map_err(rejected)?;
        let mut items = vec![
            TransactWriteItem::builder().put(grant_put).build(),
            TransactWriteItem::builder().update(job).build(),
            self.counter(&grant.role, 1, grant.policy_chars, Some(limits))?,
            self.rate_window(rate)?,
        ];
        if let Some(t) = token {
            items.push(self.token_use(t)?);
        }
        Ok(items)
    }

    /// One more new grant in the publisher's minute, refused at its limit.
    fn rate_window(&self, rate: &RateWindow) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(rate_window_pk(&rate.publisher, rate.minute), SK_RATE_WINDOW)))
            .update_expression("SET #type = :type, #publisher = :publisher, #ttl = :ttl ADD #grants :one")
            .condition_expression("attribute_not_exists(#grants) OR #grants < :limit")
            .expression_attribute_names("#type", RECORD_TYPE)
            .expression_attribute_names("#publisher", PUBLISHER)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#grants", WINDOW_GRANTS)
            .expression_attribute_values(":type", s("rate_window"))
            .expression_attribute_values(":publisher", s(&rate.publisher))
            .expression_attribute_values(":ttl", n((rate.minute + RATE_WINDOW_KEPT).timestamp()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(rate.limit))
            .build()
            .map_err(rejected)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The token's use: written unless it was used for another job (the same job may present
    /// it again, for another permission set or on a retry).
    fn token_use(&self, t: &TokenUse) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(token_pk(&t.issuer, &t.jti), SK_TOKEN);
        item.insert(RECORD_TYPE.to_owned(), s("token_use"));
        item.insert(JOB_SCOPE.to_owned(), s(&t.job_scope));
        item.insert(TTL.to_owned(), n(t.expires_at.timestamp()));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #scope = :scope")
            .expression_attribute_names("#scope", JOB_SCOPE)
            .expression_attribute_values(":scope", s(&t.job_scope))
            .build()
            .map_err(rejected)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Reads grants by id, consistently, in batches of 100 (BatchGetItem's limit).
    async fn grants_by_id(&self, ids: &[String]) -> Result<Vec<Grant>, StoreError> {
        let mut grants = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .filter_map(|id| GrantId::parse(id).ok())
                .map(|id| key(grant_pk(&id), SK_GRANT))
                .collect();
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(rejected)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| sdk_error(&e))?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    grants.push(grant_from_item(item)?);
                }
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(grants)
    }
}

impl GrantStore for DynamoStore {
    async fn record_activation(
        &self,
        grant: &Grant,
        limits: RoleLimits,
        rate: &RateWindow,
        token: Option<&TokenUse>,
    ) -> Result<Activation, StoreError> {
        let pending = Grant {
            status: GrantStatus::Pending,
            ..grant.clone()
        };
        let items = self.activation_items(&pending, limits, rate, token)?;
        let err = match self.transact("record_activation", items).await {
            Ok(()) => return Ok(Activation::Recorded),
            Err(e) => e,
        };
        let reasons = match tx_failure(&err) {
            TxFailure::Conditions(reasons) => reasons,
            TxFailure::Error(e) => return Err(e),
        };
        if let Some(reason) = failed_condition(reasons, TX_GRANT) {
            let existing = match reason.item() {
                Some(old) => Some(grant_from_item(old.clone())?),
                None => self.grant(&grant.id).await?,
            };
            // Deleted between the two calls (expired): treat it as ended.
            let existing = existing.unwrap_or_else(|| Grant {
                status: GrantStatus::Revoked,
                ..grant.clone()
            });
            return Ok(Activation::AlreadyRecorded(Box::new(existing)));
        }
        if failed_condition(reasons, TX_JOB).is_some() {
            return Ok(Activation::JobFinished);
        }
        if failed_condition(reasons, TX_TOKEN).is_some() {
            return Ok(Activation::TokenReplayed);
        }
        if let Some(reason) = failed_condition(reasons, TX_COUNTER) {
            // One condition guards both limits: the counter as it was tells which was hit.
            let live = reason
                .item()
                .and_then(|old| old.get(ACTIVE_GRANTS))
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            return Ok(if limits.cap.is_some_and(|cap| live >= cap) {
                Activation::ConcurrencyCapReached
            } else {
                Activation::QuotaExceeded
            });
        }
        if failed_condition(reasons, TX_RATE).is_some() {
            return Ok(Activation::RateLimited);
        }
        // A condition failed on an item this code does not read a reason from: a retry may pass.
        Err(StoreError::Transient(describe(&err)))
    }

    async fn confirm_activation(&self, grant: &Grant, audit: &AuditRecord) -> Result<Confirmation, StoreError> {
        let mark = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(grant_pk(&grant.id), SK_GRANT)))
            .update_expression("SET #status = :active")
            .condition_expression("#status IN (:pending, :active)")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_values(":active", s(STATUS_ACTIVE))
            .expression_attribute_values(":pending", s(STATUS_PENDING))
            .build()
            .map_err(rejected)?;
        let items = vec![
            TransactWriteItem::builder().update(mark).build(),
            self.audit_put(audit)?,
        ];
        let err = match self.transact("confirm_activation", items).await {
            Ok(()) => return Ok(Confirmation::Confirmed),
            Err(e) => e,
        };
        let reasons = match tx_failure(&err) {
            TxFailure::Conditions(reasons) => reasons,
            TxFailure::Error(e) => return Err(e),
        };
        if failed_condition(reasons, TX_CONFIRM_GRANT).is_some() {
            return Ok(Confirmation::Ended);
        }
        if let Some(reason) = failed_condition(reasons, TX_CONFIRM_AUDIT) {
            let stored = reason.item().cloned().map(audit_from_item).transpose()?;
            return Ok(Confirmation::AlreadyConfirmed(stored.map(Box::new)));
        }
        Err(StoreError::Transient(describe(&err)))
    }

    async fn record_failure(&self, grant: &Grant, audit: &AuditRecord) -> Result<bool, StoreError> {
        let mark = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(grant_pk(&grant.id), SK_GRANT)))
            .update_expression("SET #status = :failed REMOVE #bucket")
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#bucket", EXPIRY_BUCKET)
            .expression_attribute_values(":failed", s(STATUS_FAILED))
            .expression_attribute_values(":pending", s(STATUS_PENDING))
            .build()
            .map_err(rejected)?;
        let items = vec![
            TransactWriteItem::builder().update(mark).build(),
            self.audit_put(audit)?,
            self.counter(&grant.role, -1, grant.policy_chars, None)?,
        ];
        match self.transact("record_failure", items).await {
            Ok(()) => Ok(true),
            Err(err) => match tx_failure(&err) {
                TxFailure::Conditions(_) => Ok(false),
                TxFailure::Error(e) => Err(e),
            },
        }
    }

    async fn record_extension(
        &self,
        current: &Grant,
        extended: &Grant,
        audit: &AuditRecord,
    ) -> Result<Extension, StoreError> {
        let item = serde_dynamo::to_item(GrantItem::from_grant(extended)).map_err(rejected)?;
        let grant_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("#status = :active AND #expires = :expires")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#expires", EXPIRES_AT_EPOCH)
            .expression_attribute_values(":active", s(STATUS_ACTIVE))
            .expression_attribute_values(":expires", n(current.expires_at.timestamp()))
            .build()
            .map_err(rejected)?;
        let items = vec![
            TransactWriteItem::builder().put(grant_put).build(),
            self.audit_put(audit)?,
        ];
        let err = match self.transact("record_extension", items).await {
            Ok(()) => return Ok(Extension::Recorded),
            Err(e) => e,
        };
        let reasons = match tx_failure(&err) {
            TxFailure::Conditions(reasons) => reasons,
            TxFailure::Error(e) => return Err(e),
        };
        if failed_condition(reasons, TX_EXTEND_AUDIT).is_some() {
            return Ok(match self.grant(&current.id).await? {
                Some(g) => Extension::AlreadyRecorded(Box::new(g)),
                None => Extension::NotActive,
            });
        }
        if failed_condition(reasons, TX_EXTEND_GRANT).is_some() {
            return Ok(Extension::NotActive);
        }
        Err(StoreError::Transient(describe(&err)))
    }

    async fn record_audit(&self, audit: &AuditRecord) -> Result<AuditWrite, StoreError> {
        let item = serde_dynamo::to_item(AuditItem::from_record(audit)).map_err(rejected)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NOT_EXISTS)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let err = match self
            .conflicts
            .run("record_audit", is_held_by_a_transaction, || put.clone().send())
            .await
        {
            Ok(_) => return Ok(AuditWrite::Recorded),
            Err(e) => e,
        };
        match err.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(e)) => {
                let stored = match e.item() {
                    Some(item) => Some(audit_from_item(item.clone())?),
                    None => self.recorded_audit(&audit.audit_id).await?,
                };
                // Present a moment ago; if it is gone now, what was asked to be written stands in.
                Ok(AuditWrite::AlreadyRecorded(Box::new(
                    stored.unwrap_or_else(|| audit.clone()),
                )))
            }
            _ => Err(sdk_error(&err)),
        }
    }

    async fn recorded_audit(&self, audit_id: &str) -> Result<Option<AuditRecord>, StoreError> {
        self.read(audit_pk(audit_id), SK_AUDIT)
            .await?
            .map(audit_from_item)
            .transpose()
    }

    async fn finish_job(
        &self,
        account: &AccountId,
        source: &str,
        job: &JobKey,
        finished_at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Grant>, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(account, source, job), SK_JOB)))
            .update_expression("SET #type = :type, #ttl = :ttl, #finished = if_not_exists(#finished, :now)")
            .expression_attribute_names("#type", RECORD_TYPE)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#finished", FINISHED_AT)
            .expression_attribute_values(":type", s("job"))
            .expression_attribute_values(":ttl", n(until.timestamp()))
            .expression_attribute_values(":now", s(latch_core::iam_time(finished_at)))
            .return_values(ReturnValue::AllNew);
        let out = self
            .conflicts
            .run("finish_job", is_held_by_a_transaction, || update.clone().send())
            .await
            .map_err(|e| sdk_error(&e))?;
        let ids = out
            .attributes()
            .and_then(|a| a.get(GRANT_IDS))
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        self.grants_by_id(&ids).await
    }

    async fn record_revocation(
        &self,
        grant: &Grant,
        audit: &AuditRecord,
        state: RecordState,
    ) -> Result<Revocation, StoreError> {
        let mut items = Vec::with_capacity(3);
        let audit_at = usize::from(state == RecordState::Present);
        if state == RecordState::Present {
            let mark = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(grant_pk(&grant.id), SK_GRANT)))
                .update_expression("SET #status = :revoked, revoked_at = :at REMOVE #bucket")
                .condition_expression("#status IN (:active, :pending)")
                .expression_attribute_names("#status", STATUS)
                .expression_attribute_names("#bucket", EXPIRY_BUCKET)
                .expression_attribute_values(":revoked", s(STATUS_REVOKED))
                .expression_attribute_values(":active", s(STATUS_ACTIVE))
                .expression_attribute_values(":pending", s(STATUS_PENDING))
                .expression_attribute_values(":at", s(audit.revoked_at.clone().unwrap_or_default()))
                .build()
                .map_err(rejected)?;
            items.push(TransactWriteItem::builder().update(mark).build());
        }
        items.push(self.audit_put(audit)?);
        items.push(self.counter(&grant.role, -1, grant.policy_chars, None)?);
        match self.transact("record_revocation", items).await {
            Ok(()) => Ok(Revocation::Recorded),
            Err(err) => match tx_failure(&err) {
                TxFailure::Conditions(reasons) => {
                    let stored = failed_condition(reasons, audit_at)
                        .and_then(|r| r.item().cloned())
                        .map(audit_from_item)
                        .transpose()?;
                    Ok(Revocation::AlreadyRevoked(stored.map(Box::new)))
                }
                TxFailure::Error(e) => Err(e),
            },
        }
    }

    async fn expired_grants(
        &self,
        now: DateTime<Utc>,
        after: Option<&Grant>,
        limit: u32,
    ) -> Result<Vec<Grant>, StoreError> {
        let start = after.map(|g| {
            HashMap::from([
                (PK.to_owned(), s(grant_pk(&g.id))),
                (SK.to_owned(), s(SK_GRANT)),
                (EXPIRY_BUCKET.to_owned(), s(ACTIVE_BUCKET)),
                (EXPIRES_AT_EPOCH.to_owned(), n(g.expires_at.timestamp())),
            ])
        });
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(EXPIRY_INDEX)
            .key_condition_expression("#bucket = :active AND #expires <= :now")
            .expression_attribute_names("#bucket", EXPIRY_BUCKET)
            .expression_attribute_names("#expires", EXPIRES_AT_EPOCH)
            .expression_attribute_values(":active", s(ACTIVE_BUCKET))
            .expression_attribute_values(":now", n(now.timestamp()))
            .set_exclusive_start_key(start)
            .limit(limit as i32)
            .send()
            .await
            .map_err(|e| sdk_error(&e))?;
        out.items.unwrap_or_default().into_iter().map(grant_from_item).collect()
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        self.read(grant_pk(id), SK_GRANT)
            .await?
            .map(grant_from_item)
            .transpose()
    }

    async fn drift_seen_since(
        &self,
        role: &RoleArn,
        policy_name: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(drift_pk(role, policy_name), SK_DRIFT)))
            .update_expression("SET #type = :type, #first = if_not_exists(#first, :now), #ttl = :ttl")
            .expression_attribute_names("#type", RECORD_TYPE)
            .expression_attribute_names("#first", FIRST_SEEN_EPOCH)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":type", s("drift_suspect"))
            .expression_attribute_values(":now", n(now.timestamp()))
            .expression_attribute_values(":ttl", n((now + chrono::Duration::days(2)).timestamp()))
            .return_values(ReturnValue::AllNew);
        let out = self
            .conflicts
            .run("drift_seen_since", is_held_by_a_transaction, || update.clone().send())
            .await
            .map_err(|e| sdk_error(&e))?;
        let first = out
            .attributes()
            .and_then(|a| a.get(FIRST_SEEN_EPOCH))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|t| DateTime::from_timestamp(t, 0));
        Ok(first.unwrap_or(now))
    }

    async fn clear_drift(&self, role: &RoleArn, policy_name: &str) -> Result<(), StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(drift_pk(role, policy_name), SK_DRIFT)));
        self.conflicts
            .run("clear_drift", is_held_by_a_transaction, || delete.clone().send())
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(&e))
    }
}
