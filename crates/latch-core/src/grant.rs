//! The grant decision, end to end, over the ports.
//!
//! A start event becomes, in this order: checks (size, shape, the token and the identity it
//! proves, policy, time, rendering) →
//! one atomic store write (grant + activation audit + role counter + the publisher's minute,
//! refused by a tombstone, the cap or the publisher's fair share) → PutRolePolicy → the audit
//! event. A native start is first read back from the service that runs it
//! ([`crate::native::check_run`]). The store write goes first so a duplicate,
//! retried or late event is recognised before IAM is touched (I3); the policy document is
//! rendered from the *recorded* grant, so a duplicate can never extend it.
//!
//! A duplicate of an active grant converges instead of failing: the same document is put
//! again (idempotent) and the activation event is published again under the same `audit_id`
//! (EventBridge delivery is at-least-once anyway; consumers drop repeats by that id). No
//! second grant item, audit item or counter increment is ever written.
//!
//! Identity (I7): an event's `token` is verified against the policy file's issuers before
//! anything else is decided; the job's identity then comes from the signed claims, and a
//! detail field that contradicts them is a denial. The token's `jti` is recorded in the same
//! transaction as the grant, so one token buys grants for one job only. A finish ends only the
//! grants of the job its token proves; without a token, only jobs of `identity: claimed` rules.
//!
//! Here: starts (verification, decision, activation) and what every path shares. Beside it:
//! `native` (CodePipeline/CodeBuild events), `finish` (a job's end), `extend` (a longer grant)
//! and `deny` (the reasons a request is refused, [`DenyReason`]).

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::Value;
use tracing::{debug, info, warn};

mod deny;
mod extend;
mod finish;
mod native;

pub use deny::DenyReason;

use crate::audit::{self, AuditRecord};
use crate::event::{Envelope, EventError, ExtendRequest, FinishNotice, StartRequest};
use crate::identity::claims::{ClaimsError, reconcile, session_name};
use crate::identity::verify::verify_token;
use crate::identity::{AudienceBinding, KeySource, Presented, StaticKeys, TokenError, Verified};
use crate::memory::MemoryNativeRuns;
use crate::model::{Deployment, Grant, GrantDuration, GrantId, GrantIdentity, GrantStatus, JobContext, JobKey};
use crate::native::{NativeEvent, NativeJob, NativePhase, check_run};
use crate::policy::{Allowed, Policy, PolicyDocument, Refusal, RenderContext, RenderError};
use crate::ports::{
    Activation, AuditSink, AuditWrite, Clock, Confirmation, Extension, GrantStore, IamError, IamWriter,
    NativeLookupError, NativeRuns, Ports, ROLE_INLINE_POLICY_QUOTA, RateWindow, RecordState, ResolvedRole, Retryable,
    RoleLimits, SinkError, StoreError, TokenUse, record_then_publish,
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

/// What became of an extension request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendOutcome {
    /// The grant now ends later; its document was replaced.
    Extended(GrantId),
    /// This extension was applied before (a retry or redelivery): converged, nothing new.
    AlreadyExtended(GrantId),
    Denied(DenyReason),
}

/// What became of a native CodePipeline/CodeBuild event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeOutcome {
    Start(StartOutcome),
    Finish(FinishOutcome),
    /// The start or end of a job no native rule names: not a request, nothing written.
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
    /// The issuer's keys could not be fetched: the token may well be good, so retry.
    #[error(transparent)]
    Keys(TokenError),
    /// CodeBuild or CodePipeline could not be asked about a native start: the run may be real.
    #[error(transparent)]
    Native(NativeLookupError),
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
            Self::Keys(e) => e.is_retryable(),
            Self::Native(e) => e.is_retryable(),
        }
    }
}

/// The decision service, generic over its ports so Lambda, `latch dev` and tests share it.
/// `K` is where issuer keys come from: fetched ([`KeySource`] adapters) or pinned in the file;
/// `N` is who confirms native starts (CodeBuild and CodePipeline adapters, or in memory).
pub struct GrantService<I, S, A, C, K = StaticKeys, N = MemoryNativeRuns> {
    pub policy: Policy,
    /// Names this deployment's policies (`LATCH_DEPLOYMENT`), apart from any other's.
    pub deployment: Deployment,
    pub ports: Ports<I, S, A, C>,
    pub keys: K,
    pub native: N,
}

