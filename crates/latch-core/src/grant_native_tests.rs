//! Native CodePipeline / CodeBuild events through the service, from the samples in events/,
//! with the runs CodeBuild and CodePipeline report for them in memory.

use chrono::Duration;
use serde_json::Value;

use super::*;
use crate::memory::Faults;
use crate::model::{AccountId, RoleArn};
use crate::policy::Policy;
use crate::ports::{BuildRun, NativeLookupError, NativeRun, PipelineRun};
use crate::test_fixtures::{MemoryService as Service, memory_service, t0};

/// The job of events/codebuild-build-*.json.
fn sample_build() -> NativeJob {
    NativeJob::CodeBuild {
        project: "app-build".into(),
        build_id: "8745a7a9-c340-456a-9166-edf953571bef".into(),
    }
}

/// The job of events/codepipeline-action-*.json.
fn sample_action() -> NativeJob {
    NativeJob::CodePipelineAction {
        pipeline: "app-release".into(),
        execution_id: "3137f7cb-7cf7-4a17-9d57-1a2b3c4d5e6f".into(),
        stage: "Deploy".into(),
        action: "DeployLambda".into(),
    }
}

/// The sample build as CodeBuild reports it while it runs: started by its pipeline, the
/// project's own buildspec, the rule's role.
fn running_build() -> BuildRun {
    BuildRun {
        project: "app-build".into(),
        status: "IN_PROGRESS".into(),
        initiator: Some("codepipeline/app-release".into()),
        source_version: Some("9fceb02d0ae598e95dc970b74767f19372d61af8".into()),
        service_role: Some(role("codebuild-app").as_str().to_owned()),
        buildspec: None,
    }
}

fn running_execution() -> PipelineRun {
    PipelineRun {
        pipeline: "app-release".into(),
        status: "InProgress".into(),
        trigger_type: Some("Webhook".into()),
        trigger_detail: Some("arn:aws:codepipeline:us-east-1:123456789012:webhook:app-release-main".into()),
    }
}

/// The example policy; both sample runs are in progress.
fn service() -> Service {
    let s = memory_service(t0() + Duration::seconds(2), &Faults::default());
    s.native.set(&sample_build(), NativeRun::Build(running_build()));
    s.native.set(&sample_action(), NativeRun::Pipeline(running_execution()));
    s
}

/// The example policy with its CodeBuild rule's trigger replaced by `codebuild` (flow YAML).
fn service_with_codebuild_rule(codebuild: &str) -> Service {
    let text = include_str!("../../../events/policy-claimed.yaml")
        .replace("codebuild: {project: \"app-*\"}", &format!("codebuild: {codebuild}"));
    let policy = Policy::load(&text, "test").unwrap();
    GrantService { policy, ..service() }
}

fn service_with_codepipeline_rule(codepipeline: &str) -> Service {
    let text = include_str!("../../../events/policy-claimed.yaml").replace(
        "codepipeline: {pipeline: \"app-*\", stage: Deploy, action: \"Deploy*\"}",
        &format!("codepipeline: {codepipeline}"),
    );
    let policy = Policy::load(&text, "test").unwrap();
    GrantService { policy, ..service() }
}

/// The one denial audit written, with nothing on any role.
fn denied_once(s: &Service, reason: DenyReason) -> AuditRecord {
    assert_eq!(s.ports.iam.policy_count(), 0, "nothing may reach IAM");
    assert!(s.ports.store.grants().is_empty(), "no grant may be recorded");
    let audits = s.ports.store.audits();
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0].reason, reason.code());
    assert_eq!(s.ports.audit.published(), audits);
    audits[0].clone()
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
    s.ports.clock.set(envelope.time + Duration::seconds(1));
}

