//! Reading a DynamoDB table export (ExportTableToPointInTime, format DYNAMODB_JSON) from a
//! local copy of its S3 prefix.
//!
//! Layout, as DynamoDB writes it under `<s3-prefix>/AWSDynamoDB/<export-id>/`:
//! `manifest-summary.json` (one JSON object: `exportArn`, `exportTime`, `itemCount`,
//! `outputFormat`, ...), `manifest-files.json` (JSON lines, one per data file: `itemCount`,
//! `md5Checksum` (base64), `etag`, `dataFileS3Key`) and `data/<name>.json.gz` (gzip, one
//! `{"Item": {...}}` per line), beside `_started` and `*.checksum` files this reader ignores.
//!
//! Contract: [`Export::locate`] accepts the export folder itself, its `AWSDynamoDB` parent or
//! the prefix above that (when it holds exactly one export). [`Export::for_each_audit`]
//! streams every data file once, line by line, in memory bounded by one line (at most
//! [`MAX_LINE`] bytes), and hands each audit item (`record_type = audit`) to the caller as an
//! [`AuditRecord`]; every other item is counted by type and skipped. Each file's item count
//! and MD5 are checked against the manifest, so a truncated or altered copy is an error, not a
//! quietly shorter report.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use latch_core::audit::AuditRecord;
use md5::{Digest, Md5};
use serde::Deserialize;

use super::AuditError;
use super::ddb_json;

/// The longest data line read: a DynamoDB item is at most 400 KB, typed JSON adds a little.
pub const MAX_LINE: u64 = 4 * 1024 * 1024;

/// `manifest-summary.json`; only the fields Latch reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    #[serde(default)]
    pub export_arn: Option<String>,
    #[serde(default)]
    pub table_arn: Option<String>,
    #[serde(default)]
    pub export_time: Option<String>,
    #[serde(default)]
    pub item_count: Option<u64>,
    #[serde(default)]
    pub output_format: Option<String>,
    #[serde(default)]
    pub export_type: Option<String>,
}

/// One line of `manifest-files.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataFile {
    pub item_count: u64,
    pub md5_checksum: String,
    pub data_file_s3_key: String,
}

/// What a full read saw, for the summary line and the report.
#[derive(Debug, Clone, Default)]
pub struct ReadStats {
    pub files: usize,
    pub items: u64,
    pub audit_records: u64,
    /// Items that are not audit records, by `record_type` (`(none)` when absent).
    pub skipped: BTreeMap<String, u64>,
}

/// An export on disk, manifests read, data not yet touched.
#[derive(Debug)]
pub struct Export {
    pub dir: PathBuf,
    pub summary: Summary,
    pub files: Vec<DataFile>,
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Read {
        path: path.to_owned(),
        source,
    }
}

fn is_export_dir(dir: &Path) -> bool {
    dir.join("manifest-summary.json").is_file()
}

