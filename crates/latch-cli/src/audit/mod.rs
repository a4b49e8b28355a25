//! `latch audit <DIR>`: what auditors ask of a DynamoDB table export or of the append-only
//! audit archive: who held which permissions on which role, when, for how long, why, and how
//! each grant ended.
//!
//! Contract: reads an ExportTableToPointInTime export (DYNAMODB_JSON, [`export`]) or a local
//! copy of the archive ([`archive`]) from a folder in one streaming pass, keeps the audit
//! records that match every filter
//! ([`filter`]), prints them as a table, CSV or JSON lines ([`output`]) and/or writes one
//! self-contained HTML report ([`report`]). Memory is bounded by one data line plus the
//! report's caps, whatever the export's size. Items that are not audit records are counted and
//! skipped. Exit 0 when the export was read whole (even if nothing matched); 1 with a hint on
//! any problem with the export, its integrity, or the output; 2 on bad arguments. A progress
//! bar goes to stderr when it is a terminal. `latch audit verify` ([`verify`]) checks an
//! export against the archive; `latch audit generate` ([`generate`]) writes a simulated export
//! (and archive) for tests and benchmarks.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::CliError;

pub mod archive;
mod ddb_json;
pub mod export;
pub mod filter;
pub mod generate;
pub mod ocsf;
pub mod output;
pub mod report;
pub mod verify;

use filter::{DecisionArg, Filter, FilterArgs, TimeArg};
use output::{Format, RecordWriter};

/// `latch audit` arguments.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  \
      latch audit ./export --role app-deployer --since 7d\n  \
      latch audit ./export --decision denied --format csv > denials.csv\n  \
      latch audit ./export --pipeline 'app-*' --since 2026-03-01 --until 2026-03-08 --format jsonl\n  \
      latch audit ./export --report audit.html\n  \
      latch audit ./archive --format ocsf > ocsf.jsonl\n  \
      latch audit verify ./export ./archive\n\n\
      Relative times (7d, 12h) count back from the export's own point in time (exportTime)."
)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// The export: a local copy of `s3://BUCKET/PREFIX/AWSDynamoDB/<export-id>/` (the folder
    /// holding manifest-summary.json), or a folder above it that holds exactly one export; or
    /// the archive: a local copy of `s3://ARCHIVE-BUCKET/audit/` (its `date=` folders).
    #[arg(value_name = "EXPORT_DIR", required = true)]
    pub export_dir: Option<PathBuf>,
    /// Role name or ARN, glob allowed (`app-*`, `arn:aws:iam::123456789012:role/latch/*`); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub role: Vec<String>,
    /// Pipeline name, glob allowed; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub pipeline: Vec<String>,
    /// Decisions recorded at or after this time: ISO 8601 (2026-03-01, 2026-03-01T12:00:00Z) or relative (7d, 12h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<TimeArg>,
    /// Decisions recorded before this time; same forms as --since.
    #[arg(long, value_name = "TIME")]
    pub until: Option<TimeArg>,
    /// Only these decisions; repeatable or comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub decision: Vec<DecisionArg>,
    /// Only these reason codes (job_finished, no_matching_rule, ...); repeatable or comma-separated.
    #[arg(long, value_name = "CODE", value_delimiter = ',')]
    pub reason: Vec<String>,
    /// Print the matching records to stdout [default: table, or nothing when --report is given].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Also write a self-contained HTML report (timeline, denials, failures, drift, counts).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write a simulated month of Latch decisions as a DynamoDB export (for tests and benchmarks).
    Generate(generate::GenerateArgs),
    /// Check that every audit item of an export is in the archive, and that both agree.
    Verify(verify::VerifyArgs),
}

