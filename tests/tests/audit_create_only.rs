//! Audit items are created, never changed (strict-AWS mode): the function roles' policies deny
//! UpdateItem/DeleteItem of items whose partition key is an audit's, in a transaction or not
//! (template.yaml, AuditItemsAreCreateOnly). Latch's own grant, finish, denial and sweep paths
//! run under that rule without one refusal, and a function role trying to change an audit item
//! is refused.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use chrono::Utc;
use grant::Outcome;
use latch_core::grant::StartOutcome;
use latch_core::memory::FixedClock;
use latch_tests::faults::{FaultPlan, FaultProxy};
use latch_tests::strict::{StrictAws, StrictKind};
use latch_tests::{Harness, s};
use serde_json::json;

/// The key every function role signs with here.
const FUNCTION_KEY: &str = "AKIALATCHFUNCTIONS01";

async fn strict_proxy() -> FaultProxy {
    let audit_prefix = latch_aws::items::audit_pk("");
    let strict = StrictAws::verdicts_only().create_only_items(FUNCTION_KEY, &audit_prefix);
    FaultProxy::in_front_of_shared_emulator(FaultPlan::new(17).strict(strict)).await
}

async fn start(h: &Harness, overrides: serde_json::Value) -> Outcome {
    grant::handle(&h.grant_service(), h.event("pipeline-job-started.json", overrides))
        .await
        .unwrap()
}

fn key_of(item: &HashMap<String, AttributeValue>) -> HashMap<String, AttributeValue> {
    ["pk", "sk"]
        .into_iter()
        .map(|k| (k.to_owned(), item[k].clone()))
        .collect()
}

#[tokio::test]
async fn latch_writes_audits_without_ever_changing_one_and_a_function_role_cannot_change_one() {
    // GIVEN Latch running as its function roles, under the create-only rule
    let proxy = strict_proxy().await;
    let sdk = latch_tests::strict::sdk_config(&proxy.url(), FUNCTION_KEY).await;
    let h = Harness::with_sdk(sdk, &latch_tests::example_policy_text()).await;
    // WHEN it activates, finishes, denies, and sweeps expired grants
    assert!(matches!(
        start(&h, json!({"run_id": "r1"})).await,
        Outcome::Start(StartOutcome::Activated(_))
    ));
    let finish = h.event("pipeline-job-finished.json", json!({"run_id": "r1"}));
    grant::handle(&h.grant_service(), finish).await.unwrap();
    let denied = start(
        &h,
        json!({"run_id": "d", "role_arn": "arn:aws:iam::123456789012:role/latch/nobody"}),
    )
    .await;
    assert!(matches!(denied, Outcome::Start(StartOutcome::Denied(_))), "{denied:?}");
    for run in ["s1", "s2"] {
        start(&h, json!({"run_id": run, "duration": "5m"})).await;
    }
    let sweep = h.sweep_function(
        FixedClock::at(Utc::now() + chrono::Duration::minutes(10)),
        chrono::Duration::minutes(10),
    );
    let report = sweep.sweep(None).await.unwrap();
    assert_eq!(report.revoked, 2, "{report:?}");
    // THEN no call of Latch's was refused by the rule
    assert_eq!(
        proxy
            .report()
            .strict_by_kind()
            .get(&StrictKind::AccessDenied)
            .copied()
            .unwrap_or(0),
        0,
        "{}",
        proxy.report()
    );
    let audits = h.items("audit").await;
    assert!(audits.len() >= 6, "{audits:?}");
    // AND a function role trying to change or delete an audit item is refused, alone or in a
    // transaction, and the item stays as written
    let target = audits
        .iter()
        .find(|a| s(a, "decision").as_deref() == Some("activated"))
        .expect("an activation audit")
        .clone();
    let update = h
        .dynamo
        .update_item()
        .table_name(&h.config.table)
        .set_key(Some(key_of(&target)))
        .update_expression("SET #d = :d")
        .expression_attribute_names("#d", "decision")
        .expression_attribute_values(":d", AttributeValue::S("denied".into()))
        .send()
        .await;
    assert!(update.is_err(), "UpdateItem of an audit item went through");
    let delete = h
        .dynamo
        .delete_item()
        .table_name(&h.config.table)
        .set_key(Some(key_of(&target)))
        .send()
        .await;
    assert!(delete.is_err(), "DeleteItem of an audit item went through");
    let in_transaction = h
        .dynamo
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&h.config.table)
                        .set_key(Some(key_of(&target)))
                        .update_expression("SET #r = :r")
                        .expression_attribute_names("#r", "reason")
                        .expression_attribute_values(":r", AttributeValue::S("forged".into()))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await;
    assert!(
        in_transaction.is_err(),
        "a transaction's Update of an audit item went through"
    );
    assert_eq!(
        proxy
            .report()
            .strict_by_kind()
            .get(&StrictKind::AccessDenied)
            .copied()
            .unwrap_or(0),
        3
    );
    let after = h.items("audit").await;
    assert!(after.contains(&target), "the audit item is unchanged");
    assert_eq!(after.len(), audits.len());
}
