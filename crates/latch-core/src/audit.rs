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

/// The schema this record type writes (events/schemas/audit-record.schema.json's `$id`).
pub const AUDIT_SCHEMA_VERSION: &str = "v2";

/// The longest deleted document a record keeps. A record (item and event) must stay under
/// EventBridge's 256 KB entry and DynamoDB's 400 KB item: a rendered document is at most
/// 10,240 characters (IAM's aggregate quota, refused above), claims and tokens are bounded at
/// parse, so only a document found on a role, written by someone else, needs a cap.
pub const MAX_DELETED_DOCUMENT: usize = 64 * 1024;

/// The job fields a record may carry, and that a token may vouch for.
pub const JOB_FIELDS: &[&str] = &[
    "principal",
    "pipeline",
    "run_id",
    "job",
    "attempt",
    "ref",
    "commit",
    "actor",
    "environment",
    "ticket",
    "justification",
];

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
    /// Which of this record's job fields nobody signed: the publisher's word only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claimed_fields: Vec<String>,
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
    /// The exact document attached (activations, extensions): what `policy_sha256` digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_document: Option<String>,
    /// SHA-256 of the policy file that decided, byte for byte as loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file_sha256: Option<String>,
    /// The policy file's own `label:` (its version as its owners name it), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file_label: Option<String>,
    /// Drift repairs: the document deleted from the role, as IAM held it (cut at
    /// [`MAX_DELETED_DOCUMENT`] bytes, which the record then says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_document: Option<String>,
    /// Revocations on a job's finish: who proved the finish, `<issuer>:<id>` from its token,
    /// `aws_service:<source>` for a native end, or `claimed:<source>` when a claimed rule let the
    /// publisher's word end it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_by: Option<String>,
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

    /// Marks every job field the record carries that is not in `verified_fields` as claimed.
    pub fn mark_claimed_fields(&mut self) {
        let present = |f: &str| match f {
            "principal" => self.principal.is_some(),
            "pipeline" => self.pipeline.is_some(),
            "run_id" => self.run_id.is_some(),
            "job" => self.job.is_some(),
            "attempt" => self.attempt.is_some(),
            "ref" => self.git_ref.is_some(),
            "commit" => self.commit.is_some(),
            "actor" => self.actor.is_some(),
            "environment" => self.environment.is_some(),
            "ticket" => self.ticket.is_some(),
            "justification" => self.justification.is_some(),
            _ => false,
        };
        let claimed: Vec<String> = JOB_FIELDS
            .iter()
            .filter(|f| present(f) && !self.verified_fields.iter().any(|v| v == *f))
            .map(|f| (*f).to_owned())
            .collect();
        self.claimed_fields = claimed;
    }

    /// Keeps a deleted document, cut to [`MAX_DELETED_DOCUMENT`] bytes (on a character
    /// boundary) with a note of its full size, so the record stays within AWS's limits.
    pub fn keep_deleted_document(&mut self, document: &str) {
        if document.len() <= MAX_DELETED_DOCUMENT {
            self.deleted_document = Some(document.to_owned());
            return;
        }
        let mut end = MAX_DELETED_DOCUMENT;
        while !document.is_char_boundary(end) {
            end -= 1;
        }
        self.deleted_document = Some(document[..end].to_owned());
        let note = format!("deleted document cut at {end} of {} bytes", document.len());
        self.detail = Some(match self.detail.take() {
            Some(d) => format!("{d}; {note}"),
            None => note,
        });
    }

    /// The id this record's own fields determine, for the decisions whose id is a function of
    /// them (a grant's one activation and one revocation); `None` for the others. A record whose
    /// id differs was not written by Latch.
    pub fn derived_audit_id(&self) -> Option<String> {
        let grant = crate::model::GrantId::parse(self.grant_id.as_deref()?).ok()?;
        match self.decision {
            Decision::Activated => Some(crate::grant::activation_audit_id_of(&grant)),
            Decision::Revoked => Some(crate::revoke::revoked_audit_id(&grant)),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "audit_record_tests.rs"]
mod record_tests;
