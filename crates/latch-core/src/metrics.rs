//! Operational metrics as domain records, and their one wire form: CloudWatch's embedded metric
//! format (EMF), a JSON log line CloudWatch Logs turns into metrics with no API call.
//!
//! Contract: [`Metric`] is the whole catalogue (names, units, dimensions), which the template's
//! dashboard and alarms are checked against; records are built from what handlers already
//! return (a sweep's report, a stream record's outcome, a grant decision), never from extra
//! calls. Each metric with dimensions is also published without them (EMF's empty dimension
//! set), so totals need no metric math. Namespace: [`NAMESPACE`].

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::grant::DenyReason;
use crate::revoke::RevokeReason;
use crate::sweep::SweepReport;

pub const NAMESPACE: &str = "Latch";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Seconds => "Seconds",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// Every metric Latch emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Grants activated (IAM accepted the document).
    Grants,
    /// Requests denied, by reason code.
    Denials,
    /// Grants revoked, by path (`job_finished`, `expired_ttl`, `expired_sweep`).
    Revocations,
    /// Revokes that failed (every attempt; the audit is once per episode), by path.
    RevokeFailures,
    /// From a grant's expiry to its revocation, by path (TTL and sweep).
    ExpiryToRevocation,
    /// From the start event's time to the grant being active.
    StartToActive,
    /// Stream records reported for redelivery (ReportBatchItemFailures).
    RevokeRetries,
    /// Expired grants a sweep run left behind (not reached, or failed).
    SweepBacklog,
    /// How far past its expiry the oldest expired grant was when a sweep began.
    SweepLag,
    /// Runs that found their task's lease held by another run.
    SweepOverlapsSkipped,
    /// Revoked and recorded, but the audit event did not go out.
    EventsUnpublished,
    DriftRepairs,
    DriftRolesChecked,
    /// One AWS API call's time, retries included, by operation (`IAM.DeleteRolePolicy`).
    AwsCallLatency,
    /// Retries the SDK made for one call (attempts less one), by operation.
    AwsCallRetries,
}

impl Metric {
    pub const ALL: [Metric; 15] = [
        Self::Grants,
        Self::Denials,
        Self::Revocations,
        Self::RevokeFailures,
        Self::ExpiryToRevocation,
        Self::StartToActive,
        Self::RevokeRetries,
        Self::SweepBacklog,
        Self::SweepLag,
        Self::SweepOverlapsSkipped,
        Self::EventsUnpublished,
        Self::DriftRepairs,
        Self::DriftRolesChecked,
        Self::AwsCallLatency,
        Self::AwsCallRetries,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Grants => "Grants",
            Self::Denials => "Denials",
            Self::Revocations => "Revocations",
            Self::RevokeFailures => "RevokeFailures",
            Self::ExpiryToRevocation => "ExpiryToRevocation",
            Self::StartToActive => "StartToActive",
            Self::RevokeRetries => "RevokeRetries",
            Self::SweepBacklog => "SweepBacklog",
            Self::SweepLag => "SweepLag",
            Self::SweepOverlapsSkipped => "SweepOverlapsSkipped",
            Self::EventsUnpublished => "EventsUnpublished",
            Self::DriftRepairs => "DriftRepairs",
            Self::DriftRolesChecked => "DriftRolesChecked",
            Self::AwsCallLatency => "AwsCallLatency",
            Self::AwsCallRetries => "AwsCallRetries",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Self::ExpiryToRevocation | Self::SweepLag => Unit::Seconds,
            Self::StartToActive | Self::AwsCallLatency => Unit::Milliseconds,
            _ => Unit::Count,
        }
    }

    /// The dimension this metric is split by, if any.
    pub fn dimension(self) -> Option<&'static str> {
        match self {
            Self::Denials => Some(DIM_REASON),
            Self::Revocations | Self::RevokeFailures | Self::ExpiryToRevocation => Some(DIM_PATH),
            Self::AwsCallLatency | Self::AwsCallRetries => Some(DIM_OPERATION),
            _ => None,
        }
    }
}

pub const DIM_REASON: &str = "Reason";
pub const DIM_PATH: &str = "Path";
pub const DIM_OPERATION: &str = "Operation";

/// One observation.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    pub metric: Metric,
    pub value: f64,
    /// The value of [`Metric::dimension`]; `None` exactly when the metric has none.
    pub dimension: Option<String>,
}

impl MetricRecord {
    fn plain(metric: Metric, value: f64) -> Self {
        debug_assert!(metric.dimension().is_none());
        Self {
            metric,
            value,
            dimension: None,
        }
    }

    fn by(metric: Metric, value: f64, dimension: &str) -> Self {
        debug_assert!(metric.dimension().is_some());
        Self {
            metric,
            value,
            dimension: Some(dimension.to_owned()),
        }
    }

    pub fn revocation(path: RevokeReason) -> Self {
        Self::by(Metric::Revocations, 1.0, path.code())
    }

    pub fn revoke_failure(path: RevokeReason) -> Self {
        Self::by(Metric::RevokeFailures, 1.0, path.code())
    }

