//! `--report FILE`: one self-contained HTML page an auditor can open anywhere, offline.
//!
//! Contract: [`Aggregator::add`] folds in one matched record at a time and keeps memory bounded
//! by the report's caps, never by the export's size: counts are exact over every record; the
//! timeline draws a deterministic sample of at most [`MAX_BARS`] grants (the grants whose id
//! hashes lowest, so the same export always draws the same bars), and the failure, drift and
//! longest-grant tables keep the most relevant [`MAX_ROWS`]. Grants still active at the export's
//! point in time are found with a join bounded by the grants alive then (activations whose
//! expiry is after the export time, minus their revocations).
//!
//! The page: inline CSS, inline JS, an SVG timeline drawn by the script from an embedded JSON
//! block, no external reference of any kind. Every string that came from a record is escaped
//! (HTML text, and `<` inside the JSON block), and the script builds the DOM with
//! `textContent`, never `innerHTML`, because pipeline names and actors are claims.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;

use latch_core::audit::{AuditRecord, Decision};
use serde::Serialize;

use super::export::ReadStats;
use super::output::human_secs;

/// Grants drawn on the timeline at most.
pub const MAX_BARS: usize = 4000;
/// Denial, revoke-failure and drift markers drawn at most.
pub const MAX_MARKERS: usize = 3000;
/// Rows kept per table.
pub const MAX_ROWS: usize = 500;
/// Distinct roles tracked one by one; the rest are summed as one lane.
pub const MAX_ROLES: usize = 200;
/// Distinct reason codes tracked one by one.
pub const MAX_REASONS: usize = 200;
/// Grants alive at the export's time tracked for the active-at-export join.
pub const MAX_LIVE: usize = 200_000;

const OTHER_ROLES: &str = "(other roles)";
const NO_ROLE: &str = "(no role)";

/// A stable 64-bit hash (FNV-1a, then a splitmix64 finaliser) for sampling.
pub fn hash64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Keeps the `k` entries with the smallest keys.
struct Keep<T> {
    k: usize,
    heap: BinaryHeap<Entry<T>>,
}

struct Entry<T> {
    key: (i64, u64),
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl<T> Keep<T> {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::new(),
        }
    }

    fn offer(&mut self, key: (i64, u64), make: impl FnOnce() -> T) {
        if self.heap.len() >= self.k {
            match self.heap.peek() {
                Some(top) if key < top.key => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(Entry { key, item: make() });
    }

    fn into_sorted(self) -> Vec<T> {
        self.heap.into_sorted_vec().into_iter().map(|e| e.item).collect()
    }
}

/// One grant on the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub role: usize,
    pub start: i64,
    pub end: i64,
    /// `job_finished`, `expired_ttl`, `expired_sweep`, `active`, or another revoke reason.
    pub ended: String,
    pub grant: String,
    pub job: String,
    pub actor: String,
    pub set: String,
}

/// A denial, revoke failure or drift repair on the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    pub role: usize,
    pub at: i64,
    pub kind: &'static str,
    pub reason: String,
    pub label: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RoleStats {
    pub activated: u64,
    pub revoked: BTreeMap<String, u64>,
    pub denied: u64,
    pub revoke_failed: u64,
    pub drift_repaired: u64,
    pub held_secs: i64,
    pub longest_secs: i64,
    pub active_at_export: u64,
}

/// One policy file version, as the records name it.
#[derive(Debug, Clone)]
struct PolicyFileSeen {
    label: Option<String>,
    first: String,
    last: String,
    decisions: u64,
}

/// How much of a deleted document the drift table shows (the record holds all of it).
const DOCUMENT_SHOWN: usize = 400;

/// A row of the revoke-failure, drift or longest-grant table.
#[derive(Debug, Clone)]
struct Row {
    cells: Vec<String>,
}

/// Folds records into the report.
pub struct Aggregator {
    export_epoch: Option<i64>,
    role_index: HashMap<String, usize>,
    role_names: Vec<String>,
    roles: Vec<RoleStats>,
    decisions: BTreeMap<&'static str, u64>,
    revoke_reasons: BTreeMap<String, u64>,
    denial_reasons: BTreeMap<String, u64>,
    bars: Keep<Bar>,
    markers: Keep<Marker>,
    failures: Keep<Row>,
    drift: Keep<Row>,
    longest: Keep<Row>,
    /// Activations by whose word the job's identity is (verified, aws_service, claimed).
    identities: BTreeMap<String, u64>,
    /// Each policy file that decided, by digest: its label, first and last decision, count.
    policy_files: BTreeMap<String, PolicyFileSeen>,
    live: HashMap<String, Bar>,
    live_revoked: HashSet<String>,
    first: Option<i64>,
    last: Option<i64>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str, cap: usize) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < cap {
        map.insert(key.to_owned(), 1);
    } else {
        *map.entry("(other)".to_owned()).or_insert(0) += 1;
    }
}

