//! Audit records: one durable item per decision (I5), also the detail of the audit event.
//!
//! The record is flat so exports query it directly (Athena, DuckDB). Times are written twice,
//! ISO 8601 and epoch seconds. `audit_id` is deterministic per decision, so a retried write
//! is recognised and a consumer can drop a re-delivered event.
//!
//! This module is the one place records are built: every kind (activation, extension,
//! denial, rate limit, IAM refusal, revocation on each path, revoke failure, drift repair) and
//! every id. The grant, revoke and sweep paths and the CLI's test-data generator all call these
//! constructors, so a record in a generated export is byte for byte what production writes.
//! Reasons arrive as their stable codes ([`crate::grant::DenyReason::code`],
//! [`crate::revoke::RevokeReason::code`]): this module depends on no decision path.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Envelope, StartRequest};
use crate::iam_time;
use crate::identity::Verified;
use crate::identity::claims::audited_claims;
use crate::model::{AccountId, Grant, GrantDuration, GrantId, JobContext, JobKey, RoleArn, digest};

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
#[cfg_attr(test, derive(schemars::JsonSchema), schemars(inline))]
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

/// One decision, as auditors read it: the DynamoDB audit item (plus pk = AUDIT#<audit_id>, sk =
/// AUDIT, record_type = audit; no ttl) and the detail of the audit event on the bus (source
/// latch). Flat so exports and the archive query it directly. v2 adds what makes a record stand
/// on its own: the policy file's digest and label, the document attached or deleted, who proved
/// a finish, and which job fields are only claimed. Optional fields are omitted when absent,
/// never null or empty; every time is given twice, ISO 8601 UTC and epoch seconds.
///
/// events/schemas/audit-record.schema.json is derived from this type, its field docs included
/// (`LATCH_WRITE_SCHEMAS=1 cargo test -p latch-core schema_files`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(
    title = "Latch audit record (v2)",
    extend("$id" = "https://latch.dev/schemas/audit-record.v2.json", "additionalProperties" = false),
    // Each time comes with its epoch seconds (`stamp`).
    extend("dependentRequired" = {
        "requested_at": ["requested_at_epoch"], "requested_at_epoch": ["requested_at"],
        "granted_at": ["granted_at_epoch"], "granted_at_epoch": ["granted_at"],
        "expires_at": ["expires_at_epoch"], "expires_at_epoch": ["expires_at"],
        "revoked_at": ["revoked_at_epoch"], "revoked_at_epoch": ["revoked_at"],
    }),
    // What each decision's record always carries (the constructors below).
    extend("allOf" = [
        {"if": {"properties": {"decision": {"const": "activated"}}}, "then": {"required": [
            "grant_id", "policy_name", "rule", "role_arn", "permission_set", "granted_at",
            "expires_at", "policy_sha256",
        ]}},
        {"if": {"properties": {"decision": {"const": "revoked"}}}, "then": {"required": [
            "grant_id", "role_arn", "granted_at", "expires_at", "revoked_at",
        ]}},
        {"if": {"properties": {"decision": {"const": "revoke_failed"}}}, "then": {"required": [
            "grant_id", "role_arn", "expires_at", "detail",
        ]}},
        {"if": {"properties": {"decision": {"const": "drift_repaired"}}}, "then": {"required": [
            "role_arn", "policy_name",
        ]}},
        {"if": {"properties": {"decision": {"const": "extended"}}}, "then": {"required": [
            "grant_id", "role_arn", "granted_at", "expires_at", "policy_sha256",
        ]}},
    ])
))]
pub struct AuditRecord {
    /// Deterministic id of this decision (128-bit hex digest): a retried write or a re-delivered
    /// event carries the same id, so consumers drop repeats by it.
    #[cfg_attr(test, schemars(length(min = 1), pattern(schema::HEX_128)))]
    pub audit_id: String,
    /// What Latch decided. The audit event's detail-type follows from it: Latch Grant Activated,
    /// Latch Grant Denied, Latch Grant Revoked, Latch Revoke Failed, Latch Drift Repaired, Latch
    /// Grant Extended.
    pub decision: Decision,
    /// Reason code: `allowed` for activations; a denial reason (no_matching_rule,
    /// duration_over_max, malformed_event, ...); how a grant ended for revoked and revoke_failed
    /// (job_finished, expired_ttl, expired_sweep); `no_live_grant` for drift repairs.
    #[cfg_attr(test, schemars(length(min = 1), pattern(r"^[a-z][a-z0-9_]*$"), extend("examples" = [
        "allowed", "no_matching_rule", "job_finished", "expired_sweep", "expired_ttl", "no_live_grant",
    ])))]
    pub reason: String,
    /// What went wrong, in words: the field at fault, the AWS error. Present only when something
    /// did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub detail: Option<String>,
    /// The policy-file rule that allowed the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1), pattern(r"^[A-Za-z0-9_-]{1,64}$")))]
    pub rule: Option<String>,
    /// Deterministic id of the grant: a hash of (account, source, pipeline, run, job, attempt,
    /// permission set, role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1), pattern(schema::HEX_128)))]
    pub grant_id: Option<String>,
    /// The inline policy's name on the role: `latch-<grant id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1), pattern(r"^latch-")))]
    pub policy_name: Option<String>,
    /// The elevated (or requested) IAM role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1), pattern(r"^arn:[a-z-]+:iam::[0-9]{12}:role/")))]
    pub role_arn: Option<String>,
    /// The permission set from the policy file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub permission_set: Option<String>,
    /// Summary of the IAM actions the attached policy allows (activations only). Omitted when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, schemars(length(min = 1), inner(length(min = 1))))]
    pub actions: Vec<String>,
    /// The EventBridge source of the request (trusted): e.g. ci.github, aws.codepipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub source: Option<String>,
    /// The AWS account of the request (trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1), pattern(r"^[0-9]{12}$")))]
    pub account: Option<String>,
    /// The AWS region of the request (trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub region: Option<String>,
    /// The EventBridge event id of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub event_id: Option<String>,
    /// Whose word the job's identity is: verified (its CI's OIDC token, checked by the grant
    /// function), aws_service (a native CodePipeline/CodeBuild event from its aws.* source),
    /// claimed (only the publisher said it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(extend("enum" = ["verified", "claimed", "aws_service"])))]
    pub identity: Option<String>,
    /// The policy file's name of the OIDC issuer that signed the job's token (verified identities
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub issuer: Option<String>,
    /// The verified principal: <issuer>:<repository_id> (GitHub), <issuer>:<project_id> (GitLab),
    /// <issuer>:<sub> (other issuers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub principal: Option<String>,
    /// The signed claims the decision used (identity claims and those the rule binds), as strings.
    /// The token itself is never recorded. Omitted when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verified_claims: BTreeMap<String, String>,
    /// Which of this record's job fields (pipeline, run_id, job, attempt, ref, commit, actor,
    /// environment, principal) the issuer signed; the others are the publisher's claims. Omitted
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, schemars(inner(length(min = 1))))]
    pub verified_fields: Vec<String>,
    /// Which of this record's job fields (principal, pipeline, run_id, job, attempt, ref, commit,
    /// actor, environment, ticket, justification) nobody signed: the publisher's word only.
    /// Decisions on a request; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, schemars(inner(length(min = 1))))]
    pub claimed_fields: Vec<String>,
    /// The one IAM role session name the grant holds for, when its rule binds sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub session: Option<String>,
    /// Pipeline name (claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub pipeline: Option<String>,
    /// Pipeline run id (claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub run_id: Option<String>,
    /// Job name (claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub job: Option<String>,
    /// Job attempt (claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(range(min = 1, max = 10000)))]
    pub attempt: Option<u32>,
    /// Who triggered the run (claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub actor: Option<String>,
    /// Commit being built (claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub commit: Option<String>,
    /// Git ref (claim).
    #[serde(rename = "ref")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub git_ref: Option<String>,
    /// Change ticket (claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub ticket: Option<String>,
    /// Deployment environment (claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub environment: Option<String>,
    /// The request's free-text reason (claim; `reason` in the start event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub justification: Option<String>,
    /// Duration asked for, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_duration_secs: Option<u64>,
    /// When the request was made (the event's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(pattern(schema::ISO_SECONDS)))]
    pub requested_at: Option<String>,
    /// requested_at as epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at_epoch: Option<i64>,
    /// When the grant started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(pattern(schema::ISO_SECONDS)))]
    pub granted_at: Option<String>,
    /// granted_at as epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at_epoch: Option<i64>,
    /// When the grant's policy stops working by itself (its aws:CurrentTime condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(pattern(schema::ISO_SECONDS)))]
    pub expires_at: Option<String>,
    /// expires_at as epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_epoch: Option<i64>,
    /// When the policy was taken away (revoked decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(pattern(schema::ISO_SECONDS)))]
    pub revoked_at: Option<String>,
    /// revoked_at as epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_epoch: Option<i64>,
    /// SHA-256 (hex) of the exact policy document attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1), pattern(schema::HEX_256)))]
    pub policy_sha256: Option<String>,
    /// The exact IAM policy document attached (activations and extensions), as sent to
    /// PutRolePolicy: the text policy_sha256 digests. At most 10,240 characters without whitespace
    /// (IAM's quota; Latch refuses larger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 2, max = 65536)))]
    pub policy_document: Option<String>,
    /// SHA-256 (hex) of the policy file that decided, byte for byte as the function loaded it
    /// (decisions of the grant and sweep functions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(pattern(schema::HEX_256)))]
    pub policy_file_sha256: Option<String>,
    /// The policy file's own `label:`, its version as its owners name it (a release, a commit),
    /// when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1, max = 128)))]
    pub policy_file_label: Option<String>,
    /// Drift repairs: the inline policy document deleted from the role, as IAM held it; cut at
    /// 65,536 bytes, which `detail` then says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1, max = 65536)))]
    pub deleted_document: Option<String>,
    /// Revocations on a job's finish: who proved it. `<issuer>:<id>` (the verified principal of the
    /// finish's token), `aws_service:<aws source>` (a native end), or `claimed:<source>` (an
    /// identity: claimed rule took the publisher's word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub finished_by: Option<String>,
    /// When the decision was made and recorded.
    #[cfg_attr(test, schemars(pattern(schema::ISO_SECONDS)))]
    pub recorded_at: String,
    /// recorded_at as epoch seconds.
    pub recorded_at_epoch: i64,
}

