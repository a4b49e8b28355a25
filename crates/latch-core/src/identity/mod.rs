//! Verified pipeline identity (trust model v2, invariant I7).
//!
//! A pipeline proves who it is with its CI's OIDC ID token. The policy file names the issuers
//! Latch accepts ([`Issuer`]); [`verify::verify_token`] checks a token against them (strict
//! parsing, signature by `kid` from the issuer's keys, `iss`, `aud`, `exp`/`nbf`/`iat` with
//! [`CLOCK_SKEW`], maximum age, `jti`) and yields a [`VerifiedToken`]: the claims the issuer
//! signed. [`claims`] turns those into the job's identity per issuer kind. Nothing in an event's
//! `detail` may widen what the verified claims say; a contradiction is a denial.
//!
//! Keys come through the [`KeySource`] port: the issuer's JWKS found through its discovery
//! document (adapter in `latch-aws`), or keys pinned in the policy file ([`StaticKeys`]). A key
//! source that cannot answer is a retryable error: never a grant, never a permanent denial.
//!
//! The token itself is never stored, logged or audited; audits carry the issuer and the claims
//! they used.

pub mod claims;
pub mod jwt;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod verify;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{AccountId, GrantDuration, Name, RoleArn, digest};

pub use jwt::{JwkSet, KeyParseError};

/// `exp`, `nbf` and `iat` may be off by this much (clocks of the CI and of Lambda drift).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// No token is looked at past this size (GitHub's are about 1.2 KB, GitLab's about 1.5 KB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How a token's claims become a job identity ([`claims`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerKind {
    /// GitHub Actions (`token.actions.githubusercontent.com` or a GHES instance).
    GitHub,
    /// GitLab CI (`gitlab.com` or self-managed).
    GitLab,
    /// Any other OIDC issuer (Buildkite, CircleCI, …): the rule says which claims identify.
    Generic,
}

/// The signature algorithms Latch accepts. `none`, HS* and the rest are refused at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenAlgorithm {
    Rs256,
    Es256,
}

impl TokenAlgorithm {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            "none" => Err("alg none means unsigned: never accepted".into()),
            s if s.starts_with("HS") => Err(format!(
                "{s} is a shared-secret algorithm: an issuer's public key would verify forgeries"
            )),
            s => Err(format!("{s} is not accepted; use RS256 or ES256")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

impl fmt::Display for TokenAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which `aud` a token must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudienceForm {
    /// `<prefix>:<digest of the request>` ([`request_audience`]): a token seen on the bus is
    /// useless for any other request. What GitHub Actions clients ask for.
    BoundToRequest { prefix: String },
    /// Exactly this string (for CIs that fix the audience in pipeline configuration, such as
    /// GitLab's `id_tokens:`); replay across jobs is then stopped by the single-use `jti`.
    Exact(String),
}

/// An OIDC issuer the policy file trusts.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub name: Name,
    pub kind: IssuerKind,
    /// The `iss` claim, exactly; discovery is `<url>/.well-known/openid-configuration`.
    pub url: String,
    pub audience: AudienceForm,
    pub algorithms: Vec<TokenAlgorithm>,
    /// Keys pinned in the policy file (air-gapped issuers): never fetched.
    pub pinned_keys: Option<Arc<JwkSet>>,
    /// A token issued longer ago than this is refused, whatever its `exp`.
    pub max_token_age: Duration,
}

/// What a request's audience binds: the account, role, permission set and duration asked for.
#[derive(Debug, Clone, Copy)]
pub struct AudienceBinding<'a> {
    pub account: &'a AccountId,
    pub role: &'a RoleArn,
    pub permission_set: &'a Name,
    pub duration: GrantDuration,
}

/// The operation a token is presented for: each binds its audience differently.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    Start(AudienceBinding<'a>),
    Extend {
        binding: AudienceBinding<'a>,
        by: GrantDuration,
    },
    /// Finishing proves the run, whatever it held: the audience binds the account only.
    Finish {
        account: &'a AccountId,
    },
}

