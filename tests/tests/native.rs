//! Native CodePipeline and CodeBuild events on the emulator: the samples in events/ through the
//! grant function's handler, IAM and DynamoDB inspected through the real SDK.

use grant::Outcome;
use latch_core::decision::DenyReason;
use latch_core::service::{FinishOutcome, StartOutcome};
use latch_tests::{Harness, s};
use serde_json::json;

async fn latch_policies(h: &Harness, role: &str) -> Vec<String> {
    let names = h.role_policy_names(role).await;
    names.into_iter().filter(|n| n.starts_with("latch-")).collect()
}

/// STARTED grants the rule's role; the end event (whichever) revokes it at once.
async fn start_then_end(start_fixture: &str, end_fixture: &str, role_name: &str) {
    let h = Harness::new().await;
    let service = h.grant_service();
    let role = h.role(role_name);

    let outcome = grant::handle(&service, h.event(start_fixture, json!({})))
        .await
        .unwrap();
    let Outcome::Start(StartOutcome::Activated(id)) = outcome else {
        panic!("{start_fixture}: {outcome:?}")
    };
    let doc = h
        .role_policy(&role, &id.policy_name())
        .await
        .expect("the policy is on the rule's role");
    assert!(doc["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"].is_string());

    let outcome = grant::handle(&service, h.event(end_fixture, json!({}))).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Finish(FinishOutcome::Finished {
            revoked: 1,
            already_ended: 0,
            failed: 0
        }),
        "{end_fixture}"
    );
    assert!(latch_policies(&h, &role).await.is_empty(), "{end_fixture} must revoke");
    let mut decisions: Vec<String> = h.items("audit").await.iter().filter_map(|a| s(a, "decision")).collect();
    decisions.sort();
    assert_eq!(decisions, ["activated", "revoked"]);
}

#[tokio::test]
async fn a_codepipeline_action_is_elevated_when_it_starts_and_revoked_when_it_fails() {
    start_then_end(
        "codepipeline-action-started.json",
        "codepipeline-action-failed.json",
        "codepipeline-deployer",
    )
    .await;
}

#[tokio::test]
async fn a_codebuild_build_is_elevated_while_in_progress_and_revoked_when_stopped() {
    start_then_end(
        "codebuild-build-in-progress.json",
        "codebuild-build-stopped.json",
        "codebuild-app",
    )
    .await;
}

#[tokio::test]
async fn an_action_of_a_pipeline_no_rule_names_is_denied_and_nothing_reaches_iam() {
    let h = Harness::new().await;
    let service = h.grant_service();
    let event = h.event("codepipeline-action-started.json", json!({"pipeline": "data-export"}));
    let outcome = grant::handle(&service, event).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Start(StartOutcome::Denied(DenyReason::NoMatchingRule))
    );
    for role in ["codepipeline-deployer", "codebuild-app", "app-deployer"] {
        assert!(latch_policies(&h, &h.role(role)).await.is_empty(), "{role}");
    }
    assert!(h.items("grant").await.is_empty());
    let audits = h.items("audit").await;
    assert_eq!(audits.len(), 1);
    assert_eq!(s(&audits[0], "reason").as_deref(), Some("no_matching_rule"));
    assert_eq!(s(&audits[0], "pipeline").as_deref(), Some("data-export"));
}
