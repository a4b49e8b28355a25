//! Native CodePipeline / CodeBuild events through the service, from the samples in events/.

use chrono::Duration;
use serde_json::Value;

use super::*;
use crate::memory::Faults;
use crate::model::{AccountId, RoleArn};
use crate::test_fixtures::{MemoryService as Service, memory_service, t0};

fn service() -> Service {
    memory_service(t0() + Duration::seconds(2), &Faults::default())
}

/// The sample's envelope and detail, as the grant function hands them over.
fn sample(text: &str) -> (Envelope, Value) {
    let event: Value = serde_json::from_str(text).unwrap();
    let envelope = Envelope {
        id: event["id"].as_str().unwrap().into(),
        detail_type: event["detail-type"].as_str().unwrap().into(),
        source: event["source"].as_str().unwrap().into(),
        account: AccountId::parse(event["account"].as_str().unwrap()).unwrap(),
        region: event["region"].as_str().unwrap().into(),
        time: event["time"].as_str().unwrap().parse().unwrap(),
    };
    (envelope, event["detail"].clone())
}

async fn handle(s: &Service, text: &str) -> NativeOutcome {
    let (envelope, detail) = sample(text);
    s.on_native(&envelope, &detail, detail.to_string().len()).await.unwrap()
}

const ACTION_STARTED: &str = include_str!("../../../events/codepipeline-action-started.json");
const ACTION_ENDS: [&str; 4] = [
    include_str!("../../../events/codepipeline-action-succeeded.json"),
    include_str!("../../../events/codepipeline-action-failed.json"),
    include_str!("../../../events/codepipeline-action-canceled.json"),
    include_str!("../../../events/codepipeline-action-abandoned.json"),
];
const BUILD_STARTED: &str = include_str!("../../../events/codebuild-build-in-progress.json");
const BUILD_ENDS: [&str; 3] = [
    include_str!("../../../events/codebuild-build-succeeded.json"),
    include_str!("../../../events/codebuild-build-failed.json"),
    include_str!("../../../events/codebuild-build-stopped.json"),
];

fn role(name: &str) -> RoleArn {
    RoleArn::parse(&format!("arn:aws:iam::123456789012:role/latch/{name}")).unwrap()
}

fn ended_at(s: &Service, text: &str) {
    let (envelope, _) = sample(text);
    s.clock.set(envelope.time + Duration::seconds(1));
}

#[tokio::test]
async fn given_a_named_action_when_it_starts_then_the_rule_role_gets_the_grant_and_every_end_revokes_it() {
    for end in ACTION_ENDS {
        let s = service();
        let NativeOutcome::Start(StartOutcome::Activated(id)) = handle(&s, ACTION_STARTED).await else {
            panic!("the STARTED action must be granted")
        };
        let deployer = role("codepipeline-deployer");
        assert!(s.iam.policy(&deployer, &id.policy_name()).is_some());
        let grant = &s.store.grants()[0];
        assert_eq!(grant.rule.as_str(), "codepipeline-release-deploy");
        assert_eq!(grant.source, "aws.codepipeline");
        assert_eq!(
            (
                grant.job.pipeline.as_str(),
                grant.job.run_id.as_str(),
                grant.job.job.as_str()
            ),
            (
                "app-release",
                "3137f7cb-7cf7-4a17-9d57-1a2b3c4d5e6f",
                "Deploy.DeployLambda"
            )
        );
        assert_eq!(grant.expires_at - grant.requested_at, Duration::minutes(15));

        ended_at(&s, end);
        let outcome = handle(&s, end).await;
        assert_eq!(
            outcome,
            NativeOutcome::Finish(FinishOutcome::Finished {
                revoked: 1,
                already_ended: 0,
                failed: 0
            })
        );
        assert_eq!(s.iam.policy_count(), 0);
        let mut decisions: Vec<String> = s.store.audits().iter().map(|a| format!("{:?}", a.decision)).collect();
        decisions.sort();
        assert_eq!(decisions, ["Activated", "Revoked"]);
    }
}

