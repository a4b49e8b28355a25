//! Benchmark (not a test): the scheduled and stream paths under the strict latency model
//! (`StrictAws::aws_like()`: IAM log-normal, median 250 ms with a tail, an account-wide IAM rate
//! of 20/s; DynamoDB 5–20 ms; EventBridge 20–40 ms), on a private emulator behind the proxy.
//!
//!     cargo run -p latch-tests --example ops_bench -- sweep  [GRANTS=1000] [SCALE=0.1]
//!     cargo run -p latch-tests --example ops_bench -- drift  [ROLES=300]   [SCALE=0.1]
//!     cargo run -p latch-tests --example ops_bench -- revoke [RECORDS=100] [SCALE=0.1]
//!
//! SCALE multiplies every modelled latency and divides the rate limit's clock (the proxy's
//! `time_scale`); Lambda's budgets (the sweep's 40 s of work in a 50 s timeout, the revoke
//! function's 45 s) and drift repair's pace are scaled with it, so the run is AWS's at 1/SCALE
//! speed. Figures are printed both as measured (wall) and divided by SCALE ("AWS-time"); the
//! emulator's own ~9 ms a call and this machine's CPU do not scale, so AWS-time overstates
//! what AWS would take, more so at smaller SCALE.
//!
//! - sweep: GRANTS expired grants over 50 roles (a policy on each), then sweep runs of the
//!   expired task until one finds nothing: runs needed, time, revokes and IAM throttles.
//! - drift: ROLES eligible roles, drift-repair runs (5 IAM calls a second, AWS-time) until every
//!   role has been checked once: runs needed, roles per run; at rate(5 minutes) coverage takes
//!   runs × 5 min.
//! - revoke: RECORDS TTL removals over 20 roles, 10 % of DeleteRolePolicy throttled by the
//!   proxy (on top of the model), delivered as Lambda does: a batch, then again from the first
//!   record reported failed, until none is: invocations (redeliveries), time.

use std::time::{Duration as StdDuration, Instant};

use aws_config::Region;
use aws_lambda_events::event::dynamodb::EventRecord;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chrono::{Duration, Utc};
use latch_aws::Clients;
use latch_aws::items::GrantItem;
use latch_core::memory::FixedClock;
use latch_core::model::{AccountId, Grant, GrantId, GrantIdentity, GrantStatus, JobContext, JobKey, Name, RoleArn};
use latch_core::ports::{Ports, SystemClock};
use latch_core::sweep::{SweepSettings, SweepTask};
use latch_tests::faults::{FaultKind, FaultPlan, FaultProxy};
use latch_tests::moto::MotoServer;
use latch_tests::strict::{StrictAws, StrictKind};
use latch_tests::{Harness, fixture};

const DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;

async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    let creds = aws_sdk_iam::config::Credentials::new("test", "test", None, None, "bench");
    latch_aws::config::sdk_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .load()
        .await
}

fn grant(h: &Harness, i: usize, roles: usize, expires_in: Duration) -> Grant {
    let account = AccountId::parse("123456789012").unwrap();
    let role = RoleArn::parse(&h.role(&format!("bench-{}", i % roles))).unwrap();
    let job = JobKey {
        principal: None,
        pipeline: "bench".into(),
        run_id: i.to_string(),
        job: "j".into(),
        attempt: 1,
    };
    let set = Name::parse("deploy-artifacts").unwrap();
    let id = GrantId::derive(GrantIdentity {
        account: &account,
        source: "ci.github",
        job: &job,
        permission_set: &set,
        role: &role,
    });
    let expires_at = Utc::now() + expires_in;
    Grant {
        policy_name: id.policy_name(),
        id,
        status: GrantStatus::Active,
        source: "ci.github".into(),
        account,
        region: "us-east-1".into(),
        event_id: format!("bench-{i}"),
        job,
        context: JobContext::default(),
        role,
        permission_set: set,
        rule: Name::parse("bench").unwrap(),
        requested_duration_secs: 900,
        requested_at: expires_at - Duration::minutes(15),
        granted_at: expires_at - Duration::minutes(15),
        expires_at,
        policy_sha256: "0".repeat(64),
        policy_chars: 0,
        session: None,
    }
}

