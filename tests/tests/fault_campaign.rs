//! The fault campaign: Latch's three handlers through a fault-injecting proxy, retried as Lambda
//! retries them, then I1–I5 checked on the emulator directly.
//!
//! 500 pipeline jobs (`CAMPAIGN_JOBS`) start; half of them finish, the other half expire (half
//! of those through a TTL deletion on the stream, the rest through the sweep). Every call the
//! handlers make to IAM, DynamoDB and EventBridge passes the proxy, which answers 20%
//! (`CAMPAIGN_FAULT_RATE`) of them with a fault: throttling in each service's wire shape, 500s,
//! responses held past the client's attempt timeout, connections dropped before forwarding or
//! after the emulator applied the request. Seeded (`CAMPAIGN_SEED`); `CAMPAIGN_CONCURRENCY`
//! jobs in flight (1 replays the same faults exactly).
//!
//! Lambda's retries, modelled:
//! - EventBridge → grant function is an asynchronous invoke: an `Err` is retried twice, then
//!   the event goes to the dead-letter queue. The operator re-drives the DLQ (the same events,
//!   the same retries) until it is empty; every DLQ'd event is counted and accounted for.
//! - Stream → revoke function: a batch's reported item failures make Lambda redeliver the batch
//!   from the first failed record on, until no record fails.
//! - The sweep runs on its schedule (an injected clock past every expiry, one minute later each
//!   run) until a run finds nothing to do; a run that fails is simply followed by the next.
//!
//! The SDK keeps its production retry policy (standard mode, 3 attempts and IAM's 5, the
//! retry-quota token bucket) with the backoff scaled down 10× (timing only), and production's
//! timeouts exactly (`latch_aws::config::timeouts`: connect, per attempt, per operation), so a
//! held response costs what it costs in AWS: an attempt timed out and retried, or an operation
//! that runs out of time and fails the invocation into Lambda's retries.
//!
//! The campaign runs on its own emulator (`latch_tests::moto`: moto patched for memory and for
//! transactions in O(items) rather than O(table)), and the proxy forwards one request at a time
//! (moto is not safe under concurrent transactions).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{Region, SdkConfig};
use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use grant::Outcome;
use lambda_runtime::LambdaEvent;
use latch_aws::Clients;
use latch_core::grant::GrantService;
use latch_core::memory::FixedClock;
use latch_core::ports::{Ports, SystemClock};
use latch_core::sweep::SweepSettings;
use latch_tests::faults::{FaultKind, FaultPlan, FaultProxy};
use latch_tests::moto::MotoServer;
use latch_tests::{Harness, Item, lambda_event, s};
use serde_json::{Value, json};

/// The clients (behind the fault proxy) as the ports a function holds, on `clock`.
fn ports_of<C>(
    clients: &Clients,
    clock: C,
) -> Ports<latch_aws::iam::IamAdapter, latch_aws::dynamo::DynamoStore, latch_aws::events::EventBridgeSink, C> {
    Ports::new(clients.iam.clone(), clients.store.clone(), clients.audit.clone(), clock)
}

const ROLES: usize = 32;
/// Lambda's asynchronous invocation: the first try and two retries.
const ASYNC_ATTEMPTS: u32 = 3;
const STREAM_BATCH: usize = 25;
const MAX_REDRIVES: usize = 10;
const MAX_SWEEP_RUNS: usize = 30;
/// How long the proxy holds a slow response beyond the client's attempt timeout.
const SLOW_FOR: Duration = Duration::from_millis(500);

/// Production's attempt timeout: a slow fault holds its response past it.
fn attempt_timeout() -> Duration {
    latch_aws::config::timeouts()
        .operation_attempt_timeout()
        .expect("production sets an attempt timeout")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The SDK as the functions load it (production's timeouts), pointed at `endpoint`, with a 10×
/// shorter backoff when faulted (see the module doc).
async fn sdk(endpoint: &str, faulted: bool) -> SdkConfig {
    let creds = aws_sdk_iam::config::Credentials::new("test", "test", None, None, "campaign");
    let mut loader = latch_aws::config::sdk_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds);
    if faulted {
        loader = loader
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(100)),
            )
            .timeout_config(latch_aws::config::timeouts());
    }
    loader.load().await
}