/// The patterns the record's schema gives its fields.
#[cfg(test)]
mod schema {
    /// An instant as `iam_time` writes it: ISO 8601, UTC, whole seconds.
    pub const ISO_SECONDS: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$";
    /// A `digest` id (audit, grant).
    pub const HEX_128: &str = "^[0-9a-f]{32}$";
    /// A SHA-256 digest.
    pub const HEX_256: &str = "^[0-9a-f]{64}$";
}

/// The JSON Schema of an audit record (events/schemas/audit-record.schema.json), derived from
/// [`AuditRecord`]. An absent fact is omitted (`skip_serializing_if`), never written as null,
/// so an `Option`'s field admits its value's type only.
#[cfg(test)]
pub(crate) fn record_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(AuditRecord)).unwrap_or_default();
    if let Some(properties) = schema["properties"].as_object_mut() {
        for property in properties.values_mut() {
            if let Some(types) = property["type"].as_array() {
                let kinds: Vec<_> = types.iter().filter(|t| t.as_str() != Some("null")).cloned().collect();
                if let [only] = kinds.as_slice() {
                    property["type"] = only.clone();
                }
            }
        }
    }
    schema
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
        let grant = GrantId::parse(self.grant_id.as_deref()?).ok()?;
        match self.decision {
            Decision::Activated => Some(activation_id(&grant)),
            Decision::Revoked => Some(revocation_id(&grant)),
            _ => None,
        }
    }

    /// Which policy file decided (its digest and `label:`), and which job fields are only claimed.
    pub fn decided_under(&mut self, policy_file_sha256: &str, policy_file_label: Option<&str>) {
        self.policy_file_sha256 = Some(policy_file_sha256.to_owned());
        self.policy_file_label = policy_file_label.map(str::to_owned);
        self.mark_claimed_fields();
    }

    /// A grant's facts (any decision about that grant).
    pub fn describe_grant(&mut self, grant: &Grant) {
        self.grant_id = Some(grant.id.as_str().to_owned());
        self.policy_name = Some(grant.policy_name.clone());
        self.rule = Some(grant.rule.as_str().to_owned());
        self.role_arn = Some(grant.role.as_str().to_owned());
        self.permission_set = Some(grant.permission_set.as_str().to_owned());
        self.source = Some(grant.source.clone());
        self.account = Some(grant.account.as_str().to_owned());
        self.region = Some(grant.region.clone());
        self.event_id = Some(grant.event_id.clone());
        self.requested_duration_secs = Some(grant.requested_duration_secs);
        (self.requested_at, self.requested_at_epoch) = stamp(grant.requested_at);
        (self.granted_at, self.granted_at_epoch) = stamp(grant.granted_at);
        (self.expires_at, self.expires_at_epoch) = stamp(grant.expires_at);
        self.policy_sha256 = Some(grant.policy_sha256.clone());
        self.session = grant.session.clone();
        self.describe_job(&grant.source, &grant.job, &grant.context);
    }

    /// Job facts, saying whose word they are: `verified` when a token proved the job,
    /// `aws_service` for native jobs (their `aws.*` source is AWS's word), else `claimed`.
    pub fn describe_job(&mut self, source: &str, job: &JobKey, context: &JobContext) {
        let identity = if job.principal.is_some() {
            "verified"
        } else if source.starts_with("aws.") {
            "aws_service"
        } else {
            "claimed"
        };
        self.identity = Some(identity.to_owned());
        self.principal = job.principal.clone();
        self.pipeline = Some(job.pipeline.clone());
        self.run_id = Some(job.run_id.clone());
        self.job = Some(job.job.clone());
        self.attempt = Some(job.attempt);
        self.actor = context.actor.clone();
        self.commit = context.commit.clone();
        self.git_ref = context.git_ref.clone();
        self.ticket = context.ticket.clone();
        self.environment = context.environment.clone();
        self.justification = context.reason.clone();
    }

    /// What a parsed start asked for, and who verified it when a token did.
    pub fn describe_request(&mut self, source: &str, request: &StartRequest, verified: Option<&Verified>) {
        self.role_arn = Some(request.role.as_str().to_owned());
        self.permission_set = Some(request.permission_set.as_str().to_owned());
        self.requested_duration_secs = Some(request.duration.as_secs());
        self.describe_job(source, &request.job, &request.context);
        self.describe_verified(verified);
    }

    /// The issuer, the signed claims used and which job fields they cover, when a token verified.
    pub fn describe_verified(&mut self, verified: Option<&Verified>) {
        let Some(v) = verified else { return };
        self.issuer = Some(v.token.issuer.as_str().to_owned());
        self.verified_claims = audited_claims(&v.token);
        self.verified_fields = v.job.verified_fields.iter().map(|f| (*f).to_owned()).collect();
    }

    /// The event's trusted envelope.
    fn describe_envelope(&mut self, envelope: &Envelope) {
        self.source = Some(envelope.source.clone());
        self.account = Some(envelope.account.as_str().to_owned());
        self.region = Some(envelope.region.clone());
        self.event_id = Some(envelope.id.clone());
        (self.requested_at, self.requested_at_epoch) = stamp(envelope.time);
    }
}