fn job_label(r: &AuditRecord) -> String {
    match (&r.pipeline, &r.run_id, &r.job) {
        (Some(p), Some(run), Some(j)) => format!("{p} / {run} / {j}"),
        (Some(p), _, _) => p.clone(),
        _ => String::new(),
    }
}

fn role_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl Aggregator {
    pub fn new(export_epoch: Option<i64>) -> Self {
        Self {
            export_epoch,
            role_index: HashMap::new(),
            role_names: Vec::new(),
            roles: Vec::new(),
            decisions: BTreeMap::new(),
            revoke_reasons: BTreeMap::new(),
            denial_reasons: BTreeMap::new(),
            bars: Keep::new(MAX_BARS),
            markers: Keep::new(MAX_MARKERS),
            failures: Keep::new(MAX_ROWS),
            drift: Keep::new(MAX_ROWS),
            identities: BTreeMap::new(),
            policy_files: BTreeMap::new(),
            longest: Keep::new(10),
            live: HashMap::new(),
            live_revoked: HashSet::new(),
            first: None,
            last: None,
        }
    }

    fn role(&mut self, arn: Option<&str>) -> usize {
        let key = arn.unwrap_or(NO_ROLE);
        if let Some(&i) = self.role_index.get(key) {
            return i;
        }
        let key = if self.role_names.len() >= MAX_ROLES {
            OTHER_ROLES
        } else {
            key
        };
        if let Some(&i) = self.role_index.get(key) {
            return i;
        }
        let i = self.role_names.len();
        self.role_names.push(key.to_owned());
        self.roles.push(RoleStats::default());
        self.role_index.insert(key.to_owned(), i);
        i
    }

    fn seen(&mut self, t: Option<i64>) {
        if let Some(t) = t {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }

    fn bar(&self, r: &AuditRecord, role: usize, end: i64, ended: &str) -> Bar {
        Bar {
            role,
            start: r.granted_at_epoch.unwrap_or(end),
            end,
            ended: ended.to_owned(),
            grant: r.grant_id.clone().unwrap_or_default(),
            job: job_label(r),
            actor: r.actor.clone().unwrap_or_default(),
            set: r.permission_set.clone().unwrap_or_default(),
        }
    }

    pub fn add(&mut self, r: &AuditRecord) {
        *self.decisions.entry(r.decision.code()).or_insert(0) += 1;
        if let Some(sha) = &r.policy_file_sha256 {
            let room = self.policy_files.len() < MAX_REASONS;
            match self.policy_files.get_mut(sha) {
                Some(seen) => {
                    seen.decisions += 1;
                    seen.first = seen.first.clone().min(r.recorded_at.clone());
                    seen.last = seen.last.clone().max(r.recorded_at.clone());
                }
                None if room => {
                    self.policy_files.insert(
                        sha.clone(),
                        PolicyFileSeen {
                            label: r.policy_file_label.clone(),
                            first: r.recorded_at.clone(),
                            last: r.recorded_at.clone(),
                            decisions: 1,
                        },
                    );
                }
                None => {}
            }
        }
        let role = self.role(r.role_arn.as_deref());
        self.seen(Some(r.recorded_at_epoch));
        let id_hash = hash64(r.grant_id.as_deref().unwrap_or(&r.audit_id));
        match r.decision {
            Decision::Activated => {
                self.roles[role].activated += 1;
                bump(
                    &mut self.identities,
                    r.identity.as_deref().unwrap_or("unknown"),
                    MAX_REASONS,
                );
                self.seen(r.granted_at_epoch);
                if let (Some(export), Some(exp), Some(g)) = (self.export_epoch, r.expires_at_epoch, &r.grant_id)
                    && exp > export
                    && self.live.len() < MAX_LIVE
                {
                    let bar = self.bar(r, role, export, "active");
                    self.live.insert(g.clone(), bar);
                }
            }
            Decision::Revoked => {
                bump(&mut self.revoke_reasons, &r.reason, MAX_REASONS);
                let stats = &mut self.roles[role];
                bump(&mut stats.revoked, &r.reason, MAX_REASONS);
                let end = r.revoked_at_epoch.unwrap_or(r.recorded_at_epoch);
                self.seen(r.granted_at_epoch);
                self.seen(Some(end));
                if let (Some(export), Some(exp), Some(g)) = (self.export_epoch, r.expires_at_epoch, &r.grant_id)
                    && exp > export
                    && self.live_revoked.len() < MAX_LIVE
                {
                    self.live_revoked.insert(g.clone());
                }
                if let Some(start) = r.granted_at_epoch {
                    let held = (end - start).max(0);
                    let stats = &mut self.roles[role];
                    stats.held_secs += held;
                    stats.longest_secs = stats.longest_secs.max(held);
                    self.longest.offer((-held, id_hash), || Row {
                        cells: vec![
                            human_secs(held),
                            role_name(r.role_arn.as_deref().unwrap_or("-")).to_owned(),
                            job_label(r),
                            r.actor.clone().unwrap_or_default(),
                            r.permission_set.clone().unwrap_or_default(),
                            r.granted_at.clone().unwrap_or_default(),
                            r.revoked_at.clone().unwrap_or_default(),
                            r.reason.clone(),
                            r.grant_id.clone().unwrap_or_default(),
                        ],
                    });
                    let bar = self.bar(r, role, end, &r.reason);
                    self.bars.offer((0, id_hash), || bar);
                }
            }
            Decision::Denied => {
                self.roles[role].denied += 1;
                bump(&mut self.denial_reasons, &r.reason, MAX_REASONS);
                self.offer_marker(r, role, "denied");
            }
            Decision::RevokeFailed => {
                self.roles[role].revoke_failed += 1;
                self.offer_marker(r, role, "revoke_failed");
                self.failures.offer((-r.recorded_at_epoch, id_hash), || Row {
                    cells: vec![
                        r.recorded_at.clone(),
                        role_name(r.role_arn.as_deref().unwrap_or("-")).to_owned(),
                        job_label(r),
                        r.reason.clone(),
                        r.detail.clone().unwrap_or_default(),
                        r.expires_at.clone().unwrap_or_default(),
                        r.grant_id.clone().unwrap_or_default(),
                    ],
                });
            }
            Decision::Extended => self.offer_marker(r, role, "extended"),
            Decision::DriftRepaired => {
                self.roles[role].drift_repaired += 1;
                self.offer_marker(r, role, "drift_repaired");
                self.drift.offer((-r.recorded_at_epoch, id_hash), || Row {
                    cells: vec![
                        r.recorded_at.clone(),
                        role_name(r.role_arn.as_deref().unwrap_or("-")).to_owned(),
                        r.policy_name.clone().unwrap_or_default(),
                        r.reason.clone(),
                        r.detail.clone().unwrap_or_default(),
                        r.deleted_document
                            .as_deref()
                            .map(|d| {
                                let mut shown: String = d.chars().take(DOCUMENT_SHOWN).collect();
                                if shown.len() < d.len() {
                                    shown.push('…');
                                }
                                shown
                            })
                            .unwrap_or_else(|| "-".into()),
                    ],
                });
            }
        }
    }

    fn offer_marker(&mut self, r: &AuditRecord, role: usize, kind: &'static str) {
        let key = (0, hash64(&r.audit_id));
        self.markers.offer(key, || Marker {
            role,
            at: r.recorded_at_epoch,
            kind,
            reason: r.reason.clone(),
            label: job_label(r),
        });
    }

    /// Ends the join and freezes the numbers.
    pub fn finish(mut self) -> Report {
        let live_revoked = std::mem::take(&mut self.live_revoked);
        let mut active = 0u64;
        let live = std::mem::take(&mut self.live);
        for (grant, bar) in live {
            if live_revoked.contains(&grant) {
                continue;
            }
            active += 1;
            self.roles[bar.role].active_at_export += 1;
            self.seen(Some(bar.end));
            let key = (0, hash64(&grant));
            self.bars.offer(key, || bar);
        }
        let bars_total = self.revoke_reasons.values().sum::<u64>() + active;
        Report {
            export_epoch: self.export_epoch,
            role_names: self.role_names,
            roles: self.roles,
            decisions: self.decisions,
            revoke_reasons: self.revoke_reasons,
            denial_reasons: self.denial_reasons,
            active_at_export: active,
            bars_total,
            bars: self.bars.into_sorted(),
            markers: self.markers.into_sorted(),
            failures: self.failures.into_sorted(),
            drift: self.drift.into_sorted(),
            longest: self.longest.into_sorted(),
            identities: self.identities,
            policy_files: {
                let mut rows: Vec<(String, PolicyFileSeen)> = self.policy_files.into_iter().collect();
                rows.sort_by(|a, b| a.1.first.cmp(&b.1.first));
                rows.into_iter()
                    .map(|(sha, seen)| Row {
                        cells: vec![
                            seen.label.unwrap_or_else(|| "-".into()),
                            sha,
                            seen.first,
                            seen.last,
                            seen.decisions.to_string(),
                        ],
                    })
                    .collect()
            },
            first: self.first,
            last: self.last,
        }
    }
}

/// Everything the page shows.
pub struct Report {
    export_epoch: Option<i64>,
    role_names: Vec<String>,
    roles: Vec<RoleStats>,
    decisions: BTreeMap<&'static str, u64>,
    revoke_reasons: BTreeMap<String, u64>,
    denial_reasons: BTreeMap<String, u64>,
    pub active_at_export: u64,
    pub bars_total: u64,
    pub bars: Vec<Bar>,
    pub markers: Vec<Marker>,
    failures: Vec<Row>,
    drift: Vec<Row>,
    longest: Vec<Row>,
    identities: BTreeMap<String, u64>,
    policy_files: Vec<Row>,
    first: Option<i64>,
    last: Option<i64>,
}

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

#[derive(Serialize)]
struct PageData<'a> {
    range: [i64; 2],
    export: Option<i64>,
    roles: Vec<&'a str>,
    bars: &'a [Bar],
    markers: &'a [Marker],
}

