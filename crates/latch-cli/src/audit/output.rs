//! Writing matched audit records to stdout: `table` (for people), `csv` (for spreadsheets),
//! `jsonl` (for tools; each line is exactly the record of events/schemas/audit-record.schema.json),
//! `ocsf` (for SIEMs and Security Lake: one OCSF Account Change event a line, see [`super::ocsf`]).
//!
//! Contract: records are written one at a time as they are read (export order, not sorted),
//! so memory does not grow with the export. Text that came from a pipeline's claims is made
//! safe for where it goes: control characters never reach the terminal (table), and a CSV cell
//! that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) is prefixed
//! with `'`. CSV columns are every field of the record, in the record's order.

use std::io::{self, Write};

use latch_core::audit::{AuditRecord, Decision};
use serde_json::Value;

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Jsonl,
    Ocsf,
}

/// Every field of [`AuditRecord`], in declaration order: the CSV header.
pub const COLUMNS: &[&str] = &[
    "audit_id",
    "decision",
    "reason",
    "detail",
    "rule",
    "grant_id",
    "policy_name",
    "role_arn",
    "permission_set",
    "actions",
    "source",
    "account",
    "region",
    "event_id",
    "pipeline",
    "run_id",
    "job",
    "attempt",
    "actor",
    "commit",
    "ref",
    "ticket",
    "environment",
    "justification",
    "requested_duration_secs",
    "requested_at",
    "requested_at_epoch",
    "granted_at",
    "granted_at_epoch",
    "expires_at",
    "expires_at_epoch",
    "revoked_at",
    "revoked_at_epoch",
    "policy_sha256",
    "policy_file_sha256",
    "policy_file_label",
    "finished_by",
    "claimed_fields",
    "recorded_at",
    "recorded_at_epoch",
];

/// Writes records in one format.
pub struct RecordWriter<W: Write> {
    out: Sink<W>,
    started: bool,
}

/// Where rows go: CSV through the `csv` crate's writer (quoting and escaping), the rest as text.
enum Sink<W: Write> {
    Table(W),
    Csv(Box<csv::Writer<W>>),
    Jsonl(W),
    Ocsf(W),
}

impl<W: Write> RecordWriter<W> {
    pub fn new(out: W, format: Format) -> Self {
        let out = match format {
            Format::Table => Sink::Table(out),
            Format::Csv => Sink::Csv(Box::new(csv::WriterBuilder::new().has_headers(false).from_writer(out))),
            Format::Jsonl => Sink::Jsonl(out),
            Format::Ocsf => Sink::Ocsf(out),
        };
        Self { out, started: false }
    }

    pub fn write(&mut self, r: &AuditRecord) -> io::Result<()> {
        if !self.started {
            self.started = true;
            self.header()?;
        }
        match &mut self.out {
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, r)?;
                out.write_all(b"\n")
            }
            Sink::Ocsf(out) => {
                serde_json::to_writer(&mut *out, &super::ocsf::event(r))?;
                out.write_all(b"\n")
            }
            Sink::Csv(out) => Ok(out.write_record(csv_cells(r)?)?),
            Sink::Table(out) => table_row(out, r),
        }
    }

    /// Writes the header even when nothing matched, then flushes.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.started {
            self.header()?;
        }
        match &mut self.out {
            Sink::Csv(out) => out.flush(),
            Sink::Table(out) | Sink::Jsonl(out) | Sink::Ocsf(out) => out.flush(),
        }
    }

    fn header(&mut self) -> io::Result<()> {
        match &mut self.out {
            Sink::Jsonl(_) | Sink::Ocsf(_) => Ok(()),
            Sink::Csv(out) => Ok(out.write_record(COLUMNS)?),
            Sink::Table(out) => writeln!(
                out,
                "{:<20}  {:<14}  {:<24}  {:<20}  {:<32}  {:<14}  {:<12}  {:>8}",
                "RECORDED (UTC)", "DECISION", "REASON", "ROLE", "PIPELINE/RUN/JOB", "ACTOR", "GRANT", "HELD"
            ),
        }
    }
}

/// One CSV row: every column's text, absent fields empty, lists space-joined, text defused.
fn csv_cells(r: &AuditRecord) -> io::Result<Vec<String>> {
    let value = serde_json::to_value(r)?;
    Ok(COLUMNS
        .iter()
        .map(|col| match value.get(*col) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => defuse(s),
            Some(Value::Array(a)) => defuse(
                &a.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Some(v) => v.to_string(),
        })
        .collect())
}