/// The audience a client asks its CI for, and the grant function expects, for `presented`.
pub fn request_audience(prefix: &str, presented: Presented<'_>) -> String {
    let d = match presented {
        Presented::Start(b) => digest(&[
            "start",
            b.account.as_str(),
            b.role.as_str(),
            b.permission_set.as_str(),
            &b.duration.as_secs().to_string(),
        ]),
        Presented::Extend { binding: b, by } => digest(&[
            "extend",
            b.account.as_str(),
            b.role.as_str(),
            b.permission_set.as_str(),
            &by.as_secs().to_string(),
        ]),
        Presented::Finish { account } => digest(&["finish", account.as_str()]),
    };
    format!("{prefix}:{d}")
}

impl Issuer {
    /// The `aud` this issuer's tokens must carry for `presented`.
    pub fn expected_audience(&self, presented: Presented<'_>) -> String {
        match &self.audience {
            AudienceForm::BoundToRequest { prefix } => request_audience(prefix, presented),
            AudienceForm::Exact(aud) => aud.clone(),
        }
    }
}

/// A claim's value as rules see it: strings as they are, numbers and booleans in JSON text.
/// Arrays and objects are kept out (no rule can glob them meaningfully).
pub type Claims = BTreeMap<String, String>;

/// A token whose signature, issuer, audience and times have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The policy file's name for the issuer.
    pub issuer: Name,
    /// The issuer's URL (`iss`): what a principal is named under, whatever the file calls it.
    pub issuer_url: String,
    pub kind: IssuerKind,
    pub jti: String,
    pub subject: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub claims: Claims,
}

/// A requester whose token verified, and the job identity reconciled from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub token: VerifiedToken,
    pub job: claims::VerifiedJob,
}

/// Why a token was refused. Every variant but [`TokenError::KeysUnavailable`] is permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is {size} bytes, over the {MAX_TOKEN_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token repeats the key `{key}` in its {part}")]
    DuplicateKey { part: &'static str, key: String },
    #[error("token algorithm {0:?} is not accepted for this issuer")]
    AlgorithmRefused(String),
    #[error("token header names its own key source (`{0}`): keys come only from the issuer")]
    ForeignKeySource(&'static str),
    #[error("token header has critical extensions Latch does not understand: {0}")]
    CriticalHeader(String),
    #[error("token issuer {0:?} is not one the policy file names")]
    UnknownIssuer(String),
    #[error("no key {kid:?} in issuer {issuer}'s key set")]
    UnknownKey { issuer: String, kid: String },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token audience does not match this request (expected {expected:?})")]
    WrongAudience { expected: String },
    #[error("token expired at {0}")]
    Expired(String),
    #[error("token is not valid before {0}")]
    NotYetValid(String),
    #[error("token was issued {age_secs} s ago, over the issuer's maximum age of {max_secs} s")]
    TooOld { age_secs: i64, max_secs: u64 },
    #[error("token claim `{0}` is missing or not the expected type")]
    MissingClaim(&'static str),
    /// The issuer's keys could not be fetched (network, timeout, bad answer): retry later.
    #[error("issuer {issuer}'s keys are unavailable: {why}")]
    KeysUnavailable { issuer: String, why: String },
}

impl TokenError {
    /// Whether a retry of the same event may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::KeysUnavailable { .. })
    }
}

/// Why an issuer's keys could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// Where verification keys come from. `refresh: true` asks for a fresh copy (an unknown
/// `kid`: the issuer may have rotated); implementations bound how often they really refetch.
pub trait KeySource: Send + Sync {
    fn keys(&self, issuer: &Issuer, refresh: bool) -> impl Future<Output = Result<Arc<JwkSet>, KeyError>> + Send;
}

/// Keys pinned in the policy file, and nothing else: for air-gapped issuers and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct StaticKeys;

impl KeySource for StaticKeys {
    async fn keys(&self, issuer: &Issuer, _refresh: bool) -> Result<Arc<JwkSet>, KeyError> {
        issuer
            .pinned_keys
            .clone()
            .ok_or_else(|| KeyError(format!("issuer {} has no pinned keys and no key fetcher", issuer.name)))
    }
}
