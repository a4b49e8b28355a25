//! What IAM really holds, on the emulator behind the strict-AWS proxy (aggregate inline quota,
//! case-insensitive role names): the grant acts on the role IAM resolves, in Latch's own account,
//! never past IAM's quota, a refused document is a decision, never an active grant, and the
//! grant's propagation probe says when IAM applies a document it has accepted.

use std::time::{Duration, Instant};

use grant::Outcome;
use latch_aws::probe::{Probe, Waited, probe, wait_until_applied};
use latch_core::grant::DenyReason;
use latch_core::grant::StartOutcome;
use latch_tests::faults::{FaultPlan, FaultProxy};
use latch_tests::strict::{StrictAws, StrictKind};
use latch_tests::{Harness, s, unique};
use serde_json::json;

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// A strict proxy in front of the shared emulator (no latency: these tests are about verdicts).
async fn strict_proxy() -> FaultProxy {
    strict_proxy_with(StrictAws::verdicts_only()).await
}

async fn strict_proxy_with(strict: StrictAws) -> FaultProxy {
    FaultProxy::in_front_of_shared_emulator(FaultPlan::new(5).strict(strict)).await
}

/// A harness whose every AWS call passes the proxy.
async fn harness(proxy: &FaultProxy, policy: &str) -> Harness {
    let sdk = latch_aws::config::sdk_loader().endpoint_url(proxy.url()).load().await;
    Harness::with_sdk(sdk, policy).await
}

/// One claimed rule (identity is not what these tests are about) over `roles`.
fn policy(accounts: &str, roles: &str, cap: u32) -> String {
    format!(
        r#"version: 1
elevatable_path: /latch/
permission_sets:
  deploy-artifacts:
    description: d
    max_duration: 30m
    statements:
      - actions: [s3:PutObject, s3:GetObject]
        resources: ["arn:aws:s3:::latch-artifacts-${{account}}/${{pipeline}}/*"]
rules:
  - name: r
    identity: claimed
    sources: [ci.github]
    accounts: [{accounts}]
    pipelines: ["*"]
    roles: [{roles}]
    permission_sets: [deploy-artifacts]
    max_duration: 30m
    max_active_grants_per_role: {cap}
"#
    )
}

/// Creates a role; names and paths are the harness's (it prefixes `/latch/` names with its id,
/// as it does in the policy and in events).
async fn create_role(h: &Harness, path: &str, name: &str) {
    let (path, name) = match path.strip_prefix("/latch/") {
        Some("") => ("/latch/".to_owned(), format!("{}-{name}", h.id)),
        Some(rest) => (format!("/latch/{}-{rest}", h.id), name.to_owned()),
        None => (path.to_owned(), name.to_owned()),
    };
    h.iam
        .create_role()
        .role_name(&name)
        .path(&path)
        .assume_role_policy_document(TRUST)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateRole {path}{name}: {e:?}"));
}

fn start(
    h: &Harness,
    role: &str,
    run: &str,
) -> lambda_runtime::LambdaEvent<aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value>> {
    // Renamed as the harness renames the policy's roles.
    let role = role.replace(":role/latch/", &format!(":role/latch/{}-", h.id));
    h.event(
        "pipeline-job-started.json",
        json!({"role_arn": role, "run_id": run, "environment": null, "ref": null}),
    )
}

#[tokio::test]
async fn a_rule_for_one_path_never_elevates_the_same_named_role_under_another() {
    let proxy = strict_proxy().await;
    let name = unique("dep");
    let team_a = format!("arn:aws:iam::123456789012:role/latch/team-a/{name}");
    let h = harness(
        &proxy,
        &policy(
            "\"123456789012\"",
            "\"arn:aws:iam::123456789012:role/latch/team-a/*\"",
            5,
        ),
    )
    .await;
    // Role names are unique per account whatever the path: IAM has it under team-b.
    create_role(&h, "/latch/team-b/", &name).await;
    let outcome = grant::handle(&h.grant_service(), start(&h, &team_a, "1"))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Start(StartOutcome::Denied(DenyReason::RoleNotEligible))
    );
    let audit = &h.items("audit").await[0];
    assert!(s(audit, "detail").unwrap().contains("-team-b/"), "{audit:?}");
    assert!(h.items("grant").await.is_empty());
}