fn table_row(out: &mut impl Write, r: &AuditRecord) -> io::Result<()> {
    let role = r
        .role_arn
        .as_deref()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("-");
    let job = match (&r.pipeline, &r.run_id, &r.job) {
        (Some(p), Some(run), Some(j)) => format!("{p}/{run}/{j}"),
        (Some(p), _, _) => p.clone(),
        _ => "-".into(),
    };
    let grant = r
        .grant_id
        .as_deref()
        .map(|g| g.chars().take(12).collect::<String>())
        .unwrap_or_else(|| "-".into());
    writeln!(
        out,
        "{:<20}  {:<14}  {:<24}  {:<20}  {:<32}  {:<14}  {:<12}  {:>8}",
        clip(&r.recorded_at, 20),
        r.decision.code(),
        clip(&r.reason, 24),
        clip(role, 20),
        clip(&job, 32),
        clip(r.actor.as_deref().unwrap_or("-"), 14),
        clip(&grant, 12),
        held(r),
    )
}

/// How long the grant was held, for the table: revoked - granted for a revocation, the
/// granted span for an activation; `-` otherwise.
fn held(r: &AuditRecord) -> String {
    let secs = match r.decision {
        Decision::Revoked => r.revoked_at_epoch.zip(r.granted_at_epoch).map(|(e, s)| e - s),
        Decision::Activated => r.expires_at_epoch.zip(r.granted_at_epoch).map(|(e, s)| e - s),
        _ => None,
    };
    secs.map_or_else(|| "-".into(), human_secs)
}

/// `1h05m`, `12m30s`, `45s`.
pub fn human_secs(s: i64) -> String {
    let s = s.max(0);
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// Printable, at most `width` characters (an ellipsis marks a cut).
fn clip(s: &str, width: usize) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if clean.chars().count() <= width {
        clean
    } else {
        let mut out: String = clean.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A spreadsheet would evaluate these as formulas.
fn defuse(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn record() -> AuditRecord {
        let t = DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut r = AuditRecord::new("id1".into(), Decision::Revoked, "job_finished", t);
        r.role_arn = Some("arn:aws:iam::123456789012:role/latch/app-deployer".into());
        r.pipeline = Some("=HYPERLINK(\"x\")".into());
        r.run_id = Some("r1".into());
        r.job = Some("deploy".into());
        r.actor = Some("evil\u{1b}[2J".into());
        r.actions = vec!["s3:GetObject".into(), "s3:PutObject".into()];
        r.granted_at_epoch = Some(t.timestamp() - 754);
        r.revoked_at_epoch = Some(t.timestamp());
        r.attempt = Some(2);
        r
    }

    fn render(format: Format) -> String {
        let mut buf = Vec::new();
        let mut w = RecordWriter::new(&mut buf, format);
        w.write(&record()).unwrap();
        w.finish().unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn given_a_record_when_written_as_csv_then_formulas_are_defused_and_quotes_escaped() {
        let out = render(Format::Csv);
        let mut lines = out.lines();
        assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
        let row = lines.next().unwrap();
        assert!(row.starts_with("id1,revoked,job_finished,,"), "{row}");
        assert!(row.contains(r#""'=HYPERLINK(""x"")""#), "{row}");
        assert!(row.contains(",s3:GetObject s3:PutObject,"), "{row}");
        assert!(row.contains(",2,"), "{row}");
    }

    #[test]
    fn given_a_record_when_written_as_a_table_then_control_characters_never_reach_the_terminal() {
        let out = render(Format::Table);
        assert!(!out.contains('\u{1b}'));
        assert!(out.contains("app-deployer"));
        assert!(out.contains("12m34s"));
    }

    #[test]
    fn given_a_record_when_written_as_jsonl_then_it_reads_back_identical() {
        let out = render(Format::Jsonl);
        let back: AuditRecord = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(back, record());
    }

    #[test]
    fn given_the_record_type_when_serialised_then_csv_columns_cover_every_field() {
        let mut r = record();
        r.detail = Some("d".into());
        let value = serde_json::to_value(&r).unwrap();
        for key in value.as_object().unwrap().keys() {
            assert!(COLUMNS.contains(&key.as_str()), "{key} is not a CSV column");
        }
    }
}
