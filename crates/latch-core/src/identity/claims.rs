//! From verified claims to the job's identity, per issuer kind.
//!
//! | job field | GitHub Actions | GitLab CI | generic issuer |
//! |---|---|---|---|
//! | principal | `<iss>#repository:<repository_id>` | `<iss>#project:<project_id>` | `<iss>#sub:<sub>` |
//! | pipeline | `repository` after its `/` | `project_path` after its last `/` | the event's claim |
//! | run_id | `run_id` | `pipeline_id` | the event's claim |
//! | job | the event's claim (the token names no job) | `job_id` | the event's claim |
//! | attempt | `run_attempt` | 1 (a retried job has a new `job_id`) | the event's claim |
//! | ref / environment / commit / actor | `ref` `environment` `sha` `actor` | `ref` (as `refs/heads/…` or `refs/tags/…`) `environment` `sha` `user_login` | the event's claims |
//! | trigger | `event_name` | `pipeline_source` | none |
//!
//! The principal survives renames (numeric ids), so a renamed or re-created repository is not
//! the same job owner as its predecessor. An event's own claims may repeat what the token
//! says; where one contradicts it, [`reconcile`] refuses the event (`claim_mismatch`).

use crate::model::{JobContext, JobKey};

use super::{IssuerKind, VerifiedToken};

/// Triggers that run code a repository's maintainers did not review (a fork's pull request
/// with the base repository's credentials). Refused unless a rule names them in `allow_triggers`.
pub const REFUSED_TRIGGERS: &[&str] = &["pull_request_target", "merge_request_event"];

/// The job fields GitHub and GitLab tokens sign (GitHub's name no job: its `job` stays claimed).
const SIGNED_JOB_FIELDS: &[&str] = &[
    "principal",
    "pipeline",
    "run_id",
    "job",
    "attempt",
    "ref",
    "commit",
    "actor",
    "environment",
];

/// The job as the issuer signed it, with the event's own claims where the token is silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJob {
    pub job: JobKey,
    pub context: JobContext,
    /// What started the run (`event_name`, `pipeline_source`), when the issuer says.
    pub trigger: Option<String>,
    /// Which job fields the issuer signed (the rest are the publisher's claims).
    pub verified_fields: Vec<&'static str>,
}

