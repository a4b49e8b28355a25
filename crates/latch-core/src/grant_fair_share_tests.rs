//! Fair share: a publisher's new grants per minute, counted in the activation's own write.

use chrono::Duration;
use serde_json::{Value, json};

use super::*;
use crate::memory::Faults;
use crate::policy::Policy;
use crate::test_fixtures::{MemoryService as Service, memory_service, t0};

/// The example policy, `ci.github` publishers held to 2 new grants a minute.
fn service() -> Service {
    let text = format!(
        "{}\nfair_share:\n  grants_per_minute: 50\n  sources:\n    ci.github: 2\n",
        include_str!("../../../events/policy-claimed.yaml")
    );
    GrantService {
        policy: Policy::load(&text, "test").unwrap(),
        ..memory_service(t0() + Duration::seconds(2), &Faults::default())
    }
}

fn github(id: &str) -> Envelope {
    crate::test_fixtures::envelope("Pipeline Job Started", id)
}

fn gitlab(id: &str) -> Envelope {
    Envelope {
        source: "ci.gitlab".into(),
        ..github(id)
    }
}

fn github_job(run: u32) -> Value {
    json!({
        "pipeline": "app-release", "run_id": run.to_string(), "job": "deploy", "attempt": 1,
        "role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
        "permission_set": "deploy-artifacts", "duration": "PT15M", "ref": "refs/heads/main"
    })
}

fn gitlab_job(run: u32) -> Value {
    json!({
        "pipeline": "platform-infra", "run_id": run.to_string(), "job": "apply", "attempt": 1,
        "role_arn": "arn:aws:iam::123456789012:role/latch/ci-platform",
        "permission_set": "deploy-artifacts", "duration": "PT15M"
    })
}

async fn start(s: &Service, env: &Envelope, d: &Value) -> StartOutcome {
    s.on_start(env, d, d.to_string().len()).await.unwrap()
}

fn rate_limited_audits(s: &Service) -> Vec<AuditRecord> {
    s.ports
        .store
        .audits()
        .into_iter()
        .filter(|a| a.reason == DenyReason::RateLimited.code())
        .collect()
}

#[tokio::test]
async fn given_a_flooding_publisher_when_it_passes_its_limit_then_it_is_refused_and_another_publisher_is_not() {
    let s = service();
    let mut outcomes = Vec::new();
    for run in 1..=6 {
        outcomes.push(start(&s, &github(&format!("gh-{run}")), &github_job(run)).await);
    }
    let activated = outcomes
        .iter()
        .filter(|o| matches!(o, StartOutcome::Activated(_)))
        .count();
    assert_eq!(activated, 2, "{outcomes:?}");
    assert!(
        outcomes[2..]
            .iter()
            .all(|o| *o == StartOutcome::Denied(DenyReason::RateLimited))
    );
    assert_eq!(s.ports.store.grants().len(), 2, "a refused start records no grant");

    let other = start(&s, &gitlab("gl-1"), &gitlab_job(1)).await;
    assert!(
        matches!(other, StartOutcome::Activated(_)),
        "another publisher keeps its share: {other:?}"
    );
}

#[tokio::test]
async fn given_a_publisher_refused_many_times_in_a_minute_when_audited_then_there_is_one_audit_and_one_event() {
    let s = service();
    for run in 1..=8 {
        start(&s, &github(&format!("gh-{run}")), &github_job(run)).await;
    }
    let audits = rate_limited_audits(&s);
    assert_eq!(audits.len(), 1, "one audit per publisher and minute, not per event");
    let detail = audits[0].detail.clone().unwrap_or_default();
    assert!(
        detail.contains("123456789012#ci.github") && detail.contains('2'),
        "{detail}"
    );
    assert_eq!(audits[0].event_id.as_deref(), Some("gh-3"), "the first refused request");
    let published: Vec<_> = s
        .ports
        .audit
        .published()
        .into_iter()
        .filter(|a| a.reason == DenyReason::RateLimited.code())
        .collect();
    assert_eq!(published, audits);

    // The next minute is a new window: the publisher gets grants again, and a new audit if it floods.
    s.ports.clock.advance(Duration::minutes(1));
    let next = github("gh-next");
    let next = Envelope {
        time: t0() + Duration::minutes(1),
        ..next
    };
    assert!(matches!(
        start(&s, &next, &github_job(100)).await,
        StartOutcome::Activated(_)
    ));
}

#[tokio::test]
async fn given_duplicate_deliveries_when_counted_then_only_new_grants_use_the_share() {
    let s = service();
    for _ in 0..5 {
        start(&s, &github("gh-1"), &github_job(1)).await;
    }
    assert!(matches!(
        start(&s, &github("gh-2"), &github_job(2)).await,
        StartOutcome::Activated(_)
    ));
    assert!(rate_limited_audits(&s).is_empty());
}

#[test]
fn publishers_are_the_source_and_whose_job_it_is_when_that_is_attested() {
    let grant = |source: &str, principal: Option<&str>, pipeline: &str| Grant {
        source: source.into(),
        job: JobKey {
            principal: principal.map(str::to_owned),
            pipeline: pipeline.into(),
            run_id: "1".into(),
            job: "j".into(),
            attempt: 1,
        },
        ..example_grant()
    };
    // Claimed: the pipeline is the publisher's word, so made-up names share one window.
    assert_eq!(
        publisher(&grant("ci.github", None, "app-a")),
        publisher(&grant("ci.github", None, "app-b"))
    );
    // Verified: each repository has its own.
    assert_ne!(
        publisher(&grant("ci.github", Some("gh#repository:1"), "app")),
        publisher(&grant("ci.github", Some("gh#repository:2"), "app"))
    );
    // Native: the project AWS names.
    assert_ne!(
        publisher(&grant("aws.codebuild", None, "app-build")),
        publisher(&grant("aws.codebuild", None, "docs-build"))
    );
    assert_ne!(
        publisher(&grant("ci.github", None, "app")),
        publisher(&grant("ci.gitlab", None, "app"))
    );
}

fn example_grant() -> Grant {
    use crate::model::{AccountId, GrantId, Name, RoleArn};
    Grant {
        id: GrantId::parse(&"a".repeat(32)).unwrap(),
        status: GrantStatus::Active,
        source: String::new(),
        account: AccountId::parse("123456789012").unwrap(),
        region: "us-east-1".into(),
        event_id: "e".into(),
        job: JobKey {
            principal: None,
            pipeline: String::new(),
            run_id: String::new(),
            job: String::new(),
            attempt: 1,
        },
        context: JobContext::default(),
        role: RoleArn::parse("arn:aws:iam::123456789012:role/latch/app-deployer").unwrap(),
        policy_name: "latch-x".into(),
        permission_set: Name::parse("deploy-artifacts").unwrap(),
        rule: Name::parse("r").unwrap(),
        requested_duration_secs: 60,
        requested_at: t0(),
        granted_at: t0(),
        expires_at: t0(),
        policy_sha256: String::new(),
        policy_chars: 0,
        session: None,
    }
}
