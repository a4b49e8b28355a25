//! Adapter tests: the exact AWS calls Latch makes, counted and inspected with aws-smithy-mocks.
//! A mocked client panics on any call no rule matches, so "no other call" is enforced too.

mod mocked;
use mocked::mocked_client;

use aws_sdk_dynamodb::operation::transact_write_items::{TransactWriteItemsError, TransactWriteItemsOutput};
use aws_sdk_dynamodb::types::error::TransactionCanceledException;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_sdk_iam::operation::delete_role_policy::{DeleteRolePolicyError, DeleteRolePolicyOutput};
use aws_sdk_iam::operation::put_role_policy::PutRolePolicyOutput;
use aws_sdk_iam::types::error::NoSuchEntityException;
use aws_smithy_mocks::{Rule, RuleMode, mock};
use chrono::{TimeZone, Utc};
use latch_aws::dynamo::DynamoStore;
use latch_aws::events::EventBridgeSink;
use latch_aws::iam::IamAdapter;
use latch_aws::items::GrantItem;
use latch_core::event::Envelope;
use latch_core::grant::{GrantService, StartOutcome};
use latch_core::memory::FixedClock;
use latch_core::model::{AccountId, RoleArn};
use latch_core::policy::Policy;
use latch_core::ports::{Deletion, IamWriter, Ports, Retryable};
use serde_json::{Value, json};

fn envelope() -> Envelope {
    Envelope {
        id: "e1".into(),
        detail_type: "Pipeline Job Started".into(),
        source: "ci.github".into(),
        account: AccountId::parse("123456789012").unwrap(),
        region: "us-east-1".into(),
        time: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
    }
}

fn detail() -> Value {
    json!({"pipeline": "app-release", "run_id": "7", "job": "deploy", "attempt": 1,
           "role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
           "permission_set": "deploy-artifacts", "duration": "15m", "ref": "refs/heads/main"})
}

/// GetRole for the example's deployer role: IAM's own ARN, its id, the boundary.
fn get_role_ok() -> Rule {
    mock!(aws_sdk_iam::Client::get_role)
        .match_requests(|r| r.role_name() == Some("app-deployer"))
        .then_output(|| {
            aws_sdk_iam::operation::get_role::GetRoleOutput::builder()
                .role(
                    aws_sdk_iam::types::Role::builder()
                        .path("/latch/")
                        .role_name("app-deployer")
                        .role_id("AROAEXAMPLE0000000001")
                        .arn("arn:aws:iam::123456789012:role/latch/app-deployer")
                        .create_date(aws_smithy_types::DateTime::from_secs(0))
                        .permissions_boundary(
                            aws_sdk_iam::types::AttachedPermissionsBoundary::builder()
                                .permissions_boundary_arn("arn:aws:iam::123456789012:policy/latch-boundary")
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
        })
}

/// The role has no inline policies of its own.
fn no_own_policies() -> Rule {
    mock!(aws_sdk_iam::Client::list_role_policies).then_output(|| {
        aws_sdk_iam::operation::list_role_policies::ListRolePoliciesOutput::builder()
            .set_policy_names(Some(vec![]))
            .build()
            .unwrap()
    })
}

fn service(
    iam: &[&Rule],
    ddb: &[&Rule],
    eb: &[&Rule],
) -> GrantService<IamAdapter, DynamoStore, EventBridgeSink, FixedClock> {
    let resolve = [get_role_ok(), no_own_policies()];
    let iam: Vec<&Rule> = iam.iter().copied().chain(resolve.iter()).collect();
    let iam = iam.as_slice();
    let ports = Ports::new(
        IamAdapter::new(mocked_client!(aws_sdk_iam, RuleMode::MatchAny, iam))
            .requiring_boundary(Some("arn:aws:iam::123456789012:policy/latch-boundary".into())),
        DynamoStore::new(
            mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, ddb),
            "latch-grants",
        ),
        EventBridgeSink::new(mocked_client!(aws_sdk_eventbridge, RuleMode::MatchAny, eb), "latch"),
        FixedClock::at(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 1).unwrap()),
    );
    GrantService::new(
        Policy::load(include_str!("../../../events/policy-claimed.yaml"), "policies.yaml").unwrap(),
        ports,
    )
}

fn put_events_ok() -> Rule {
    mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(|r| {
            let e = &r.entries()[0];
            r.entries().len() == 1
                && e.source() == Some("latch")
                && e.event_bus_name() == Some("latch")
                && e.detail_type() == Some("Latch Grant Activated")
                && e.detail().is_some_and(|d| d.contains("\"decision\":\"activated\""))
        })
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build())
}