/// Sub-folders of `dir` that are exports, sorted.
fn exports_under(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        let path = entry.path();
        if path.is_dir() && is_export_dir(&path) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

impl Export {
    /// Finds the export under `dir` and reads both manifests.
    pub fn locate(dir: &Path) -> Result<Self, AuditError> {
        if !dir.is_dir() {
            return Err(AuditError::NotAnExport {
                dir: dir.to_owned(),
                why: "not a folder".into(),
            });
        }
        let export_dir = if is_export_dir(dir) {
            dir.to_owned()
        } else {
            let parent = if dir.join("AWSDynamoDB").is_dir() {
                dir.join("AWSDynamoDB")
            } else {
                dir.to_owned()
            };
            let mut found = exports_under(&parent)?;
            match found.len() {
                0 => {
                    return Err(AuditError::NotAnExport {
                        dir: dir.to_owned(),
                        why: "no manifest-summary.json in it, in AWSDynamoDB/*/ or in */".into(),
                    });
                }
                1 => found.remove(0),
                _ => {
                    let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                    return Err(AuditError::SeveralExports {
                        dir: dir.to_owned(),
                        found: names.join(", "),
                    });
                }
            }
        };
        Self::open(&export_dir)
    }

    fn open(dir: &Path) -> Result<Self, AuditError> {
        let summary_path = dir.join("manifest-summary.json");
        let text = std::fs::read_to_string(&summary_path).map_err(read_err(&summary_path))?;
        let summary: Summary = serde_json::from_str(&text).map_err(|e| AuditError::BadManifest {
            path: summary_path.clone(),
            line: 1,
            why: e.to_string(),
        })?;
        if let Some(format) = &summary.output_format
            && format != "DYNAMODB_JSON"
        {
            return Err(AuditError::Unsupported(format!(
                "the export's outputFormat is {format}; latch audit reads DYNAMODB_JSON"
            )));
        }
        if let Some(kind) = &summary.export_type
            && kind != "FULL_EXPORT"
        {
            return Err(AuditError::Unsupported(format!(
                "the export's exportType is {kind}; latch audit reads full exports"
            )));
        }
        let files_path = dir.join("manifest-files.json");
        let file = File::open(&files_path).map_err(read_err(&files_path))?;
        let mut files = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(read_err(&files_path))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: DataFile = serde_json::from_str(&line).map_err(|e| AuditError::BadManifest {
                path: files_path.clone(),
                line: n + 1,
                why: e.to_string(),
            })?;
            files.push(entry);
        }
        Ok(Self {
            dir: dir.to_owned(),
            summary,
            files,
        })
    }

    /// The export's point in time, when the summary gives one.
    pub fn export_time(&self) -> Option<DateTime<Utc>> {
        let t = self.summary.export_time.as_deref()?;
        DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The local path of a data file: `data/<name>` in the export folder, whatever prefix the
    /// S3 key carried. A key whose last part is not a plain file name is refused.
    pub fn data_path(&self, f: &DataFile) -> Result<PathBuf, AuditError> {
        let name = f
            .data_file_s3_key
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains('\\'))
            .ok_or_else(|| AuditError::BadManifest {
                path: self.dir.join("manifest-files.json"),
                line: 0,
                why: format!("dataFileS3Key {:?} names no file", f.data_file_s3_key),
            })?;
        Ok(self.dir.join("data").join(name))
    }

    /// Streams every data file; calls `on_audit` for each audit record, in file order.
    pub fn for_each_audit(
        &self,
        mut on_audit: impl FnMut(AuditRecord) -> Result<(), AuditError>,
    ) -> Result<ReadStats, AuditError> {
        self.for_each_audit_item(|_, record| on_audit(record))
    }

    /// As [`Self::for_each_audit`], with each item's `pk` (`AUDIT#<audit_id>` when untouched).
    pub fn for_each_audit_item(
        &self,
        mut on_audit: impl FnMut(Option<String>, AuditRecord) -> Result<(), AuditError>,
    ) -> Result<ReadStats, AuditError> {
        let mut paths = Vec::with_capacity(self.files.len());
        let mut total = 0u64;
        for f in &self.files {
            let path = self.data_path(f)?;
            total += std::fs::metadata(&path).map_err(read_err(&path))?.len();
            paths.push(path);
        }
        let bar = progress_bar(total);
        let mut stats = ReadStats::default();
        let mut line = Vec::with_capacity(64 * 1024);
        for (f, path) in self.files.iter().zip(&paths) {
            let file = File::open(path).map_err(read_err(path))?;
            let mut hashing = HashingReader {
                inner: file,
                md5: Md5::new(),
                bar: bar.clone(),
            };
            let mut lines = 0u64;
            {
                let mut reader = BufReader::with_capacity(256 * 1024, MultiGzDecoder::new(&mut hashing));
                loop {
                    line.clear();
                    let n = (&mut reader)
                        .take(MAX_LINE)
                        .read_until(b'\n', &mut line)
                        .map_err(|e| decode_err(path, e))?;
                    if n == 0 {
                        break;
                    }
                    lines += 1;
                    if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
                        return Err(AuditError::BadData {
                            path: path.clone(),
                            line: lines,
                            why: format!("line longer than {MAX_LINE} bytes"),
                        });
                    }
                    let trimmed = line.trim_ascii();
                    if trimmed.is_empty() {
                        lines -= 1;
                        continue;
                    }
                    let item = ddb_json::parse_line(trimmed).map_err(|e| AuditError::BadData {
                        path: path.clone(),
                        line: lines,
                        why: e.to_string(),
                    })?;
                    stats.items += 1;
                    match item.record_type() {
                        Some("audit") => {}
                        other => {
                            let key = other.unwrap_or("(none)");
                            match stats.skipped.get_mut(key) {
                                Some(n) => *n += 1,
                                None => {
                                    stats.skipped.insert(key.to_owned(), 1);
                                }
                            }
                            continue;
                        }
                    }
                    let pk = item.string("pk").map(str::to_owned);
                    let record: AuditRecord = item.into_record().map_err(|e| AuditError::BadData {
                        path: path.clone(),
                        line: lines,
                        why: format!("audit item does not read as an audit record: {e}"),
                    })?;
                    stats.audit_records += 1;
                    on_audit(pk, record)?;
                }
            }
            // The decoder stops at the end of the gzip stream; hash whatever trails it too.
            io::copy(&mut hashing, &mut io::sink()).map_err(read_err(path))?;
            let md5 = base64_encode(&hashing.md5.finalize());
            if md5 != f.md5_checksum {
                return Err(AuditError::Integrity {
                    path: path.clone(),
                    why: format!("MD5 is {md5}, the manifest says {}", f.md5_checksum),
                });
            }
            if lines != f.item_count {
                return Err(AuditError::Integrity {
                    path: path.clone(),
                    why: format!("{lines} items, the manifest says {}", f.item_count),
                });
            }
            stats.files += 1;
        }
        bar.finish_and_clear();
        Ok(stats)
    }
}

/// A decoder failure is damaged data (a cut or altered copy); anything else is the disk's.
fn decode_err(path: &Path, e: io::Error) -> AuditError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            AuditError::Integrity {
                path: path.to_owned(),
                why: format!("not a whole gzip stream ({e})"),
            }
        }
        _ => AuditError::Read {
            path: path.to_owned(),
            source: e,
        },
    }
}

/// Hashes and counts the compressed bytes as the decoder pulls them.
struct HashingReader<R> {
    inner: R,
    md5: Md5,
    bar: ProgressBar,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// A byte progress bar on stderr; hidden when stderr is not a terminal.
fn progress_bar(total: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("reading export {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    bar
}

/// Standard base64 with padding (the manifest's `md5Checksum`).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_known_bytes_when_base64_encoded_then_it_matches_the_rfc_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
