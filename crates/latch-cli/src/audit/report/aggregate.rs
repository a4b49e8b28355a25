//! Aggregation: matched audit records folded into a [`Report`], the model the page renders.
//!
//! Contract: [`Aggregator::add`] folds in one record at a time and keeps memory bounded by the
//! report's caps, never by the export's size: counts are exact over every record; the timeline
//! keeps a deterministic sample of at most [`MAX_BARS`] grants (the grants whose id hashes
//! lowest, so the same export always draws the same bars), and the failure, drift and
//! longest-grant tables keep the most relevant [`MAX_ROWS`]. Grants still active at the
//! export's point in time are found with a join bounded by the grants alive then (activations
//! whose expiry is after the export time, minus their revocations). Nothing here knows HTML.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use latch_core::audit::{AuditRecord, Decision};
use serde::Serialize;

use crate::audit::output::human_secs;

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

/// A row of the revoke-failure, drift, longest-grant or policy-file table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cells: Vec<String>,
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

pub fn role_name(arn: &str) -> &str {
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

/// Everything the page shows: exact counts, the sampled timeline, the capped tables.
pub struct Report {
    pub export_epoch: Option<i64>,
    role_names: Vec<String>,
    roles: Vec<RoleStats>,
    decisions: BTreeMap<&'static str, u64>,
    revoke_reasons: BTreeMap<String, u64>,
    denial_reasons: BTreeMap<String, u64>,
    pub active_at_export: u64,
    pub bars_total: u64,
    pub bars: Vec<Bar>,
    pub markers: Vec<Marker>,
    pub failures: Vec<Row>,
    pub drift: Vec<Row>,
    pub longest: Vec<Row>,
    identities: BTreeMap<String, u64>,
    pub policy_files: Vec<Row>,
    first: Option<i64>,
    last: Option<i64>,
}

/// One summary card: how many records of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub id: &'static str,
    pub count: u64,
    pub label: &'static str,
    /// Draws the eye when something went wrong: `warn`, `drift`, or none.
    pub tone: Option<&'static str>,
}

/// One role's line of the per-role table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRow {
    /// As the records name it (an ARN, or a placeholder lane).
    pub role: String,
    pub activated: u64,
    pub job_finished: u64,
    pub expired_sweep: u64,
    pub expired_ttl: u64,
    pub active_at_export: u64,
    pub denied: u64,
    pub revoke_failed: u64,
    pub drift_repaired: u64,
    pub held_secs: i64,
    pub longest_secs: i64,
}

/// One reason code and its share of its table, most frequent first.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub code: String,
    pub count: u64,
    pub percent: f64,
}

