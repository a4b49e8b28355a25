//! The grant decision, end to end, over the ports.
//!
//! A start event becomes, in this order: checks (size, shape, policy, time, rendering) →
//! one atomic store write (grant + activation audit + role counter, refused by a tombstone or
//! the cap) → PutRolePolicy → the audit event. The store write goes first so a duplicate,
//! retried or late event is recognised before IAM is touched (I3); the policy document is
//! rendered from the *recorded* grant, so a duplicate can never extend it.
//!
//! A duplicate of an active grant converges instead of failing: the same document is put
//! again (idempotent) and the activation event is published again under the same `audit_id`
//! (EventBridge delivery is at-least-once anyway; consumers drop repeats by that id). No
//! second grant item, audit item or counter increment is ever written.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::audit::{AuditRecord, Decision, stamp};
use crate::decision::DenyReason;
use crate::event::{Envelope, EventError, FinishNotice, JobContext, JobKey, StartRequest};
use crate::model::{GrantId, GrantIdentity, digest};
use crate::native::{NativeEvent, NativePhase};
use crate::policy::{Allowed, Policy, PolicyDocument, RenderContext, RenderError};
use crate::ports::{
    Activation, AuditSink, Clock, Grant, GrantStatus, GrantStore, IamError, IamWriter, RecordState, Retryable,
    SinkError, StoreError, record_then_publish,
};
use crate::revoke::{RevokeError, RevokeOutcome, RevokeReason, Revoker, TOMBSTONE_LIFETIME};

/// An event's `time` may run ahead of ours by this much (publishers may set it) before we refuse it.
pub const MAX_CLOCK_SKEW: ChronoDuration = ChronoDuration::minutes(5);

/// What became of a start event. Denials are outcomes, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    Activated(GrantId),
    /// A duplicate of an active grant: its policy was put again, nothing new recorded.
    AlreadyActive(GrantId),
    /// A duplicate of a grant that has since been revoked: nothing done.
    AlreadyEnded(GrantId),
    Denied(DenyReason),
}

/// What became of a finish event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The job is tombstoned; its active grants were revoked now.
    Finished {
        revoked: usize,
        already_ended: usize,
        failed: usize,
    },
    Denied(DenyReason),
}

/// What became of a native CodePipeline/CodeBuild event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeOutcome {
    Start(StartOutcome),
    Finish(FinishOutcome),
    /// The end of a job no native rule names: nothing to do.
    NotManaged,
}

/// A failure a retry may cure (or that could not even be audited); Lambda should retry.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Iam(#[from] IamError),
    #[error(transparent)]
    Audit(#[from] SinkError),
}

impl From<RevokeError> for GrantError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::Iam(e) => Self::Iam(e),
            RevokeError::Store(e) => Self::Store(e),
            RevokeError::Audit(e) | RevokeError::EventNotPublished(e) => Self::Audit(e),
        }
    }
}

impl Retryable for GrantError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Iam(e) => e.is_retryable(),
            Self::Audit(e) => e.is_retryable(),
        }
    }
}

/// The decision service, generic over its ports so Lambda, `latch dev` and tests share it.
pub struct GrantService<I, S, A, C> {
    pub policy: Policy,
    pub iam: I,
    pub store: S,
    pub audit: A,
    pub clock: C,
}

/// A denial, before it is written: the reason and, in words, what was wrong.
struct Denial {
    reason: DenyReason,
    detail: Option<String>,
}

impl From<DenyReason> for Denial {
    fn from(reason: DenyReason) -> Self {
        Self { reason, detail: None }
    }
}

impl From<EventError> for Denial {
    fn from(e: EventError) -> Self {
        let reason = match e {
            EventError::TooLarge { .. } => DenyReason::EventTooLarge,
            _ => DenyReason::MalformedEvent,
        };
        Self {
            reason,
            detail: Some(e.to_string()),
        }
    }
}

impl From<RenderError> for Denial {
    fn from(e: RenderError) -> Self {
        let reason = match e {
            RenderError::UnsafePlaceholderValue { .. } => DenyReason::UnsafePlaceholderValue,
            RenderError::TooLarge { .. } => DenyReason::PolicyTooLarge,
        };
        Self {
            reason,
            detail: Some(e.to_string()),
        }
    }
}

/// The grant a request would create, with its rendered document.
struct Proposal {
    grant: Grant,
    document: PolicyDocument,
    cap: Option<u32>,
    actions: Vec<String>,
}

