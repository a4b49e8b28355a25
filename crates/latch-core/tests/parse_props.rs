//! Property tests (the fuzz target, as proptest: cargo-fuzz needs a nightly toolchain CI
//! does not pin) on event parsing and policy rendering. Contract checked: parsing arbitrary
//! JSON or bytes never panics, and what it accepts holds the event contract's invariants;
//! changing one field of a valid detail is either accepted or refused naming that field;
//! rendering any example set with any event values either refuses an unsafe value or yields a
//! document whose every statement expires at the grant's expiry, with no placeholder left and
//! nothing but the template's own wildcards. Case counts are small for CI (a few seconds);
//! `PROPTEST_CASES` overrides them for a longer run.

use chrono::{DateTime, TimeZone, Utc};
use latch_core::event::{EventError, FinishNotice, MAX_EVENT_BYTES, StartRequest};
use latch_core::iam_time;
use latch_core::model::RoleArn;
use latch_core::policy::{MAX_POLICY_CHARS, Policy, RenderContext, RenderError, is_safe_placeholder_value};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Strings an attacker would try: contract-shaped, look-alikes, separators, controls, anything.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.+=@-]{1,20}",
        "[a-z*?:/${}\\[\\] \t\n._-]{0,30}",
        "(PT|P|-PT|)[0-9]{0,3}(H|M|S|D|Y|m|s|h|)",
        "arn:aws:iam::[0-9*]{11,13}:role/(latch/)?[a-z*/-]{0,12}",
        "[\u{0430}\u{0435}\u{043e}\u{200b}\u{200d}\u{202e}\u{ff21}-\u{ff3a}a-z]{1,12}",
        any::<String>(),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

const FIELDS: [&str; 13] = [
    "pipeline",
    "run_id",
    "job",
    "attempt",
    "role_arn",
    "permission_set",
    "duration",
    "reason",
    "ref",
    "commit",
    "actor",
    "ticket",
    "environment",
];

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
        "[a-z_]{1,10}"
    ]
}

fn valid_detail() -> Value {
    json!({
        "pipeline": "app-release", "run_id": "8812345678", "job": "deploy", "attempt": 1,
        "role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
        "permission_set": "deploy-artifacts", "duration": "PT15M", "reason": "release",
        "ref": "refs/heads/main", "commit": "9fceb02", "actor": "octocat", "ticket": "CHG-1",
        "environment": "production"
    })
}

fn len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// What an accepted start request must satisfy, whatever it was parsed from.
fn check_accepted(r: &StartRequest) -> Result<(), TestCaseError> {
    for claim in [&r.job.pipeline, &r.job.run_id, &r.job.job] {
        prop_assert!(!claim.is_empty() && claim.chars().count() <= 256);
        prop_assert!(!claim.chars().any(char::is_control), "control character in {claim:?}");
    }
    prop_assert!((1..=10_000).contains(&r.job.attempt));
    prop_assert!((1..=12 * 3600).contains(&r.duration.as_secs()));
    prop_assert_eq!(RoleArn::parse(r.role.as_str()), Ok(r.role.clone()));
    prop_assert!(!r.role.as_str().contains(['*', '?']));
    Ok(())
}

proptest! {
    #![proptest_config(cases(512))]

    /// Any JSON value at all: no panic, and anything accepted holds the contract.
    #[test]
    fn any_json_detail_is_parsed_without_panic(v in arb_json()) {
        if let Ok(r) = StartRequest::parse(&v, len(&v)) {
            check_accepted(&r)?;
        }
        if let Ok(f) = FinishNotice::parse(&v, len(&v)) {
            prop_assert!((1..=10_000).contains(&f.job.attempt));
        }
    }

    /// Any bytes, as the runtime would get them: serde refuses or yields a value; no panic.
    #[test]
    fn any_bytes_are_parsed_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            if let Ok(r) = StartRequest::parse(&v, bytes.len()) {
                check_accepted(&r)?;
            }
            let _ = FinishNotice::parse(&v, bytes.len());
        }
    }

    /// One field of a valid detail changed to anything: accepted, or refused naming that field
    /// (never another one, never a panic), and a detail over the cap is refused by size first.
    #[test]
    fn changing_one_field_is_refused_by_that_field(field in prop::sample::select(FIELDS.to_vec()), value in arb_json()) {
        let mut d = valid_detail();
        d[field] = value;
        let size = len(&d);
        match StartRequest::parse(&d, size) {
            Ok(r) => check_accepted(&r)?,
            Err(EventError::TooLarge { .. }) => prop_assert!(size > MAX_EVENT_BYTES),
            Err(e) => prop_assert_eq!(e.field(), Some(field), "{}", e),
        }
        let oversized = matches!(StartRequest::parse(&d, MAX_EVENT_BYTES + 1), Err(EventError::TooLarge { .. }));
        prop_assert!(oversized, "a detail over the cap is refused by size before anything else");
    }
}