#[tokio::test]
async fn a_role_in_another_account_is_refused_not_its_namesake_in_ours() {
    let proxy = strict_proxy().await;
    let name = unique("dep");
    let other = format!("arn:aws:iam::210987654321:role/latch/{name}");
    let h = harness(&proxy, &policy("\"210987654321\"", &format!("\"{other}\""), 5)).await;
    // The harness provisioned the rule's exact role: Latch's own account holds one of that name.
    let mut event = start(&h, &other, "1");
    event.payload.account = Some("210987654321".into());
    let outcome = grant::handle(&h.grant_service(), event).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Start(StartOutcome::Denied(DenyReason::RoleInOtherAccount))
    );
    assert!(h.role_policy_names(&h.role(&name)).await.is_empty());
}

#[tokio::test]
async fn case_variants_of_a_role_name_are_one_role_and_one_cap() {
    let proxy = strict_proxy().await;
    let name = unique("ci").to_lowercase();
    let h = harness(
        &proxy,
        &policy("\"123456789012\"", "\"arn:aws:iam::123456789012:role/latch/*\"", 1),
    )
    .await;
    create_role(&h, "/latch/", &name).await;
    let lower = format!("arn:aws:iam::123456789012:role/latch/{name}");
    let upper = format!("arn:aws:iam::123456789012:role/latch/{}", name.to_uppercase());
    let service = h.grant_service();
    let first = grant::handle(&service, start(&h, &lower, "1")).await.unwrap();
    assert!(
        matches!(first, Outcome::Start(StartOutcome::Activated(_))),
        "{first:?} {:?}",
        h.items("audit").await
    );
    // Another job names the role in capitals: IAM's one role, already at its cap of 1.
    let second = grant::handle(&service, start(&h, &upper, "2")).await.unwrap();
    assert_eq!(second, Outcome::Start(StartOutcome::Denied(DenyReason::ConcurrencyCap)));
    let counters: Vec<_> = h.items("role_counter").await;
    assert_eq!(counters.len(), 1, "one counter for both spellings: {counters:?}");
}

#[tokio::test]
async fn the_quota_is_budgeted_so_iam_never_refuses_and_nothing_goes_over_10240() {
    let proxy = strict_proxy().await;
    let name = unique("q");
    let role = format!("arn:aws:iam::123456789012:role/latch/{name}");
    let h = harness(&proxy, &policy("\"123456789012\"", &format!("\"{role}\""), 10)).await;
    // The team's own inline policy takes about 9,500 of the role's 10,240 characters.
    let own = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/{}"}}]}}"#,
        "x".repeat(9_400)
    );
    h.iam
        .put_role_policy()
        .role_name(format!("{}-{name}", h.id))
        .policy_name("team-own")
        .policy_document(&own)
        .send()
        .await
        .unwrap();
    let service = h.grant_service();
    let mut outcomes = Vec::new();
    for run in ["1", "2", "3", "4"] {
        outcomes.push(grant::handle(&service, start(&h, &role, run)).await.unwrap());
    }
    let granted = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Start(StartOutcome::Activated(_))))
        .count();
    assert!(granted >= 1, "{outcomes:?}");
    assert_eq!(
        outcomes.last(),
        Some(&Outcome::Start(StartOutcome::Denied(DenyReason::RolePolicyQuota))),
        "{outcomes:?}"
    );
    let report = proxy.report();
    assert_eq!(
        report.strict_count("iam.PutRolePolicy", StrictKind::LimitExceeded),
        0,
        "Latch denied before IAM had to refuse"
    );
    // Every live grant's characters are on the counter, and they fit beside the team's own.
    let counter = &h.items("role_counter").await[0];
    let chars: usize = counter["policy_chars"].as_n().unwrap().parse().unwrap();
    assert!(own.len() + chars <= 10_240, "{} + {chars}", own.len());
}