/// The second transaction of an activation (I8): the grant marked active, only if still live,
/// with its activation audit.
fn confirm_ok() -> Rule {
    mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| {
            let items = r.transact_items();
            items.len() == 2
                && items[0].update().is_some_and(|u| {
                    u.condition_expression() == Some("#status IN (:pending, :active)")
                        && u.update_expression() == "SET #status = :active"
                })
                && items[1].put().is_some_and(|a| {
                    a.item().get("ttl").is_none() && a.item()["decision"] == AttributeValue::S("activated".into())
                })
        })
        .then_output(|| TransactWriteItemsOutput::builder().build())
}

#[tokio::test]
async fn a_fresh_grant_costs_two_transactions_one_put_role_policy_one_put_events_and_no_iam_read() {
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| {
            let items = r.transact_items();
            let Some(grant) = items[0].put() else { return false };
            items.len() == 4
                && grant.table_name() == "latch-grants"
                && grant.condition_expression() == Some("attribute_not_exists(pk)")
                && grant.item().get("ttl").is_some()
                && grant.item()["status"] == AttributeValue::S("pending".into())
                && grant.item().get("expiry_bucket") == Some(&AttributeValue::S("active".into()))
                && items[1].update().is_some_and(|u| {
                    u.key()["sk"] == AttributeValue::S("JOB".into())
                        && u.condition_expression() == Some("attribute_not_exists(#finished)")
                })
                && items[2]
                    .update()
                    .is_some_and(|u| u.condition_expression().is_some_and(|c| c.contains(":cap")))
                && items[3].update().is_some_and(is_rate_window)
        })
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let confirm = confirm_ok();
    let put = mock!(aws_sdk_iam::Client::put_role_policy)
        .match_requests(|r| {
            r.role_name() == Some("app-deployer")
                && r.policy_name()
                    .is_some_and(|n| n.starts_with("latch-") && n.len() == 38)
                && r.policy_document()
                    .is_some_and(|d| d.contains("\"aws:CurrentTime\":\"2026-11-25T12:15:00Z\""))
        })
        .then_output(|| PutRolePolicyOutput::builder().build());
    let events = put_events_ok();
    let s = service(&[&put], &[&twi, &confirm], &[&events]);
    let d = detail();
    let outcome = s.on_start(&envelope(), &d, d.to_string().len()).await.unwrap();
    assert!(matches!(outcome, StartOutcome::Activated(_)), "{outcome:?}");
    assert_eq!(
        (
            twi.num_calls(),
            put.num_calls(),
            confirm.num_calls(),
            events.num_calls()
        ),
        (1, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_role_is_resolved_once_per_warm_container_and_its_own_policies_shrink_the_budget() {
    let get_role = get_role_ok();
    let own = mock!(aws_sdk_iam::Client::list_role_policies).then_output(|| {
        aws_sdk_iam::operation::list_role_policies::ListRolePoliciesOutput::builder()
            .set_policy_names(Some(vec![
                "team-own".into(),
                "latch-0123456789abcdef0123456789abcdef".into(),
            ]))
            .build()
            .unwrap()
    });
    // Only the team's own policy is read back (URL-encoded, as IAM returns it): about 9,000
    // characters, which leaves Latch about 1,240.
    let big = format!(
        "{{\"Version\":\"2012-10-17\",\"Statement\":[{{\"Sid\":\"{}\"}}]}}",
        "x".repeat(8_960)
    );
    let get_policy = mock!(aws_sdk_iam::Client::get_role_policy)
        .match_requests(|r| r.policy_name() == Some("team-own"))
        .then_output(move || {
            aws_sdk_iam::operation::get_role_policy::GetRolePolicyOutput::builder()
                .role_name("app-deployer")
                .policy_name("team-own")
                .policy_document(big.replace('{', "%7B").replace('}', "%7D"))
                .build()
                .unwrap()
        });
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| {
            // The counter's condition carries the room left: 10,240 - own - this document.
            r.transact_items().len() == 4
                && r.transact_items()[2].update().is_some_and(|u| {
                    u.expression_attribute_values()
                        .and_then(|v| v.get(":room"))
                        .and_then(|room| room.as_n().ok())
                        .and_then(|room| room.parse::<usize>().ok())
                        .is_some_and(|room| room > 0 && room < 10_240 - 9_000)
                })
        })
        .then_error(|| {
            let mut b = TransactionCanceledException::builder();
            for i in 0..3 {
                let code = if i == 2 { "ConditionalCheckFailed" } else { "None" };
                b = b.cancellation_reasons(CancellationReason::builder().code(code).build());
            }
            TransactWriteItemsError::TransactionCanceledException(b.build())
        });
    let denial_audit = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.item().and_then(|i| i.get("reason")) == Some(&AttributeValue::S("role_policy_quota".into()))
        })
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let events = mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(|r| r.entries()[0].detail_type() == Some("Latch Grant Denied"))
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let iam = [&get_role, &own, &get_policy];
    let mut s = service(&[], &[&twi, &denial_audit], &[&events]);
    s.ports.iam = IamAdapter::new(mocked_client!(aws_sdk_iam, RuleMode::MatchAny, &iam));
    for run in ["7", "8"] {
        let mut d = detail();
        d["run_id"] = json!(run);
        let outcome = s.on_start(&envelope(), &d, 300).await.unwrap();
        assert!(
            matches!(outcome, StartOutcome::Denied(r) if r.code() == "role_policy_quota"),
            "{outcome:?}"
        );
    }
    assert_eq!(
        (get_role.num_calls(), own.num_calls(), get_policy.num_calls()),
        (1, 1, 1),
        "cached"
    );
    assert_eq!(s.ports.iam.resolutions(), 1);
}

