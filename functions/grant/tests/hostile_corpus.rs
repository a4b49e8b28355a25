//! The hostile input corpus (events/bad/) through the grant function's entry point
//! (`handle_payload`, the payload as Lambda hands it over), over the in-memory ports: for every
//! file, no panic, no grant, and exactly the outcome its entry in events/bad/cases.json names —
//! one Denied audit with that reason code (naming the field when the event is malformed), or
//! for replays and duplicates no second grant and no new audit. Bytes that are not JSON at all
//! never reach the handler (the runtime cannot parse them; `not_json`): for those, parsing must
//! refuse them without panicking. A failure names the file. Hostile policy files
//! (events/bad/policies/) must each be refused at load, placed and named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use grant::{Outcome, handle_payload};
use lambda_runtime::{Context, LambdaEvent};
use latch_core::audit::Decision;
use latch_core::grant::{FinishOutcome, GrantService, StartOutcome};
use latch_core::memory::{FixedClock, MemoryAuditSink, MemoryIam, MemoryStore};
use latch_core::policy::Policy;
use serde_json::Value;

type Service = GrantService<MemoryIam, MemoryStore, MemoryAuditSink, FixedClock>;

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

struct Manifest {
    policy: String,
    now: String,
    cases: BTreeMap<String, Value>,
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(events_dir().join("bad/cases.json")).expect("events/bad/cases.json");
    let v: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    Manifest {
        policy: v["policy"].as_str().expect("policy").to_owned(),
        now: v["now"].as_str().expect("now").to_owned(),
        cases: serde_json::from_value(v["cases"].clone()).expect("cases is an object"),
    }
}

fn service(m: &Manifest) -> Service {
    let path = events_dir().join(&m.policy);
    let policy = Policy::load_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let now = serde_json::from_value(Value::String(m.now.clone())).expect("now is a time");
    let ports = latch_core::ports::Ports::new(
        MemoryIam::default(),
        MemoryStore::default(),
        MemoryAuditSink::default(),
        FixedClock::at(now),
    );
    GrantService::new(policy, ports)
}

/// What the Lambda runtime does before the handler: parse the bytes as JSON.
fn payload(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(bytes)
}

async fn deliver(s: &Service, event: Value) -> Result<Outcome, String> {
    handle_payload(s, LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| e.to_string())
}

/// What the state looked like before the case's event.
struct Before {
    grants: usize,
    audits: usize,
    policies: usize,
    puts: usize,
}

fn snapshot(s: &Service) -> Before {
    Before {
        grants: s.ports.store.grants().len(),
        audits: s.ports.store.audits().len(),
        policies: s.ports.iam.policy_count(),
        puts: s.ports.iam.calls().0,
    }
}

