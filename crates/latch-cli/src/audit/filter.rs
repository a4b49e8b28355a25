//! Which audit records `latch audit` keeps: `--role`, `--pipeline`, `--since`/`--until`,
//! `--decision`, `--reason`.
//!
//! Contract: every given filter must match (AND); values of one repeated filter are
//! alternatives (OR). Role and pipeline patterns are globs (`*`, `?`, `[..]`); a role pattern
//! that starts with `arn:` matches the whole role ARN, any other matches the role's name (the
//! part after the last `/`). A record without the field never matches its filter. Times filter
//! on `recorded_at` (when the decision was made), `since` inclusive, `until` exclusive; a
//! relative time such as `7d` counts back from the export's own point in time, so a report of
//! the same export reads the same tomorrow.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use latch_core::audit::{AuditRecord, Decision};

/// A `--since`/`--until` value before the export's time is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    At(DateTime<Utc>),
    /// This long before the export's point in time.
    Ago(Duration),
}

impl FromStr for TimeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Self::At(t.with_timezone(&Utc)));
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
            && let Some(t) = d.and_hms_opt(0, 0, 0)
        {
            return Ok(Self::At(t.and_utc()));
        }
        if let Ok(d) = humantime::parse_duration(s) {
            return Ok(Self::Ago(d));
        }
        Err(format!(
            "{s:?} is neither an ISO 8601 time (2026-03-01, 2026-03-01T12:00:00Z) nor a relative \
             one (7d, 12h, 2w)"
        ))
    }
}

impl std::fmt::Display for TimeArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::At(t) => f.write_str(&latch_core::iam_time(*t)),
            Self::Ago(d) => write!(f, "{} before the export", humantime::format_duration(*d)),
        }
    }
}

impl TimeArg {
    /// Epoch seconds, relative values counted back from `anchor`.
    pub fn resolve(self, anchor: DateTime<Utc>) -> i64 {
        match self {
            Self::At(t) => t.timestamp(),
            Self::Ago(d) => anchor.timestamp() - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        }
    }
}

/// `--decision` values, spelled as in the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum DecisionArg {
    Activated,
    Denied,
    Revoked,
    RevokeFailed,
    DriftRepaired,
}

impl From<DecisionArg> for Decision {
    fn from(d: DecisionArg) -> Self {
        match d {
            DecisionArg::Activated => Decision::Activated,
            DecisionArg::Denied => Decision::Denied,
            DecisionArg::Revoked => Decision::Revoked,
            DecisionArg::RevokeFailed => Decision::RevokeFailed,
            DecisionArg::DriftRepaired => Decision::DriftRepaired,
        }
    }
}

/// The compiled filters.
#[derive(Debug, Default)]
pub struct Filter {
    role_arns: Option<GlobSet>,
    role_names: Option<GlobSet>,
    pipelines: Option<GlobSet>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    decisions: Vec<Decision>,
    reasons: Vec<String>,
}

fn globs(patterns: &[String]) -> Result<Option<GlobSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .or_else(|_| Glob::new(&globset::escape(p)))
            .map_err(|e| format!("bad pattern {p:?}: {e}"))?;
        b.add(glob);
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

/// Inputs for [`Filter::new`], straight from the command line.
#[derive(Debug, Default, Clone)]
pub struct FilterArgs {
    pub roles: Vec<String>,
    pub pipelines: Vec<String>,
    pub since: Option<TimeArg>,
    pub until: Option<TimeArg>,
    pub decisions: Vec<DecisionArg>,
    pub reasons: Vec<String>,
}

impl Filter {
    /// Compiles the patterns; relative times count back from `anchor` (the export's time).
    pub fn new(args: &FilterArgs, anchor: DateTime<Utc>) -> Result<Self, String> {
        let (arns, names): (Vec<String>, Vec<String>) = args.roles.iter().cloned().partition(|r| r.starts_with("arn:"));
        let f = Self {
            role_arns: globs(&arns)?,
            role_names: globs(&names)?,
            pipelines: globs(&args.pipelines)?,
            since: args.since.map(|t| t.resolve(anchor)),
            until: args.until.map(|t| t.resolve(anchor)),
            decisions: args.decisions.iter().map(|&d| d.into()).collect(),
            reasons: args.reasons.clone(),
        };
        if let (Some(s), Some(u)) = (f.since, f.until)
            && s >= u
        {
            return Err("--since must be before --until".into());
        }
        Ok(f)
    }