/// Grant items written directly, and each grant's policy on its role.
async fn seed(h: &Harness, grants: &[Grant]) {
    for chunk in grants.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|g| {
                let item = serde_dynamo::to_item(GrantItem::from_grant(g)).unwrap();
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                    .build()
            })
            .collect();
        while !requests.is_empty() {
            let out = h
                .dynamo
                .batch_write_item()
                .request_items(&h.config.table, requests)
                .send()
                .await
                .unwrap();
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&h.config.table))
                .unwrap_or_default();
        }
    }
    for g in grants {
        h.iam
            .put_role_policy()
            .role_name(g.role.name())
            .policy_name(&g.policy_name)
            .policy_document(DOC)
            .send()
            .await
            .unwrap();
    }
}

struct World {
    _moto: MotoServer,
    h: Harness,
    proxy: FaultProxy,
    clients: Clients,
}

async fn world(roles: usize, scale: f64, plan: FaultPlan) -> World {
    let moto = MotoServer::start().expect("a private emulator");
    let h = Harness::with_sdk(
        sdk(&moto.url()).await,
        &latch_tests::many_roles_policy("bench", roles, 100_000),
    )
    .await;
    let proxy = FaultProxy::start(moto.addr, plan.strict(StrictAws::aws_like().time_scale(scale)))
        .await
        .expect("the proxy");
    let clients = Clients::from_sdk_config(&sdk(&proxy.url()).await, &h.config);
    World {
        _moto: moto,
        h,
        proxy,
        clients,
    }
}

fn throttles(proxy: &FaultProxy) -> (u64, u64) {
    let r = proxy.report();
    let strict = r.strict_by_kind().get(&StrictKind::IamThrottle).copied().unwrap_or(0);
    let injected = r.by_kind().get(&FaultKind::Throttle).copied().unwrap_or(0);
    (strict, injected)
}

/// The world's clients (behind the strict proxy) as ports, on `clock`.
fn ports_on<C>(
    w: &World,
    clock: C,
) -> Ports<latch_aws::iam::IamAdapter, latch_aws::dynamo::DynamoStore, latch_aws::events::EventBridgeSink, C> {
    Ports::new(
        w.clients.iam.clone(),
        w.clients.store.clone(),
        w.clients.audit.clone(),
        clock,
    )
}

/// A Lambda run's budget for new work, scaled: the sweep's 50 s timeout less its 10 s margin.
fn sweep_budget(scale: f64) -> StdDuration {
    StdDuration::from_secs_f64(40.0 * scale)
}

async fn bench_sweep(grants: usize, scale: f64) {
    let w = world(50, scale, FaultPlan::new(7)).await;
    let expired: Vec<Grant> = (0..grants).map(|i| grant(&w.h, i, 50, -Duration::minutes(1))).collect();
    seed(&w.h, &expired).await;
    let clock = FixedClock::at(Utc::now());
    let settings = SweepSettings {
        deployment: w.clients.deployment.clone(),
        ..SweepSettings::default()
    };
    let ports = ports_on(&w, clock);
    let t = Instant::now();
    let mut runs = 0;
    let mut revoked = 0;
    let mut per_run = Vec::new();
    loop {
        runs += 1;
        let report = ports
            .sweeper(&w.h.policy, &ports.iam, settings.clone())
            .run_task(SweepTask::Expired, Some(Instant::now() + sweep_budget(scale)), None)
            .await
            .expect("the sweep");
        revoked += report.revoked;
        per_run.push(report.revoked);
        if report.expired_found == 0 || (!report.stopped_early && report.revoke_failed == 0) || runs >= 20 {
            break;
        }
    }
    let wall = t.elapsed().as_secs_f64();
    let (strict_throttles, _) = throttles(&w.proxy);
    println!(
        "| sweep | {grants} expired grants, 50 roles, concurrency {} | {runs} runs (revoked per run {per_run:?}) | {wall:.1} s wall, {:.0} s AWS-time | revoked {revoked}; IAM throttled by the rate model {strict_throttles} times |",
        settings.concurrency,
        wall / scale
    );
    assert_eq!(revoked, grants, "every expired grant revoked");
}

