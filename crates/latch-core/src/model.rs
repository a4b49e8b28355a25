//! Validated domain values and the grant they make up. Each newtype checks its input on
//! construction, so a value of the type is always usable as-is: an ARN is well-formed, a
//! duration is within the hard cap, a grant id is the deterministic hash of the request that
//! produced it. Nothing here depends on how a grant is decided, revoked or swept.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// Why a value was refused. The message names what was expected, for log lines and audits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

/// A 12-digit AWS account id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid("an AWS account id is 12 ASCII digits"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IAM role ARN: `arn:<partition>:iam::<account>:role<path><name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn {
    arn: String,
    account: AccountId,
    /// Starts and ends with `/`; `/` when the role has no path.
    path: String,
    name: String,
}

const PARTITIONS: [&str; 3] = ["aws", "aws-cn", "aws-us-gov"];

fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

impl RoleArn {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        const SHAPE: &str = "expected arn:aws:iam::<12-digit account>:role/<path/>name";
        if s.len() > 2048 {
            return Err(invalid("role ARN longer than 2048 characters"));
        }
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid(SHAPE));
        };
        if !PARTITIONS.contains(&partition) {
            return Err(invalid(format!("unknown partition {partition:?}; {SHAPE}")));
        }
        let account = AccountId::parse(account)?;
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(invalid(SHAPE));
        };
        let (path, name) = match path_and_name.rfind('/') {
            Some(i) => (format!("/{}", &path_and_name[..=i]), &path_and_name[i + 1..]),
            None => ("/".to_owned(), path_and_name),
        };
        if name.is_empty() || name.len() > 64 || !name.chars().all(is_iam_name_char) {
            return Err(invalid("role name must be 1-64 of A-Z a-z 0-9 + = , . @ _ -"));
        }
        if path.len() > 512 || path.contains("//") || !path.chars().all(|c| c == '/' || is_iam_name_char(c)) {
            return Err(invalid("role path must be /segments/ of A-Z a-z 0-9 + = , . @ _ -"));
        }
        Ok(Self {
            arn: s.to_owned(),
            account,
            path,
            name: name.to_owned(),
        })
    }
    pub fn as_str(&self) -> &str {
        &self.arn
    }
    pub fn account(&self) -> &AccountId {
        &self.account
    }
    /// `aws`, `aws-cn` or `aws-us-gov`: checked at parse.
    pub fn partition(&self) -> &str {
        self.arn.split(':').nth(1).unwrap_or("aws")
    }
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The role's name, as IAM's PutRolePolicy wants it.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// True when the role's path starts with `prefix` (itself `/…/`).
    pub fn is_under_path(&self, prefix: &str) -> bool {
        self.path.starts_with(prefix)
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// How long a grant may last: more than zero and at most [`GrantDuration::HARD_CAP`],
/// whatever a policy file says. Written as ISO 8601 (`PT15M`) or humantime (`15m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantDuration(Duration);

impl GrantDuration {
    /// No grant outlives this, whatever the policy file says.
    pub const HARD_CAP: Duration = Duration::from_secs(12 * 3600);
    pub const SHORTEST: Self = Self(Duration::from_secs(1));
    pub const LONGEST: Self = Self(Self::HARD_CAP);

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let s = s.trim();
        let parsed = if s.starts_with('P') || s.starts_with('p') {
            // The iso8601 crate stops at the first character it does not know (`PT30X` reads as
            // `PT30`, zero): only digits, a decimal mark and designators may follow the `P`,
            // ending with a designator.
            let designators = "YMWDTHS";
            let well_formed = s[1..]
                .chars()
                .all(|ch| ch.is_ascii_digit() || ".,".contains(ch) || designators.contains(ch.to_ascii_uppercase()))
                && s[1..]
                    .chars()
                    .last()
                    .is_some_and(|ch| designators.contains(ch.to_ascii_uppercase()) && !ch.eq_ignore_ascii_case(&'T'));
            if !well_formed {
                return Err(invalid("not an ISO 8601 duration such as PT15M"));
            }
            let d = iso8601::duration(s).map_err(|_| invalid("not an ISO 8601 duration such as PT15M"))?;
            Duration::from(d)
        } else {
            humantime::parse_duration(s).map_err(|_| invalid("expected a duration such as PT15M or 15m"))?
        };
        Self::from_std(parsed)
    }

    pub fn from_std(d: Duration) -> Result<Self, InvalidValue> {
        if d < Duration::from_secs(1) {
            return Err(invalid("duration must be at least one second"));
        }
        if d > Self::HARD_CAP {
            return Err(invalid("duration is over the 12-hour hard cap"));
        }
        Ok(Self(Duration::from_secs(d.as_secs())))
    }

    pub fn as_std(&self) -> Duration {
        self.0
    }
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for GrantDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Names of permission sets and rules: 1-64 of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid("a name is 1-64 of A-Z a-z 0-9 _ -"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of a grant: a hash of everything that makes a request distinct (I3), so that
/// a duplicated, retried or reordered event lands on the same id and never creates a second grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId(String);

/// Everything a grant id is derived from.
#[derive(Debug, Clone, Copy)]
pub struct GrantIdentity<'a> {
    pub account: &'a AccountId,
    pub source: &'a str,
    pub job: &'a JobKey,
    pub permission_set: &'a Name,
    pub role: &'a RoleArn,
}

/// A 128-bit hex digest of `fields`, for keys and ids derived from several values.
pub fn digest(fields: &[&str]) -> String {
    digest_fields(fields, 32)
}

/// Hex digest over length-prefixed fields, so no two field lists hash alike by concatenation.
fn digest_fields(fields: &[&str], hex_chars: usize) -> String {
    let mut h = Sha256::new();
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(hex_chars);
    for b in digest.iter() {
        if out.len() >= hex_chars {
            break;
        }
        out.push_str(&format!("{b:02x}"));
    }
    out.truncate(hex_chars);
    out
}

impl GrantId {
    /// 128 bits of SHA-256: collisions are out of reach, and the policy name stays short.
    const HEX_CHARS: usize = 32;

    pub fn derive(id: GrantIdentity<'_>) -> Self {
        let attempt = id.job.attempt.to_string();
        let mut fields = vec![
            "latch-grant-v1",
            id.account.as_str(),
            id.source,
            &id.job.pipeline,
            &id.job.run_id,
            &id.job.job,
            &attempt,
            id.permission_set.as_str(),
            id.role.as_str(),
        ];
        // Claimed jobs keep the ids they had before identities were verified.
        if let Some(principal) = &id.job.principal {
            fields.push(principal);
        }
        Self(digest_fields(&fields, Self::HEX_CHARS))
    }

    /// Accepts only what [`GrantId::derive`] produces: 32 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.len() == Self::HEX_CHARS && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid("a grant id is 32 lowercase hex digits"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The inline policy's name on the role: `latch-<id>`, within IAM's 128-character
    /// limit and character set; the `latch-` prefix is how drift repair recognises ours.
    pub fn policy_name(&self) -> String {
        format!("{POLICY_NAME_PREFIX}{}", self.0)
    }

    /// The grant id inside a policy name written by Latch, if it is one.
    pub fn from_policy_name(name: &str) -> Option<Self> {
        name.strip_prefix(POLICY_NAME_PREFIX)
            .and_then(|id| Self::parse(id).ok())
    }
}

pub const POLICY_NAME_PREFIX: &str = "latch-";

/// Which Latch deployment a policy belongs to, written into its name (`latch-<deployment>-<id>`),
/// so two deployments sharing IAM (two stacks in one account, or one stack in two regions)
/// never take each other's grants for orphans. The default names policies `latch-<id>`, the
/// shape before deployments were named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Deployment(Option<String>);

impl Deployment {
    /// 1-16 of `a-z 0-9`: short enough that every name fits IAM's 128 characters.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            Ok(Self(Some(s.to_owned())))
        } else {
            Err(invalid("a deployment id is 1-16 of a-z 0-9"))
        }
    }

    /// The inline policy's name for grant `id` in this deployment.
    pub fn policy_name(&self, id: &GrantId) -> String {
        match &self.0 {
            Some(d) => format!("{POLICY_NAME_PREFIX}{d}-{id}"),
            None => id.policy_name(),
        }
    }

    /// The grant id in a policy name of this deployment's exact shape, and in no other.
    pub fn grant_id_of(&self, name: &str) -> Option<GrantId> {
        let rest = name.strip_prefix(POLICY_NAME_PREFIX)?;
        let id = match &self.0 {
            Some(d) => rest.strip_prefix(d.as_str())?.strip_prefix('-')?,
            None => rest,
        };
        GrantId::parse(id).ok()
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job run attempt. Identifies the job's grants and tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    /// Who the job is, as its CI's token proves it (`<issuer>:<repository or project id>`, see
    /// [`crate::identity::claims`]); `None` when the identity is only claimed (native jobs,
    /// `identity: claimed` rules). Part of every key, so a claimed event never reaches a
    /// verified job's grants or tombstone.
    pub principal: Option<String>,
    pub pipeline: String,
    pub run_id: String,
    pub job: String,
    pub attempt: u32,
}

impl JobKey {
    /// What ties a job's grants and its tombstone together: the trusted publisher and the job.
    pub fn scope(&self, account: &AccountId, source: &str) -> String {
        let attempt = self.attempt.to_string();
        let mut fields = vec![
            account.as_str(),
            source,
            &self.pipeline,
            &self.run_id,
            &self.job,
            &attempt,
        ];
        // Claimed jobs keep the scope they had before identities were verified.
        if let Some(principal) = &self.principal {
            fields.push(principal);
        }
        digest(&fields)
    }
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} run {} job {} attempt {}",
            self.pipeline, self.run_id, self.job, self.attempt
        )?;
        match &self.principal {
            Some(p) => write!(f, " ({p})"),
            None => Ok(()),
        }
    }
}

