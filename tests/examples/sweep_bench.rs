//! Benchmark (not a test): one sweep over M expired grants beside N live ones, on the emulator.
//!
//!     cargo run -p latch-tests --example sweep_bench -- [M] [N...]     (defaults: 100 100 1000)
//!
//! The defaults are small on purpose: moto keeps the table snapshots of every transaction alive
//! (its stream records hold them), so its memory grows by gigabytes a minute at M = 1000 and the
//! machine runs out; M = 1000 needs real DynamoDB.
//!
//! `SWEEP_CONCURRENCY` (default 1): the emulator serialises requests anyway, and under
//! concurrent transactions it answers some with HTTP 500 (which Latch treats as transient).
//!
//! Seeds grant items directly (BatchWriteItem) and a real inline policy for each expired grant,
//! then times one sweep run and counts, with an SDK interceptor, every DynamoDB call the sweep
//! makes and the items its index queries return. In DynamoDB a key-condition query on the sparse
//! index reads only the matching items, so the sweep's work follows M; the counts show it does
//! not change with N. The emulator's wall time does grow with N: moto copies the whole table on
//! every TransactWriteItems (for rollback) and scans it on every index query, so per-call time
//! there is O(table) — read the time column with that in mind.

use std::time::Instant;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chrono::{Duration, Utc};
use latch_aws::items::GrantItem;
use latch_core::memory::FixedClock;
use latch_core::model::{AccountId, Grant, GrantId, GrantIdentity, GrantStatus, JobContext, JobKey, Name, RoleArn};
use latch_tests::Harness;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Counts calls per operation.
#[derive(Debug, Clone, Default)]
struct CallCounter(Arc<Mutex<BTreeMap<String, usize>>>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }
    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg.load::<Metadata>().map_or("unknown", |m| m.name()).to_owned();
        *self.0.lock().unwrap().entry(name).or_default() += 1;
        Ok(())
    }
}

const ROLES: usize = 10;

fn grant(h: &Harness, i: usize, expired: bool) -> Grant {
    let now = Utc::now();
    let account = AccountId::parse("123456789012").unwrap();
    let role = RoleArn::parse(&h.role(&format!("bench-{}", i % ROLES))).unwrap();
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
    let expires_at = if expired {
        now - Duration::minutes(1)
    } else {
        now + Duration::hours(1)
    };
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
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let m = args.first().copied().unwrap_or(100);
    let ns: Vec<usize> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![100, 1000]
    };
    println!("| M expired | N live | seed s | sweep s (emulator) | revoked | DynamoDB calls by the sweep |");
    println!("|---:|---:|---:|---:|---:|---|");
    for n in ns {
        let bench_roles: String = (0..ROLES)
            .map(|r| format!("\"arn:aws:iam::123456789012:role/latch/bench-{r}\", "))
            .collect();
        let policy = std::fs::read_to_string(format!("{}/../events/policy-claimed.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .replace(
                "roles: [\"arn:aws:iam::123456789012:role/latch/app-deployer\"]",
                &format!("roles: [{bench_roles}\"arn:aws:iam::123456789012:role/latch/app-deployer\"]"),
            );
        let h = Harness::with_policy(&policy).await;
        let seeding = Instant::now();
        let expired: Vec<Grant> = (0..m).map(|i| grant(&h, i, true)).collect();
        let live: Vec<Grant> = (m..m + n).map(|i| grant(&h, i, false)).collect();
        seed(&h, &expired).await;
        seed(&h, &live).await;
        for g in &expired {
            h.iam
                .put_role_policy()
                .role_name(g.role.name())
                .policy_name(g.id.policy_name())
                .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#)
                .send()
                .await
                .unwrap();
        }
        let seed_secs = seeding.elapsed().as_secs_f64();
        let mut sweep = h.sweep_function(FixedClock::at(Utc::now()), Duration::hours(1));
        let counter = CallCounter::default();
        let counted = aws_sdk_dynamodb::config::Builder::from(&h.sdk)
            .interceptor(counter.clone())
            .build();
        sweep.ports.store =
            latch_aws::dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(counted), &h.config.table);
        sweep.settings.page_size = 100;
        sweep.settings.concurrency = std::env::var("SWEEP_CONCURRENCY")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let t = Instant::now();
        let report = sweep.sweep(None).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let calls: Vec<String> = counter
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(op, c)| format!("{op} {c}"))
            .collect();
        println!(
            "| {m} | {n} | {seed_secs:.1} | {secs:.1} | {} | {} |",
            report.revoked,
            calls.join(", ")
        );
        assert_eq!(report.revoked, m, "every expired grant is revoked: {report:?}");
    }
}
