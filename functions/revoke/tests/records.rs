//! The revoke handler on the stream fixtures in events/, over in-memory ports.

use aws_lambda_events::event::dynamodb::Event;
use chrono::{TimeZone, Utc};
use lambda_runtime::{Context, LambdaEvent};
use latch_core::audit::Decision;
use latch_core::memory::{Faults, FixedClock, MemoryAuditSink, MemoryIam, MemoryStore, Op};
use latch_core::ports::{IamError, Ports};
use revoke::{RecordOutcome, RevokeFunction};

type Function = RevokeFunction<MemoryIam, MemoryStore, MemoryAuditSink, FixedClock>;

fn function() -> Function {
    RevokeFunction {
        ports: Ports::new(
            MemoryIam::default(),
            MemoryStore::default(),
            MemoryAuditSink::default(),
            FixedClock::at(Utc.with_ymd_and_hms(2026, 11, 25, 13, 15, 0).unwrap()),
        ),
    }
}

fn fixture(name: &str) -> Event {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn given_a_ttl_removal_of_an_active_grant_then_it_is_revoked_as_expired_ttl() {
    let f = function();
    let event = fixture("dynamodb-stream-ttl-remove.json");
    assert_eq!(f.on_record(&event.records[0]).await, RecordOutcome::Revoked);
    let audits = f.ports.store.audits();
    assert_eq!(audits.len(), 1);
    assert_eq!(
        (audits[0].decision, audits[0].reason.as_str()),
        (Decision::Revoked, "expired_ttl")
    );
    assert_eq!(audits[0].pipeline.as_deref(), Some("app-release"));
    assert_eq!(f.ports.iam.calls(), (0, 1));
    assert_eq!(f.ports.audit.published().len(), 1);
    // The same record delivered again (a batch retry) writes nothing more; the recorded event
    // goes out again, unchanged (the first attempt may have stopped before publishing it).
    assert_eq!(f.on_record(&event.records[0]).await, RecordOutcome::AlreadyRevoked);
    assert_eq!(f.ports.store.audits(), audits);
    assert_eq!(f.ports.audit.published(), [audits[0].clone(), audits[0].clone()]);
}

#[tokio::test]
async fn given_records_not_made_by_ttl_then_they_are_skipped_untouched() {
    let f = function();
    for name in [
        "dynamodb-stream-user-remove.json",
        "dynamodb-stream-insert.json",
        "dynamodb-stream-modify.json",
    ] {
        let event = fixture(name);
        assert!(
            matches!(f.on_record(&event.records[0]).await, RecordOutcome::Skipped(_)),
            "{name}"
        );
    }
    assert_eq!(f.ports.iam.calls(), (0, 0));
    assert!(f.ports.store.audits().is_empty());
}

#[tokio::test]
async fn given_a_batch_with_a_failing_record_then_only_that_one_is_reported() {
    let f = function();
    let mut event = fixture("dynamodb-stream-ttl-remove.json");
    let mut second = event.records[0].clone();
    second.change.sequence_number = Some("4100000000000000000009".into());
    second.change.old_image.insert(
        "grant_id".into(),
        serde_dynamo::AttributeValue::S("0123456789abcdef0123456789abcdef".into()),
    );
    event.records.push(second);
    let mut not_ttl = fixture("dynamodb-stream-user-remove.json");
    event.records.push(not_ttl.records.remove(0));
    f.ports.iam.fail_next(IamError::Transient("throttled".into()));
    let response = f.handle(LambdaEvent::new(event, Context::default())).await.unwrap();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|b| b.item_identifier.clone())
        .collect();
    assert_eq!(failed, [Some("4100000000000000000001".to_owned())]);
    assert_eq!(
        f.ports.store.audits().len(),
        1,
        "the second grant was revoked despite the first failing"
    );
}

/// The grant a TTL record's OldImage describes, as the table would hold it.
fn grant_of(record: &aws_lambda_events::event::dynamodb::EventRecord) -> latch_core::model::Grant {
    serde_dynamo::from_item::<_, latch_aws::items::GrantItem>(record.change.old_image.clone())
        .unwrap()
        .into_grant()
        .unwrap()
}

#[tokio::test]
async fn given_a_forged_ttl_record_for_a_live_grant_then_nothing_changes_and_one_read_is_made() {
    // GIVEN a live grant the table still holds, and a TTL REMOVE record for it that DynamoDB
    // never wrote (a direct invocation with a fabricated payload)
    let faults = Faults::default();
    let mut f = function();
    f.ports.store = MemoryStore::default().with_faults(&faults);
    let event = fixture("dynamodb-stream-ttl-remove.json");
    let live = grant_of(&event.records[0]);
    f.ports.store.insert_grant(live.clone());
    // WHEN the revoke function is handed the record
    let outcome = f.on_record(&event.records[0]).await;
    // THEN it is not acted on: no IAM call, no audit, no event, the grant stays as it was
    assert!(matches!(outcome, RecordOutcome::Skipped(_)), "{outcome:?}");
    assert_eq!(f.ports.iam.calls(), (0, 0));
    assert!(f.ports.store.audits().is_empty());
    assert!(f.ports.audit.published().is_empty());
    assert_eq!(f.ports.store.grants(), [live]);
    // and the confirmation cost exactly one consistent read
    assert_eq!(faults.calls(Op::GetGrant), 1);
}

