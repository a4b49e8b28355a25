//! Strict-AWS mode, each behaviour shown with the real SDK through the proxy against a private
//! emulator (one per test binary), each test on its own proxy and its own names. Timing is
//! scaled down (or latency fixed) so the suite stays fast on two cores; the SDK's retries are
//! off so every verdict reaches the test.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put, ScalarAttributeType,
    TransactWriteItem, Update,
};
use grant::Outcome;
use latch_core::grant::{GrantService, StartOutcome};
use latch_core::ports::SystemClock;
use latch_tests::faults::{FaultKind, FaultPlan, FaultProxy};
use latch_tests::moto::MotoServer;
use latch_tests::strict::{Dist, RateLimit, StrictAws, StrictKind, policy_size, sdk_config};
use latch_tests::{Harness, example_policy_text, unique};
use serde_json::json;

static MOTO: OnceLock<MotoServer> = OnceLock::new();

/// The binary's private emulator (started by the first test that needs it; it exits with the
/// test process).
fn moto() -> &'static MotoServer {
    MOTO.get_or_init(|| MotoServer::start().expect("a private emulator"))
}

async fn proxy(strict: StrictAws) -> FaultProxy {
    let addr = tokio::task::spawn_blocking(|| moto().addr).await.unwrap();
    FaultProxy::start(addr, FaultPlan::new(11).strict(strict))
        .await
        .expect("the proxy")
}

async fn iam(p: &FaultProxy) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&sdk_config(&p.url(), "test").await)
}

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

async fn create_role(iam: &aws_sdk_iam::Client, name: &str) {
    iam.create_role()
        .role_name(name)
        .path("/strict/")
        .assume_role_policy_document(TRUST)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateRole {name}: {e:?}"));
}

/// A policy document of exactly `size` characters as IAM counts them, pretty-printed (its
/// whitespace does not count).
fn doc(size: usize) -> String {
    let head = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {\n      \"Effect\": \"Allow\",\n      \"Action\": \"s3:GetObject\",\n      \"Resource\": \"arn:aws:s3:::bucket/";
    let tail = "\"\n    }\n  ]\n}\n";
    let pad = size - policy_size(head) - policy_size(tail);
    let d = format!("{head}{}{tail}", "x".repeat(pad));
    assert_eq!(policy_size(&d), size);
    d
}

fn code<E: ProvideErrorMetadata>(r: Result<impl Sized, aws_sdk_iam::error::SdkError<E>>) -> Option<String> {
    match r {
        Ok(_) => None,
        Err(e) => Some(
            e.as_service_error()
                .and_then(|s| s.code())
                .unwrap_or("not a service error")
                .to_owned(),
        ),
    }
}

#[tokio::test]
async fn the_aggregate_inline_quota_refuses_the_policy_that_passes_10240() {
    let p = proxy(StrictAws {
        inline_quota: Some(10_240),
        ..StrictAws::off()
    })
    .await;
    let iam = iam(&p).await;
    let role = unique("quota-");
    create_role(&iam, &role).await;
    let put = |name: &'static str, size: usize| {
        iam.put_role_policy()
            .role_name(&role)
            .policy_name(name)
            .policy_document(doc(size))
            .send()
    };

    assert_eq!(code(put("a", 6000).await), None);
    assert_eq!(
        code(put("b", 6000).await).as_deref(),
        Some("LimitExceeded"),
        "6000 + 6000 > 10240"
    );
    // Replacing `a` counts its new size, not the old one beside it.
    assert_eq!(code(put("a", 4000).await), None);
    assert_eq!(code(put("b", 6000).await), None, "4000 + 6000 <= 10240");
    assert_eq!(
        code(put("a", 4241).await).as_deref(),
        Some("LimitExceeded"),
        "4241 + 6000 > 10240"
    );
    assert_eq!(code(put("a", 4240).await), None, "exactly 10240");

    let err = put("c", 200).await.unwrap_err();
    let service = err.into_service_error();
    assert!(service.is_limit_exceeded_exception(), "{service:?}");
    assert_eq!(
        service.meta().message(),
        Some(format!("Maximum policy size of 10240 bytes exceeded for role {role}").as_str())
    );
    // Refusals never reached the emulator: it holds a and b only.
    let names = iam.list_role_policies().role_name(&role).send().await.unwrap();
    assert_eq!(names.policy_names(), ["a", "b"]);
    let report = p.report();
    assert_eq!(report.strict_count("iam.PutRolePolicy", StrictKind::LimitExceeded), 3);
    assert_eq!(report.0["iam.PutRolePolicy"].forwarded, 4);
}