/// Everything that can go wrong, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{dir} is not a DynamoDB export: {why}")]
    NotAnExport { dir: PathBuf, why: String },
    #[error("{dir} is not an audit archive: {why}")]
    NotAnArchive { dir: PathBuf, why: String },
    #[error("{dir} holds several exports: {found}")]
    SeveralExports { dir: PathBuf, found: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: not a DynamoDB export manifest: {why}")]
    BadManifest { path: PathBuf, line: usize, why: String },
    #[error("{path}: item {line}: {why}")]
    BadData { path: PathBuf, line: u64, why: String },
    #[error("{path} does not match the export's manifest: {why}")]
    Integrity { path: PathBuf, why: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Filter(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot generate the export: {0}")]
    Generate(String),
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}

impl AuditError {
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            Self::NotAnExport { .. } => {
                "copy the export with `aws s3 cp --recursive s3://BUCKET/PREFIX/AWSDynamoDB/EXPORT_ID/ DIR` and pass DIR"
            }
            Self::NotAnArchive { .. } => {
                "copy every object version of s3://ARCHIVE-BUCKET/audit/ into DIR/audit/ (docs/auditors.md: a plain `aws s3 cp --recursive` misses records behind delete markers) and pass DIR"
            }
            Self::SeveralExports { .. } => "pass the folder of the one export you want",
            Self::Read { .. } => "check the path and its permissions",
            Self::BadManifest { .. } => "pass the folder DynamoDB's ExportTableToPointInTime wrote, unchanged",
            Self::BadData { .. } => {
                "the data file is not DynamoDB JSON lines: export with --export-format DYNAMODB_JSON and copy the files unchanged"
            }
            Self::Integrity { .. } => {
                "the copy is incomplete or altered: copy the export again (aws s3 cp --recursive) and retry"
            }
            Self::Unsupported(_) => {
                "request a full export: aws dynamodb export-table-to-point-in-time --export-format DYNAMODB_JSON ..."
            }
            Self::Filter(_) => "see `latch audit --help` for the filter syntax",
            Self::Write { .. } => "check the output path, its permissions and free space",
            Self::Generate(_) => "see `latch audit generate --help`",
            Self::Stdout(_) => return None,
        })
    }

    fn exit_code(&self) -> u8 {
        match self {
            Self::Filter(_) => 2,
            _ => 1,
        }
    }
}