/// Optional context a pipeline may attach; recorded in audits, used by rules only to narrow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobContext {
    pub reason: Option<String>,
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub actor: Option<String>,
    pub ticket: Option<String>,
    pub environment: Option<String>,
}

/// Where a grant stands. `Pending` and `Active` are live: they hold a cap slot, sit in the
/// expiry index and are revoked at expiry or finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    /// Recorded; its document is not yet known to be on the role (I8: nothing says active yet).
    Pending,
    /// IAM accepted its document.
    Active,
    Revoked,
    /// IAM refused its document for good: never attached, its cap slot freed.
    Failed,
}

impl GrantStatus {
    pub fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Active)
    }
}

/// A grant as recorded: everything needed to re-render its policy, revoke it and audit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub status: GrantStatus,
    pub source: String,
    pub account: AccountId,
    pub region: String,
    pub event_id: String,
    pub job: JobKey,
    pub context: JobContext,
    pub role: RoleArn,
    /// The inline policy's name on the role ([`crate::model::Deployment::policy_name`]).
    pub policy_name: String,
    pub permission_set: Name,
    pub rule: Name,
    pub requested_duration_secs: u64,
    pub requested_at: DateTime<Utc>,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub policy_sha256: String,
    /// The document's size as IAM counts it: what the grant holds of the role's quota.
    pub policy_chars: usize,
    /// The one IAM role session the grant holds for (`bind_session`); `None`: every session.
    pub session: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arn_splits_path_and_name() {
        let r = RoleArn::parse("arn:aws:iam::123456789012:role/latch/ci/deployer").unwrap();
        assert_eq!(r.path(), "/latch/ci/");
        assert_eq!(r.name(), "deployer");
        assert_eq!(r.account().as_str(), "123456789012");
        assert!(r.is_under_path("/latch/"));
        let plain = RoleArn::parse("arn:aws:iam::123456789012:role/admin").unwrap();
        assert_eq!(plain.path(), "/");
        assert!(!plain.is_under_path("/latch/"));
    }

    #[test]
    fn role_arn_refuses_malformed_and_hostile_values() {
        for bad in [
            "",
            "arn:aws:iam::123456789012:user/latch/x",
            "arn:aws:iam::12345678901:role/latch/x",
            "arn:aws:iam:us-east-1:123456789012:role/latch/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:role/latch/*",
            "arn:aws:iam::123456789012:role/latch//x",
            "arn:aws:iam::123456789012:role/latch/x:y",
            "arn:aws:iam::123456789012:role/latch/",
            "arn:evil:iam::123456789012:role/latch/x",
            "arn:aws:iam::123456789012:role/latch/ⅾeployer",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations_accept_iso_and_humantime_within_the_cap() {
        assert_eq!(GrantDuration::parse("PT15M").unwrap().as_secs(), 900);
        assert_eq!(GrantDuration::parse("15m").unwrap().as_secs(), 900);
        assert_eq!(GrantDuration::parse("PT1H30M").unwrap().as_secs(), 5400);
        assert!(GrantDuration::parse("PT0S").is_err());
        assert!(GrantDuration::parse("0s").is_err());
        assert!(GrantDuration::parse("-5m").is_err());
        assert!(GrantDuration::parse("13h").is_err());
        assert!(GrantDuration::parse("P1Y").is_err());
        assert!(GrantDuration::parse("soon").is_err());
        // Half-read ISO 8601 is a parse error, not a short duration.
        for bad in ["PT30X", "PT", "P", "PT15M!", "PT1H30"] {
            let err = GrantDuration::parse(bad).unwrap_err().to_string();
            assert!(err.contains("not an ISO 8601 duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn policy_names_round_trip_and_fit_iam_rules() {
        let id = GrantId(digest_fields(&["x"], 32));
        let name = id.policy_name();
        assert!(name.len() <= 128 && name.chars().all(is_iam_name_char));
        assert_eq!(GrantId::from_policy_name(&name), Some(id));
        assert_eq!(GrantId::from_policy_name("latch-not-ours"), None);
        assert_eq!(GrantId::from_policy_name("other-policy"), None);
    }

    #[test]
    fn a_deployment_names_its_policies_and_recognises_only_its_own_shape() {
        let id = GrantId(digest_fields(&["x"], 32));
        let blue = Deployment::parse("blue").unwrap();
        let name = blue.policy_name(&id);
        assert_eq!(name, format!("latch-blue-{id}"));
        assert!(name.len() <= 128 && name.chars().all(is_iam_name_char));
        assert_eq!(blue.grant_id_of(&name), Some(id.clone()));
        assert_eq!(Deployment::parse("green").unwrap().grant_id_of(&name), None);
        assert_eq!(
            Deployment::default().grant_id_of(&name),
            None,
            "the unnamed shape is another one"
        );
        assert_eq!(blue.grant_id_of(&id.policy_name()), None);
        assert_eq!(blue.grant_id_of("latch-blue-guardrails"), None);
        for bad in ["", "Blue", "blue-1", "a".repeat(17).as_str()] {
            assert!(Deployment::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digest_is_not_fooled_by_shifting_field_boundaries() {
        assert_ne!(digest_fields(&["ab", "c"], 32), digest_fields(&["a", "bc"], 32));
    }
}
