//! Native AWS pipeline events: CodePipeline action and CodeBuild build state changes.
//!
//! AWS emits these on the account's default bus with an `aws.*` source, which no publisher can
//! forge, so their detail (pipeline, stage, action, project, build) is AWS's word, not a claim.
//! They name no role and ask for no permission set: a `native` rule of the policy file supplies
//! both. A start state asks for a grant; a terminal state ends the job's grants, like
//! `Pipeline Job Finished`.
//!
//! | detail-type | source | start | end |
//! |---|---|---|---|
//! | `CodePipeline Action Execution State Change` | `aws.codepipeline` | STARTED | SUCCEEDED, FAILED, CANCELED, ABANDONED |
//! | `CodeBuild Build State Change` | `aws.codebuild` | IN_PROGRESS | SUCCEEDED, FAILED, STOPPED, FAULT, TIMED_OUT |
//!
//! Job identity (so the end finds the grants of the start, and a retry of the same event
//! finds its grant): CodePipeline → pipeline, execution-id, `stage.action`, attempt 1;
//! CodeBuild → project, the build's id, `build`, attempt 1. A CodeBuild retry is a new build
//! (new id), so it is a new job. A CodePipeline "retry failed actions" re-runs the action in
//! the *same* execution, after its end was seen: that start finds the action's ended grant and
//! is denied as `grant_ended`; a new execution (release change) gets a new grant.
//!
//! An event is authentic but proves little else: anyone who may `StartBuild` a project named by
//! a rule (with a buildspec override, another source version, another service role) makes AWS
//! emit a real IN_PROGRESS event. So a start is granted only after [`check_run`] found the run,
//! as the service itself reports it ([`crate::ports::NativeRuns`]), in progress and within what
//! the rule allows: initiator, trigger or source version, buildspec, and the build's role.
//!
//! A start of a job no rule names is not a request: it writes nothing durable (a debug log line
//! only), as its end does not. Every build and pipeline action in the account emits these
//! events; an audit item for each would grow the kept-forever audit store with builds Latch was
//! never asked about. Starts that a rule names are decisions, and each is audited.

use serde_json::{Map, Value};

use crate::event::EventError;
use crate::grant::DenyReason;
use crate::model::{JobKey, RoleArn};
use crate::policy::{BuildChecks, ExecutionChecks, NativeRule, NativeTrigger, Pattern};
use crate::ports::{BuildRun, NativeRun, PipelineRun};

pub const DETAIL_TYPE_CODEPIPELINE_ACTION: &str = "CodePipeline Action Execution State Change";
pub const SOURCE_CODEPIPELINE: &str = "aws.codepipeline";
pub const DETAIL_TYPE_CODEBUILD_BUILD: &str = "CodeBuild Build State Change";
pub const SOURCE_CODEBUILD: &str = "aws.codebuild";

/// What AWS ran: a pipeline action, or a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeJob {
    CodePipelineAction {
        pipeline: String,
        execution_id: String,
        stage: String,
        action: String,
    },
    CodeBuild {
        project: String,
        build_id: String,
    },
}

impl NativeJob {
    /// The job key grants, tombstones and audits use.
    pub fn key(&self) -> JobKey {
        match self {
            Self::CodePipelineAction {
                pipeline,
                execution_id,
                stage,
                action,
            } => JobKey {
                principal: None,
                pipeline: pipeline.clone(),
                run_id: execution_id.clone(),
                job: format!("{stage}.{action}"),
                attempt: 1,
            },
            Self::CodeBuild { project, build_id } => JobKey {
                principal: None,
                pipeline: project.clone(),
                run_id: build_id.clone(),
                job: "build".to_owned(),
                attempt: 1,
            },
        }
    }
}