fn job_event(h: &Harness, i: usize, detail_type: &str, run_tag: &str) -> Value {
    let mut detail = json!({
        "pipeline": format!("camp-{}", i % 5),
        "run_id": format!("{run_tag}-{i}"),
        "job": "deploy",
        "attempt": 1,
    });
    if detail_type == "Pipeline Job Started" {
        detail["role_arn"] = json!(h.role(&format!("camp-{}", i % ROLES)));
        detail["permission_set"] = json!("deploy-artifacts");
        detail["duration"] = json!("15m");
        detail["ref"] = json!("refs/heads/main");
    } else {
        detail["outcome"] = json!("success");
    }
    json!({
        "version": "0",
        "id": format!("{run_tag}-{}-{i}", if detail_type == "Pipeline Job Started" { "start" } else { "finish" }),
        "detail-type": detail_type,
        "source": "ci.github",
        "account": "123456789012",
        "time": latch_core::iam_time(Utc::now()),
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    })
}

type AwsGrant = grant::AwsGrantService;

/// What Lambda's asynchronous invocations of the grant function came to, in one phase.
#[derive(Debug, Default)]
struct AsyncStats {
    events: usize,
    invocations: usize,
    /// Invocations after the first, over all events and re-drives.
    retries: usize,
    /// Events that exhausted their attempts (each re-drive counts again).
    dlq: usize,
    redrive_rounds: usize,
    outcomes: BTreeMap<String, usize>,
}

/// How many invocations an event took, and its outcome or the last error (its DLQ entry).
type Invoked = (u32, Result<Outcome, String>);

/// One event as Lambda's asynchronous invoke runs it: `Err` (the event's DLQ entry) after
/// [`ASYNC_ATTEMPTS`] failures.
async fn invoke_async(service: &AwsGrant, event: &Value) -> Invoked {
    let mut last = String::new();
    for attempt in 1..=ASYNC_ATTEMPTS {
        match grant::handle(service, lambda_event(event.clone())).await {
            Ok(outcome) => return (attempt, Ok(outcome)),
            Err(e) => last = e.to_string(),
        }
    }
    (ASYNC_ATTEMPTS, Err(last))
}

/// The outcome's variant path without grant ids or counts, e.g. `Start(Activated`.
fn outcome_label(o: &Outcome) -> String {
    let text = format!("{o:?}");
    let cut = [text.find("(GrantId"), text.find(" {")].into_iter().flatten().min();
    cut.map_or(text.clone(), |at| text[..at].to_owned())
}

/// Delivers `events`, `concurrency` at a time, then re-drives the DLQ until it is empty.
async fn deliver(service: &AwsGrant, events: Vec<Value>, concurrency: usize) -> AsyncStats {
    let mut stats = AsyncStats {
        events: events.len(),
        ..Default::default()
    };
    let mut pending = events;
    while !pending.is_empty() {
        let results: Vec<(Value, Invoked)> = futures::stream::iter(pending)
            .map(|e| async move {
                let r = invoke_async(service, &e).await;
                (e, r)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut dlq = Vec::new();
        for (event, (attempts, result)) in results {
            stats.invocations += attempts as usize;
            stats.retries += attempts as usize - 1;
            match result {
                Ok(o) => *stats.outcomes.entry(outcome_label(&o)).or_default() += 1,
                Err(e) => {
                    println!("  DLQ: {} after {attempts} attempts: {e}", event["id"]);
                    dlq.push(event);
                }
            }
        }
        stats.dlq += dlq.len();
        if !dlq.is_empty() {
            stats.redrive_rounds += 1;
            assert!(
                stats.redrive_rounds <= MAX_REDRIVES,
                "the DLQ still holds {} events after {MAX_REDRIVES} re-drives",
                dlq.len()
            );
        }
        pending = dlq;
    }
    stats
}

/// Stream batches as Lambda delivers them with ReportBatchItemFailures.
#[derive(Debug, Default)]
struct StreamStats {
    records: usize,
    deliveries: usize,
    redelivered_records: usize,
    /// The most deliveries one batch needed (the template allows 1 + 5 before OnFailure).
    max_deliveries: usize,
}

async fn deliver_stream(revoke: &revoke::AwsRevokeFunction, records: Vec<EventRecord>) -> StreamStats {
    let mut stats = StreamStats {
        records: records.len(),
        ..Default::default()
    };
    for batch in records.chunks(STREAM_BATCH) {
        let mut batch = batch.to_vec();
        for round in 0.. {
            stats.max_deliveries = stats.max_deliveries.max(round + 1);
            assert!(round < 50, "a stream batch still fails after 50 deliveries");
            stats.deliveries += 1;
            let mut event = StreamEvent::default();
            event.records = batch.clone();
            let response = revoke
                .handle(LambdaEvent::new(event, Default::default()))
                .await
                .expect("the revoke handler reports failures per record, never for the batch");
            let Some(first) = response
                .batch_item_failures
                .iter()
                .filter_map(|f| f.item_identifier.as_deref())
                .filter_map(|seq| {
                    batch
                        .iter()
                        .position(|r| r.change.sequence_number.as_deref() == Some(seq))
                })
                .min()
            else {
                break;
            };
            // Lambda resumes from the first failed record: the ones after it come again too.
            batch.drain(..first);
            stats.redelivered_records += batch.len();
        }
    }
    stats
}

fn decision(a: &Item) -> String {
    s(a, "decision").unwrap_or_default()
}

fn count_by<'a>(items: impl Iterator<Item = &'a Item>, f: impl Fn(&Item) -> String) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in items {
        *out.entry(f(i)).or_default() += 1;
    }
    out
}

