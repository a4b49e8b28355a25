//! The local runner: feeds the handlers the way Lambda would. Pipeline events reach the grant
//! handler through the bus rule's queue target, one delivery at a time; a failed delivery stays
//! on the queue and comes back after its visibility timeout, as Lambda's retries would.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use grant::Outcome;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

use crate::CliError;

/// One event handled: its detail-type and what the handler made of it.
#[derive(Debug)]
pub struct Handled {
    pub detail_type: String,
    pub outcome: Result<Outcome, String>,
}

pub struct Runner {
    pub grant: grant::AwsGrantService,
    pub sqs: aws_sdk_sqs::Client,
    pub inbox_url: String,
    /// The emulator may deliver an envelope without `account` (EMULATOR-NOTES.md). Lambda never
    /// sees that; locally we fill it from configuration, never from `detail`.
    pub account: String,
}

impl Runner {
    /// Receives what is waiting on the inbox (waiting up to `wait_secs`) and hands each
    /// delivery to the grant handler. Successful deliveries are deleted; failed ones retried later.
    pub async fn pump(&self, wait_secs: i32) -> Result<Vec<Handled>, CliError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.inbox_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .send()
            .await
            .map_err(|e| CliError::Aws(format!("receiving from the grant inbox: {e}")))?;
        let mut handled = Vec::new();
        for message in out.messages() {
            let Some(body) = message.body() else { continue };
            let mut v: Value = match serde_json::from_str(body) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "inbox message is not JSON; dropped");
                    continue;
                }
            };
            if v.get("account").is_none_or(Value::is_null) {
                v["account"] = Value::String(self.account.clone());
            }
            let event: EventBridgeEvent<Value> = match serde_json::from_value(v) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "inbox message is not an EventBridge event; dropped");
                    continue;
                }
            };
            let outcome = grant::handle(&self.grant, LambdaEvent::new(event.clone(), Context::default()))
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
                    .map_err(|e| CliError::Aws(format!("deleting a handled delivery: {e}")))?;
            }
            handled.push(Handled {
                detail_type: event.detail_type,
                outcome,
            });
        }
        Ok(handled)
    }
}