#[tokio::test]
async fn given_a_genuine_ttl_record_then_one_read_confirms_it_before_the_revoke() {
    // GIVEN a TTL REMOVE record whose grant item is gone from the table
    let faults = Faults::default();
    let mut f = function();
    f.ports.store = MemoryStore::default().with_faults(&faults);
    let event = fixture("dynamodb-stream-ttl-remove.json");
    // WHEN it is handled
    let outcome = f.on_record(&event.records[0]).await;
    // THEN the grant is revoked after one read
    assert_eq!(outcome, RecordOutcome::Revoked);
    assert_eq!(faults.calls(Op::GetGrant), 1);
    assert_eq!(f.ports.iam.calls(), (0, 1));
}

#[tokio::test]
async fn given_the_confirming_read_fails_transiently_then_the_record_is_retried_untouched() {
    let faults = Faults::default();
    let mut f = function();
    f.ports.store = MemoryStore::default().with_faults(&faults);
    faults.fail_nth(Op::GetGrant, 1);
    let event = fixture("dynamodb-stream-ttl-remove.json");
    assert_eq!(f.on_record(&event.records[0]).await, RecordOutcome::Retry);
    assert_eq!(f.ports.iam.calls(), (0, 0));
    assert!(f.ports.store.audits().is_empty());
}

/// `n` TTL removals of distinct grants, `i % roles` choosing each one's role.
fn batch(n: usize, roles: usize) -> Event {
    let mut event = fixture("dynamodb-stream-ttl-remove.json");
    let template = event.records.remove(0);
    for i in 0..n {
        let mut r = template.clone();
        r.event_id = format!("evt-{i}");
        r.change.sequence_number = Some(format!("42{i:020}"));
        let grant_id = format!("{i:032x}");
        let image = &mut r.change.old_image;
        let s = |v: String| serde_dynamo::AttributeValue::S(v);
        image.insert("grant_id".into(), s(grant_id.clone()));
        image.insert("pk".into(), s(format!("GRANT#{grant_id}")));
        image.insert("policy_name".into(), s(format!("latch-{grant_id}")));
        image.insert(
            "role_arn".into(),
            s(format!("arn:aws:iam::123456789012:role/latch/app-{}", i % roles)),
        );
        event.records.push(r);
    }
    event
}

#[tokio::test]
async fn given_a_batch_over_many_roles_then_records_run_concurrently_within_the_bound() {
    let f = function();
    f.ports.iam.set_delay(std::time::Duration::from_millis(20));
    let event = batch(40, 20);

    let response = f.handle(LambdaEvent::new(event, Context::default())).await.unwrap();

    assert!(response.batch_item_failures.is_empty());
    assert_eq!(f.ports.store.audits().len(), 40);
    let (overall, per_role) = f.ports.iam.max_deletes_in_flight();
    assert!(overall > 1, "the old handler ran one record after another");
    assert!(overall <= revoke::RECORD_CONCURRENCY, "{overall}");
    assert_eq!(per_role, 1, "one role's records one after another");
}

#[tokio::test]
async fn given_slow_iam_when_the_deadline_nears_then_unstarted_records_are_reported_not_timed_out() {
    let f = function();
    f.ports.iam.set_delay(std::time::Duration::from_millis(60));
    // One role: its 10 records go one after another, 60 ms each; 200 ms of time to start them.
    let event = batch(10, 1);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut context = Context::default();
    context.deadline = now_ms + revoke::DEADLINE_MARGIN.as_millis() as u64 + 200;
    let sequences: Vec<_> = event.records.iter().map(|r| r.change.sequence_number.clone()).collect();

    let response = f.handle(LambdaEvent::new(event, context)).await.unwrap();

    let revoked = f.ports.store.audits().len();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|b| b.item_identifier.clone())
        .collect();
    assert!((1..10).contains(&revoked), "{revoked}");
    assert_eq!(failed, sequences[revoked..], "the rest, for Lambda to redeliver");
}

#[test]
fn given_a_batch_error_then_the_diagnostic_names_its_type_and_that_a_retry_helps() {
    let d = lambda_runtime::Diagnostic::from(revoke::RevokeBatchError::NoSequenceNumber { event_id: "e1".into() });
    assert_eq!(d.error_type, "Revoke.NoSequenceNumber.Retryable");
    assert!(d.error_message.contains("e1") && d.error_message.contains("retryable: true"));
}
