//! `latch audit verify EXPORT ARCHIVE`: does the table's export agree with the append-only
//! archive, record for record?
//!
//! Contract: reads the archive once (an index of 16-byte id → 32-byte content digest,
//! recorded time), then streams the export once, so memory grows with the archive's record
//! count (about 400 bytes a record in all: id, digest, time, a one-line summary and the
//! map's overhead), never with line sizes. Reports, one line each:
//! - `missing`: an audit item of the export that the archive lacks (it never got there, or a
//!   copy of the archive is incomplete);
//! - `deleted`: an archived record decided before the export's point in time (less `--lag`) that
//!   the export lacks: removed from the table;
//! - `altered`: one id, different contents in the export and the archive (or between two
//!   archived copies);
//! - `forged`: a record inconsistent with itself, so not written by Latch: its `audit_id` is not
//!   32 hex digits, its key is not `AUDIT#<audit_id>`, or (activations and revocations, whose id
//!   is a digest of their grant) its id is not the one its own fields determine.
//!
//! Duplicates (the archive is at least once) and records decided after the export are counted,
//! not reported. Exit 0 when nothing is reported, 1 when something is.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use latch_core::audit::AuditRecord;
use sha2::{Digest, Sha256};

use super::AuditError;
use super::archive::Archive;
use super::export::Export;

/// `latch audit verify` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The table export (as for `latch audit EXPORT_DIR`).
    #[arg(value_name = "EXPORT_DIR")]
    pub export: PathBuf,
    /// A local copy of the archive, every object version (docs/auditors.md): a plain
    /// `aws s3 cp --recursive` misses records behind delete markers and overwritten ones.
    #[arg(value_name = "ARCHIVE_DIR")]
    pub archive: PathBuf,
    /// Records decided this close before the export's point in time may not be in it yet (the
    /// function's clock runs ahead of its write).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub lag: std::time::Duration,
}

/// What `verify` found, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub export_records: u64,
    pub archive_lines: u64,
    pub archive_records: u64,
    pub duplicates: u64,
    pub after_export: u64,
    pub missing: u64,
    pub deleted: u64,
    pub altered: u64,
    pub forged: u64,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.missing + self.deleted + self.altered + self.forged == 0
    }
}

struct Archived {
    digest: [u8; 32],
    recorded_at_epoch: i64,
    in_export: bool,
    summary: Box<str>,
}

fn content_digest(r: &AuditRecord) -> [u8; 32] {
    // The record's own serialisation: field order is the type's, claims are a sorted map.
    let bytes = serde_json::to_vec(r).unwrap_or_default();
    Sha256::digest(&bytes).into()
}

fn id_key(id: &str) -> Option<u128> {
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| u128::from_str_radix(id, 16).ok())
        .flatten()
}

fn summary(r: &AuditRecord) -> String {
    format!(
        "{} {} {} {}",
        r.decision.code(),
        r.reason,
        r.recorded_at,
        r.role_arn.as_deref().unwrap_or("-")
    )
}

/// Why a record cannot be Latch's, if it cannot.
fn inconsistency(pk: Option<&str>, r: &AuditRecord) -> Option<String> {
    id_key(&r.audit_id)?;
    if pk != Some(latch_aws::items::audit_pk(&r.audit_id).as_str()) {
        return Some(format!("its key {:?} is not AUDIT#<audit_id>", pk.unwrap_or("(none)")));
    }
    match r.derived_audit_id() {
        Some(derived) if derived != r.audit_id => {
            Some(format!("its id is not the one its grant determines ({derived})"))
        }
        _ => None,
    }
}

fn malformed_id(r: &AuditRecord) -> Option<String> {
    id_key(&r.audit_id)
        .is_none()
        .then(|| format!("its audit_id {:?} is not 32 lowercase hex digits", r.audit_id))
}

/// One finding: kind, id, what the record is, why it is reported; tab-separated.
fn report(out: &mut dyn Write, kind: &str, id: &str, what: &str, why: &str) -> Result<(), AuditError> {
    writeln!(out, "{kind}\t{id}\t{what}\t{why}").map_err(AuditError::Stdout)
}

