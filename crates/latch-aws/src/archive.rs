//! The audit archive's local stand-in (feature `local`): what the template's EventBridge Pipe
//! and Firehose stream do in AWS, done against the emulator, which has neither.
//!
//! Contract: [`ArchiveFeed::pump`] reads the table's stream (every record not seen before, as
//! Lambda and Pipes shape them), keeps and reshapes records with `latch_core::archive`'s filter
//! pattern, input template and partition query (the very strings the template carries), and
//! writes each partition's lines as one new object `audit/date=<date>/<name>` in the bucket,
//! JSON lines, never overwriting an object, each upload with its Content-MD5 (S3 refuses an
//! upload into a bucket with a default retention without Content-MD5 or an `x-amz-checksum-*`).
//!
//! Delivery is at least once, as Firehose's: a partition whose upload failed stays buffered and
//! is uploaded again by the next pump, under a new object name (Firehose names every attempt
//! anew); when the failed attempt had in fact landed (a lost answer), the archive holds the
//! batch twice, and readers count duplicates. Nothing read from the stream is dropped: the
//! stream is read once, the buffer is kept until S3 has answered.
//!
//! [`copy_versions`] is how an auditor copies the archive: every *version* of every object
//! (`ListObjectVersions`), so a delete marker or an overwrite hides nothing from
//! `latch audit verify`. The stand-in is not Latch's code path in AWS, so it is only ever built
//! for tests and `latch dev`.

use std::collections::BTreeMap;
use std::path::Path;

use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
};
use latch_core::archive::{ARCHIVE_ROOT, ArchiveFormatError, archive_line, object_prefix};

