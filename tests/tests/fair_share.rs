//! Fair share on the emulator: one publisher floods, is refused `rate_limited` in the same
//! TransactWriteItems that would have recorded its grants, and another publisher still gets its
//! grant. DynamoDB's conditional update is what holds the line, through the real SDK; behind the
//! strict-AWS proxy, the same holds when the flood arrives all at once (its transactions conflict
//! on the publisher's window item, as DynamoDB's do).

use chrono::{Timelike, Utc};
use grant::Outcome;
use latch_core::grant::DenyReason;
use latch_core::grant::StartOutcome;
use latch_tests::faults::{FaultPlan, FaultProxy};
use latch_tests::strict::{StrictAws, StrictKind};
use latch_tests::{Harness, s};
use serde_json::json;

const LIMIT: usize = 3;

fn policy() -> String {
    let rule = |name: &str, source: &str| {
        format!(
            r#"  - name: {name}
    identity: claimed
    sources: [{source}]
    accounts: ["123456789012"]
    pipelines: ["app-*"]
    roles: ["arn:aws:iam::123456789012:role/latch/app-deployer"]
    permission_sets: [deploy-artifacts]
    max_duration: 30m
"#
        )
    };
    format!(
        r#"version: 1
elevatable_path: /latch/
permission_sets:
  deploy-artifacts:
    description: Upload and read this pipeline's build artifacts.
    max_duration: PT30M
    statements:
      - actions: [s3:PutObject, s3:GetObject]
        resources: ["arn:aws:s3:::latch-artifacts-${{account}}/${{pipeline}}/*"]
rules:
{}{}fair_share:
  grants_per_minute: {LIMIT}
"#,
        rule("github", "ci.github"),
        rule("gitlab", "ci.gitlab")
    )
}

#[tokio::test]
async fn one_publisher_floods_and_is_refused_while_another_still_gets_its_grant() {
    // The flood must fall in one minute window: start it well before a minute ends.
    while Utc::now().second() > 45 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let h = Harness::with_policy(&policy()).await;
    let service = h.grant_service();
    let mut outcomes = Vec::new();
    for run in 0..LIMIT + 5 {
        let event = h.event("pipeline-job-started.json", json!({"run_id": format!("flood-{run}")}));
        outcomes.push(grant::handle(&service, event).await.unwrap());
    }
    let activated = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Start(StartOutcome::Activated(_))))
        .count();
    assert_eq!(activated, LIMIT, "{outcomes:?}");
    assert!(
        outcomes[LIMIT..]
            .iter()
            .all(|o| *o == Outcome::Start(StartOutcome::Denied(DenyReason::RateLimited))),
        "{outcomes:?}"
    );

    let mut other = h.event("pipeline-job-started.json", json!({"run_id": "quiet-1"}));
    other.payload.source = "ci.gitlab".into();
    let outcome = grant::handle(&service, other).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Start(StartOutcome::Activated(_))),
        "another publisher keeps its share: {outcome:?}"
    );

    assert_eq!(h.items("grant").await.len(), LIMIT + 1);
    let refusals: Vec<_> = h
        .items("audit")
        .await
        .into_iter()
        .filter(|a| s(a, "reason").as_deref() == Some("rate_limited"))
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "one audit for the publisher's minute, not one per event"
    );
    let windows = h.items("rate_window").await;
    assert_eq!(windows.len(), 2, "one window per publisher");
    assert!(windows.iter().all(|w| w.contains_key("ttl")));
}

#[tokio::test]
async fn a_flood_all_at_once_behind_a_strict_aws_gets_exactly_its_share() {
    while Utc::now().second() > 40 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // GIVEN DynamoDB's and IAM's strictness: transactions on one item conflict, writes on one
    // role conflict (no latency: this is about verdicts)
    let proxy = FaultProxy::in_front_of_shared_emulator(FaultPlan::new(9).strict(StrictAws::verdicts_only())).await;
    let sdk = latch_aws::config::sdk_loader().endpoint_url(proxy.url()).load().await;
    let h = Harness::with_sdk(sdk, &policy()).await;
    let service = std::sync::Arc::new(h.grant_service());
    // WHEN one publisher's jobs all start at the same moment
    let mut flood = tokio::task::JoinSet::new();
    for run in 0..LIMIT + 5 {
        let event = h.event("pipeline-job-started.json", json!({"run_id": format!("burst-{run}")}));
        let service = service.clone();
        flood.spawn(async move { grant::handle(&service, event).await });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = flood.join_next().await {
        outcomes.push(done.expect("the task").expect("conflicts are retried, never an error"));
    }
    // THEN exactly its share is granted, the rest refused `rate_limited`, with one audit
    let activated = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Start(StartOutcome::Activated(_))))
        .count();
    assert_eq!(activated, LIMIT, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Outcome::Start(StartOutcome::Denied(DenyReason::RateLimited)))
            .count(),
        5,
        "{outcomes:?}"
    );
    let refusals = h
        .items("audit")
        .await
        .into_iter()
        .filter(|a| s(a, "reason").as_deref() == Some("rate_limited"))
        .count();
    assert_eq!(refusals, 1);
    eprintln!(
        "strict verdicts: {} transaction conflicts absorbed",
        proxy
            .report()
            .strict_count("dynamodb.TransactWriteItems", StrictKind::TransactionConflict)
    );
}