/// Where the job is: starting (grant), or over (revoke), with AWS's state name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativePhase {
    Started,
    Ended { state: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeEvent {
    pub job: NativeJob,
    pub phase: NativePhase,
}

/// Whether an envelope is a native event Latch handles: the detail-type *and* its AWS source.
pub fn is_native(detail_type: &str, source: &str) -> bool {
    matches!(
        (detail_type, source),
        (DETAIL_TYPE_CODEPIPELINE_ACTION, SOURCE_CODEPIPELINE) | (DETAIL_TYPE_CODEBUILD_BUILD, SOURCE_CODEBUILD)
    )
}

/// CodePipeline's name charset (pipelines, stages, actions): `[A-Za-z0-9.@\-_]+`, 1..=100.
fn codepipeline_name(map: &Map<String, Value>, field: &'static str) -> Result<String, EventError> {
    let value = string(map, field)?;
    if value.len() > 100 || !value.chars().all(|c| c.is_ascii_alphanumeric() || ".@-_".contains(c)) {
        return Err(invalid(field, "is not a CodePipeline name ([A-Za-z0-9.@_-], 1-100)"));
    }
    Ok(value)
}

fn string(map: &Map<String, Value>, field: &'static str) -> Result<String, EventError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(EventError::Missing { field }),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(field, "must not be empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn invalid(field: &'static str, why: &str) -> EventError {
    EventError::Invalid {
        field,
        why: why.to_owned(),
    }
}

/// Execution and build ids are UUIDs on the wire; anything of that alphabet is accepted, so a
/// new id format does not lock pipelines out, and nothing with a separator gets through.
fn is_run_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl NativeEvent {
    /// Parses the detail of a native event whose envelope passed [`is_native`].
    /// `serialized_len` is the detail's size on the wire, checked first.
    pub fn parse(detail_type: &str, detail: &Value, serialized_len: usize) -> Result<Self, EventError> {
        if serialized_len > crate::event::MAX_EVENT_BYTES {
            return Err(EventError::TooLarge { size: serialized_len });
        }
        let map = detail.as_object().ok_or(EventError::NotAnObject)?;
        if detail_type == DETAIL_TYPE_CODEBUILD_BUILD {
            Self::codebuild(map)
        } else {
            Self::codepipeline(map)
        }
    }

    fn codepipeline(map: &Map<String, Value>) -> Result<Self, EventError> {
        let execution_id = string(map, "execution-id")?;
        if !is_run_id(&execution_id) {
            return Err(invalid("execution-id", "is not a pipeline execution id"));
        }
        let job = NativeJob::CodePipelineAction {
            pipeline: codepipeline_name(map, "pipeline")?,
            execution_id,
            stage: codepipeline_name(map, "stage")?,
            action: codepipeline_name(map, "action")?,
        };
        let phase = match string(map, "state")?.as_str() {
            "STARTED" => NativePhase::Started,
            end @ ("SUCCEEDED" | "FAILED" | "CANCELED" | "ABANDONED") => NativePhase::Ended { state: end.to_owned() },
            _ => return Err(invalid("state", "is not an action execution state")),
        };
        Ok(Self { job, phase })
    }

    fn codebuild(map: &Map<String, Value>) -> Result<Self, EventError> {
        let project = string(map, "project-name")?;
        let mut chars = project.chars();
        let well_formed = project.len() >= 2
            && project.len() <= 255
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !well_formed {
            return Err(invalid("project-name", "is not a CodeBuild project name"));
        }
        // arn:<partition>:codebuild:<region>:<account>:build/<project>:<uuid>
        let build_id = string(map, "build-id")?;
        let build_uuid = build_id
            .split_once(":build/")
            .filter(|(prefix, _)| prefix.starts_with("arn:") && prefix.contains(":codebuild:"))
            .and_then(|(_, rest)| rest.rsplit_once(':'))
            .filter(|(name, uuid)| *name == project && is_run_id(uuid))
            .map(|(_, uuid)| uuid.to_owned())
            .ok_or_else(|| invalid("build-id", "is not this project's build ARN"))?;
        let phase = match string(map, "build-status")?.as_str() {
            "IN_PROGRESS" => NativePhase::Started,
            end @ ("SUCCEEDED" | "FAILED" | "STOPPED" | "FAULT" | "TIMED_OUT") => {
                NativePhase::Ended { state: end.to_owned() }
            }
            _ => return Err(invalid("build-status", "is not a build status")),
        };
        Ok(Self {
            job: NativeJob::CodeBuild {
                project,
                build_id: build_uuid,
            },
            phase,
        })
    }
}

/// Why the service's account of a run refuses the grant: the reason and, in words, the fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRefusal {
    pub reason: DenyReason,
    pub detail: String,
}

fn refuse(reason: DenyReason, detail: String) -> Result<(), RunRefusal> {
    Err(RunRefusal { reason, detail })
}

/// Checks the run the service reports for `job` (`None`: it has none) against the native rule
/// that named the job. `Ok` only for a run of that job, still in progress, within the rule.
pub fn check_run(rule: &NativeRule, job: &NativeJob, run: Option<&NativeRun>) -> Result<(), RunRefusal> {
    match (&rule.trigger, job, run) {
        (NativeTrigger::CodeBuild { checks, .. }, NativeJob::CodeBuild { project, .. }, Some(NativeRun::Build(b))) => {
            check_build(checks, &rule.role, project, b)
        }
        (
            NativeTrigger::CodePipeline { checks, .. },
            NativeJob::CodePipelineAction { pipeline, .. },
            Some(NativeRun::Pipeline(p)),
        ) => check_execution(checks, pipeline, p),
        _ => refuse(
            DenyReason::NativeNotConfirmed,
            format!("the service has no run for {}", job.key()),
        ),
    }
}

