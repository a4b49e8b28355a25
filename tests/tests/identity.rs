//! Verified identity on the emulator, end to end with real signed tokens: a local OIDC issuer on
//! 127.0.0.1 (discovery document + JWKS), the grant function's handler with the key fetcher it
//! runs in Lambda (`HttpKeySource`), the shipped example policy with its `github` issuer pointed
//! at the local one, and IAM, DynamoDB and the bus inspected through the real SDK.

use std::time::Duration;

use grant::Outcome;
use latch_aws::local_issuer::LocalIssuer;
use latch_core::grant::{ExtendOutcome, FinishOutcome, StartOutcome};
use latch_core::identity::{AudienceBinding, Presented, request_audience};
use latch_core::model::{AccountId, GrantDuration, Name, RoleArn};
use latch_tests::{Harness, s};
use serde_json::{Value, json};

const GITHUB_URL: &str = "https://token.actions.githubusercontent.com";

/// The shipped example with its GitHub issuer served locally.
async fn setup() -> (Harness, LocalIssuer) {
    let issuer = LocalIssuer::start().await.expect("local issuer");
    let text = std::fs::read_to_string(format!("{}/../infra/policies.yaml", env!("CARGO_MANIFEST_DIR")))
        .expect("infra/policies.yaml")
        .replace(GITHUB_URL, issuer.url());
    (Harness::with_policy(&text).await, issuer)
}

fn account() -> AccountId {
    AccountId::parse("123456789012").unwrap()
}

/// The audience a GitHub client asks for, for this start.
fn start_audience(role: &str, set: &str, duration: &str) -> String {
    let role = RoleArn::parse(role).unwrap();
    let set = Name::parse(set).unwrap();
    request_audience(
        "latch",
        Presented::Start(AudienceBinding {
            account: &account(),
            role: &role,
            permission_set: &set,
            duration: GrantDuration::parse(duration).unwrap(),
        }),
    )
}

fn finish_audience() -> String {
    request_audience("latch", Presented::Finish { account: &account() })
}

/// GitHub's claims for run `run_id` of `example-org/app-release` on main.
fn github_claims(run_id: &str, aud: &str) -> Value {
    json!({
        "aud": aud,
        "sub": "repo:example-org/app-release:ref:refs/heads/main",
        "repository": "example-org/app-release",
        "repository_id": "712345678",
        "repository_owner": "example-org",
        "repository_owner_id": "91234567",
        "run_id": run_id,
        "run_attempt": "1",
        "ref": "refs/heads/main",
        "sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "actor": "octocat",
        "event_name": "push",
        "environment": "production",
    })
}

/// A start of run `run_id` carrying `token`.
fn start(
    h: &Harness,
    run_id: &str,
    token: &str,
) -> lambda_runtime::LambdaEvent<aws_lambda_events::eventbridge::EventBridgeEvent<Value>> {
    h.event("verified-job-started.json", json!({"run_id": run_id, "token": token}))
}

fn finish(
    h: &Harness,
    run_id: &str,
    token: Option<&str>,
) -> lambda_runtime::LambdaEvent<aws_lambda_events::eventbridge::EventBridgeEvent<Value>> {
    h.event("verified-job-finished.json", json!({"run_id": run_id, "token": token}))
}

async fn granted(
    h: &Harness,
    issuer: &LocalIssuer,
    run_id: &str,
) -> (grant::AwsGrantService, latch_core::model::GrantId, String) {
    let service = h.grant_service();
    let role = h.role("app-deployer");
    let token = issuer
        .mint(github_claims(
            run_id,
            &start_audience(&role, "deploy-artifacts", "PT15M"),
        ))
        .unwrap();
    let outcome = grant::handle(&service, start(h, run_id, &token)).await.unwrap();
    let Outcome::Start(StartOutcome::Activated(id)) = outcome else {
        panic!("{outcome:?}")
    };
    (service, id, token)
}

