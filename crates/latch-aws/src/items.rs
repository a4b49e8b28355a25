//! The table's item shapes, one place for every attribute name (the template and the parity
//! test read the same names).
//!
//! | item (`record_type`) | pk | sk | notes |
//! |---|---|---|---|
//! | `grant` | `GRANT#<grant id>` | `GRANT` | `ttl` = expiry; `expiry_bucket` only while active (sparse GSI) |
//! | `job` | `JOB#<job scope>` | `JOB` | `grant_ids` of the job; `finished_at` once finished: the tombstone |
//! | `role_counter` | `ROLE#<role arn>` | `COUNTER` | `active_grants` and `policy_chars` of the live grants, for the cap and IAM's quota |
//! | `audit` | `AUDIT#<audit id>` | `AUDIT` | no `ttl`: kept for exports |
//! | `drift_suspect` | `DRIFT#<role arn>#<policy name>` | `SUSPECT` | `first_seen_epoch`; `ttl` |
//! | `token_use` | `TOKEN#<digest of issuer and jti>` | `TOKEN` | `job_scope` it was used for; `ttl` = the token's expiry |
//! | `rate_window` | `RATE#<digest of publisher>#<minute epoch>` | `WINDOW` | `grants` recorded in the minute; `publisher`; `ttl` = minute + 2 min |
//!
//! A grant is found by its id alone (drift repair reads it from the policy name); a job's
//! grants are listed on its job item, which the finish event updates and reads in one call.

use chrono::{DateTime, Utc};
use latch_core::audit::AuditRecord;
use latch_core::iam_time;
use latch_core::model::{AccountId, Grant, GrantId, GrantStatus, JobContext, JobKey, Name, RoleArn};
use serde::{Deserialize, Serialize};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL: &str = "ttl";
pub const EXPIRY_INDEX: &str = "by-expiry";
pub const EXPIRY_BUCKET: &str = "expiry_bucket";
pub const EXPIRES_AT_EPOCH: &str = "expires_at_epoch";
pub const ACTIVE_BUCKET: &str = "active";
/// `record_type` of grant items, and their `status` values (the stream filter matches these).
pub const RECORD_GRANT: &str = "grant";
pub const STATUS_PENDING: &str = "pending";
pub const STATUS_ACTIVE: &str = "active";
pub const STATUS_REVOKED: &str = "revoked";
pub const STATUS_FAILED: &str = "failed";
pub const ACTIVE_GRANTS: &str = "active_grants";
/// On the role counter: characters of the live grants' documents (I9).
pub const POLICY_CHARS: &str = "policy_chars";
pub const RECORD_TYPE: &str = "record_type";
/// `record_type` of the other items (see the table above).
pub const RECORD_AUDIT: &str = "audit";
pub const RECORD_JOB: &str = "job";
pub const RECORD_ROLE_COUNTER: &str = "role_counter";
pub const RECORD_DRIFT_SUSPECT: &str = "drift_suspect";
pub const STATUS: &str = "status";
pub const GRANT_IDS: &str = "grant_ids";
pub const FINISHED_AT: &str = "finished_at";
pub const FIRST_SEEN_EPOCH: &str = "first_seen_epoch";
pub const SK_GRANT: &str = "GRANT";
pub const SK_JOB: &str = "JOB";
pub const SK_COUNTER: &str = "COUNTER";
pub const SK_AUDIT: &str = "AUDIT";
pub const SK_DRIFT: &str = "SUSPECT";
pub const SK_TOKEN: &str = "TOKEN";
pub const JOB_SCOPE: &str = "job_scope";
pub const SK_RATE_WINDOW: &str = "WINDOW";
/// On a rate window: new grants recorded in its minute.
pub const WINDOW_GRANTS: &str = "grants";
pub const PUBLISHER: &str = "publisher";

/// A publisher's minute of new grants (fair share). The publisher is digested: it holds a
/// verified principal or a pipeline name, never a key of ours as written.
pub fn rate_window_pk(publisher: &str, minute: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "RATE#{}#{}",
        latch_core::model::digest(&[publisher]),
        minute.timestamp()
    )
}

/// A token's use: the issuer's name and the token's `jti`, digested (a `jti` is the issuer's
/// free text, and never a key of ours as written).
pub fn token_pk(issuer: &str, jti: &str) -> String {
    format!("TOKEN#{}", latch_core::model::digest(&[issuer, jti]))
}

/// The job item: the job's grant ids and, once finished, its tombstone.
pub fn job_pk(account: &AccountId, source: &str, job: &JobKey) -> String {
    format!("JOB#{}", job.scope(account, source))
}

pub fn grant_pk(id: &GrantId) -> String {
    format!("GRANT#{id}")
}

pub fn drift_pk(role: &RoleArn, policy_name: &str) -> String {
    format!("DRIFT#{role}#{policy_name}")
}

pub fn role_pk(role: &RoleArn) -> String {
    format!("ROLE#{role}")
}

