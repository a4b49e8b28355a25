//! Conflicts are transient, on the wire: twenty jobs elevate one role at once
//! through an AWS-like strict proxy (IAM `ConcurrentModification` on overlapping writes to the
//! role, DynamoDB `TransactionConflict` on the role's counter item, latency, IAM rate limit), on
//! a private emulator. Every grant activates without an error reaching Lambda, then half finish
//! concurrently and the sweep takes the other half, with no `Latch Revoke Failed`.
//!
//! The SDK is configured as the functions load it (standard retries, Latch's timeouts): what is
//! left to show is what the SDK does not retry.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{Region, SdkConfig};
use chrono::Utc;
use grant::Outcome;
use latch_core::grant::{FinishOutcome, StartOutcome};
use latch_core::memory::FixedClock;
use latch_tests::faults::{FaultPlan, FaultProxy};
use latch_tests::moto::MotoServer;
use latch_tests::strict::{StrictAws, StrictKind};
use latch_tests::{Harness, lambda_event, many_roles_policy, s, unique};
use serde_json::{Value, json};

static MOTO: OnceLock<MotoServer> = OnceLock::new();

fn moto() -> &'static MotoServer {
    MOTO.get_or_init(|| MotoServer::start().expect("a private emulator"))
}

/// How many jobs elevate the one role at once.
const JOBS: usize = 20;

/// The SDK as `Clients::from_env` loads it in Lambda, pointed at the proxy.
async fn lambda_like_sdk(endpoint: &str) -> SdkConfig {
    let creds = aws_sdk_iam::config::Credentials::new("test", "test", None, None, "conflicts");
    latch_aws::config::sdk_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .timeout_config(latch_aws::config::timeouts())
        .load()
        .await
}

fn job_event(h: &Harness, run: &str, detail_type: &str) -> Value {
    let mut detail = json!({"pipeline": "conf-app", "run_id": run, "job": "deploy", "attempt": 1});
    if detail_type == "Pipeline Job Started" {
        detail["role_arn"] = json!(h.role("conf-0"));
        detail["permission_set"] = json!("deploy-artifacts");
        detail["duration"] = json!("15m");
    } else {
        detail["outcome"] = json!("success");
    }
    json!({
        "version": "0", "id": unique("evt-"), "detail-type": detail_type, "source": "ci.github",
        "account": "123456789012", "time": latch_core::iam_time(Utc::now()), "region": "us-east-1",
        "resources": [], "detail": detail,
    })
}

fn conflicts_seen(p: &FaultProxy) -> BTreeMap<&'static str, u64> {
    let r = p.report();
    BTreeMap::from([
        (
            "PutRolePolicy ConcurrentModification",
            r.strict_count("iam.PutRolePolicy", StrictKind::ConcurrentModification),
        ),
        (
            "DeleteRolePolicy ConcurrentModification",
            r.strict_count("iam.DeleteRolePolicy", StrictKind::ConcurrentModification),
        ),
        (
            "TransactWriteItems TransactionConflict",
            r.strict_count("dynamodb.TransactWriteItems", StrictKind::TransactionConflict),
        ),
        (
            "IAM throttles",
            r.strict_by_kind().get(&StrictKind::IamThrottle).copied().unwrap_or(0),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_jobs_elevating_one_role_at_once_all_activate_and_all_revoke_despite_conflicts() {
    let addr = tokio::task::spawn_blocking(|| moto().addr).await.unwrap();
    let p = FaultProxy::start(addr, FaultPlan::new(23).strict(StrictAws::aws_like().time_scale(0.05)))
        .await
        .expect("the proxy");
    let h = Harness::with_sdk(lambda_like_sdk(&p.url()).await, &many_roles_policy("conf", 1, 50)).await;
    let role = h.role("conf-0");
    let service = h.grant_service();
    let runs: Vec<String> = (0..JOBS).map(|i| format!("r{i}")).collect();

    // 1. Twenty starts at once, as twenty concurrent Lambda invocations would handle them.
    let started = Instant::now();
    let starts = runs
        .iter()
        .map(|run| grant::handle(&service, lambda_event(job_event(&h, run, "Pipeline Job Started"))));
    let outcomes = futures::future::join_all(starts).await;
    let took = started.elapsed();
    let mut ids = Vec::new();
    for (run, outcome) in runs.iter().zip(outcomes) {
        match outcome {
            Ok(Outcome::Start(StartOutcome::Activated(id))) => ids.push(id),
            other => panic!("job {run}: {other:?} (conflicts so far: {:?})", conflicts_seen(&p)),
        }
    }
    let at_start = conflicts_seen(&p);
    eprintln!("{JOBS} activations on one role in {took:?}; proxy verdicts: {at_start:?}");
    assert!(
        at_start["PutRolePolicy ConcurrentModification"] + at_start["TransactWriteItems TransactionConflict"] > 0,
        "the test must exercise the retry: {at_start:?}"
    );
    let grants = h.items("grant").await;
    assert_eq!(grants.len(), JOBS);
    assert!(grants.iter().all(|g| s(g, "status").as_deref() == Some("active")));
    let counters = h.items("role_counter").await;
    assert_eq!(counters.len(), 1);
    assert_eq!(counters[0]["active_grants"].as_n().unwrap(), &JOBS.to_string());

    // Every document is on the role (IAM's propagation, scaled, is 100 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut names = h.role_policy_names(&role).await;
    while names.len() < JOBS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        names = h.role_policy_names(&role).await;
    }
    let mut want: Vec<String> = ids.iter().map(|id| id.policy_name()).collect();
    want.sort();
    names.sort();
    assert_eq!(names, want);

    // 2. Half the jobs finish at once: ten revokes on the one role, concurrently.
    let (finishing, expiring) = runs.split_at(JOBS / 2);
    let finishes = finishing
        .iter()
        .map(|run| grant::handle(&service, lambda_event(job_event(&h, run, "Pipeline Job Finished"))));
    for (run, outcome) in finishing.iter().zip(futures::future::join_all(finishes).await) {
        assert_eq!(
            outcome.unwrap_or_else(|e| panic!("finish {run}: {e}")),
            Outcome::Finish(FinishOutcome::Finished {
                revoked: 1,
                already_ended: 0,
                failed: 0
            }),
            "finish {run}"
        );
    }

    // 3. The others expire: one sweep takes them all.
    let sweep = h.sweep_function(
        FixedClock::at(Utc::now() + chrono::Duration::minutes(16)),
        chrono::Duration::minutes(10),
    );
    let report = sweep.sweep(None).await.unwrap();
    assert_eq!(
        (report.revoked, report.revoke_failed, report.stopped_early),
        (expiring.len(), 0, false),
        "{report:?}"
    );
    let at_end = conflicts_seen(&p);
    eprintln!("after finishes and sweep, proxy verdicts: {at_end:?}");

    let audits = h.items("audit").await;
    let by_decision = |d: &str| audits.iter().filter(|a| s(a, "decision").as_deref() == Some(d)).count();
    assert_eq!(by_decision("revoke_failed"), 0, "no Latch Revoke Failed");
    assert_eq!(by_decision("activated"), JOBS);
    assert_eq!(by_decision("revoked"), JOBS);
    let grants = h.items("grant").await;
    assert!(grants.iter().all(|g| s(g, "status").as_deref() == Some("revoked")));
    let counters = h.items("role_counter").await;
    assert_eq!(counters[0]["active_grants"].as_n().unwrap(), "0");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut names = h.role_policy_names(&role).await;
    while !names.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        names = h.role_policy_names(&role).await;
    }
    assert_eq!(names, Vec::<String>::new(), "every document is off the role");
}
