//! Native CodePipeline and CodeBuild events on the emulator: real builds and pipeline executions
//! made through the SDK, their events through the grant function's handler, the confirmation read
//! through the real SDK, IAM and DynamoDB inspected after.
//!
//! The emulator (infra/local/serve.py) keeps builds IN_PROGRESS and executions InProgress, as AWS
//! reports them while they run; moto alone would report them finished at once.

use grant::Outcome;
use latch_core::grant::DenyReason;
use latch_core::grant::{FinishOutcome, StartOutcome};
use latch_tests::{Harness, s};
use serde_json::json;

async fn latch_policies(h: &Harness, role: &str) -> Vec<String> {
    let names = h.role_policy_names(role).await;
    names.into_iter().filter(|n| n.starts_with("latch-")).collect()
}

/// A CodeBuild project named for the harness (the example rule names `app-*`), running as
/// `service_role`, and one build of it started with `buildspec_override`: the build's ARN.
async fn start_build(h: &Harness, service_role: &str, buildspec_override: Option<&str>) -> (String, String) {
    let codebuild = aws_sdk_codebuild::Client::new(&h.sdk);
    let project = format!("app-{}", h.id);
    let source = aws_sdk_codebuild::types::ProjectSource::builder()
        .r#type(aws_sdk_codebuild::types::SourceType::Github)
        .location("https://github.com/example/app")
        .build()
        .unwrap();
    codebuild
        .create_project()
        .name(&project)
        .source(source)
        .artifacts(
            aws_sdk_codebuild::types::ProjectArtifacts::builder()
                .r#type(aws_sdk_codebuild::types::ArtifactsType::NoArtifacts)
                .build()
                .unwrap(),
        )
        .environment(
            aws_sdk_codebuild::types::ProjectEnvironment::builder()
                .r#type(aws_sdk_codebuild::types::EnvironmentType::LinuxContainer)
                .image("aws/codebuild/standard:7.0")
                .compute_type(aws_sdk_codebuild::types::ComputeType::BuildGeneral1Small)
                .build()
                .unwrap(),
        )
        .service_role(service_role)
        .send()
        .await
        .expect("create_project");
    let build = codebuild
        .start_build()
        .project_name(&project)
        .set_buildspec_override(buildspec_override.map(str::to_owned))
        .send()
        .await
        .expect("start_build");
    let id = build.build_value().and_then(|b| b.id()).expect("build id").to_owned();
    let uuid = id.rsplit(':').next().unwrap_or_default();
    let arn = format!("arn:aws:codebuild:us-east-1:123456789012:build/{project}:{uuid}");
    (project, arn)
}

