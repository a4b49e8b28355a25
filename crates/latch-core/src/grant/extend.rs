//! Extending a live grant: the policy's caps still hold, the document is rendered again from the
//! recorded grant, and the store and IAM move together as for a start.

use super::*;

impl<I: IamWriter, S: GrantStore, A: AuditSink, C: Clock, K: KeySource, N: NativeRuns> GrantService<I, S, A, C, K, N> {
    /// Handles a `Pipeline Grant Extension Requested` event: a verified request from the job
    /// that holds an active grant moves its expiry by `by`, within its rule's `max_total`. Each
    /// token extends once (its `jti` names the extension). The
    /// store write goes first (conditional on the expiry it read), then the document is
    /// replaced, then the event: a retry finds its own extension recorded and converges.
    pub async fn on_extend(
        &self,
        envelope: &Envelope,
        detail: &Value,
        detail_len: usize,
    ) -> Result<ExtendOutcome, GrantError> {
        let now = self.ports.clock.now();
        let request = match ExtendRequest::parse(detail, detail_len) {
            Ok(r) => r,
            Err(e) => {
                warn!(event_id = %envelope.id, field = e.field().unwrap_or("-"), error = %e, "malformed extension request");
                return self.deny_extend(envelope, None, e.into(), now).await;
            }
        };
        let presented = Presented::Extend {
            binding: AudienceBinding {
                account: &envelope.account,
                role: &request.role,
                permission_set: &request.permission_set,
                duration: request.by,
            },
            by: request.by,
        };
        let verified = match self
            .verify(
                request.token.as_deref(),
                presented,
                &request.job,
                &JobContext::default(),
                now,
            )
            .await?
        {
            Ok(Some(v)) => v,
            Ok(None) => {
                let denial = Denial {
                    reason: DenyReason::TokenMissing,
                    detail: Some("an extension needs the job's token".into()),
                };
                return self.deny_extend(envelope, Some(&request), denial, now).await;
            }
            Err(denial) => return self.deny_extend(envelope, Some(&request), denial, now).await,
        };
        let id = GrantId::derive(GrantIdentity {
            account: &envelope.account,
            source: &envelope.source,
            job: &verified.job.job,
            permission_set: &request.permission_set,
            role: &request.role,
        });
        let current = match self.ports.store.grant(&id).await? {
            Some(g) if g.status == GrantStatus::Active && g.expires_at > now => g,
            _ => {
                let denial = Denial {
                    reason: DenyReason::NoActiveGrant,
                    detail: Some(format!("the job holds no active grant {id}")),
                };
                return self.deny_extend(envelope, Some(&request), denial, now).await;
            }
        };
        // One extension per token: the same token under a new event id (a replay from the bus)
        // lands on the same audit id and converges instead of extending again.
        let audit_id = audit::extension_id(&id, &verified.token.issuer_url, &verified.token.jti);
        let Some(extended) = self.extended(&current, request.by) else {
            let denial = Denial {
                reason: DenyReason::ExtensionOverMax,
                detail: Some(format!(
                    "rule {} allows a grant {} in all (max_total), or no extension at all",
                    current.rule,
                    self.policy
                        .rule(&current.rule)
                        .and_then(|r| r.max_total)
                        .map_or_else(|| "no more".to_owned(), |t| t.to_string())
                )),
            };
            return self.deny_extend(envelope, Some(&request), denial, now).await;
        };
        let document = match self.render(&extended) {
            Ok(d) => d,
            Err(denial) => return self.deny_extend(envelope, Some(&request), denial, now).await,
        };
        let extended = Grant {
            policy_sha256: document.sha256().to_owned(),
            ..extended
        };
        let mut audit = audit::extension(&extended, request.by, &audit_id, now);
        audit.describe_verified(Some(&verified));
        audit.policy_document = Some(document.as_json().to_owned());
        self.provenance(&mut audit);
        let (grant, audit, outcome) = match self.ports.store.record_extension(&current, &extended, &audit).await? {
            Extension::Recorded => (extended, audit, ExtendOutcome::Extended(id)),
            Extension::AlreadyRecorded(stored) => {
                let audit = self.ports.store.recorded_audit(&audit_id).await?.unwrap_or(audit);
                (*stored, audit, ExtendOutcome::AlreadyExtended(id))
            }
            Extension::NotActive => {
                let denial = Denial {
                    reason: DenyReason::NoActiveGrant,
                    detail: Some(format!("grant {id} ended or changed while being extended")),
                };
                return self.deny_extend(envelope, Some(&request), denial, now).await;
            }
        };
        let document = match self.render(&grant) {
            Ok(d) => d,
            Err(_) => document,
        };
        if grant.status == GrantStatus::Active && !self.attach(&grant, &document).await? {
            return Ok(ExtendOutcome::Denied(DenyReason::IamRejected));
        }
        self.ports.audit.publish(&audit).await?;
        info!(grant_id = %grant.id, expires_at = %crate::iam_time(grant.expires_at), "grant extended");
        Ok(outcome)
    }

    /// The grant `by` longer, if its rule's `max_total` allows it.
    fn extended(&self, current: &Grant, by: GrantDuration) -> Option<Grant> {
        let max_total = self.policy.rule(&current.rule)?.max_total?;
        let started = current.requested_at.min(current.granted_at);
        let expires_at = current.expires_at + ChronoDuration::seconds(by.as_secs() as i64);
        if expires_at - started > ChronoDuration::seconds(max_total.as_secs() as i64) {
            return None;
        }
        Some(Grant {
            expires_at,
            ..current.clone()
        })
    }

    async fn deny_extend(
        &self,
        envelope: &Envelope,
        request: Option<&ExtendRequest>,
        denial: Denial,
        now: DateTime<Utc>,
    ) -> Result<ExtendOutcome, GrantError> {
        let outcome = self
            .deny_with(envelope, denial, now, |audit| {
                if let Some(r) = request {
                    audit.role_arn = Some(r.role.as_str().to_owned());
                    audit.permission_set = Some(r.permission_set.as_str().to_owned());
                    audit.requested_duration_secs = Some(r.by.as_secs());
                    audit.describe_job(&envelope.source, &r.job, &JobContext::default());
                }
            })
            .await?;
        Ok(ExtendOutcome::Denied(match outcome {
            StartOutcome::Denied(reason) => reason,
            _ => DenyReason::MalformedEvent,
        }))
    }
}
