//! `--report FILE`: one self-contained HTML page an auditor can open anywhere, offline.
//!
//! Contract: two steps. [`Aggregator`] folds matched records into a
//! [`Report`], the page's model, in memory bounded by the report's caps and with no HTML in
//! it; [`render`] turns a report into the page: inline CSS, inline JS, an SVG timeline drawn by
//! the script from an embedded JSON block, no external reference of any kind, every string
//! from a record escaped by the template engine.

mod aggregate;
mod render;

pub use aggregate::{Aggregator, hash64};
pub use render::{Source, render};

/// Records for the aggregation's and the rendering's tests.
#[cfg(test)]
mod fixtures {
    use chrono::{DateTime, Utc};
    use latch_core::audit::{AuditRecord, Decision};

    pub fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A grant's record (`decision`), activated at `start`, recorded at `end`, with a pipeline
    /// name that is markup.
    pub fn grant(id: &str, decision: Decision, reason: &str, start: &str, end: &str) -> AuditRecord {
        let mut r = AuditRecord::new(format!("{id}-{reason}"), decision, reason, t(end));
        r.grant_id = Some(id.into());
        r.role_arn = Some("arn:aws:iam::123456789012:role/latch/app-deployer".into());
        r.pipeline = Some("<script>alert(1)</script>".into());
        r.granted_at_epoch = Some(t(start).timestamp());
        r.granted_at = Some(start.into());
        r.expires_at_epoch = Some(t(start).timestamp() + 1800);
        if decision == Decision::Revoked {
            r.revoked_at_epoch = Some(t(end).timestamp());
            r.revoked_at = Some(end.into());
        }
        r
    }
}