/// Runs the comparison, writing one line per finding to `out`.
pub fn verify(args: &VerifyArgs, out: &mut impl Write) -> Result<Verdict, AuditError> {
    let export = Export::locate(&args.export)?;
    let archive = Archive::locate(&args.archive)?;
    let export_time = export.export_time().unwrap_or_else(Utc::now).timestamp();
    let lag = i64::try_from(args.lag.as_secs()).unwrap_or(i64::MAX);
    let mut v = Verdict::default();

    let mut index: HashMap<u128, Archived> = HashMap::new();
    let stats = archive.for_each_line(|item| {
        let r = &item.record;
        if let Some(why) = malformed_id(r).or_else(|| inconsistency(item.pk.as_deref(), r)) {
            v.forged += 1;
            return report(
                out,
                "forged",
                &r.audit_id,
                &summary(r),
                &format!("in the archive ({}): {why}", item.partition),
            );
        }
        let Some(key) = id_key(&r.audit_id) else {
            return Ok(());
        };
        let digest = content_digest(r);
        match index.get_mut(&key) {
            Some(seen) => {
                v.duplicates += 1;
                if seen.digest != digest {
                    v.altered += 1;
                    report(
                        &mut *out,
                        "altered",
                        &r.audit_id,
                        &summary(r),
                        "two archived copies differ",
                    )?;
                }
            }
            None => {
                index.insert(
                    key,
                    Archived {
                        digest,
                        recorded_at_epoch: r.recorded_at_epoch,
                        in_export: false,
                        summary: summary(r).into_boxed_str(),
                    },
                );
            }
        }
        Ok(())
    })?;
    v.archive_lines = stats.lines;
    v.archive_records = index.len() as u64;

    export.for_each_audit_item(|pk, r| {
        v.export_records += 1;
        if let Some(why) = malformed_id(&r).or_else(|| inconsistency(pk.as_deref(), &r)) {
            v.forged += 1;
            return report(
                out,
                "forged",
                &r.audit_id,
                &summary(&r),
                &format!("in the export: {why}"),
            );
        }
        let Some(key) = id_key(&r.audit_id) else {
            return Ok(());
        };
        match index.get_mut(&key) {
            None => {
                v.missing += 1;
                report(
                    out,
                    "missing",
                    &r.audit_id,
                    &summary(&r),
                    "in the export, not in the archive",
                )
            }
            Some(archived) => {
                archived.in_export = true;
                if archived.digest != content_digest(&r) {
                    v.altered += 1;
                    report(
                        out,
                        "altered",
                        &r.audit_id,
                        &summary(&r),
                        "the export's copy differs from the archive's",
                    )
                } else {
                    Ok(())
                }
            }
        }
    })?;

    let mut deleted: Vec<(i64, String, Box<str>)> = Vec::new();
    for (key, a) in &index {
        if a.in_export {
            continue;
        }
        if a.recorded_at_epoch < export_time.saturating_sub(lag) {
            deleted.push((a.recorded_at_epoch, format!("{key:032x}"), a.summary.clone()));
        } else {
            v.after_export += 1;
        }
    }
    deleted.sort();
    for (_, id, what) in deleted {
        v.deleted += 1;
        report(
            out,
            "deleted",
            &id,
            &what,
            "archived before the export's time, not in the export",
        )?;
    }
    Ok(v)
}

/// `latch audit verify`: the findings on stdout, the tally on stderr.
pub fn run(args: &VerifyArgs) -> Result<ExitCode, AuditError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let v = verify(args, &mut out)?;
    out.flush().map_err(AuditError::Stdout)?;
    eprintln!(
        "latch audit verify: export {} audit records; archive {} lines, {} records ({} duplicate lines, {} decided after the export); {} missing from the archive, {} deleted from the table, {} altered, {} forged",
        v.export_records,
        v.archive_lines,
        v.archive_records,
        v.duplicates,
        v.after_export,
        v.missing,
        v.deleted,
        v.altered,
        v.forged
    );
    Ok(if v.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