#[tokio::test]
async fn a_verified_start_grants_and_audits_whose_word_each_field_is_never_the_token() {
    let (h, issuer) = setup().await;
    let (service, id, token) = granted(&h, &issuer, "9001").await;
    assert!(
        h.role_policy(&h.role("app-deployer"), &id.policy_name())
            .await
            .is_some()
    );
    assert_eq!(service.keys.fetches(), 1, "one key fetch, then the warm cache");

    let audits = h.items("audit").await;
    assert_eq!(audits.len(), 1);
    assert_eq!(s(&audits[0], "identity").as_deref(), Some("verified"));
    assert_eq!(s(&audits[0], "issuer").as_deref(), Some("github"));
    let claims = audits[0]["verified_claims"].as_m().unwrap();
    assert_eq!(claims["repository"].as_s().unwrap(), "example-org/app-release");
    let grants = h.items("grant").await;
    assert_eq!(
        s(&grants[0], "principal").as_deref(),
        Some(format!("{}#repository:712345678", issuer.url()).as_str())
    );

    // The token is nowhere: not in the table, not on the bus.
    let signature = token.rsplit('.').next().unwrap();
    let table = format!("{:?}{:?}", h.items("grant").await, h.items("audit").await);
    assert!(!table.contains(signature), "the token reached the table");
    let events = h.audit_events(1, Duration::from_secs(10)).await;
    assert!(!format!("{events:?}").contains(signature), "the token reached the bus");

    // A second job of the same repository: keys come from the cache.
    granted(&h, &issuer, "9002").await;
}

#[tokio::test]
async fn only_the_run_that_started_a_grant_can_finish_it() {
    let (h, issuer) = setup().await;
    let (service, id, _) = granted(&h, &issuer, "9100").await;
    let role = h.role("app-deployer");

    // Forged: no token; and another run's token (same repository) naming this run in `detail`.
    let forged = grant::handle(&service, finish(&h, "9100", None)).await.unwrap();
    assert_eq!(
        forged,
        Outcome::Finish(FinishOutcome::Denied(latch_core::grant::DenyReason::FinishNotProven))
    );
    let other_run = issuer.mint(github_claims("9199", &finish_audience())).unwrap();
    let forged = grant::handle(&service, finish(&h, "9100", Some(&other_run)))
        .await
        .unwrap();
    assert_eq!(
        forged,
        Outcome::Finish(FinishOutcome::Denied(latch_core::grant::DenyReason::FinishNotProven))
    );
    // The other run finishing itself touches nothing of ours either.
    let own = grant::handle(&service, finish(&h, "9199", Some(&other_run)))
        .await
        .unwrap();
    assert_eq!(
        own,
        Outcome::Finish(FinishOutcome::Finished {
            revoked: 0,
            already_ended: 0,
            failed: 0
        })
    );
    assert!(
        h.role_policy(&role, &id.policy_name()).await.is_some(),
        "still on the role"
    );
    assert_eq!(s(&h.items("grant").await[0], "status").as_deref(), Some("active"));

    let real = issuer.mint(github_claims("9100", &finish_audience())).unwrap();
    let done = grant::handle(&service, finish(&h, "9100", Some(&real))).await.unwrap();
    assert_eq!(
        done,
        Outcome::Finish(FinishOutcome::Finished {
            revoked: 1,
            already_ended: 0,
            failed: 0
        })
    );
    assert!(h.role_policy(&role, &id.policy_name()).await.is_none());
}

#[tokio::test]
async fn a_feature_branch_job_claiming_another_repositorys_production_grant_is_denied() {
    let (h, issuer) = setup().await;
    let service = h.grant_service();
    let role = h.role("db-migrator");
    // The red-team scenario: app-payments' feature branch asks as app-billing on main, production.
    let mut claims = github_claims("9300", &start_audience(&role, "db-migrate", "PT5M"));
    claims["repository"] = json!("example-org/app-payments");
    claims["repository_id"] = json!("700000001");
    claims["ref"] = json!("refs/heads/feature/x");
    claims["environment"] = Value::Null;
    let token = issuer.mint(claims).unwrap();
    let event = h.event(
        "verified-job-started.json",
        json!({
            "pipeline": "app-billing", "run_id": "9300", "ref": "refs/heads/main",
            "environment": "production", "role_arn": role, "permission_set": "db-migrate",
            "duration": "PT5M", "token": token, "commit": null, "actor": null,
        }),
    );
    let outcome = grant::handle(&service, event).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Start(StartOutcome::Denied(latch_core::grant::DenyReason::ClaimMismatch))
    );
    assert!(h.role_policy_names(&role).await.is_empty());
    assert!(h.items("grant").await.is_empty());
}

