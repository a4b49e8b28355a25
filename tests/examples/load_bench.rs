//! Load benchmark (not a test): N start events (default 2,000) through the local runner's path
//! (PutEvents on the bus → the pipeline rule → its SQS queue → the grant handler), on a private
//! emulator that is stopped afterwards.
//!
//!     cargo run -p latch-tests --example load_bench -- [EVENTS]
//!     cargo run -p latch-tests --example load_bench -- --strict [--warm] [JOBS]
//!
//! `--strict` (default 100 jobs) measures time to active and time to usable instead: every job's
//! start event is handed to the grant handler at once (as many concurrent Lambda invocations),
//! with every AWS call through the strict-AWS proxy at AWS's timing (`StrictAws::aws_like()`:
//! IAM ~250 ms with multi-second tails and 20 requests/s, DynamoDB 5-20 ms, conflicts, quota,
//! 2 s propagation). A handler error is an invocation Lambda would retry: the job re-invokes
//! after 1 s and the retry is counted. Time to active runs from the first invocation to the
//! grant being active (IAM accepted its document); time to usable adds the client's
//! propagation probe until IAM applies it. Each job runs in its own cold container, as a burst
//! does on Lambda (every one resolves its role); `--warm` shares one container's role cache.
//!
//! Prints one table: grants made, handler latency (p50/p90/p99/max, and p50 of the first and
//! last 10% of events), throughput, and the peak RSS of this process and of the emulator.
//!
//! The queue is drained the way `latch dev` drains it (`crates/latch-cli/src/runner.rs`,
//! `LocalLatch::pump_inbox`: receive up to 10, fill a missing `account` from configuration,
//! hand each delivery to `grant::handle`, delete it when handled). That code lives in the
//! `latch` binary crate, which has no library target, so the loop is repeated here with a
//! timer around each handler call; the handler, its clients and the SDK configuration are the
//! ones Lambda runs (`latch_aws::config::sdk_loader`, no extra timeouts or retries).
//!
//! The emulator dominates the figures (about 9 ms per API call; three per grant). It runs with
//! the patches of `latch_tests::moto`: stock moto 5.2.5 deep-copies the whole table on every
//! TransactWriteItems and never frees the copies, so a grant's time and the emulator's memory
//! would grow with the table (compare the first and last deciles). Latch's own overhead per
//! grant is measured as a difference by `bench/run`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::Region;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::Utc;
use grant::Outcome;
use lambda_runtime::{Context, LambdaEvent};
use latch_aws::iam::IamAdapter;
use latch_aws::probe::{Waited, wait_until_applied};
use latch_core::grant::GrantService;
use latch_core::grant::StartOutcome;
use latch_core::ports::SystemClock;
use latch_tests::Harness;
use latch_tests::faults::{FaultPlan, FaultProxy};
use latch_tests::moto::{MotoServer, peak_rss_mib};
use latch_tests::strict::StrictAws;
use serde_json::{Value, json};

const ROLES: usize = 8;
const ACCOUNT: &str = "123456789012";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

