//! The sweep keeping up at AWS's pace, through the real SDK: run leases on DynamoDB, drift
//! repair's cursor and pace under the strict-AWS model (IAM latency and its account-wide rate),
//! on a private emulator behind the proxy.

use std::sync::OnceLock;
use std::time::{Duration as StdDuration, Instant};

use aws_config::Region;
use chrono::{Duration, Utc};
use latch_aws::Clients;
use latch_core::memory::FixedClock;
use latch_core::model::RoleArn;
use latch_core::ports::Ports;
use latch_core::sweep::{SweepSettings, SweepState, SweepTask, Sweeper, role_order_key};
use latch_tests::faults::{FaultPlan, FaultProxy};
use latch_tests::moto::MotoServer;
use latch_tests::strict::{StrictAws, StrictKind};
use latch_tests::{Harness, many_roles_policy, unique};

static MOTO: OnceLock<MotoServer> = OnceLock::new();

fn moto() -> &'static MotoServer {
    MOTO.get_or_init(|| MotoServer::start().expect("a private emulator"))
}

/// The SDK as the functions load it (standard retries on), pointed at `endpoint`.
async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    let creds = aws_sdk_iam::config::Credentials::new("test", "test", None, None, "sweep");
    latch_aws::config::sdk_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .load()
        .await
}

/// AWS's times at a fifth: a drift run's window (6 s AWS-time) is 1.2 s, so the emulator's own
/// unscaled time and a busy machine (these tests share their process with the others) leave
/// most of it to the paced checks.
const SCALE: f64 = 0.2;

async fn strict_world(prefix: &str, roles: usize) -> (FaultProxy, Harness, Clients) {
    let addr = tokio::task::spawn_blocking(|| moto().addr).await.unwrap();
    let proxy = FaultProxy::start(addr, FaultPlan::new(31).strict(StrictAws::aws_like().time_scale(SCALE)))
        .await
        .expect("the proxy");
    let h = Harness::with_sdk(sdk(&proxy.url()).await, &many_roles_policy(prefix, roles, 1000)).await;
    let clients = Clients::from_sdk_config(&sdk(&proxy.url()).await, &h.config);
    (proxy, h, clients)
}

type AwsSweeper<'a> = Sweeper<
    'a,
    latch_aws::iam::IamAdapter,
    latch_aws::iam::IamAdapter,
    latch_aws::dynamo::DynamoStore,
    latch_aws::events::EventBridgeSink,
    FixedClock,
>;

type AwsPorts =
    Ports<latch_aws::iam::IamAdapter, latch_aws::dynamo::DynamoStore, latch_aws::events::EventBridgeSink, FixedClock>;

/// The clients behind the strict proxy as ports, on the test's clock.
fn ports_on(clients: &Clients, clock: &FixedClock) -> AwsPorts {
    Ports::new(
        clients.iam.clone(),
        clients.store.clone(),
        clients.audit.clone(),
        clock.clone(),
    )
}

