//! Ports: what the domain needs from the outside world, as traits over domain types.
//! Adapters (latch-aws) implement them on AWS; [`crate::memory`] implements them in memory.
//!
//! Every error says whether a retry can help: retryable errors are returned to Lambda so it
//! retries the event; permanent ones are audited as denials and the event is done.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::audit::AuditRecord;
use crate::event::{JobContext, JobKey};
use crate::model::{AccountId, GrantId, Name, RoleArn};
use crate::policy::PolicyDocument;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    Active,
    Revoked,
}

/// A grant as recorded: everything needed to re-render its policy, revoke it and audit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub status: GrantStatus,
    pub source: String,
    pub account: AccountId,
    pub region: String,
    pub event_id: String,
    pub job: JobKey,
    pub context: JobContext,
    pub role: RoleArn,
    pub permission_set: Name,
    pub rule: Name,
    pub requested_duration_secs: u64,
    pub requested_at: DateTime<Utc>,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub policy_sha256: String,
}

/// Whether a retry of the same call can succeed.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    /// Throttling, 5xx, timeouts, dropped connections: try again.
    #[error("IAM is unavailable or throttling: {0}")]
    Transient(String),
    /// The role does not exist.
    #[error("the role does not exist: {0}")]
    NoSuchRole(String),
    /// IAM refused the document or a quota (MalformedPolicyDocument, LimitExceeded, AccessDenied).
    #[error("IAM refused the request: {0}")]
    Rejected(String),
}

impl Retryable for IamError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the grant store is unavailable or throttling: {0}")]
    Transient(String),
    #[error("the grant store refused the request: {0}")]
    Rejected(String),
}

impl Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Includes PutEvents answering with failed entries: the event did not go out.
    #[error("the audit event was not delivered: {0}")]
    Transient(String),
    #[error("the event bus refused the audit event: {0}")]
    Rejected(String),
}

impl Retryable for SinkError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Removing a policy that is already gone is success (NoSuchEntity), reported as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    AlreadyGone,
}

/// Writes and removes Latch's inline policies on roles. No reads: the hot path never asks IAM.
pub trait IamWriter: Send + Sync {
    fn put_role_policy(
        &self,
        role: &RoleArn,
        policy_name: &str,
        document: &PolicyDocument,
    ) -> impl Future<Output = Result<(), IamError>> + Send;

    fn delete_role_policy(
        &self,
        role: &RoleArn,
        policy_name: &str,
    ) -> impl Future<Output = Result<Deletion, IamError>> + Send;
}

/// What recording an activation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Grant and audit were written together.
    Recorded,
    /// A grant with this id exists already (a duplicate or retried event); here it is.
    AlreadyRecorded(Box<Grant>),
    /// The job finished before this start arrived: its tombstone refuses the grant (I3).
    JobFinished,
    /// The role already holds the rule's maximum of active grants.
    ConcurrencyCapReached,
}

/// Grant records and durable audit items.
pub trait GrantStore: Send + Sync {
    /// Atomically: the grant (unless it exists), its activation audit, and one more active
    /// grant on the role (refused at `cap`), unless the job has a tombstone.
    fn record_activation(
        &self,
        grant: &Grant,
        audit: &AuditRecord,
        cap: Option<u32>,
    ) -> impl Future<Output = Result<Activation, StoreError>> + Send;

    /// A durable audit item on its own (denials). `false` when it was recorded before.
    fn record_audit(
        &self,
        audit: &AuditRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Publishes audit events (source `latch`) on the bus.
pub trait AuditSink: Send + Sync {
    fn publish(&self, audit: &AuditRecord) -> impl Future<Output = Result<(), SinkError>> + Send;
}