/// Runs one corpus file; returns what is wrong (empty: the case holds).
async fn run_case(m: &Manifest, file: &str, case: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(expect) = case["expect"].as_str() else {
        return vec!["the manifest entry has no `expect`".into()];
    };
    let s = service(m);
    for given in case["given"].as_array().into_iter().flatten() {
        let path = events_dir().join(given.as_str().unwrap_or_default());
        let bytes = std::fs::read(&path).unwrap_or_default();
        match payload(&bytes) {
            Ok(e) => {
                if let Err(err) = deliver(&s, e).await {
                    problems.push(format!("given {} failed: {err}", path.display()));
                }
            }
            Err(err) => problems.push(format!("given {} is not an event: {err}", path.display())),
        }
    }
    let before = snapshot(&s);
    let bytes = match std::fs::read(events_dir().join("bad").join(file)) {
        Ok(b) => b,
        Err(e) => return vec![format!("unreadable: {e}")],
    };
    let event = match (payload(&bytes), expect) {
        (Err(_), "not_json") => return problems,
        (Ok(_), "not_json") => {
            return vec!["expected bytes the runtime cannot parse, but they are JSON".into()];
        }
        (Err(e), _) => return vec![format!("is not JSON ({e}); expected {expect}")],
        (Ok(e), _) => e,
    };
    let outcome = match deliver(&s, event).await {
        Ok(o) => o,
        Err(e) => return vec![format!("handler returned Err (Lambda would retry): {e}")],
    };
    let after = snapshot(&s);
    // Whatever the case, nothing new may be on a role or in the grants, and IAM is not written.
    if after.grants != before.grants {
        problems.push(format!("grants went from {} to {}", before.grants, after.grants));
    }
    let replay = matches!(expect, "already_active" | "already_ended" | "finished" | "not_managed");
    if after.policies > before.policies || (!replay && after.puts != before.puts) {
        problems.push(format!(
            "IAM was written: policies {} -> {}, PutRolePolicy calls {} -> {}",
            before.policies, after.policies, before.puts, after.puts
        ));
    }
    let outcome_text = format!("{outcome:?}");
    if replay {
        let ok = matches!(
            (expect, &outcome),
            ("already_active", Outcome::Start(StartOutcome::AlreadyActive(_)))
                | ("already_ended", Outcome::Start(StartOutcome::AlreadyEnded(_)))
                | ("finished", Outcome::Finish(FinishOutcome::Finished { revoked: 0, .. }))
                | ("not_managed", Outcome::NotManaged)
        );
        if !ok {
            problems.push(format!("outcome {outcome_text}, expected {expect}"));
        }
        if after.audits != before.audits {
            problems.push(format!(
                "durable audits went from {} to {}",
                before.audits, after.audits
            ));
        }
        return problems;
    }
    let reason = match &outcome {
        Outcome::Start(StartOutcome::Denied(r)) | Outcome::Finish(FinishOutcome::Denied(r)) => Some(r.code()),
        _ => None,
    };
    if reason != Some(expect) {
        problems.push(format!("outcome {outcome_text}, expected Denied({expect})"));
    }
    // A replayed denial shares its audit id with the first: one durable Denied item in all.
    let denied: Vec<_> = s
        .ports
        .store
        .audits()
        .into_iter()
        .filter(|a| a.decision == Decision::Denied)
        .collect();
    let new_audits = after.audits - before.audits.min(after.audits);
    if denied.len() != 1 || (case["given"].is_null() && new_audits != 1) {
        problems.push(format!(
            "{} durable Denied audits ({new_audits} new), expected exactly one",
            denied.len()
        ));
    }
    if let Some(audit) = denied.first() {
        if audit.reason != expect {
            problems.push(format!("audit reason {}, expected {expect}", audit.reason));
        }
        if let Some(field) = case["field"].as_str() {
            let detail = audit.detail.as_deref().unwrap_or_default();
            if !detail.contains(field) {
                problems.push(format!("audit detail {detail:?} does not name the field {field}"));
            }
        }
        let published = s.ports.audit.published();
        if !published.iter().any(|p| p.audit_id == audit.audit_id) {
            problems.push("the Denied audit was not published".into());
        }
    }
    problems
}

fn corpus_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(events_dir().join("bad"))
        .expect("events/bad")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != "cases.json")
        .collect();
    files.sort();
    files
}

#[test]
fn given_the_corpus_when_listed_then_every_file_has_exactly_one_manifest_entry() {
    let m = manifest();
    let files = corpus_files();
    let unlisted: Vec<_> = files.iter().filter(|f| !m.cases.contains_key(*f)).collect();
    let missing: Vec<_> = m.cases.keys().filter(|k| !files.contains(k)).collect();
    assert!(
        unlisted.is_empty(),
        "corpus files without an entry in cases.json: {unlisted:?}"
    );
    assert!(missing.is_empty(), "cases.json entries without a file: {missing:?}");
    assert!(
        files.len() >= 100,
        "the corpus has {} cases, the issue asks for 100",
        files.len()
    );
    for (file, case) in &m.cases {
        let expect = case["expect"].as_str().unwrap_or_default();
        if expect == "malformed_event" {
            assert!(
                case["field"].is_string(),
                "{file}: a malformed case must name its field"
            );
        }
        assert!(case["proves"].is_string(), "{file}: say what the case proves");
    }
}