#[tokio::test]
async fn two_overlapping_writes_on_one_role_one_is_a_concurrent_modification() {
    let p = proxy(
        StrictAws {
            concurrent_modification: true,
            case_insensitive_roles: true,
            ..StrictAws::off()
        }
        .latency_for("iam", Dist::Fixed(Duration::from_millis(300))),
    )
    .await;
    let iam = iam(&p).await;
    let role = unique("Cm-Role-");
    create_role(&iam, &role).await;
    let put = |role: String, name: &'static str| {
        iam.put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(doc(200))
            .send()
    };
    // The same role spelled two ways: one role to AWS.
    let (a, b) = tokio::join!(put(role.clone(), "a"), put(role.to_lowercase(), "b"));
    let mut codes = [code(a), code(b)];
    codes.sort();
    assert_eq!(codes, [None, Some("ConcurrentModification".to_owned())]);
    // One after the other, no conflict.
    assert_eq!(code(put(role.clone(), "a").await), None);
    assert_eq!(code(put(role.clone(), "b").await), None);
    // Writes on two different roles overlap freely.
    let other = unique("Cm-Other-");
    create_role(&iam, &other).await;
    let (a, b) = tokio::join!(put(role.clone(), "c"), put(other.clone(), "c"));
    assert_eq!((code(a), code(b)), (None, None));
    assert_eq!(
        p.report()
            .strict_count("iam.PutRolePolicy", StrictKind::ConcurrentModification),
        1
    );
}

async fn table(dynamo: &aws_sdk_dynamodb::Client) -> String {
    let name = unique("strict-");
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    dynamo
        .create_table()
        .table_name(&name)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("CreateTable");
    name
}

fn put_item(table: &str, pk: &str) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.into()))
        .item("sk", AttributeValue::S("x".into()))
        .build()
        .unwrap();
    TransactWriteItem::builder().put(put).build()
}

fn update_item(table: &str, pk: &str) -> TransactWriteItem {
    let update = Update::builder()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S("x".into()))
        .update_expression("SET n = :n")
        .expression_attribute_values(":n", AttributeValue::N("1".into()))
        .build()
        .unwrap();
    TransactWriteItem::builder().update(update).build()
}

#[tokio::test]
async fn overlapping_transactions_on_one_item_one_is_cancelled_with_transaction_conflict() {
    let p = proxy(
        StrictAws {
            transaction_conflict: true,
            ..StrictAws::off()
        }
        .latency_for("dynamodb", Dist::Fixed(Duration::from_millis(300))),
    )
    .await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk_config(&p.url(), "test").await);
    let t = table(&dynamo).await;
    // Both name item B, second of two.
    let tx = |items: Vec<TransactWriteItem>| dynamo.transact_write_items().set_transact_items(Some(items)).send();
    let (one, two) = tokio::join!(
        tx(vec![put_item(&t, "A"), put_item(&t, "B")]),
        tx(vec![put_item(&t, "C"), update_item(&t, "B")]),
    );
    assert!(one.is_ok() != two.is_ok(), "exactly one commits: {one:?} {two:?}");
    let err = one.err().or(two.err()).unwrap().into_service_error();
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = &err else {
        panic!("{err:?}")
    };
    let reasons: Vec<_> = cancelled
        .cancellation_reasons()
        .iter()
        .map(|r| (r.code().unwrap_or_default(), r.message().unwrap_or_default()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("None", ""),
            ("TransactionConflict", "Transaction is ongoing for the item")
        ]
    );
    assert_eq!(
        cancelled.message(),
        Some(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]"
        )
    );

    // A single write on an item a transaction in flight holds conflicts too.
    let (held, single) = tokio::join!(tx(vec![put_item(&t, "D")]), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        dynamo
            .put_item()
            .table_name(&t)
            .item("pk", AttributeValue::S("D".into()))
            .item("sk", AttributeValue::S("x".into()))
            .send()
            .await
    });
    assert!(held.is_ok(), "{held:?}");
    let single = single.unwrap_err().into_service_error();
    assert!(single.is_transaction_conflict_exception(), "{single:?}");
    // Other items are free meanwhile; afterwards, the item is too.
    let (a, b) = tokio::join!(tx(vec![put_item(&t, "E")]), tx(vec![put_item(&t, "F")]));
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert!(tx(vec![update_item(&t, "B")]).await.is_ok());
    let report = p.report();
    assert_eq!(
        report.strict_count("dynamodb.TransactWriteItems", StrictKind::TransactionConflict),
        1
    );
    assert_eq!(
        report.strict_count("dynamodb.PutItem", StrictKind::TransactionConflict),
        1
    );
}

