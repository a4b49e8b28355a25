//! The end of a job: its tombstone (so a late start is refused) and its grants revoked now, with
//! reason `job_finished`, whoever proves the finish (the token, AWS's own event, or a claim).

use super::*;

impl<I: IamWriter, S: GrantStore, A: AuditSink, C: Clock, K: KeySource, N: NativeRuns> GrantService<I, S, A, C, K, N> {
    /// Handles a `Pipeline Job Finished` event: tombstones the job (so a late start is refused)
    /// and revokes its active grants now, with reason `job_finished`. Whatever the outcome of
    /// the job (success, failure, cancel), its grants end. Err when a retry may finish the job.
    pub async fn on_finish(
        &self,
        envelope: &Envelope,
        detail: &Value,
        detail_len: usize,
    ) -> Result<FinishOutcome, GrantError> {
        let now = self.ports.clock.now();
        let notice = match FinishNotice::parse(detail, detail_len) {
            Ok(n) => n,
            Err(e) => {
                warn!(event_id = %envelope.id, field = e.field().unwrap_or("-"), error = %e, "malformed finish event");
                return self.deny_finish(envelope, None, e.into(), now).await;
            }
        };
        let presented = Presented::Finish {
            account: &envelope.account,
        };
        let job = match self
            .verify(
                notice.token.as_deref(),
                presented,
                &notice.job,
                &JobContext::default(),
                now,
            )
            .await?
        {
            Ok(Some(v)) => {
                let by = v
                    .job
                    .job
                    .principal
                    .clone()
                    .unwrap_or_else(|| format!("verified:{}", v.token.issuer.as_str()));
                (v.job.job, by)
            }
            // Without proof, only a job whose grants came from an `identity: claimed` rule of
            // this publisher can be finished: its key has no principal, so no verified job's does.
            Ok(None) if self.policy.trusts_claims_of(envelope) => {
                (notice.job.clone(), format!("claimed:{}", envelope.source))
            }
            Ok(None) => {
                let denial = Denial {
                    reason: DenyReason::FinishNotProven,
                    detail: Some("the finish carries no token, and no identity: claimed rule trusts its source".into()),
                };
                return self.deny_finish(envelope, Some(&notice.job), denial, now).await;
            }
            Err(denial) => {
                let denial = Denial {
                    reason: DenyReason::FinishNotProven,
                    detail: Some(format!("{}: {}", denial.reason, denial.detail.unwrap_or_default())),
                };
                return self.deny_finish(envelope, Some(&notice.job), denial, now).await;
            }
        };
        let (job, finished_by) = job;
        self.finish(envelope, &job, &finished_by, notice.outcome.as_deref(), now)
            .await
    }

    /// A finish that changes nothing: audited as a denial.
    async fn deny_finish(
        &self,
        envelope: &Envelope,
        job: Option<&JobKey>,
        denial: Denial,
        now: DateTime<Utc>,
    ) -> Result<FinishOutcome, GrantError> {
        let outcome = self
            .deny_with(envelope, denial, now, |audit| {
                if let Some(job) = job {
                    audit.describe_job(&envelope.source, job, &JobContext::default());
                }
            })
            .await?;
        Ok(FinishOutcome::Denied(match outcome {
            StartOutcome::Denied(reason) => reason,
            _ => DenyReason::MalformedEvent,
        }))
    }

    /// Tombstones the job and revokes its active grants now.
    pub(super) async fn finish(
        &self,
        envelope: &Envelope,
        job: &JobKey,
        finished_by: &str,
        outcome: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<FinishOutcome, GrantError> {
        let grants = self
            .ports
            .store
            .finish_job(&envelope.account, &envelope.source, job, now, now + TOMBSTONE_LIFETIME)
            .await?;
        let revoker = self.revoker();
        let (mut revoked, mut already_ended, mut failed) = (0, 0, 0);
        let mut retry = None;
        for grant in &grants {
            match revoker
                .revoke_noting(grant, RevokeReason::JobFinished, RecordState::Present, |audit| {
                    audit.finished_by = Some(finished_by.to_owned());
                })
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
}