/// Runs `latch audit`; errors are printed here, with their hints, as the rest of the CLI does.
pub fn run(args: AuditArgs) -> Result<ExitCode, CliError> {
    let result = match args.command {
        Some(AuditCommand::Generate(g)) => generate::run(&g).map(|truth| {
            eprintln!(
                "latch audit generate: wrote {} items ({} audit records) in {} data files under {}",
                truth.items,
                truth.by_record_type.get("audit").copied().unwrap_or(0),
                truth.data_files,
                g.out.join(&truth.export_dir).display()
            );
            ExitCode::SUCCESS
        }),
        Some(AuditCommand::Verify(v)) => verify::run(&v),
        None => read(&args),
    };
    match result {
        Ok(code) => Ok(code),
        Err(AuditError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

fn describe_filters(args: &AuditArgs) -> String {
    let mut parts = Vec::new();
    for r in &args.role {
        parts.push(format!("role {r}"));
    }
    for p in &args.pipeline {
        parts.push(format!("pipeline {p}"));
    }
    if let Some(s) = args.since {
        parts.push(format!("since {s}"));
    }
    if let Some(u) = args.until {
        parts.push(format!("until {u}"));
    }
    if !args.decision.is_empty() {
        let d: Vec<&str> = args
            .decision
            .iter()
            .map(|&d| latch_core::audit::Decision::from(d).code())
            .collect();
        parts.push(format!("decision {}", d.join("|")));
    }
    if !args.reason.is_empty() {
        parts.push(format!("reason {}", args.reason.join("|")));
    }
    parts.join(", ")
}

fn read(args: &AuditArgs) -> Result<ExitCode, AuditError> {
    let Some(dir) = &args.export_dir else {
        return Err(AuditError::Filter("EXPORT_DIR is required".into()));
    };
    // An archive copy has no manifest; anything else is read as an export (and its errors say why).
    let (export, archive) = if archive::looks_like_archive(dir) && !dir.join("manifest-summary.json").is_file() {
        (None, Some(archive::Archive::locate(dir)?))
    } else {
        (Some(export::Export::locate(dir)?), None)
    };
    let export_time = export.as_ref().and_then(export::Export::export_time);
    let anchor = export_time.unwrap_or_else(chrono::Utc::now);
    let filter_args = FilterArgs {
        roles: args.role.clone(),
        pipelines: args.pipeline.clone(),
        since: args.since,
        until: args.until,
        decisions: args.decision.clone(),
        reasons: args.reason.clone(),
    };
    let filter = Filter::new(&filter_args, anchor).map_err(AuditError::Filter)?;
    let format = match (args.format, &args.report) {
        (Some(f), _) => Some(f),
        (None, None) => Some(Format::Table),
        (None, Some(_)) => None,
    };
    let stdout = io::stdout();
    let mut writer = format.map(|f| RecordWriter::new(BufWriter::with_capacity(256 * 1024, stdout.lock()), f));
    let mut agg = args
        .report
        .as_ref()
        .map(|_| report::Aggregator::new(export_time.map(|t| t.timestamp())));
    let mut matched = 0u64;
    let mut on_record = |record: latch_core::audit::AuditRecord| {
        if !filter.matches(&record) {
            return Ok(());
        }
        matched += 1;
        if let Some(w) = writer.as_mut() {
            w.write(&record).map_err(AuditError::Stdout)?;
        }
        if let Some(a) = agg.as_mut() {
            a.add(&record);
        }
        Ok(())
    };
    let stats = match (&export, &archive) {
        (Some(export), _) => export.for_each_audit(on_record)?,
        (None, Some(archive)) => {
            let read = archive.for_each_line(|item| on_record(item.record))?;
            export::ReadStats {
                files: read.objects,
                items: read.lines,
                audit_records: read.lines,
                skipped: Default::default(),
            }
        }
        (None, None) => return Err(AuditError::Filter("nothing to read".into())),
    };
    if let Some(w) = writer {
        w.finish().map_err(AuditError::Stdout)?;
    }
    let summary = export.as_ref().map(|e| e.summary.clone()).unwrap_or_default();
    if let Some(expected) = summary.item_count
        && expected != stats.items
    {
        return Err(AuditError::Integrity {
            path: export
                .as_ref()
                .map_or_else(|| dir.clone(), |e| e.dir.clone())
                .join("manifest-summary.json"),
            why: format!("{} items read, itemCount is {expected}", stats.items),
        });
    }
    let skipped: Vec<String> = stats.skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
    eprintln!(
        "latch audit: read {} items in {} data files: {} audit records, {} matched{}",
        stats.items,
        stats.files,
        stats.audit_records,
        matched,
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped: {})", skipped.join(", "))
        }
    );
    if let (Some(path), Some(agg)) = (&args.report, agg) {
        let rep = agg.finish();
        let filters = describe_filters(args);
        let html = report::render(
            &rep,
            &report::Source {
                export_arn: summary.export_arn.as_deref(),
                table_arn: summary.table_arn.as_deref(),
                export_time: summary.export_time.as_deref(),
                stats: &stats,
                matched,
                filters: &filters,
                since: filter.since,
                until: filter.until,
            },
        )
        .map_err(|e| AuditError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let mut f = std::fs::File::create(path).map_err(|source| AuditError::Write {
            path: path.clone(),
            source,
        })?;
        f.write_all(html.as_bytes())
            .and_then(|()| f.flush())
            .map_err(|source| AuditError::Write {
                path: path.clone(),
                source,
            })?;
        eprintln!(
            "latch audit: report written to {} ({} grants on the timeline, {} in all)",
            path.display(),
            rep.bars.len(),
            rep.bars_total
        );
    }
    Ok(ExitCode::SUCCESS)
}