    pub fn expiry_to_revocation(path: RevokeReason, secs: i64) -> Self {
        Self::by(Metric::ExpiryToRevocation, secs.max(0) as f64, path.code())
    }

    pub fn grant_activated(event_time: DateTime<Utc>, active_at: DateTime<Utc>) -> Vec<Self> {
        vec![
            Self::plain(Metric::Grants, 1.0),
            Self::plain(
                Metric::StartToActive,
                (active_at - event_time).num_milliseconds().max(0) as f64,
            ),
        ]
    }

    pub fn denial(reason: DenyReason) -> Self {
        Self::by(Metric::Denials, 1.0, reason.code())
    }

    pub fn revoke_retry() -> Self {
        Self::plain(Metric::RevokeRetries, 1.0)
    }

    /// One AWS call (`operation`: service and operation, `IAM.DeleteRolePolicy`): its time and
    /// the SDK's retries for it.
    pub fn aws_call(operation: &str, millis: f64, attempts: u32) -> [Self; 2] {
        [
            Self::by(Metric::AwsCallLatency, millis.max(0.0), operation),
            Self::by(Metric::AwsCallRetries, attempts.saturating_sub(1) as f64, operation),
        ]
    }
}

/// A sweep task's records, from its report. Counts are sent even when zero, so an alarm sees
/// a healthy run as 0 rather than as missing data.
pub fn sweep_records(report: &SweepReport) -> Vec<MetricRecord> {
    let path = RevokeReason::ExpiredSweep;
    let mut out = vec![
        MetricRecord::by(Metric::Revocations, report.revoked as f64, path.code()),
        MetricRecord::by(Metric::RevokeFailures, report.revoke_failed as f64, path.code()),
        MetricRecord::plain(Metric::SweepBacklog, report.backlog() as f64),
        MetricRecord::plain(Metric::SweepOverlapsSkipped, report.lease_held_elsewhere.len() as f64),
        MetricRecord::plain(Metric::EventsUnpublished, report.events_unpublished as f64),
        MetricRecord::plain(Metric::DriftRepairs, report.drift_repaired as f64),
        MetricRecord::plain(Metric::DriftRolesChecked, report.drift_roles_checked as f64),
    ];
    if let Some(lag) = report.oldest_expired_secs {
        out.push(MetricRecord::plain(Metric::SweepLag, lag as f64));
    }
    out.extend(
        report
            .revocation_lags_secs
            .iter()
            .map(|&secs| MetricRecord::expiry_to_revocation(path, secs)),
    );
    out
}

/// Each metric's values in one EMF document.
type ValuesByMetric = BTreeMap<Metric, Vec<f64>>;

/// EMF documents for `records`: one per dimension value, each metric's values as an array
/// (EMF takes up to 100 values per metric per document).
pub fn emf_documents(records: &[MetricRecord], function: &str, at: DateTime<Utc>) -> Vec<Value> {
    let mut groups: BTreeMap<(Option<&'static str>, Option<&str>), ValuesByMetric> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.metric.dimension(), r.dimension.as_deref()))
            .or_default()
            .entry(r.metric)
            .or_default()
            .push(r.value);
    }
    let mut out = Vec::new();
    for ((dim_name, dim_value), metrics) in groups {
        for chunk in chunks(&metrics) {
            let mut doc = Map::new();
            let dimensions = match dim_name {
                Some(d) => json!([[d], []]),
                None => json!([[]]),
            };
            let definitions: Vec<Value> = chunk
                .iter()
                .map(|(m, _)| json!({"Name": m.name(), "Unit": m.unit().as_str()}))
                .collect();
            doc.insert(
                "_aws".into(),
                json!({
                    "Timestamp": at.timestamp_millis(),
                    "CloudWatchMetrics": [{
                        "Namespace": NAMESPACE,
                        "Dimensions": dimensions,
                        "Metrics": definitions,
                    }],
                }),
            );
            doc.insert("function".into(), json!(function));
            if let (Some(d), Some(v)) = (dim_name, dim_value) {
                doc.insert(d.into(), json!(v));
            }
            for (m, values) in chunk {
                let value = match values {
                    [one] => json!(one),
                    many => json!(many),
                };
                doc.insert(m.name().into(), value);
            }
            out.push(Value::Object(doc));
        }
    }
    out
}

/// EMF allows at most 100 values per metric in one document.
fn chunks(metrics: &ValuesByMetric) -> Vec<Vec<(Metric, &[f64])>> {
    let longest = metrics.values().map(Vec::len).max().unwrap_or(0);
    (0..longest.div_ceil(100))
        .map(|i| {
            metrics
                .iter()
                .filter_map(|(m, v)| {
                    let part = v.get(i * 100..((i + 1) * 100).min(v.len()))?;
                    (!part.is_empty()).then_some((*m, part))
                })
                .collect()
        })
        .collect()
}

/// Writes the records as EMF lines on stdout, which Lambda sends to CloudWatch Logs. A write
/// that fails loses metrics, never the invocation.
pub fn emit(records: &[MetricRecord], function: &str, at: DateTime<Utc>) {
    if records.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    for doc in emf_documents(records, function, at) {
        let _ = writeln!(out, "{doc}");
    }
    let _ = out.flush();
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
