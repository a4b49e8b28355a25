//! Ports: what the domain needs from the outside world, as traits over domain types.
//! Adapters (latch-aws) implement them on AWS; [`crate::memory`] implements them in memory.
//!
//! Every error says whether a retry can help: retryable errors are returned to Lambda so it
//! retries the event; permanent ones are audited as denials and the event is done.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::audit::AuditRecord;
use crate::model::{AccountId, Grant, GrantId, JobKey, RoleArn};
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

/// The four ports every decision writes through: IAM, the grant store, the audit sink and the
/// clock. The grant service owns one; revocations and sweeps borrow it
/// ([`Ports::revoker`], [`Ports::sweeper`]), so every path acts on the same four.
#[derive(Debug, Clone, Default)]
pub struct Ports<I, S, A, C> {
    pub iam: I,
    pub store: S,
    pub audit: A,
    pub clock: C,
}

impl<I, S, A, C> Ports<I, S, A, C> {
    pub fn new(iam: I, store: S, audit: A, clock: C) -> Self {
        Self {
            iam,
            store,
            audit,
            clock,
        }
    }
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

/// IAM's aggregate limit on a role's inline policies: characters, whitespace not counted.
pub const ROLE_INLINE_POLICY_QUOTA: usize = 10_240;

/// A role as IAM knows it: a grant acts on this, never on a name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRole {
    /// IAM's own ARN for the role (its real path, its name as IAM spells it).
    pub arn: RoleArn,
    pub role_id: String,
    /// Whether it carries the deployment's permissions boundary (true when none is required).
    pub has_required_boundary: bool,
    /// Characters (as IAM counts them) of the role's inline policies that are not Latch's: the
    /// part of [`ROLE_INLINE_POLICY_QUOTA`] Latch's grants cannot use.
    pub own_inline_chars: usize,
}

/// Writes and removes Latch's inline policies on roles; resolves roles (a cached read, counted
/// apart from the per-grant budget). The hot path makes no other IAM call.
pub trait IamWriter: Send + Sync {
    /// The role IAM has under this ARN's name in this account. [`IamError::NoSuchRole`] when none.
    fn resolve_role(&self, role: &RoleArn) -> impl Future<Output = Result<ResolvedRole, IamError>> + Send;

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
    /// The grant was written, pending its document.
    Recorded,
    /// A grant with this id exists already (a duplicate or retried event); here it is.
    AlreadyRecorded(Box<Grant>),
    /// The job finished before this start arrived: its tombstone refuses the grant (I3).
    JobFinished,
    /// The role already holds the rule's maximum of active grants.
    ConcurrencyCapReached,
    /// The request's token was already used for another job (I7).
    TokenReplayed,
    /// The role's inline policies would go over IAM's aggregate quota (I9).
    QuotaExceeded,
    /// The publisher has had its limit of new grants in this minute ([`RateWindow`]).
    RateLimited,
}

/// One publisher's minute of new grants, counted in the same write as the grant: the write is
/// refused once `limit` grants were recorded in the window, at no extra call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateWindow {
    /// Who is counted (see [`crate::policy::FairShare`]).
    pub publisher: String,
    /// The start of the minute (UTC) the grant falls in.
    pub minute: DateTime<Utc>,
    pub limit: u32,
}

impl RateWindow {
    /// The window `now` falls in.
    pub fn at(publisher: String, now: DateTime<Utc>, limit: u32) -> Self {
        let start = now.timestamp() - now.timestamp().rem_euclid(60);
        Self {
            publisher,
            minute: DateTime::from_timestamp(start, 0).unwrap_or(now),
            limit,
        }
    }
}

/// The per-role limits an activation is written under, checked in its one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleLimits {
    /// The rule's cap on live grants on the role.
    pub cap: Option<u32>,
    /// How many characters of inline policy Latch may hold on the role in all (the quota less
    /// the role's own policies): this grant's document must fit beside the live ones.
    pub policy_budget: usize,
}

/// A token's one use, recorded in the same write as the grant it bought: the same token for
/// another job is refused there, at no extra call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    /// The policy file's issuer name and the token's `jti`: together, the token.
    pub issuer: String,
    pub jti: String,
    /// The job it was used for ([`JobKey::scope`]); the same job may present it again.
    pub job_scope: String,
    /// Kept until the token itself has expired (then it can be used by no one anyway).
    pub expires_at: DateTime<Utc>,
}