fn matches_any(patterns: &Option<Vec<Pattern>>, value: Option<&str>) -> bool {
    match patterns {
        None => true,
        Some(patterns) => value.is_some_and(|v| patterns.iter().any(|p| p.is_match(v))),
    }
}

fn check_build(checks: &BuildChecks, rule_role: &RoleArn, project: &str, build: &BuildRun) -> Result<(), RunRefusal> {
    if build.project != project {
        return refuse(
            DenyReason::NativeNotConfirmed,
            format!("the build belongs to project {}, not {project}", build.project),
        );
    }
    if build.status != "IN_PROGRESS" {
        return refuse(
            DenyReason::NativeNotConfirmed,
            format!("CodeBuild reports the build {}, not IN_PROGRESS", build.status),
        );
    }
    if !matches_any(&checks.initiators, build.initiator.as_deref()) {
        return refuse(
            DenyReason::NativeInitiatorNotAllowed,
            format!(
                "the build was started by {:?}, which the rule does not allow",
                build.initiator
            ),
        );
    }
    if !matches_any(&checks.source_versions, build.source_version.as_deref()) {
        return refuse(
            DenyReason::NativeTriggerNotAllowed,
            format!(
                "the build is of source version {:?}, which the rule does not allow",
                build.source_version
            ),
        );
    }
    if let Some(expected) = &checks.buildspec {
        let ran = build
            .buildspec
            .as_deref()
            .filter(|b| !b.is_empty())
            .unwrap_or(crate::policy::DEFAULT_BUILDSPEC);
        if ran != expected {
            // Inline YAML can be long and is the submitter's: quote only its start.
            let shown: String = ran.chars().take(80).collect();
            return refuse(
                DenyReason::NativeBuildspecOverride,
                format!("the build runs buildspec {shown:?}, not the rule's {expected:?}"),
            );
        }
    }
    if checks.require_service_role && !is_same_role(build.service_role.as_deref(), rule_role) {
        return refuse(
            DenyReason::NativeRoleMismatch,
            format!(
                "the build runs as {:?}, not the rule's role {rule_role}",
                build.service_role
            ),
        );
    }
    Ok(())
}

/// IAM role names are unique per account whatever their case; the path is part of the ARN.
fn is_same_role(reported: Option<&str>, rule_role: &RoleArn) -> bool {
    reported.and_then(|r| RoleArn::parse(r).ok()).is_some_and(|r| {
        r.account() == rule_role.account()
            && r.path() == rule_role.path()
            && r.name().eq_ignore_ascii_case(rule_role.name())
    })
}

