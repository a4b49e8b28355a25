use chrono::Duration;
use serde_json::{Value, json};

use super::*;
use crate::audit::Decision;
use crate::memory::{Faults, job_scope};
use crate::ports::{IamError, SinkError, StoreError};
use crate::test_fixtures::{MemoryService as Service, deployer as role, memory_service, t0};

fn service() -> Service {
    memory_service(t0() + Duration::seconds(2), &Faults::default())
}

fn envelope(id: &str) -> Envelope {
    crate::test_fixtures::envelope("Pipeline Job Started", id)
}

fn detail() -> Value {
    json!({
        "pipeline": "app-release", "run_id": "4711", "job": "deploy", "attempt": 1,
        "role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
        "permission_set": "deploy-artifacts", "duration": "PT15M", "ref": "refs/heads/main",
        "actor": "octocat", "commit": "0123abcd"
    })
}

async fn start(s: &Service, env: &Envelope, d: &Value) -> Result<StartOutcome, GrantError> {
    s.on_start(env, d, d.to_string().len()).await
}

#[tokio::test]
async fn given_an_allowed_start_when_handled_then_policy_record_audit_and_event_exist() {
    let s = service();
    let StartOutcome::Activated(id) = start(&s, &envelope("e1"), &detail()).await.unwrap() else {
        panic!()
    };
    let doc: Value = serde_json::from_str(&s.ports.iam.policy(&role(), &id.policy_name()).unwrap()).unwrap();
    assert_eq!(
        doc["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"],
        "2026-11-25T12:15:00Z"
    );
    let grants = s.ports.store.grants();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].expires_at, t0() + Duration::minutes(15));
    let audits = s.ports.store.audits();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].decision, Decision::Activated);
    assert_eq!(audits[0].rule.as_deref(), Some("app-release-deploys"));
    assert_eq!(audits[0].actor.as_deref(), Some("octocat"));
    assert_eq!(
        audits[0].policy_sha256.as_deref(),
        Some(grants[0].policy_sha256.as_str())
    );
    assert_eq!(s.ports.audit.published(), audits);
    assert_eq!(s.ports.store.active_on(&role()), 1);
}

#[tokio::test]
async fn given_a_duplicate_start_when_handled_then_nothing_new_is_recorded_or_extended() {
    let s = service();
    let first = start(&s, &envelope("e1"), &detail()).await.unwrap();
    let StartOutcome::Activated(id) = first else {
        panic!("{first:?}")
    };
    let policy_before = s.ports.iam.policy(&role(), &id.policy_name());
    // Same job re-published later with a longer duration: same grant id, no extension.
    let mut later = envelope("e2");
    later.time = t0() + Duration::minutes(1);
    let mut longer = detail();
    longer["duration"] = json!("20m");
    s.ports.clock.advance(Duration::minutes(1));
    assert_eq!(
        start(&s, &later, &longer).await.unwrap(),
        StartOutcome::AlreadyActive(id.clone())
    );
    assert_eq!(
        start(&s, &envelope("e1"), &detail()).await.unwrap(),
        StartOutcome::AlreadyActive(id.clone())
    );
    assert_eq!(s.ports.store.grants().len(), 1);
    assert_eq!(s.ports.store.audits().len(), 1);
    assert_eq!(s.ports.store.active_on(&role()), 1);
    assert_eq!(s.ports.iam.policy(&role(), &id.policy_name()), policy_before);
    let ids: Vec<String> = s.ports.audit.published().into_iter().map(|a| a.audit_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "re-published events share one audit id: {ids:?}"
    );
}

/// A grant made for event `e1`, then revoked behind the service's back.
async fn granted_then_revoked(s: &Service) -> GrantId {
    let StartOutcome::Activated(id) = start(s, &envelope("e1"), &detail()).await.unwrap() else {
        panic!("the first start is granted")
    };
    s.ports.store.set_status(id.as_str(), GrantStatus::Revoked);
    id
}