#[tokio::test]
async fn given_each_hostile_event_when_handled_then_nothing_is_granted_and_the_denial_names_the_reason() {
    let m = std::sync::Arc::new(manifest());
    let mut failed = Vec::new();
    for file in corpus_files() {
        let Some(case) = m.cases.get(&file).cloned() else {
            continue;
        };
        // Each case on its own task, so a panic is caught and reported against its file.
        let task = {
            let (m, file) = (m.clone(), file.clone());
            tokio::spawn(async move { run_case(&m, &file, &case).await })
        };
        match task.await {
            Ok(problems) => failed.extend(problems.into_iter().map(|p| format!("events/bad/{file}: {p}"))),
            Err(e) => failed.push(format!("events/bad/{file}: PANICKED: {e}")),
        }
    }
    assert!(failed.is_empty(), "{} problem(s):\n{}", failed.len(), failed.join("\n"));
}

/// The control: the unmodified fixture is granted under the corpus policy, so each hostile
/// file is denied for what it changed, not because the baseline was already refused.
#[tokio::test]
async fn given_the_unmodified_start_fixture_when_handled_then_it_is_granted() {
    let m = manifest();
    let s = service(&m);
    let bytes = std::fs::read(events_dir().join("pipeline-job-started.json")).expect("fixture");
    let outcome = deliver(&s, payload(&bytes).expect("fixture deserializes")).await;
    assert!(
        matches!(outcome, Ok(Outcome::Start(StartOutcome::Activated(_)))),
        "{outcome:?}"
    );
    assert_eq!(s.ports.iam.policy_count(), 1);
}