#[tokio::test]
async fn a_role_without_the_boundary_is_refused_before_anything_is_written() {
    let no_boundary = mock!(aws_sdk_iam::Client::get_role).then_output(|| {
        aws_sdk_iam::operation::get_role::GetRoleOutput::builder()
            .role(
                aws_sdk_iam::types::Role::builder()
                    .path("/latch/")
                    .role_name("app-deployer")
                    .role_id("AROAEXAMPLE0000000002")
                    .arn("arn:aws:iam::123456789012:role/latch/app-deployer")
                    .create_date(aws_smithy_types::DateTime::from_secs(0))
                    .build()
                    .unwrap(),
            )
            .build()
    });
    let own = no_own_policies();
    let denial_audit = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.item().and_then(|i| i.get("reason")) == Some(&AttributeValue::S("role_without_boundary".into()))
        })
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let events = mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(|r| r.entries()[0].detail_type() == Some("Latch Grant Denied"))
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let iam = [&no_boundary, &own];
    let mut s = service(&[], &[&denial_audit], &[&events]);
    s.ports.iam = IamAdapter::new(mocked_client!(aws_sdk_iam, RuleMode::MatchAny, &iam))
        .requiring_boundary(Some("arn:aws:iam::123456789012:policy/latch-boundary".into()));
    let outcome = s.on_start(&envelope(), &detail(), 300).await.unwrap();
    assert!(
        matches!(outcome, StartOutcome::Denied(r) if r.code() == "role_without_boundary"),
        "{outcome:?}"
    );
    assert_eq!(denial_audit.num_calls(), 1);
}

#[tokio::test]
async fn an_iam_refusal_fails_the_grant_frees_its_slot_and_is_audited_never_activated() {
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| r.transact_items().len() == 4 && r.transact_items()[0].put().is_some())
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let fail = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| {
            let items = r.transact_items();
            items.len() == 3
                && items[0].update().is_some_and(|u| {
                    u.condition_expression() == Some("#status = :pending")
                        && u.update_expression() == "SET #status = :failed REMOVE #bucket"
                })
                && items[1].put().is_some_and(|a| {
                    a.item()["decision"] == AttributeValue::S("denied".into())
                        && a.item()["reason"] == AttributeValue::S("iam_rejected".into())
                })
                && items[2].update().is_some_and(|u| {
                    u.expression_attribute_values()
                        .is_some_and(|v| v[":delta"] == AttributeValue::N("-1".into()))
                })
        })
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let put = mock!(aws_sdk_iam::Client::put_role_policy).then_error(|| {
        aws_sdk_iam::operation::put_role_policy::PutRolePolicyError::LimitExceededException(
            aws_sdk_iam::types::error::LimitExceededException::builder()
                .message("Maximum policy size of 10240 bytes exceeded")
                .build(),
        )
    });
    let events = mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(|r| r.entries()[0].detail_type() == Some("Latch Grant Denied"))
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let s = service(&[&put], &[&twi, &fail], &[&events]);
    let d = detail();
    let outcome = s.on_start(&envelope(), &d, d.to_string().len()).await.unwrap();
    assert!(
        matches!(outcome, StartOutcome::Denied(r) if r.code() == "iam_rejected"),
        "{outcome:?}"
    );
    assert_eq!(
        (twi.num_calls(), put.num_calls(), fail.num_calls(), events.num_calls()),
        (1, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_duplicate_reads_the_old_grant_from_the_cancellation_and_does_not_extend_it() {
    // The recorded grant and its activation, as the first delivery wrote them.
    let (recorded, activation) = recorded_grant_and_activation().await;
    let old_item: std::collections::HashMap<String, AttributeValue> =
        serde_dynamo::to_item(GrantItem::from_grant(&recorded)).unwrap();
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| r.transact_items().len() == 4)
        .then_error(move || {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .set_item(Some(old_item.clone()))
                            .build(),
                    )
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .build(),
            )
        });
    let stored_audit: std::collections::HashMap<String, AttributeValue> =
        serde_dynamo::to_item(latch_aws::items::AuditItem::from_record(&activation)).unwrap();
    let confirmed_before = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| r.transact_items().len() == 2)
        .then_error(move || {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .set_item(Some(stored_audit.clone()))
                            .build(),
                    )
                    .build(),
            )
        });
    let put = mock!(aws_sdk_iam::Client::put_role_policy)
        .match_requests(|r| r.policy_document().is_some_and(|d| d.contains("2026-11-25T12:15:00Z")))
        .then_output(|| PutRolePolicyOutput::builder().build());
    let events = put_events_ok();
    let s = service(&[&put], &[&twi, &confirmed_before], &[&events]);
    let mut later = envelope();
    later.time += chrono::Duration::minutes(3);
    let mut longer = detail();
    longer["duration"] = json!("20m");
    let outcome = s.on_start(&later, &longer, 300).await.unwrap();
    assert!(matches!(outcome, StartOutcome::AlreadyActive(_)), "{outcome:?}");
    assert_eq!(
        (
            twi.num_calls(),
            put.num_calls(),
            confirmed_before.num_calls(),
            events.num_calls()
        ),
        (1, 1, 1, 1)
    );
}