#[tokio::test]
async fn given_an_ended_grant_when_another_event_asks_for_it_then_it_is_denied_as_grant_ended() {
    let s = service();
    let id = granted_then_revoked(&s).await;
    let puts = s.ports.iam.calls().0;
    assert_eq!(
        start(&s, &envelope("e2"), &detail()).await.unwrap(),
        StartOutcome::Denied(DenyReason::GrantEnded)
    );
    assert_eq!(s.ports.iam.calls().0, puts);
    let denied: Vec<AuditRecord> = s
        .ports
        .store
        .audits()
        .into_iter()
        .filter(|a| a.decision == Decision::Denied)
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        (denied[0].reason.as_str(), denied[0].event_id.as_deref()),
        ("grant_ended", Some("e2"))
    );
    assert!(denied[0].detail.as_deref().unwrap_or("").contains(id.as_str()));
}

#[tokio::test]
async fn given_a_duplicate_of_a_revoked_grant_when_handled_then_iam_is_not_touched() {
    let s = service();
    let id = granted_then_revoked(&s).await;
    let puts = s.ports.iam.calls().0;
    assert_eq!(
        start(&s, &envelope("e1"), &detail()).await.unwrap(),
        StartOutcome::AlreadyEnded(id)
    );
    assert_eq!(s.ports.iam.calls().0, puts);
}

#[tokio::test]
async fn given_a_start_without_environment_for_a_rule_that_requires_one_when_handled_then_the_audit_names_environment()
{
    // GIVEN the db-migrator role, which only prod-migrations lists, and it requires an environment
    let s = service();
    let mut d = detail();
    d["role_arn"] = json!("arn:aws:iam::123456789012:role/latch/db-migrator");
    d["permission_set"] = json!("db-migrate");
    d["duration"] = json!("PT5M");
    // WHEN the start names no environment
    let outcome = start(&s, &envelope("e1"), &d).await.unwrap();
    // THEN it is denied for the field, and the audit says which field and what would pass
    assert_eq!(outcome, StartOutcome::Denied(DenyReason::FieldMismatch));
    let audits = s.ports.store.audits();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].reason, "field_mismatch");
    assert_eq!(
        audits[0].detail.as_deref(),
        Some("environment: rule prod-migrations wants production; the request has none")
    );
    assert_eq!(s.ports.iam.calls(), (0, 0));
}

#[tokio::test]
async fn given_a_denied_request_when_handled_then_iam_is_untouched_and_the_reason_audited() {
    let s = service();
    let mut d = detail();
    d["role_arn"] = json!("arn:aws:iam::123456789012:role/admin");
    assert_eq!(
        start(&s, &envelope("e1"), &d).await.unwrap(),
        StartOutcome::Denied(DenyReason::RoleNotEligible)
    );
    assert_eq!(s.ports.iam.calls(), (0, 0));
    assert!(s.ports.store.grants().is_empty());
    let audits = s.ports.store.audits();
    assert_eq!(audits.len(), 1);
    assert_eq!(
        (audits[0].decision, audits[0].reason.as_str()),
        (Decision::Denied, "role_not_eligible")
    );
    assert_eq!(
        audits[0].role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/admin")
    );
    assert_eq!(s.ports.audit.published().len(), 1);
    // The same event delivered again is one decision: no second audit; its event goes out
    // again as recorded (the first delivery may have stopped before publishing it).
    s.ports.clock.advance(Duration::seconds(30));
    start(&s, &envelope("e1"), &d).await.unwrap();
    assert_eq!(s.ports.store.audits(), audits);
    assert_eq!(s.ports.audit.published(), [audits[0].clone(), audits[0].clone()]);
}