#[tokio::test]
async fn given_a_named_action_when_it_starts_then_the_rule_role_gets_the_grant_and_every_end_revokes_it() {
    for end in ACTION_ENDS {
        let s = service();
        let NativeOutcome::Start(StartOutcome::Activated(id)) = handle(&s, ACTION_STARTED).await else {
            panic!("the STARTED action must be granted")
        };
        let deployer = role("codepipeline-deployer");
        assert!(s.ports.iam.policy(&deployer, &id.policy_name()).is_some());
        let grant = &s.ports.store.grants()[0];
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
        assert_eq!(s.ports.iam.policy_count(), 0);
        let mut decisions: Vec<String> = s
            .ports
            .store
            .audits()
            .iter()
            .map(|a| format!("{:?}", a.decision))
            .collect();
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
        assert!(s.ports.iam.policy(&role("codebuild-app"), &id.policy_name()).is_some());
        assert_eq!(
            s.ports.store.grants()[0].job.run_id,
            "8745a7a9-c340-456a-9166-edf953571bef"
        );
        ended_at(&s, end);
        assert!(matches!(
            handle(&s, end).await,
            NativeOutcome::Finish(FinishOutcome::Finished { revoked: 1, .. })
        ));
        assert_eq!(s.ports.iam.policy_count(), 0);
    }
}

#[tokio::test]
async fn given_a_job_no_rule_names_when_it_starts_then_nothing_is_written_or_read() {
    let s = service();
    let other_pipeline = ACTION_STARTED.replace("\"app-release\"", "\"data-export\"");
    let other_project = BUILD_STARTED.replace("app-build", "docs-build");
    for start in [other_pipeline, other_project] {
        assert_eq!(handle(&s, &start).await, NativeOutcome::NotManaged);
    }
    assert_eq!(s.ports.iam.policy_count(), 0);
    assert!(
        s.ports.store.audits().is_empty(),
        "every build in the account would cost a kept item"
    );
    assert!(s.ports.audit.published().is_empty());
    assert_eq!(s.native.reads(), 0, "a job no rule names is not worth a read");
}

#[tokio::test]
async fn given_a_named_start_when_granted_then_its_run_was_read_once_and_its_end_reads_nothing() {
    let s = service();
    handle(&s, BUILD_STARTED).await;
    assert_eq!(s.native.reads(), 1);
    ended_at(&s, BUILD_ENDS[0]);
    handle(&s, BUILD_ENDS[0]).await;
    assert_eq!(s.native.reads(), 1, "an end revokes whatever the service says");
}

#[tokio::test]
async fn given_a_forged_start_for_a_build_codebuild_does_not_have_when_handled_then_it_is_not_confirmed() {
    let s = service();
    s.native.remove(&sample_build());
    assert_eq!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeNotConfirmed))
    );
    let audit = denied_once(&s, DenyReason::NativeNotConfirmed);
    assert_eq!(audit.pipeline.as_deref(), Some("app-build"));
    assert_eq!(audit.role_arn.as_deref(), Some(role("codebuild-app").as_str()));
}

#[tokio::test]
async fn given_a_start_for_a_build_that_is_no_longer_in_progress_when_handled_then_it_is_not_confirmed() {
    for status in ["SUCCEEDED", "FAILED", "STOPPED"] {
        let s = service();
        let finished = BuildRun {
            status: status.into(),
            ..running_build()
        };
        s.native.set(&sample_build(), NativeRun::Build(finished));
        assert_eq!(
            handle(&s, BUILD_STARTED).await,
            NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeNotConfirmed)),
            "{status}"
        );
        let audit = denied_once(&s, DenyReason::NativeNotConfirmed);
        assert!(audit.detail.unwrap_or_default().contains(status));
    }
}

#[tokio::test]
async fn given_a_start_for_a_pipeline_execution_that_is_over_or_unknown_when_handled_then_it_is_not_confirmed() {
    let s = service();
    let over = PipelineRun {
        status: "Succeeded".into(),
        ..running_execution()
    };
    s.native.set(&sample_action(), NativeRun::Pipeline(over));
    assert_eq!(
        handle(&s, ACTION_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeNotConfirmed))
    );
    let s = service();
    s.native.remove(&sample_action());
    assert_eq!(
        handle(&s, ACTION_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeNotConfirmed))
    );
    denied_once(&s, DenyReason::NativeNotConfirmed);
}

#[tokio::test]
async fn given_a_build_started_with_a_buildspec_override_when_handled_then_it_is_refused() {
    let s = service();
    let overridden = BuildRun {
        buildspec: Some("version: 0.2\nphases:\n  build:\n    commands: [aws sts get-caller-identity]".into()),
        ..running_build()
    };
    s.native.set(&sample_build(), NativeRun::Build(overridden));
    assert_eq!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeBuildspecOverride))
    );
    denied_once(&s, DenyReason::NativeBuildspecOverride);
}