/// The policy part of the corpus (events/bad/policies/): files a platform team might write that
/// would let a grant escalate. Each must be refused at load, the problem placed at FILE:LINE on
/// the line that does it and naming what it breaks (an escalation method by its catalogue name).
#[test]
fn given_each_hostile_policy_file_when_loaded_then_it_is_refused_at_its_line_naming_what_it_breaks() {
    let dir = events_dir().join("bad/policies");
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("events/bad/policies/cases.json");
    let manifest: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let cases = manifest["cases"].as_object().expect("cases is an object");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("events/bad/policies")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        cases.keys().cloned().collect::<Vec<_>>(),
        "every policy file has exactly one entry"
    );
    let mut failed = Vec::new();
    for (file, case) in cases {
        let (expect, at) = (
            case["expect"].as_str().unwrap_or("?"),
            case["at"].as_str().unwrap_or("?"),
        );
        let origin = format!("events/bad/policies/{file}");
        let text = std::fs::read_to_string(dir.join(file)).expect("readable");
        let err = match Policy::load(&text, &origin) {
            Ok(_) => {
                failed.push(format!("{origin}: loaded"));
                continue;
            }
            Err(e) => e,
        };
        let placed = err.problems.iter().find(|p| p.message.contains(expect)).and_then(|p| {
            let line = p.line?;
            text.lines().nth(line - 1).filter(|l| l.contains(at)).map(|_| line)
        });
        match placed {
            Some(line) if err.to_string().contains(&format!("{origin}:{line}: ")) => {}
            _ => failed.push(format!("{origin}: no problem {expect:?} on a line with {at:?}:\n{err}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Fuzz (proptest): mutated and arbitrary events through `handle` on the memory ports.
// ---------------------------------------------------------------------------------------------

mod fuzz {
    use chrono::{DateTime, Duration, Utc};
    use latch_core::event::StartRequest;
    use latch_core::iam_time;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn cases(default: u32) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        ProptestConfig::with_cases(cases)
    }

    /// A value for a key: mostly ones the policy cares about (so many mutants are still granted
    /// and the oracle has work), sometimes anything.
    fn pick(choices: &[Value]) -> impl Strategy<Value = Value> + use<> {
        prop_oneof![
            6 => prop::sample::select(choices.to_vec()),
            1 => any::<String>().prop_map(Value::String),
            1 => any::<i64>().prop_map(|n| json!(n)),
            1 => Just(Value::Null),
        ]
    }

    fn mutation() -> impl Strategy<Value = (bool, &'static str, Value)> {
        let role = |name: &str| json!(format!("arn:aws:iam::123456789012:role/{name}"));
        prop_oneof![
            pick(&[
                json!("ci.github"),
                json!("ci.gitlab"),
                json!("ci.evil"),
                json!("aws.codebuild")
            ])
            .prop_map(|v| (true, "source", v)),
            pick(&[json!("123456789012"), json!("210987654321"), json!("12345678901")])
                .prop_map(|v| (true, "account", v)),
            pick(&[json!("us-east-1"), json!("eu-west-1"), json!("*"), json!("us-east-1:x")])
                .prop_map(|v| (true, "region", v)),
            pick(&[
                json!("2026-11-25T12:00:00Z"),
                json!("2026-11-25T12:10:00Z"),
                json!("2026-11-25T11:50:00Z"),
                json!("2026-11-24T00:00:00Z")
            ])
            .prop_map(|v| (true, "time", v)),
            pick(&[
                json!("Pipeline Job Started"),
                json!("Pipeline Job Finished"),
                json!("CodeBuild Build State Change")
            ])
            .prop_map(|v| (true, "detail-type", v)),
            pick(&[
                json!("app-release"),
                json!("app-*"),
                json!("app-x:y"),
                json!("platform-api"),
                json!("other"),
                json!("app-\u{0435}")
            ])
            .prop_map(|v| (false, "pipeline", v)),
            pick(&[json!("deploy"), json!("*"), json!("a/b")]).prop_map(|v| (false, "job", v)),
            pick(&[json!(1), json!(2), json!(0), json!("1")]).prop_map(|v| (false, "attempt", v)),
            pick(&[
                role("latch/app-deployer"),
                role("latch/db-migrator"),
                role("latch/ci-runner"),
                role("admin"),
                json!("arn:aws:iam::210987654321:role/latch/app-deployer"),
                role("latch/*")
            ])
            .prop_map(|v| (false, "role_arn", v)),
            pick(&[
                json!("deploy-artifacts"),
                json!("lambda-deploy"),
                json!("db-migrate"),
                json!("job-logs"),
                json!("admin")
            ])
            .prop_map(|v| (false, "permission_set", v)),
            pick(&[
                json!("PT15M"),
                json!("10m"),
                json!("PT20M"),
                json!("PT21M"),
                json!("0s"),
                json!("PT12H"),
                json!("PT13H"),
                json!(900)
            ])
            .prop_map(|v| (false, "duration", v)),
            pick(&[json!("refs/heads/main"), json!("refs/tags/v1"), json!("refs/heads/x")])
                .prop_map(|v| (false, "ref", v)),
            pick(&[json!("production"), json!("staging")]).prop_map(|v| (false, "environment", v)),
            pick(&[json!("123456789012"), json!("ci.github")]).prop_map(|v| (false, "account", v)),
            pick(&[json!("ci.github")]).prop_map(|v| (false, "source", v)),
        ]
    }

    fn base() -> Value {
        let bytes = std::fs::read(events_dir().join("pipeline-job-started.json")).expect("fixture");
        serde_json::from_slice(&bytes).expect("fixture is JSON")
    }

    /// What a grant must satisfy, checked from the event and the policy, not from the service's
    /// own decision path: the trusted fields admit it, the role and duration are within the
    /// rule and the set, the time is current, and the document on the role expires on time.
    fn check_grant(s: &Service, event: &Value) -> Result<(), TestCaseError> {
        let grants = s.ports.store.grants();
        prop_assert_eq!(grants.len(), 1);
        let g = &grants[0];
        prop_assert_eq!(event["source"].as_str(), Some(g.source.as_str()));
        prop_assert_eq!(event["account"].as_str(), Some(g.account.as_str()));
        prop_assert_eq!(g.role.account(), &g.account);
        prop_assert!(g.role.is_under_path("/latch/"));
        let detail = &event["detail"];
        let request = StartRequest::parse(detail, serde_json::to_vec(detail).map_or(usize::MAX, |b| b.len()));
        prop_assert!(request.is_ok(), "granted an invalid request: {:?}", request);
        let rule = s.policy.rules.iter().find(|r| r.name == g.rule);
        prop_assert!(rule.is_some());
        let rule = rule.unwrap();
        prop_assert!(rule.sources.contains(&g.source) && rule.accounts.contains(&g.account));
        prop_assert!(rule.roles.iter().any(|p| p.is_match(g.role.as_str())));
        prop_assert!(rule.permission_sets.contains(&g.permission_set));
        let set = &s.policy.permission_sets[&g.permission_set];
        let lasts = (g.expires_at - g.requested_at).num_seconds();
        let max = rule.max_duration.min(set.max_duration).as_secs() as i64;
        prop_assert!(lasts > 0 && lasts <= max, "lasts {lasts}s, max {max}s");
        let time: DateTime<Utc> = serde_json::from_value(event["time"].clone()).unwrap();
        let now = s.clock_now();
        prop_assert_eq!(g.requested_at, time);
        prop_assert!(time <= now + Duration::minutes(5) && g.expires_at > now);
        let doc = s.ports.iam.policy(&g.role, &g.id.policy_name());
        prop_assert!(doc.is_some(), "no policy on the role");
        let doc: Value = serde_json::from_str(&doc.unwrap()).unwrap();
        for st in doc["Statement"].as_array().unwrap() {
            prop_assert_eq!(
                &st["Condition"]["DateLessThan"]["aws:CurrentTime"],
                &json!(iam_time(g.expires_at))
            );
            for r in st["Resource"].as_array().unwrap() {
                let r = r.as_str().unwrap();
                prop_assert!(!r.contains("${") && !r.contains('?'), "{r}");
            }
        }
        Ok(())
    }

    trait Now {
        fn clock_now(&self) -> DateTime<Utc>;
    }
    impl Now for Service {
        fn clock_now(&self) -> DateTime<Utc> {
            latch_core::ports::Clock::now(&self.ports.clock)
        }
    }

    async fn run(bytes: &[u8]) -> Result<(), TestCaseError> {
        let Ok(event) = payload(bytes) else {
            return Ok(()); // The runtime refuses it; the handler never runs.
        };
        let raw: Value = serde_json::from_slice(bytes).unwrap();
        let s = service(&manifest());
        let outcome = deliver(&s, event).await;
        prop_assert!(
            outcome.is_ok(),
            "memory ports never fail, so neither may the handler: {:?}",
            outcome
        );
        let granted = matches!(outcome, Ok(Outcome::Start(StartOutcome::Activated(_))));
        if granted {
            check_grant(&s, &raw)?;
        } else {
            prop_assert_eq!(s.ports.iam.policy_count(), 0, "{:?} but a policy is on a role", outcome);
            prop_assert!(
                s.ports.store.grants().is_empty(),
                "{:?} but a grant is recorded",
                outcome
            );
        }
        // One durable audit per decision; a finish with nothing to revoke decides nothing.
        let want = match &outcome {
            Ok(Outcome::Start(_)) | Ok(Outcome::Finish(FinishOutcome::Denied(_))) => 1,
            _ => 0,
        };
        prop_assert_eq!(s.ports.store.audits().len(), want, "durable audits after {:?}", outcome);
        Ok(())
    }

    fn block_on(f: impl std::future::Future<Output = Result<(), TestCaseError>>) -> Result<(), TestCaseError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    proptest! {
        #![proptest_config(cases(384))]

        /// The start fixture with 1–6 keys of envelope or detail changed: never a panic or an
        /// `Err`, exactly one audit, and a grant only when the oracle agrees it is allowed.
        #[test]
        fn mutated_events_are_granted_only_when_allowed(mutations in prop::collection::vec(mutation(), 1..7)) {
            let mut event = base();
            for (envelope, key, value) in mutations {
                if envelope { event[key] = value } else { event["detail"][key] = value }
            }
            block_on(run(&serde_json::to_vec(&event).unwrap()))?;
        }

        /// Arbitrary bytes as the Lambda payload: refused by serde or handled, never a grant.
        #[test]
        fn arbitrary_payloads_never_panic_or_grant(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            block_on(run(&bytes))?;
        }
    }
}