#[tokio::test]
async fn role_names_differing_in_case_are_one_role() {
    let p = proxy(StrictAws {
        case_insensitive_roles: true,
        ..StrictAws::off()
    })
    .await;
    let iam = iam(&p).await;
    let role = format!("Ci-Deployer-{}", unique(""));
    create_role(&iam, &role).await;

    let again = iam
        .create_role()
        .role_name(role.to_lowercase())
        .assume_role_policy_document(TRUST)
        .send()
        .await;
    let again = again.unwrap_err().into_service_error();
    assert!(again.is_entity_already_exists_exception(), "{again:?}");

    let got = iam.get_role().role_name(role.to_uppercase()).send().await.unwrap();
    assert_eq!(got.role().map(|r| r.role_name()), Some(role.as_str()));
    iam.put_role_policy()
        .role_name(role.to_lowercase())
        .policy_name("p")
        .policy_document(doc(200))
        .send()
        .await
        .unwrap();
    let names = iam.list_role_policies().role_name(&role).send().await.unwrap();
    assert_eq!(names.policy_names(), ["p"]);

    // The emulator alone: a case variant is another (absent) role.
    let direct = aws_sdk_iam::Client::new(&sdk_config(&moto().url(), "test").await);
    let lenient = direct.get_role().role_name(role.to_lowercase()).send().await;
    assert!(lenient.unwrap_err().into_service_error().is_no_such_entity_exception());
    assert_eq!(p.report().strict_count("iam.CreateRole", StrictKind::CaseVariant), 1);
}

#[tokio::test]
async fn the_iam_rate_limit_answers_throttling() {
    let p = proxy(StrictAws {
        iam_rate: Some(RateLimit {
            per_second: 5.0,
            burst: 5.0,
        }),
        ..StrictAws::off()
    })
    .await;
    let iam = iam(&p).await;
    let calls = (0..30).map(|_| iam.list_roles().path_prefix("/nothing-here/").send());
    let results = futures::future::join_all(calls).await;
    let throttled = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(|e| e.as_service_error())
                .and_then(|e| e.code())
                == Some("Throttling")
        })
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok + throttled, 30, "{results:?}");
    assert!((5..=15).contains(&ok), "{ok} passed a 5-token bucket at 5/s");
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(400)).await;
    iam.list_roles().path_prefix("/nothing-here/").send().await.unwrap();
    assert_eq!(
        p.report().strict_count("iam.ListRoles", StrictKind::IamThrottle),
        throttled as u64
    );
}

#[tokio::test]
async fn role_policy_reads_see_the_previous_state_until_propagated() {
    // A 2 s propagation at half AWS's time: 1 s (room for the reads on a busy machine).
    let p = proxy(StrictAws {
        propagation: Some(Duration::from_secs(2)),
        time_scale: 0.5,
        ..StrictAws::off()
    })
    .await;
    let iam = iam(&p).await;
    let role = unique("prop-");
    create_role(&iam, &role).await;
    let window = Duration::from_millis(1000);
    let get = || iam.get_role_policy().role_name(&role).policy_name("p").send();
    let list = || async {
        iam.list_role_policies()
            .role_name(&role)
            .send()
            .await
            .unwrap()
            .policy_names()
            .to_vec()
    };
    let resource = |d: &str| {
        let decoded = percent_encoding::percent_decode_str(d)
            .decode_utf8()
            .unwrap()
            .into_owned();
        serde_json::from_str::<serde_json::Value>(&decoded).unwrap()["Statement"][0]["Resource"].clone()
    };
    let v = |n: u32| {
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::b/v{n}")}]}).to_string()
    };

    let wrote = Instant::now();
    iam.put_role_policy()
        .role_name(&role)
        .policy_name("p")
        .policy_document(v(1))
        .send()
        .await
        .unwrap();
    assert!(
        get()
            .await
            .unwrap_err()
            .into_service_error()
            .is_no_such_entity_exception()
    );
    assert!(list().await.is_empty());
    assert!(wrote.elapsed() < window, "the reads came back within the window");
    tokio::time::sleep(window).await;
    assert_eq!(resource(get().await.unwrap().policy_document()), "arn:aws:s3:::b/v1");
    assert_eq!(list().await, ["p"]);

    iam.put_role_policy()
        .role_name(&role)
        .policy_name("p")
        .policy_document(v(2))
        .send()
        .await
        .unwrap();
    assert_eq!(resource(get().await.unwrap().policy_document()), "arn:aws:s3:::b/v1");
    tokio::time::sleep(window).await;
    assert_eq!(resource(get().await.unwrap().policy_document()), "arn:aws:s3:::b/v2");

    iam.delete_role_policy()
        .role_name(&role)
        .policy_name("p")
        .send()
        .await
        .unwrap();
    assert_eq!(list().await, ["p"], "a deleted policy lingers");
    tokio::time::sleep(window).await;
    assert!(list().await.is_empty());
    assert!(p.report().strict_by_kind()[&StrictKind::StaleRead] >= 4);
}

