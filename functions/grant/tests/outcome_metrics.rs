//! The grant function's metric records from its outcomes, and its errors as the runtime sees them.

use chrono::{Duration, TimeZone, Utc};
use grant::{GrantFailure, Outcome, outcome_records};
use lambda_runtime::Diagnostic;
use latch_core::grant::DenyReason;
use latch_core::grant::{FinishOutcome, GrantError, StartOutcome};
use latch_core::metrics::Metric;
use latch_core::model::GrantId;
use latch_core::ports::{IamError, StoreError};

#[test]
fn given_each_outcome_then_its_records() {
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 2).unwrap();
    let id = GrantId::parse("0123456789abcdef0123456789abcdef").unwrap();
    let activated = outcome_records(
        &Outcome::Start(StartOutcome::Activated(id.clone())),
        Some(now - Duration::milliseconds(1500)),
        now,
    );
    assert_eq!(
        activated.iter().map(|r| (r.metric, r.value)).collect::<Vec<_>>(),
        [(Metric::Grants, 1.0), (Metric::StartToActive, 1500.0)]
    );
    let denied = outcome_records(
        &Outcome::Start(StartOutcome::Denied(DenyReason::TokenExpired)),
        None,
        now,
    );
    assert_eq!(denied[0].metric, Metric::Denials);
    assert_eq!(denied[0].dimension.as_deref(), Some("token_expired"));
    let finished = outcome_records(
        &Outcome::Finish(FinishOutcome::Finished {
            revoked: 2,
            already_ended: 1,
            failed: 1,
        }),
        None,
        now,
    );
    let paths: Vec<_> = finished.iter().map(|r| (r.metric, r.dimension.as_deref())).collect();
    assert_eq!(
        paths,
        [
            (Metric::Revocations, Some("job_finished")),
            (Metric::Revocations, Some("job_finished")),
            (Metric::RevokeFailures, Some("job_finished")),
        ]
    );
    assert!(outcome_records(&Outcome::Start(StartOutcome::AlreadyActive(id)), None, now).is_empty());
}

#[test]
fn given_a_failure_then_the_diagnostic_names_its_type_and_whether_a_retry_helps() {
    let d = Diagnostic::from(GrantFailure(GrantError::Iam(IamError::Transient("Throttling".into()))));
    assert_eq!(d.error_type, "Grant.IamUnavailable.Retryable");
    assert!(d.error_message.contains("Throttling") && d.error_message.contains("retryable: true"));
    let d = Diagnostic::from(GrantFailure(GrantError::Store(StoreError::Rejected(
        "AccessDenied".into(),
    ))));
    assert_eq!(d.error_type, "Grant.StoreUnavailable.Permanent");
}