#[tokio::test]
async fn a_token_buys_one_job_only_and_the_table_refuses_its_replay() {
    let (h, issuer) = setup().await;
    let (service, _, token) = granted(&h, &issuer, "9400").await;
    // Same request shape (so the audience fits), another job of the run: a replay.
    let replay = h.event(
        "verified-job-started.json",
        json!({"run_id": "9400", "job": "other", "token": token}),
    );
    let outcome = grant::handle(&service, replay).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Start(StartOutcome::Denied(latch_core::grant::DenyReason::TokenReplayed))
    );
    assert_eq!(h.items("grant").await.len(), 1);
}

#[tokio::test]
async fn rotated_keys_are_fetched_once_on_the_unknown_kid() {
    let (h, issuer) = setup().await;
    // A container that fetched its keys longer ago than the refresh interval.
    let limits = latch_aws::jwks::FetchLimits {
        refresh_interval: Duration::ZERO,
        ..Default::default()
    };
    let service = h
        .grant_service()
        .with_keys(latch_aws::jwks::HttpKeySource::with_limits(limits).unwrap());
    let role = h.role("app-deployer");
    let token = issuer
        .mint(github_claims(
            "9500",
            &start_audience(&role, "deploy-artifacts", "PT15M"),
        ))
        .unwrap();
    let outcome = grant::handle(&service, start(&h, "9500", &token)).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Start(StartOutcome::Activated(_))),
        "{outcome:?}"
    );
    issuer.rotate().await.unwrap();
    let role = h.role("app-deployer");
    let token = issuer
        .mint(github_claims(
            "9501",
            &start_audience(&role, "deploy-artifacts", "PT15M"),
        ))
        .unwrap();
    let outcome = grant::handle(&service, start(&h, "9501", &token)).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Start(StartOutcome::Activated(_))),
        "{outcome:?}"
    );
    assert_eq!(service.keys.fetches(), 2, "the new kid cost one fetch");

    // Within the (default, one-minute) refresh interval a made-up kid costs the issuer nothing.
    let fresh = h.grant_service();
    let token = issuer
        .mint(github_claims(
            "9502",
            &start_audience(&role, "deploy-artifacts", "PT15M"),
        ))
        .unwrap();
    grant::handle(&fresh, start(&h, "9502", &token)).await.unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "made-up"});
    let claims = github_claims("9503", &start_audience(&role, "deploy-artifacts", "PT15M"));
    let mut claims = claims.as_object().unwrap().clone();
    claims.insert("iss".into(), json!(issuer.url()));
    claims.insert("iat".into(), json!(chrono::Utc::now().timestamp()));
    claims.insert("exp".into(), json!(chrono::Utc::now().timestamp() + 300));
    claims.insert("jti".into(), json!("made-up-kid"));
    let forged = issuer
        .mint_with(
            &header,
            &Value::Object(claims).to_string(),
            latch_aws::local_issuer::SigningKey::Rsa,
        )
        .unwrap();
    for _ in 0..3 {
        let outcome = grant::handle(&fresh, start(&h, "9503", &forged)).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Start(StartOutcome::Denied(latch_core::grant::DenyReason::TokenUnknownKey))
        );
    }
    assert_eq!(
        fresh.keys.fetches(),
        1,
        "unknown kids within the interval are answered from the cache"
    );
}