/// Counts as shares of their total, most frequent first, ties by code.
fn shares(counts: &BTreeMap<String, u64>) -> Vec<Share> {
    let total: u64 = counts.values().sum();
    let mut rows: Vec<Share> = counts
        .iter()
        .map(|(code, &count)| Share {
            code: code.clone(),
            count,
            percent: if total > 0 {
                count as f64 * 100.0 / total as f64
            } else {
                0.0
            },
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
    rows
}

impl Report {
    pub fn count(&self, decision: Decision) -> u64 {
        self.decisions.get(decision.code()).copied().unwrap_or(0)
    }

    fn reason(&self, code: &str) -> u64 {
        self.revoke_reasons.get(code).copied().unwrap_or(0)
    }

    /// The roles' names, by lane index (bars and markers point into it).
    pub fn role_names(&self) -> &[String] {
        &self.role_names
    }

    /// The period the page shows: `since`..`until` when given, otherwise whole days from the
    /// first record to the last record or the export's time, whichever is later.
    pub fn range(&self, since: Option<i64>, until: Option<i64>) -> [i64; 2] {
        let first = since.or(self.first.map(|f| f - f.rem_euclid(86_400)));
        let last = until.or(match (self.last, self.export_epoch) {
            (Some(l), Some(e)) => Some(l.max(e)),
            (l, e) => l.or(e),
        });
        match (first, last) {
            (Some(a), Some(b)) if b > a => [a, b],
            (Some(a), _) => [a, a + 86_400],
            _ => [0, 86_400],
        }
    }

    /// The summary cards, in the page's order.
    pub fn cards(&self) -> Vec<Card> {
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
        cards
            .into_iter()
            .map(|(id, count, label)| Card {
                id,
                count,
                label,
                tone: match id {
                    "denied" | "revoke-failed" if count > 0 => Some("warn"),
                    "drift-repaired" if count > 0 => Some("drift"),
                    _ => None,
                },
            })
            .collect()
    }

    /// One row per role, by name.
    pub fn role_rows(&self) -> Vec<RoleRow> {
        let mut rows: Vec<RoleRow> = self
            .role_names
            .iter()
            .zip(&self.roles)
            .map(|(role, s)| {
                let ended = |k: &str| s.revoked.get(k).copied().unwrap_or(0);
                RoleRow {
                    role: role.clone(),
                    activated: s.activated,
                    job_finished: ended("job_finished"),
                    expired_sweep: ended("expired_sweep"),
                    expired_ttl: ended("expired_ttl"),
                    active_at_export: s.active_at_export,
                    denied: s.denied,
                    revoke_failed: s.revoke_failed,
                    drift_repaired: s.drift_repaired,
                    held_secs: s.held_secs,
                    longest_secs: s.longest_secs,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.role.cmp(&b.role));
        rows
    }

    /// Denials by reason code.
    pub fn denials(&self) -> Vec<Share> {
        shares(&self.denial_reasons)
    }

    /// Revocations by how the grant ended.
    pub fn endings(&self) -> Vec<Share> {
        shares(&self.revoke_reasons)
    }

    /// Activations by whose word the job's identity is.
    pub fn identities(&self) -> Vec<Share> {
        shares(&self.identities)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{grant, t};
    use super::*;

    fn aggregate(records: &[AuditRecord], export_epoch: Option<i64>) -> Report {
        let mut aggregator = Aggregator::new(export_epoch);
        for record in records {
            aggregator.add(record);
        }
        aggregator.finish()
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
    fn given_more_items_than_the_cap_when_kept_then_the_smallest_keys_stay() {
        let mut k = Keep::new(3);
        for i in [5u64, 1, 9, 3, 7, 2] {
            k.offer((0, i), || i);
        }
        assert_eq!(k.into_sorted(), vec![1, 2, 3]);
    }

    #[test]
    fn given_records_of_every_kind_when_aggregated_then_cards_roles_and_shares_follow_the_counts() {
        let mut denied = grant(
            "g9",
            Decision::Denied,
            "no_matching_rule",
            "2026-03-02T11:00:00Z",
            "2026-03-02T11:00:00Z",
        );
        denied.grant_id = None;
        let mut failed = grant(
            "g8",
            Decision::RevokeFailed,
            "job_finished",
            "2026-03-02T11:00:00Z",
            "2026-03-02T11:05:00Z",
        );
        failed.role_arn = Some("arn:aws:iam::123456789012:role/latch/a-first".into());
        let records = [
            grant(
                "g1",
                Decision::Activated,
                "allowed",
                "2026-03-02T10:00:00Z",
                "2026-03-02T10:00:00Z",
            ),
            grant(
                "g1",
                Decision::Revoked,
                "job_finished",
                "2026-03-02T10:00:00Z",
                "2026-03-02T10:12:00Z",
            ),
            grant(
                "g2",
                Decision::Revoked,
                "expired_sweep",
                "2026-03-02T10:00:00Z",
                "2026-03-02T10:30:00Z",
            ),
            grant(
                "g3",
                Decision::Revoked,
                "job_finished",
                "2026-03-02T10:00:00Z",
                "2026-03-02T10:01:00Z",
            ),
            denied,
            failed,
        ];
        let report = aggregate(&records, None);

        let cards: Vec<(&str, u64, Option<&str>)> = report.cards().iter().map(|c| (c.id, c.count, c.tone)).collect();
        assert_eq!(
            cards,
            vec![
                ("activated", 1, None),
                ("revoked", 3, None),
                ("job-finished", 2, None),
                ("expired", 1, None),
                ("active", 0, None),
                ("denied", 1, Some("warn")),
                ("revoke-failed", 1, Some("warn")),
                ("drift-repaired", 0, None),
            ]
        );
        let roles = report.role_rows();
        assert_eq!(roles.len(), 2);
        assert_eq!(
            roles[0].role, "arn:aws:iam::123456789012:role/latch/a-first",
            "sorted by name"
        );
        assert_eq!(roles[0].revoke_failed, 1);
        let deployer = &roles[1];
        assert_eq!(
            (deployer.activated, deployer.job_finished, deployer.expired_sweep),
            (1, 2, 1)
        );
        assert_eq!(
            (deployer.held_secs, deployer.longest_secs),
            (12 * 60 + 30 * 60 + 60, 30 * 60)
        );
        let endings: Vec<(String, u64)> = report.endings().into_iter().map(|s| (s.code, s.count)).collect();
        assert_eq!(
            endings,
            vec![("job_finished".into(), 2), ("expired_sweep".into(), 1)],
            "most frequent first"
        );
        assert!((report.endings()[0].percent - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.denials()[0].code, "no_matching_rule");
        assert_eq!(
            report.range(None, None),
            [
                t("2026-03-02T00:00:00Z").timestamp(),
                t("2026-03-02T11:05:00Z").timestamp()
            ]
        );
        assert_eq!(report.range(Some(5), Some(9)), [5, 9]);
    }
}
