//! Which job is asking: read from the CI system's own variables when present, so a pipeline
//! step needs no flags. Flags always win. Supported: GitHub Actions, GitLab CI, Jenkins,
//! AWS CodeBuild.
//!
//! | field | GitHub Actions | GitLab CI | Jenkins | CodeBuild |
//! |---|---|---|---|---|
//! | pipeline | repository name (`GITHUB_REPOSITORY` after `/`) | `CI_PROJECT_PATH` after its last `/` | `JOB_BASE_NAME` | project (`CODEBUILD_BUILD_ID` before `:`) |
//! | run_id | `GITHUB_RUN_ID` | `CI_PIPELINE_ID` | `BUILD_NUMBER` | `CODEBUILD_BUILD_NUMBER` |
//! | job | `GITHUB_JOB` | `CI_JOB_ID` | `STAGE_NAME`, else `build` | `build` |
//! | attempt | `GITHUB_RUN_ATTEMPT` | 1 | 1 | 1 |
//! | actor | `GITHUB_ACTOR` | `GITLAB_USER_LOGIN` | `BUILD_USER_ID` | `CODEBUILD_INITIATOR` |
//! | commit | `GITHUB_SHA` | `CI_COMMIT_SHA` | `GIT_COMMIT` | `CODEBUILD_RESOLVED_SOURCE_VERSION` |
//! | ref | `GITHUB_REF` | `refs/heads/` + `CI_COMMIT_REF_NAME` (`refs/tags/` for tags) | `GIT_BRANCH` | `CODEBUILD_WEBHOOK_HEAD_REF` |
//!
//! GitHub and GitLab fields are the ones their ID tokens sign (`identity::claims`), read the same
//! way, so the detail agrees with the token: GitLab's job is its numeric `CI_JOB_ID` (the token's
//! `job_id`; a retried job gets a new one, so the attempt stays 1) and its pipeline is the
//! project path's last segment (the token's `project_path`), not the display name.

/// The job's identity and context, as far as the environment tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobEnv {
    pub system: Option<&'static str>,
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
    pub job: Option<String>,
    pub attempt: Option<u32>,
    pub actor: Option<String>,
    pub commit: Option<String>,
    pub git_ref: Option<String>,
}

impl JobEnv {
    pub fn detect(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        if get("GITHUB_ACTIONS").as_deref() == Some("true") {
            return Self {
                system: Some("GitHub Actions"),
                pipeline: get("GITHUB_REPOSITORY").map(|r| r.rsplit('/').next().unwrap_or(&r).to_owned()),
                run_id: get("GITHUB_RUN_ID"),
                job: get("GITHUB_JOB"),
                attempt: get("GITHUB_RUN_ATTEMPT").and_then(|a| a.parse().ok()),
                actor: get("GITHUB_ACTOR"),
                commit: get("GITHUB_SHA"),
                git_ref: get("GITHUB_REF"),
            };
        }
        if get("GITLAB_CI").as_deref() == Some("true") {
            let git_ref = get("CI_COMMIT_REF_NAME").map(|name| match get("CI_COMMIT_TAG") {
                Some(_) => format!("refs/tags/{name}"),
                None => format!("refs/heads/{name}"),
            });
            return Self {
                system: Some("GitLab CI"),
                pipeline: get("CI_PROJECT_PATH")
                    .map(|p| p.rsplit('/').next().unwrap_or(&p).to_owned())
                    .or_else(|| get("CI_PROJECT_NAME")),
                run_id: get("CI_PIPELINE_ID"),
                job: get("CI_JOB_ID"),
                attempt: Some(1),
                actor: get("GITLAB_USER_LOGIN"),
                commit: get("CI_COMMIT_SHA"),
                git_ref,
            };
        }
        if get("JENKINS_URL").is_some() {
            return Self {
                system: Some("Jenkins"),
                pipeline: get("JOB_BASE_NAME"),
                run_id: get("BUILD_NUMBER"),
                job: get("STAGE_NAME").or(Some("build".into())),
                attempt: Some(1),
                actor: get("BUILD_USER_ID"),
                commit: get("GIT_COMMIT"),
                git_ref: get("GIT_BRANCH"),
            };
        }
        if let Some(build) = get("CODEBUILD_BUILD_ID") {
            return Self {
                system: Some("AWS CodeBuild"),
                pipeline: build.split(':').next().map(str::to_owned),
                run_id: get("CODEBUILD_BUILD_NUMBER"),
                job: Some("build".into()),
                attempt: Some(1),
                actor: get("CODEBUILD_INITIATOR"),
                commit: get("CODEBUILD_RESOLVED_SOURCE_VERSION"),
                git_ref: get("CODEBUILD_WEBHOOK_HEAD_REF"),
            };
        }
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn given_github_actions_variables_then_the_job_is_known() {
        let j = JobEnv::detect(env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/app-release"),
            ("GITHUB_RUN_ID", "99"),
            ("GITHUB_JOB", "deploy"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_REF", "refs/heads/main"),
        ]));
        assert_eq!(j.pipeline.as_deref(), Some("app-release"));
        assert_eq!(
            (j.run_id.as_deref(), j.job.as_deref(), j.attempt),
            (Some("99"), Some("deploy"), Some(2))
        );
        assert_eq!(j.git_ref.as_deref(), Some("refs/heads/main"));
    }

    #[test]
    fn given_gitlab_jenkins_or_codebuild_variables_then_each_is_read() {
        let gl = JobEnv::detect(env(&[
            ("GITLAB_CI", "true"),
            ("CI_PROJECT_NAME", "App Release"),
            ("CI_PROJECT_PATH", "example-group/app-release"),
            ("CI_PIPELINE_ID", "7"),
            ("CI_JOB_NAME", "deploy"),
            ("CI_JOB_ID", "5501"),
            ("CI_COMMIT_REF_NAME", "v1.2.0"),
            ("CI_COMMIT_TAG", "v1.2.0"),
        ]));
        assert_eq!(
            (gl.system, gl.git_ref.as_deref()),
            (Some("GitLab CI"), Some("refs/tags/v1.2.0"))
        );
        // As the token names them: project path's last segment, numeric job id.
        assert_eq!(
            (gl.pipeline.as_deref(), gl.job.as_deref(), gl.attempt),
            (Some("app-release"), Some("5501"), Some(1))
        );
        let jk = JobEnv::detect(env(&[
            ("JENKINS_URL", "http://ci"),
            ("JOB_BASE_NAME", "app"),
            ("BUILD_NUMBER", "5"),
        ]));
        assert_eq!(
            (jk.pipeline.as_deref(), jk.job.as_deref()),
            (Some("app"), Some("build"))
        );
        let cb = JobEnv::detect(env(&[
            ("CODEBUILD_BUILD_ID", "app-build:1234-abcd"),
            ("CODEBUILD_BUILD_NUMBER", "12"),
        ]));
        assert_eq!(
            (cb.pipeline.as_deref(), cb.run_id.as_deref()),
            (Some("app-build"), Some("12"))
        );
        assert_eq!(JobEnv::detect(env(&[])), JobEnv::default());
    }
}