/// What confirming an attached document found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The grant is now active and its activation audit written, together.
    Confirmed,
    /// Confirmed before (a retry or a duplicate): the activation audit as stored.
    AlreadyConfirmed(Option<Box<AuditRecord>>),
    /// The grant ended (revoked, failed, gone) while its document was being attached: the
    /// document must come off again.
    Ended,
}

/// What recording an extension found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extension {
    Recorded,
    /// This very extension was recorded before (a retry): the grant as it stands now.
    AlreadyRecorded(Box<Grant>),
    /// The grant is no longer active with the expiry it was read with (revoked, expired, or
    /// extended by another request meanwhile): nothing was written.
    NotActive,
}

/// Where a grant's record stands when it is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// The grant item is in the table (finish, sweep): it is marked revoked, conditionally.
    Present,
    /// DynamoDB's TTL already deleted the item (stream path): only the audit and counter remain.
    DeletedByTtl,
}

/// What recording a revocation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    Recorded,
    /// Another path (finish, stream, sweep), or an earlier attempt of this one, revoked it first:
    /// nothing was written. Carries the Revoked audit as stored, when there is one, so it can be
    /// published again (an attempt may have stopped between the write and the event).
    AlreadyRevoked(Option<Box<AuditRecord>>),
}

/// What a conditional audit write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditWrite {
    Recorded,
    /// Recorded before (a retry or a redelivery): the record as stored, to publish unchanged.
    AlreadyRecorded(Box<AuditRecord>),
}

impl AuditWrite {
    /// The record to publish: the stored one when there was one, else the one just written.
    pub fn into_published(self, written: AuditRecord) -> AuditRecord {
        match self {
            Self::Recorded => written,
            Self::AlreadyRecorded(stored) => *stored,
        }
    }
}

/// Grant records and durable audit items.
pub trait GrantStore: Send + Sync {
    /// Atomically: the grant as `Pending` (unless it exists) and one more live grant on the
    /// role with its document's characters (refused at the cap, or past the budget: I9), unless
    /// the job has a tombstone; one more grant in the publisher's `rate` window (refused at its
    /// limit). With `token`, also the token's use ([`TokenUse`]), refused if it
    /// was used for another job. Revocations and failures give the characters back.
    fn record_activation(
        &self,
        grant: &Grant,
        limits: RoleLimits,
        rate: &RateWindow,
        token: Option<&TokenUse>,
    ) -> impl Future<Output = Result<Activation, StoreError>> + Send;

    /// After IAM accepted the grant's document, atomically: the grant marked `Active` (only if
    /// still live) and its activation audit (only if not yet written).
    fn confirm_activation(
        &self,
        grant: &Grant,
        audit: &AuditRecord,
    ) -> impl Future<Output = Result<Confirmation, StoreError>> + Send;