impl<I: IamWriter, S: GrantStore, A: AuditSink, C: Clock> GrantService<I, S, A, C> {
    /// Handles a `Pipeline Job Started` event. `detail_len` is the detail's size on the wire.
    pub async fn on_start(
        &self,
        envelope: &Envelope,
        detail: &Value,
        detail_len: usize,
    ) -> Result<StartOutcome, GrantError> {
        let now = self.clock.now();
        let request = match StartRequest::parse(detail, detail_len) {
            Ok(r) => r,
            Err(e) => {
                warn!(event_id = %envelope.id, field = e.field().unwrap_or("-"), error = %e, "malformed start event");
                return self.deny(envelope, None, e.into(), now).await;
            }
        };
        match self.policy.decide(envelope, &request) {
            Ok(allowed) => self.activate(envelope, &request, allowed, now).await,
            Err(reason) => self.deny(envelope, Some(&request), reason.into(), now).await,
        }
    }

    /// Handles a native CodePipeline action or CodeBuild build state change ([`crate::native`]):
    /// a start is decided by the policy's `native` rules; an end finishes the job like
    /// `Pipeline Job Finished`. The end of a job no native rule names is not Latch's business
    /// ([`NativeOutcome::NotManaged`]): nothing is written, so every build in the account does
    /// not cost a write.
    pub async fn on_native(
        &self,
        envelope: &Envelope,
        detail: &Value,
        detail_len: usize,
    ) -> Result<NativeOutcome, GrantError> {
        let now = self.clock.now();
        let event = match NativeEvent::parse(&envelope.detail_type, detail, detail_len) {
            Ok(e) => e,
            Err(e) => {
                warn!(event_id = %envelope.id, field = e.field().unwrap_or("-"), error = %e, "malformed native event");
                return self.deny(envelope, None, e.into(), now).await.map(NativeOutcome::Start);
            }
        };
        match event.phase {
            NativePhase::Started => match self.policy.decide_native(envelope, &event.job) {
                Ok((request, allowed)) => self
                    .activate(envelope, &request, allowed, now)
                    .await
                    .map(NativeOutcome::Start),
                Err(reason) => {
                    let job = event.job.key();
                    let denial = Denial {
                        reason,
                        detail: Some(format!(
                            "no native rule names {job} in account {}",
                            envelope.account.as_str()
                        )),
                    };
                    self.deny_with(envelope, denial, now, |audit| {
                        fill_job_fields(audit, &job, &JobContext::default())
                    })
                    .await
                    .map(NativeOutcome::Start)
                }
            },
            NativePhase::Ended { state } if self.policy.manages_native(&event.job) => self
                .finish(envelope, &event.job.key(), Some(&state), now)
                .await
                .map(NativeOutcome::Finish),
            NativePhase::Ended { state } => {
                debug!(event_id = %envelope.id, job = %event.job.key(), state, "native job no rule names: ignored");
                Ok(NativeOutcome::NotManaged)
            }
        }
    }