#[tokio::test]
async fn given_malformed_detail_when_handled_then_the_audit_names_the_field() {
    let s = service();
    let mut d = detail();
    d["attempt"] = json!(-1);
    assert_eq!(
        start(&s, &envelope("e1"), &d).await.unwrap(),
        StartOutcome::Denied(DenyReason::MalformedEvent)
    );
    assert!(
        s.ports.store.audits()[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("`attempt`")
    );
    let s = service();
    assert_eq!(
        s.on_start(&envelope("e1"), &json!("x"), 70_000).await.unwrap(),
        StartOutcome::Denied(DenyReason::EventTooLarge)
    );
}

#[tokio::test]
async fn given_event_times_out_of_bounds_when_handled_then_stale_and_future_are_denied() {
    let s = service();
    let mut old = envelope("e1");
    old.time = t0() - Duration::minutes(16);
    assert_eq!(
        start(&s, &old, &detail()).await.unwrap(),
        StartOutcome::Denied(DenyReason::RequestStale)
    );
    let mut future = envelope("e2");
    future.time = t0() + Duration::minutes(10);
    assert_eq!(
        start(&s, &future, &detail()).await.unwrap(),
        StartOutcome::Denied(DenyReason::EventTimeInFuture)
    );
    assert_eq!(s.ports.iam.calls(), (0, 0));
}

#[tokio::test]
async fn given_a_finished_job_when_its_start_arrives_late_then_the_tombstone_refuses_it() {
    let s = service();
    let probe = service();
    start(&probe, &envelope("e1"), &detail()).await.unwrap();
    s.ports
        .store
        .add_tombstone(job_scope(&probe.ports.store.grants()[0]), t0() + Duration::hours(1));
    assert_eq!(
        start(&s, &envelope("e1"), &detail()).await.unwrap(),
        StartOutcome::Denied(DenyReason::JobFinished)
    );
    assert_eq!(s.ports.iam.calls(), (0, 0));
}

#[tokio::test]
async fn given_a_role_at_its_cap_when_another_job_asks_then_the_cap_denies_it() {
    let s = service();
    let mut d = detail();
    d["role_arn"] = json!("arn:aws:iam::123456789012:role/latch/db-migrator");
    d["permission_set"] = json!("db-migrate");
    d["duration"] = json!("5m");
    d["environment"] = json!("production");
    assert!(matches!(
        start(&s, &envelope("e1"), &d).await.unwrap(),
        StartOutcome::Activated(_)
    ));
    d["run_id"] = json!("4712");
    assert_eq!(
        start(&s, &envelope("e2"), &d).await.unwrap(),
        StartOutcome::Denied(DenyReason::ConcurrencyCap)
    );
}

#[tokio::test]
async fn given_transient_failures_when_retried_then_the_grant_converges_once() {
    let s = service();
    s.ports.store.fail_next(StoreError::Transient("throttled".into()));
    assert!(start(&s, &envelope("e1"), &detail()).await.unwrap_err().is_retryable());
    s.ports.iam.fail_next(IamError::Transient("503".into()));
    assert!(start(&s, &envelope("e1"), &detail()).await.unwrap_err().is_retryable());
    assert_eq!(s.ports.iam.policy_count(), 0);
    s.ports.audit.fail_next(SinkError::Transient("1 failed entry".into()));
    assert!(start(&s, &envelope("e1"), &detail()).await.unwrap_err().is_retryable());
    assert_eq!(s.ports.iam.policy_count(), 1);
    assert!(matches!(
        start(&s, &envelope("e1"), &detail()).await.unwrap(),
        StartOutcome::AlreadyActive(_)
    ));
    assert_eq!(
        (
            s.ports.store.grants().len(),
            s.ports.store.audits().len(),
            s.ports.audit.published().len()
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn given_iam_refuses_for_good_when_handled_then_it_is_denied_and_not_retried() {
    let s = service();
    s.ports.iam.fail_next(IamError::NoSuchRole("app-deployer".into()));
    assert_eq!(
        start(&s, &envelope("e1"), &detail()).await.unwrap(),
        StartOutcome::Denied(DenyReason::IamRejected)
    );
    let denied: Vec<_> = s
        .ports
        .store
        .audits()
        .into_iter()
        .filter(|a| a.decision == Decision::Denied)
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].reason, "iam_rejected");
    assert_eq!(s.ports.iam.policy_count(), 0);
}