async fn bench_drift(roles: usize, scale: f64) {
    let w = world(roles, scale, FaultPlan::new(8)).await;
    let clock = FixedClock::at(Utc::now());
    let settings = SweepSettings {
        deployment: w.clients.deployment.clone(),
        // 5 calls a second in AWS-time.
        drift_iam_per_second: 5.0 / scale,
        ..SweepSettings::default()
    };
    let ports = ports_on(&w, clock);
    let t = Instant::now();
    let mut runs = 0;
    let mut checked = 0;
    let mut per_run = Vec::new();
    while checked < roles && runs < 20 {
        runs += 1;
        let report = ports
            .sweeper(&w.h.policy, &ports.iam, settings.clone())
            .run_task(SweepTask::Drift, Some(Instant::now() + sweep_budget(scale)), None)
            .await
            .expect("drift repair");
        checked += report.drift_roles_checked;
        per_run.push(report.drift_roles_checked);
    }
    let wall = t.elapsed().as_secs_f64();
    let (strict_throttles, _) = throttles(&w.proxy);
    println!(
        "| drift | {roles} eligible roles, 5 IAM calls/s | {runs} runs (roles per run {per_run:?}) | {wall:.1} s wall, {:.0} s AWS-time; full coverage within {runs} runs = {} min at rate(5 minutes) | IAM throttled by the rate model {strict_throttles} times |",
        wall / scale,
        runs * 5
    );
    assert!(checked >= roles, "every role checked");
}

async fn bench_revoke(records: usize, scale: f64) {
    let plan = FaultPlan::new(9)
        .op("iam", "DeleteRolePolicy", 0.1)
        .weights(&[(FaultKind::Throttle, 1)]);
    let w = world(20, scale, plan).await;
    let grants: Vec<Grant> = (0..records)
        .map(|i| grant(&w.h, i, 20, -Duration::minutes(1)))
        .collect();
    w.proxy.set_enabled(false);
    seed(&w.h, &grants).await;
    w.proxy.set_enabled(true);
    let template = fixture("dynamodb-stream-ttl-remove.json")["Records"][0].clone();
    let batch: Vec<EventRecord> = grants
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut r: EventRecord = serde_json::from_value(template.clone()).unwrap();
            r.event_id = format!("bench-{i}");
            r.change.sequence_number = Some(format!("43{i:020}"));
            r.change.old_image = serde_dynamo::to_item(GrantItem::from_grant(g)).unwrap();
            r
        })
        .collect();
    let function = revoke::RevokeFunction {
        ports: ports_on(&w, SystemClock),
    };
    let t = Instant::now();
    let mut from = 0;
    let mut invocations = 0;
    let mut resent = 0;
    let mut slowest = 0.0f64;
    while from < batch.len() && invocations < 20 {
        invocations += 1;
        // The revoke function's 60 s timeout less its 15 s margin, scaled.
        let stop_by = Instant::now() + StdDuration::from_secs_f64(45.0 * scale);
        let started = Instant::now();
        let outcomes = function.on_batch(&batch[from..], Some(stop_by)).await;
        slowest = slowest.max(started.elapsed().as_secs_f64());
        match outcomes.iter().position(|o| *o == revoke::RecordOutcome::Retry) {
            // Lambda sends the batch again from the first record reported failed.
            Some(first) => {
                resent += batch.len() - from - first;
                from += first;
            }
            None => break,
        }
    }
    let wall = t.elapsed().as_secs_f64();
    let (strict_throttles, injected) = throttles(&w.proxy);
    println!(
        "| revoke | {records} TTL records, 20 roles, 10 % of DeleteRolePolicy throttled | {invocations} invocations ({} redeliveries, {resent} records re-sent) | {wall:.1} s wall, {:.0} s AWS-time; slowest invocation {:.1} s AWS-time of a 60 s timeout | throttles injected {injected}, by the rate model {strict_throttles} |",
        invocations - 1,
        wall / scale,
        slowest / scale
    );
    assert!(from < batch.len() || invocations >= 1);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("sweep", String::as_str);
    let n = args.get(1).and_then(|a| a.parse().ok());
    let scale = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0.1);
    println!("| bench | setup | runs | time (SCALE {scale}) | notes |");
    println!("|---|---|---|---|---|");
    match what {
        "sweep" => bench_sweep(n.unwrap_or(1000), scale).await,
        "drift" => bench_drift(n.unwrap_or(300), scale).await,
        "revoke" => bench_revoke(n.unwrap_or(100), scale).await,
        other => panic!("unknown bench {other}: sweep, drift or revoke"),
    }
}
