//! Token verification against the policy file's issuers (trust model v2; invariant I7).
//!
//! Contract of [`verify_token`], in this order (the first failure is the answer):
//! 1. [`jwt::parse`]: size, structure, repeated keys, foreign key sources, `crit`, `alg`, `kid`.
//! 2. The issuer is the one whose `url` equals the unverified `iss` exactly: its keys, and only
//!    its keys, may verify the token ([`TokenError::UnknownIssuer`]).
//! 3. The header's `alg` is one the issuer accepts (`none` and HS* never are).
//! 4. The key is the issuer's key named by `kid`; an unknown kid asks the key source once for a
//!    fresh copy (the issuer may have rotated); a key source that cannot answer is
//!    [`TokenError::KeysUnavailable`], the only retryable refusal.
//! 5. The signature verifies with that key and that algorithm.
//! 6. Claims: `iss` again (now signed), `aud` contains the audience the request binds, `exp`
//!    (required), `nbf` (optional) and `iat` (required) within [`CLOCK_SKEW`], `iat` no older
//!    than the issuer's maximum age, `jti` and `sub` present.
//!
//! The resulting [`VerifiedToken::claims`] holds every other top-level claim that is a string
//! (at most [`MAX_CLAIM_CHARS`] characters, no control characters), a number or a boolean, in
//! the text rules glob against; registered claims checked here are left out.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Map, Value};

use super::jwt::{self, UnverifiedToken};
use super::{CLOCK_SKEW, Claims, Issuer, IssuerKind, KeySource, Presented, TokenAlgorithm, TokenError, VerifiedToken};
use crate::model::Name;

/// Longest claim value kept for rules (real claims are well under this).
pub const MAX_CLAIM_CHARS: usize = 1024;
/// Longest claim name kept for rules.
pub const MAX_CLAIM_NAME_CHARS: usize = 128;
/// Longest `jti` accepted (it becomes part of a single-use record key).
pub const MAX_JTI_CHARS: usize = 256;

/// Largest NumericDate accepted, in seconds either side of the epoch (about the year 33658):
/// far past any real token, far inside what chrono can add the clock skew to.
const MAX_NUMERIC_DATE: i64 = 1_000_000_000_000;

/// Claims checked here and not handed to rules.
const REGISTERED: [&str; 6] = ["iss", "aud", "exp", "nbf", "iat", "jti"];

/// Verifies `token` for `presented` at `now` (see the module contract).
pub async fn verify_token<K: KeySource>(
    keys: &K,
    issuers: &[Issuer],
    token: &str,
    presented: Presented<'_>,
    now: DateTime<Utc>,
) -> Result<VerifiedToken, TokenError> {
    let unverified = jwt::parse(token)?;
    let iss = unverified.issuer().ok_or(TokenError::MissingClaim("iss"))?;
    let issuer = issuers
        .iter()
        .find(|i| i.url == iss)
        .ok_or_else(|| TokenError::UnknownIssuer(iss.to_owned()))?;

    let alg = TokenAlgorithm::parse(unverified.alg())
        .ok()
        .filter(|a| issuer.algorithms.contains(a))
        .ok_or_else(|| TokenError::AlgorithmRefused(unverified.alg().to_owned()))?;

    let unavailable = |e: super::KeyError| TokenError::KeysUnavailable {
        issuer: issuer.name.to_string(),
        why: e.0,
    };
    let mut set = keys.keys(issuer, false).await.map_err(unavailable)?;
    if set.get(unverified.kid()).is_none() {
        set = keys.keys(issuer, true).await.map_err(unavailable)?;
    }
    let key = set.get(unverified.kid()).ok_or_else(|| TokenError::UnknownKey {
        issuer: issuer.name.to_string(),
        kid: unverified.kid().to_owned(),
    })?;
    unverified.verify_signature(key, alg)?;

    check_claims(issuer, &unverified, presented, now)
}