impl<I, S, A, C> GrantService<I, S, A, C> {
    /// Decisions under `policy` through `ports`: keys pinned in the policy file, no native runs
    /// to confirm, the default deployment. The `with_*` methods change each.
    pub fn new(policy: Policy, ports: Ports<I, S, A, C>) -> Self {
        Self {
            policy,
            deployment: Deployment::default(),
            ports,
            keys: StaticKeys,
            native: MemoryNativeRuns::default(),
        }
    }
}

impl<I, S, A, C, K, N> GrantService<I, S, A, C, K, N> {
    /// Issuer keys from `keys` instead.
    pub fn with_keys<K2>(self, keys: K2) -> GrantService<I, S, A, C, K2, N> {
        GrantService {
            policy: self.policy,
            deployment: self.deployment,
            ports: self.ports,
            keys,
            native: self.native,
        }
    }

    /// Native starts confirmed by `native` instead.
    pub fn with_native<N2>(self, native: N2) -> GrantService<I, S, A, C, K, N2> {
        GrantService {
            policy: self.policy,
            deployment: self.deployment,
            ports: self.ports,
            keys: self.keys,
            native,
        }
    }

    /// Policies named for `deployment`.
    pub fn with_deployment(self, deployment: Deployment) -> Self {
        Self { deployment, ..self }
    }
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

impl From<Refusal> for Denial {
    fn from(refusal: Refusal) -> Self {
        Self {
            reason: refusal.reason,
            detail: refusal.detail,
        }
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

impl From<&TokenError> for Denial {
    fn from(e: &TokenError) -> Self {
        Self {
            reason: e.into(),
            detail: Some(e.to_string()),
        }
    }
}

impl From<ClaimsError> for Denial {
    fn from(e: ClaimsError) -> Self {
        let reason = match e {
            ClaimsError::Mismatch { .. } => DenyReason::ClaimMismatch,
            ClaimsError::Missing(_) | ClaimsError::Unusable { .. } => DenyReason::TokenMalformed,
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

/// What putting a grant's document on its role came to.
enum Attached {
    /// IAM accepted it and the grant is now recorded active.
    Active,
    /// It was recorded active before (a duplicate or a retry).
    AlreadyActive,
    /// IAM refused it for good: the grant failed.
    Refused,
    /// The grant ended meanwhile: the document was taken off again.
    Ended,
}

/// Who is asking: a request and, when its token verified, the proof.
#[derive(Clone, Copy)]
struct Asker<'a> {
    request: &'a StartRequest,
    verified: Option<&'a Verified>,
}

impl<I: IamWriter, S: GrantStore, A: AuditSink, C: Clock, K: KeySource, N: NativeRuns> GrantService<I, S, A, C, K, N> {
    /// Handles a `Pipeline Job Started` event. `detail_len` is the detail's size on the wire.
    pub async fn on_start(
        &self,
        envelope: &Envelope,
        detail: &Value,
        detail_len: usize,
    ) -> Result<StartOutcome, GrantError> {
        let now = self.ports.clock.now();
        let mut request = match StartRequest::parse(detail, detail_len) {
            Ok(r) => r,
            Err(e) => {
                warn!(event_id = %envelope.id, field = e.field().unwrap_or("-"), error = %e, "malformed start event");
                return self.deny(envelope, None, e.into(), now).await;
            }
        };
        let presented = Presented::Start(AudienceBinding {
            account: &envelope.account,
            role: &request.role,
            permission_set: &request.permission_set,
            duration: request.duration,
        });
        let verified = match self
            .verify(request.token.as_deref(), presented, &request.job, &request.context, now)
            .await?
        {
            Ok(v) => v,
            Err(denial) => {
                let asker = Asker {
                    request: &request,
                    verified: None,
                };
                return self.deny(envelope, Some(asker), denial, now).await;
            }
        };
        if let Some(v) = &verified {
            request.job = v.job.job.clone();
            request.context = v.job.context.clone();
        }
        let asker = Asker {
            request: &request,
            verified: verified.as_ref(),
        };
        match self.policy.decide(envelope, &request, verified.as_ref()) {
            Ok(allowed) => self.activate(envelope, asker, allowed, now).await,
            Err(refusal) => self.deny(envelope, Some(asker), refusal.into(), now).await,
        }
    }

    /// Verifies the event's token, if it has one, and reconciles the job it proves with what the
    /// event claims. `Ok(Err(_))`: a denial (the token or a claim is wrong for good);
    /// `Err(_)`: the issuer's keys were unavailable, retry.
    async fn verify(
        &self,
        token: Option<&str>,
        presented: Presented<'_>,
        claimed: &JobKey,
        claimed_context: &JobContext,
        now: DateTime<Utc>,
    ) -> Result<Result<Option<Verified>, Denial>, GrantError> {
        let Some(token) = token else {
            return Ok(Ok(None));
        };
        let verified = match verify_token(&self.keys, &self.policy.issuers, token, presented, now).await {
            Ok(t) => t,
            Err(e) if e.is_retryable() => return Err(GrantError::Keys(e)),
            Err(e) => {
                warn!(error = %e, "token refused");
                return Ok(Err((&e).into()));
            }
        };
        Ok(match reconcile(&verified, claimed, claimed_context) {
            Ok(job) => Ok(Some(Verified { token: verified, job })),
            Err(e) => Err(e.into()),
        })
    }

    /// Records an allowed request and puts its policy on the role.
    async fn activate(
        &self,
        envelope: &Envelope,
        asker: Asker<'_>,
        allowed: Allowed<'_>,
        now: DateTime<Utc>,
    ) -> Result<StartOutcome, GrantError> {
        let resolved = match self.resolve(asker.request, &allowed).await? {
            Ok(r) => r,
            Err(denial) => return self.deny(envelope, Some(asker), denial, now).await,
        };
        // The grant acts on the role as IAM spells it: case variants are one role, one counter.
        let on_resolved = StartRequest {
            role: resolved.arn.clone(),
            ..asker.request.clone()
        };
        let asker = Asker {
            request: &on_resolved,
            verified: asker.verified,
        };
        let proposal = match self.propose(envelope, asker, allowed, now) {
            Ok(p) => p,
            Err(denial) => return self.deny(envelope, Some(asker), denial, now).await,
        };
        let limits = RoleLimits {
            cap: proposal.cap,
            policy_budget: ROLE_INLINE_POLICY_QUOTA.saturating_sub(resolved.own_inline_chars),
        };
        let grant = &proposal.grant;
        let token_use = asker.verified.map(|v| TokenUse {
            issuer: v.token.issuer.as_str().to_owned(),
            jti: v.token.jti.clone(),
            job_scope: grant.job.scope(&grant.account, &grant.source),
            expires_at: v.token.expires_at,
        });
        let rate = RateWindow::at(publisher(grant), now, self.policy.fair_share.limit_for(&grant.source));
        match self
            .ports
            .store
            .record_activation(grant, limits, &rate, token_use.as_ref())
            .await
        {
            Ok(Activation::Recorded) => {}
            Ok(Activation::AlreadyRecorded(existing)) => {
                return self.converge(envelope, asker, *existing, &proposal.actions, now).await;
            }
            Ok(Activation::JobFinished) => {
                return self
                    .deny(envelope, Some(asker), DenyReason::JobFinished.into(), now)
                    .await;
            }
            Ok(Activation::ConcurrencyCapReached) => {
                return self
                    .deny(envelope, Some(asker), DenyReason::ConcurrencyCap.into(), now)
                    .await;
            }
            Ok(Activation::QuotaExceeded) => {
                let denial = Denial {
                    reason: DenyReason::RolePolicyQuota,
                    detail: Some(format!(
                        "the role's inline policies would pass IAM's {ROLE_INLINE_POLICY_QUOTA} characters: \
                         Latch may use {} beside the role's own {}, and this document needs {}",
                        limits.policy_budget, resolved.own_inline_chars, grant.policy_chars
                    )),
                };
                return self.deny(envelope, Some(asker), denial, now).await;
            }
            Ok(Activation::RateLimited) => return self.deny_rate_limited(envelope, asker, &rate, now).await,
            Ok(Activation::TokenReplayed) => {
                let denial = Denial {
                    reason: DenyReason::TokenReplayed,
                    detail: Some("this token was already used by another job".into()),
                };
                return self.deny(envelope, Some(asker), denial, now).await;
            }
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                let denial = Denial {
                    reason: DenyReason::StoreRejected,
                    detail: Some(e.to_string()),
                };
                return self.deny(envelope, Some(asker), denial, now).await;
            }
        }
        let mut audit = audit::activation(grant, &proposal.actions, now);
        audit.describe_verified(asker.verified);
        audit.policy_document = Some(proposal.document.as_json().to_owned());
        self.provenance(&mut audit);
        Ok(match self.attach_and_confirm(grant, &proposal.document, audit).await? {
            Attached::Active | Attached::AlreadyActive => {
                info!(grant_id = %grant.id, role = %grant.role, permission_set = %grant.permission_set,
                      rule = %grant.rule, expires_at = %crate::iam_time(grant.expires_at), "grant activated");
                StartOutcome::Activated(grant.id.clone())
            }
            Attached::Refused => StartOutcome::Denied(DenyReason::IamRejected),
            Attached::Ended => StartOutcome::AlreadyEnded(grant.id.clone()),
        })
    }

    /// The role IAM has under the requested name, if the grant may act on it: in this account,
    /// at the path and under the name the rule allows, with the deployment's boundary.
    /// `Ok(Err(_))` is a denial; `Err(_)` a failure a retry may cure.
    async fn resolve(
        &self,
        request: &StartRequest,
        allowed: &Allowed<'_>,
    ) -> Result<Result<ResolvedRole, Denial>, GrantError> {
        let asked = &request.role;
        let resolved = match self.ports.iam.resolve_role(asked).await {
            Ok(r) => r,
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                return Ok(Err(Denial {
                    reason: DenyReason::RoleNotEligible,
                    detail: Some(e.to_string()),
                }));
            }
        };
        let iam = &resolved.arn;
        let refuse = |reason, detail: String| {
            Ok(Err(Denial {
                reason,
                detail: Some(detail),
            }))
        };
        if iam.account() != asked.account() {
            return refuse(
                DenyReason::RoleInOtherAccount,
                format!(
                    "Latch acts in account {}; {asked} is in account {} (multi-account grants are not supported)",
                    iam.account().as_str(),
                    asked.account().as_str()
                ),
            );
        }
        if iam.path() != asked.path() || !iam.is_under_path(&self.policy.elevatable_path) {
            return refuse(
                DenyReason::RoleNotEligible,
                format!("IAM's role named {} is {iam}, not {asked}", asked.name()),
            );
        }
        if iam != asked && !self.policy.rule_allows_role(allowed.rule, iam) {
            return refuse(
                DenyReason::RoleNotEligible,
                format!("IAM spells the role {iam}, which rule {} does not name", allowed.rule),
            );
        }
        if !resolved.has_required_boundary {
            return refuse(
                DenyReason::RoleWithoutBoundary,
                format!("{iam} does not carry the deployment's permissions boundary"),
            );
        }
        Ok(Ok(resolved))
    }

    /// Puts a live grant's document on its role, then records it active (I8): only once IAM has
    /// accepted the document does anything (table, audit, bus, `latch request --wait`) say
    /// active. A permanent refusal is a decision: the grant fails, its cap slot is freed, the
    /// refusal is audited, and no later delivery attaches it. A grant that ended while its
    /// document went on (a finish, the sweep) has the document taken off again at once.
    async fn attach_and_confirm(
        &self,
        grant: &Grant,
        document: &PolicyDocument,
        audit: AuditRecord,
    ) -> Result<Attached, GrantError> {
        match self
            .ports
            .iam
            .put_role_policy(&grant.role, &grant.policy_name, document)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                warn!(grant_id = %grant.id, error = %e, "IAM refused the grant's policy");
                let mut refusal = audit::iam_refusal(
                    grant,
                    DenyReason::IamRejected.code(),
                    &e.to_string(),
                    self.ports.clock.now(),
                );
                self.provenance(&mut refusal);
                if self.ports.store.record_failure(grant, &refusal).await? {
                    self.ports.audit.publish(&refusal).await?;
                } else if let Some(stored) = self.ports.store.recorded_audit(&refusal.audit_id).await? {
                    // An earlier attempt recorded the failure and stopped before its event.
                    self.ports.audit.publish(&stored).await?;
                }
                return Ok(Attached::Refused);
            }
        }
        match self.ports.store.confirm_activation(grant, &audit).await? {
            Confirmation::Confirmed => {
                self.ports.audit.publish(&audit).await?;
                Ok(Attached::Active)
            }
            Confirmation::AlreadyConfirmed(stored) => {
                self.ports.audit.publish(&stored.map_or(audit, |b| *b)).await?;
                Ok(Attached::AlreadyActive)
            }
            Confirmation::Ended => {
                warn!(grant_id = %grant.id, "grant ended while its policy was attached: taking it off");
                match self.ports.iam.delete_role_policy(&grant.role, &grant.policy_name).await {
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    // Drift repair finds a document of ours with no live grant.
                    Err(e) => warn!(grant_id = %grant.id, error = %e, "IAM refused to take a late policy off"),
                }
                Ok(Attached::Ended)
            }
        }
    }