/// An event claim that contradicts the token, or a claim the issuer kind needs and lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the token lacks the `{0}` claim its issuer kind always carries")]
    Missing(&'static str),
    #[error("the token's `{claim}` claim is not usable: {why}")]
    Unusable { claim: &'static str, why: String },
    #[error("the event claims {field} {claimed:?}, the token says {verified:?}")]
    Mismatch {
        field: &'static str,
        claimed: String,
        verified: String,
    },
}

fn claim<'t>(token: &'t VerifiedToken, name: &'static str) -> Result<&'t str, ClaimsError> {
    token
        .claims
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(ClaimsError::Missing(name))
}

fn optional(token: &VerifiedToken, name: &str) -> Option<String> {
    token.claims.get(name).filter(|v| !v.is_empty()).cloned()
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Who the job is, named under the issuer's URL by the id its kind keeps stable across renames.
/// A client computes the same from its own token (unverified: it only predicts its grant id).
pub fn principal(
    kind: IssuerKind,
    issuer_url: &str,
    claims: &super::Claims,
    subject: &str,
) -> Result<String, ClaimsError> {
    let get = |name: &'static str| {
        claims
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or(ClaimsError::Missing(name))
    };
    Ok(match kind {
        IssuerKind::GitHub => format!("{issuer_url}#repository:{}", get("repository_id")?),
        IssuerKind::GitLab => format!("{issuer_url}#project:{}", get("project_id")?),
        IssuerKind::Generic if subject.is_empty() => return Err(ClaimsError::Missing("sub")),
        IssuerKind::Generic => format!("{issuer_url}#sub:{subject}"),
    })
}

/// Compares one field the event claims with what the token says.
fn agree(field: &'static str, claimed: Option<&str>, verified: Option<&str>) -> Result<(), ClaimsError> {
    match (claimed, verified) {
        (Some(c), Some(v)) if c != v => Err(ClaimsError::Mismatch {
            field,
            claimed: c.to_owned(),
            verified: v.to_owned(),
        }),
        (Some(c), None) if matches!(field, "ref" | "environment") => Err(ClaimsError::Mismatch {
            field,
            claimed: c.to_owned(),
            verified: "(none)".to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The job identity of a verified token, checked against what the event claims (`claimed`,
/// `claimed_context`). Every field the issuer signs replaces the claim; a claim that differs
/// from it is a [`ClaimsError::Mismatch`].
pub fn reconcile(
    token: &VerifiedToken,
    claimed: &JobKey,
    claimed_context: &JobContext,
) -> Result<VerifiedJob, ClaimsError> {
    let principal = principal(token.kind, &token.issuer_url, &token.claims, &token.subject)?;
    let (job, mut context, trigger, verified_fields) = match token.kind {
        IssuerKind::GitHub => {
            let repository = claim(token, "repository")?;
            let attempt_text = claim(token, "run_attempt")?;
            let attempt = attempt_text
                .parse::<u32>()
                .ok()
                .filter(|a| (1..=10_000).contains(a))
                .ok_or_else(|| ClaimsError::Unusable {
                    claim: "run_attempt",
                    why: format!("{attempt_text:?} is not a whole number from 1 to 10000"),
                })?;
            let job = JobKey {
                principal: Some(principal),
                pipeline: last_segment(repository).to_owned(),
                run_id: claim(token, "run_id")?.to_owned(),
                job: claimed.job.clone(),
                attempt,
            };
            let context = JobContext {
                git_ref: optional(token, "ref"),
                commit: optional(token, "sha"),
                actor: optional(token, "actor"),
                environment: optional(token, "environment"),
                ..JobContext::default()
            };
            let fields = SIGNED_JOB_FIELDS.iter().copied().filter(|f| *f != "job").collect();
            (job, context, optional(token, "event_name"), fields)
        }
        IssuerKind::GitLab => {
            let project_path = claim(token, "project_path")?;
            let job = JobKey {
                principal: Some(principal),
                pipeline: last_segment(project_path).to_owned(),
                run_id: claim(token, "pipeline_id")?.to_owned(),
                job: claim(token, "job_id")?.to_owned(),
                attempt: 1,
            };
            let git_ref = optional(token, "ref").map(|name| match token.claims.get("ref_type").map(String::as_str) {
                Some("tag") => format!("refs/tags/{name}"),
                _ => format!("refs/heads/{name}"),
            });
            let context = JobContext {
                git_ref,
                commit: optional(token, "sha"),
                actor: optional(token, "user_login"),
                environment: optional(token, "environment"),
                ..JobContext::default()
            };
            let fields = SIGNED_JOB_FIELDS.to_vec();
            (job, context, optional(token, "pipeline_source"), fields)
        }
        IssuerKind::Generic => {
            let job = JobKey {
                principal: Some(principal),
                ..claimed.clone()
            };
            (job, claimed_context.clone(), None, vec!["principal"])
        }
    };
    if token.kind != IssuerKind::Generic {
        agree("pipeline", Some(&claimed.pipeline), Some(&job.pipeline))?;
        agree("run_id", Some(&claimed.run_id), Some(&job.run_id))?;
        let (claimed_attempt, attempt) = (claimed.attempt.to_string(), job.attempt.to_string());
        agree("attempt", Some(&claimed_attempt), Some(&attempt))?;
        agree("ref", claimed_context.git_ref.as_deref(), context.git_ref.as_deref())?;
        agree(
            "environment",
            claimed_context.environment.as_deref(),
            context.environment.as_deref(),
        )?;
        agree("commit", claimed_context.commit.as_deref(), context.commit.as_deref())?;
        agree("actor", claimed_context.actor.as_deref(), context.actor.as_deref())?;
        // What no issuer signs stays the publisher's word, recorded as such.
        context.reason = claimed_context.reason.clone();
        context.ticket = claimed_context.ticket.clone();
    }
    Ok(VerifiedJob {
        job,
        context,
        trigger,
        verified_fields,
    })
}

/// The claims an audit keeps: those that say who the job is and what started it, per issuer
/// kind (GitHub and GitLab document theirs); for other issuers, every claim rules could bind.
pub fn audited_claims(token: &VerifiedToken) -> std::collections::BTreeMap<String, String> {
    let keep: &[&str] = match token.kind {
        IssuerKind::GitHub => GITHUB_CLAIMS,
        IssuerKind::GitLab => GITLAB_CLAIMS,
        IssuerKind::Generic => return token.claims.clone(),
    };
    token
        .claims
        .iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The GitHub Actions claims rules may bind and audits keep.
pub const GITHUB_CLAIMS: &[&str] = &[
    "sub",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "run_id",
    "run_number",
    "run_attempt",
    "ref",
    "ref_type",
    "ref_protected",
    "base_ref",
    "head_ref",
    "environment",
    "job_workflow_ref",
    "job_workflow_sha",
    "workflow",
    "workflow_ref",
    "event_name",
    "sha",
    "actor",
    "actor_id",
    "runner_environment",
];

/// The GitLab CI claims rules may bind and audits keep.
pub const GITLAB_CLAIMS: &[&str] = &[
    "sub",
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    "ref",
    "ref_type",
    "ref_protected",
    "environment",
    "environment_protected",
    "deployment_tier",
    "sha",
    "user_login",
    "user_id",
    "ci_config_ref_uri",
    "runner_environment",
];

/// The IAM role session name a job must use when `bind_session` is on: derived from the
/// verified run only, so the client can compute it from its own token and no other job can
/// claim it. 2–64 characters of IAM's session-name alphabet.
pub fn session_name(job: &JobKey) -> String {
    let attempt = job.attempt.to_string();
    let d = crate::model::digest(&[
        "latch-session-v1",
        job.principal.as_deref().unwrap_or(""),
        &job.run_id,
        &job.job,
        &attempt,
    ]);
    format!("latch-{}", &d[..24])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Claims;
    use crate::model::Name;
    use chrono::Utc;

    fn github(claims: &[(&str, &str)]) -> VerifiedToken {
        let mut all: Claims = [
            ("repository", "example-org/app-billing"),
            ("repository_id", "4242"),
            ("repository_owner_id", "99"),
            ("run_id", "8812345678"),
            ("run_attempt", "1"),
            ("ref", "refs/heads/main"),
            ("sha", "9fceb02d"),
            ("actor", "octocat"),
            ("event_name", "push"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in claims {
            all.insert((*k).to_owned(), (*v).to_owned());
        }
        VerifiedToken {
            issuer: Name::parse("github").unwrap(),
            issuer_url: "https://token.actions.githubusercontent.com".into(),
            kind: IssuerKind::GitHub,
            jti: "j1".into(),
            subject: "repo:example-org/app-billing:ref:refs/heads/main".into(),
            issued_at: Utc::now(),
            expires_at: Utc::now(),
            claims: all,
        }
    }

    fn claimed_job() -> JobKey {
        JobKey {
            principal: None,
            pipeline: "app-billing".into(),
            run_id: "8812345678".into(),
            job: "deploy".into(),
            attempt: 1,
        }
    }

    #[test]
    fn given_a_github_token_when_reconciled_then_identity_comes_from_the_claims() {
        let v = reconcile(&github(&[]), &claimed_job(), &JobContext::default()).unwrap();
        assert_eq!(
            v.job.principal.as_deref(),
            Some("https://token.actions.githubusercontent.com#repository:4242")
        );
        assert_eq!(v.job.pipeline, "app-billing");
        assert_eq!(v.job.job, "deploy");
        assert_eq!(v.context.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(v.trigger.as_deref(), Some("push"));
    }

    #[test]
    fn given_a_detail_claiming_another_repository_or_ref_when_reconciled_then_it_is_a_mismatch() {
        let mut other = claimed_job();
        other.pipeline = "app-payments".into();
        let err = reconcile(&github(&[]), &other, &JobContext::default()).unwrap_err();
        assert!(matches!(err, ClaimsError::Mismatch { field: "pipeline", .. }), "{err}");
        let ctx = JobContext {
            git_ref: Some("refs/heads/main".into()),
            environment: Some("production".into()),
            ..JobContext::default()
        };
        let token = github(&[("ref", "refs/heads/feature")]);
        let err = reconcile(&token, &claimed_job(), &ctx).unwrap_err();
        assert!(matches!(err, ClaimsError::Mismatch { field: "ref", .. }), "{err}");
        let err = reconcile(&github(&[]), &claimed_job(), &ctx).unwrap_err();
        assert!(
            matches!(
                err,
                ClaimsError::Mismatch {
                    field: "environment",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn given_a_token_without_its_kinds_identity_claims_when_reconciled_then_it_is_refused() {
        let mut t = github(&[]);
        t.claims.remove("repository_id");
        assert_eq!(
            reconcile(&t, &claimed_job(), &JobContext::default()),
            Err(ClaimsError::Missing("repository_id"))
        );
        let t = github(&[("run_attempt", "0")]);
        assert!(matches!(
            reconcile(&t, &claimed_job(), &JobContext::default()),
            Err(ClaimsError::Unusable {
                claim: "run_attempt",
                ..
            })
        ));
    }

    #[test]
    fn session_names_fit_iam_and_differ_per_run() {
        let a = reconcile(&github(&[]), &claimed_job(), &JobContext::default())
            .unwrap()
            .job;
        let mut b = a.clone();
        b.attempt = 2;
        let name = session_name(&a);
        assert!(name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_ne!(name, session_name(&b));
    }
}
