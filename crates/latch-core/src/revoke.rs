//! Taking grants away, on every path: the job's finish event, the TTL stream, the sweep.
//!
//! A revocation is: DeleteRolePolicy (NoSuchEntity is success) → one atomic store write (grant
//! marked revoked if still active, the Revoked audit if not yet written, the role's counter) →
//! the `Latch Grant Revoked` event. The audit id is the same on every path, so when two paths
//! race on one grant exactly one of them records it (I2, I3, I5); the event is published at
//! least once under that id, by whichever path gets there, and again by a retry that finds the
//! revocation recorded (an attempt may have stopped between the write and the event). A failed
//! IAM delete is audited as `Latch Revoke Failed` and left for the next sweep (or drift repair).

use chrono::Duration;
use tracing::{info, warn};

use crate::audit::{self, AuditRecord};
use crate::model::Grant;
use crate::ports::{
    AuditSink, Clock, GrantStore, IamError, IamWriter, Ports, RecordState, Retryable, Revocation, SinkError, StoreError,
};

/// Why a grant ended. Codes are stable: exports depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    JobFinished,
    ExpiredTtl,
    ExpiredSweep,
}

impl RevokeReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::JobFinished => "job_finished",
            Self::ExpiredTtl => "expired_ttl",
            Self::ExpiredSweep => "expired_sweep",
        }
    }
}

/// A tombstone outlives any start that could still arrive for its job: no grant lasts longer
/// than the 12-hour cap, and a start whose grant would already have expired is refused anyway.
pub const TOMBSTONE_LIFETIME: Duration = Duration::hours(13);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    /// Revoked before, by this path or another: nothing written; the stored Revoked audit is
    /// published again under its id.
    AlreadyRevoked,
    /// IAM refused the delete for good; audited as `Latch Revoke Failed`.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    Iam(#[from] IamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] SinkError),
    /// The grant is revoked and recorded; only its event did not go out. Not a failed revoke:
    /// a retry of the same finish or stream record publishes the stored record.
    #[error("grant revoked and recorded, but its event was not published: {0}")]
    EventNotPublished(SinkError),
}

impl Retryable for RevokeError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Iam(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
            Self::Audit(e) | Self::EventNotPublished(e) => e.is_retryable(),
        }
    }
}

/// The revocation steps over borrowed ports, shared by the grant, revoke and sweep functions.
pub struct Revoker<'a, I, S, A, C> {
    ports: &'a Ports<I, S, A, C>,
}

impl<I, S, A, C> Ports<I, S, A, C> {
    /// Revocations through these ports.
    pub fn revoker(&self) -> Revoker<'_, I, S, A, C> {
        Revoker { ports: self }
    }
}

impl<I: IamWriter, S: GrantStore, A: AuditSink, C: Clock> Revoker<'_, I, S, A, C> {
    pub async fn revoke(
        &self,
        grant: &Grant,
        reason: RevokeReason,
        state: RecordState,
    ) -> Result<RevokeOutcome, RevokeError> {
        self.revoke_noting(grant, reason, state, |_| {}).await
    }

    /// As [`Self::revoke`]; `note` adds what the caller knows to the Revoked record (a finish:
    /// who proved it).
    pub async fn revoke_noting(
        &self,
        grant: &Grant,
        reason: RevokeReason,
        state: RecordState,
        note: impl FnOnce(&mut AuditRecord),
    ) -> Result<RevokeOutcome, RevokeError> {
        if !grant.status.is_live() {
            // An earlier attempt may have recorded the revocation and stopped before its event.
            self.republish_recorded_revocation(grant).await?;
            return Ok(RevokeOutcome::AlreadyRevoked);
        }
        match self.ports.iam.delete_role_policy(&grant.role, &grant.policy_name).await {
            Ok(_) => {}
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                self.record_failure(grant, reason, &e.to_string()).await?;
                return Ok(RevokeOutcome::Failed(e.to_string()));
            }
        }
        let mut audit = audit::revocation(grant, reason.code(), self.ports.clock.now());
        note(&mut audit);
        match self.ports.store.record_revocation(grant, &audit, state).await? {
            Revocation::Recorded => {
                self.ports
                    .audit
                    .publish(&audit)
                    .await
                    .map_err(RevokeError::EventNotPublished)?;
                info!(grant_id = %grant.id, role = %grant.role, reason = reason.code(), "grant revoked");
                Ok(RevokeOutcome::Revoked)
            }
            Revocation::AlreadyRevoked(stored) => {
                // The other path (or an earlier attempt) may not have published yet, or at all.
                if let Some(stored) = stored {
                    self.ports
                        .audit
                        .publish(&stored)
                        .await
                        .map_err(RevokeError::EventNotPublished)?;
                }
                info!(grant_id = %grant.id, reason = reason.code(), "already revoked by another path");
                Ok(RevokeOutcome::AlreadyRevoked)
            }
        }
    }

    /// After an error whose effect is unknown (the store's answer lost after it applied the
    /// write, say): if the store shows the grant revoked, publishes its recorded audit and
    /// returns `true`; `false` when the grant is still active, so the revoke really failed.
    pub async fn settle_after_error(&self, grant: &Grant) -> Result<bool, RevokeError> {
        match self.ports.store.grant(&grant.id).await? {
            Some(recorded) if recorded.status.is_live() => Ok(false),
            _ => {
                self.republish_recorded_revocation(grant).await?;
                Ok(true)
            }
        }
    }

    /// Publishes the grant's recorded Revoked audit again, if there is one: the attempt that
    /// wrote it may have stopped before its event (consumers drop repeats by `audit_id`).
    async fn republish_recorded_revocation(&self, grant: &Grant) -> Result<(), RevokeError> {
        let recorded = self
            .ports
            .store
            .recorded_audit(&audit::revocation_id(&grant.id))
            .await?;
        if let Some(stored) = recorded {
            self.ports
                .audit
                .publish(&stored)
                .await
                .map_err(RevokeError::EventNotPublished)?;
        }
        Ok(())
    }

    /// One `Latch Revoke Failed` audit per grant: its failure episode (a grant is revoked at
    /// most once, so it fails in one stretch, however many runs retry it). The first failure
    /// publishes its event and then writes the durable item; a retry that finds the item says
    /// nothing more, so an operator is told once per episode, not once a minute (every attempt
    /// is still logged, and counted in the `RevokeFailures` metric). Publishing first keeps the
    /// event at least once: an attempt that dies between the two leaves no item, and the next
    /// attempt publishes again under the same id.
    pub async fn record_failure(&self, grant: &Grant, reason: RevokeReason, error: &str) -> Result<(), RevokeError> {
        let now = self.ports.clock.now();
        let audit = audit::revoke_failure(grant, reason.code(), error, now);
        warn!(grant_id = %grant.id, role = %grant.role, error, "revoke failed; the sweep will retry");
        if self.ports.store.recorded_audit(&audit.audit_id).await?.is_some() {
            return Ok(());
        }
        self.ports.audit.publish(&audit).await?;
        self.ports.store.record_audit(&audit).await?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "revoke_tests.rs"]
mod tests;