    /// Records an allowed request and puts its policy on the role.
    async fn activate(
        &self,
        envelope: &Envelope,
        request: &StartRequest,
        allowed: Allowed<'_>,
        now: DateTime<Utc>,
    ) -> Result<StartOutcome, GrantError> {
        let proposal = match self.propose(envelope, request, allowed, now) {
            Ok(p) => p,
            Err(denial) => return self.deny(envelope, Some(request), denial, now).await,
        };
        let grant = &proposal.grant;
        let audit = activation_audit(grant, &proposal.actions, now);
        match self.store.record_activation(grant, &audit, proposal.cap).await {
            Ok(Activation::Recorded) => {}
            Ok(Activation::AlreadyRecorded(existing)) => {
                return self
                    .converge(envelope, request, *existing, &proposal.actions, now)
                    .await;
            }
            Ok(Activation::JobFinished) => {
                return self
                    .deny(envelope, Some(request), DenyReason::JobFinished.into(), now)
                    .await;
            }
            Ok(Activation::ConcurrencyCapReached) => {
                return self
                    .deny(envelope, Some(request), DenyReason::ConcurrencyCap.into(), now)
                    .await;
            }
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                let denial = Denial {
                    reason: DenyReason::StoreRejected,
                    detail: Some(e.to_string()),
                };
                return self.deny(envelope, Some(request), denial, now).await;
            }
        }
        if !self.attach(grant, &proposal.document).await? {
            return Ok(StartOutcome::Denied(DenyReason::IamRejected));
        }
        self.audit.publish(&audit).await?;
        info!(grant_id = %grant.id, role = %grant.role, permission_set = %grant.permission_set,
              rule = %grant.rule, expires_at = %audit.expires_at.as_deref().unwrap_or("-"), "grant activated");
        Ok(StartOutcome::Activated(grant.id.clone()))
    }

    /// Handles a `Pipeline Job Finished` event: tombstones the job (so a late start is refused)
    /// and revokes its active grants now, with reason `job_finished`. Whatever the outcome of
    /// the job (success, failure, cancel), its grants end. Err when a retry may finish the job.
    pub async fn on_finish(
        &self,
        envelope: &Envelope,
        detail: &Value,
        detail_len: usize,
    ) -> Result<FinishOutcome, GrantError> {
        let now = self.clock.now();
        let notice = match FinishNotice::parse(detail, detail_len) {
            Ok(n) => n,
            Err(e) => {
                warn!(event_id = %envelope.id, field = e.field().unwrap_or("-"), error = %e, "malformed finish event");
                let reason = match self.deny(envelope, None, e.into(), now).await? {
                    StartOutcome::Denied(reason) => reason,
                    _ => DenyReason::MalformedEvent,
                };
                return Ok(FinishOutcome::Denied(reason));
            }
        };
        self.finish(envelope, &notice.job, notice.outcome.as_deref(), now).await
    }

    /// Tombstones the job and revokes its active grants now.
    async fn finish(
        &self,
        envelope: &Envelope,
        job: &JobKey,
        outcome: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<FinishOutcome, GrantError> {
        let grants = self
            .store
            .finish_job(&envelope.account, &envelope.source, job, now, now + TOMBSTONE_LIFETIME)
            .await?;
        let revoker = self.revoker();
        let (mut revoked, mut already_ended, mut failed) = (0, 0, 0);
        let mut retry = None;
        for grant in &grants {
            match revoker
                .revoke(grant, RevokeReason::JobFinished, RecordState::Present)
                .await
            {
                Ok(RevokeOutcome::Revoked) => revoked += 1,
                Ok(RevokeOutcome::AlreadyRevoked) => already_ended += 1,
                Ok(RevokeOutcome::Failed(_)) => failed += 1,
                // Keep going so one role's trouble does not hold the others' grants open.
                Err(e) => retry = Some(e),
            }
        }
        if let Some(e) = retry {
            return Err(e.into());
        }
        info!(pipeline = %job.pipeline, run_id = %job.run_id, job = %job.job,
              outcome = outcome.unwrap_or("-"), revoked, already_ended, failed, "job finished");
        Ok(FinishOutcome::Finished {
            revoked,
            already_ended,
            failed,
        })
    }

    pub fn revoker(&self) -> Revoker<'_, I, S, A, C> {
        Revoker {
            iam: &self.iam,
            store: &self.store,
            audit: &self.audit,
            clock: &self.clock,
        }
    }

    fn propose(
        &self,
        envelope: &Envelope,
        request: &StartRequest,
        allowed: Allowed<'_>,
        now: DateTime<Utc>,
    ) -> Result<Proposal, Denial> {
        if envelope.time > now + MAX_CLOCK_SKEW {
            return Err(Denial {
                reason: DenyReason::EventTimeInFuture,
                detail: Some(format!("event time {} is ahead of now {now}", envelope.time)),
            });
        }
        let duration = ChronoDuration::seconds(request.duration.as_secs() as i64);
        let expires_at = envelope.time + duration;
        if expires_at <= now {
            return Err(Denial {
                reason: DenyReason::RequestStale,
                detail: Some(format!("the request would have expired at {expires_at}")),
            });
        }
        let id = GrantId::derive(GrantIdentity {
            account: &envelope.account,
            source: &envelope.source,
            job: &request.job,
            permission_set: &request.permission_set,
            role: &request.role,
        });
        let grant = Grant {
            id,
            status: GrantStatus::Active,
            source: envelope.source.clone(),
            account: envelope.account.clone(),
            region: envelope.region.clone(),
            event_id: envelope.id.clone(),
            job: request.job.clone(),
            context: request.context.clone(),
            role: request.role.clone(),
            permission_set: request.permission_set.clone(),
            rule: allowed.rule.clone(),
            requested_duration_secs: request.duration.as_secs(),
            requested_at: envelope.time,
            granted_at: now,
            expires_at,
            policy_sha256: String::new(),
        };
        let document = self.render(&grant)?;
        let grant = Grant {
            policy_sha256: document.sha256().to_owned(),
            ..grant
        };
        Ok(Proposal {
            grant,
            document,
            cap: allowed.max_active_grants_per_role,
            actions: allowed.permission_set.actions(),
        })
    }

    fn render(&self, grant: &Grant) -> Result<PolicyDocument, Denial> {
        let set = self
            .policy
            .permission_sets
            .get(&grant.permission_set)
            .ok_or(DenyReason::PermissionSetUnknown)?;
        let ctx = RenderContext {
            pipeline: &grant.job.pipeline,
            job: &grant.job.job,
            account: grant.account.as_str(),
            region: &grant.region,
        };
        Ok(set.render(&ctx, grant.expires_at)?)
    }

    /// Puts the grant's policy on its role: `true` once it is there. IAM refusing it for good
    /// (`false`) is audited as a denial: retrying cannot help.
    async fn attach(&self, grant: &Grant, document: &PolicyDocument) -> Result<bool, GrantError> {
        match self
            .iam
            .put_role_policy(&grant.role, &grant.id.policy_name(), document)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_retryable() => Err(e.into()),
            Err(e) => {
                // The record says active but IAM holds nothing: access was never given. The
                // denial audit says why; the sweep retires the record at expiry (I2).
                warn!(grant_id = %grant.id, error = %e, "IAM refused the grant's policy");
                let mut audit = AuditRecord::new(
                    digest(&[grant.id.as_str(), "iam-rejected"]),
                    Decision::Denied,
                    DenyReason::IamRejected.code(),
                    self.clock.now(),
                );
                fill_grant_fields(&mut audit, grant);
                audit.detail = Some(e.to_string());
                record_then_publish::<_, _, GrantError>(&self.store, &self.audit, audit).await?;
                Ok(false)
            }
        }
    }

    /// A start whose grant is recorded: re-put the recorded grant's own document if it is still
    /// active. If it has ended, the event that created it delivered again is the same decision
    /// (nothing to do); any other event asking for it is a new request, denied as `grant_ended`.
    async fn converge(
        &self,
        envelope: &Envelope,
        request: &StartRequest,
        existing: Grant,
        actions: &[String],
        now: DateTime<Utc>,
    ) -> Result<StartOutcome, GrantError> {
        if existing.status != GrantStatus::Active || existing.expires_at <= now {
            if existing.event_id == envelope.id {
                info!(grant_id = %existing.id, "duplicate start for an ended grant: nothing to do");
                return Ok(StartOutcome::AlreadyEnded(existing.id));
            }
            let denial = Denial {
                reason: DenyReason::GrantEnded,
                detail: Some(format!(
                    "grant {} of this job ended (expiry {}); a new attempt of the job gets a new grant",
                    existing.id,
                    crate::iam_time(existing.expires_at)
                )),
            };
            return self.deny(envelope, Some(request), denial, now).await;
        }
        let document = match self.render(&existing) {
            Ok(d) => d,
            Err(denial) => {
                warn!(grant_id = %existing.id, reason = %denial.reason, "cannot re-render a recorded grant; leaving it");
                return Ok(StartOutcome::AlreadyActive(existing.id));
            }
        };
        if !self.attach(&existing, &document).await? {
            return Ok(StartOutcome::Denied(DenyReason::IamRejected));
        }
        let audit = activation_audit(&existing, actions, existing.granted_at);
        self.audit.publish(&audit).await?;
        info!(grant_id = %existing.id, "duplicate start: grant already active, converged");
        Ok(StartOutcome::AlreadyActive(existing.id))
    }

    /// An event whose envelope lacks a trusted field (never from EventBridge itself; from a
    /// misconfigured runner or a hand-made invoke): audited as malformed, nothing granted.
    pub async fn on_untrusted_envelope(
        &self,
        event_id: &str,
        source: &str,
        problem: &str,
    ) -> Result<StartOutcome, GrantError> {
        let now = self.clock.now();
        let mut audit = AuditRecord::new(
            digest(&[source, event_id, "untrusted-envelope"]),
            Decision::Denied,
            DenyReason::MalformedEvent.code(),
            now,
        );
        audit.source = Some(source.to_owned());
        audit.event_id = Some(event_id.to_owned());
        audit.detail = Some(problem.to_owned());
        warn!(event_id, source, problem, "event envelope cannot be trusted");
        record_then_publish::<_, _, GrantError>(&self.store, &self.audit, audit).await?;
        Ok(StartOutcome::Denied(DenyReason::MalformedEvent))
    }

    /// Any detail-type Latch does not handle, on the bus by a too-wide rule or a hand-made invoke.
    pub async fn on_unsupported(&self, envelope: &Envelope) -> Result<StartOutcome, GrantError> {
        let denial = Denial {
            reason: DenyReason::UnsupportedEvent,
            detail: Some(format!(
                "detail-type {:?} is not handled by Latch",
                envelope.detail_type
            )),
        };
        self.deny(envelope, None, denial, self.clock.now()).await
    }

    async fn deny(
        &self,
        envelope: &Envelope,
        request: Option<&StartRequest>,
        denial: Denial,
        now: DateTime<Utc>,
    ) -> Result<StartOutcome, GrantError> {
        self.deny_with(envelope, denial, now, |audit| {
            if let Some(r) = request {
                audit.role_arn = Some(r.role.as_str().to_owned());
                audit.permission_set = Some(r.permission_set.as_str().to_owned());
                audit.requested_duration_secs = Some(r.duration.as_secs());
                fill_job_fields(audit, &r.job, &r.context);
            }
        })
        .await
    }

    /// Writes and publishes the Denied audit of an event; `describe` adds what is known of the request.
    async fn deny_with(
        &self,
        envelope: &Envelope,
        denial: Denial,
        now: DateTime<Utc>,
        describe: impl FnOnce(&mut AuditRecord),
    ) -> Result<StartOutcome, GrantError> {
        let mut audit = AuditRecord::new(
            digest(&[&envelope.source, envelope.account.as_str(), &envelope.id, "denied"]),
            Decision::Denied,
            denial.reason.code(),
            now,
        );
        audit.detail = denial.detail;
        audit.source = Some(envelope.source.clone());
        audit.account = Some(envelope.account.as_str().to_owned());
        audit.region = Some(envelope.region.clone());
        audit.event_id = Some(envelope.id.clone());
        (audit.requested_at, audit.requested_at_epoch) = stamp(envelope.time);
        describe(&mut audit);
        info!(event_id = %envelope.id, reason = %denial.reason, detail = audit.detail.as_deref().unwrap_or("-"), "request denied");
        record_then_publish::<_, _, GrantError>(&self.store, &self.audit, audit).await?;
        Ok(StartOutcome::Denied(denial.reason))
    }
}

