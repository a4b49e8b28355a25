//! [`GrantStore`] on DynamoDB. An activation is one TransactWriteItems: the grant (only if
//! new), a check that the job has no tombstone, the activation audit, and the role's
//! active-grant counter (refused at the cap). A cancelled transaction says which condition
//! failed, and that is the answer: duplicate, finished job or cap.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use latch_core::audit::AuditRecord;
use latch_core::ports::{Activation, Grant, GrantStore, StoreError};

use crate::errors::{describe, is_transient};
use crate::items::{
    ACTIVE_GRANTS, AuditItem, GrantItem, PK, SK, SK_COUNTER, SK_TOMBSTONE, job_pk, role_pk,
};

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
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

fn sdk_error<E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error>(
    e: &SdkError<E>,
) -> StoreError {
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
const TX_TOMBSTONE: usize = 1;
const TX_AUDIT: usize = 2;
const TX_COUNTER: usize = 3;

impl DynamoStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn put_new(&self, item: Item) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NOT_EXISTS)
            .build()
            .map_err(rejected)
    }

    fn activation_items(
        &self,
        grant: &Grant,
        audit: &AuditRecord,
        cap: Option<u32>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let grant_item = serde_dynamo::to_item(GrantItem::from_grant(grant)).map_err(rejected)?;
        let audit_item = serde_dynamo::to_item(AuditItem::from_record(audit)).map_err(rejected)?;
        let grant_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(grant_item))
            .condition_expression(NOT_EXISTS)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(rejected)?;
        let tombstone_check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(
                job_pk(&grant.account, &grant.source, &grant.job),
                SK_TOMBSTONE,
            )))
            .condition_expression(NOT_EXISTS)
            .build()
            .map_err(rejected)?;
        let mut counter = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(role_pk(&grant.role), SK_COUNTER)))
            .update_expression("ADD #active :one")
            .expression_attribute_names("#active", ACTIVE_GRANTS)
            .expression_attribute_values(":one", n(1));
        if let Some(cap) = cap {
            counter = counter
                .condition_expression("attribute_not_exists(#active) OR #active < :cap")
                .expression_attribute_values(":cap", n(cap));
        }
        Ok(vec![
            TransactWriteItem::builder().put(grant_put).build(),
            TransactWriteItem::builder()
                .condition_check(tombstone_check)
                .build(),
            TransactWriteItem::builder()
                .put(self.put_new(audit_item)?)
                .build(),
            TransactWriteItem::builder()
                .update(counter.build().map_err(rejected)?)
                .build(),
        ])
    }

    /// Reads a grant item; used only off the hot path (a duplicate whose old image was not returned).
    async fn get_grant(&self, grant: &Grant) -> Result<Option<Grant>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(
                job_pk(&grant.account, &grant.source, &grant.job),
                &crate::items::grant_sk(&grant.id),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&e))?;
        out.item.map(grant_from_item).transpose()
    }
}

pub(crate) fn grant_from_item(item: Item) -> Result<Grant, StoreError> {
    let parsed: GrantItem = serde_dynamo::from_item(item).map_err(rejected)?;
    parsed.into_grant().map_err(rejected)
}

fn failed_condition(reasons: &[CancellationReason], index: usize) -> Option<&CancellationReason> {
    reasons
        .get(index)
        .filter(|r| r.code() == Some("ConditionalCheckFailed"))
}

impl GrantStore for DynamoStore {
    async fn record_activation(
        &self,
        grant: &Grant,
        audit: &AuditRecord,
        cap: Option<u32>,
    ) -> Result<Activation, StoreError> {
        let items = self.activation_items(grant, audit, cap)?;
        let err = match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => return Ok(Activation::Recorded),
            Err(e) => e,
        };
        let reasons = match &err {
            SdkError::ServiceError(se) => match se.err() {
                TransactWriteItemsError::TransactionCanceledException(c) => {
                    c.cancellation_reasons()
                }
                _ => return Err(sdk_error(&err)),
            },
            _ => return Err(sdk_error(&err)),
        };
        if let Some(reason) = failed_condition(reasons, TX_GRANT) {
            let existing = match reason.item() {
                Some(old) => Some(grant_from_item(old.clone())?),
                None => self.get_grant(grant).await?,
            };
            return match existing {
                Some(g) => Ok(Activation::AlreadyRecorded(Box::new(g))),
                // Deleted between the two calls (revoked and expired): treat it as ended.
                None => Ok(Activation::AlreadyRecorded(Box::new(Grant {
                    status: latch_core::ports::GrantStatus::Revoked,
                    ..grant.clone()
                }))),
            };
        }
        if failed_condition(reasons, TX_TOMBSTONE).is_some() {
            return Ok(Activation::JobFinished);
        }
        if failed_condition(reasons, TX_COUNTER).is_some() {
            return Ok(Activation::ConcurrencyCapReached);
        }
        if failed_condition(reasons, TX_AUDIT).is_some() {
            return Err(StoreError::Rejected(format!(
                "activation audit {} exists without its grant",
                audit.audit_id
            )));
        }
        // Cancelled for another reason (TransactionConflict, throttling): a retry may pass.
        Err(StoreError::Transient(describe(&err)))
    }

    async fn record_audit(&self, audit: &AuditRecord) -> Result<bool, StoreError> {
        let item = serde_dynamo::to_item(AuditItem::from_record(audit)).map_err(rejected)?;
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NOT_EXISTS)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error(&e)),
        }
    }
}
