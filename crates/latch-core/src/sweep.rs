//! The sweep: the guarantee behind I2 and I4, run on a schedule.
//!
//! 1. Expired grants, found through the store's expiry index (its cost follows the number of
//!    expired grants, not the table), are revoked page by page with reason `expired_sweep`:
//!    one role's grants one after another, up to `concurrency` roles at a time. Two writes on
//!    one role at once would only conflict (IAM's `ConcurrentModification`, DynamoDB's
//!    `TransactionConflict` on the role's counter) and wait for each other anyway. A revoke
//!    that fails is audited (`Latch Revoke Failed`) and, since its grant stays active in the
//!    index, retried by the next run.
//! 2. Drift repair: every `latch-*` inline policy on a role the policy file makes eligible must
//!    belong to a live grant. One that does not, once seen for longer than the grace period, is
//!    deleted and audited as `Latch Drift Repaired`.
//!
//! The sweep stops starting new work when the deadline is near and leaves the rest to the next
//! run; nothing it does is lost by stopping (every step is idempotent).

use std::collections::HashMap;
use std::time::Instant;

use chrono::Duration;
use futures::StreamExt;
use tracing::{error, info, warn};

use crate::audit::{AuditRecord, Decision};
use crate::model::{Deployment, POLICY_NAME_PREFIX, RoleArn, digest};
use crate::policy::Policy;
use crate::ports::{
    AuditSink, Clock, Grant, GrantStore, IamInventory, IamWriter, RecordState, StoreError, record_then_publish,
};
use crate::revoke::{RevokeError, RevokeOutcome, RevokeReason, Revoker};

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub revoked: usize,
    pub already_revoked: usize,
    /// IAM refused for good, or a transient failure: audited, retried next run.
    pub revoke_failed: usize,
    /// Revoked and recorded, but the event did not go out (the durable audit item stands).
    pub events_unpublished: usize,
    pub drift_repaired: usize,
    /// Orphans seen, still within the grace period.
    pub drift_pending: usize,
    pub drift_errors: usize,
    /// The deadline came first; the next run carries on.
    pub stopped_early: bool,
}

impl SweepReport {
    /// A grant revoked and recorded whose event did not go out. It has left the expiry index,
    /// so no later run sees it: the event is lost (the durable audit item is not). Said loudly
    /// rather than audited as a revoke that failed.
    fn note_unpublished(&mut self, grant: &Grant, error: &crate::ports::SinkError) {
        self.revoked += 1;
        self.events_unpublished += 1;
        error!(grant_id = %grant.id, error = %error, "grant revoked, but its audit event was not published");
    }
}

/// A page's grants by role, each role's in page order, roles in order of first appearance.
/// IAM role names are case-insensitive, so ARNs differing only in case are one role.
fn by_role(page: &[Grant]) -> Vec<Vec<&Grant>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<&Grant>> = Vec::new();
    for g in page {
        let slot = *index.entry(g.role.as_str().to_ascii_lowercase()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push(g);
    }
    groups
}

#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub page_size: u32,
    pub concurrency: usize,
    pub drift_grace: Duration,
    /// Drift repair looks only at this deployment's policy names.
    pub deployment: Deployment,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            page_size: 100,
            concurrency: 8,
            drift_grace: Duration::minutes(10),
            deployment: Deployment::default(),
        }
    }
}

pub struct Sweeper<'a, I, V, S, A, C> {
    pub policy: &'a Policy,
    pub iam: &'a I,
    pub inventory: &'a V,
    pub store: &'a S,
    pub audit: &'a A,
    pub clock: &'a C,
    pub settings: SweepSettings,
}