fn fill_job_fields(audit: &mut AuditRecord, job: &JobKey, ctx: &JobContext) {
    audit.pipeline = Some(job.pipeline.clone());
    audit.run_id = Some(job.run_id.clone());
    audit.job = Some(job.job.clone());
    audit.attempt = Some(job.attempt);
    audit.actor = ctx.actor.clone();
    audit.commit = ctx.commit.clone();
    audit.git_ref = ctx.git_ref.clone();
    audit.ticket = ctx.ticket.clone();
    audit.environment = ctx.environment.clone();
    audit.justification = ctx.reason.clone();
}

/// Copies a grant's facts into an audit record (any decision about that grant).
pub fn fill_grant_fields(audit: &mut AuditRecord, grant: &Grant) {
    audit.grant_id = Some(grant.id.as_str().to_owned());
    audit.policy_name = Some(grant.id.policy_name());
    audit.rule = Some(grant.rule.as_str().to_owned());
    audit.role_arn = Some(grant.role.as_str().to_owned());
    audit.permission_set = Some(grant.permission_set.as_str().to_owned());
    audit.source = Some(grant.source.clone());
    audit.account = Some(grant.account.as_str().to_owned());
    audit.region = Some(grant.region.clone());
    audit.event_id = Some(grant.event_id.clone());
    audit.requested_duration_secs = Some(grant.requested_duration_secs);
    (audit.requested_at, audit.requested_at_epoch) = stamp(grant.requested_at);
    (audit.granted_at, audit.granted_at_epoch) = stamp(grant.granted_at);
    (audit.expires_at, audit.expires_at_epoch) = stamp(grant.expires_at);
    audit.policy_sha256 = Some(grant.policy_sha256.clone());
    fill_job_fields(audit, &grant.job, &grant.context);
}

/// The activation audit of a grant; its id is stable, so retries and duplicates share it.
pub fn activation_audit(grant: &Grant, actions: &[String], recorded_at: DateTime<Utc>) -> AuditRecord {
    let mut audit = AuditRecord::new(
        digest(&[grant.id.as_str(), "activated"]),
        Decision::Activated,
        "allowed",
        recorded_at,
    );
    fill_grant_fields(&mut audit, grant);
    audit.actions = actions.to_vec();
    audit
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "service_native_tests.rs"]
mod native_tests;