#[tokio::test]
async fn cancellation_reasons_map_to_tombstone_and_cap() {
    for (index, want) in [(1, "job_finished"), (2, "concurrency_cap")] {
        let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(move || {
            let mut b = TransactionCanceledException::builder();
            for i in 0..3 {
                let code = if i == index { "ConditionalCheckFailed" } else { "None" };
                // The counter as it was (ALL_OLD): at the example rule's cap of 10.
                let old = (i == 2).then(|| {
                    std::collections::HashMap::from([("active_grants".to_owned(), AttributeValue::N("10".into()))])
                });
                b = b.cancellation_reasons(CancellationReason::builder().code(code).set_item(old).build());
            }
            TransactWriteItemsError::TransactionCanceledException(b.build())
        });
        let denial_audit = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(move |r| r.item().and_then(|i| i.get("reason")) == Some(&AttributeValue::S(want.into())))
            .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
        let events = mock!(aws_sdk_eventbridge::Client::put_events)
            .match_requests(|r| r.entries()[0].detail_type() == Some("Latch Grant Denied"))
            .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
        let s = service(&[], &[&twi, &denial_audit], &[&events]);
        let outcome = s.on_start(&envelope(), &detail(), 300).await.unwrap();
        assert!(
            matches!(outcome, StartOutcome::Denied(r) if r.code() == want),
            "{outcome:?}"
        );
        assert_eq!(
            (twi.num_calls(), denial_audit.num_calls(), events.num_calls()),
            (1, 1, 1)
        );
    }
}

#[tokio::test]
async fn a_put_events_partial_failure_is_a_retryable_error() {
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let put = mock!(aws_sdk_iam::Client::put_role_policy).then_output(|| PutRolePolicyOutput::builder().build());
    let events = mock!(aws_sdk_eventbridge::Client::put_events).then_output(|| {
        PutEventsOutput::builder()
            .failed_entry_count(1)
            .entries(
                PutEventsResultEntry::builder()
                    .error_code("InternalFailure")
                    .error_message("try again")
                    .build(),
            )
            .build()
    });
    let s = service(&[&put], &[&twi], &[&events]);
    let err = s.on_start(&envelope(), &detail(), 300).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("InternalFailure"), "{err}");
}

#[tokio::test]
async fn deleting_a_policy_that_is_gone_is_success() {
    let gone = mock!(aws_sdk_iam::Client::delete_role_policy)
        .then_error(|| DeleteRolePolicyError::NoSuchEntityException(NoSuchEntityException::builder().build()));
    let iam = IamAdapter::new(mocked_client!(aws_sdk_iam, RuleMode::Sequential, [&gone]));
    let role = RoleArn::parse("arn:aws:iam::123456789012:role/latch/app-deployer").unwrap();
    assert_eq!(
        iam.delete_role_policy(&role, "latch-x").await,
        Ok(Deletion::AlreadyGone)
    );
    let ok = mock!(aws_sdk_iam::Client::delete_role_policy)
        .match_requests(|r| r.role_name() == Some("app-deployer") && r.policy_name() == Some("latch-x"))
        .then_output(|| DeleteRolePolicyOutput::builder().build());
    let iam = IamAdapter::new(mocked_client!(aws_sdk_iam, RuleMode::Sequential, [&ok]));
    assert_eq!(iam.delete_role_policy(&role, "latch-x").await, Ok(Deletion::Deleted));
}