/// The latch-* inline policies on every role under /latch/, read from IAM directly.
async fn latch_policies(iam: &aws_sdk_iam::Client) -> Vec<(String, String)> {
    let roles = iam.list_roles().path_prefix("/latch/").send().await.expect("ListRoles");
    let mut out = Vec::new();
    for role in roles.roles() {
        let names = iam
            .list_role_policies()
            .role_name(role.role_name())
            .send()
            .await
            .expect("ListRolePolicies");
        for n in names.policy_names() {
            if n.starts_with(latch_core::model::POLICY_NAME_PREFIX) {
                out.push((role.role_name().to_owned(), n.clone()));
            }
        }
    }
    out
}

/// Audit ids of the events that reached the bus (the audit tap's queue), read directly.
async fn published_audit_ids(h: &Harness) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    loop {
        let out = h
            .sqs
            .receive_message()
            .queue_url(&h.provisioned.audit_queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("ReceiveMessage");
        if out.messages().is_empty() {
            return seen;
        }
        for m in out.messages() {
            if let Some(id) = m
                .body()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .and_then(|v| v["detail"]["audit_id"].as_str().map(str::to_owned))
            {
                *seen.entry(id).or_default() += 1;
            }
            if let Some(handle) = m.receipt_handle() {
                h.sqs
                    .delete_message()
                    .queue_url(&h.provisioned.audit_queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("DeleteMessage");
            }
        }
    }
}

/// The archive as the stand-in writes it, by audit id: each copy with its object key.
async fn archive_of(h: &Harness) -> HashMap<String, Vec<(String, Value)>> {
    let bucket = latch_tests::unique("archive");
    latch_aws::archive::create_bucket(&h.sdk, &bucket, 1)
        .await
        .expect("the archive bucket");
    let mut feed = latch_aws::archive::ArchiveFeed::open(&h.sdk, &h.config.table, &bucket)
        .await
        .expect("the archive feed");
    feed.pump().await.expect("the stream archived");
    let mut by_id: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for (key, line) in latch_aws::archive::read_archive(&h.sdk, &bucket)
        .await
        .expect("the archive")
    {
        let id = line["Item"]["audit_id"]["S"]
            .as_str()
            .unwrap_or("(no audit_id)")
            .to_owned();
        by_id.entry(id).or_default().push((key, line));
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_campaign_keeps_i1_to_i5() {
    let jobs: usize = env_or("CAMPAIGN_JOBS", 500);
    let rate: f64 = env_or("CAMPAIGN_FAULT_RATE", 0.2);
    let seed: u64 = env_or("CAMPAIGN_SEED", 8);
    let concurrency: usize = env_or("CAMPAIGN_CONCURRENCY", 4);
    let began = Instant::now();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut mark = Instant::now();
    let mut lap = |name: &'static str, phases: &mut Vec<(&str, f64)>| {
        phases.push((name, mark.elapsed().as_secs_f64()));
        mark = Instant::now();
    };

    let moto = MotoServer::start().expect("a private emulator");
    let direct = sdk(&moto.url(), false).await;
    let h = Harness::with_sdk(direct, &latch_tests::many_roles_policy("camp", ROLES, 1000)).await;
    let plan = FaultPlan::new(seed)
        .service("iam", rate)
        .service("dynamodb", rate)
        .service("events", rate)
        .weights(&[
            (FaultKind::Throttle, 35),
            (FaultKind::ServerError, 20),
            (FaultKind::SlowResponse, 10),
            (FaultKind::DropBeforeForward, 15),
            (FaultKind::DropAfterApply, 20),
        ])
        .slow_for(attempt_timeout() + SLOW_FOR);
    let proxy = FaultProxy::start(moto.addr, plan).await.expect("the proxy");
    let faulted = sdk(&proxy.url(), true).await;
    let clients = Clients::from_sdk_config(&faulted, &h.config);
    let service: AwsGrant = GrantService::new(h.policy.clone(), ports_of(&clients, SystemClock))
        .with_keys(latch_aws::jwks::HttpKeySource::new().expect("roots for the key fetcher"))
        .with_native(clients.native.clone());
    let revoke = revoke::RevokeFunction {
        ports: ports_of(&clients, SystemClock),
    };
    let run_tag = format!("c{seed}");
    lap("setup", &mut phases);

    // 1. Every job starts.
    let starts: Vec<Value> = (0..jobs)
        .map(|i| job_event(&h, i, "Pipeline Job Started", &run_tag))
        .collect();
    let start_stats = deliver(&service, starts, concurrency).await;
    lap("starts", &mut phases);
    assert!(!moto.killed_for_memory(), "the emulator ran out of memory");

    // I3 and I5 after the starts: one grant and one activation audit per job; I1: each policy
    // on its role carries the grant's expiry.
    let grants = h.items("grant").await;
    assert_eq!(grants.len(), jobs, "one grant item per job");
    let runs: HashSet<String> = grants.iter().filter_map(|g| s(g, "run_id")).collect();
    assert_eq!(runs.len(), jobs, "no job has two grants");
    let audits = h.items("audit").await;
    let activated: Vec<&Item> = audits.iter().filter(|a| decision(a) == "activated").collect();
    assert_eq!(activated.len(), jobs, "one activation audit per grant");
    assert_eq!(
        activated
            .iter()
            .filter_map(|a| s(a, "grant_id"))
            .collect::<HashSet<_>>()
            .len(),
        jobs
    );
    assert_eq!(
        audits.len(),
        jobs,
        "no other decision was recorded: {:?}",
        count_by(audits.iter(), decision)
    );
    for g in &grants {
        let role = s(g, "role_arn").expect("role_arn");
        let id = s(g, "grant_id").expect("grant_id");
        let expires: i64 = g["expires_at_epoch"].as_n().expect("expiry").parse().expect("epoch");
        let expiry = latch_core::iam_time(DateTime::from_timestamp(expires, 0).expect("epoch"));
        let doc = h
            .role_policy(&role, &format!("latch-{id}"))
            .await
            .unwrap_or_else(|| panic!("grant {id} has its policy on {role}"));
        for st in doc["Statement"].as_array().expect("statements") {
            assert_eq!(
                st["Condition"]["DateLessThan"]["aws:CurrentTime"],
                expiry.as_str(),
                "I1 on {id}"
            );
        }
    }
    assert_eq!(latch_policies(&h.iam).await.len(), jobs, "exactly one policy per grant");
    lap("check starts", &mut phases);

    // 2. Half the jobs finish.
    let finishes: Vec<Value> = (0..jobs)
        .filter(|i| i % 2 == 0)
        .map(|i| job_event(&h, i, "Pipeline Job Finished", &run_tag))
        .collect();
    let finished = finishes.len();
    let finish_stats = deliver(&service, finishes, concurrency).await;
    lap("finishes", &mut phases);

    // 3. Half of the others expire through TTL: deleted as DynamoDB's TTL would, the stream's
    // REMOVE records fed to the revoke function.
    let mut reader = latch_aws::stream::StreamReader::open(&h.sdk, &h.config.table)
        .await
        .expect("the stream");
    reader.skip_existing().await.expect("stream");
    let ttl_jobs: HashSet<String> = (0..jobs)
        .filter(|i| i % 4 == 1)
        .map(|i| format!("{run_tag}-{i}"))
        .collect();
    let mut ttl_keys = HashSet::new();
    for g in grants
        .iter()
        .filter(|g| s(g, "run_id").is_some_and(|r| ttl_jobs.contains(&r)))
    {
        let pk = s(g, "pk").expect("pk");
        h.delete_item(&pk, "GRANT").await;
        ttl_keys.insert(pk);
    }
    let records: Vec<EventRecord> = reader
        .poll(|r| matches!(r.change.keys.get("pk"), Some(serde_dynamo::AttributeValue::S(pk)) if ttl_keys.contains(pk)))
        .await
        .expect("stream records")
        .into_iter()
        .filter(|r| r.event_name == "REMOVE")
        .collect();
    assert_eq!(records.len(), ttl_keys.len(), "one REMOVE record per TTL deletion");
    let stream_stats = deliver_stream(&revoke, records).await;
    lap("stream", &mut phases);

    // 4. The sweep, on its schedule, past every expiry, until a run finds nothing to do.
    let clock = FixedClock::at(Utc::now() + chrono::Duration::hours(1));
    let sweep = sweep::SweepFunction {
        policy: h.policy.clone(),
        ports: ports_of(&clients, clock.clone()),
        settings: SweepSettings {
            page_size: 50,
            concurrency,
            drift_grace: chrono::Duration::minutes(10),
            deployment: Default::default(),
            drift_iam_per_second: 1_000.0,
            ..Default::default()
        },
    };
    let (mut sweep_runs, mut sweep_errors) = (0, 0);
    let mut sweep_total = latch_core::sweep::SweepReport::default();
    loop {
        sweep_runs += 1;
        assert!(
            sweep_runs <= MAX_SWEEP_RUNS,
            "the sweep is not done after {MAX_SWEEP_RUNS} runs: {sweep_total:?}"
        );
        match sweep.sweep(None).await {
            Ok(r) => {
                sweep_total.revoked += r.revoked;
                sweep_total.already_revoked += r.already_revoked;
                sweep_total.revoke_failed += r.revoke_failed;
                sweep_total.events_unpublished += r.events_unpublished;
                sweep_total.drift_repaired += r.drift_repaired;
                sweep_total.drift_pending += r.drift_pending;
                sweep_total.drift_errors += r.drift_errors;
                let idle = r.revoked + r.revoke_failed + r.drift_repaired + r.drift_pending + r.drift_errors == 0;
                if idle && !r.stopped_early {
                    break;
                }
            }
            Err(e) => {
                sweep_errors += 1;
                println!("  sweep run {sweep_runs} failed (the scheduler runs it again): {e}");
            }
        }
        clock.advance(chrono::Duration::minutes(1));
    }
    lap("sweep", &mut phases);
    assert!(!moto.killed_for_memory(), "the emulator ran out of memory");
    let faults = proxy.report();
    drop(proxy);

    // Afterwards, read directly: I2 every grant revoked, I4 no latch-* policy anywhere, I3 and
    // I5 one durable audit per decision.
    let grants = h.items("grant").await;
    let expected_grants = jobs - ttl_keys.len();
    assert_eq!(
        grants.len(),
        expected_grants,
        "the TTL-deleted grants are gone, the others remain"
    );
    let statuses = count_by(grants.iter(), |g| s(g, "status").unwrap_or_default());
    assert_eq!(
        statuses,
        BTreeMap::from([("revoked".to_owned(), expected_grants)]),
        "I2"
    );
    assert!(
        grants.iter().all(|g| !g.contains_key("expiry_bucket")),
        "no revoked grant left in the sweep's index"
    );
    let remaining = latch_policies(&h.iam).await;
    assert!(remaining.is_empty(), "I4: latch-* policies left: {remaining:?}");
    let counters = h.items("role_counter").await;
    for c in &counters {
        assert_eq!(
            c.get("active_grants").and_then(|v| v.as_n().ok()).map(String::as_str),
            Some("0"),
            "every increment met exactly one decrement: {c:?}"
        );
    }

    let audits = h.items("audit").await;
    let by_decision = count_by(audits.iter(), decision);
    let revoked: Vec<&Item> = audits.iter().filter(|a| decision(a) == "revoked").collect();
    let by_reason = count_by(revoked.iter().copied(), |a| s(a, "reason").unwrap_or_default());
    assert_eq!(
        revoked
            .iter()
            .filter_map(|a| s(a, "grant_id"))
            .collect::<HashSet<_>>()
            .len(),
        jobs,
        "one Revoked audit per grant"
    );
    let expected_reasons = BTreeMap::from([
        ("job_finished".to_owned(), finished),
        ("expired_ttl".to_owned(), ttl_keys.len()),
        ("expired_sweep".to_owned(), jobs - finished - ttl_keys.len()),
    ]);
    assert_eq!(by_reason, expected_reasons, "revocations by path");
    assert_eq!(by_decision.get("activated"), Some(&jobs));
    assert_eq!(by_decision.get("denied"), None, "nothing was denied");
    assert_eq!(by_decision.get("drift_repaired"), None, "no orphan was ever made");
    let revoke_failed = by_decision.get("revoke_failed").copied().unwrap_or(0);
    assert_eq!(audits.len(), 2 * jobs + revoke_failed);
    let audit_ids: HashSet<String> = audits.iter().filter_map(|a| s(a, "audit_id")).collect();
    assert_eq!(audit_ids.len(), audits.len(), "audit ids are unique");

    // I5, the archive: every durable audit item reaches it, as the table holds it. The stand-in
    // for the template's Pipe and Firehose reads the whole stream once the run is over (the
    // stream keeps 24 h; the Pipe follows it as it goes).
    let archived = archive_of(&h).await;
    for a in &audits {
        let id = s(a, "audit_id").expect("audit_id");
        let copies = archived.get(&id).map(Vec::as_slice).unwrap_or_default();
        assert!(!copies.is_empty(), "audit {id} is not in the archive");
        let as_stored = serde_json::to_value(serde_dynamo::Item::from(a.clone())).expect("typed JSON");
        for (key, line) in copies {
            assert_eq!(line["Item"], as_stored, "the archive's copy of {id} is the item");
            let date = s(a, "recorded_at").expect("recorded_at")[..10].to_owned();
            assert!(
                key.starts_with(&format!("audit/date={date}/")),
                "{key} is under its date"
            );
        }
    }
    assert_eq!(archived.len(), audits.len(), "nothing but audit items in the archive");
    let archive_duplicates: usize = archived.values().map(|c| c.len() - 1).sum();

    // The events: none without its durable record; the records whose event never went out
    // are counted (see the findings).
    let published = published_audit_ids(&h).await;
    let stray: Vec<&String> = published.keys().filter(|id| !audit_ids.contains(*id)).collect();
    assert!(stray.is_empty(), "events without a durable audit: {stray:?}");
    let unpublished: BTreeMap<String, usize> = count_by(
        audits
            .iter()
            .filter(|a| s(a, "audit_id").is_some_and(|id| !published.contains_key(&id))),
        |a| format!("{}:{}", decision(a), s(a, "reason").unwrap_or_default()),
    );
    // A Revoked event can be lost only where the sweep said so (its PutEvents failed for good
    // after the grant left the expiry index); every other path republishes on retry. The sweep
    // may also report one that did go out (the answer dropped after EventBridge took it).
    let lost_revocations: usize = unpublished
        .iter()
        .filter(|(key, _)| key.starts_with("revoked:"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        lost_revocations <= sweep_total.events_unpublished,
        "Revoked audits without an event that the sweep did not report: {unpublished:?}, reported {}",
        sweep_total.events_unpublished
    );
    let duplicates: usize = published.values().map(|n| n - 1).sum();
    lap("check", &mut phases);

    let rss = moto.peak_rss_mib();
    drop(moto);
    // Straight to stderr: libtest captures print! but not the stream itself, so the counts show
    // in CI logs on success too.
    let mut out = String::new();
    macro_rules! say {
        ($($arg:tt)*) => {{
            out.push_str(&format!($($arg)*));
            out.push('\n');
        }};
    }
    say!("\nfault campaign: {jobs} jobs, seed {seed}, fault rate {rate}, concurrency {concurrency}");
    say!(
        "grants: {} activated, {} job items finished",
        by_decision["activated"],
        finished
    );
    say!("revocations by path: {by_reason:?}");
    say!("revoke failures audited (each retried later): {revoke_failed}");
    say!(
        "starts: {} events, {} invocations, {} Lambda retries, {} DLQ'd and re-driven in {} rounds, outcomes {:?}",
        start_stats.events,
        start_stats.invocations,
        start_stats.retries,
        start_stats.dlq,
        start_stats.redrive_rounds,
        start_stats.outcomes
    );
    say!(
        "finishes: {} events, {} invocations, {} Lambda retries, {} DLQ'd and re-driven in {} rounds, outcomes {:?}",
        finish_stats.events,
        finish_stats.invocations,
        finish_stats.retries,
        finish_stats.dlq,
        finish_stats.redrive_rounds,
        finish_stats.outcomes
    );
    say!(
        "stream: {} TTL records, {} batch deliveries (at most {} for one batch), {} records redelivered",
        stream_stats.records,
        stream_stats.deliveries,
        stream_stats.max_deliveries,
        stream_stats.redelivered_records
    );
    say!("sweep: {sweep_runs} runs ({sweep_errors} failed), totals {sweep_total:?}");
    say!(
        "archive: {} audit items, all archived ({} lines, {archive_duplicates} duplicates)",
        audits.len(),
        archived.values().map(Vec::len).sum::<usize>()
    );
    say!(
        "bus: {} distinct audit events, {duplicates} duplicate deliveries; durable audits with no event: {unpublished:?}",
        published.len()
    );
    say!(
        "faults: {} injected in {} requests; by kind {:?}",
        faults.injected(),
        faults.requests(),
        faults.by_kind()
    );
    out.push_str(&faults.to_string());
    say!(
        "emulator peak RSS {:.0} MiB; phases {:?}; wall {:.1} s",
        rss.unwrap_or(0.0),
        phases,
        began.elapsed().as_secs_f64()
    );
    use std::io::Write;
    let _ = std::io::stderr().write_all(out.as_bytes());
}

/// The campaign in strict-AWS mode on ONE role: `STRICT_JOBS` jobs (`CAMPAIGN_STRICT_JOBS`, 40)
/// start 32 at a time against a role IAM also serves a team policy on, through a proxy that
/// models IAM's aggregate inline quota, ConcurrentModification, DynamoDB's TransactionConflict,
/// IAM's rate limit and realistic latency (scaled down), on top of 10% injected faults; then they
/// finish, 32 at a time, and the sweep runs. Besides I1–I5 (one grant and at most one activation
/// per job, every policy gone at the end), it checks what IAM really holds: no `activated` audit
/// for a grant IAM refused, no grant recorded active without its document on the role, no
/// `Latch Revoke Failed` from a conflict, and IAM never had to refuse a document for the quota
/// (Latch budgets it, so the role's inline total never went over 10,240).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_campaign_on_one_role_keeps_what_iam_holds() {
    use latch_tests::strict::{StrictAws, StrictKind};
    let jobs: usize = env_or("CAMPAIGN_STRICT_JOBS", 40);
    let moto = MotoServer::start().expect("a private emulator");
    let direct = sdk(&moto.url(), false).await;
    let h = Harness::with_sdk(direct, &latch_tests::many_roles_policy("one", 1, 1000)).await;
    let role = h.role("one-0");
    let role_name = role.rsplit('/').next().unwrap_or_default().to_owned();
    let plan = FaultPlan::new(21)
        .service("iam", 0.1)
        .service("dynamodb", 0.1)
        .service("events", 0.1)
        .weights(&[
            (FaultKind::Throttle, 40),
            (FaultKind::ServerError, 30),
            (FaultKind::DropAfterApply, 30),
        ])
        .strict(StrictAws::aws_like().time_scale(0.05));
    let proxy = FaultProxy::start(moto.addr, plan).await.expect("the proxy");
    let faulted = sdk(&proxy.url(), true).await;
    let clients = Clients::from_sdk_config(&faulted, &h.config);
    // The team's own inline policy, through the proxy so its quota model knows it: ~6,000 chars.
    let own = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/{}"}}]}}"#,
        "x".repeat(5_900)
    );
    aws_sdk_iam::Client::new(&faulted)
        .put_role_policy()
        .role_name(&role_name)
        .policy_name("team-own")
        .policy_document(&own)
        .send()
        .await
        .expect("the team's own policy");
    // IAM's reads lag its writes (the proxy models it); the team's policy long predates any job.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let service: AwsGrant = GrantService::new(h.policy.clone(), ports_of(&clients, SystemClock))
        .with_keys(latch_aws::jwks::HttpKeySource::new().expect("roots for the key fetcher"))
        .with_native(clients.native.clone());
    let one_role = |i: usize, detail_type: &str| {
        let mut e = job_event(&h, i, detail_type, "strict");
        e["detail"]["pipeline"] = json!(format!("one-{}", i % 5));
        if detail_type == "Pipeline Job Started" {
            e["detail"]["role_arn"] = json!(role);
        }
        e
    };
    let starts = deliver(
        &service,
        (0..jobs).map(|i| one_role(i, "Pipeline Job Started")).collect(),
        32,
    )
    .await;
    eprintln!("strict campaign starts: {starts:?}");

    // A job the quota refuses writes no grant item; every other job writes one, and only one.
    let grants = h.items("grant").await;
    let runs: HashSet<String> = grants.iter().filter_map(|g| s(g, "run_id")).collect();
    assert_eq!(runs.len(), grants.len(), "no job has two grants");
    let audits = h.items("audit").await;
    let activated: HashSet<String> = audits
        .iter()
        .filter(|a| decision(a) == "activated")
        .filter_map(|a| s(a, "grant_id"))
        .collect();
    let on_role: HashSet<String> = latch_policies(&h.iam).await.into_iter().map(|(_, p)| p).collect();
    for g in &grants {
        let id = s(g, "grant_id").unwrap_or_default();
        match s(g, "status").as_deref() {
            Some("active") => {
                assert!(
                    activated.contains(&id),
                    "active grant {id} without its activation audit"
                );
                assert!(
                    on_role.contains(&s(g, "policy_name").unwrap_or_default()),
                    "grant {id} recorded active, its document is not on the role"
                );
            }
            Some("failed") | Some("pending") => {
                assert!(
                    !activated.contains(&id),
                    "an activation audit for grant {id}, which IAM never accepted"
                )
            }
            other => panic!("grant {id} is {other:?} before any finish"),
        }
    }
    let denied = count_by(audits.iter().filter(|a| decision(a) == "denied"), |a| {
        s(a, "reason").unwrap_or_default()
    });
    assert_eq!(
        activated.len() + denied.values().sum::<usize>(),
        jobs,
        "every job decided once: {} activated, denied {denied:?}",
        activated.len()
    );
    assert!(activated.len() > 1, "the role held several grants at once: {denied:?}");

    let finishes = deliver(
        &service,
        (0..jobs).map(|i| one_role(i, "Pipeline Job Finished")).collect(),
        32,
    )
    .await;
    eprintln!("strict campaign finishes: {finishes:?}");
    let sweep = sweep::SweepFunction {
        policy: h.policy.clone(),
        ports: ports_of(&clients, SystemClock),
        settings: SweepSettings::default(),
    };
    sweep.sweep(None).await.expect("the sweep");

    let audits = h.items("audit").await;
    assert!(
        !audits.iter().any(|a| decision(a) == "revoke_failed"),
        "a Revoke Failed alarm: {:?}",
        audits
            .iter()
            .filter(|a| decision(a) == "revoke_failed")
            .collect::<Vec<_>>()
    );
    let live: Vec<_> = h
        .items("grant")
        .await
        .into_iter()
        .filter(|g| matches!(s(g, "status").as_deref(), Some("active") | Some("pending")))
        .collect();
    assert!(live.is_empty(), "grants still live after every job finished: {live:?}");
    let left: Vec<_> = latch_policies(&h.iam)
        .await
        .into_iter()
        .filter(|(_, p)| p.starts_with("latch-"))
        .collect();
    assert!(left.is_empty(), "Latch policies left on the role: {left:?}");
    let report = proxy.report();
    assert_eq!(
        report.strict_count("iam.PutRolePolicy", StrictKind::LimitExceeded),
        0,
        "Latch kept within the quota itself"
    );
    eprintln!(
        "strict campaign: {} jobs on one role, {} activated, denied {denied:?}; ConcurrentModification {} / {}, TransactionConflict {}",
        jobs,
        activated.len(),
        report.strict_count("iam.PutRolePolicy", StrictKind::ConcurrentModification),
        report.strict_count("iam.DeleteRolePolicy", StrictKind::ConcurrentModification),
        report.strict_count("dynamodb.TransactWriteItems", StrictKind::TransactionConflict),
    );
}
