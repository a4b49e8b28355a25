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

use serde_json::{Map, Value};

use crate::event::{EventError, JobKey};

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