/// The id of a grant's activation audit: one per grant, whichever event activated it.
pub fn activation_id(grant: &GrantId) -> String {
    digest(&[grant.as_str(), "activated"])
}

/// An extension's audit id: over the grant and the token that asked (its issuer's URL and
/// `jti`), so a client can predict it from its own token.
pub fn extension_id(grant: &GrantId, issuer_url: &str, jti: &str) -> String {
    digest(&[grant.as_str(), "extended", issuer_url, jti])
}

/// The id of a grant's Revoked audit: the same on every path.
pub fn revocation_id(grant: &GrantId) -> String {
    digest(&[grant.as_str(), "revoked"])
}

/// The id of a grant's one Revoke Failed audit (its failure episode).
pub fn revoke_failure_id(grant: &GrantId) -> String {
    digest(&[grant.as_str(), "revoke-failed"])
}

/// The id of the denial of an event (by its envelope's source, account and id): one per
/// event, however often it is delivered, and known to the client that published it.
pub fn denial_id(source: &str, account: &AccountId, event_id: &str) -> String {
    digest(&[source, account.as_str(), event_id, "denied"])
}

/// One per publisher and minute: every refusal of that minute shares it.
pub fn rate_limited_id(publisher: &str, minute: DateTime<Utc>) -> String {
    digest(&[publisher, &minute.timestamp().to_string(), "rate-limited"])
}