fn check_claims(
    issuer: &Issuer,
    token: &UnverifiedToken,
    presented: Presented<'_>,
    now: DateTime<Utc>,
) -> Result<VerifiedToken, TokenError> {
    let claims = token.claims();
    if claims.get("iss").and_then(Value::as_str) != Some(issuer.url.as_str()) {
        return Err(TokenError::UnknownIssuer(token.issuer().unwrap_or_default().to_owned()));
    }

    let expected = issuer.expected_audience(presented);
    let audience_ok = match claims.get("aud") {
        None => false,
        Some(Value::String(a)) => *a == expected,
        Some(Value::Array(items)) => {
            if !items.iter().all(Value::is_string) {
                return Err(TokenError::Malformed(
                    "claim `aud` is not a string or an array of strings".into(),
                ));
            }
            items.iter().any(|a| a.as_str() == Some(expected.as_str()))
        }
        Some(_) => {
            return Err(TokenError::Malformed(
                "claim `aud` is not a string or an array of strings".into(),
            ));
        }
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience { expected });
    }

    let skew = ChronoDuration::from_std(CLOCK_SKEW).unwrap_or(ChronoDuration::seconds(60));
    let expires_at = time_claim(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if now > expires_at + skew {
        return Err(TokenError::Expired(expires_at.to_rfc3339()));
    }
    if let Some(not_before) = time_claim(claims, "nbf")?
        && now + skew < not_before
    {
        return Err(TokenError::NotYetValid(not_before.to_rfc3339()));
    }
    let issued_at = time_claim(claims, "iat")?.ok_or(TokenError::MissingClaim("iat"))?;
    if issued_at > now + skew {
        return Err(TokenError::NotYetValid(issued_at.to_rfc3339()));
    }
    let age = now - issued_at;
    let max_secs = issuer.max_token_age.as_secs();
    if ChronoDuration::from_std(issuer.max_token_age).is_ok_and(|max| age > max) {
        return Err(TokenError::TooOld {
            age_secs: age.num_seconds(),
            max_secs,
        });
    }

    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.chars().count() <= MAX_JTI_CHARS => j.clone(),
        _ => return Err(TokenError::MissingClaim("jti")),
    };
    let subject = match claims.get("sub") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(TokenError::MissingClaim("sub")),
    };

    Ok(VerifiedToken {
        issuer: issuer.name.clone(),
        issuer_url: issuer.url.clone(),
        kind: issuer.kind,
        jti,
        subject,
        issued_at,
        expires_at,
        claims: rule_claims(claims)?,
    })
}

/// A NumericDate claim (RFC 7519: seconds since the epoch, possibly fractional). `None` when
/// absent; a value that is not a number, or out of any sane range, is refused.
fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<DateTime<Utc>>, TokenError> {
    let Some(value) = claims.get(name) else { return Ok(None) };
    let Value::Number(n) = value else {
        return Err(TokenError::MissingClaim(name));
    };
    let out_of_range = || TokenError::Malformed(format!("claim `{name}` is not a time Latch can represent"));
    // Whole seconds are bounded like fractional ones: a time chrono can hold but not move by the
    // clock skew (its last second, say) would make `exp + skew` overflow, and that panics.
    let at = if let Some(secs) = n.as_i64().filter(|s| s.unsigned_abs() < MAX_NUMERIC_DATE as u64) {
        DateTime::from_timestamp(secs, 0)
    } else if let Some(secs) = n
        .as_f64()
        .filter(|f| f.is_finite() && f.abs() < MAX_NUMERIC_DATE as f64)
    {
        // Whole milliseconds are plenty for a comparison with a minute of skew.
        DateTime::from_timestamp_millis((secs * 1000.0).floor() as i64)
    } else {
        None
    };
    at.map(Some).ok_or_else(out_of_range)
}

/// A token read as the verifier reads it, without checking its signature, audience or times:
/// for a client predicting its own grant and for `latch policy explain`. It authorises nothing.
/// `iss` becomes the issuer URL; times are `now`.
pub fn read_unverified(
    token: &str,
    issuer: Name,
    kind: IssuerKind,
    now: DateTime<Utc>,
) -> Result<VerifiedToken, TokenError> {
    let parsed = jwt::parse(token)?;
    let text = |name: &str| {
        parsed
            .claims()
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let issuer_url = parsed.issuer().ok_or(TokenError::MissingClaim("iss"))?.to_owned();
    Ok(VerifiedToken {
        issuer,
        issuer_url,
        kind,
        jti: text("jti"),
        subject: text("sub"),
        issued_at: now,
        expires_at: now,
        claims: rule_claims(parsed.claims())?,
    })
}

/// The claims rules may bind: every unregistered claim that is a string, number or boolean, as
/// text. Also what a client or `latch policy explain` reads from a token it does not verify.
pub fn rule_claims(claims: &Map<String, Value>) -> Result<Claims, TokenError> {
    let mut out = Claims::new();
    for (name, value) in claims {
        if REGISTERED.contains(&name.as_str()) {
            continue;
        }
        if name.is_empty() || name.chars().count() > MAX_CLAIM_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(TokenError::Malformed(format!(
                "claim name `{}` is empty, too long or has control characters",
                printable(name)
            )));
        }
        let text = match value {
            Value::String(s) => {
                if s.chars().count() > MAX_CLAIM_CHARS || s.chars().any(char::is_control) {
                    return Err(TokenError::Malformed(format!(
                        "claim `{}` is over {MAX_CLAIM_CHARS} characters or has control characters",
                        printable(name)
                    )));
                }
                s.clone()
            }
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            Value::Null | Value::Array(_) | Value::Object(_) => continue,
        };
        out.insert(name.clone(), text);
    }
    Ok(out)
}

/// A claim name fit for an audit message: at most 64 characters, control characters escaped.
fn printable(name: &str) -> String {
    name.chars().take(64).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