pub fn audit_pk(audit_id: &str) -> String {
    format!("AUDIT#{audit_id}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantItem {
    pub pk: String,
    pub sk: String,
    pub record_type: String,
    pub grant_id: String,
    pub status: String,
    pub source: String,
    pub account: String,
    pub region: String,
    pub event_id: String,
    /// The verified principal (`<issuer>:<id>`), absent for claimed identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The IAM role session the grant is bound to (`bind_session`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub pipeline: String,
    pub run_id: String,
    pub job: String,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    pub role_arn: String,
    pub policy_name: String,
    pub permission_set: String,
    pub rule: String,
    pub requested_duration_secs: u64,
    pub requested_at: DateTime<Utc>,
    pub granted_at: DateTime<Utc>,
    pub expires_at: String,
    pub expires_at_epoch: i64,
    pub ttl: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Present only while the grant is live (pending or active): the sparse expiry index holds live grants only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_bucket: Option<String>,
    pub policy_sha256: String,
    /// The document's size as IAM counts it (absent on grants written before it was kept).
    #[serde(default)]
    pub policy_chars: usize,
}

/// Why an item could not be read back as a grant.
#[derive(Debug, thiserror::Error)]
#[error("grant item {field}: {why}")]
pub struct ItemError {
    pub field: &'static str,
    pub why: String,
}

fn item_err(field: &'static str) -> impl Fn(latch_core::model::InvalidValue) -> ItemError {
    move |e| ItemError { field, why: e.0 }
}

impl GrantItem {
    pub fn from_grant(g: &Grant) -> Self {
        let live = g.status.is_live();
        Self {
            pk: grant_pk(&g.id),
            sk: SK_GRANT.into(),
            record_type: RECORD_GRANT.into(),
            grant_id: g.id.as_str().to_owned(),
            status: match g.status {
                GrantStatus::Pending => STATUS_PENDING,
                GrantStatus::Active => STATUS_ACTIVE,
                GrantStatus::Revoked => STATUS_REVOKED,
                GrantStatus::Failed => STATUS_FAILED,
            }
            .into(),
            source: g.source.clone(),
            account: g.account.as_str().to_owned(),
            region: g.region.clone(),
            event_id: g.event_id.clone(),
            principal: g.job.principal.clone(),
            session: g.session.clone(),
            pipeline: g.job.pipeline.clone(),
            run_id: g.job.run_id.clone(),
            job: g.job.job.clone(),
            attempt: g.job.attempt,
            actor: g.context.actor.clone(),
            commit: g.context.commit.clone(),
            git_ref: g.context.git_ref.clone(),
            ticket: g.context.ticket.clone(),
            environment: g.context.environment.clone(),
            justification: g.context.reason.clone(),
            role_arn: g.role.as_str().to_owned(),
            policy_name: g.policy_name.clone(),
            permission_set: g.permission_set.as_str().to_owned(),
            rule: g.rule.as_str().to_owned(),
            requested_duration_secs: g.requested_duration_secs,
            requested_at: g.requested_at,
            granted_at: g.granted_at,
            expires_at: iam_time(g.expires_at),
            expires_at_epoch: g.expires_at.timestamp(),
            ttl: g.expires_at.timestamp(),
            revoked_at: None,
            expiry_bucket: live.then(|| ACTIVE_BUCKET.to_owned()),
            policy_sha256: g.policy_sha256.clone(),
            policy_chars: g.policy_chars,
        }
    }

    /// Reads an item back into a grant, validating every domain value again.
    pub fn into_grant(self) -> Result<Grant, ItemError> {
        let expires_at = DateTime::from_timestamp(self.expires_at_epoch, 0).ok_or(ItemError {
            field: EXPIRES_AT_EPOCH,
            why: "out of range".into(),
        })?;
        Ok(Grant {
            id: GrantId::parse(&self.grant_id).map_err(item_err("grant_id"))?,
            status: match self.status.as_str() {
                STATUS_PENDING => GrantStatus::Pending,
                STATUS_ACTIVE => GrantStatus::Active,
                STATUS_FAILED => GrantStatus::Failed,
                _ => GrantStatus::Revoked,
            },
            account: AccountId::parse(&self.account).map_err(item_err("account"))?,
            role: RoleArn::parse(&self.role_arn).map_err(item_err("role_arn"))?,
            policy_name: self.policy_name,
            permission_set: Name::parse(&self.permission_set).map_err(item_err("permission_set"))?,
            rule: Name::parse(&self.rule).map_err(item_err("rule"))?,
            source: self.source,
            region: self.region,
            event_id: self.event_id,
            session: self.session,
            job: JobKey {
                principal: self.principal,
                pipeline: self.pipeline,
                run_id: self.run_id,
                job: self.job,
                attempt: self.attempt,
            },
            context: JobContext {
                reason: self.justification,
                git_ref: self.git_ref,
                commit: self.commit,
                actor: self.actor,
                ticket: self.ticket,
                environment: self.environment,
            },
            requested_duration_secs: self.requested_duration_secs,
            requested_at: self.requested_at,
            granted_at: self.granted_at,
            expires_at,
            policy_sha256: self.policy_sha256,
            policy_chars: self.policy_chars,
        })
    }
}

/// A durable audit item: the record plus its key. No `ttl`: audits are kept for exports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditItem {
    pub pk: String,
    pub sk: String,
    pub record_type: String,
    #[serde(flatten)]
    pub record: AuditRecord,
}

impl AuditItem {
    pub fn from_record(record: &AuditRecord) -> Self {
        Self {
            pk: audit_pk(&record.audit_id),
            sk: SK_AUDIT.into(),
            record_type: RECORD_AUDIT.into(),
            record: record.clone(),
        }
    }
}