/// HTML text: `&`, `<`, `>`, quotes escaped.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// JSON that is safe inside `<script type="application/json">`.
fn script_json(v: &impl Serialize) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn iso(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .map(latch_core::iam_time)
        .unwrap_or_else(|| epoch.to_string())
}

const CSS: &str = include_str!("report.css");
const JS: &str = include_str!("report.js");

impl Report {
    fn count(&self, decision: Decision) -> u64 {
        self.decisions.get(decision.code()).copied().unwrap_or(0)
    }

    fn reason(&self, code: &str) -> u64 {
        self.revoke_reasons.get(code).copied().unwrap_or(0)
    }

    /// The whole page.
    pub fn html(&self, src: &Source<'_>) -> String {
        let mut h = String::with_capacity(256 * 1024 + self.bars.len() * 200);
        // Whole days when nothing narrows the period, ending at the export's time when known.
        let first = src.since.or(self.first.map(|f| f - f.rem_euclid(86_400)));
        let last = src.until.or(match (self.last, self.export_epoch) {
            (Some(l), Some(e)) => Some(l.max(e)),
            (l, e) => l.or(e),
        });
        let range = match (first, last) {
            (Some(a), Some(b)) if b > a => [a, b],
            (Some(a), _) => [a, a + 86_400],
            _ => [0, 86_400],
        };
        let roles: Vec<&str> = self.role_names.iter().map(String::as_str).collect();
        let data = PageData {
            range,
            export: self.export_epoch,
            roles,
            bars: &self.bars,
            markers: &self.markers,
        };
        let period = format!("{} to {}", iso(range[0]), iso(range[1]));
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
             <title>Latch audit report</title><style>{CSS}</style></head><body>\n\
             <header><h1>Latch audit report</h1><dl class=\"meta\">\
             <dt>Export</dt><dd>{}</dd><dt>Table</dt><dd>{}</dd><dt>Export time</dt><dd>{}</dd>\
             <dt>Period shown</dt><dd>{}</dd><dt>Filters</dt><dd>{}</dd>\
             <dt>Read</dt><dd>{} items in {} files: {} audit records, {} matched</dd></dl></header>\n",
            esc(src.export_arn.unwrap_or("-")),
            esc(src.table_arn.unwrap_or("-")),
            esc(src.export_time.unwrap_or("-")),
            esc(&period),
            esc(if src.filters.is_empty() { "none" } else { src.filters }),
            src.stats.items,
            src.stats.files,
            src.stats.audit_records,
            src.matched,
        );
        self.cards(&mut h);
        let _ = writeln!(
            h,
            "<section><h2>Timeline of grants per role</h2>\
             <p class=\"note\" id=\"timeline-note\">Each bar is one grant, from activation to the \
             moment it was taken away, coloured by how it ended. Drag across the chart to zoom; \
             double-click to zoom out. {}</p>\
             <div id=\"legend\"></div><div id=\"timeline\" data-bars-total=\"{}\" \
             data-bars-drawn=\"{}\"><noscript>The timeline needs JavaScript; the tables below \
             do not.</noscript></div><div id=\"tooltip\" hidden></div></section>",
            if (self.bars.len() as u64) < self.bars_total {
                format!(
                    "Showing a fixed sample of {} of {} grants; every count and table covers all of them.",
                    self.bars.len(),
                    self.bars_total
                )
            } else {
                String::new()
            },
            self.bars_total,
            self.bars.len(),
        );
        self.role_table(&mut h);
        self.reason_table(&mut h, "Denials by reason", "denials", &self.denial_reasons);
        self.reason_table(&mut h, "Grants ended by", "endings", &self.revoke_reasons);
        self.reason_table(
            &mut h,
            "Granted jobs by identity (verified by their CI's token, AWS's own event, or only claimed)",
            "identities",
            &self.identities,
        );
        table(
            &mut h,
            "Policy file versions",
            "policy-files",
            "Each policy file that decided, by its digest and label, with its first and last decision.",
            &["Label", "SHA-256", "First decision", "Last decision", "Decisions"],
            &self.policy_files,
            self.policy_files.len() as u64,
        );
        table(
            &mut h,
            "Revoke failures",
            "revoke-failures",
            "The policy stayed attached after a failed delete, but it stops working by itself \
             at its expiry (its own aws:CurrentTime condition); the sweep retries.",
            &[
                "Recorded",
                "Role",
                "Pipeline / run / job",
                "Path",
                "Error",
                "Policy expires",
                "Grant",
            ],
            &self.failures,
            self.count(Decision::RevokeFailed),
        );
        table(
            &mut h,
            "Drift repairs",
            "drift-repairs",
            "Latch policies found on a role with no live grant, and removed by the sweep, with the \
             document each one held (the record keeps it whole).",
            &["Recorded", "Role", "Policy", "Reason", "Detail", "Deleted document"],
            &self.drift,
            self.count(Decision::DriftRepaired),
        );
        table(
            &mut h,
            "Longest grants",
            "longest",
            "Held from activation to revocation.",
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
            &self.longest,
            self.longest.len() as u64,
        );
        let _ = write!(
            h,
            "<footer>Generated by <code>latch audit</code>. Times are UTC.</footer>\n\
             <script type=\"application/json\" id=\"latch-data\">{}</script>\n\
             <script>{JS}</script></body></html>\n",
            script_json(&data)
        );
        h
    }

    fn cards(&self, h: &mut String) {
        let ended_expiry = self.reason("expired_ttl") + self.reason("expired_sweep");
        let cards = [
            ("activated", self.count(Decision::Activated), "grants activated"),
            ("revoked", self.count(Decision::Revoked), "grants revoked"),
            ("job-finished", self.reason("job_finished"), "ended by job finish"),
            ("expired", ended_expiry, "ended by expiry"),
            ("active", self.active_at_export, "active at export time"),
            ("denied", self.count(Decision::Denied), "requests denied"),
            ("revoke-failed", self.count(Decision::RevokeFailed), "revoke failures"),
            ("drift-repaired", self.count(Decision::DriftRepaired), "drift repairs"),
        ];
        h.push_str("<section class=\"cards\" id=\"summary\">");
        for (id, n, label) in cards {
            let class = match id {
                "denied" | "revoke-failed" if n > 0 => " warn",
                "drift-repaired" if n > 0 => " drift",
                _ => "",
            };
            let _ = write!(
                h,
                "<div class=\"card{class}\" id=\"count-{id}\" data-count=\"{n}\">\
                 <span class=\"n\">{n}</span><span class=\"l\">{label}</span></div>"
            );
        }
        h.push_str("</section>\n");
    }

    fn role_table(&self, h: &mut String) {
        h.push_str(
            "<section><h2>Per role</h2><table id=\"roles\"><thead><tr><th>Role</th>\
             <th>Activated</th><th>Job finished</th><th>Expired (sweep)</th><th>Expired (TTL)</th>\
             <th>Active at export</th><th>Denied</th><th>Revoke failures</th><th>Drift repairs</th>\
             <th>Time held</th><th>Longest</th></tr></thead><tbody>",
        );
        let mut order: Vec<usize> = (0..self.roles.len()).collect();
        order.sort_by(|&a, &b| self.role_names[a].cmp(&self.role_names[b]));
        for i in order {
            let s = &self.roles[i];
            let get = |k: &str| s.revoked.get(k).copied().unwrap_or(0);
            let _ = write!(
                h,
                "<tr><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&self.role_names[i]),
                esc(role_name(&self.role_names[i])),
                s.activated,
                get("job_finished"),
                get("expired_sweep"),
                get("expired_ttl"),
                s.active_at_export,
                s.denied,
                s.revoke_failed,
                s.drift_repaired,
                esc(&human_secs(s.held_secs)),
                esc(&human_secs(s.longest_secs)),
            );
        }
        h.push_str("</tbody></table></section>\n");
    }

    fn reason_table(&self, h: &mut String, title: &str, id: &str, counts: &BTreeMap<String, u64>) {
        let total: u64 = counts.values().sum();
        let mut rows: Vec<(&String, &u64)> = counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let _ = write!(
            h,
            "<section><h2>{}</h2><table id=\"{id}\" class=\"bars\"><tbody>",
            esc(title)
        );
        for (reason, n) in rows {
            let pct = if total > 0 {
                *n as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            let _ = write!(
                h,
                "<tr data-reason=\"{0}\"><td><code>{0}</code></td><td class=\"num\">{n}</td>\
                 <td class=\"meter\"><span style=\"width:{pct:.1}%\"></span></td></tr>",
                esc(reason)
            );
        }
        if total == 0 {
            h.push_str("<tr><td>none</td></tr>");
        }
        h.push_str("</tbody></table></section>\n");
    }
}

