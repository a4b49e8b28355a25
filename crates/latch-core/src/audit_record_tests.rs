//! Records that stand on their own: what each decision's record carries beyond its hash.

use chrono::Duration;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::grant::StartOutcome;
use crate::memory::Faults;
use crate::sweep::SweepSettings;
use crate::test_fixtures::{MemoryService, deployer, envelope, memory_service, memory_sweeper, t0};

fn service() -> MemoryService {
    memory_service(t0() + Duration::seconds(2), &Faults::default())
}

fn start_detail() -> Value {
    json!({"pipeline": "app-release", "run_id": "4711", "job": "deploy", "attempt": 1,
           "role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
           "permission_set": "deploy-artifacts", "duration": "PT15M", "ref": "refs/heads/main",
           "actor": "octocat"})
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn activated(s: &MemoryService) -> crate::model::GrantId {
    let d = start_detail();
    let outcome = s
        .on_start(&envelope("Pipeline Job Started", "e1"), &d, d.to_string().len())
        .await
        .unwrap();
    let StartOutcome::Activated(id) = outcome else {
        panic!("{outcome:?}")
    };
    id
}

#[tokio::test]
async fn given_an_activation_when_recorded_then_it_carries_the_document_the_file_and_what_is_claimed() {
    let s = service();
    let id = activated(&s).await;
    let [audit] = s.ports.store.audits().try_into().unwrap();
    let on_role = s.ports.iam.policy(&deployer(), &id.policy_name()).unwrap();
    assert_eq!(
        audit.policy_document.as_deref(),
        Some(on_role.as_str()),
        "the document IAM holds"
    );
    assert_eq!(
        audit.policy_sha256,
        Some(hex_sha256(&on_role)),
        "the hash is of that document"
    );
    let file = include_str!("../../../events/policy-claimed.yaml");
    assert_eq!(audit.policy_file_sha256, Some(hex_sha256(file)));
    assert_eq!(audit.policy_file_label, s.policy.label);
    // A claimed rule: nobody signed any job field, and the record says so field by field.
    assert!(audit.verified_fields.is_empty());
    assert_eq!(
        audit.claimed_fields,
        ["pipeline", "run_id", "job", "attempt", "ref", "actor"]
    );
}

#[tokio::test]
async fn given_a_denial_when_recorded_then_it_names_the_policy_file_that_denied() {
    let s = service();
    let mut d = start_detail();
    d["permission_set"] = json!("no-such-set");
    s.on_start(&envelope("Pipeline Job Started", "e2"), &d, d.to_string().len())
        .await
        .unwrap();
    let [audit] = s.ports.store.audits().try_into().unwrap();
    assert_eq!(audit.decision, Decision::Denied);
    assert_eq!(audit.policy_file_sha256.as_deref(), Some(s.policy.file_sha256.as_str()));
    assert!(audit.claimed_fields.contains(&"pipeline".to_owned()));
}

#[tokio::test]
async fn given_a_finish_when_it_revokes_then_the_record_says_who_proved_the_finish() {
    let s = service();
    activated(&s).await;
    let d = json!({"pipeline": "app-release", "run_id": "4711", "job": "deploy", "attempt": 1});
    s.on_finish(&envelope("Pipeline Job Finished", "f1"), &d, d.to_string().len())
        .await
        .unwrap();
    let revoked = s
        .ports
        .store
        .audits()
        .into_iter()
        .find(|a| a.decision == Decision::Revoked)
        .expect("a Revoked record");
    assert_eq!(revoked.reason, "job_finished");
    assert_eq!(revoked.finished_by.as_deref(), Some("claimed:ci.github"));
}

#[tokio::test]
async fn given_drift_when_repaired_then_the_record_keeps_the_document_it_deleted() {
    let s = service();
    s.ports.iam.add_role(&deployer());
    let planted = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    s.ports
        .iam
        .plant(&deployer(), "latch-0123456789abcdef0123456789abcdef", planted);
    let settings = || SweepSettings {
        page_size: 2,
        concurrency: 1,
        drift_grace: Duration::minutes(10),
        ..Default::default()
    };
    memory_sweeper(&s, settings()).run(None).await.unwrap();
    s.ports.clock.advance(Duration::minutes(11));
    memory_sweeper(&s, settings()).run(None).await.unwrap();
    let repaired = s
        .ports
        .store
        .audits()
        .into_iter()
        .find(|a| a.decision == Decision::DriftRepaired)
        .expect("a Drift Repaired record");
    assert_eq!(repaired.deleted_document.as_deref(), Some(planted));
    assert_eq!(
        repaired.policy_file_sha256.as_deref(),
        Some(s.policy.file_sha256.as_str())
    );
}

#[test]
fn given_an_oversized_deleted_document_when_kept_then_it_is_cut_and_the_record_says_so() {
    let mut r = AuditRecord::new("a".repeat(32), Decision::DriftRepaired, "no_live_grant", t0());
    let huge = "é".repeat(MAX_DELETED_DOCUMENT);
    r.keep_deleted_document(&huge);
    let kept = r.deleted_document.as_deref().unwrap();
    assert!(kept.len() <= MAX_DELETED_DOCUMENT && huge.starts_with(kept));
    assert!(r.detail.unwrap().contains(&format!("of {} bytes", huge.len())));
}

#[test]
fn given_the_largest_record_latch_writes_when_serialised_then_it_fits_eventbridge_and_dynamodb() {
    let mut r = AuditRecord::new("a".repeat(32), Decision::DriftRepaired, "no_live_grant", t0());
    r.policy_document = Some("x".repeat(10_240 * 4));
    r.keep_deleted_document(&"y".repeat(10 * MAX_DELETED_DOCUMENT));
    r.detail = Some("d".repeat(4096));
    let bytes = serde_json::to_vec(&r).unwrap().len();
    assert!(bytes < 256 * 1024, "an EventBridge entry is at most 256 KB: {bytes}");
}
