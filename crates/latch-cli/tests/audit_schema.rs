//! events/schemas/audit-record.schema.json (derived from `latch_core::audit::AuditRecord`, see
//! latch-core's schema_files.rs) accepts what Latch writes: records made by the real producers
//! validate, and so does every record `latch audit --format jsonl` reads back from a generated
//! export (every decision, every reason).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use chrono::{DateTime, Utc};
use latch_core::model::{AccountId, Grant, GrantId, GrantIdentity, GrantStatus, JobContext, JobKey, Name, RoleArn};
use latch_core::revoke::RevokeReason;
use serde_json::{Value, json};

fn schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/schemas/audit-record.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, record: &Value) {
    let errors: Vec<String> = v
        .iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{record}\n{}", errors.join("\n"));
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn grant() -> Grant {
    let account = AccountId::parse("123456789012").unwrap();
    let role = RoleArn::parse("arn:aws:iam::123456789012:role/latch/app-deployer").unwrap();
    let set = Name::parse("deploy-artifacts").unwrap();
    let job = JobKey {
        principal: None,
        pipeline: "app-web".into(),
        run_id: "1234".into(),
        job: "deploy".into(),
        attempt: 1,
    };
    let id = GrantId::derive(GrantIdentity {
        account: &account,
        source: "ci.github",
        job: &job,
        permission_set: &set,
        role: &role,
    });
    Grant {
        policy_name: id.policy_name(),
        id,
        status: GrantStatus::Active,
        source: "ci.github".into(),
        account,
        region: "us-east-1".into(),
        event_id: "e-1".into(),
        job,
        context: JobContext {
            reason: Some("deploy".into()),
            git_ref: Some("refs/heads/main".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            actor: Some("alice".into()),
            ticket: None,
            environment: Some("production".into()),
        },
        role,
        permission_set: set,
        rule: Name::parse("app-release-deploys").unwrap(),
        requested_duration_secs: 900,
        requested_at: t("2026-03-02T10:00:00Z"),
        granted_at: t("2026-03-02T10:00:01Z"),
        expires_at: t("2026-03-02T10:15:01Z"),
        policy_sha256: "ab".repeat(32),
        policy_chars: 0,
        session: None,
    }
}

#[test]
fn given_records_from_the_real_producers_when_validated_then_the_schema_accepts_them() {
    let v = validator();
    let g = grant();
    let activation = latch_core::audit::activation(&g, &["s3:GetObject".into(), "s3:PutObject".into()], g.granted_at);
    assert_valid(&v, &serde_json::to_value(&activation).unwrap());
    for reason in [
        RevokeReason::JobFinished,
        RevokeReason::ExpiredTtl,
        RevokeReason::ExpiredSweep,
    ] {
        let revoked = latch_core::audit::revocation(&g, reason.code(), t("2026-03-02T10:05:00Z"));
        assert_valid(&v, &serde_json::to_value(&revoked).unwrap());
    }
    // The activation's `actions` is a list; a revocation has none and omits the key.
    let revoked = serde_json::to_value(latch_core::audit::revocation(
        &g,
        RevokeReason::JobFinished.code(),
        t("2026-03-02T10:05:00Z"),
    ))
    .unwrap();
    assert!(revoked.get("actions").is_none());
    assert!(
        revoked.as_object().unwrap().values().all(|x| !x.is_null()),
        "no nulls: {revoked}"
    );
}

#[test]
fn given_nulls_empty_lists_unknown_fields_or_half_a_time_pair_when_validated_then_the_schema_refuses() {
    let v = validator();
    let g = grant();
    let good = serde_json::to_value(latch_core::audit::activation(
        &g,
        &["s3:GetObject".into()],
        g.granted_at,
    ))
    .unwrap();
    assert!(v.is_valid(&good));
    let mut bad = good.clone();
    bad["ticket"] = Value::Null;
    assert!(!v.is_valid(&bad), "null");
    let mut bad = good.clone();
    bad["actions"] = json!([]);
    assert!(!v.is_valid(&bad), "empty actions");
    let mut bad = good.clone();
    bad["surprise"] = json!("x");
    assert!(!v.is_valid(&bad), "unknown field");
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("granted_at_epoch");
    assert!(!v.is_valid(&bad), "ISO time without its epoch twin");
    let mut bad = good;
    bad["decision"] = json!("maybe");
    assert!(!v.is_valid(&bad), "unknown decision");
}

#[test]
fn given_a_generated_export_when_read_back_as_jsonl_then_every_record_validates() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("audit-schema-export");
    let _ = std::fs::remove_dir_all(&out);
    let bin = env!("CARGO_BIN_EXE_latch");
    let status = Command::new(bin)
        .args(["audit", "generate", "--items", "4000", "--seed", "11", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new(bin)
        .arg("audit")
        .arg(&out)
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let v = validator();
    let mut decisions = BTreeSet::new();
    let mut n = 0;
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_valid(&v, &record);
        decisions.insert(record["decision"].as_str().unwrap().to_owned());
        n += 1;
    }
    assert!(n > 1000, "{n} records");
    assert_eq!(decisions.len(), 5, "every decision appears: {decisions:?}");
}
