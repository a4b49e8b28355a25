//! [`SweepState`] on DynamoDB: one lease item per sweep task and one drift cursor item.
//!
//! A lease is taken with one conditional PutItem: written only if there is none, or the one
//! there has expired, or it is this run's own. It carries a `ttl` a day after its expiry so the
//! table does not keep dead leases. Releasing expires it in place (an UpdateItem conditioned on
//! the holder), so a run that outlived its lease never frees its successor's.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use latch_core::ports::StoreError;
use latch_core::sweep::{SweepState, SweepTask};

use super::{DynamoStore, is_held_by_a_transaction, key, n, s, sdk_error};
use crate::items::{RECORD_TYPE, TTL};

pub const LEASE_SK: &str = "LEASE";
pub const CURSOR_PK: &str = "SWEEP#drift-cursor";
pub const CURSOR_SK: &str = "CURSOR";
pub const HOLDER: &str = "holder";
pub const UNTIL_MS: &str = "until_ms";
pub const LAST_ROLE: &str = "last_role";

pub fn lease_pk(task: SweepTask) -> String {
    format!("SWEEP#lease#{}", task.code())
}

impl SweepState for DynamoStore {
    async fn take_lease(
        &self,
        task: SweepTask,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut item = key(lease_pk(task), LEASE_SK);
        item.insert(RECORD_TYPE.to_owned(), s("sweep_lease"));
        item.insert(HOLDER.to_owned(), s(holder));
        item.insert(UNTIL_MS.to_owned(), n(until.timestamp_millis()));
        item.insert(TTL.to_owned(), n((until + chrono::Duration::days(1)).timestamp()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #until <= :now OR #holder = :me")
            .expression_attribute_names("#until", UNTIL_MS)
            .expression_attribute_names("#holder", HOLDER)
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":me", s(holder));
        match self
            .conflicts
            .run("take_lease", is_held_by_a_transaction, || put.clone().send())
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

    async fn release_lease(&self, task: SweepTask, holder: &str) -> Result<(), StoreError> {
        // Expired in place rather than deleted: a delete would put a REMOVE record on the
        // table's stream for the revoke function's filter to drop, every run.
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(lease_pk(task), LEASE_SK)))
            .update_expression("SET #until = :zero")
            .condition_expression("#holder = :me")
            .expression_attribute_names("#until", UNTIL_MS)
            .expression_attribute_names("#holder", HOLDER)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":me", s(holder));
        match self
            .conflicts
            .run("release_lease", is_held_by_a_transaction, || update.clone().send())
            .await
        {
            Ok(_) => Ok(()),
            // Someone else's now (ours expired and was taken): not ours to give back.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error(&e)),
        }
    }

    async fn drift_cursor(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .read(CURSOR_PK.to_owned(), CURSOR_SK)
            .await?
            .and_then(|item| match item.get(LAST_ROLE) {
                Some(AttributeValue::S(role)) => Some(role.clone()),
                _ => None,
            }))
    }

    async fn save_drift_cursor(&self, last_checked: &str) -> Result<(), StoreError> {
        let mut item = key(CURSOR_PK.to_owned(), CURSOR_SK);
        item.insert(RECORD_TYPE.to_owned(), s("sweep_cursor"));
        item.insert(LAST_ROLE.to_owned(), s(last_checked));
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        self.conflicts
            .run("save_drift_cursor", is_held_by_a_transaction, || put.clone().send())
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(&e))
    }
}