#[tokio::test]
async fn an_issuer_that_is_down_means_retry_never_a_grant_or_a_denial() {
    let (h, issuer) = setup().await;
    let service = h.grant_service();
    let role = h.role("app-deployer");
    let token = issuer
        .mint(github_claims(
            "9600",
            &start_audience(&role, "deploy-artifacts", "PT15M"),
        ))
        .unwrap();
    issuer.set_down(true);
    let event = start(&h, "9600", &token);
    let failed = grant::handle(&service, event.clone()).await;
    assert!(failed.is_err(), "Lambda must retry: {failed:?}");
    assert!(h.items("grant").await.is_empty());
    assert!(
        h.items("audit").await.is_empty(),
        "no denial is recorded for a fetch failure"
    );
    assert!(h.role_policy_names(&role).await.is_empty());

    // Lambda's retry, once the issuer answers again (after the refresh interval for a failed
    // fetch has passed: a fresh container stands in for it).
    issuer.set_down(false);
    let retried = grant::handle(&h.grant_service(), event).await.unwrap();
    assert!(
        matches!(retried, Outcome::Start(StartOutcome::Activated(_))),
        "{retried:?}"
    );
}

#[tokio::test]
async fn a_job_extends_its_own_grant_up_to_the_rules_max_total() {
    let (h, issuer) = setup().await;
    let (service, id, _) = granted(&h, &issuer, "9700").await;
    let role = h.role("app-deployer");
    let before = h.items("grant").await;
    let ttl_before: i64 = before[0]["ttl"].as_n().unwrap().parse().unwrap();

    let extend = |by: &str| {
        let role = RoleArn::parse(&role).unwrap();
        let set = Name::parse("deploy-artifacts").unwrap();
        let by = GrantDuration::parse(by).unwrap();
        let aud = request_audience(
            "latch",
            Presented::Extend {
                binding: AudienceBinding {
                    account: &account(),
                    role: &role,
                    permission_set: &set,
                    duration: by,
                },
                by,
            },
        );
        issuer.mint(github_claims("9700", &aud)).unwrap()
    };
    let token = extend("PT10M");
    let event = h.event(
        "verified-grant-extension.json",
        json!({"run_id": "9700", "by": "PT10M", "token": token}),
    );
    let outcome = grant::handle(&service, event.clone()).await.unwrap();
    assert_eq!(outcome, Outcome::Extend(ExtendOutcome::Extended(id.clone())));
    let after = h.items("grant").await;
    let ttl_after: i64 = after[0]["ttl"].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl_after - ttl_before, 600);
    let doc = h.role_policy(&role, &id.policy_name()).await.unwrap();
    let expiry = doc["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(expiry, s(&after[0], "expires_at").unwrap());
    // The same delivery again converges; it does not extend twice. Nor does the same token
    // replayed from the bus under a new event id.
    assert_eq!(
        grant::handle(&service, event).await.unwrap(),
        Outcome::Extend(ExtendOutcome::AlreadyExtended(id.clone()))
    );
    let replayed = h.event(
        "verified-grant-extension.json",
        json!({"run_id": "9700", "by": "PT10M", "token": token}),
    );
    assert_eq!(
        grant::handle(&service, replayed).await.unwrap(),
        Outcome::Extend(ExtendOutcome::AlreadyExtended(id.clone()))
    );
    let ttl_replayed: i64 = h.items("grant").await[0]["ttl"].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl_replayed, ttl_after, "a replayed token extends nothing");

    // 15 + 10 + 20 minutes is over the rule's max_total of 40.
    let token = extend("PT20M");
    let event = h.event(
        "verified-grant-extension.json",
        json!({"run_id": "9700", "by": "PT20M", "token": token}),
    );
    let outcome = grant::handle(&service, event).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Extend(ExtendOutcome::Denied(latch_core::grant::DenyReason::ExtensionOverMax))
    );
    let decisions: Vec<_> = h.items("audit").await.iter().filter_map(|a| s(a, "decision")).collect();
    assert_eq!(
        decisions.iter().filter(|d| *d == "extended").count(),
        1,
        "{decisions:?}"
    );
}
