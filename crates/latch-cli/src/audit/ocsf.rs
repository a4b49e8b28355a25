//! `--format ocsf`: each audit record as an OCSF 1.3.0 event, one JSON object a line, for
//! Security Lake custom sources and SIEMs.
//!
//! The class is Account Change (3001, category Identity & Access Management): OCSF's event for
//! "a user/role ... changed", whose activities include Attach Policy (7) and Detach Policy (8)
//! with the `policy` object, which is exactly what a grant does to its role. Authorize Session
//! (3003) describes a session's privileges at logon, and Entity Management (3004) changes to
//! entities in general; neither names the policy on a role. Mapping:
//! - activated, extended → Attach Policy, Success; denied → Attach Policy, Failure (the attach
//!   asked for and refused); revoked, drift_repaired → Detach Policy, Success; revoke_failed →
//!   Detach Policy, Failure.
//! - `user` is the elevated role (its ARN and name); `actor` the pipeline job that asked, with
//!   the OIDC issuer as `idp` when its identity was verified; `policy` the inline policy
//!   (name, permission set, document digest); `status_code` the reason code.
//! - `unmapped.latch` carries the whole Latch record, so nothing is lost in translation.

use latch_core::audit::{AuditRecord, Decision};
use serde_json::{Value, json};

pub const OCSF_VERSION: &str = "1.3.0";
const CLASS_UID: u64 = 3001;
const CATEGORY_UID: u64 = 3;

/// The OCSF event of one record.
pub fn event(r: &AuditRecord) -> Value {
    let (activity_id, activity) = match r.decision {
        Decision::Activated | Decision::Extended | Decision::Denied => (7, "Attach Policy"),
        Decision::Revoked | Decision::DriftRepaired | Decision::RevokeFailed => (8, "Detach Policy"),
    };
    let failed = matches!(r.decision, Decision::Denied | Decision::RevokeFailed);
    let (status_id, status) = if failed { (2, "Failure") } else { (1, "Success") };
    // Informational, except what an operator must look at: a policy left on a role (Medium)
    // and one Latch found there without a grant (Low).
    let (severity_id, severity) = match r.decision {
        Decision::RevokeFailed => (3, "Medium"),
        Decision::DriftRepaired => (2, "Low"),
        _ => (1, "Informational"),
    };
    let role_name = r.role_arn.as_deref().map(|a| a.rsplit('/').next().unwrap_or(a));
    let mut out = json!({
        "class_uid": CLASS_UID,
        "class_name": "Account Change",
        "category_uid": CATEGORY_UID,
        "category_name": "Identity & Access Management",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("Account Change: {activity}"),
        "time": r.recorded_at_epoch.saturating_mul(1000),
        "time_dt": r.recorded_at,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "status_code": r.reason,
        "message": format!("Latch {}: {}", r.decision.code(), r.reason),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": r.audit_id,
            "event_code": r.decision.code(),
            "log_name": "latch-audit",
            "product": {"name": "Latch", "vendor_name": "Latch"},
        },
        "cloud": {"provider": "AWS"},
        "user": {"type": "Other", "type_id": 99},
        "unmapped": {"latch": r},
    });
    let set = |out: &mut Value, path: &[&str], v: Value| {
        let mut at = out;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = v;
    };
    if let Some(d) = &r.detail {
        set(&mut out, &["status_detail"], json!(d));
    }
    if let Some(g) = &r.grant_id {
        set(&mut out, &["metadata", "correlation_uid"], json!(g));
    }
    if let Some(a) = &r.account {
        set(
            &mut out,
            &["cloud", "account"],
            json!({"uid": a, "type": "AWS Account", "type_id": 10}),
        );
    }
    if let Some(region) = &r.region {
        set(&mut out, &["cloud", "region"], json!(region));
    }
    if let (Some(arn), Some(name)) = (&r.role_arn, role_name) {
        set(&mut out, &["user", "uid"], json!(arn));
        set(&mut out, &["user", "name"], json!(name));
    }
    let mut actor = json!({"app_name": r.source});
    if let Some(p) = &r.pipeline {
        actor["user"] = json!({"name": p, "type": "Other", "type_id": 99});
        if let Some(principal) = &r.principal {
            actor["user"]["uid"] = json!(principal);
        }
    }
    if let Some(issuer) = &r.issuer {
        actor["idp"] = json!({"name": issuer});
    }
    if let Some(session) = &r.session {
        actor["session"] = json!({"uid": session});
    }
    set(&mut out, &["actor"], actor);
    if let Some(name) = &r.policy_name {
        let mut policy = json!({"name": name, "uid": name});
        if let Some(ps) = &r.permission_set {
            policy["desc"] = json!(format!("permission set {ps}"));
        }
        if let Some(rule) = &r.rule {
            policy["group"] = json!({"name": rule, "type": "Latch rule"});
        }
        if let Some(h) = &r.policy_sha256 {
            policy["version"] = json!(format!("sha256:{h}"));
        }
        set(&mut out, &["policy"], policy);
    }
    if let Some(g) = r.granted_at_epoch {
        set(&mut out, &["start_time"], json!(g.saturating_mul(1000)));
    }
    if let Some(e) = r.revoked_at_epoch.or(r.expires_at_epoch) {
        set(&mut out, &["end_time"], json!(e.saturating_mul(1000)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(decision: Decision) -> AuditRecord {
        let mut r = AuditRecord::new(
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            decision,
            "allowed",
            chrono::Utc::now(),
        );
        r.role_arn = Some("arn:aws:iam::123456789012:role/latch/app-deployer".into());
        r.policy_name = Some("latch-abc".into());
        r.account = Some("123456789012".into());
        r.pipeline = Some("app".into());
        r.issuer = Some("github".into());
        r.principal = Some("github:42".into());
        r
    }

    #[test]
    fn given_each_decision_when_mapped_then_activity_status_and_type_follow_the_grant() {
        for (d, activity, status) in [
            (Decision::Activated, 7, 1),
            (Decision::Extended, 7, 1),
            (Decision::Denied, 7, 2),
            (Decision::Revoked, 8, 1),
            (Decision::DriftRepaired, 8, 1),
            (Decision::RevokeFailed, 8, 2),
        ] {
            let e = event(&record(d));
            assert_eq!(e["activity_id"], activity, "{d:?}");
            assert_eq!(e["status_id"], status, "{d:?}");
            assert_eq!(e["type_uid"], 300_100 + activity, "{d:?}");
        }
    }

    #[test]
    fn given_a_record_when_mapped_then_every_required_account_change_attribute_is_there() {
        let e = event(&record(Decision::Activated));
        for key in [
            "activity_id",
            "category_uid",
            "class_uid",
            "cloud",
            "metadata",
            "severity_id",
            "time",
            "type_uid",
            "user",
        ] {
            assert!(e.get(key).is_some_and(|v| !v.is_null()), "{key}");
        }
        assert_eq!(e["metadata"]["version"], OCSF_VERSION);
        assert_eq!(e["cloud"]["provider"], "AWS");
        assert_eq!(e["user"]["name"], "app-deployer");
        assert_eq!(e["actor"]["idp"]["name"], "github");
        assert_eq!(e["unmapped"]["latch"]["audit_id"], "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    }
}
