//! Revocation on the emulator, through the real SDK: finish events, the TTL stream, the sweep
//! (with an injected clock), drift repair, tombstones, and the stream/sweep race.

use std::time::Duration;

use chrono::Utc;
use grant::Outcome;
use latch_core::grant::{FinishOutcome, StartOutcome};
use latch_core::memory::FixedClock;
use latch_tests::{Harness, Item, s};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

async fn start(h: &Harness, overrides: serde_json::Value) -> latch_core::model::GrantId {
    let outcome = grant::handle(&h.grant_service(), h.event("pipeline-job-started.json", overrides))
        .await
        .unwrap();
    match outcome {
        Outcome::Start(StartOutcome::Activated(id)) => id,
        other => panic!("{other:?}"),
    }
}

fn revoked(audits: &[Item]) -> Vec<&Item> {
    audits
        .iter()
        .filter(|a| s(a, "decision").as_deref() == Some("revoked"))
        .collect()
}

#[tokio::test]
async fn a_finish_event_revokes_the_jobs_grant_at_once() {
    let h = Harness::new().await;
    let id = start(&h, json!({"run_id": "r1"})).await;
    let role = h.role("app-deployer");
    assert!(h.role_policy(&role, &id.policy_name()).await.is_some());

    let finish = h.event(
        "pipeline-job-finished.json",
        json!({"run_id": "r1", "outcome": "cancelled"}),
    );
    let outcome = grant::handle(&h.grant_service(), finish).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Finish(FinishOutcome::Finished {
            revoked: 1,
            already_ended: 0,
            failed: 0
        })
    );
    assert!(h.role_policy_names(&role).await.is_empty());
    let audits = h.items("audit").await;
    let revoked = revoked(&audits);
    assert_eq!(revoked.len(), 1);
    assert_eq!(s(revoked[0], "reason").as_deref(), Some("job_finished"));
    let grant = h.items("grant").await.remove(0);
    assert_eq!(s(&grant, "status").as_deref(), Some("revoked"));
    assert!(!grant.contains_key("expiry_bucket"), "out of the sweep's index");
    let events = h.audit_events(2, WAIT).await;
    assert!(
        events.iter().any(|e| e["detail-type"] == "Latch Grant Revoked"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_finish_before_its_start_refuses_the_late_start() {
    let h = Harness::new().await;
    let finish = h.event("pipeline-job-finished.json", json!({"run_id": "early"}));
    grant::handle(&h.grant_service(), finish).await.unwrap();
    let late = h.event("pipeline-job-started.json", json!({"run_id": "early"}));
    assert_eq!(
        grant::handle(&h.grant_service(), late).await.unwrap(),
        Outcome::Start(StartOutcome::Denied(latch_core::grant::DenyReason::JobFinished))
    );
    assert!(h.role_policy_names(&h.role("app-deployer")).await.is_empty());
    assert!(h.items("grant").await.is_empty());
}

#[tokio::test]
async fn a_ttl_removal_on_the_stream_revokes_the_grant() {
    let h = Harness::new().await;
    let id = start(&h, json!({"run_id": "ttl"})).await;
    h.delete_item(&format!("GRANT#{id}"), "GRANT").await;
    let records = h.stream_records(true).await;
    let removal: Vec<_> = records.into_iter().filter(|r| r.event_name == "REMOVE").collect();
    assert_eq!(removal.len(), 1);
    let mut event = aws_lambda_events::event::dynamodb::Event::default();
    event.records = removal;
    let response = h
        .revoke_function()
        .handle(lambda_runtime::LambdaEvent::new(event, Default::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert!(h.role_policy_names(&h.role("app-deployer")).await.is_empty());
    let audits = h.items("audit").await;
    assert_eq!(revoked(&audits).len(), 1);
    assert_eq!(s(revoked(&audits)[0], "reason").as_deref(), Some("expired_ttl"));
}

#[tokio::test]
async fn a_removal_not_made_by_ttl_is_ignored() {
    let h = Harness::new().await;
    let id = start(&h, json!({"run_id": "manual"})).await;
    h.delete_item(&format!("GRANT#{id}"), "GRANT").await;
    let mut event = aws_lambda_events::event::dynamodb::Event::default();
    event.records = h.stream_records(false).await;
    h.revoke_function()
        .handle(lambda_runtime::LambdaEvent::new(event, Default::default()))
        .await
        .unwrap();
    assert_eq!(
        h.role_policy_names(&h.role("app-deployer")).await,
        vec![id.policy_name()]
    );
}

#[tokio::test]
async fn the_sweep_revokes_expired_grants_and_leaves_live_ones() {
    let h = Harness::new().await;
    let short: Vec<_> = futures_ids(&h, &["s1", "s2", "s3"], "5m").await;
    let live = start(&h, json!({"run_id": "long", "duration": "20m"})).await;
    let role = h.role("app-deployer");
    let sweep = h.sweep_function(
        FixedClock::at(Utc::now() + chrono::Duration::minutes(10)),
        chrono::Duration::minutes(10),
    );
    let report = sweep.sweep(None).await.unwrap();
    assert_eq!((report.revoked, report.revoke_failed), (3, 0), "{report:?}");
    assert_eq!(h.role_policy_names(&role).await, vec![live.policy_name()]);
    let audits = h.items("audit").await;
    let revoked = revoked(&audits);
    assert_eq!(revoked.len(), 3);
    assert!(
        revoked
            .iter()
            .all(|a| s(a, "reason").as_deref() == Some("expired_sweep"))
    );
    for id in short {
        assert!(h.role_policy(&role, &id.policy_name()).await.is_none());
    }
    assert_eq!(
        sweep.sweep(None).await.unwrap().revoked,
        0,
        "a second run has nothing to do"
    );
}

async fn futures_ids(h: &Harness, runs: &[&str], duration: &str) -> Vec<latch_core::model::GrantId> {
    let mut ids = Vec::new();
    for run in runs {
        ids.push(start(h, json!({"run_id": run, "duration": duration})).await);
    }
    ids
}

#[tokio::test]
async fn drift_repair_removes_a_planted_orphan_and_keeps_live_grants() {
    let h = Harness::new().await;
    let live = start(&h, json!({"run_id": "live"})).await;
    let role = h.role("app-deployer");
    let role_name = role.rsplit('/').next().unwrap().to_owned();
    let orphan = "latch-00000000000000000000000000000abc";
    h.iam
        .put_role_policy()
        .role_name(&role_name)
        .policy_name(orphan)
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let sweep = h.sweep_function(FixedClock::at(Utc::now()), chrono::Duration::zero());
    let report = sweep.sweep(None).await.unwrap();
    assert_eq!(report.drift_repaired, 1, "{report:?}");
    assert_eq!(h.role_policy_names(&role).await, vec![live.policy_name()]);
    let audits = h.items("audit").await;
    let repaired: Vec<_> = audits
        .iter()
        .filter(|a| s(a, "decision").as_deref() == Some("drift_repaired"))
        .collect();
    assert_eq!(repaired.len(), 1);
    assert_eq!(s(repaired[0], "policy_name").as_deref(), Some(orphan));
}

#[tokio::test]
async fn drift_repair_waits_out_the_grace_period() {
    let h = Harness::new().await;
    let role = h.role("app-deployer");
    let role_name = role.rsplit('/').next().unwrap().to_owned();
    let orphan = "latch-00000000000000000000000000000def";
    h.iam
        .put_role_policy()
        .role_name(&role_name)
        .policy_name(orphan)
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let clock = FixedClock::at(Utc::now());
    let sweep = h.sweep_function(clock.clone(), chrono::Duration::minutes(10));
    assert_eq!(sweep.sweep(None).await.unwrap().drift_pending, 1);
    assert_eq!(h.role_policy_names(&role).await, vec![orphan.to_owned()]);
    clock.advance(chrono::Duration::minutes(11));
    assert_eq!(sweep.sweep(None).await.unwrap().drift_repaired, 1);
    assert!(h.role_policy_names(&role).await.is_empty());
}

#[tokio::test]
async fn stream_and_sweep_racing_on_one_grant_write_one_revoked_audit() {
    let h = Harness::new().await;
    // Order 1: the sweep read the grant from its index, then TTL deleted it and the stream won.
    let a = start(&h, json!({"run_id": "race-a", "duration": "5m"})).await;
    // Order 2: the sweep won, then TTL deleted the (already revoked) item.
    let b = start(&h, json!({"run_id": "race-b", "duration": "5m"})).await;
    let later = Utc::now() + chrono::Duration::minutes(10);
    let store = &h.clients.store;
    let seen_by_sweep = latch_core::ports::GrantStore::expired_grants(store, later, None, 10)
        .await
        .unwrap();
    let grant_a = seen_by_sweep.iter().find(|g| g.id == a).unwrap().clone();

    h.delete_item(&format!("GRANT#{a}"), "GRANT").await;
    let sweep = h.sweep_function(FixedClock::at(later), chrono::Duration::minutes(10));
    let report = sweep.sweep(None).await.unwrap();
    assert_eq!(report.revoked, 1, "the sweep revokes b; a is no longer in its index");
    h.delete_item(&format!("GRANT#{b}"), "GRANT").await;

    let mut event = aws_lambda_events::event::dynamodb::Event::default();
    event.records = h
        .stream_records(true)
        .await
        .into_iter()
        .filter(|r| r.event_name == "REMOVE")
        .collect();
    assert_eq!(event.records.len(), 2);
    h.revoke_function()
        .handle(lambda_runtime::LambdaEvent::new(event, Default::default()))
        .await
        .unwrap();

    // The sweep's stale view of a, revoked after the stream did: nothing more is written.
    let ports = h.ports(latch_core::ports::SystemClock);
    let revoker = ports.revoker();
    let stale = revoker
        .revoke(
            &grant_a,
            latch_core::revoke::RevokeReason::ExpiredSweep,
            latch_core::ports::RecordState::Present,
        )
        .await
        .unwrap();
    assert_eq!(stale, latch_core::revoke::RevokeOutcome::AlreadyRevoked);

    let audits = h.items("audit").await;
    let revoked = revoked(&audits);
    let per_grant = |id: &latch_core::model::GrantId| {
        revoked
            .iter()
            .filter(|r| s(r, "grant_id").as_deref() == Some(id.as_str()))
            .count()
    };
    assert_eq!((per_grant(&a), per_grant(&b)), (1, 1));
    // Each event is published at least once; a path that finds the revocation recorded
    // publishes the stored record again, so every copy under one audit_id is the same record.
    let events = h.audit_events(5, WAIT).await;
    let mut revoked_events: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["detail-type"] == "Latch Grant Revoked")
        .map(|e| &e["detail"])
        .collect();
    revoked_events.sort_by_key(|d| d["audit_id"].to_string());
    revoked_events.dedup();
    assert_eq!(revoked_events.len(), 2, "one record per grant: {events:?}");
    for d in &revoked_events {
        let recorded = revoked
            .iter()
            .find(|r| s(r, "audit_id").as_deref() == d["audit_id"].as_str());
        assert_eq!(
            recorded.and_then(|r| s(r, "reason")).as_deref(),
            d["reason"].as_str(),
            "the event is the recorded revocation"
        );
    }
}

#[tokio::test]
async fn a_forged_ttl_record_for_a_live_grant_changes_nothing() {
    // GIVEN an active grant, and a TTL REMOVE record for it that DynamoDB never wrote: its
    // OldImage is the live item, its identity the one TTL deletions carry
    let h = Harness::new().await;
    let id = start(&h, json!({"run_id": "forged"})).await;
    let role = h.role("app-deployer");
    let item = h.items("grant").await.remove(0);
    let mut forged = aws_lambda_events::event::dynamodb::EventRecord::default();
    forged.event_id = "forged-1".into();
    forged.event_name = "REMOVE".into();
    forged.event_source = Some("aws:dynamodb".into());
    let mut identity = aws_lambda_events::event::dynamodb::UserIdentity::default();
    identity.type_ = "Service".into();
    identity.principal_id = "dynamodb.amazonaws.com".into();
    forged.user_identity = Some(identity);
    forged.change.sequence_number = Some("1".into());
    forged.change.old_image = serde_dynamo::Item::from(item);
    let mut event = aws_lambda_events::event::dynamodb::Event::default();
    event.records = vec![forged];
    // WHEN the revoke function is invoked with it directly
    let response = h
        .revoke_function()
        .handle(lambda_runtime::LambdaEvent::new(event, Default::default()))
        .await
        .unwrap();
    // THEN the policy stays, the grant stays active, nothing is audited, nothing is retried
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(h.role_policy_names(&role).await, vec![id.policy_name()]);
    let grant = h.items("grant").await.remove(0);
    assert_eq!(s(&grant, "status").as_deref(), Some("active"));
    assert!(revoked(&h.items("audit").await).is_empty());
}