/// One per grant: IAM refuses a document once, for good.
pub fn iam_refusal_id(grant: &GrantId) -> String {
    digest(&[grant.as_str(), "iam-rejected"])
}

/// One per drifted policy and the moment it was first seen without a live grant.
pub fn drift_repair_id(role: &RoleArn, policy_name: &str, since: DateTime<Utc>) -> String {
    digest(&[role.as_str(), policy_name, &since.timestamp().to_string(), "drift"])
}

/// The activation of a grant whose document carries `actions`.
pub fn activation(grant: &Grant, actions: &[String], recorded_at: DateTime<Utc>) -> AuditRecord {
    let mut audit = AuditRecord::new(activation_id(&grant.id), Decision::Activated, "allowed", recorded_at);
    audit.describe_grant(grant);
    audit.actions = actions.to_vec();
    audit
}

/// One extension of `grant` (as extended) by `by`; `audit_id` is [`extension_id`].
pub fn extension(grant: &Grant, by: GrantDuration, audit_id: &str, recorded_at: DateTime<Utc>) -> AuditRecord {
    let mut audit = AuditRecord::new(audit_id.to_owned(), Decision::Extended, "allowed", recorded_at);
    audit.describe_grant(grant);
    audit.detail = Some(format!("extended by {by} to {}", iam_time(grant.expires_at)));
    audit
}

