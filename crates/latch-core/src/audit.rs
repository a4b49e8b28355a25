//! Audit records: one durable item per decision (I5), also the detail of the audit event.
//!
//! The record is flat so exports query it directly (Athena, DuckDB). Times are written twice,
//! ISO 8601 and epoch seconds. `audit_id` is deterministic per decision, so a retried write
//! is recognised and a consumer can drop a re-delivered event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::iam_time;

/// Every audit event Latch publishes carries this EventBridge source.
pub const AUDIT_SOURCE: &str = "latch";

/// Defaults to `Denied`: deny by default, down to the type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Activated,
    #[default]
    Denied,
    Revoked,
    RevokeFailed,
    DriftRepaired,
    Extended,
}

impl Decision {
    /// The audit event's detail-type on the bus.
    pub fn detail_type(self) -> &'static str {
        match self {
            Self::Activated => "Latch Grant Activated",
            Self::Denied => "Latch Grant Denied",
            Self::Revoked => "Latch Grant Revoked",
            Self::RevokeFailed => "Latch Revoke Failed",
            Self::DriftRepaired => "Latch Drift Repaired",
            Self::Extended => "Latch Grant Extended",
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Self::Activated => "activated",
            Self::Denied => "denied",
            Self::Revoked => "revoked",
            Self::RevokeFailed => "revoke_failed",
            Self::DriftRepaired => "drift_repaired",
            Self::Extended => "extended",
        }
    }
}

/// One decision, as auditors read it. Absent facts are `None`, never empty strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub audit_id: String,
    pub decision: Decision,
    /// `allowed` for activations; a reason code otherwise.
    pub reason: String,
    /// What went wrong, in words (the field at fault, the AWS error), when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_set: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `verified` when the job's identity came from its CI's token, `claimed` when only the
    /// publisher said it; absent when no job was identified (a malformed event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The policy file's name of the issuer that signed the token (verified identities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The verified principal, `<issuer>:<repository or project id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The signed claims the decision used (identity claims and those the rule binds). The
    /// token itself is never recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verified_claims: BTreeMap<String, String>,
    /// Which of this record's job fields the issuer signed; the others are the publisher's claims.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified_fields: Vec<String>,
    /// The IAM role session the grant is bound to, when the rule binds sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(rename = "ref")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_duration_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at_epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at_epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sha256: Option<String>,
    pub recorded_at: String,
    pub recorded_at_epoch: i64,
}

/// ISO 8601 and epoch seconds of one instant, for the paired fields above.
pub fn stamp(t: DateTime<Utc>) -> (Option<String>, Option<i64>) {
    (Some(iam_time(t)), Some(t.timestamp()))
}

impl AuditRecord {
    pub fn new(audit_id: String, decision: Decision, reason: &str, recorded_at: DateTime<Utc>) -> Self {
        Self {
            audit_id,
            decision,
            reason: reason.to_owned(),
            recorded_at: iam_time(recorded_at),
            recorded_at_epoch: recorded_at.timestamp(),
            ..Self::default()
        }
    }

    pub fn detail_type(&self) -> &'static str {
        self.decision.detail_type()
    }
}
