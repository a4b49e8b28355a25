//! Rendering: a [`Report`] and where its records came from, as one self-contained HTML page.
//!
//! Contract: the page is `templates/audit-report.html`, compiled with the binary; the template
//! engine escapes every value for HTML by default, so only our own CSS and script and the data
//! block (JSON written without `<`, `>`, `&`, `'`) are inserted raw. Text from records also
//! loses its control characters, because pipeline names and actors are claims. The page's
//! script builds the DOM with `textContent`, never `innerHTML`.

use askama::Template;
use serde::Serialize;

use super::aggregate::{Bar, Card, Marker, Report, RoleRow, Row, Share, role_name};
use crate::audit::export::ReadStats;
use crate::audit::output::human_secs;
use latch_core::audit::Decision;

/// Where the records came from, for the page's header.
pub struct Source<'a> {
    pub export_arn: Option<&'a str>,
    pub table_arn: Option<&'a str>,
    pub export_time: Option<&'a str>,
    pub stats: &'a ReadStats,
    pub matched: u64,
    pub filters: &'a str,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// What the page's script draws the timeline from.
#[derive(Serialize)]
struct TimelineData<'a> {
    range: [i64; 2],
    export: Option<i64>,
    roles: Vec<&'a str>,
    bars: &'a [Bar],
    markers: &'a [Marker],
}

struct RoleLine {
    role: String,
    short: String,
    row: RoleRow,
    held: String,
    longest: String,
}

struct ShareTable {
    title: &'static str,
    id: &'static str,
    rows: Vec<Share>,
}

struct RowTable {
    title: &'static str,
    id: &'static str,
    note: &'static str,
    head: &'static [&'static str],
    rows: Vec<Vec<String>>,
    shown: u64,
    total: u64,
}

#[derive(Template)]
#[template(path = "audit-report.html")]
struct Page<'a> {
    css: &'static str,
    js: &'static str,
    export_arn: String,
    table_arn: String,
    export_time: String,
    period: String,
    filters: String,
    items: u64,
    files: usize,
    audit_records: u64,
    matched: u64,
    cards: Vec<Card>,
    bars_total: u64,
    bars_drawn: u64,
    roles: Vec<RoleLine>,
    share_tables: Vec<ShareTable>,
    tables: Vec<RowTable>,
    data: TimelineData<'a>,
}

const CSS: &str = include_str!("report.css");
const JS: &str = include_str!("report.js");

/// Text safe to show: control characters (terminal escapes, NULs) become U+FFFD.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

fn iso(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .map(latch_core::iam_time)
        .unwrap_or_else(|| epoch.to_string())
}

fn row_table(
    (title, id, note): (&'static str, &'static str, &'static str),
    head: &'static [&'static str],
    rows: &[Row],
    total: u64,
) -> RowTable {
    RowTable {
        title,
        id,
        note,
        head,
        rows: rows
            .iter()
            .map(|r| r.cells.iter().map(|c| printable(c)).collect())
            .collect(),
        shown: rows.len() as u64,
        total,
    }
}

fn share_table(title: &'static str, id: &'static str, rows: Vec<Share>) -> ShareTable {
    let rows = rows
        .into_iter()
        .map(|s| Share {
            code: printable(&s.code),
            ..s
        })
        .collect();
    ShareTable { title, id, rows }
}

