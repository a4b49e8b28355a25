//! [`NativeRuns`] on CodeBuild (`BatchGetBuilds`) and CodePipeline (`GetPipelineExecution`):
//! one read per native start, counted apart ([`NativeRunsAdapter::reads`]), never cached (a
//! run's status is what is being confirmed). The adapter only translates: which facts decide
//! is [`latch_core::native::check_run`]'s business.
//!
//! `GetPipelineExecution` gives the execution's status and trigger (type and detail), not the
//! action or its role: those are in the pipeline's declaration (`GetPipeline`), a second read
//! per start that Latch does not make.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_codebuild::Client as CodeBuildClient;
use aws_sdk_codepipeline::Client as CodePipelineClient;
use aws_sdk_codepipeline::operation::get_pipeline_execution::GetPipelineExecutionError;
use latch_core::native::NativeJob;
use latch_core::ports::{BuildRun, NativeLookupError, NativeRun, NativeRuns, PipelineRun};
use tracing::debug;

use crate::errors::{describe, is_transient};

#[derive(Debug, Clone)]
pub struct NativeRunsAdapter {
    codebuild: CodeBuildClient,
    codepipeline: CodePipelineClient,
    reads: Arc<AtomicU64>,
}

impl NativeRunsAdapter {
    pub fn new(codebuild: CodeBuildClient, codepipeline: CodePipelineClient) -> Self {
        Self {
            codebuild,
            codepipeline,
            reads: Arc::default(),
        }
    }

    /// Runs read from CodeBuild or CodePipeline so far, for benchmarks to count apart.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    async fn build(&self, project: &str, build_id: &str) -> Result<Option<NativeRun>, NativeLookupError> {
        // BatchGetBuilds takes `<project>:<uuid>`, the build ARN's tail.
        let id = format!("{project}:{build_id}");
        let out = self
            .codebuild
            .batch_get_builds()
            .ids(&id)
            .send()
            .await
            .map_err(|e| classify(is_transient(&e), describe(&e)))?;
        let Some(build) = out.builds().iter().find(|b| b.id() == Some(id.as_str())) else {
            debug!(build = %id, "CodeBuild has no such build");
            return Ok(None);
        };
        Ok(Some(NativeRun::Build(BuildRun {
            project: build.project_name().unwrap_or_default().to_owned(),
            status: build.build_status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            initiator: build.initiator().map(str::to_owned),
            source_version: build.source_version().map(str::to_owned),
            service_role: build.service_role().map(str::to_owned),
            buildspec: build.source().and_then(|s| s.buildspec()).map(str::to_owned),
        })))
    }

    async fn execution(&self, pipeline: &str, execution_id: &str) -> Result<Option<NativeRun>, NativeLookupError> {
        let out = match self
            .codepipeline
            .get_pipeline_execution()
            .pipeline_name(pipeline)
            .pipeline_execution_id(execution_id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                return match e.as_service_error() {
                    Some(
                        GetPipelineExecutionError::PipelineExecutionNotFoundException(_)
                        | GetPipelineExecutionError::PipelineNotFoundException(_),
                    ) => {
                        debug!(pipeline, execution_id, "CodePipeline has no such execution");
                        Ok(None)
                    }
                    _ => Err(classify(is_transient(&e), describe(&e))),
                };
            }
        };
        let Some(execution) = out.pipeline_execution() else {
            return Ok(None);
        };
        let trigger = execution.trigger();
        Ok(Some(NativeRun::Pipeline(PipelineRun {
            pipeline: execution.pipeline_name().unwrap_or_default().to_owned(),
            status: execution.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            trigger_type: trigger.and_then(|t| t.trigger_type()).map(|t| t.as_str().to_owned()),
            trigger_detail: trigger
                .and_then(|t| t.trigger_detail())
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
        })))
    }
}

fn classify(transient: bool, what: String) -> NativeLookupError {
    if transient {
        NativeLookupError::Transient(what)
    } else {
        NativeLookupError::Rejected(what)
    }
}

impl NativeRuns for NativeRunsAdapter {
    async fn look_up(&self, job: &NativeJob) -> Result<Option<NativeRun>, NativeLookupError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        match job {
            NativeJob::CodeBuild { project, build_id } => self.build(project, build_id).await,
            NativeJob::CodePipelineAction {
                pipeline, execution_id, ..
            } => self.execution(pipeline, execution_id).await,
        }
    }
}
