//! HttpKeySource against the local OIDC issuer (feature `local`).
#![cfg(feature = "local")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use latch_aws::jwks::{FetchLimits, HttpKeySource};
use latch_aws::local_issuer::{LocalIssuer, SigningKey};
use latch_core::identity::verify::verify_token;
use latch_core::identity::{
    AudienceForm, Issuer, IssuerKind, JwkSet, KeySource, Presented, TokenAlgorithm, TokenError,
};
use latch_core::model::{AccountId, Name};
use serde_json::json;

fn issuer_at(url: &str) -> Issuer {
    Issuer {
        name: Name::parse("local").expect("name"),
        kind: IssuerKind::Generic,
        url: url.to_owned(),
        audience: AudienceForm::Exact("latch-test".into()),
        algorithms: vec![TokenAlgorithm::Rs256, TokenAlgorithm::Es256],
        pinned_keys: None,
        max_token_age: Duration::from_secs(600),
    }
}

fn source(limits: FetchLimits) -> HttpKeySource {
    HttpKeySource::with_limits(limits).expect("key source")
}

fn account() -> AccountId {
    AccountId::parse("123456789012").expect("account")
}

async fn verify(keys: &HttpKeySource, issuer: &Issuer, token: &str) -> Result<(), TokenError> {
    let account = account();
    verify_token(
        keys,
        std::slice::from_ref(issuer),
        token,
        Presented::Finish { account: &account },
        Utc::now(),
    )
    .await
    .map(|_| ())
}

fn claims() -> serde_json::Value {
    json!({"sub": "pipeline:acme/app", "aud": "latch-test", "run": 42})
}

#[tokio::test]
async fn given_a_local_issuer_when_keys_are_asked_then_discovery_and_jwks_are_fetched_and_tokens_verify() {
    let local = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits::default());
    let issuer = issuer_at(local.url());
    let set = keys.keys(&issuer, false).await.expect("keys");
    assert_eq!(set.len(), 2);
    assert!(set.get(&local.kid(SigningKey::Rsa)).is_some());
    assert!(set.get(&local.kid(SigningKey::Ec)).is_some());
    assert_eq!(keys.fetches(), 1);
    assert_eq!((local.discovery_requests(), local.jwks_requests()), (1, 1));

    let token = local.mint(claims()).expect("mint");
    verify(&keys, &issuer, &token).await.expect("RS256 verifies");
    let es = local
        .mint_with(
            &local.header(SigningKey::Ec),
            &json!({"iss": local.url(), "sub": "s", "aud": "latch-test", "jti": "e1",
            "iat": Utc::now().timestamp(), "exp": Utc::now().timestamp() + 60})
            .to_string(),
            SigningKey::Ec,
        )
        .expect("mint");
    verify(&keys, &issuer, &es).await.expect("ES256 verifies");
    assert_eq!(keys.fetches(), 1, "verifications came from the cache");
}

#[tokio::test]
async fn given_cached_keys_when_asked_again_then_no_second_fetch() {
    let local = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits::default());
    let issuer = issuer_at(local.url());
    let first = keys.keys(&issuer, false).await.expect("keys");
    let second = keys.keys(&issuer, false).await.expect("keys");
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(keys.fetches(), 1);
    assert_eq!(local.jwks_requests(), 1);
}

#[tokio::test]
async fn given_an_unknown_kid_when_refreshed_twice_within_the_interval_then_one_fetch_only() {
    let local = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits::default());
    let issuer = issuer_at(local.url());
    keys.keys(&issuer, false).await.expect("keys");
    local.rotate().await.expect("rotate");
    // The first fetch counts as the last attempt: a refresh right after it answers from the cache.
    let token = local.mint(claims()).expect("mint");
    let err = verify(&keys, &issuer, &token).await.unwrap_err();
    assert!(matches!(err, TokenError::UnknownKey { .. }), "{err:?}");
    assert_eq!(keys.fetches(), 1);
    for _ in 0..5 {
        assert!(verify(&keys, &issuer, &token).await.is_err());
    }
    assert_eq!(keys.fetches(), 1);
    assert_eq!(local.jwks_requests(), 1);
}

#[tokio::test]
async fn given_a_rotated_issuer_when_the_refresh_interval_has_passed_then_the_new_key_is_fetched() {
    let local = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits {
        refresh_interval: Duration::ZERO,
        ..FetchLimits::default()
    });
    let issuer = issuer_at(local.url());
    keys.keys(&issuer, false).await.expect("keys");
    let old = local.kid(SigningKey::Rsa);
    local.rotate().await.expect("rotate");
    assert_ne!(local.kid(SigningKey::Rsa), old);
    let token = local.mint(claims()).expect("mint");
    verify(&keys, &issuer, &token).await.expect("verifies after refresh");
    assert_eq!(keys.fetches(), 2);
    let set = keys.keys(&issuer, false).await.expect("keys");
    assert!(set.get(&old).is_none(), "old key left the JWKS");
}