#[tokio::test]
async fn a_document_iam_refuses_is_a_decision_never_an_active_grant() {
    let proxy = strict_proxy().await;
    let name = unique("r");
    let role = format!("arn:aws:iam::123456789012:role/latch/{name}");
    let h = harness(&proxy, &policy("\"123456789012\"", &format!("\"{role}\""), 10)).await;
    let service = h.grant_service();
    // Someone else fills the role after Latch resolved it (its budget still thinks there is room).
    grant::handle(&service, start(&h, &role, "1")).await.unwrap();
    let filler = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/{}"}}]}}"#,
        "x".repeat(9_400)
    );
    h.iam
        .put_role_policy()
        .role_name(format!("{}-{name}", h.id))
        .policy_name("late-team-policy")
        .policy_document(&filler)
        .send()
        .await
        .unwrap();
    let event = start(&h, &role, "2");
    let refused = grant::handle(&service, event.clone()).await.unwrap();
    assert_eq!(refused, Outcome::Start(StartOutcome::Denied(DenyReason::IamRejected)));
    let grants = h.items("grant").await;
    let failed: Vec<_> = grants
        .iter()
        .filter(|g| s(g, "status").as_deref() == Some("failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{grants:?}");
    let activated = h
        .items("audit")
        .await
        .iter()
        .filter(|a| s(a, "decision").as_deref() == Some("activated"))
        .count();
    assert_eq!(activated, 1, "only the first grant was ever activated");
    let counter = &h.items("role_counter").await[0];
    assert_eq!(
        counter["active_grants"].as_n().unwrap(),
        "1",
        "the refused grant's slot is free again"
    );
    // The same event again: the refusal stands, the document is never attached.
    let again = grant::handle(&service, event).await.unwrap();
    assert!(
        matches!(again, Outcome::Start(StartOutcome::AlreadyEnded(_))),
        "{again:?}"
    );
    assert_eq!(
        proxy
            .report()
            .strict_count("iam.PutRolePolicy", StrictKind::LimitExceeded),
        1
    );
}

#[tokio::test]
async fn the_probe_says_when_iam_applies_the_grant_not_when_it_accepts_it() {
    // GIVEN a strict AWS where IAM applies a document 3 s after accepting it
    let window = Duration::from_secs(3);
    let proxy = strict_proxy_with(StrictAws {
        propagation: Some(window),
        ..StrictAws::aws_like().no_latency()
    })
    .await;
    let name = unique("probe");
    let h = harness(
        &proxy,
        &policy("\"123456789012\"", "\"arn:aws:iam::123456789012:role/latch/*\"", 5),
    )
    .await;
    create_role(&h, "/latch/", &name).await;
    let role = format!("arn:aws:iam::123456789012:role/latch/{name}");
    let service = h.grant_service();
    // WHEN a job's grant is attached (IAM accepted its document: the grant is active)
    let outcome = grant::handle(&service, start(&h, &role, "1")).await.unwrap();
    let accepted = Instant::now();
    let Outcome::Start(StartOutcome::Activated(id)) = outcome else {
        panic!("{outcome:?} {:?}", h.items("audit").await)
    };
    let events = aws_sdk_eventbridge::Client::new(&h.sdk);
    // THEN a probe at once is refused: active is not yet usable (a fixed wait would guess here)
    assert_eq!(probe(&events, &id).await, Probe::NotYet);
    // AND waiting returns once IAM applies the document, never before
    let waited = wait_until_applied(&events, &id, Instant::now() + Duration::from_secs(30)).await;
    let Waited::Applies { probes, .. } = waited else {
        panic!("{waited:?}")
    };
    let elapsed = accepted.elapsed();
    eprintln!("probe: applied {elapsed:?} after IAM accepted it (window {window:?}, {probes} probes)");
    assert!(
        elapsed >= window,
        "applied after {elapsed:?}, inside the {window:?} window"
    );
    assert!(probes > 1);
    // AND the probe names one grant: another job's grant, never attached, is still refused
    let other = start(&h, &role, "2");
    let other_id = match grant::handle(&service, other).await.unwrap() {
        Outcome::Start(StartOutcome::Activated(other_id)) => other_id,
        o => panic!("{o:?}"),
    };
    assert_ne!(other_id, id);
    assert_eq!(probe(&events, &other_id).await, Probe::NotYet);
    // AND once the job finishes and IAM applies the removal, the probe is refused again
    let finish = h.event("pipeline-job-finished.json", json!({"run_id": "1"}));
    grant::handle(&service, finish).await.unwrap();
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    assert_eq!(probe(&events, &id).await, Probe::NotYet);
    assert!(
        proxy
            .report()
            .strict_count("events.DescribeEventBus", StrictKind::ProbeDenied)
            >= 3
    );
}