#[tokio::test]
async fn given_a_named_project_when_a_build_runs_then_in_progress_grants_and_each_end_revokes() {
    for end in BUILD_ENDS {
        let s = service();
        let NativeOutcome::Start(StartOutcome::Activated(id)) = handle(&s, BUILD_STARTED).await else {
            panic!("the IN_PROGRESS build must be granted")
        };
        assert!(s.iam.policy(&role("codebuild-app"), &id.policy_name()).is_some());
        assert_eq!(s.store.grants()[0].job.run_id, "8745a7a9-c340-456a-9166-edf953571bef");
        ended_at(&s, end);
        assert!(matches!(
            handle(&s, end).await,
            NativeOutcome::Finish(FinishOutcome::Finished { revoked: 1, .. })
        ));
        assert_eq!(s.iam.policy_count(), 0);
    }
}

#[tokio::test]
async fn given_a_pipeline_no_rule_names_when_its_action_starts_then_it_is_denied_with_the_job_audited() {
    let s = service();
    let other = ACTION_STARTED.replace("\"app-release\"", "\"data-export\"");
    assert_eq!(
        handle(&s, &other).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NoMatchingRule))
    );
    assert_eq!(s.iam.policy_count(), 0);
    let audits = s.store.audits();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].reason, "no_matching_rule");
    assert_eq!(audits[0].pipeline.as_deref(), Some("data-export"));
    assert_eq!(audits[0].job.as_deref(), Some("Deploy.DeployLambda"));
    assert_eq!(s.audit.published(), audits);
}

#[tokio::test]
async fn given_the_end_of_a_job_no_rule_names_when_handled_then_nothing_is_written() {
    let s = service();
    let other = BUILD_ENDS[0].replace("app-build", "docs-build");
    assert_eq!(handle(&s, &other).await, NativeOutcome::NotManaged);
    assert!(s.store.audits().is_empty());
    assert!(s.audit.published().is_empty());
}

#[tokio::test]
async fn given_a_failed_action_when_it_is_retried_in_the_same_execution_then_the_retry_is_denied() {
    let s = service();
    handle(&s, ACTION_STARTED).await;
    ended_at(&s, ACTION_ENDS[1]);
    handle(&s, ACTION_ENDS[1]).await;
    let retry = ACTION_STARTED.replace(
        "0b1c6e44-8d43-4f0e-9a6e-4c5d2f7a1b01",
        "0b1c6e44-8d43-4f0e-9a6e-4c5d2f7a1b99",
    );
    assert_eq!(
        handle(&s, &retry).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::GrantEnded)),
        "the action's grant has ended; its retry must not revive it"
    );
    assert_eq!(s.iam.policy_count(), 0);
    assert_eq!(s.store.grants().len(), 1);
    // The ended grant's own STARTED event delivered again is the same decision: nothing new.
    let audits = s.store.audits().len();
    assert!(matches!(
        handle(&s, ACTION_STARTED).await,
        NativeOutcome::Start(StartOutcome::AlreadyEnded(_))
    ));
    assert_eq!(s.store.audits().len(), audits);
}

#[tokio::test]
async fn given_a_duplicate_started_delivery_when_handled_then_there_is_still_one_grant() {
    let s = service();
    let first = handle(&s, ACTION_STARTED).await;
    let NativeOutcome::Start(StartOutcome::Activated(id)) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        handle(&s, ACTION_STARTED).await,
        NativeOutcome::Start(StartOutcome::AlreadyActive(id))
    );
    assert_eq!(s.store.grants().len(), 1);
    assert_eq!(s.store.audits().len(), 1);
}

#[tokio::test]
async fn given_a_malformed_native_detail_when_handled_then_the_denial_names_the_field() {
    let s = service();
    let bad = ACTION_STARTED.replace("\"STARTED\"", "\"STARTING\"");
    assert_eq!(
        handle(&s, &bad).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::MalformedEvent))
    );
    let audits = s.store.audits();
    assert_eq!(audits.len(), 1);
    assert!(
        audits[0].detail.as_deref().unwrap_or("").contains("`state`"),
        "{:?}",
        audits[0].detail
    );
}