use crate::stream::{StreamError, StreamReader};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("shaping a stream record for the archive: {0}")]
    Format(#[from] ArchiveFormatError),
    #[error("the archive bucket: {0}")]
    Bucket(String),
    #[error("writing the archive copy {path}: {source}")]
    Copy {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The archive bucket's Object Lock retention mode (the template's `ArchiveRetentionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    fn as_s3(self) -> ObjectLockRetentionMode {
        match self {
            Self::Governance => ObjectLockRetentionMode::Governance,
            Self::Compliance => ObjectLockRetentionMode::Compliance,
        }
    }
}

/// What one pump did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pumped {
    pub records_read: usize,
    pub lines_written: usize,
    pub objects_written: usize,
    /// Upload attempts that failed; their partitions wait for the next pump.
    pub uploads_failed: usize,
}

/// Follows the table's stream into the archive bucket.
pub struct ArchiveFeed {
    reader: StreamReader,
    s3: aws_sdk_s3::Client,
    bucket: String,
    objects: u64,
    /// Partition → lines read from the stream and not yet known to be in the bucket.
    pending: BTreeMap<String, Vec<u8>>,
}

/// An S3 client for the emulator: path-style addressing, as moto serves buckets on one host.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates the archive bucket as the template does by default: Object Lock on, GOVERNANCE
/// default retention.
pub async fn create_bucket(sdk: &SdkConfig, bucket: &str, retention_days: i32) -> Result<(), ArchiveError> {
    create_locked_bucket(sdk, bucket, LockMode::Governance, retention_days).await
}

/// Creates the archive bucket with the template's `ArchiveRetentionMode` and
/// `ArchiveRetentionDays`.
pub async fn create_locked_bucket(
    sdk: &SdkConfig,
    bucket: &str,
    mode: LockMode,
    retention_days: i32,
) -> Result<(), ArchiveError> {
    let s3 = s3_client(sdk);
    let err = |e: &dyn std::fmt::Debug| ArchiveError::Bucket(format!("{bucket}: {e:?}"));
    match s3
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_bucket_already_owned_by_you()) => {}
        Err(e) => return Err(err(&e)),
    }
    let rule = ObjectLockRule::builder()
        .default_retention(
            DefaultRetention::builder()
                .mode(mode.as_s3())
                .days(retention_days)
                .build(),
        )
        .build();
    s3.put_object_lock_configuration()
        .bucket(bucket)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(rule)
                .build(),
        )
        .send()
        .await
        .map_err(|e| err(&e))?;
    Ok(())
}

impl ArchiveFeed {
    /// Follows `table`'s stream from its start (the Pipe's TRIM_HORIZON) into `bucket`.
    pub async fn open(sdk: &SdkConfig, table: &str, bucket: &str) -> Result<Self, ArchiveError> {
        Ok(Self {
            reader: StreamReader::open(sdk, table).await?,
            s3: s3_client(sdk),
            bucket: bucket.to_owned(),
            objects: 0,
            pending: BTreeMap::new(),
        })
    }

    /// Archives every stream record not archived before, and retries the uploads an earlier
    /// pump failed. Err when an upload failed (its lines stay buffered for the next pump).
    pub async fn pump(&mut self) -> Result<Pumped, ArchiveError> {
        let records = self.reader.poll(|_| false).await?;
        let mut pumped = Pumped {
            records_read: records.len(),
            ..Pumped::default()
        };
        for record in &records {
            let as_json = serde_json::to_value(record).map_err(|e| ArchiveFormatError::Template(e.to_string()))?;
            if let Some((line, partition)) = archive_line(&as_json)? {
                let out = self.pending.entry(partition).or_default();
                out.extend_from_slice(line.to_string().as_bytes());
                // Firehose's AppendDelimiterToRecord: one record a line.
                out.push(b'\n');
                pumped.lines_written += 1;
            }
        }
        let stamp = chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S");
        let mut first_failure = None;
        for (partition, body) in std::mem::take(&mut self.pending) {
            self.objects += 1;
            // Firehose's own naming: <stream>-<version>-<time>-<unique>.
            let key = format!(
                "{}latch-archive-1-{stamp}-{:08x}{:08x}",
                object_prefix(&partition),
                self.objects,
                fastrand::u32(..)
            );
            let sent = self
                .s3
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                // Computed here, not left to the SDK: an Object Lock bucket refuses an upload
                // without an integrity check, and the SDK computes a checksum only when its
                // configuration asks for one (`request_checksum_calculation`), even when an
                // algorithm is named.
                .content_md5(content_md5(&body))
                .body(ByteStream::from(body.clone()))
                .send()
                .await;
            match sent {
                Ok(_) => pumped.objects_written += 1,
                Err(e) => {
                    pumped.uploads_failed += 1;
                    first_failure.get_or_insert_with(|| ArchiveError::Bucket(format!("{key}: {e:?}")));
                    self.pending.insert(partition, body);
                }
            }
        }
        match first_failure {
            Some(e) => Err(e),
            None => Ok(pumped),
        }
    }

    /// Partitions whose lines were read from the stream and are not yet known to be in the
    /// bucket (their upload failed; the next pump retries them).
    pub fn pending_partitions(&self) -> usize {
        self.pending.len()
    }
}

/// `Content-MD5`: the body's MD5, base64 (RFC 1864).
fn content_md5(body: &[u8]) -> String {
    use md5::Digest;
    aws_smithy_types::base64::encode(md5::Md5::digest(body))
}

/// What [`copy_versions`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Object versions written to the copy (delete markers are not objects).
    pub versions: usize,
    /// Keys whose current version is a delete marker: hidden from a plain listing.
    pub behind_delete_markers: usize,
}

/// Copies every version of every object under the archive root of `bucket` into `dir`, as
/// `dir/audit/date=<date>/v<n>-<object name>` (`n` counts a key's versions, oldest first; no
/// two versions of a key share a file, and the name keeps its extension), so that `latch audit verify EXPORT dir` reads all of
/// them: a record behind a delete marker, or overwritten, is still counted.
pub async fn copy_versions(sdk: &SdkConfig, bucket: &str, dir: &Path) -> Result<Copied, ArchiveError> {
    let s3 = s3_client(sdk);
    // (key, version id) in listing order: S3 lists a key's versions newest first.
    let mut versions: Vec<(String, String)> = Vec::new();
    let mut copied = Copied::default();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        // ListObjectVersions has no SDK paginator: its markers are a key and a version id.
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(ARCHIVE_ROOT)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| ArchiveError::Bucket(format!("{e:?}")))?;
        copied.behind_delete_markers += page
            .delete_markers()
            .iter()
            .filter(|m| m.is_latest() == Some(true))
            .count();
        for v in page.versions() {
            if let (Some(key), Some(id)) = (v.key(), v.version_id()) {
                versions.push((key.to_owned(), id.to_owned()));
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _) in &versions {
        *per_key.entry(key.as_str()).or_default() += 1;
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, version_id) in &versions {
        let nth_newest = seen.entry(key.as_str()).or_default();
        *nth_newest += 1;
        // Oldest is v1.
        let n = per_key.get(key.as_str()).copied().unwrap_or(0) + 1 - *nth_newest;
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .version_id(version_id)
            .send()
            .await
            .map_err(|e| ArchiveError::Bucket(format!("{key} version {version_id}: {e:?}")))?
            .body
            .collect()
            .await
            .map_err(|e| ArchiveError::Bucket(format!("{key} version {version_id}: {e:?}")))?
            .into_bytes();
        // Keys come from the bucket: never let one name a file outside `dir`.
        if key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(ArchiveError::Bucket(format!(
                "{key:?}: not a key a copy can be written under"
            )));
        }
        let (folder, name) = key.rsplit_once('/').unwrap_or(("", key));
        let path = dir.join(folder).join(format!("v{n}-{name}"));
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, &body)
        };
        write(&path).map_err(|source| ArchiveError::Copy {
            path: path.clone(),
            source,
        })?;
        copied.versions += 1;
    }
    Ok(copied)
}

/// Every line under the archive root of `bucket`, with its object key: how the tests (and an
/// auditor's `aws s3 cp --recursive`) see the archive.
pub async fn read_archive(sdk: &SdkConfig, bucket: &str) -> Result<Vec<(String, serde_json::Value)>, ArchiveError> {
    let s3 = s3_client(sdk);
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(ARCHIVE_ROOT)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ArchiveError::Bucket(format!("{e:?}")))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
    }
    let mut lines = Vec::new();
    for key in keys {
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| ArchiveError::Bucket(format!("{key}: {e:?}")))?
            .body
            .collect()
            .await
            .map_err(|e| ArchiveError::Bucket(format!("{key}: {e:?}")))?
            .into_bytes();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let value = serde_json::from_slice(line).map_err(|e| ArchiveError::Bucket(format!("{key}: {e}")))?;
            lines.push((key.clone(), value));
        }
    }
    Ok(lines)
}
