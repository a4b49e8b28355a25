//! Pipeline event contract v2.
//!
//! An event is an EventBridge envelope (guaranteed by EventBridge: `source`, `account`,
//! `region`, `id`; `time` is the publisher's) around a `detail` object. Detail-types:
//! `Pipeline Job Started` (asks for a grant), `Pipeline Job Finished` (ends the job's grants) and
//! `Pipeline Grant Extension Requested` (extends an active grant). Each may carry `token`, the
//! CI's OIDC ID token: the job's identity then comes from what its issuer signed
//! ([`crate::identity`]), and the detail's own job fields are claims that must agree with it.
//! Parsing is strict: a missing or invalid field is an [`EventError`] naming the field; unknown
//! fields are ignored; a detail over [`MAX_EVENT_BYTES`] is refused before it is looked at.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::model::{AccountId, GrantDuration, InvalidValue, JobContext, JobKey, Name, RoleArn};

pub const DETAIL_TYPE_STARTED: &str = "Pipeline Job Started";
pub const DETAIL_TYPE_FINISHED: &str = "Pipeline Job Finished";
pub const DETAIL_TYPE_EXTEND: &str = "Pipeline Grant Extension Requested";

/// EventBridge accepts 256 KiB; a pipeline job needs far less, and Latch refuses more.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

const MAX_CLAIM_CHARS: usize = 256;
const MAX_REASON_CHARS: usize = 1024;

/// What EventBridge itself guarantees about an event. Only these may authorise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub detail_type: String,
    pub source: String,
    pub account: AccountId,
    pub region: String,
    pub time: DateTime<Utc>,
}

/// `Pipeline Job Started`: a request for a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub job: JobKey,
    pub role: RoleArn,
    pub permission_set: Name,
    pub duration: GrantDuration,
    pub context: JobContext,
    /// The CI's OIDC ID token, unverified; never stored, logged or audited.
    pub token: Option<String>,
}

/// `Pipeline Job Finished`: the job is over, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishNotice {
    pub job: JobKey,
    pub outcome: Option<String>,
    pub token: Option<String>,
}

/// `Pipeline Grant Extension Requested`: the job's active grant of `permission_set` on `role`
/// should last `by` longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendRequest {
    pub job: JobKey,
    pub role: RoleArn,
    pub permission_set: Name,
    pub by: GrantDuration,
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event detail is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("event detail is not a JSON object")]
    NotAnObject,
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("field `{field}` is invalid: {why}")]
    Invalid { field: &'static str, why: String },
}

impl EventError {
    /// The detail field at fault, for log lines and audits.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Missing { field } | Self::Invalid { field, .. } => Some(field),
            Self::TooLarge { .. } | Self::NotAnObject => None,
        }
    }
}

fn bad(field: &'static str, why: impl Into<String>) -> EventError {
    EventError::Invalid { field, why: why.into() }
}

fn from_invalid(field: &'static str) -> impl Fn(InvalidValue) -> EventError {
    move |e| bad(field, e.0)
}

/// Refuses a detail that is too big, then returns it as an object.
fn detail_object(detail: &Value, serialized_len: usize) -> Result<&Map<String, Value>, EventError> {
    if serialized_len > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge { size: serialized_len });
    }
    detail.as_object().ok_or(EventError::NotAnObject)
}

/// A free-text claim: a string of printable characters (no control characters), within a length.
fn text(map: &Map<String, Value>, field: &'static str, max: usize) -> Result<Option<String>, EventError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.is_empty() {
                Err(bad(field, "must not be empty"))
            } else if s.chars().count() > max {
                Err(bad(field, format!("longer than {max} characters")))
            } else if s.chars().any(char::is_control) {
                Err(bad(field, "contains control characters"))
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// The token as sent: any non-empty string (its size and shape are the verifier's to judge, so
/// a refusal names what is wrong with the token rather than a field).
fn token(map: &Map<String, Value>) -> Result<Option<String>, EventError> {
    match map.get("token") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(bad("token", "must not be empty")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad("token", "must be a string")),
    }
}

fn required_text(map: &Map<String, Value>, field: &'static str) -> Result<String, EventError> {
    text(map, field, MAX_CLAIM_CHARS)?.ok_or(EventError::Missing { field })
}

fn attempt(map: &Map<String, Value>) -> Result<u32, EventError> {
    const FIELD: &str = "attempt";
    match map.get(FIELD) {
        None | Some(Value::Null) => Err(EventError::Missing { field: FIELD }),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|a| (1..=10_000).contains(a))
            .map(|a| a as u32)
            .ok_or_else(|| bad(FIELD, "must be a whole number from 1 to 10000")),
        Some(_) => Err(bad(FIELD, "must be a number")),
    }
}

fn job_key(map: &Map<String, Value>) -> Result<JobKey, EventError> {
    Ok(JobKey {
        principal: None,
        pipeline: required_text(map, "pipeline")?,
        run_id: required_text(map, "run_id")?,
        job: required_text(map, "job")?,
        attempt: attempt(map)?,
    })
}