fn check_execution(checks: &ExecutionChecks, pipeline: &str, execution: &PipelineRun) -> Result<(), RunRefusal> {
    if execution.pipeline != pipeline {
        return refuse(
            DenyReason::NativeNotConfirmed,
            format!(
                "the execution belongs to pipeline {}, not {pipeline}",
                execution.pipeline
            ),
        );
    }
    if execution.status != "InProgress" {
        return refuse(
            DenyReason::NativeNotConfirmed,
            format!(
                "CodePipeline reports the execution {}, not InProgress",
                execution.status
            ),
        );
    }
    let trigger = execution.trigger_type.as_deref();
    if let Some(allowed) = &checks.triggers
        && !trigger.is_some_and(|t| allowed.iter().any(|a| a == t))
    {
        return refuse(
            DenyReason::NativeTriggerNotAllowed,
            format!("the execution was triggered by {trigger:?}, which the rule does not allow"),
        );
    }
    if !matches_any(&checks.initiators, execution.trigger_detail.as_deref()) {
        return refuse(
            DenyReason::NativeInitiatorNotAllowed,
            format!(
                "the execution was started by {:?}, which the rule does not allow",
                execution.trigger_detail
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline_detail(state: &str) -> Value {
        json!({
            "pipeline": "app-release", "execution-id": "3137f7cb-7cf7-4a17-9d57-1a2b3c4d5e6f",
            "stage": "Deploy", "action": "DeployLambda", "state": state, "region": "us-east-1",
            "type": {"owner": "AWS", "provider": "CodeDeploy", "category": "Deploy", "version": "1"},
            "version": 3.0
        })
    }

    fn build_detail(status: &str) -> Value {
        json!({
            "build-status": status, "project-name": "app-build",
            "build-id": "arn:aws:codebuild:us-east-1:123456789012:build/app-build:8745a7a9-c340-456a-9166-edf953571bef",
            "additional-information": {"initiator": "codepipeline/app-release"}, "version": "1"
        })
    }

    fn parse(detail_type: &str, detail: &Value) -> Result<NativeEvent, EventError> {
        NativeEvent::parse(detail_type, detail, detail.to_string().len())
    }

    #[test]
    fn given_each_action_state_when_parsed_then_started_grants_and_the_rest_end() {
        let started = parse(DETAIL_TYPE_CODEPIPELINE_ACTION, &pipeline_detail("STARTED")).unwrap();
        assert_eq!(started.phase, NativePhase::Started);
        let key = started.job.key();
        assert_eq!(
            (
                key.pipeline.as_str(),
                key.run_id.as_str(),
                key.job.as_str(),
                key.attempt
            ),
            (
                "app-release",
                "3137f7cb-7cf7-4a17-9d57-1a2b3c4d5e6f",
                "Deploy.DeployLambda",
                1
            )
        );
        for state in ["SUCCEEDED", "FAILED", "CANCELED", "ABANDONED"] {
            let ended = parse(DETAIL_TYPE_CODEPIPELINE_ACTION, &pipeline_detail(state)).unwrap();
            assert_eq!(ended.phase, NativePhase::Ended { state: state.into() });
            assert_eq!(ended.job.key(), key, "the end must find the start's job");
        }
    }

    #[test]
    fn given_each_build_status_when_parsed_then_in_progress_grants_and_terminal_ones_end() {
        let started = parse(DETAIL_TYPE_CODEBUILD_BUILD, &build_detail("IN_PROGRESS")).unwrap();
        assert_eq!(started.phase, NativePhase::Started);
        let key = started.job.key();
        assert_eq!(key.pipeline, "app-build");
        assert_eq!(key.run_id, "8745a7a9-c340-456a-9166-edf953571bef");
        for status in ["SUCCEEDED", "FAILED", "STOPPED", "FAULT", "TIMED_OUT"] {
            let ended = parse(DETAIL_TYPE_CODEBUILD_BUILD, &build_detail(status)).unwrap();
            assert!(matches!(ended.phase, NativePhase::Ended { .. }), "{status}");
            assert_eq!(ended.job.key(), key);
        }
    }

    #[test]
    fn given_a_bad_field_when_parsed_then_the_error_names_it() {
        let cases = [
            (
                DETAIL_TYPE_CODEPIPELINE_ACTION,
                pipeline_detail("STARTED"),
                "execution-id",
                json!("3137f7cb/../x"),
            ),
            (
                DETAIL_TYPE_CODEPIPELINE_ACTION,
                pipeline_detail("STARTED"),
                "stage",
                json!("De*ploy"),
            ),
            (
                DETAIL_TYPE_CODEPIPELINE_ACTION,
                pipeline_detail("STARTED"),
                "action",
                json!(7),
            ),
            (
                DETAIL_TYPE_CODEPIPELINE_ACTION,
                pipeline_detail("STARTED"),
                "state",
                json!("RESUMED"),
            ),
            (
                DETAIL_TYPE_CODEPIPELINE_ACTION,
                pipeline_detail("STARTED"),
                "pipeline",
                Value::Null,
            ),
            (
                DETAIL_TYPE_CODEBUILD_BUILD,
                build_detail("IN_PROGRESS"),
                "project-name",
                json!("-x"),
            ),
            (
                DETAIL_TYPE_CODEBUILD_BUILD,
                build_detail("IN_PROGRESS"),
                "build-id",
                json!(
                    "arn:aws:codebuild:us-east-1:123456789012:build/other-project:8745a7a9-c340-456a-9166-edf953571bef"
                ),
            ),
            (
                DETAIL_TYPE_CODEBUILD_BUILD,
                build_detail("IN_PROGRESS"),
                "build-status",
                json!("QUEUED"),
            ),
        ];
        for (detail_type, mut detail, field, value) in cases {
            detail[field] = value;
            let err = parse(detail_type, &detail).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
    }

    #[test]
    fn only_the_matching_aws_source_makes_an_event_native() {
        assert!(is_native(DETAIL_TYPE_CODEBUILD_BUILD, SOURCE_CODEBUILD));
        assert!(is_native(DETAIL_TYPE_CODEPIPELINE_ACTION, SOURCE_CODEPIPELINE));
        assert!(!is_native(DETAIL_TYPE_CODEBUILD_BUILD, "ci.github"));
        assert!(!is_native(DETAIL_TYPE_CODEBUILD_BUILD, SOURCE_CODEPIPELINE));
    }
}