    /// After IAM refused the grant's document for good, atomically: the grant marked `Failed`
    /// (only if still pending), the refusal's audit, and one live grant less on the role.
    /// `false` when the grant was no longer pending (nothing written).
    fn record_failure(
        &self,
        grant: &Grant,
        audit: &AuditRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Atomically: `extended` replaces `current` (only if it is still active with
    /// `current.expires_at`) and the extension's audit is written (only if not yet written).
    fn record_extension(
        &self,
        current: &Grant,
        extended: &Grant,
        audit: &AuditRecord,
    ) -> impl Future<Output = Result<Extension, StoreError>> + Send;

    /// A durable audit item on its own (denials, failures, repairs), unless one with its id exists.
    fn record_audit(&self, audit: &AuditRecord) -> impl Future<Output = Result<AuditWrite, StoreError>> + Send;

    /// The audit item with this id, read consistently.
    fn recorded_audit(&self, audit_id: &str) -> impl Future<Output = Result<Option<AuditRecord>, StoreError>> + Send;

    /// Marks the job finished at `finished_at` (its tombstone, kept until `tombstone_until`) and
    /// returns the grants it holds, read consistently. Later starts of the job are refused.
    fn finish_job(
        &self,
        account: &AccountId,
        source: &str,
        job: &JobKey,
        finished_at: DateTime<Utc>,
        tombstone_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Grant>, StoreError>> + Send;

    /// Atomically: the grant marked revoked (only if still active, when present), the Revoked
    /// audit (only if not yet written) and one active grant less on the role.
    fn record_revocation(
        &self,
        grant: &Grant,
        audit: &AuditRecord,
        state: RecordState,
    ) -> impl Future<Output = Result<Revocation, StoreError>> + Send;

    /// Active grants whose expiry is at or before `now`, oldest first, `limit` at a time,
    /// continuing after `after` (the last grant of the previous page).
    fn expired_grants(
        &self,
        now: DateTime<Utc>,
        after: Option<&Grant>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Grant>, StoreError>> + Send;

    /// The grant with this id, if it is recorded (drift repair).
    fn grant(&self, id: &GrantId) -> impl Future<Output = Result<Option<Grant>, StoreError>> + Send;

    /// When drift repair first saw this policy without a live grant (recording `now` if never).
    fn drift_seen_since(
        &self,
        role: &RoleArn,
        policy_name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<DateTime<Utc>, StoreError>> + Send;

    /// Forgets a drift suspect (repaired, or its grant turned out live).
    fn clear_drift(&self, role: &RoleArn, policy_name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Publishes audit events (source `latch`) on the bus.
pub trait AuditSink: Send + Sync {
    fn publish(&self, audit: &AuditRecord) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// A decision's durable audit item (unless one with its id exists), then its event. The event
/// goes out even when the item was recorded before, as the record stored: an earlier attempt
/// may have stopped between the two.
pub async fn record_then_publish<S, A, E>(store: &S, sink: &A, audit: AuditRecord) -> Result<(), E>
where
    S: GrantStore,
    A: AuditSink,
    E: From<StoreError> + From<SinkError>,
{
    let stored = store.record_audit(&audit).await?.into_published(audit);
    sink.publish(&stored).await?;
    Ok(())
}

/// IAM reads for drift repair only (never on the grant or revoke path).
pub trait IamInventory: Send + Sync {
    /// Roles whose path starts with `path_prefix`.
    fn roles_under(&self, path_prefix: &str) -> impl Future<Output = Result<Vec<RoleArn>, IamError>> + Send;

    /// The names of the role's inline policies (all of them; the caller picks Latch's).
    fn inline_policies(&self, role: &RoleArn) -> impl Future<Output = Result<Vec<String>, IamError>> + Send;

    /// One inline policy's document as IAM holds it (decoded), `None` when it is gone: what a
    /// drift repair is about to delete, for its audit record.
    fn inline_policy_document(
        &self,
        role: &RoleArn,
        policy_name: &str,
    ) -> impl Future<Output = Result<Option<String>, IamError>> + Send;
}

/// A CodeBuild build as `BatchGetBuilds` reports it: what ran, for whom, from what, as which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRun {
    pub project: String,
    /// CodeBuild's `buildStatus` (`IN_PROGRESS`, `SUCCEEDED`, …).
    pub status: String,
    /// Who started it: `codepipeline/<pipeline>`, a webhook (`GitHub-Hookshot/…`), or the IAM
    /// user or role session that called `StartBuild`.
    pub initiator: Option<String>,
    /// The version asked for: a branch, a tag, a commit, `pr/<number>` for a pull request.
    pub source_version: Option<String>,
    /// The role the build runs as (an ARN), overrides included.
    pub service_role: Option<String>,
    /// The buildspec the build runs, overrides included: a path in the source, inline YAML, or
    /// `None`/empty for the source's `buildspec.yml`.
    pub buildspec: Option<String>,
}

/// A CodePipeline execution as `GetPipelineExecution` reports it. The API names no action and
/// no role: the action's role is in the pipeline's declaration, a second read Latch does not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRun {
    pub pipeline: String,
    /// CodePipeline's execution `status` (`InProgress`, `Succeeded`, …).
    pub status: String,
    /// What started it: `Webhook`, `WebhookV2`, `StartPipelineExecution`, `CloudWatchEvent`, …
    pub trigger_type: Option<String>,
    /// The trigger's detail: the caller's ARN, the webhook's ARN, the rule's ARN.
    pub trigger_detail: Option<String>,
}

/// A native job as the service that runs it knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeRun {
    Build(BuildRun),
    Pipeline(PipelineRun),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NativeLookupError {
    /// Throttling, 5xx, timeouts: the run may well be real, so retry.
    #[error("the pipeline service is unavailable or throttling: {0}")]
    Transient(String),
    /// The service refused the read (AccessDenied, a validation error): retrying cannot help.
    #[error("the pipeline service refused the read: {0}")]
    Rejected(String),
}

impl Retryable for NativeLookupError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Reads a native job from the service that emitted its event: one read per native start,
/// counted apart from the per-grant budget. An event proves AWS saw a state change; only the
/// service says who started the run, from what, and as which role.
pub trait NativeRuns: Send + Sync {
    /// The build or execution of `job`; `Ok(None)` when the service has no such run.
    fn look_up(
        &self,
        job: &crate::native::NativeJob,
    ) -> impl Future<Output = Result<Option<NativeRun>, NativeLookupError>> + Send;
}