fn example() -> Policy {
    Policy::load(include_str!("../../../events/policy-claimed.yaml"), "policies.yaml").unwrap()
}

fn arb_expiry() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000-01-01 .. 2100-01-01, second precision, as grants are.
    (946_684_800i64..4_102_444_800).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

fn placeholder_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_.+=@-]{1,40}",
        1 => hostile_string(),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    /// Complements policy/tests.rs (arbitrary sets, pipeline/job only, one expiry): here every
    /// set of the worked example, all four placeholders (account and region included, and the
    /// placeholders in condition values), any expiry. The document is deterministic, its hash
    /// is of its exact text, and it carries no unfilled or injected text.
    #[test]
    fn rendering_the_example_sets_never_widens_them(
        pipeline in placeholder_value(),
        job in placeholder_value(),
        account in prop_oneof!["[0-9]{12}", placeholder_value()],
        region in prop_oneof![Just("us-east-1".to_owned()), placeholder_value()],
        expires in arb_expiry(),
    ) {
        let policy = example();
        let ctx = RenderContext { pipeline: &pipeline, job: &job, account: &account, region: &region, session: None };
        let all_safe = [&pipeline, &job, &account, &region].iter().all(|v| is_safe_placeholder_value(v));
        for set in policy.permission_sets.values() {
            match set.render(&ctx, expires) {
                Err(RenderError::UnsafePlaceholderValue { placeholder }) => {
                    let value = match placeholder {
                        "pipeline" => &pipeline,
                        "job" => &job,
                        "account" => &account,
                        _ => &region,
                    };
                    prop_assert!(!is_safe_placeholder_value(value), "{} refused a safe value {:?}", set.name, value);
                }
                Err(e) => prop_assert!(false, "{}: {}", set.name, e),
                Ok(doc) => {
                    prop_assert_eq!(set.render(&ctx, expires), Ok(doc.clone()), "deterministic");
                    let sha: String = Sha256::digest(doc.as_json().as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
                    prop_assert_eq!(doc.sha256(), sha.as_str());
                    prop_assert!(doc.chars() <= MAX_POLICY_CHARS);
                    prop_assert!(!doc.as_json().contains("${"), "unfilled placeholder in {}", doc.as_json());
                    let v: Value = serde_json::from_str(doc.as_json()).unwrap();
                    let statements = v["Statement"].as_array().unwrap();
                    prop_assert_eq!(statements.len(), set.statements.len());
                    for (st, template) in statements.iter().zip(&set.statements) {
                        prop_assert_eq!(&st["Condition"]["DateLessThan"]["aws:CurrentTime"], &json!(iam_time(expires)));
                        let resources: Vec<String> = serde_json::from_value(st["Resource"].clone()).unwrap();
                        for (r, t) in resources.iter().zip(&template.resources) {
                            let wild = |s: &str| s.matches(['*', '?']).count();
                            prop_assert_eq!(wild(r), wild(t.as_str()), "{} from {}", r, t.as_str());
                            prop_assert_eq!(r.matches(':').count(), t.as_str().matches(':').count());
                            prop_assert_eq!(r.matches('/').count(), t.as_str().matches('/').count());
                        }
                    }
                }
            }
        }
        // A set whose placeholders all got safe values always renders.
        if all_safe {
            for set in policy.permission_sets.values() {
                prop_assert!(set.render(&ctx, expires).is_ok());
            }
        }
    }
}