fn p50_of(latencies: &[Duration]) -> f64 {
    let mut v = latencies.to_vec();
    v.sort();
    percentile(&v, 0.5)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--strict") {
        let warm = args.iter().any(|a| a == "--warm");
        let jobs = args.iter().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100);
        return strict_concurrent(jobs, warm).await;
    }
    let events: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let moto = MotoServer::start()?;
    let sdk = latch_aws::config::sdk_loader()
        .endpoint_url(moto.url())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let h = Harness::with_sdk(sdk.clone(), &latch_tests::many_roles_policy("load", ROLES, events)).await;
    let service = GrantService::new(h.policy.clone(), h.ports(SystemClock)).with_native(h.clients.native.clone());
    let bus = aws_sdk_eventbridge::Client::new(&sdk);

    // Publish every start event, 10 entries per PutEvents, as pipelines would.
    let publishing = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(10) {
        let entries = chunk.iter().map(|i| {
            let detail = json!({
                "pipeline": format!("load-{}", i % 7),
                "run_id": format!("run-{i}"),
                "job": "deploy",
                "attempt": 1,
                "role_arn": h.role(&format!("load-{}", i % ROLES)),
                "permission_set": "deploy-artifacts",
                "duration": "20m",
                "ref": "refs/heads/main",
            });
            PutEventsRequestEntry::builder()
                .event_bus_name(&h.config.bus)
                .source("ci.github")
                .detail_type("Pipeline Job Started")
                .detail(detail.to_string())
                .build()
        });
        let out = bus.put_events().set_entries(Some(entries.collect())).send().await?;
        if out.failed_entry_count() > 0 {
            return Err(format!("PutEvents failed entries: {:?}", out.entries()).into());
        }
    }
    let publish_secs = publishing.elapsed().as_secs_f64();

    // Drain the rule's queue into the grant handler, as `latch dev` does.
    let draining = Instant::now();
    let mut latencies = Vec::with_capacity(events);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut idle_polls = 0;
    while latencies.len() < events && idle_polls < 5 {
        let out = h
            .sqs
            .receive_message()
            .queue_url(&h.provisioned.inbox_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await?;
        if out.messages().is_empty() {
            idle_polls += 1;
            continue;
        }
        idle_polls = 0;
        for message in out.messages() {
            let Some(mut v) = message.body().and_then(|b| serde_json::from_str::<Value>(b).ok()) else {
                continue;
            };
            if v.get("account").is_none_or(Value::is_null) {
                v["account"] = Value::String(ACCOUNT.into());
            }
            let event: EventBridgeEvent<Value> = serde_json::from_value(v)?;
            let t = Instant::now();
            let outcome = grant::handle(&service, LambdaEvent::new(event, Context::default())).await;
            latencies.push(t.elapsed());
            let label = match &outcome {
                Ok(o) => {
                    let text = format!("{o:?}");
                    text.split("(GrantId").next().unwrap_or_default().to_owned()
                }
                Err(e) => format!("error: {e}"),
            };
            *outcomes.entry(label).or_default() += 1;
            if outcome.is_ok()
                && let Some(handle) = message.receipt_handle()
            {
                h.sqs
                    .delete_message()
                    .queue_url(&h.provisioned.inbox_queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
    let drain_secs = draining.elapsed().as_secs_f64();

    let grants = h.items("grant").await.len();
    let activated = h
        .items("audit")
        .await
        .iter()
        .filter(|a| latch_tests::s(a, "decision").as_deref() == Some("activated"))
        .count();
    let mut policies = 0;
    for r in 0..ROLES {
        policies += h.role_policy_names(&h.role(&format!("load-{r}"))).await.len();
    }
    let emulator_rss = moto.peak_rss_mib().unwrap_or(0.0);
    drop(moto);
    let bench_rss = peak_rss_mib("/proc/self/status").unwrap_or(0.0);

    let decile = (latencies.len() / 10).max(1);
    let first = p50_of(&latencies[..decile.min(latencies.len())]);
    let last = p50_of(&latencies[latencies.len().saturating_sub(decile)..]);
    let total: Duration = latencies.iter().sum();
    let mut sorted = latencies.clone();
    sorted.sort();
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "load bench, {build} build, {} at {}",
        events,
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("outcomes: {outcomes:?}");
    println!();
    println!("| events | handled | grants | activation audits | policies on roles | publish s | drain s | grants/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {events} | {} | {grants} | {activated} | {policies} | {publish_secs:.1} | {drain_secs:.1} | {:.1} |",
        latencies.len(),
        latencies.len() as f64 / drain_secs.max(f64::EPSILON)
    );
    println!();
    println!(
        "| handler ms: p50 | p90 | p99 | max | mean | p50 first 10% | p50 last 10% | bench peak RSS MiB | emulator peak RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {first:.1} | {last:.1} | {bench_rss:.1} | {emulator_rss:.0} |",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
        total.as_secs_f64() * 1000.0 / latencies.len().max(1) as f64,
    );
    Ok(())
}

/// The functions' IAM client, with a retry partition of its own: the SDK keeps one retry token
/// bucket per partition per process, and each container is a process of its own on Lambda.
fn container_iam_client(sdk: &aws_config::SdkConfig, container: usize) -> aws_sdk_iam::Client {
    let config = latch_aws::config::iam_client(sdk)
        .config()
        .to_builder()
        .retry_partition(aws_sdk_iam::config::retry::RetryPartition::new(format!(
            "iam-container-{container}"
        )))
        .build();
    aws_sdk_iam::Client::from_conf(config)
}

/// Roles the strict run spreads its jobs over: IAM's aggregate quota fits about a dozen of these
/// documents on one role, so 100 jobs need at least 9.
const STRICT_ROLES: usize = 20;

async fn strict_concurrent(jobs: usize, warm: bool) -> Result<(), Box<dyn std::error::Error>> {
    let moto = MotoServer::start()?;
    let upstream = moto.url().trim_start_matches("http://").parse()?;
    let proxy = FaultProxy::start(upstream, FaultPlan::new(7).strict(StrictAws::aws_like())).await?;
    let sdk = latch_aws::config::sdk_loader()
        .endpoint_url(proxy.url())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let h = Harness::with_sdk(sdk.clone(), &latch_tests::many_roles_policy("load", STRICT_ROLES, jobs)).await;
    let service = Arc::new(h.grant_service());
    let events = Arc::new(aws_sdk_eventbridge::Client::new(&sdk));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..jobs {
        let event = h.event(
            "pipeline-job-started.json",
            json!({
                "pipeline": format!("load-{}", i % 7),
                "run_id": format!("run-{i}"),
                "role_arn": h.role(&format!("load-{}", i % STRICT_ROLES)),
                "environment": null,
                "ref": null,
            }),
        );
        // Lambda runs one event at a time per container: a burst of jobs is a burst of cold
        // containers, each resolving its role afresh (`--warm`: one container's cache for all).
        let service = if warm {
            service.clone()
        } else {
            let mut cold = h.grant_service();
            cold.ports.iam = IamAdapter::new(container_iam_client(&sdk, i))
                .requiring_boundary(h.config.boundary_arn.clone())
                .for_deployment(h.config.deployment.clone());
            Arc::new(cold)
        };
        let events = events.clone();
        tasks.spawn(async move {
            let t0 = Instant::now();
            let mut retries = 0;
            let outcome = loop {
                match grant::handle(&service, event.clone()).await {
                    Ok(o) => break o,
                    Err(_) if retries < 5 => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return (format!("error: {e}"), None, None, retries),
                }
            };
            let to_active = t0.elapsed();
            let Outcome::Start(StartOutcome::Activated(id)) = &outcome else {
                let label = format!("{outcome:?}");
                return (
                    label.split("(GrantId").next().unwrap_or_default().to_owned(),
                    None,
                    None,
                    retries,
                );
            };
            let usable = match wait_until_applied(&events, id, Instant::now() + Duration::from_secs(60)).await {
                Waited::Applies { .. } => Some(t0.elapsed()),
                _ => None,
            };
            ("Activated".to_owned(), Some(to_active), usable, retries)
        });
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let (mut active, mut usable, mut retried) = (Vec::new(), Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (label, to_active, to_usable, retries) = done?;
        *outcomes.entry(label).or_default() += 1;
        active.extend(to_active);
        usable.extend(to_usable);
        retried += retries;
    }
    let wall = started.elapsed();
    active.sort();
    usable.sort();
    let report = proxy.report();
    println!(
        "load bench --strict, {} build, {jobs} concurrent jobs over {STRICT_ROLES} roles, {}, at {}",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        if warm {
            "one warm container"
        } else {
            "one cold container per job"
        },
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "outcomes: {outcomes:?}; handler errors re-invoked: {retried}; wall {:.1} s",
        wall.as_secs_f64()
    );
    println!("strict verdicts: {:?}", report.strict_by_kind());
    println!();
    println!("| ms | p50 | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, v) in [("time to active", &active), ("time to usable (probe)", &usable)] {
        println!(
            "| {name} ({}) | {:.0} | {:.0} | {:.0} | {:.0} |",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
    }
    Ok(())
}