#[tokio::test]
async fn given_an_issuer_that_is_down_when_keys_are_asked_then_key_error() {
    let local = LocalIssuer::start().await.expect("issuer");
    local.set_down(true);
    let keys = source(FetchLimits::default());
    let issuer = issuer_at(local.url());
    let err = keys.keys(&issuer, false).await.unwrap_err();
    assert!(err.0.contains("503"), "{err}");
    let token = local.mint(claims()).expect("mint");
    let err = verify(&keys, &issuer, &token).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn given_nothing_listening_when_keys_are_asked_then_key_error() {
    let url = {
        let local = LocalIssuer::start().await.expect("issuer");
        local.url().to_owned()
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let keys = source(FetchLimits::default());
    assert!(keys.keys(&issuer_at(&url), false).await.is_err());
}

#[tokio::test]
async fn given_a_slow_issuer_when_keys_are_asked_then_key_error_within_the_bound() {
    let local = LocalIssuer::start().await.expect("issuer");
    local.set_delay(Duration::from_secs(3));
    let keys = source(FetchLimits {
        total: Duration::from_millis(400),
        ..FetchLimits::default()
    });
    let started = Instant::now();
    let err = keys.keys(&issuer_at(local.url()), false).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(err.0.contains("took over"), "{err}");
}

#[tokio::test]
async fn given_a_key_set_over_the_body_cap_when_fetched_then_key_error() {
    let local = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits {
        max_body: 600,
        ..FetchLimits::default()
    });
    let err = keys.keys(&issuer_at(local.url()), false).await.unwrap_err();
    assert!(err.0.contains("over 600 bytes"), "{err}");
}

#[tokio::test]
async fn given_pinned_keys_when_asked_then_nothing_is_fetched() {
    let local = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits::default());
    let mut issuer = issuer_at(local.url());
    issuer.pinned_keys = Some(Arc::new(JwkSet::from_value(&local.public_jwks()).expect("pinned")));
    let token = local.mint(claims()).expect("mint");
    verify(&keys, &issuer, &token).await.expect("verifies with pinned keys");
    assert_eq!(keys.fetches(), 0);
    assert_eq!(local.jwks_requests() + local.discovery_requests(), 0);
}

#[tokio::test]
async fn given_a_non_loopback_http_issuer_when_keys_are_asked_then_key_error_without_a_request() {
    let keys = source(FetchLimits::default());
    let err = keys.keys(&issuer_at("http://issuer.example"), false).await.unwrap_err();
    assert!(err.0.contains("not loopback"), "{err}");
}

#[tokio::test]
async fn given_stale_keys_and_a_failing_issuer_when_asked_then_the_cached_keys_are_served() {
    let local = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits {
        max_age: Duration::ZERO,
        refresh_interval: Duration::ZERO,
        ..FetchLimits::default()
    });
    let issuer = issuer_at(local.url());
    let first = keys.keys(&issuer, false).await.expect("keys");
    local.set_down(true);
    let again = keys.keys(&issuer, false).await.expect("stale keys served");
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(keys.fetches(), 2);
    // A refresh (unknown kid) that fails is retryable, not an answer from stale keys.
    assert!(keys.keys(&issuer, true).await.is_err());
}

#[tokio::test]
async fn given_another_issuers_key_when_verified_then_bad_signature() {
    let ours = LocalIssuer::start().await.expect("issuer");
    let theirs = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits::default());
    let issuer = issuer_at(ours.url());
    // Same kid as ours, our iss, their key.
    let header = ours.header(SigningKey::Rsa);
    let now = Utc::now().timestamp();
    let forged = json!({"iss": ours.url(), "sub": "s", "aud": "latch-test", "jti": "f", "iat": now, "exp": now + 60});
    let token = theirs
        .mint_with(&header, &forged.to_string(), SigningKey::Rsa)
        .expect("mint");
    assert_eq!(
        verify(&keys, &issuer, &token).await.unwrap_err(),
        TokenError::BadSignature
    );
}

#[tokio::test]
async fn given_a_hostile_token_from_the_local_issuer_when_verified_then_refused_before_fetching() {
    let local = LocalIssuer::start().await.expect("issuer");
    let keys = source(FetchLimits::default());
    let issuer = issuer_at(local.url());
    let text = format!(r#"{{"iss":"{}","sub":"a","sub":"b"}}"#, local.url());
    let token = local
        .mint_with(&local.header(SigningKey::Rsa), &text, SigningKey::Rsa)
        .expect("mint");
    let err = verify(&keys, &issuer, &token).await.unwrap_err();
    assert_eq!(
        err,
        TokenError::DuplicateKey {
            part: "claims",
            key: "sub".into()
        }
    );
    assert_eq!(keys.fetches(), 0);
}
