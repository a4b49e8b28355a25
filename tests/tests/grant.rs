//! The grant path on the emulator: start events through the grant function's handler, then
//! IAM, DynamoDB and the bus inspected through the real SDK.

use std::time::Duration;

use grant::Outcome;
use latch_core::grant::StartOutcome;
use latch_tests::{Harness, s};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_start_event_grants_a_self_expiring_policy_records_and_audits_it() {
    let h = Harness::new().await;
    let service = h.grant_service();
    let event = h.event("pipeline-job-started.json", json!({}));
    let event_time = event.payload.time.unwrap();
    let outcome = grant::handle(&service, event).await.unwrap();
    let Outcome::Start(StartOutcome::Activated(id)) = outcome else {
        panic!("{outcome:?}")
    };

    let role = h.role("app-deployer");
    let doc = h
        .role_policy(&role, &id.policy_name())
        .await
        .expect("the policy is on the role");
    let expires = latch_core::iam_time(event_time + chrono::Duration::minutes(15));
    for st in doc["Statement"].as_array().unwrap() {
        assert_eq!(st["Condition"]["DateLessThan"]["aws:CurrentTime"], expires.as_str());
    }

    let grants = h.items("grant").await;
    assert_eq!(grants.len(), 1);
    let ttl: i64 = grants[0]["ttl"].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl, (event_time + chrono::Duration::minutes(15)).timestamp());
    assert_eq!(s(&grants[0], "expiry_bucket").as_deref(), Some("active"));

    let audits = h.items("audit").await;
    assert_eq!(audits.len(), 1);
    assert_eq!(s(&audits[0], "decision").as_deref(), Some("activated"));
    assert!(!audits[0].contains_key("ttl"), "audit items are durable");

    let events = h.audit_events(1, WAIT).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Latch Grant Activated");
    assert_eq!(events[0]["source"], "latch");
    assert_eq!(events[0]["detail"]["grant_id"], id.as_str());
}

#[tokio::test]
async fn a_duplicate_start_changes_nothing() {
    let h = Harness::new().await;
    let service = h.grant_service();
    let event = h.event("pipeline-job-started.json", json!({}));
    let first = grant::handle(&service, event.clone()).await.unwrap();
    let Outcome::Start(StartOutcome::Activated(id)) = first else {
        panic!("{first:?}")
    };
    let role = h.role("app-deployer");
    let before = h.role_policy(&role, &id.policy_name()).await;

    // The same delivery retried, and the job re-announced later with a longer duration.
    assert_eq!(
        grant::handle(&service, event).await.unwrap(),
        Outcome::Start(StartOutcome::AlreadyActive(id.clone()))
    );
    let again = h.event("pipeline-job-started.json", json!({"duration": "20m"}));
    assert_eq!(
        grant::handle(&service, again).await.unwrap(),
        Outcome::Start(StartOutcome::AlreadyActive(id.clone()))
    );

    assert_eq!(h.items("grant").await.len(), 1);
    assert_eq!(h.items("audit").await.len(), 1);
    assert_eq!(h.role_policy_names(&role).await, vec![id.policy_name()]);
    assert_eq!(h.role_policy(&role, &id.policy_name()).await, before, "never extended");
    let events = h.audit_events(3, Duration::from_secs(3)).await;
    let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e["detail"]["audit_id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "one activation, however often re-announced: {events:?}");
}

#[tokio::test]
async fn a_denied_request_writes_nothing_to_iam_and_audits_its_reason() {
    let h = Harness::new().await;
    let service = h.grant_service();
    let event = h.event("pipeline-job-started.json", json!({"permission_set": "db-migrate"}));
    assert_eq!(
        grant::handle(&service, event).await.unwrap(),
        Outcome::Start(StartOutcome::Denied(
            latch_core::grant::DenyReason::PermissionSetNotAllowed
        ))
    );
    assert!(h.role_policy_names(&h.role("app-deployer")).await.is_empty());
    assert!(h.items("grant").await.is_empty());
    let audits = h.items("audit").await;
    assert_eq!(audits.len(), 1);
    assert_eq!(s(&audits[0], "reason").as_deref(), Some("permission_set_not_allowed"));
    let events = h.audit_events(1, WAIT).await;
    assert_eq!(events[0]["detail-type"], "Latch Grant Denied");
    assert_eq!(events[0]["detail"]["reason"], "permission_set_not_allowed");
}

#[tokio::test]
async fn a_denied_request_delivered_again_keeps_one_audit_and_republishes_it_as_stored() {
    let h = Harness::new().await;
    let service = h.grant_service();
    let event = h.event("pipeline-job-started.json", json!({"permission_set": "db-migrate"}));
    grant::handle(&service, event.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later recorded_at, were it rebuilt
    grant::handle(&service, event).await.unwrap();
    let audits = h.items("audit").await;
    assert_eq!(audits.len(), 1);
    let events = h.audit_events(2, WAIT).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e["detail"]["audit_id"].as_str(), s(&audits[0], "audit_id").as_deref());
        assert_eq!(
            e["detail"]["recorded_at"].as_str(),
            s(&audits[0], "recorded_at").as_deref(),
            "the stored record, not a rebuilt one"
        );
    }
}

#[tokio::test]
async fn a_role_outside_the_elevatable_path_is_refused() {
    let h = Harness::new().await;
    let admin = latch_core::model::RoleArn::parse(&format!("arn:aws:iam::123456789012:role/{}-admin", h.id)).unwrap();
    latch_aws::provision::Provisioner::new(&h.sdk)
        .role(&admin)
        .await
        .unwrap();
    let service = h.grant_service();
    let event = h.event("pipeline-job-started.json", json!({"role_arn": admin.as_str()}));
    assert_eq!(
        grant::handle(&service, event).await.unwrap(),
        Outcome::Start(StartOutcome::Denied(latch_core::grant::DenyReason::RoleNotEligible))
    );
    assert!(h.role_policy_names(admin.as_str()).await.is_empty());
    let audits = h.items("audit").await;
    assert_eq!(s(&audits[0], "reason").as_deref(), Some("role_not_eligible"));
    assert_eq!(s(&audits[0], "role_arn").as_deref(), Some(admin.as_str()));
}

#[tokio::test]
async fn a_malformed_event_is_denied_naming_the_field() {
    let h = Harness::new().await;
    let service = h.grant_service();
    let event = h.event("pipeline-job-started.json", json!({"attempt": "first"}));
    assert_eq!(
        grant::handle(&service, event).await.unwrap(),
        Outcome::Start(StartOutcome::Denied(latch_core::grant::DenyReason::MalformedEvent))
    );
    let audits = h.items("audit").await;
    assert!(s(&audits[0], "detail").unwrap().contains("`attempt`"));
}