fn table(h: &mut String, title: &str, id: &str, note: &str, head: &[&str], rows: &[Row], total: u64) {
    let _ = write!(
        h,
        "<section><h2>{} ({total})</h2><p class=\"note\">{}",
        esc(title),
        esc(note)
    );
    if (rows.len() as u64) < total {
        let _ = write!(h, " Showing the {} most recent.", rows.len());
    }
    let _ = write!(h, "</p><table id=\"{id}\"><thead><tr>");
    for c in head {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr></thead><tbody>");
    for r in rows {
        h.push_str("<tr>");
        for c in &r.cells {
            let _ = write!(h, "<td>{}</td>", esc(c));
        }
        h.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(h, "<tr><td colspan=\"{}\">none</td></tr>", head.len());
    }
    h.push_str("</tbody></table></section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn grant(id: &str, decision: Decision, reason: &str, start: &str, end: &str) -> AuditRecord {
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

    #[test]
    fn given_grants_when_aggregated_then_counts_and_active_at_export_are_exact() {
        let export = t("2026-03-31T01:00:00Z").timestamp();
        let mut a = Aggregator::new(Some(export));
        a.add(&grant(
            "g1",
            Decision::Activated,
            "allowed",
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:00:00Z",
        ));
        a.add(&grant(
            "g1",
            Decision::Revoked,
            "job_finished",
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:12:00Z",
        ));
        // Live at export time: activated, not revoked.
        a.add(&grant(
            "g2",
            Decision::Activated,
            "allowed",
            "2026-03-31T00:50:00Z",
            "2026-03-31T00:50:00Z",
        ));
        // Live window too, but its revocation (read first) ends it.
        a.add(&grant(
            "g3",
            Decision::Revoked,
            "job_finished",
            "2026-03-31T00:40:00Z",
            "2026-03-31T00:45:00Z",
        ));
        a.add(&grant(
            "g3",
            Decision::Activated,
            "allowed",
            "2026-03-31T00:40:00Z",
            "2026-03-31T00:40:00Z",
        ));
        let report = a.finish();
        assert_eq!(report.active_at_export, 1);
        assert_eq!(report.bars_total, 3);
        assert_eq!(report.bars.len(), 3);
        assert!(
            report
                .bars
                .iter()
                .any(|b| b.grant == "g2" && b.ended == "active" && b.end == export)
        );
    }

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
        let html = report.html(&Source {
            export_arn: Some("arn:x</dd><script>"),
            table_arn: None,
            export_time: None,
            stats: &stats,
            matched: 2,
            filters: "",
            since: None,
            until: None,
        });
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
    fn given_more_items_than_the_cap_when_kept_then_the_smallest_keys_stay() {
        let mut k = Keep::new(3);
        for i in [5u64, 1, 9, 3, 7, 2] {
            k.offer((0, i), || i);
        }
        assert_eq!(k.into_sorted(), vec![1, 2, 3]);
    }
}
