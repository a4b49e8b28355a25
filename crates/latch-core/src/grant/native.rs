//! Native CodePipeline and CodeBuild events: a start decided by the policy's `native` rules and
//! confirmed with the service that runs it before any write; an end finishes the job.

use super::*;

impl<I: IamWriter, S: GrantStore, A: AuditSink, C: Clock, K: KeySource, N: NativeRuns> GrantService<I, S, A, C, K, N> {
    /// Handles a native CodePipeline action or CodeBuild build state change ([`crate::native`]):
    /// a start is decided by the policy's `native` rules and confirmed with the service; an end
    /// finishes the job like `Pipeline Job Finished`. The start or end of a job no native rule
    /// names is not Latch's business ([`NativeOutcome::NotManaged`]): nothing is written, so
    /// every build in the account does not cost a write or a read.
    pub async fn on_native(
        &self,
        envelope: &Envelope,
        detail: &Value,
        detail_len: usize,
    ) -> Result<NativeOutcome, GrantError> {
        let now = self.ports.clock.now();
        let event = match NativeEvent::parse(&envelope.detail_type, detail, detail_len) {
            Ok(e) => e,
            Err(e) => {
                warn!(event_id = %envelope.id, field = e.field().unwrap_or("-"), error = %e, "malformed native event");
                return self.deny(envelope, None, e.into(), now).await.map(NativeOutcome::Start);
            }
        };
        match event.phase {
            NativePhase::Started => self.on_native_start(envelope, &event.job, now).await,
            NativePhase::Ended { state } if self.policy.manages_native(&event.job) => self
                .finish(
                    envelope,
                    &event.job.key(),
                    &format!("aws_service:{}", envelope.source),
                    Some(&state),
                    now,
                )
                .await
                .map(NativeOutcome::Finish),
            NativePhase::Ended { state } => {
                debug!(event_id = %envelope.id, job = %event.job.key(), state, "native job no rule names: ignored");
                Ok(NativeOutcome::NotManaged)
            }
        }
    }

    /// A native start: the rule that names the job, then the run as its service reports it
    /// (one read), checked against the rule, then the grant.
    async fn on_native_start(
        &self,
        envelope: &Envelope,
        job: &NativeJob,
        now: DateTime<Utc>,
    ) -> Result<NativeOutcome, GrantError> {
        let key = job.key();
        let (request, allowed) = match self.policy.decide_native(envelope, job) {
            Ok(decided) => decided,
            Err(DenyReason::NoMatchingRule) => {
                debug!(event_id = %envelope.id, job = %key, "native start no rule names: ignored");
                return Ok(NativeOutcome::NotManaged);
            }
            Err(reason) => {
                let denial = Denial {
                    reason,
                    detail: Some(format!("{} cannot come from source {}", key, envelope.source)),
                };
                return self
                    .deny_with(envelope, denial, now, |audit| {
                        audit.describe_job(&envelope.source, &key, &JobContext::default())
                    })
                    .await
                    .map(NativeOutcome::Start);
            }
        };
        let asker = Asker {
            request: &request,
            verified: None,
        };
        let run = match self.native.look_up(job).await {
            Ok(run) => run,
            Err(e) if e.is_retryable() => return Err(GrantError::Native(e)),
            Err(e) => {
                let denial = Denial {
                    reason: DenyReason::NativeNotConfirmed,
                    detail: Some(e.to_string()),
                };
                return self
                    .deny(envelope, Some(asker), denial, now)
                    .await
                    .map(NativeOutcome::Start);
            }
        };
        let refused = match self.policy.native_rule(allowed.rule) {
            Some(rule) => check_run(rule, job, run.as_ref()).err(),
            None => Some(crate::native::RunRefusal {
                reason: DenyReason::NoMatchingRule,
                detail: format!("native rule {} is gone", allowed.rule),
            }),
        };
        if let Some(refusal) = refused {
            warn!(event_id = %envelope.id, job = %key, reason = %refusal.reason, detail = %refusal.detail,
                  "native start not confirmed by its service");
            let denial = Denial {
                reason: refusal.reason,
                detail: Some(refusal.detail),
            };
            return self
                .deny(envelope, Some(asker), denial, now)
                .await
                .map(NativeOutcome::Start);
        }
        self.activate(envelope, asker, allowed, now)
            .await
            .map(NativeOutcome::Start)
    }
}
