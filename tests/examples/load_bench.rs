//! Load benchmark (not a test): N start events (default 2,000) through the local runner's path
//! (PutEvents on the bus → the pipeline rule → its SQS queue → the grant handler), on a private
//! emulator that is stopped afterwards.
//!
//!     cargo run -p latch-tests --example load_bench -- [EVENTS]
//!
//! Prints one table: grants made, handler latency (p50/p90/p99/max, and p50 of the first and
//! last 10% of events), throughput, and the peak RSS of this process and of the emulator.
//!
//! The queue is drained the way `latch dev` drains it (`crates/latch-cli/src/runner.rs`,
//! `LocalLatch::pump_inbox`: receive up to 10, fill a missing `account` from configuration,
//! hand each delivery to `grant::handle`, delete it when handled). That code lives in the
//! `latch` binary crate, which has no library target, so the loop is repeated here with a
//! timer around each handler call; the handler, its clients and the SDK configuration are the
//! ones Lambda runs (`aws_config::defaults`, no extra timeouts or retries).
//!
//! The emulator dominates the figures (about 9 ms per API call; three per grant). It runs with
//! the patches of `latch_tests::moto`: stock moto 5.2.5 deep-copies the whole table on every
//! TransactWriteItems and never frees the copies, so a grant's time and the emulator's memory
//! would grow with the table (compare the first and last deciles). Latch's own overhead per
//! grant is measured as a difference by `bench/run`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use latch_core::ports::SystemClock;
use latch_core::service::GrantService;
use latch_tests::Harness;
use latch_tests::moto::{MotoServer, peak_rss_mib};
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let moto = MotoServer::start()?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto.url())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let h = Harness::with_sdk(sdk.clone(), &latch_tests::many_roles_policy("load", ROLES, events)).await;
    let service = GrantService {
        policy: h.policy.clone(),
        iam: h.clients.iam.clone(),
        store: h.clients.store.clone(),
        audit: h.clients.audit.clone(),
        clock: SystemClock,
        keys: latch_core::identity::StaticKeys,
        native: h.clients.native.clone(),
        deployment: Default::default(),
    };
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
