//! The native-run adapter's exact calls (aws-smithy-mocks): one BatchGetBuilds or one
//! GetPipelineExecution per look-up, what each answer becomes, and which errors retry.

mod mocked;
use mocked::mocked_client;

use aws_sdk_codebuild::error::ErrorMetadata;
use aws_sdk_codebuild::operation::batch_get_builds::{BatchGetBuildsError, BatchGetBuildsOutput};
use aws_sdk_codebuild::types::{Build, ProjectSource, SourceType, StatusType};
use aws_sdk_codepipeline::operation::get_pipeline_execution::{GetPipelineExecutionError, GetPipelineExecutionOutput};
use aws_sdk_codepipeline::types::error::PipelineExecutionNotFoundException;
use aws_sdk_codepipeline::types::{ExecutionTrigger, PipelineExecution, PipelineExecutionStatus, TriggerType};
use aws_smithy_mocks::{Rule, RuleMode, mock};
use latch_aws::native::NativeRunsAdapter;
use latch_core::native::NativeJob;
use latch_core::ports::{BuildRun, NativeLookupError, NativeRun, NativeRuns, PipelineRun, Retryable};

fn build_job() -> NativeJob {
    NativeJob::CodeBuild {
        project: "app-build".into(),
        build_id: "8745a7a9-c340-456a-9166-edf953571bef".into(),
    }
}

fn action_job() -> NativeJob {
    NativeJob::CodePipelineAction {
        pipeline: "app-release".into(),
        execution_id: "3137f7cb-7cf7-4a17-9d57-1a2b3c4d5e6f".into(),
        stage: "Deploy".into(),
        action: "DeployLambda".into(),
    }
}

const BUILD_ID: &str = "app-build:8745a7a9-c340-456a-9166-edf953571bef";

fn adapter(codebuild: &[&Rule], codepipeline: &[&Rule]) -> NativeRunsAdapter {
    NativeRunsAdapter::new(
        mocked_client!(aws_sdk_codebuild, RuleMode::MatchAny, codebuild),
        mocked_client!(aws_sdk_codepipeline, RuleMode::MatchAny, codepipeline),
    )
}

#[tokio::test]
async fn a_build_is_read_with_one_batch_get_builds_of_its_id_and_reported_as_codebuild_says() {
    let get = mock!(aws_sdk_codebuild::Client::batch_get_builds)
        .match_requests(|r| r.ids() == [BUILD_ID])
        .then_output(|| {
            let source = ProjectSource::builder()
                .r#type(SourceType::Github)
                .buildspec("version: 0.2\nphases: {}")
                .build()
                .unwrap();
            BatchGetBuildsOutput::builder()
                .builds(
                    Build::builder()
                        .id(BUILD_ID)
                        .project_name("app-build")
                        .build_status(StatusType::InProgress)
                        .initiator("GitHub-Hookshot/8a3e9c1")
                        .source_version("pr/7")
                        .service_role("arn:aws:iam::123456789012:role/latch/codebuild-app")
                        .source(source)
                        .build(),
                )
                .build()
        });
    let a = adapter(&[&get], &[]);
    let run = a.look_up(&build_job()).await.unwrap();
    assert_eq!(
        run,
        Some(NativeRun::Build(BuildRun {
            project: "app-build".into(),
            status: "IN_PROGRESS".into(),
            initiator: Some("GitHub-Hookshot/8a3e9c1".into()),
            source_version: Some("pr/7".into()),
            service_role: Some("arn:aws:iam::123456789012:role/latch/codebuild-app".into()),
            buildspec: Some("version: 0.2\nphases: {}".into()),
        }))
    );
    assert_eq!((get.num_calls(), a.reads()), (1, 1));
}

#[tokio::test]
async fn a_build_codebuild_does_not_have_is_no_run() {
    let get = mock!(aws_sdk_codebuild::Client::batch_get_builds)
        .then_output(|| BatchGetBuildsOutput::builder().builds_not_found(BUILD_ID).build());
    assert_eq!(adapter(&[&get], &[]).look_up(&build_job()).await.unwrap(), None);
}

#[tokio::test]
async fn an_execution_is_read_with_one_get_pipeline_execution_and_its_trigger_reported() {
    let get = mock!(aws_sdk_codepipeline::Client::get_pipeline_execution)
        .match_requests(|r| {
            r.pipeline_name() == Some("app-release")
                && r.pipeline_execution_id() == Some("3137f7cb-7cf7-4a17-9d57-1a2b3c4d5e6f")
        })
        .then_output(|| {
            GetPipelineExecutionOutput::builder()
                .pipeline_execution(
                    PipelineExecution::builder()
                        .pipeline_name("app-release")
                        .pipeline_execution_id("3137f7cb-7cf7-4a17-9d57-1a2b3c4d5e6f")
                        .status(PipelineExecutionStatus::InProgress)
                        .trigger(
                            ExecutionTrigger::builder()
                                .trigger_type(TriggerType::StartPipelineExecution)
                                .trigger_detail("arn:aws:sts::123456789012:assumed-role/dev/alice")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let a = adapter(&[], &[&get]);
    assert_eq!(
        a.look_up(&action_job()).await.unwrap(),
        Some(NativeRun::Pipeline(PipelineRun {
            pipeline: "app-release".into(),
            status: "InProgress".into(),
            trigger_type: Some("StartPipelineExecution".into()),
            trigger_detail: Some("arn:aws:sts::123456789012:assumed-role/dev/alice".into()),
        }))
    );
    assert_eq!((get.num_calls(), a.reads()), (1, 1));
}

#[tokio::test]
async fn an_execution_codepipeline_does_not_have_is_no_run() {
    let get = mock!(aws_sdk_codepipeline::Client::get_pipeline_execution).then_error(|| {
        GetPipelineExecutionError::PipelineExecutionNotFoundException(
            PipelineExecutionNotFoundException::builder().build(),
        )
    });
    assert_eq!(adapter(&[], &[&get]).look_up(&action_job()).await.unwrap(), None);
}

fn codebuild_error(code: &'static str) -> BatchGetBuildsError {
    BatchGetBuildsError::generic(ErrorMetadata::builder().code(code).message("from the mock").build())
}

#[tokio::test]
async fn throttling_retries_and_access_denied_does_not() {
    let throttled =
        mock!(aws_sdk_codebuild::Client::batch_get_builds).then_error(|| codebuild_error("ThrottlingException"));
    let err = adapter(&[&throttled], &[]).look_up(&build_job()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    let denied =
        mock!(aws_sdk_codebuild::Client::batch_get_builds).then_error(|| codebuild_error("AccessDeniedException"));
    let err = adapter(&[&denied], &[]).look_up(&build_job()).await.unwrap_err();
    assert!(
        matches!(err, NativeLookupError::Rejected(ref m) if m.contains("AccessDenied")),
        "{err}"
    );
}