/// A grant as the in-memory service records it for the test's start event, with its
/// activation record.
async fn recorded_grant_and_activation() -> (latch_core::model::Grant, latch_core::audit::AuditRecord) {
    let s0 = service(&[], &[], &[]);
    let memory = GrantService::new(
        s0.policy.clone(),
        Ports::new(
            latch_core::memory::MemoryIam::default(),
            latch_core::memory::MemoryStore::default(),
            latch_core::memory::MemoryAuditSink::default(),
            s0.ports.clock.clone(),
        ),
    );
    memory.on_start(&envelope(), &detail(), 300).await.unwrap();
    let activation = memory
        .ports
        .store
        .audits()
        .into_iter()
        .find(|a| a.decision == latch_core::audit::Decision::Activated)
        .unwrap();
    (memory.ports.store.grants().remove(0), activation)
}

async fn recorded_grant() -> latch_core::model::Grant {
    recorded_grant_and_activation().await.0
}

#[tokio::test]
async fn a_revoke_costs_one_delete_role_policy_one_transaction_one_put_events() {
    let grant = recorded_grant().await;
    let policy_name = grant.id.policy_name();
    let delete = mock!(aws_sdk_iam::Client::delete_role_policy)
        .match_requests(move |r| r.role_name() == Some("app-deployer") && r.policy_name() == Some(policy_name.as_str()))
        .then_output(|| DeleteRolePolicyOutput::builder().build());
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| {
            let items = r.transact_items();
            items.len() == 3
                && items[0]
                    .update()
                    .is_some_and(|u| u.condition_expression() == Some("#status IN (:active, :pending)"))
                && items[1]
                    .put()
                    .is_some_and(|p| p.item()["decision"] == AttributeValue::S("revoked".into()))
                && items[2].update().is_some_and(|u| {
                    u.expression_attribute_values()
                        .is_some_and(|v| v[":delta"] == AttributeValue::N("-1".into()))
                })
        })
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let events = mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(|r| r.entries()[0].detail_type() == Some("Latch Grant Revoked"))
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let s = service(&[&delete], &[&twi], &[&events]);
    let outcome = s
        .revoker()
        .revoke(
            &grant,
            latch_core::revoke::RevokeReason::ExpiredSweep,
            latch_core::ports::RecordState::Present,
        )
        .await;
    assert_eq!(outcome.unwrap(), latch_core::revoke::RevokeOutcome::Revoked);
    assert_eq!((delete.num_calls(), twi.num_calls(), events.num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn a_revoke_that_lost_the_race_publishes_nothing() {
    let grant = recorded_grant().await;
    let delete = mock!(aws_sdk_iam::Client::delete_role_policy)
        .then_error(|| DeleteRolePolicyError::NoSuchEntityException(NoSuchEntityException::builder().build()));
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(|| {
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .cancellation_reasons(CancellationReason::builder().code("ConditionalCheckFailed").build())
                .cancellation_reasons(CancellationReason::builder().code("ConditionalCheckFailed").build())
                .cancellation_reasons(CancellationReason::builder().code("None").build())
                .build(),
        )
    });
    let s = service(&[&delete], &[&twi], &[]);
    let outcome = s
        .revoker()
        .revoke(
            &grant,
            latch_core::revoke::RevokeReason::ExpiredTtl,
            latch_core::ports::RecordState::Present,
        )
        .await;
    assert_eq!(outcome.unwrap(), latch_core::revoke::RevokeOutcome::AlreadyRevoked);
    assert_eq!((delete.num_calls(), twi.num_calls()), (1, 1));
}

/// The shipped example with the `github` issuer's keys pinned to `signer`.
fn verified_service(
    signer: &latch_core::identity::testing::TestSigner,
    iam: &[&Rule],
    ddb: &[&Rule],
    eb: &[&Rule],
) -> GrantService<IamAdapter, DynamoStore, EventBridgeSink, FixedClock> {
    let jwks = json!({"keys": [signer.public_jwk()]});
    let text = include_str!("../../../infra/policies.yaml").replace(
        "    max_token_age: 10m\n\n  - name: gitlab",
        &format!("    max_token_age: 10m\n    keys: {jwks}\n\n  - name: gitlab"),
    );
    GrantService {
        policy: Policy::load(&text, "policies.yaml").unwrap(),
        ..service(iam, ddb, eb)
    }
}

/// A start of run 7 with GitHub's token for it.
fn verified_detail(signer: &latch_core::identity::testing::TestSigner) -> Value {
    use latch_core::identity::{AudienceBinding, Presented, request_audience};
    use latch_core::model::{GrantDuration, Name};
    let role = RoleArn::parse("arn:aws:iam::123456789012:role/latch/app-deployer").unwrap();
    let aud = request_audience(
        "latch",
        Presented::Start(AudienceBinding {
            account: &AccountId::parse("123456789012").unwrap(),
            role: &role,
            permission_set: &Name::parse("deploy-artifacts").unwrap(),
            duration: GrantDuration::parse("15m").unwrap(),
        }),
    );
    let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap().timestamp();
    let token = signer
        .sign(&json!({
            "iss": "https://token.actions.githubusercontent.com", "aud": aud, "sub": "repo:example-org/app-release",
            "jti": "jti-7", "iat": now, "exp": now + 300, "repository": "example-org/app-release",
            "repository_id": "42", "run_id": "7", "run_attempt": "1", "ref": "refs/heads/main",
        }))
        .unwrap();
    let mut d = detail();
    d["token"] = json!(token);
    d
}

#[tokio::test]
async fn a_verified_grant_records_its_token_use_in_the_same_transaction_and_costs_no_more_calls() {
    let signer =
        latch_core::identity::testing::TestSigner::generate(latch_core::identity::TokenAlgorithm::Rs256, "k1").unwrap();
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| {
            let items = r.transact_items();
            items.len() == 5
                && items[4].put().is_some_and(|t| {
                    t.item()["sk"] == AttributeValue::S("TOKEN".into())
                        && t.item()["pk"]
                            .as_s()
                            .is_ok_and(|pk| pk.starts_with("TOKEN#") && !pk.contains("jti-7"))
                        && t.item().get("job_scope").is_some()
                        && t.item()["ttl"] == AttributeValue::N("1795608300".into())
                        && t.condition_expression() == Some("attribute_not_exists(pk) OR #scope = :scope")
                })
                && items[0].put().is_some_and(|g| g.item().get("principal").is_some())
        })
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let confirm = confirm_ok();
    let put = mock!(aws_sdk_iam::Client::put_role_policy).then_output(|| PutRolePolicyOutput::builder().build());
    let events = put_events_ok();
    let s = verified_service(&signer, &[&put], &[&twi, &confirm], &[&events]);
    let d = verified_detail(&signer);
    let outcome = s.on_start(&envelope(), &d, d.to_string().len()).await.unwrap();
    assert!(matches!(outcome, StartOutcome::Activated(_)), "{outcome:?}");
    assert_eq!(
        (
            twi.num_calls(),
            put.num_calls(),
            confirm.num_calls(),
            events.num_calls()
        ),
        (1, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_token_use_refused_by_the_table_is_a_replay() {
    let signer =
        latch_core::identity::testing::TestSigner::generate(latch_core::identity::TokenAlgorithm::Rs256, "k1").unwrap();
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(|| {
        let mut b = TransactionCanceledException::builder();
        for i in 0..5 {
            let code = if i == 4 { "ConditionalCheckFailed" } else { "None" };
            b = b.cancellation_reasons(CancellationReason::builder().code(code).build());
        }
        TransactWriteItemsError::TransactionCanceledException(b.build())
    });
    let denial_audit = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.item().and_then(|i| i.get("reason")) == Some(&AttributeValue::S("token_replayed".into()))
                && r.item().and_then(|i| i.get("issuer")) == Some(&AttributeValue::S("github".into()))
        })
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let events = mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(|r| r.entries()[0].detail_type() == Some("Latch Grant Denied"))
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let s = verified_service(&signer, &[], &[&twi, &denial_audit], &[&events]);
    let d = verified_detail(&signer);
    let outcome = s.on_start(&envelope(), &d, d.to_string().len()).await.unwrap();
    assert!(
        matches!(outcome, StartOutcome::Denied(r) if r.code() == "token_replayed"),
        "{outcome:?}"
    );
    assert_eq!(
        (twi.num_calls(), denial_audit.num_calls(), events.num_calls()),
        (1, 1, 1)
    );
}

// Conflicts are transient: retried in process, never a refusal.

/// IAM's answer to a write on a role another write is changing, as it comes over the wire.
fn concurrent_modification_body() -> String {
    "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type>\
     <Code>ConcurrentModification</Code><Message>Cannot perform the operation on the role app-deployer \
     because another operation is in progress</Message></Error><RequestId>r1</RequestId></ErrorResponse>"
        .to_owned()
}

/// A transaction cancelled with these reason codes, one per item.
fn cancelled(codes: &[&str]) -> TransactWriteItemsError {
    let mut e = TransactionCanceledException::builder().message(format!(
        "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
        codes.join(", ")
    ));
    for code in codes {
        e = e.cancellation_reasons(CancellationReason::builder().code(*code).build());
    }
    TransactWriteItemsError::TransactionCanceledException(e.build())
}

#[tokio::test]
async fn a_concurrent_modification_twice_then_success_is_one_activation_after_three_put_role_policy_calls() {
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| r.transact_items().len() == 4)
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let confirm = confirm_ok();
    let put = mock!(aws_sdk_iam::Client::put_role_policy)
        .sequence()
        .http_status(409, Some(concurrent_modification_body()))
        .times(2)
        .output(|| PutRolePolicyOutput::builder().build())
        .build();
    let events = put_events_ok();
    let s = service(&[&put], &[&twi, &confirm], &[&events]);
    let d = detail();
    let outcome = s.on_start(&envelope(), &d, d.to_string().len()).await.unwrap();
    assert!(matches!(outcome, StartOutcome::Activated(_)), "{outcome:?}");
    assert_eq!(
        (
            put.num_calls(),
            twi.num_calls(),
            confirm.num_calls(),
            events.num_calls()
        ),
        (3, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_concurrent_modification_that_outlasts_the_budget_is_transient_not_a_refusal() {
    let role = RoleArn::parse("arn:aws:iam::123456789012:role/latch/app-deployer").unwrap();
    let busy = mock!(aws_sdk_iam::Client::delete_role_policy)
        .sequence()
        .http_status(409, Some(concurrent_modification_body()))
        .repeatedly()
        .build();
    let short = latch_aws::ConflictRetry {
        base: std::time::Duration::from_millis(1),
        cap: std::time::Duration::from_millis(5),
        budget: std::time::Duration::from_millis(50),
    };
    let iam = IamAdapter::new(mocked_client!(aws_sdk_iam, RuleMode::Sequential, [&busy])).with_conflict_retry(short);
    let err = iam.delete_role_policy(&role, "latch-x").await.unwrap_err();
    assert!(
        matches!(&err, latch_core::ports::IamError::Transient(m) if m.contains("ConcurrentModification")),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(busy.num_calls() > 1, "retried in process first");
    // With no retries at all, the same answer is still transient.
    let once = mock!(aws_sdk_iam::Client::delete_role_policy)
        .sequence()
        .http_status(409, Some(concurrent_modification_body()))
        .repeatedly()
        .build();
    let iam = IamAdapter::new(mocked_client!(aws_sdk_iam, RuleMode::Sequential, [&once]))
        .with_conflict_retry(latch_aws::ConflictRetry::never());
    assert!(
        iam.delete_role_policy(&role, "latch-x")
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert_eq!(once.num_calls(), 1);
}

#[tokio::test]
async fn transaction_conflicts_on_both_activation_transactions_are_retried_then_activate() {
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| r.transact_items().len() == 4)
        .sequence()
        .error(|| cancelled(&["None", "None", "TransactionConflict"]))
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let confirm = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| r.transact_items().len() == 2)
        .sequence()
        .error(|| cancelled(&["TransactionConflict", "None"]))
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let put = mock!(aws_sdk_iam::Client::put_role_policy).then_output(|| PutRolePolicyOutput::builder().build());
    let events = put_events_ok();
    let s = service(&[&put], &[&twi, &confirm], &[&events]);
    let d = detail();
    let outcome = s.on_start(&envelope(), &d, d.to_string().len()).await.unwrap();
    assert!(matches!(outcome, StartOutcome::Activated(_)), "{outcome:?}");
    assert_eq!(
        (
            twi.num_calls(),
            put.num_calls(),
            confirm.num_calls(),
            events.num_calls()
        ),
        (2, 1, 2, 1)
    );
}

#[tokio::test]
async fn a_validation_error_cancellation_is_denied_store_rejected_without_a_retry() {
    // A conflict beside it does not make it retryable: the request itself is refused.
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(|r| r.transact_items().len() == 4)
        .then_error(|| cancelled(&["ValidationError", "TransactionConflict", "None"]));
    let denial_audit = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.item().is_some_and(|i| {
                i["decision"] == AttributeValue::S("denied".into())
                    && i["reason"] == AttributeValue::S("store_rejected".into())
            })
        })
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let events = mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(|r| {
            r.entries()[0].detail_type() == Some("Latch Grant Denied")
                && r.entries()[0]
                    .detail()
                    .is_some_and(|d| d.contains("\"reason\":\"store_rejected\""))
        })
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    // No IAM rule: a PutRolePolicy would panic.
    let s = service(&[], &[&twi, &denial_audit], &[&events]);
    let d = detail();
    let outcome = s.on_start(&envelope(), &d, d.to_string().len()).await.unwrap();
    assert!(
        matches!(outcome, StartOutcome::Denied(r) if r.code() == "store_rejected"),
        "{outcome:?}"
    );
    assert_eq!(
        (twi.num_calls(), denial_audit.num_calls(), events.num_calls()),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_single_write_answered_transaction_conflict_is_retried() {
    let audit = latch_core::audit::AuditRecord::new(
        "a1".into(),
        latch_core::audit::Decision::Denied,
        "malformed_event",
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
    );
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .sequence()
        .error(|| {
            aws_sdk_dynamodb::operation::put_item::PutItemError::TransactionConflictException(
                aws_sdk_dynamodb::types::error::TransactionConflictException::builder()
                    .message("Transaction is ongoing for the item")
                    .build(),
            )
        })
        .output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build())
        .build();
    let store = DynamoStore::new(
        mocked_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&put]),
        "latch-grants",
    );
    use latch_core::ports::GrantStore;
    assert_eq!(
        store.record_audit(&audit).await,
        Ok(latch_core::ports::AuditWrite::Recorded)
    );
    assert_eq!(put.num_calls(), 2);
}