/// A pipeline named for the harness and one execution of it: (pipeline, execution id).
async fn start_pipeline(h: &Harness) -> (String, String) {
    let iam = &h.iam;
    let role_name = format!("{}-pipeline-service", h.id);
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "codepipeline.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let role = iam
        .create_role()
        .role_name(&role_name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .expect("pipeline role");
    let role_arn = role.role().map(|r| r.arn().to_owned()).unwrap_or_default();
    use aws_sdk_codepipeline::types::{
        ActionCategory, ActionDeclaration, ActionOwner, ActionTypeId, ArtifactStore, ArtifactStoreType,
        PipelineDeclaration, StageDeclaration,
    };
    let action = |name: &str, category: ActionCategory, provider: &str| {
        ActionDeclaration::builder()
            .name(name)
            .action_type_id(
                ActionTypeId::builder()
                    .category(category)
                    .owner(ActionOwner::Aws)
                    .provider(provider)
                    .version("1")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let pipeline = format!("app-{}", h.id);
    let declaration = PipelineDeclaration::builder()
        .name(&pipeline)
        .role_arn(role_arn)
        .artifact_store(
            ArtifactStore::builder()
                .r#type(ArtifactStoreType::S3)
                .location("latch-artifacts")
                .build()
                .unwrap(),
        )
        .stages(
            StageDeclaration::builder()
                .name("Source")
                .actions(action("Source", ActionCategory::Source, "S3"))
                .build()
                .unwrap(),
        )
        .stages(
            StageDeclaration::builder()
                .name("Deploy")
                .actions(action("DeployLambda", ActionCategory::Invoke, "Lambda"))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let codepipeline = aws_sdk_codepipeline::Client::new(&h.sdk);
    codepipeline
        .create_pipeline()
        .pipeline(declaration)
        .send()
        .await
        .expect("create_pipeline");
    let execution = codepipeline
        .start_pipeline_execution()
        .name(&pipeline)
        .send()
        .await
        .expect("start_pipeline_execution");
    (
        pipeline,
        execution.pipeline_execution_id().unwrap_or_default().to_owned(),
    )
}

/// STARTED grants the rule's role; the end event (whichever) revokes it at once.
async fn start_then_end(h: &Harness, start: serde_json::Value, start_fixture: &str, end_fixture: &str, role: &str) {
    let service = h.grant_service();
    let outcome = grant::handle(&service, h.event(start_fixture, start.clone()))
        .await
        .unwrap();
    let Outcome::Start(StartOutcome::Activated(id)) = outcome else {
        panic!("{start_fixture}: {outcome:?}")
    };
    let doc = h
        .role_policy(role, &id.policy_name())
        .await
        .expect("the policy is on the rule's role");
    assert!(doc["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"].is_string());
    assert_eq!(service.native.reads(), 1, "one confirmation read per native start");

    let outcome = grant::handle(&service, h.event(end_fixture, start)).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Finish(FinishOutcome::Finished {
            revoked: 1,
            already_ended: 0,
            failed: 0
        }),
        "{end_fixture}"
    );
    assert!(latch_policies(h, role).await.is_empty(), "{end_fixture} must revoke");
    let mut decisions: Vec<String> = h.items("audit").await.iter().filter_map(|a| s(a, "decision")).collect();
    decisions.sort();
    assert_eq!(decisions, ["activated", "revoked"]);
}

#[tokio::test]
async fn a_codepipeline_action_is_elevated_when_it_starts_and_revoked_when_it_fails() {
    let h = Harness::new().await;
    let (pipeline, execution) = start_pipeline(&h).await;
    let start = json!({"pipeline": pipeline, "execution-id": execution});
    let role = h.role("codepipeline-deployer");
    start_then_end(
        &h,
        start,
        "codepipeline-action-started.json",
        "codepipeline-action-failed.json",
        &role,
    )
    .await;
}

#[tokio::test]
async fn a_codebuild_build_is_elevated_while_in_progress_and_revoked_when_stopped() {
    let h = Harness::new().await;
    let role = h.role("codebuild-app");
    let (project, build) = start_build(&h, &role, None).await;
    let start = json!({"project-name": project, "build-id": build});
    start_then_end(
        &h,
        start,
        "codebuild-build-in-progress.json",
        "codebuild-build-stopped.json",
        &role,
    )
    .await;
}

/// A denial confirmed against the emulator's CodeBuild: audited once, nothing on the role.
async fn denied_build(h: &Harness, start: serde_json::Value, want: DenyReason) {
    let service = h.grant_service();
    let outcome = grant::handle(&service, h.event("codebuild-build-in-progress.json", start))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Start(StartOutcome::Denied(want)));
    assert!(latch_policies(h, &h.role("codebuild-app")).await.is_empty());
    assert!(h.items("grant").await.is_empty());
    let audits = h.items("audit").await;
    assert_eq!(audits.len(), 1);
    assert_eq!(s(&audits[0], "reason").as_deref(), Some(want.code()));
}

#[tokio::test]
async fn a_forged_in_progress_event_for_a_build_codebuild_never_ran_is_not_confirmed() {
    let h = Harness::new().await;
    let project = format!("app-{}", h.id);
    let forged =
        format!("arn:aws:codebuild:us-east-1:123456789012:build/{project}:8745a7a9-c340-456a-9166-edf953571bef");
    denied_build(
        &h,
        json!({"project-name": project, "build-id": forged}),
        DenyReason::NativeNotConfirmed,
    )
    .await;
}

#[tokio::test]
async fn a_build_started_with_a_buildspec_override_gets_no_grant() {
    let h = Harness::new().await;
    let role = h.role("codebuild-app");
    let (project, build) = start_build(&h, &role, Some("version: 0.2\nphases: {build: {commands: [env]}}")).await;
    denied_build(
        &h,
        json!({"project-name": project, "build-id": build}),
        DenyReason::NativeBuildspecOverride,
    )
    .await;
}

#[tokio::test]
async fn a_build_running_as_another_role_does_not_elevate_the_rule_role() {
    let h = Harness::new().await;
    let other = "arn:aws:iam::123456789012:role/service-role/someone-elses-build";
    let (project, build) = start_build(&h, other, None).await;
    denied_build(
        &h,
        json!({"project-name": project, "build-id": build}),
        DenyReason::NativeRoleMismatch,
    )
    .await;
}

#[tokio::test]
async fn an_action_of_a_pipeline_no_rule_names_writes_nothing_and_reads_nothing() {
    let h = Harness::new().await;
    let service = h.grant_service();
    let event = h.event("codepipeline-action-started.json", json!({"pipeline": "data-export"}));
    let outcome = grant::handle(&service, event).await.unwrap();
    assert_eq!(outcome, Outcome::NotManaged);
    for role in ["codepipeline-deployer", "codebuild-app", "app-deployer"] {
        assert!(latch_policies(&h, &h.role(role)).await.is_empty(), "{role}");
    }
    assert!(h.items("grant").await.is_empty());
    assert!(h.items("audit").await.is_empty());
    assert_eq!(service.native.reads(), 0);
}