    /// What every record of a decision made here says about how it was made: which policy
    /// file (digest and label) decided, and which of its job fields are only claimed.
    fn provenance(&self, audit: &mut AuditRecord) {
        audit.decided_under(&self.policy.file_sha256, self.policy.label.as_deref());
    }

    pub fn revoker(&self) -> Revoker<'_, I, S, A, C> {
        self.ports.revoker()
    }

    fn propose(
        &self,
        envelope: &Envelope,
        asker: Asker<'_>,
        allowed: Allowed<'_>,
        now: DateTime<Utc>,
    ) -> Result<Proposal, Denial> {
        let request = asker.request;
        if envelope.time > now + MAX_CLOCK_SKEW {
            return Err(Denial {
                reason: DenyReason::EventTimeInFuture,
                detail: Some(format!("event time {} is ahead of now {now}", envelope.time)),
            });
        }
        // The publisher sets `time`: it may make a grant start earlier, never end later.
        let starts_at = envelope.time.min(now);
        let duration = ChronoDuration::seconds(request.duration.as_secs() as i64);
        let expires_at = starts_at + duration;
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
            policy_name: self.deployment.policy_name(&id),
            id,
            status: GrantStatus::Pending,
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
            policy_chars: 0,
            session: (allowed.bind_session && asker.verified.is_some()).then(|| session_name(&request.job)),
        };
        let document = self.render(&grant)?;
        let grant = Grant {
            policy_sha256: document.sha256().to_owned(),
            policy_chars: document.chars(),
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
            session: grant.session.as_deref(),
        };
        Ok(set.render_for_grant(&ctx, grant.expires_at, &grant.id, &grant.role)?)
    }

    /// Puts the grant's policy on its role: `true` once it is there. IAM refusing it for good
    /// (`false`) is audited as a denial: retrying cannot help.
    /// Replaces an active grant's document (an extension): `true` once it is there. IAM
    /// refusing it for good is audited; the old document, with its earlier expiry, stays.
    async fn attach(&self, grant: &Grant, document: &PolicyDocument) -> Result<bool, GrantError> {
        match self
            .ports
            .iam
            .put_role_policy(&grant.role, &grant.policy_name, document)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_retryable() => Err(e.into()),
            Err(e) => {
                warn!(grant_id = %grant.id, error = %e, "IAM refused the grant's extended policy");
                let mut audit = audit::iam_refusal(
                    grant,
                    DenyReason::IamRejected.code(),
                    &e.to_string(),
                    self.ports.clock.now(),
                );
                self.provenance(&mut audit);
                record_then_publish::<_, _, GrantError>(&self.ports.store, &self.ports.audit, audit).await?;
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
        asker: Asker<'_>,
        existing: Grant,
        actions: &[String],
        now: DateTime<Utc>,
    ) -> Result<StartOutcome, GrantError> {
        if !existing.status.is_live() || existing.expires_at <= now {
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
            return self.deny(envelope, Some(asker), denial, now).await;
        }
        let document = match self.render(&existing) {
            Ok(d) => d,
            Err(denial) => {
                warn!(grant_id = %existing.id, reason = %denial.reason, "cannot re-render a recorded grant; leaving it");
                return Ok(StartOutcome::AlreadyActive(existing.id));
            }
        };
        let mut audit = audit::activation(&existing, actions, existing.granted_at);
        audit.describe_verified(asker.verified);
        audit.policy_document = Some(document.as_json().to_owned());
        self.provenance(&mut audit);
        Ok(match self.attach_and_confirm(&existing, &document, audit).await? {
            // A retry of the decision that recorded it, finishing what that attempt began.
            Attached::Active if existing.event_id == envelope.id => StartOutcome::Activated(existing.id),
            Attached::Active | Attached::AlreadyActive => {
                info!(grant_id = %existing.id, "duplicate start: grant already active, converged");
                StartOutcome::AlreadyActive(existing.id)
            }
            Attached::Refused => StartOutcome::Denied(DenyReason::IamRejected),
            Attached::Ended => StartOutcome::AlreadyEnded(existing.id),
        })
    }

    /// An event whose envelope lacks a trusted field (never from EventBridge itself; from a
    /// misconfigured runner or a hand-made invoke): audited as malformed, nothing granted.
    pub async fn on_untrusted_envelope(
        &self,
        event_id: &str,
        source: &str,
        problem: &str,
    ) -> Result<StartOutcome, GrantError> {
        let now = self.ports.clock.now();
        let mut audit = audit::untrusted_envelope(source, event_id, DenyReason::MalformedEvent.code(), problem, now);
        self.provenance(&mut audit);
        warn!(event_id, source, problem, "event envelope cannot be trusted");
        record_then_publish::<_, _, GrantError>(&self.ports.store, &self.ports.audit, audit).await?;
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
        self.deny(envelope, None, denial, self.ports.clock.now()).await
    }

    async fn deny(
        &self,
        envelope: &Envelope,
        asker: Option<Asker<'_>>,
        denial: Denial,
        now: DateTime<Utc>,
    ) -> Result<StartOutcome, GrantError> {
        self.deny_with(envelope, denial, now, |audit| {
            if let Some(Asker { request, verified }) = asker {
                audit.describe_request(&envelope.source, request, verified);
            }
        })
        .await
    }

    /// A publisher over its limit: denied `rate_limited`, with one audit per publisher and minute
    /// (its id is over the two, so the create-only write keeps the first and refuses the rest)
    /// describing the first refused request. Only the write that created it publishes its event:
    /// a flood costs one audit write attempt per event and no bus call. Should the process die
    /// between that write and its event, the durable item still says it.
    async fn deny_rate_limited(
        &self,
        envelope: &Envelope,
        asker: Asker<'_>,
        rate: &RateWindow,
        now: DateTime<Utc>,
    ) -> Result<StartOutcome, GrantError> {
        let mut audit = audit::rate_limited(
            envelope,
            DenyReason::RateLimited.code(),
            &rate.publisher,
            rate.minute,
            rate.limit,
            now,
        );
        audit.describe_request(&envelope.source, asker.request, asker.verified);
        match self.ports.store.record_audit(&audit).await? {
            AuditWrite::Recorded => {
                info!(event_id = %envelope.id, publisher = %rate.publisher, limit = rate.limit, "publisher rate limited");
                self.ports.audit.publish(&audit).await?;
            }
            AuditWrite::AlreadyRecorded(_) => {
                debug!(event_id = %envelope.id, publisher = %rate.publisher, "publisher rate limited (audited this minute)");
            }
        }
        Ok(StartOutcome::Denied(DenyReason::RateLimited))
    }

    /// Writes and publishes the Denied audit of an event; `describe` adds what is known of the request.
    async fn deny_with(
        &self,
        envelope: &Envelope,
        denial: Denial,
        now: DateTime<Utc>,
        describe: impl FnOnce(&mut AuditRecord),
    ) -> Result<StartOutcome, GrantError> {
        let mut audit = audit::denial(envelope, denial.reason.code(), denial.detail, now);
        describe(&mut audit);
        self.provenance(&mut audit);
        info!(event_id = %envelope.id, reason = %denial.reason, detail = audit.detail.as_deref().unwrap_or("-"), "request denied");
        record_then_publish::<_, _, GrantError>(&self.ports.store, &self.ports.audit, audit).await?;
        Ok(StartOutcome::Denied(denial.reason))
    }
}

/// Who a new grant is counted against for fair share ([`crate::policy::FairShare`]): the
/// account and source, and whose job it is when that is more than the publisher's word — the
/// verified repository or project, or the pipeline or project AWS names for a native job.
/// A claimed pipeline name is the publisher's own word: counting by it would let a flooding
/// publisher spread itself over made-up names, so claimed jobs share their source's window.
pub fn publisher(grant: &Grant) -> String {
    let account = grant.account.as_str();
    match &grant.job.principal {
        Some(principal) => format!("{account}#{}#{principal}", grant.source),
        None if grant.source.starts_with("aws.") => format!("{account}#{}#{}", grant.source, grant.job.pipeline),
        None => format!("{account}#{}", grant.source),
    }
}

#[cfg(test)]
#[path = "grant_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "grant_native_tests.rs"]
mod native_tests;

#[cfg(test)]
#[path = "grant_fair_share_tests.rs"]
mod fair_share_tests;
