//! Reading a local copy of the audit archive: every object version under `s3://BUCKET/audit/`
//! (docs/auditors.md shows how; a plain `aws s3 cp --recursive` copies current versions only).
//!
//! Layout, as the template's Firehose stream writes it (`latch_core::archive`):
//! `audit/date=YYYY-MM-DD/<object>`, each object JSON lines, each line one audit item as the
//! table's stream carried it, `{"Item": {<typed attributes>}}` (the line format of a table
//! export), gzip-compressed when its name ends in `.gz`.
//!
//! Contract: [`Archive::locate`] accepts the `audit/` folder, the folder above it, or one
//! `date=` folder. [`Archive::for_each_line`] streams every object once, in name order, line by
//! line, in memory bounded by one line (at most [`MAX_LINE`] bytes), and hands each to the
//! caller with the audit item's own key; a line that is not an audit item, or an object outside
//! a `date=` folder, is an error (the archive holds nothing else). There is no manifest: what a
//! copy lacks is found by `latch audit verify` against an export, not here.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use latch_core::archive::PARTITION_KEY;
use latch_core::audit::AuditRecord;

use super::AuditError;
use super::ddb_json;
use super::export::MAX_LINE;

/// One archived line, read.
#[derive(Debug)]
pub struct ArchivedItem {
    /// The item's `pk`, which must be `AUDIT#<audit_id>`.
    pub pk: Option<String>,
    /// The `date=` partition the line was found in.
    pub partition: String,
    pub record: AuditRecord,
}

/// What a full read saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchiveStats {
    pub objects: usize,
    pub lines: u64,
}

/// A local archive copy: its objects, found, not yet read.
#[derive(Debug)]
pub struct Archive {
    /// (partition, object path), sorted.
    pub objects: Vec<(String, PathBuf)>,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Read {
        path: path.to_owned(),
        source,
    }
}

fn partition_of(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    name.strip_prefix(PARTITION_KEY)?.strip_prefix('=').map(str::to_owned)
}

/// Whether `dir` looks like an archive copy (so `latch audit DIR` knows which reader to use).
pub fn looks_like_archive(dir: &Path) -> bool {
    partition_of(dir).is_some() || partition_dirs(&archive_root(dir)).is_ok_and(|d| !d.is_empty())
}

fn archive_root(dir: &Path) -> PathBuf {
    if dir.join("audit").is_dir() {
        dir.join("audit")
    } else {
        dir.to_owned()
    }
}

fn partition_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>, AuditError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).map_err(read_err(root))? {
        let path = entry.map_err(read_err(root))?.path();
        if let Some(p) = partition_of(&path).filter(|_| path.is_dir()) {
            found.push((p, path));
        }
    }
    found.sort();
    Ok(found)
}

impl Archive {
    /// Finds the archive's objects under `dir`.
    pub fn locate(dir: &Path) -> Result<Self, AuditError> {
        let not_archive = |why: &str| AuditError::NotAnArchive {
            dir: dir.to_owned(),
            why: why.to_owned(),
        };
        if !dir.is_dir() {
            return Err(not_archive("not a folder"));
        }
        let partitions = match partition_of(dir) {
            Some(p) => vec![(p, dir.to_owned())],
            None => partition_dirs(&archive_root(dir))?,
        };
        if partitions.is_empty() {
            return Err(not_archive("no date=YYYY-MM-DD folder in it or in audit/"));
        }
        let mut objects = Vec::new();
        for (partition, pdir) in partitions {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&pdir).map_err(read_err(&pdir))? {
                let path = entry.map_err(read_err(&pdir))?.path();
                let hidden = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_none_or(|n| n.starts_with('.'));
                if path.is_file() && !hidden {
                    names.push(path);
                } else if path.is_dir() {
                    return Err(not_archive(&format!(
                        "{} is a folder inside a partition",
                        path.display()
                    )));
                }
            }
            names.sort();
            objects.extend(names.into_iter().map(|p| (partition.clone(), p)));
        }
        Ok(Self { objects })
    }

    /// Streams every line of every object.
    pub fn for_each_line(
        &self,
        mut on_item: impl FnMut(ArchivedItem) -> Result<(), AuditError>,
    ) -> Result<ArchiveStats, AuditError> {
        let mut stats = ArchiveStats::default();
        let mut line = Vec::with_capacity(64 * 1024);
        for (partition, path) in &self.objects {
            let file = File::open(path).map_err(read_err(path))?;
            let inner: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
                Box::new(MultiGzDecoder::new(file))
            } else {
                Box::new(file)
            };
            let mut reader = BufReader::with_capacity(256 * 1024, inner);
            let mut n_line = 0u64;
            loop {
                line.clear();
                let n = (&mut reader)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut line)
                    .map_err(read_err(path))?;
                if n == 0 {
                    break;
                }
                n_line += 1;
                let bad = |why: String| AuditError::BadData {
                    path: path.clone(),
                    line: n_line,
                    why,
                };
                if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
                    return Err(bad(format!("line longer than {MAX_LINE} bytes")));
                }
                let trimmed = line.trim_ascii();
                if trimmed.is_empty() {
                    continue;
                }
                let item = ddb_json::parse_line(trimmed).map_err(|e| bad(e.to_string()))?;
                if item.record_type() != Some("audit") {
                    return Err(bad("not an audit item: the archive holds audit items only".into()));
                }
                let pk = item.string("pk").map(str::to_owned);
                let record: AuditRecord = item
                    .into_record()
                    .map_err(|e| bad(format!("audit item does not read as an audit record: {e}")))?;
                stats.lines += 1;
                on_item(ArchivedItem {
                    pk,
                    partition: partition.clone(),
                    record,
                })?;
            }
            stats.objects += 1;
        }
        Ok(stats)
    }
}
