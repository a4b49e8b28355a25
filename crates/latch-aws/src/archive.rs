//! The audit archive's local stand-in (feature `local`): what the template's EventBridge Pipe
//! and Firehose stream do in AWS, done against the emulator, which has neither.
//!
//! Contract: [`ArchiveFeed::pump`] reads the table's stream (every record not seen before, as
//! Lambda and Pipes shape them), keeps and reshapes records with `latch_core::archive`'s filter
//! pattern, input template and partition query (the very strings the template carries), and
//! writes each partition's lines as one new object `audit/date=<date>/<name>` in the bucket,
//! JSON lines, never overwriting an object. At least once: a record re-read after a failed pump
//! is written again, as Pipes may redeliver. The stand-in is not Latch's code path in AWS, so it
//! is only ever built for tests and `latch dev`.

use std::collections::BTreeMap;

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
}

/// What one pump did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pumped {
    pub records_read: usize,
    pub lines_written: usize,
    pub objects_written: usize,
}

/// Follows the table's stream into the archive bucket.
pub struct ArchiveFeed {
    reader: StreamReader,
    s3: aws_sdk_s3::Client,
    bucket: String,
    objects: u64,
}

/// An S3 client for the emulator: path-style addressing, as moto serves buckets on one host.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates the archive bucket as the template does: Object Lock on, default retention.
pub async fn create_bucket(sdk: &SdkConfig, bucket: &str, retention_days: i32) -> Result<(), ArchiveError> {
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
                .mode(ObjectLockRetentionMode::Governance)
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
        })
    }

    /// Archives every stream record not archived before.
    pub async fn pump(&mut self) -> Result<Pumped, ArchiveError> {
        let records = self.reader.poll(|_| false).await?;
        let mut by_partition: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut pumped = Pumped {
            records_read: records.len(),
            ..Pumped::default()
        };
        for record in &records {
            let as_json = serde_json::to_value(record).map_err(|e| ArchiveFormatError::Template(e.to_string()))?;
            if let Some((line, partition)) = archive_line(&as_json)? {
                let out = by_partition.entry(partition).or_default();
                out.extend_from_slice(line.to_string().as_bytes());
                // Firehose's AppendDelimiterToRecord: one record a line.
                out.push(b'\n');
                pumped.lines_written += 1;
            }
        }
        let stamp = chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S");
        for (partition, body) in by_partition {
            self.objects += 1;
            // Firehose's own naming: <stream>-<version>-<time>-<unique>.
            let key = format!(
                "{}latch-archive-1-{stamp}-{:08x}{:08x}",
                object_prefix(&partition),
                self.objects,
                fastrand::u32(..)
            );
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| ArchiveError::Bucket(format!("{key}: {e:?}")))?;
            pumped.objects_written += 1;
        }
        Ok(pumped)
    }
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