#[tokio::test]
async fn a_second_access_key_is_a_second_account() {
    let p = proxy(
        StrictAws {
            case_insensitive_roles: true,
            ..StrictAws::off()
        }
        .account("AKIDSECONDACCOUNT", "210987654321"),
    )
    .await;
    let first = iam(&p).await;
    let second = aws_sdk_iam::Client::new(&sdk_config(&p.url(), "AKIDSECONDACCOUNT").await);
    let role = unique("Shared-");
    create_role(&first, &role).await;
    // The same name in lower case: one role in the first account, a new one in the second.
    create_role(&second, &role.to_lowercase()).await;
    let arn = |c: &aws_sdk_iam::Client, name: String| {
        let c = c.clone();
        async move {
            c.get_role()
                .role_name(name)
                .send()
                .await
                .unwrap()
                .role()
                .unwrap()
                .arn()
                .to_owned()
        }
    };
    assert_eq!(
        arn(&first, role.to_lowercase()).await,
        format!("arn:aws:iam::123456789012:role/strict/{role}")
    );
    assert_eq!(
        arn(&second, role.to_uppercase()).await,
        format!("arn:aws:iam::210987654321:role/strict/{}", role.to_lowercase())
    );
}

#[tokio::test]
async fn two_deployments_share_one_iam_behind_an_aws_like_proxy() {
    let p = proxy(StrictAws::aws_like().time_scale(0.05)).await;
    let sdk = sdk_config(&p.url(), "test").await;
    let a = Harness::with_sdk(sdk.clone(), &example_policy_text()).await;
    let b = Harness::with_sdk(sdk, &example_policy_text()).await;
    assert_ne!(a.config.table, b.config.table);
    // Deployment B elevates deployment A's role: its own table and bus, the same IAM.
    let b_on_a = GrantService::new(a.policy.clone(), b.ports(SystemClock))
        .with_keys(latch_aws::jwks::HttpKeySource::new().expect("roots for the key fetcher"))
        .with_native(b.clients.native.clone());
    let mut ids = Vec::new();
    for service in [&a.grant_service(), &b_on_a] {
        let event = a.event("pipeline-job-started.json", json!({"run_id": unique("run-")}));
        let outcome = grant::handle(service, event).await.unwrap();
        let Outcome::Start(StartOutcome::Activated(id)) = outcome else {
            panic!("{outcome:?}")
        };
        ids.push(id.policy_name());
    }
    let role = a.role("app-deployer");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut names = a.role_policy_names(&role).await;
    while names.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        names = a.role_policy_names(&role).await;
    }
    ids.sort();
    names.sort();
    assert_eq!(names, ids, "both deployments' grants on the one role");
    assert_eq!(a.items("grant").await.len(), 1);
    assert_eq!(b.items("grant").await.len(), 1);
}

#[tokio::test]
async fn injected_faults_work_alongside_and_an_applied_but_dropped_write_still_counts() {
    let plan = FaultPlan::new(5)
        .op("iam", "PutRolePolicy", 1.0)
        .weights(&[(FaultKind::DropAfterApply, 1)])
        .strict(StrictAws {
            inline_quota: Some(10_240),
            ..StrictAws::off()
        });
    let addr = tokio::task::spawn_blocking(|| moto().addr).await.unwrap();
    let p = FaultProxy::start(addr, plan).await.expect("the proxy");
    let iam = iam(&p).await;
    let role = unique("drop-");
    create_role(&iam, &role).await;
    let put = |name: &'static str| {
        iam.put_role_policy()
            .role_name(&role)
            .policy_name(name)
            .policy_document(doc(6000))
            .send()
    };
    // The emulator applies it; the client hears nothing.
    assert!(put("a").await.is_err());
    p.set_enabled(false);
    assert_eq!(code(put("b").await).as_deref(), Some("LimitExceeded"));
    let report = p.report();
    assert_eq!(report.by_kind()[&FaultKind::DropAfterApply], 1);
    assert_eq!(report.strict_count("iam.PutRolePolicy", StrictKind::LimitExceeded), 1);
}