fn page<'a>(report: &'a Report, src: &Source<'_>) -> Page<'a> {
    let range = report.range(src.since, src.until);
    let roles = report
        .role_rows()
        .into_iter()
        .map(|row| RoleLine {
            role: printable(&row.role),
            short: printable(role_name(&row.role)),
            held: human_secs(row.held_secs),
            longest: human_secs(row.longest_secs),
            row,
        })
        .collect();
    Page {
        css: CSS,
        js: JS,
        export_arn: printable(src.export_arn.unwrap_or("-")),
        table_arn: printable(src.table_arn.unwrap_or("-")),
        export_time: printable(src.export_time.unwrap_or("-")),
        period: format!("{} to {}", iso(range[0]), iso(range[1])),
        filters: printable(if src.filters.is_empty() { "none" } else { src.filters }),
        items: src.stats.items,
        files: src.stats.files,
        audit_records: src.stats.audit_records,
        matched: src.matched,
        cards: report.cards(),
        bars_total: report.bars_total,
        bars_drawn: report.bars.len() as u64,
        roles,
        share_tables: vec![
            share_table("Denials by reason", "denials", report.denials()),
            share_table("Grants ended by", "endings", report.endings()),
            share_table(
                "Granted jobs by identity (verified by their CI's token, AWS's own event, or only claimed)",
                "identities",
                report.identities(),
            ),
        ],
        tables: vec![
            row_table(
                (
                    "Policy file versions",
                    "policy-files",
                    "Each policy file that decided, by its digest and label, with its first and last decision.",
                ),
                &["Label", "SHA-256", "First decision", "Last decision", "Decisions"],
                &report.policy_files,
                report.policy_files.len() as u64,
            ),
            row_table(
                (
                    "Revoke failures",
                    "revoke-failures",
                    "The policy stayed attached after a failed delete, but it stops working by itself \
                     at its expiry (its own aws:CurrentTime condition); the sweep retries.",
                ),
                &[
                    "Recorded",
                    "Role",
                    "Pipeline / run / job",
                    "Path",
                    "Error",
                    "Policy expires",
                    "Grant",
                ],
                &report.failures,
                report.count(Decision::RevokeFailed),
            ),
            row_table(
                (
                    "Drift repairs",
                    "drift-repairs",
                    "Latch policies found on a role with no live grant, and removed by the sweep, with the \
                     document each one held (the record keeps it whole).",
                ),
                &["Recorded", "Role", "Policy", "Reason", "Detail", "Deleted document"],
                &report.drift,
                report.count(Decision::DriftRepaired),
            ),
            row_table(
                ("Longest grants", "longest", "Held from activation to revocation."),
                &[
                    "Held",
                    "Role",
                    "Pipeline / run / job",
                    "Actor",
                    "Permission set",
                    "Granted",
                    "Revoked",
                    "Ended by",
                    "Grant",
                ],
                &report.longest,
                report.longest.len() as u64,
            ),
        ],
        data: TimelineData {
            range,
            export: report.export_epoch,
            roles: report.role_names().iter().map(String::as_str).collect(),
            bars: &report.bars,
            markers: &report.markers,
        },
    }
}

/// The whole page. Fails only when writing the timeline's data as JSON fails.
pub fn render(report: &Report, src: &Source<'_>) -> Result<String, askama::Error> {
    page(report, src).render()
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::Aggregator;
    use super::super::fixtures::grant;
    use super::*;

    #[test]
    fn given_hostile_claims_when_rendered_then_no_markup_escapes() {
        let mut a = Aggregator::new(None);
        a.add(&grant(
            "g1",
            Decision::Revoked,
            "job_finished",
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:12:00Z",
        ));
        let report = a.finish();
        let stats = ReadStats::default();
        let html = render(
            &report,
            &Source {
                export_arn: Some("arn:x</dd><script>"),
                table_arn: None,
                export_time: None,
                stats: &stats,
                matched: 2,
                filters: "",
                since: None,
                until: None,
            },
        )
        .unwrap();
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("</dd><script>"));
        assert_eq!(
            html.matches("<script").count(),
            2,
            "only the data block and the page script"
        );
        let without_ns = html.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !without_ns.contains("http:") && !without_ns.contains("https:"),
            "no network reference"
        );
    }

    #[test]
    fn given_control_characters_in_claims_when_rendered_then_none_reach_the_page() {
        let mut r = grant(
            "g1",
            Decision::Revoked,
            "job_finished",
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:12:00Z",
        );
        r.actor = Some("evil\u{1b}[2J".into());
        let mut aggregator = Aggregator::new(None);
        aggregator.add(&r);
        let report = aggregator.finish();
        let stats = ReadStats::default();
        let html = render(
            &report,
            &Source {
                export_arn: None,
                table_arn: None,
                export_time: None,
                stats: &stats,
                matched: 1,
                filters: "",
                since: None,
                until: None,
            },
        )
        .unwrap();
        assert!(!html.contains('\u{1b}'));
        assert!(html.contains("evil\u{fffd}[2J"));
    }
}