impl StartRequest {
    /// Parses the `detail` of a `Pipeline Job Started` event. `serialized_len` is the
    /// detail's size on the wire, checked first.
    pub fn parse(detail: &Value, serialized_len: usize) -> Result<Self, EventError> {
        let map = detail_object(detail, serialized_len)?;
        let job = job_key(map)?;
        let role = RoleArn::parse(&required_text(map, "role_arn")?).map_err(from_invalid("role_arn"))?;
        let permission_set =
            Name::parse(&required_text(map, "permission_set")?).map_err(from_invalid("permission_set"))?;
        let duration = GrantDuration::parse(&required_text(map, "duration")?).map_err(from_invalid("duration"))?;
        let context = JobContext {
            reason: text(map, "reason", MAX_REASON_CHARS)?,
            git_ref: text(map, "ref", MAX_CLAIM_CHARS)?,
            commit: text(map, "commit", MAX_CLAIM_CHARS)?,
            actor: text(map, "actor", MAX_CLAIM_CHARS)?,
            ticket: text(map, "ticket", MAX_CLAIM_CHARS)?,
            environment: text(map, "environment", MAX_CLAIM_CHARS)?,
        };
        Ok(Self {
            job,
            role,
            permission_set,
            duration,
            context,
            token: token(map)?,
        })
    }
}

impl FinishNotice {
    /// Parses the `detail` of a `Pipeline Job Finished` event.
    pub fn parse(detail: &Value, serialized_len: usize) -> Result<Self, EventError> {
        let map = detail_object(detail, serialized_len)?;
        Ok(Self {
            job: job_key(map)?,
            outcome: text(map, "outcome", MAX_CLAIM_CHARS)?,
            token: token(map)?,
        })
    }
}

impl ExtendRequest {
    /// Parses the `detail` of a `Pipeline Grant Extension Requested` event.
    pub fn parse(detail: &Value, serialized_len: usize) -> Result<Self, EventError> {
        let map = detail_object(detail, serialized_len)?;
        Ok(Self {
            job: job_key(map)?,
            role: RoleArn::parse(&required_text(map, "role_arn")?).map_err(from_invalid("role_arn"))?,
            permission_set: Name::parse(&required_text(map, "permission_set")?)
                .map_err(from_invalid("permission_set"))?,
            by: GrantDuration::parse(&required_text(map, "by")?).map_err(from_invalid("by"))?,
            token: token(map)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn start_detail() -> Value {
        json!({
            "pipeline": "app-release", "run_id": "4711", "job": "deploy", "attempt": 1,
            "role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
            "permission_set": "deploy-artifacts", "duration": "PT15M",
            "ref": "refs/heads/main", "actor": "octocat", "extra": {"ignored": true}
        })
    }

    fn parse(v: &Value) -> Result<StartRequest, EventError> {
        StartRequest::parse(v, serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX))
    }

    #[test]
    fn given_a_complete_detail_when_parsed_then_every_field_is_typed() {
        let r = parse(&start_detail()).unwrap();
        assert_eq!(r.job.pipeline, "app-release");
        assert_eq!(r.job.attempt, 1);
        assert_eq!(r.duration.as_secs(), 900);
        assert_eq!(r.role.name(), "app-deployer");
        assert_eq!(r.context.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(r.context.ticket, None);
    }

    #[test]
    fn given_a_missing_or_wrong_field_when_parsed_then_the_error_names_it() {
        for (field, value) in [
            ("pipeline", Value::Null),
            ("run_id", json!(4711)),
            ("job", json!("")),
            ("attempt", json!(0)),
            ("attempt", json!("1")),
            ("role_arn", json!("arn:aws:iam::123456789012:role/latch/*")),
            ("permission_set", json!("a b")),
            ("duration", json!("PT0S")),
            ("actor", json!("bad\u{0000}actor")),
        ] {
            let mut d = start_detail();
            d[field] = value;
            let err = parse(&d).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
        let mut d = start_detail();
        d.as_object_mut().unwrap().remove("duration");
        assert_eq!(parse(&d).unwrap_err(), EventError::Missing { field: "duration" });
    }

    #[test]
    fn given_an_oversized_detail_when_parsed_then_it_is_refused_by_size() {
        let mut d = start_detail();
        d["padding"] = json!("x".repeat(MAX_EVENT_BYTES));
        assert!(matches!(parse(&d), Err(EventError::TooLarge { .. })));
        assert_eq!(parse(&json!([1, 2])).unwrap_err(), EventError::NotAnObject);
    }

    #[test]
    fn finish_needs_only_the_job_key() {
        let d = json!({"pipeline": "p", "run_id": "1", "job": "j", "attempt": 2, "outcome": "failure"});
        let f = FinishNotice::parse(&d, 80).unwrap();
        assert_eq!(f.job.attempt, 2);
        assert_eq!(f.outcome.as_deref(), Some("failure"));
    }
}