#[tokio::test]
async fn given_a_rule_that_names_its_buildspec_or_allows_any_when_a_build_runs_then_it_is_checked_so() {
    let pinned = service_with_codebuild_rule("{project: \"app-*\", buildspec: ci/deploy.yml}");
    let runs = |spec: Option<&str>| {
        NativeRun::Build(BuildRun {
            buildspec: spec.map(str::to_owned),
            ..running_build()
        })
    };
    pinned.native.set(&sample_build(), runs(None));
    assert_eq!(
        handle(&pinned, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeBuildspecOverride)),
        "the project's default buildspec.yml is not the rule's"
    );
    let pinned = service_with_codebuild_rule("{project: \"app-*\", buildspec: ci/deploy.yml}");
    pinned.native.set(&sample_build(), runs(Some("ci/deploy.yml")));
    assert!(matches!(
        handle(&pinned, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Activated(_))
    ));
    let any = service_with_codebuild_rule("{project: \"app-*\", allow_buildspec_override: true}");
    any.native.set(&sample_build(), runs(Some("version: 0.2")));
    assert!(matches!(
        handle(&any, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Activated(_))
    ));
}

#[tokio::test]
async fn given_a_build_running_as_another_role_when_handled_then_the_rule_role_is_not_elevated() {
    let s = service();
    let other_role = BuildRun {
        service_role: Some("arn:aws:iam::123456789012:role/service-role/attacker-build".into()),
        ..running_build()
    };
    s.native.set(&sample_build(), NativeRun::Build(other_role));
    assert_eq!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeRoleMismatch))
    );
    denied_once(&s, DenyReason::NativeRoleMismatch);

    // The same role spelled in another case is the same role to IAM.
    let s = service();
    let same_role = BuildRun {
        service_role: Some("arn:aws:iam::123456789012:role/latch/CodeBuild-App".into()),
        ..running_build()
    };
    s.native.set(&sample_build(), NativeRun::Build(same_role));
    assert!(matches!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Activated(_))
    ));

    let opted_out = service_with_codebuild_rule("{project: \"app-*\", require_service_role: false}");
    let other_role = BuildRun {
        service_role: Some("arn:aws:iam::123456789012:role/service-role/attacker-build".into()),
        ..running_build()
    };
    opted_out.native.set(&sample_build(), NativeRun::Build(other_role));
    assert!(matches!(
        handle(&opted_out, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Activated(_))
    ));
}

#[tokio::test]
async fn given_a_fork_pull_request_build_of_a_main_only_project_when_handled_then_it_is_refused() {
    let rule = "{project: \"app-*\", source_versions: [refs/heads/main, main]}";
    let s = service_with_codebuild_rule(rule);
    let fork_pr = BuildRun {
        initiator: Some("GitHub-Hookshot/8a3e9c1".into()),
        source_version: Some("pr/7".into()),
        ..running_build()
    };
    s.native.set(&sample_build(), NativeRun::Build(fork_pr.clone()));
    assert_eq!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeTriggerNotAllowed))
    );
    let audit = denied_once(&s, DenyReason::NativeTriggerNotAllowed);
    assert!(audit.detail.unwrap_or_default().contains("pr/7"));

    let s = service_with_codebuild_rule(rule);
    let main_push = BuildRun {
        source_version: Some("refs/heads/main".into()),
        ..fork_pr
    };
    s.native.set(&sample_build(), NativeRun::Build(main_push));
    assert!(matches!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Activated(_))
    ));
}

#[tokio::test]
async fn given_a_build_started_by_someone_the_rule_does_not_name_when_handled_then_it_is_refused() {
    let s = service_with_codebuild_rule("{project: \"app-*\", initiators: [\"codepipeline/app-*\"]}");
    let by_hand = BuildRun {
        initiator: Some("mallory".into()),
        ..running_build()
    };
    s.native.set(&sample_build(), NativeRun::Build(by_hand));
    assert_eq!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeInitiatorNotAllowed))
    );
    denied_once(&s, DenyReason::NativeInitiatorNotAllowed);
    // The sample build, started by its pipeline, is what the rule names.
    let s = service_with_codebuild_rule("{project: \"app-*\", initiators: [\"codepipeline/app-*\"]}");
    assert!(matches!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Activated(_))
    ));
}