/// The publisher's minute in the activation's transaction: `ci.github` in the example account
/// (claimed identity), the minute of 12:00:01, the default limit, a TTL past the minute.
fn is_rate_window(u: &aws_sdk_dynamodb::types::Update) -> bool {
    let minute = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
    let pk = latch_aws::items::rate_window_pk("123456789012#ci.github", minute);
    let values = u.expression_attribute_values().cloned().unwrap_or_default();
    u.key()["pk"] == AttributeValue::S(pk)
        && u.key()["sk"] == AttributeValue::S("WINDOW".into())
        && u.condition_expression() == Some("attribute_not_exists(#grants) OR #grants < :limit")
        && u.update_expression() == "SET #type = :type, #publisher = :publisher, #ttl = :ttl ADD #grants :one"
        && values.get(":limit") == Some(&AttributeValue::N("120".into()))
        && values.get(":one") == Some(&AttributeValue::N("1".into()))
        && values.get(":ttl") == Some(&AttributeValue::N((minute.timestamp() + 120).to_string()))
}

#[tokio::test]
async fn a_publisher_over_its_minute_is_denied_once_audited_and_published_then_only_refused() {
    // The transaction is cancelled on the rate window (position 3) for every start.
    let twi = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(|| {
        let mut b = TransactionCanceledException::builder();
        for i in 0..4 {
            let code = if i == 3 { "ConditionalCheckFailed" } else { "None" };
            b = b.cancellation_reasons(CancellationReason::builder().code(code).build());
        }
        TransactWriteItemsError::TransactionCanceledException(b.build())
    });
    // One audit id for the publisher's minute, whichever event is refused.
    let minute = Utc
        .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
        .unwrap()
        .timestamp()
        .to_string();
    let audit_id = latch_core::model::digest(&["123456789012#ci.github", &minute, "rate-limited"]);
    let audit_of = move |r: &aws_sdk_dynamodb::operation::put_item::PutItemInput| {
        r.item().and_then(|i| i.get("reason")) == Some(&AttributeValue::S("rate_limited".into()))
            && r.item().and_then(|i| i.get("pk")) == Some(&AttributeValue::S(format!("AUDIT#{audit_id}")))
            && r.condition_expression() == Some("attribute_not_exists(pk)")
    };
    let first_audit = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(audit_of.clone())
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let events = mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(|r| r.entries()[0].detail().is_some_and(|d| d.contains("rate_limited")))
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let s = service(&[], &[&twi, &first_audit], &[&events]);
    let outcome = s.on_start(&envelope(), &detail(), 300).await.unwrap();
    assert_eq!(
        outcome,
        StartOutcome::Denied(latch_core::grant::DenyReason::RateLimited)
    );

    // A later event of the same publisher in the same minute: the same audit id, which exists.
    let exists = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(audit_of)
        .then_error(|| {
            aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder().build(),
            )
        });
    let read_back = mock!(aws_sdk_dynamodb::Client::get_item)
        .then_output(|| aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build());
    let s2 = service(&[], &[&twi, &exists, &read_back], &[]);
    let mut later = envelope();
    later.id = "e2".into();
    let mut d = detail();
    d["run_id"] = json!("8");
    assert_eq!(
        s2.on_start(&later, &d, 300).await.unwrap(),
        StartOutcome::Denied(latch_core::grant::DenyReason::RateLimited)
    );
    assert_eq!(
        (
            twi.num_calls(),
            first_audit.num_calls(),
            events.num_calls(),
            exists.num_calls()
        ),
        (2, 1, 1, 1),
        "one audit and one event for the minute; the second refusal publishes nothing"
    );
}