/// The denial of the event under `envelope`, for `reason_code` (a deny reason's code), with
/// what was wrong in words.
pub fn denial(
    envelope: &Envelope,
    reason_code: &str,
    detail: Option<String>,
    recorded_at: DateTime<Utc>,
) -> AuditRecord {
    let mut audit = AuditRecord::new(
        denial_id(&envelope.source, &envelope.account, &envelope.id),
        Decision::Denied,
        reason_code,
        recorded_at,
    );
    audit.detail = detail;
    audit.describe_envelope(envelope);
    audit
}

/// The denial of an event whose envelope lacks a trusted field: only what it said of itself.
pub fn untrusted_envelope(
    source: &str,
    event_id: &str,
    reason_code: &str,
    problem: &str,
    recorded_at: DateTime<Utc>,
) -> AuditRecord {
    let mut audit = AuditRecord::new(
        digest(&[source, event_id, "untrusted-envelope"]),
        Decision::Denied,
        reason_code,
        recorded_at,
    );
    audit.source = Some(source.to_owned());
    audit.event_id = Some(event_id.to_owned());
    audit.detail = Some(problem.to_owned());
    audit
}

/// The one denial a publisher over its `limit` for the `minute` gets, describing the first
/// refused request (the envelope's).
pub fn rate_limited(
    envelope: &Envelope,
    reason_code: &str,
    publisher: &str,
    minute: DateTime<Utc>,
    limit: u32,
    recorded_at: DateTime<Utc>,
) -> AuditRecord {
    let mut audit = AuditRecord::new(
        rate_limited_id(publisher, minute),
        Decision::Denied,
        reason_code,
        recorded_at,
    );
    audit.describe_envelope(envelope);
    audit.detail = Some(format!(
        "publisher {publisher} had its {limit} new grants of the minute from {}; its further requests this minute \
         are refused under this one audit",
        iam_time(minute)
    ));
    audit
}

/// IAM refusing a grant's document for good (a denial, `reason_code` IAM's).
pub fn iam_refusal(grant: &Grant, reason_code: &str, error: &str, recorded_at: DateTime<Utc>) -> AuditRecord {
    let mut audit = AuditRecord::new(iam_refusal_id(&grant.id), Decision::Denied, reason_code, recorded_at);
    audit.describe_grant(grant);
    audit.detail = Some(error.to_owned());
    audit
}

/// The one Revoked audit a grant can ever have, whichever path (`reason_code`) revoked it.
pub fn revocation(grant: &Grant, reason_code: &str, revoked_at: DateTime<Utc>) -> AuditRecord {
    let mut audit = AuditRecord::new(revocation_id(&grant.id), Decision::Revoked, reason_code, revoked_at);
    audit.describe_grant(grant);
    (audit.revoked_at, audit.revoked_at_epoch) = stamp(revoked_at);
    audit
}

/// A revocation of `grant` on the `reason_code` path that IAM refused with `error`.
pub fn revoke_failure(grant: &Grant, reason_code: &str, error: &str, recorded_at: DateTime<Utc>) -> AuditRecord {
    let mut audit = AuditRecord::new(
        revoke_failure_id(&grant.id),
        Decision::RevokeFailed,
        reason_code,
        recorded_at,
    );
    audit.describe_grant(grant);
    audit.detail = Some(error.to_owned());
    audit
}

/// A policy of Latch's found on `role` with no live grant since `since`, deleted (its document
/// as IAM held it, when it could be read). `grant` is the id its name carries, when it does.
pub fn drift_repair(
    role: &RoleArn,
    policy_name: &str,
    grant: Option<&GrantId>,
    since: DateTime<Utc>,
    deleted_document: Option<&str>,
    recorded_at: DateTime<Utc>,
) -> AuditRecord {
    let mut audit = AuditRecord::new(
        drift_repair_id(role, policy_name, since),
        Decision::DriftRepaired,
        "no_live_grant",
        recorded_at,
    );
    audit.role_arn = Some(role.as_str().to_owned());
    audit.account = Some(role.account().as_str().to_owned());
    audit.policy_name = Some(policy_name.to_owned());
    audit.grant_id = grant.map(|g| g.as_str().to_owned());
    audit.detail = Some(format!("inline policy {policy_name} had no live grant since {since}"));
    if let Some(document) = deleted_document {
        audit.keep_deleted_document(document);
    }
    audit
}

#[cfg(test)]
#[path = "audit_record_tests.rs"]
mod record_tests;
