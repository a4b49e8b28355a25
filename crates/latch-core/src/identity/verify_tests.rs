use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::identity::testing::{TestSigner, jwks, shared};
use crate::identity::{AudienceBinding, AudienceForm, IssuerKind, JwkSet, KeyError, StaticKeys};
use crate::model::{AccountId, GrantDuration, Name, RoleArn};

const URL: &str = "https://token.actions.githubusercontent.com";
const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const MAX_AGE: u64 = 600;

struct Request {
    account: AccountId,
    role: RoleArn,
    set: Name,
    duration: GrantDuration,
}

fn request() -> Request {
    Request {
        account: AccountId::parse("123456789012").expect("account"),
        role: RoleArn::parse("arn:aws:iam::123456789012:role/latch/app-deployer").expect("role"),
        set: Name::parse("deploy").expect("name"),
        duration: GrantDuration::parse("15m").expect("duration"),
    }
}

fn start(r: &Request) -> Presented<'_> {
    Presented::Start(AudienceBinding {
        account: &r.account,
        role: &r.role,
        permission_set: &r.set,
        duration: r.duration,
    })
}

fn issuer_with(keys: &[&TestSigner], algorithms: Vec<TokenAlgorithm>, audience: AudienceForm) -> Issuer {
    Issuer {
        name: Name::parse("github").expect("name"),
        kind: IssuerKind::GitHub,
        url: URL.into(),
        audience,
        algorithms,
        pinned_keys: Some(Arc::new(JwkSet::from_value(&jwks(keys)).expect("keys"))),
        max_token_age: Duration::from_secs(MAX_AGE),
    }
}

fn issuer() -> Issuer {
    let k = shared();
    issuer_with(
        &[&k.rsa, &k.ec],
        vec![TokenAlgorithm::Rs256, TokenAlgorithm::Es256],
        AudienceForm::BoundToRequest { prefix: "latch".into() },
    )
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).expect("now")
}