impl<I, V, S, A, C> Sweeper<'_, I, V, S, A, C>
where
    I: IamWriter,
    V: IamInventory,
    S: GrantStore,
    A: AuditSink,
    C: Clock,
{
    fn revoker(&self) -> Revoker<'_, I, S, A, C> {
        Revoker {
            iam: self.iam,
            store: self.store,
            audit: self.audit,
            clock: self.clock,
        }
    }

    /// One run. `stop_by`: when to stop starting new work (the Lambda deadline less a margin).
    /// Err only when the expiry index cannot be read at all (the scheduler retries).
    pub async fn run(&self, stop_by: Option<Instant>) -> Result<SweepReport, StoreError> {
        let out_of_time = || stop_by.is_some_and(|t| Instant::now() >= t);
        let mut report = SweepReport::default();
        let now = self.clock.now();
        let mut after: Option<Grant> = None;
        loop {
            if out_of_time() {
                report.stopped_early = true;
                break;
            }
            let page = self
                .store
                .expired_grants(now, after.as_ref(), self.settings.page_size)
                .await?;
            let revoker = &self.revoker();
            let results: Vec<_> = futures::stream::iter(by_role(&page))
                .map(|grants| async move {
                    let mut results = Vec::with_capacity(grants.len());
                    for g in grants {
                        let result = revoker
                            .revoke(g, RevokeReason::ExpiredSweep, RecordState::Present)
                            .await;
                        results.push((g, result));
                    }
                    results
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .flat_map(futures::stream::iter)
                .collect()
                .await;
            for (grant, result) in results {
                match result {
                    Ok(RevokeOutcome::Revoked) => report.revoked += 1,
                    Ok(RevokeOutcome::AlreadyRevoked) => report.already_revoked += 1,
                    Ok(RevokeOutcome::Failed(_)) => report.revoke_failed += 1,
                    Err(RevokeError::EventNotPublished(e)) => report.note_unpublished(grant, &e),
                    // The write may have been applied with its answer lost: the grant has then
                    // left the index, and only this run can still publish its event.
                    Err(e) => match revoker.settle_after_error(grant).await {
                        Ok(true) => {
                            report.revoked += 1;
                            warn!(grant_id = %grant.id, error = %e, "revoke reported an error but is recorded; event published");
                        }
                        Err(RevokeError::EventNotPublished(e)) => report.note_unpublished(grant, &e),
                        Ok(false) | Err(_) => {
                            report.revoke_failed += 1;
                            if let Err(audit_error) = revoker
                                .record_failure(grant, RevokeReason::ExpiredSweep, &e.to_string())
                                .await
                            {
                                warn!(grant_id = %grant.id, error = %audit_error, "could not audit a failed revoke");
                            }
                        }
                    },
                }
            }
            let full = page.len() as u32 >= self.settings.page_size;
            after = page.into_iter().last();
            if !full {
                break;
            }
        }
        if !report.stopped_early {
            self.repair_drift(&mut report, &out_of_time).await;
        }
        info!(?report, "sweep done");
        Ok(report)
    }

    async fn eligible_roles(&self) -> Result<Vec<RoleArn>, crate::ports::IamError> {
        let roles = self.inventory.roles_under(&self.policy.elevatable_path).await?;
        Ok(roles.into_iter().filter(|r| self.policy.is_eligible_role(r)).collect())
    }

    async fn repair_drift(&self, report: &mut SweepReport, out_of_time: &impl Fn() -> bool) {
        let roles = match self.eligible_roles().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "drift repair: cannot list roles");
                report.drift_errors += 1;
                return;
            }
        };
        for role in roles {
            if out_of_time() {
                report.stopped_early = true;
                return;
            }
            let names = match self.inventory.inline_policies(&role).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(role = %role, error = %e, "drift repair: cannot list policies");
                    report.drift_errors += 1;
                    continue;
                }
            };
            for name in names.iter().filter(|n| n.starts_with(POLICY_NAME_PREFIX)) {
                if let Err(e) = self.check_policy(&role, name, report).await {
                    warn!(role = %role, policy = %name, error = %e, "drift repair failed for a policy");
                    report.drift_errors += 1;
                }
            }
        }
    }

    async fn check_policy(
        &self,
        role: &RoleArn,
        name: &str,
        report: &mut SweepReport,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // Only names of Latch's own exact shape: a team's `latch-guardrails` is not ours.
        let Some(id) = self.settings.deployment.grant_id_of(name) else {
            return Ok(());
        };
        let recorded = self.store.grant(&id).await?;
        if recorded.as_ref().is_some_and(|g| g.status.is_live() && &g.role == role) {
            return Ok(());
        }
        let now = self.clock.now();
        // A grant the record says is over (revoked, failed) needs no grace: its document is a
        // late attach and comes off now. Only a document with no record at all waits out the
        // grace, in case its grant is being written as we look.
        let ended = recorded.is_some_and(|g| !g.status.is_live());
        let since = self.store.drift_seen_since(role, name, now).await?;
        if !ended && now - since < self.settings.drift_grace {
            report.drift_pending += 1;
            return Ok(());
        }
        let id = Some(id);
        let deleted = self.inventory.inline_policy_document(role, name).await?;
        self.iam.delete_role_policy(role, name).await?;
        let mut audit = AuditRecord::new(
            digest(&[role.as_str(), name, &since.timestamp().to_string(), "drift"]),
            Decision::DriftRepaired,
            "no_live_grant",
            now,
        );
        audit.role_arn = Some(role.as_str().to_owned());
        audit.account = Some(role.account().as_str().to_owned());
        audit.policy_name = Some(name.to_owned());
        audit.grant_id = id.map(|i| i.as_str().to_owned());
        audit.detail = Some(format!("inline policy {name} had no live grant since {since}"));
        if let Some(document) = &deleted {
            audit.keep_deleted_document(document);
        }
        audit.policy_file_sha256 = Some(self.policy.file_sha256.clone());
        audit.policy_file_label = self.policy.label.clone();
        record_then_publish::<_, _, Box<dyn std::error::Error + Send + Sync>>(self.store, self.audit, audit).await?;
        self.store.clear_drift(role, name).await?;
        report.drift_repaired += 1;
        info!(role = %role, policy = name, "drift repaired");
        Ok(())
    }
}