#[tokio::test]
async fn given_a_pipeline_rule_narrowed_on_its_trigger_when_an_execution_was_started_otherwise_then_it_is_refused() {
    let rule = "{pipeline: \"app-*\", stage: Deploy, action: \"Deploy*\", triggers: [Webhook], \
                initiators: [\"arn:aws:codepipeline:*:123456789012:webhook:app-release-main\"]}";
    let s = service_with_codepipeline_rule(rule);
    let by_api = PipelineRun {
        trigger_type: Some("StartPipelineExecution".into()),
        trigger_detail: Some("arn:aws:sts::123456789012:assumed-role/dev/mallory".into()),
        ..running_execution()
    };
    s.native.set(&sample_action(), NativeRun::Pipeline(by_api));
    assert_eq!(
        handle(&s, ACTION_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeTriggerNotAllowed))
    );
    let s = service_with_codepipeline_rule(rule);
    let other_webhook = PipelineRun {
        trigger_detail: Some("arn:aws:codepipeline:us-east-1:123456789012:webhook:app-release-forks".into()),
        ..running_execution()
    };
    s.native.set(&sample_action(), NativeRun::Pipeline(other_webhook));
    assert_eq!(
        handle(&s, ACTION_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeInitiatorNotAllowed))
    );
    let s = service_with_codepipeline_rule(rule);
    assert!(matches!(
        handle(&s, ACTION_STARTED).await,
        NativeOutcome::Start(StartOutcome::Activated(_))
    ));
}

#[tokio::test]
async fn given_the_service_cannot_be_read_when_a_named_job_starts_then_a_transient_failure_retries_and_a_refusal_denies()
 {
    let s = service();
    s.native
        .fail_next(NativeLookupError::Transient("ThrottlingException".into()));
    let (envelope, detail) = sample(BUILD_STARTED);
    let err = s
        .on_native(&envelope, &detail, detail.to_string().len())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(s.ports.store.audits().is_empty() && s.ports.store.grants().is_empty());

    s.native
        .fail_next(NativeLookupError::Rejected("AccessDeniedException".into()));
    assert_eq!(
        handle(&s, BUILD_STARTED).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::NativeNotConfirmed))
    );
    let audit = denied_once(&s, DenyReason::NativeNotConfirmed);
    assert!(audit.detail.unwrap_or_default().contains("AccessDenied"));
}

#[tokio::test]
async fn given_the_end_of_a_job_no_rule_names_when_handled_then_nothing_is_written() {
    let s = service();
    let other = BUILD_ENDS[0].replace("app-build", "docs-build");
    assert_eq!(handle(&s, &other).await, NativeOutcome::NotManaged);
    assert!(s.ports.store.audits().is_empty());
    assert!(s.ports.audit.published().is_empty());
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
    assert_eq!(s.ports.iam.policy_count(), 0);
    assert_eq!(s.ports.store.grants().len(), 1);
    // The ended grant's own STARTED event delivered again is the same decision: nothing new.
    let audits = s.ports.store.audits().len();
    assert!(matches!(
        handle(&s, ACTION_STARTED).await,
        NativeOutcome::Start(StartOutcome::AlreadyEnded(_))
    ));
    assert_eq!(s.ports.store.audits().len(), audits);
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
    assert_eq!(s.ports.store.grants().len(), 1);
    assert_eq!(s.ports.store.audits().len(), 1);
}

#[tokio::test]
async fn given_a_malformed_native_detail_when_handled_then_the_denial_names_the_field() {
    let s = service();
    let bad = ACTION_STARTED.replace("\"STARTED\"", "\"STARTING\"");
    assert_eq!(
        handle(&s, &bad).await,
        NativeOutcome::Start(StartOutcome::Denied(DenyReason::MalformedEvent))
    );
    let audits = s.ports.store.audits();
    assert_eq!(audits.len(), 1);
    assert!(
        audits[0].detail.as_deref().unwrap_or("").contains("`state`"),
        "{:?}",
        audits[0].detail
    );
}
