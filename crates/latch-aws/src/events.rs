//! [`AuditSink`] on EventBridge: one PutEvents entry per audit record, source `latch`,
//! detail-type per decision, the record as detail. A failed entry (`failed_entry_count` > 0)
//! is an error: the event did not go out.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use latch_core::audit::{AUDIT_SOURCE, AuditRecord};
use latch_core::ports::{AuditSink, SinkError};

use crate::errors::{describe, is_transient, is_transient_code};

#[derive(Debug, Clone)]
pub struct EventBridgeSink {
    client: Client,
    bus: String,
}

impl EventBridgeSink {
    pub fn new(client: Client, bus: &str) -> Self {
        Self {
            client,
            bus: bus.to_owned(),
        }
    }
}

impl AuditSink for EventBridgeSink {
    async fn publish(&self, audit: &AuditRecord) -> Result<(), SinkError> {
        let detail = serde_json::to_string(audit).map_err(|e| SinkError::Rejected(e.to_string()))?;
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(AUDIT_SOURCE)
            .detail_type(audit.detail_type())
            .detail(detail)
            .set_resources(audit.role_arn.clone().map(|r| vec![r]))
            .build();
        let out = self.client.put_events().entries(entry).send().await.map_err(|e| {
            if is_transient(&e) {
                SinkError::Transient(describe(&e))
            } else {
                SinkError::Rejected(describe(&e))
            }
        })?;
        if out.failed_entry_count() == 0 {
            return Ok(());
        }
        let failed = out.entries().iter().find(|e| e.error_code().is_some());
        let code = failed.and_then(|e| e.error_code());
        let text = format!(
            "PutEvents failed entry: {} {}",
            code.unwrap_or("unknown"),
            failed.and_then(|e| e.error_message()).unwrap_or("")
        );
        // An entry refused for its content will be refused again; anything else may pass later.
        if code.is_none() || is_transient_code(code) {
            Err(SinkError::Transient(text))
        } else {
            Err(SinkError::Rejected(text))
        }
    }
}