    fn role_matches(&self, role: Option<&str>) -> bool {
        if self.role_arns.is_none() && self.role_names.is_none() {
            return true;
        }
        let Some(arn) = role else { return false };
        let name = arn.rsplit('/').next().unwrap_or(arn);
        self.role_arns.as_ref().is_some_and(|g| g.is_match(arn))
            || self.role_names.as_ref().is_some_and(|g| g.is_match(name))
    }

    pub fn matches(&self, r: &AuditRecord) -> bool {
        if !self.decisions.is_empty() && !self.decisions.contains(&r.decision) {
            return false;
        }
        if !self.reasons.is_empty() && !self.reasons.contains(&r.reason) {
            return false;
        }
        if self.since.is_some_and(|s| r.recorded_at_epoch < s) || self.until.is_some_and(|u| r.recorded_at_epoch >= u) {
            return false;
        }
        if let Some(p) = &self.pipelines
            && !r.pipeline.as_deref().is_some_and(|x| p.is_match(x))
        {
            return false;
        }
        self.role_matches(r.role_arn.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn record(decision: Decision, role: &str, pipeline: &str, t: &str) -> AuditRecord {
        let mut r = AuditRecord::new("a".into(), decision, "allowed", at(t));
        r.role_arn = Some(role.into());
        r.pipeline = Some(pipeline.into());
        r
    }

    #[test]
    fn given_iso_and_relative_times_when_parsed_then_each_resolves_against_the_export_time() {
        let anchor = at("2026-04-01T00:00:00Z");
        let t: TimeArg = "2026-03-01".parse().unwrap();
        assert_eq!(t.resolve(anchor), at("2026-03-01T00:00:00Z").timestamp());
        let t: TimeArg = "2026-03-01T12:30:00Z".parse().unwrap();
        assert_eq!(t.resolve(anchor), at("2026-03-01T12:30:00Z").timestamp());
        let t: TimeArg = "7d".parse().unwrap();
        assert_eq!(t.resolve(anchor), at("2026-03-25T00:00:00Z").timestamp());
        assert!("yesterday-ish".parse::<TimeArg>().is_err());
    }

    #[test]
    fn given_role_patterns_when_matching_then_names_and_arns_both_work() {
        let role = "arn:aws:iam::123456789012:role/latch/app-deployer";
        let r = record(Decision::Activated, role, "app-web", "2026-03-02T00:00:00Z");
        let anchor = at("2026-04-01T00:00:00Z");
        for (pattern, want) in [
            ("app-deployer", true),
            ("app-*", true),
            ("db-*", false),
            (role, true),
            ("arn:aws:iam::123456789012:role/latch/*", true),
            ("arn:aws:iam::999999999999:role/*", false),
        ] {
            let args = FilterArgs {
                roles: vec![pattern.into()],
                ..FilterArgs::default()
            };
            assert_eq!(Filter::new(&args, anchor).unwrap().matches(&r), want, "{pattern}");
        }
    }

    #[test]
    fn given_several_filters_when_matching_then_all_must_hold() {
        let anchor = at("2026-04-01T00:00:00Z");
        let args = FilterArgs {
            pipelines: vec!["app-*".into()],
            decisions: vec![DecisionArg::Activated, DecisionArg::Revoked],
            since: Some("2026-03-02".parse().unwrap()),
            until: Some("2026-03-03".parse().unwrap()),
            ..FilterArgs::default()
        };
        let f = Filter::new(&args, anchor).unwrap();
        let role = "arn:aws:iam::123456789012:role/latch/x";
        assert!(f.matches(&record(Decision::Activated, role, "app-web", "2026-03-02T05:00:00Z")));
        assert!(!f.matches(&record(Decision::Denied, role, "app-web", "2026-03-02T05:00:00Z")));
        assert!(!f.matches(&record(Decision::Activated, role, "db", "2026-03-02T05:00:00Z")));
        assert!(!f.matches(&record(Decision::Activated, role, "app-web", "2026-03-03T00:00:00Z")));
        assert!(f.matches(&record(Decision::Revoked, role, "app-api", "2026-03-02T00:00:00Z")));
    }

    #[test]
    fn given_since_after_until_when_compiled_then_it_is_refused() {
        let args = FilterArgs {
            since: Some("2026-03-05".parse().unwrap()),
            until: Some("2026-03-01".parse().unwrap()),
            ..FilterArgs::default()
        };
        assert!(Filter::new(&args, at("2026-04-01T00:00:00Z")).is_err());
    }
}