/// Claims that pass, for the default request.
fn good_claims() -> Value {
    let r = request();
    json!({
        "iss": URL,
        "aud": issuer().expected_audience(start(&r)),
        "sub": "repo:acme/app:environment:prod",
        "jti": "3f6a-1",
        "iat": NOW - 30,
        "nbf": NOW - 30,
        "exp": NOW + 270,
        "repository": "acme/app",
        "run_attempt": 2,
        "ref_protected": true,
        "groups": ["a", "b"],
        "extra": {"x": 1},
        "nothing": null,
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().expect("object").remove(name);
    claims
}

async fn verify(claims: &Value) -> Result<VerifiedToken, TokenError> {
    let token = shared().rsa.sign(claims).expect("sign");
    let r = request();
    verify_token(&StaticKeys, &[issuer()], &token, start(&r), now()).await
}

/// A key source that answers from a script and records each `refresh` it was asked for.
struct Scripted {
    first: Result<Arc<JwkSet>, KeyError>,
    refreshed: Result<Arc<JwkSet>, KeyError>,
    calls: Mutex<Vec<bool>>,
}

impl Scripted {
    fn new(first: Result<Arc<JwkSet>, KeyError>, refreshed: Result<Arc<JwkSet>, KeyError>) -> Self {
        Self {
            first,
            refreshed,
            calls: Mutex::new(Vec::new()),
        }
    }
    fn calls(&self) -> Vec<bool> {
        self.calls.lock().expect("lock").clone()
    }
}

impl KeySource for Scripted {
    async fn keys(&self, _issuer: &Issuer, refresh: bool) -> Result<Arc<JwkSet>, KeyError> {
        self.calls.lock().expect("lock").push(refresh);
        if refresh {
            self.refreshed.clone()
        } else {
            self.first.clone()
        }
    }
}

fn set_of(keys: &[&TestSigner]) -> Arc<JwkSet> {
    Arc::new(JwkSet::from_value(&jwks(keys)).expect("keys"))
}

#[tokio::test]
async fn given_a_valid_rs256_token_when_verified_then_identity_and_rule_claims_are_returned() {
    let v = verify(&good_claims()).await.expect("verifies");
    assert_eq!(v.issuer.as_str(), "github");
    assert_eq!(v.kind, IssuerKind::GitHub);
    assert_eq!(v.jti, "3f6a-1");
    assert_eq!(v.subject, "repo:acme/app:environment:prod");
    assert_eq!(v.issued_at.timestamp(), NOW - 30);
    assert_eq!(v.expires_at.timestamp(), NOW + 270);
    let expected: Claims = [
        ("ref_protected", "true"),
        ("repository", "acme/app"),
        ("run_attempt", "2"),
        ("sub", "repo:acme/app:environment:prod"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(v.claims, expected);
}

#[tokio::test]
async fn given_an_es256_token_with_an_exact_audience_in_an_array_when_verified_then_ok() {
    let k = shared();
    let issuer = issuer_with(
        &[&k.ec],
        vec![TokenAlgorithm::Es256],
        AudienceForm::Exact("latch-gitlab".into()),
    );
    let claims = with(good_claims(), "aud", json!(["other", "latch-gitlab"]));
    let token = k.ec.sign(&claims).expect("sign");
    let r = request();
    let v = verify_token(&StaticKeys, &[issuer], &token, start(&r), now())
        .await
        .expect("verifies");
    assert_eq!(v.jti, "3f6a-1");
}

#[tokio::test]
async fn given_an_iss_no_issuer_names_when_verified_then_unknown_issuer() {
    for iss in [format!("{URL}/"), "https://evil.example".into(), URL.to_uppercase()] {
        let err = verify(&with(good_claims(), "iss", json!(iss))).await.unwrap_err();
        assert_eq!(err, TokenError::UnknownIssuer(iss));
    }
    assert_eq!(
        verify(&without(good_claims(), "iss")).await.unwrap_err(),
        TokenError::MissingClaim("iss")
    );
    assert_eq!(
        verify(&with(good_claims(), "iss", json!(1))).await.unwrap_err(),
        TokenError::MissingClaim("iss")
    );
}

#[tokio::test]
async fn given_an_alg_the_issuer_does_not_accept_when_verified_then_algorithm_refused_names_it() {
    let k = shared();
    let rs_only = issuer_with(
        &[&k.rsa, &k.ec],
        vec![TokenAlgorithm::Rs256],
        AudienceForm::BoundToRequest { prefix: "latch".into() },
    );
    let r = request();
    let token = k.ec.sign(&good_claims()).expect("sign");
    let err = verify_token(&StaticKeys, &[rs_only], &token, start(&r), now())
        .await
        .unwrap_err();
    assert_eq!(err, TokenError::AlgorithmRefused("ES256".into()));
    assert!(err.to_string().contains("ES256"));
    for alg in ["none", "HS256", "RS384", "PS256", "EdDSA"] {
        let h = json!({"alg": alg, "kid": "rsa-1", "typ": "JWT"}).to_string();
        let token = k.rsa.sign_parts(&h, &good_claims().to_string()).expect("sign");
        let err = verify_token(&StaticKeys, &[issuer()], &token, start(&r), now())
            .await
            .unwrap_err();
        assert_eq!(err, TokenError::AlgorithmRefused(alg.into()));
    }
}

#[tokio::test]
async fn given_a_kid_not_in_the_keys_when_verified_then_one_refresh_then_unknown_key() {
    let k = shared();
    let source = Scripted::new(Ok(set_of(&[&k.ec])), Ok(set_of(&[&k.ec])));
    let token = k.rsa.sign(&good_claims()).expect("sign");
    let r = request();
    let err = verify_token(&source, &[issuer()], &token, start(&r), now())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TokenError::UnknownKey {
            issuer: "github".into(),
            kid: "rsa-1".into()
        }
    );
    assert_eq!(source.calls(), [false, true]);
}

#[tokio::test]
async fn given_an_issuer_that_rotated_when_verified_then_the_refreshed_keys_verify() {
    let k = shared();
    let source = Scripted::new(Ok(set_of(&[&k.ec])), Ok(set_of(&[&k.rsa, &k.ec])));
    let token = k.rsa.sign(&good_claims()).expect("sign");
    let r = request();
    verify_token(&source, &[issuer()], &token, start(&r), now())
        .await
        .expect("verifies");
    assert_eq!(source.calls(), [false, true]);
}

#[tokio::test]
async fn given_a_known_kid_when_verified_then_no_refresh_is_asked() {
    let k = shared();
    let source = Scripted::new(Ok(set_of(&[&k.rsa])), Err(KeyError("must not be asked".into())));
    let token = k.rsa.sign(&good_claims()).expect("sign");
    let r = request();
    verify_token(&source, &[issuer()], &token, start(&r), now())
        .await
        .expect("verifies");
    assert_eq!(source.calls(), [false]);
}

#[tokio::test]
async fn given_keys_that_cannot_be_had_when_verified_then_keys_unavailable_and_retryable() {
    let k = shared();
    let r = request();
    let token = k.rsa.sign(&good_claims()).expect("sign");
    for source in [
        Scripted::new(Err(KeyError("connect timeout".into())), Ok(set_of(&[&k.rsa]))),
        Scripted::new(Ok(set_of(&[&k.ec])), Err(KeyError("503".into()))),
    ] {
        let err = verify_token(&source, &[issuer()], &token, start(&r), now())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::KeysUnavailable { issuer, .. } if issuer == "github"),
            "{err:?}"
        );
        assert!(err.is_retryable());
    }
    let mut unpinned = issuer();
    unpinned.pinned_keys = None;
    let err = verify_token(&StaticKeys, &[unpinned], &token, start(&r), now())
        .await
        .unwrap_err();
    assert!(err.is_retryable());
}

#[tokio::test]
async fn given_a_token_signed_by_someone_elses_key_when_verified_then_bad_signature() {
    let token = shared().impostor.sign(&good_claims()).expect("sign");
    let r = request();
    let err = verify_token(&StaticKeys, &[issuer()], &token, start(&r), now())
        .await
        .unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
}

#[tokio::test]
async fn given_a_forged_expired_token_when_verified_then_the_signature_is_refused_first() {
    let token = shared()
        .impostor
        .sign(&with(good_claims(), "exp", json!(NOW - 3600)))
        .expect("sign");
    let r = request();
    let err = verify_token(&StaticKeys, &[issuer()], &token, start(&r), now())
        .await
        .unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
}

#[tokio::test]
async fn given_a_wrong_or_missing_audience_when_verified_then_wrong_audience() {
    let r = request();
    let expected = issuer().expected_audience(start(&r));
    let finish = issuer().expected_audience(Presented::Finish { account: &r.account });
    for aud in [json!("latch"), json!(finish), json!([]), json!(["x", "y"])] {
        let err = verify(&with(good_claims(), "aud", aud)).await.unwrap_err();
        assert_eq!(
            err,
            TokenError::WrongAudience {
                expected: expected.clone()
            }
        );
    }
    let err = verify(&without(good_claims(), "aud")).await.unwrap_err();
    assert_eq!(err, TokenError::WrongAudience { expected });
    for aud in [json!(1), json!([expected_aud_value(), 1]), json!({"a": 1})] {
        assert!(matches!(
            verify(&with(good_claims(), "aud", aud)).await,
            Err(TokenError::Malformed(_))
        ));
    }
}

fn expected_aud_value() -> String {
    let r = request();
    issuer().expected_audience(start(&r))
}

#[tokio::test]
async fn given_exp_when_verified_then_expired_only_past_the_skew() {
    verify(&with(good_claims(), "exp", json!(NOW - 59)))
        .await
        .expect("within skew");
    let err = verify(&with(good_claims(), "exp", json!(NOW - 61))).await.unwrap_err();
    assert!(matches!(err, TokenError::Expired(_)), "{err:?}");
    verify(&with(good_claims(), "exp", json!(NOW as f64 + 0.5)))
        .await
        .expect("fractional exp");
    assert_eq!(
        verify(&without(good_claims(), "exp")).await.unwrap_err(),
        TokenError::MissingClaim("exp")
    );
    assert_eq!(
        verify(&with(good_claims(), "exp", json!("tomorrow")))
            .await
            .unwrap_err(),
        TokenError::MissingClaim("exp")
    );
    assert!(matches!(
        verify(&with(good_claims(), "exp", json!(1e300))).await,
        Err(TokenError::Malformed(_))
    ));
}

#[tokio::test]
async fn given_a_time_claim_at_the_edge_of_chronos_range_when_verified_then_malformed_not_a_panic() {
    // A signed `exp` of chrono's last second used to panic on `exp + skew` (found by
    // functions/grant/tests/hostile_tokens.rs); whole seconds are now bounded like fractional ones.
    let edges = [
        DateTime::<Utc>::MAX_UTC.timestamp(),
        DateTime::<Utc>::MIN_UTC.timestamp(),
        i64::MAX,
        i64::MIN,
        1_000_000_000_000,
    ];
    for claim in ["exp", "nbf", "iat"] {
        for secs in edges {
            let err = verify(&with(good_claims(), claim, json!(secs))).await.unwrap_err();
            assert!(
                matches!(&err, TokenError::Malformed(m) if m.contains(claim)),
                "{claim} = {secs}: {err:?}"
            );
        }
    }
}

#[tokio::test]
async fn given_nbf_when_verified_then_not_yet_valid_only_past_the_skew() {
    verify(&with(good_claims(), "nbf", json!(NOW + 59)))
        .await
        .expect("within skew");
    let err = verify(&with(good_claims(), "nbf", json!(NOW + 61))).await.unwrap_err();
    assert!(matches!(err, TokenError::NotYetValid(_)), "{err:?}");
    verify(&without(good_claims(), "nbf")).await.expect("nbf is optional");
    assert_eq!(
        verify(&with(good_claims(), "nbf", json!(true))).await.unwrap_err(),
        TokenError::MissingClaim("nbf")
    );
}

#[tokio::test]
async fn given_iat_in_the_future_when_verified_then_not_yet_valid_past_the_skew() {
    verify(&with(good_claims(), "iat", json!(NOW + 59)))
        .await
        .expect("within skew");
    let err = verify(&with(good_claims(), "iat", json!(NOW + 61))).await.unwrap_err();
    assert!(matches!(err, TokenError::NotYetValid(_)), "{err:?}");
    assert_eq!(
        verify(&without(good_claims(), "iat")).await.unwrap_err(),
        TokenError::MissingClaim("iat")
    );
}

#[tokio::test]
async fn given_a_token_older_than_the_issuers_maximum_age_when_verified_then_too_old() {
    let at_limit = with(good_claims(), "iat", json!(NOW - MAX_AGE as i64));
    verify(&with(at_limit, "nbf", json!(NOW - 700)))
        .await
        .expect("at the limit");
    let old = with(good_claims(), "iat", json!(NOW - 601));
    let err = verify(&old).await.unwrap_err();
    assert_eq!(
        err,
        TokenError::TooOld {
            age_secs: 601,
            max_secs: MAX_AGE
        }
    );
}

#[tokio::test]
async fn given_a_missing_empty_or_overlong_jti_when_verified_then_missing_claim_jti() {
    for jti in [json!(""), json!(1), json!("j".repeat(MAX_JTI_CHARS + 1)), Value::Null] {
        let err = verify(&with(good_claims(), "jti", jti)).await.unwrap_err();
        assert_eq!(err, TokenError::MissingClaim("jti"));
    }
    assert_eq!(
        verify(&without(good_claims(), "jti")).await.unwrap_err(),
        TokenError::MissingClaim("jti")
    );
    verify(&with(good_claims(), "jti", json!("j".repeat(MAX_JTI_CHARS))))
        .await
        .expect("at the limit");
}

#[tokio::test]
async fn given_a_missing_or_mistyped_sub_when_verified_then_missing_claim_sub() {
    assert_eq!(
        verify(&without(good_claims(), "sub")).await.unwrap_err(),
        TokenError::MissingClaim("sub")
    );
    assert_eq!(
        verify(&with(good_claims(), "sub", json!(["a"]))).await.unwrap_err(),
        TokenError::MissingClaim("sub")
    );
}

#[tokio::test]
async fn given_a_claim_with_control_characters_or_over_the_length_cap_when_verified_then_malformed_naming_it() {
    for value in [
        json!("main\nx"),
        json!("a\u{7f}"),
        json!("r".repeat(MAX_CLAIM_CHARS + 1)),
    ] {
        let err = verify(&with(good_claims(), "ref", value)).await.unwrap_err();
        assert!(
            matches!(&err, TokenError::Malformed(m) if m.contains("`ref`")),
            "{err:?}"
        );
    }
    verify(&with(good_claims(), "ref", json!("r".repeat(MAX_CLAIM_CHARS))))
        .await
        .expect("at the limit");
    let err = verify(&with(good_claims(), "bad\u{1}name", json!("x")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::Malformed(m) if m.contains("bad\\u{1}name")),
        "{err:?}"
    );
}

#[tokio::test]
async fn given_a_repeated_claim_when_verified_then_duplicate_key_before_any_key_lookup() {
    let k = shared();
    let claims = good_claims()
        .to_string()
        .replacen('{', r#"{"sub":"repo:evil/app:environment:prod","#, 1);
    let token = k
        .rsa
        .sign_parts(&json!({"alg": "RS256", "kid": "rsa-1"}).to_string(), &claims)
        .expect("sign");
    let source = Scripted::new(Err(KeyError("must not be asked".into())), Err(KeyError("no".into())));
    let r = request();
    let err = verify_token(&source, &[issuer()], &token, start(&r), now())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TokenError::DuplicateKey {
            part: "claims",
            key: "sub".into()
        }
    );
    assert!(source.calls().is_empty());
}

#[tokio::test]
async fn given_two_issuers_when_verified_then_only_the_iss_issuers_keys_are_used() {
    let k = shared();
    let mut other = issuer_with(
        &[&k.impostor],
        vec![TokenAlgorithm::Rs256],
        AudienceForm::Exact("x".into()),
    );
    other.url = "https://gitlab.example".into();
    other.name = Name::parse("gitlab").expect("name");
    // Signed by the gitlab issuer's key but claiming GitHub's iss: GitHub's keys refuse it.
    let token = k.impostor.sign(&good_claims()).expect("sign");
    let r = request();
    let err = verify_token(&StaticKeys, &[other, issuer()], &token, start(&r), now())
        .await
        .unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
}