fn sweeper<'a>(h: &'a Harness, ports: &'a AwsPorts, clients: &Clients, settings: SweepSettings) -> AwsSweeper<'a> {
    let settings = SweepSettings {
        deployment: clients.deployment.clone(),
        ..settings
    };
    ports.sweeper(&h.policy, &ports.iam, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_runs_of_a_task_at_once_when_both_start_then_one_holds_the_lease_and_the_other_does_nothing() {
    let (_proxy, h, clients) = strict_world(&unique("lease"), 2).await;
    let clock = FixedClock::at(Utc::now());
    let ports = ports_on(&clients, &clock);
    let a = sweeper(&h, &ports, &clients, SweepSettings::default());
    let b = sweeper(&h, &ports, &clients, SweepSettings::default());

    let (ra, rb) = tokio::join!(
        a.run_task(SweepTask::Expired, None, None),
        b.run_task(SweepTask::Expired, None, None)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());

    let skipped = [&ra, &rb].iter().filter(|r| !r.lease_held_elsewhere.is_empty()).count();
    assert_eq!(skipped, 1, "{ra:?} {rb:?}");
    let again = a.run_task(SweepTask::Expired, None, None).await.unwrap();
    assert!(again.lease_held_elsewhere.is_empty(), "the lease was given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_lease_left_by_a_dead_run_when_it_expires_then_the_next_run_proceeds() {
    let (_proxy, h, clients) = strict_world(&unique("dead"), 1).await;
    let now = Utc::now();
    assert!(
        clients
            .store
            .take_lease(SweepTask::Expired, "dead-run", now, now + Duration::seconds(55))
            .await
            .unwrap()
    );
    let clock = FixedClock::at(now + Duration::seconds(10));
    let blocked = sweeper(&h, &ports_on(&clients, &clock), &clients, SweepSettings::default())
        .run_task(SweepTask::Expired, None, None)
        .await
        .unwrap();
    assert_eq!(blocked.lease_held_elsewhere, vec![SweepTask::Expired]);
    clock.advance(Duration::seconds(46));
    let next = sweeper(&h, &ports_on(&clients, &clock), &clients, SweepSettings::default())
        .run_task(SweepTask::Expired, None, None)
        .await
        .unwrap();
    assert!(next.lease_held_elsewhere.is_empty());
}

/// 40 roles, runs of 6 s (AWS-time) at 5 IAM calls a second: at most 30 roles a run (fewer on
/// a loaded machine: the emulator's own time does not scale). The last role in order carries an
/// orphan: only a cursor that survives runs ever reaches it (the old sweep restarted at the first
/// role every run). Consecutive runs cover every role exactly once before any is seen again.
/// Paced under the model's 20/s, IAM never throttles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_more_roles_than_a_run_reaches_when_drift_repair_runs_then_the_cursor_reaches_the_last_within_the_bound()
{
    let prefix = unique("cur");
    let (proxy, h, clients) = strict_world(&prefix, 40).await;
    let mut roles: Vec<RoleArn> = (0..40)
        .map(|i| RoleArn::parse(&h.role(&format!("{prefix}-{i}"))).unwrap())
        .collect();
    roles.sort_by_key(role_order_key);
    let last = roles.last().unwrap().clone();
    let orphan = clients
        .deployment
        .policy_name(&latch_core::model::GrantId::parse("0123456789abcdef0123456789abcdef").unwrap());
    h.iam
        .put_role_policy()
        .role_name(last.name())
        .policy_name(&orphan)
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    tokio::time::sleep(StdDuration::from_secs_f64(3.0 * SCALE)).await; // past IAM's propagation
    let clock = FixedClock::at(Utc::now());
    let settings = SweepSettings {
        drift_iam_per_second: 5.0 / SCALE,
        drift_grace: Duration::zero(),
        ..SweepSettings::default()
    };
    let mut checked = 0;
    let mut runs = 0;
    let mut repaired = 0;
    let mut per_run = Vec::new();
    while checked < 40 {
        runs += 1;
        let stop_by = Instant::now() + StdDuration::from_secs_f64(6.0 * SCALE);
        let report = sweeper(&h, &ports_on(&clients, &clock), &clients, settings.clone())
            .run_task(SweepTask::Drift, Some(stop_by), None)
            .await
            .unwrap();
        assert_eq!(report.drift_roles_eligible, 40);
        assert!(report.drift_roles_checked > 0, "every run makes progress: {report:?}");
        assert!(report.drift_roles_checked <= 31, "the pace bounds a run: {report:?}");
        per_run.push(report.drift_roles_checked);
        checked += report.drift_roles_checked;
        repaired += report.drift_repaired;
        assert!(runs < 40, "no progress: {per_run:?}");
    }
    assert!(runs >= 2, "one run could not have reached every role: {per_run:?}");
    assert_eq!(
        repaired, 1,
        "the last role's orphan, reached by a later run: {per_run:?}"
    );
    tokio::time::sleep(StdDuration::from_secs_f64(3.0 * SCALE)).await; // IAM's reads catch up
    assert!(h.role_policy_names(last.as_str()).await.is_empty());
    assert_eq!(
        proxy
            .report()
            .strict_count("iam.ListRolePolicies", StrictKind::IamThrottle),
        0,
        "paced below IAM's rate"
    );
}
