//! Metric records from handler outcomes, and their EMF shape.

use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::sweep::{SweepReport, SweepTask};

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

#[test]
fn given_a_sweep_report_then_its_records_name_each_count_with_unit_and_path() {
    let report = SweepReport {
        revoked: 3,
        revoke_failed: 1,
        not_reached: 2,
        oldest_expired_secs: Some(95),
        revocation_lags_secs: vec![30, 40, 95],
        drift_repaired: 1,
        drift_roles_checked: 7,
        lease_held_elsewhere: vec![SweepTask::Drift],
        ..SweepReport::default()
    };
    let records = sweep_records(&report);
    let find = |m: Metric| records.iter().filter(move |r| r.metric == m).collect::<Vec<_>>();
    assert_eq!(find(Metric::Revocations)[0].value, 3.0);
    assert_eq!(find(Metric::Revocations)[0].dimension.as_deref(), Some("expired_sweep"));
    assert_eq!(find(Metric::RevokeFailures)[0].value, 1.0);
    assert_eq!(find(Metric::SweepBacklog)[0].value, 3.0, "not reached + failed");
    assert_eq!(find(Metric::SweepLag)[0].value, 95.0);
    assert_eq!(find(Metric::SweepOverlapsSkipped)[0].value, 1.0);
    assert_eq!(find(Metric::DriftRepairs)[0].value, 1.0);
    assert_eq!(find(Metric::DriftRolesChecked)[0].value, 7.0);
    let lags: Vec<f64> = find(Metric::ExpiryToRevocation).iter().map(|r| r.value).collect();
    assert_eq!(lags, vec![30.0, 40.0, 95.0]);
    for r in &records {
        assert_eq!(r.dimension.is_some(), r.metric.dimension().is_some(), "{r:?}");
    }
}

#[test]
fn given_a_quiet_sweep_then_its_counts_are_zero_not_missing() {
    let records = sweep_records(&SweepReport::default());
    for m in [
        Metric::Revocations,
        Metric::RevokeFailures,
        Metric::SweepBacklog,
        Metric::DriftRepairs,
    ] {
        assert!(records.iter().any(|r| r.metric == m && r.value == 0.0), "{m:?}");
    }
    assert!(
        !records.iter().any(|r| r.metric == Metric::SweepLag),
        "no expired grant, no lag"
    );
}

#[test]
fn given_a_denial_and_an_activation_then_reason_and_start_to_active_are_recorded() {
    let denial = MetricRecord::denial(DenyReason::NoMatchingRule);
    assert_eq!(denial.metric, Metric::Denials);
    assert_eq!(denial.dimension.as_deref(), Some("no_matching_rule"));
    let activated = MetricRecord::grant_activated(at(), at() + Duration::milliseconds(1250));
    assert_eq!(activated[0].metric, Metric::Grants);
    assert_eq!(activated[1].metric, Metric::StartToActive);
    assert_eq!(activated[1].value, 1250.0);
    assert_eq!(Metric::StartToActive.unit(), Unit::Milliseconds);
}

#[test]
fn given_records_then_emf_documents_are_cloudwatchs_shape() {
    let records = vec![
        MetricRecord::denial(DenyReason::NoMatchingRule),
        MetricRecord::denial(DenyReason::NoMatchingRule),
        MetricRecord::revocation(RevokeReason::ExpiredTtl),
        MetricRecord::expiry_to_revocation(RevokeReason::ExpiredTtl, 12),
        MetricRecord::revoke_retry(),
    ];
    let docs = emf_documents(&records, "revoke", at());
    assert_eq!(docs.len(), 3, "one per dimension value: {docs:#?}");
    let denials = docs.iter().find(|d| d.get("Denials").is_some()).unwrap();
    assert_eq!(
        denials["_aws"],
        json!({
            "Timestamp": at().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": "Latch",
                "Dimensions": [["Reason"], []],
                "Metrics": [{"Name": "Denials", "Unit": "Count"}],
            }],
        })
    );
    assert_eq!(denials["Reason"], "no_matching_rule");
    assert_eq!(denials["Denials"], json!([1.0, 1.0]));
    let ttl = docs
        .iter()
        .find(|d| d.get("Path") == Some(&json!("expired_ttl")))
        .unwrap();
    assert_eq!(ttl["Revocations"], json!(1.0));
    assert_eq!(ttl["ExpiryToRevocation"], json!(12.0));
    let plain = docs.iter().find(|d| d.get("RevokeRetries").is_some()).unwrap();
    assert_eq!(plain["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
    assert_eq!(plain["function"], "revoke");
}

#[test]
fn given_more_than_100_values_then_emf_splits_documents() {
    let records: Vec<_> = (0..250)
        .map(|i| MetricRecord::expiry_to_revocation(RevokeReason::ExpiredSweep, i))
        .collect();
    let docs = emf_documents(&records, "sweep", at());
    let sizes: Vec<usize> = docs
        .iter()
        .map(|d| d["ExpiryToRevocation"].as_array().map_or(1, Vec::len))
        .collect();
    assert_eq!(sizes, vec![100, 100, 50]);
}

#[test]
fn every_metric_has_a_distinct_name() {
    let mut names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Metric::ALL.len());
}

#[test]
fn given_an_aws_call_then_its_latency_and_retries_are_by_operation() {
    let [latency, retries] = MetricRecord::aws_call("IAM.DeleteRolePolicy", 312.5, 3);
    assert_eq!((latency.metric, latency.value), (Metric::AwsCallLatency, 312.5));
    assert_eq!((retries.metric, retries.value), (Metric::AwsCallRetries, 2.0));
    assert_eq!(latency.dimension.as_deref(), Some("IAM.DeleteRolePolicy"));
    assert_eq!(Metric::AwsCallLatency.unit(), Unit::Milliseconds);
    let docs = emf_documents(&[latency, retries], "sweep", at());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["Operation"], "IAM.DeleteRolePolicy");
    assert_eq!(
        docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Operation"], []])
    );
}
