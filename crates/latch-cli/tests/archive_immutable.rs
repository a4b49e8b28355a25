//! The audit archive is immutable as S3 Object Lock makes it, shown against the strict-AWS mode
//! (latch_tests::strict::s3: the template's bucket policy, the delivery role's identity policy,
//! Object Lock's bypass, retention and checksum rules, where moto is lenient), and
//! `latch audit verify` over an auditor's copy of the archive (every object *version*) still
//! finds every audit item after each attempt.
//!
//! Each run: a harness on the suite's emulator decides (activation, denial, finish), the archive
//! stand-in (signing as the delivery role, through the strict proxy) archives the table's stream
//! into a locked bucket, someone tries to change the archive, then the table is exported (the
//! DynamoDB export layout, written here from a scan) and the archive copied by versions, and the
//! `latch` binary verifies one against the other.
//!
//! With `ARCHIVE_LOCK_UNMODELLED=1` the proxy runs without the S3 modelling (`StrictAws::off`):
//! every test here then fails but the at-least-once one, which is how each was checked to rest
//! on the model. The at-least-once test rests on the stand-in instead (it failed on the
//! stand-in that marked records read before their upload had landed).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_config::SdkConfig;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::{ByteStream, DateTime as S3DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockRetention, ObjectLockRetentionMode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use flate2::Compression;
use flate2::write::GzEncoder;
use latch_aws::archive::{ArchiveFeed, LockMode, copy_versions, create_locked_bucket, s3_client};
use latch_tests::faults::{FaultKind, FaultPlan, FaultProxy};
use latch_tests::strict::{BucketPolicy, S3Caller, StrictAws, StrictKind, sdk_config};
use latch_tests::{Harness, unique};
use md5::{Digest, Md5};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const DELIVERY_KEY: &str = "AKIALATCHDELIVERY001";
const ADMIN_KEY: &str = "AKIALATCHADMINISTR01";
const ROOT_KEY: &str = "AKIALATCHROOTUSER001";
const DELIVERY_ROLE: &str = "arn:aws:iam::123456789012:role/latch-ArchiveDeliveryRole-T3ST";

fn template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).expect("template.yaml")
}

/// The strict mode for `bucket`: the template's bucket policy and delivery role, an administrator
/// (identity `s3:*`) and the root user; or nothing at all with `ARCHIVE_LOCK_UNMODELLED=1`.
fn strict_for(bucket: &str) -> StrictAws {
    if std::env::var_os("ARCHIVE_LOCK_UNMODELLED").is_some() {
        return StrictAws::off();
    }
    let template = template();
    let roles = BTreeMap::from([("ArchiveDeliveryRole".to_owned(), DELIVERY_ROLE.to_owned())]);
    let policy = BucketPolicy::from_template(&template, "ArchiveBucketPolicy", ACCOUNT, &roles).expect("the policy");
    let delivery =
        S3Caller::from_template_role(&template, "ArchiveDeliveryPolicy", DELIVERY_ROLE).expect("the delivery role");
    StrictAws::verdicts_only()
        .archive_bucket(bucket, policy)
        .s3_caller(DELIVERY_KEY, delivery)
        .s3_caller(
            ADMIN_KEY,
            S3Caller::admin("arn:aws:iam::123456789012:role/Administrator"),
        )
        .s3_caller(ROOT_KEY, S3Caller::root(ACCOUNT))
}

/// A run whose audit items the stand-in archived into a locked bucket, through a strict proxy.
struct Archived {
    proxy: FaultProxy,
    h: Harness,
    bucket: String,
    delivery: SdkConfig,
    admin: SdkConfig,
    root: SdkConfig,
    out: PathBuf,
}

async fn archived_run(name: &str, mode: LockMode, plan: FaultPlan) -> Archived {
    let bucket = unique("archive");
    let proxy = FaultProxy::in_front_of_shared_emulator(plan.strict(strict_for(&bucket))).await;
    let h = Harness::new().await;
    // The stack creates the bucket (CloudFormation, not a caller of the modelled policies).
    create_locked_bucket(&h.sdk, &bucket, mode, 30)
        .await
        .expect("the locked bucket");
    decide(&h, "r1").await;
    let delivery = sdk_config(&proxy.url(), DELIVERY_KEY).await;
    let admin = sdk_config(&proxy.url(), ADMIN_KEY).await;
    let root = sdk_config(&proxy.url(), ROOT_KEY).await;
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("archive-immutable-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    Archived {
        proxy,
        h,
        bucket,
        delivery,
        admin,
        root,
        out,
    }
}

/// An activation, its finish and a denial for `run`: three audit items or more.
async fn decide(h: &Harness, run: &str) {
    let service = h.grant_service();
    grant::handle(&service, h.event("pipeline-job-started.json", json!({"run_id": run})))
        .await
        .expect("granted");
    grant::handle(&service, h.event("pipeline-job-finished.json", json!({"run_id": run})))
        .await
        .expect("finished");
    grant::handle(
        &service,
        h.event(
            "pipeline-job-started.json",
            json!({"run_id": format!("{run}-d"), "permission_set": "no-such-set"}),
        ),
    )
    .await
    .expect("denied");
}

impl Archived {
    /// Archives the decisions made so far, decides again and archives those: two objects.
    async fn archive(&self) {
        let mut feed = ArchiveFeed::open(&self.delivery, &self.h.config.table, &self.bucket)
            .await
            .expect("the feed");
        let first = feed.pump().await.expect("archived");
        decide(&self.h, "r2").await;
        let second = feed.pump().await.expect("archived");
        assert!(
            first.lines_written >= 3 && second.lines_written >= 3,
            "{first:?} {second:?}"
        );
        assert_eq!(first.objects_written + second.objects_written, 2);
    }

    /// Every version under audit/: (key, version id), oldest first per key.
    async fn versions(&self) -> Vec<(String, String)> {
        let listed = s3_client(&self.h.sdk)
            .list_object_versions()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("ListObjectVersions");
        let mut out: Vec<(String, String)> = listed
            .versions()
            .iter()
            .map(|v| (v.key().unwrap().to_owned(), v.version_id().unwrap().to_owned()))
            .collect();
        out.sort();
        out
    }

    /// Exports the table, copies the archive by versions (as the administrator), runs
    /// `latch audit verify`: (exit code, findings by kind, the tally line).
    async fn verify(&self) -> Verified {
        let _ = std::fs::remove_dir_all(&self.out);
        let export = self.out.join("export");
        write_export(&self.h, &export).await;
        let archive = self.out.join("archive");
        let copied = copy_versions(&self.admin, &self.bucket, &archive)
            .await
            .expect("the archive copied by versions");
        let run = Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(["audit", "verify"])
            .arg(&export)
            .arg(&archive)
            .output()
            .expect("latch audit verify");
        let mut findings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in String::from_utf8_lossy(&run.stdout).lines() {
            let mut parts = line.split('\t');
            let kind = parts.next().unwrap_or_default().to_owned();
            findings
                .entry(kind)
                .or_default()
                .push(parts.next().unwrap_or_default().to_owned());
        }
        Verified {
            code: run.status.code(),
            findings,
            tally: String::from_utf8_lossy(&run.stderr).trim().to_owned(),
            behind_delete_markers: copied.behind_delete_markers,
        }
    }

    fn refused(&self, op: &str, kind: StrictKind) -> u64 {
        self.proxy.report().strict_count(op, kind)
    }
}

struct Verified {
    code: Option<i32>,
    findings: BTreeMap<String, Vec<String>>,
    tally: String,
    behind_delete_markers: usize,
}

impl Verified {
    /// A count from the tally line (`… N <label> …`).
    fn count(&self, label: &str) -> u64 {
        let at = self
            .tally
            .find(label)
            .unwrap_or_else(|| panic!("{label:?} in {:?}", self.tally));
        let before: Vec<&str> = self.tally[..at].split_whitespace().collect();
        before
            .last()
            .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            .unwrap_or_else(|| panic!("a number before {label:?} in {:?}", self.tally))
    }

    fn assert_every_item_found(&self) {
        assert_eq!(self.code, Some(0), "{}\n{:?}", self.tally, self.findings);
        assert!(self.findings.is_empty(), "{:?}", self.findings);
        assert_eq!(self.count("missing from the archive"), 0, "{}", self.tally);
    }
}

/// The table as ExportTableToPointInTime writes it (DYNAMODB_JSON): one gzip data file, the
/// manifest with its item count and MD5, the summary with the export's time.
async fn write_export(h: &Harness, dir: &Path) {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = h
            .dynamo
            .scan()
            .table_name(&h.config.table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Scan");
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for item in &items {
        let line = json!({"Item": serde_dynamo::Item::from(item.clone())});
        writeln!(gz, "{line}").unwrap();
    }
    let bytes = gz.finish().unwrap();
    std::fs::write(data.join("part-0.json.gz"), &bytes).unwrap();
    let manifest = json!({
        "itemCount": items.len(),
        "md5Checksum": BASE64.encode(Md5::digest(&bytes)),
        "etag": "strict-1",
        "dataFileS3Key": "AWSDynamoDB/strict/data/part-0.json.gz",
    });
    std::fs::write(dir.join("manifest-files.json"), format!("{manifest}\n")).unwrap();
    let summary = json!({
        "exportArn": format!("arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{}/export/strict", h.config.table),
        "exportTime": latch_core::iam_time(Utc::now()),
        "itemCount": items.len(),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    });
    std::fs::write(dir.join("manifest-summary.json"), summary.to_string()).unwrap();
}

fn is_access_denied<T, E, R>(r: &Result<T, aws_sdk_s3::error::SdkError<E, R>>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    matches!(r, Err(e) if e.as_service_error().and_then(|se| se.code()) == Some("AccessDenied"))
}

/// `x-amz-bypass-governance-retention: true` on a DeleteObject of one version.
async fn delete_version(sdk: &SdkConfig, bucket: &str, (key, version): &(String, String), bypass: bool) -> bool {
    s3_client(sdk)
        .delete_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .set_bypass_governance_retention(bypass.then_some(true))
        .send()
        .await
        .is_ok()
}

async fn put_retention(
    sdk: &SdkConfig,
    bucket: &str,
    (key, version): &(String, String),
    mode: ObjectLockRetentionMode,
    days: i64,
    bypass: bool,
) -> Result<(), String> {
    let until = S3DateTime::from_secs((Utc::now() + chrono::Duration::days(days)).timestamp());
    s3_client(sdk)
        .put_object_retention()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .retention(
            ObjectLockRetention::builder()
                .mode(mode)
                .retain_until_date(until)
                .build(),
        )
        .set_bypass_governance_retention(bypass.then_some(true))
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", e.as_service_error().and_then(|se| se.meta().code())))
}

#[tokio::test]
async fn given_a_governance_archive_when_the_delivery_role_or_an_admin_deletes_then_s3_refuses_and_verify_finds_every_item()
 {
    let run = archived_run("governance-delete", LockMode::Governance, FaultPlan::new(31)).await;
    run.archive().await;
    let versions = run.versions().await;
    assert!(!versions.is_empty());
    let target = &versions[0];

    // WHEN the delivery role (which may only put) deletes a version, asking for a bypass
    let by_delivery = delete_version(&run.delivery, &run.bucket, target, true).await;
    // AND an administrator (identity s3:*) deletes it, with and without the bypass header
    let by_admin = delete_version(&run.admin, &run.bucket, target, false).await;
    let by_admin_bypassing = delete_version(&run.admin, &run.bucket, target, true).await;
    // AND the administrator deletes the object without a version id (a delete marker)
    s3_client(&run.admin)
        .delete_object()
        .bucket(&run.bucket)
        .key(&target.0)
        .send()
        .await
        .expect("a delete marker is allowed");

    // THEN every version delete is refused, the version stays, and verify over a copy by
    // versions finds every audit item (the record behind the marker included)
    assert!(!by_delivery, "the delivery role deleted an archived version");
    assert!(!by_admin, "an administrator deleted a locked version");
    assert!(!by_admin_bypassing, "an administrator bypassed governance retention");
    assert!(run.versions().await.contains(target));
    // (the delivery role by its identity policy, the administrator's bypass by the bucket
    // policy; the plain delete by the emulator's own lock check)
    let report = run.proxy.report();
    assert_eq!(
        report.strict_count("s3.DeleteObject", StrictKind::AccessDenied),
        1,
        "{report}"
    );
    assert_eq!(
        report.strict_count("s3.DeleteObject", StrictKind::ObjectLocked),
        1,
        "{report}"
    );
    let v = run.verify().await;
    v.assert_every_item_found();
    assert_eq!(v.behind_delete_markers, 1);
}

#[tokio::test]
async fn given_a_compliance_archive_when_even_the_root_user_shortens_or_deletes_then_s3_refuses() {
    let run = archived_run("compliance", LockMode::Compliance, FaultPlan::new(32)).await;
    run.archive().await;
    let target = run.versions().await.remove(0);

    // WHEN the root user, bypassing, shortens the retention and deletes the version
    let shortened = put_retention(
        &run.root,
        &run.bucket,
        &target,
        ObjectLockRetentionMode::Compliance,
        1,
        true,
    )
    .await;
    let weakened = put_retention(
        &run.root,
        &run.bucket,
        &target,
        ObjectLockRetentionMode::Governance,
        60,
        true,
    )
    .await;
    let deleted = delete_version(&run.root, &run.bucket, &target, true).await;
    // AND extends it (allowed in either mode)
    let extended = put_retention(
        &run.root,
        &run.bucket,
        &target,
        ObjectLockRetentionMode::Compliance,
        60,
        false,
    )
    .await;

    // THEN shortening, weakening and deleting are refused, extending is not
    assert_eq!(shortened, Err("Some(\"AccessDenied\")".into()));
    assert_eq!(weakened, Err("Some(\"AccessDenied\")".into()));
    assert!(!deleted, "the root user deleted a version under COMPLIANCE");
    assert_eq!(extended, Ok(()));
    assert_eq!(
        run.refused("s3.PutObjectRetention", StrictKind::ObjectLocked),
        2,
        "{}",
        run.proxy.report()
    );
    run.verify().await.assert_every_item_found();
}

#[tokio::test]
async fn given_a_governance_archive_when_shortened_without_bypass_then_refused_and_only_the_root_users_bypass_is_seen_by_verify()
 {
    let run = archived_run("governance-root", LockMode::Governance, FaultPlan::new(33)).await;
    run.archive().await;
    let target = run.versions().await.remove(0);

    // WHEN an administrator shortens the retention (the bucket policy keeps it for root), and
    // the root user shortens it without the bypass header
    let by_admin = put_retention(
        &run.admin,
        &run.bucket,
        &target,
        ObjectLockRetentionMode::Governance,
        1,
        true,
    )
    .await;
    let by_root = put_retention(
        &run.root,
        &run.bucket,
        &target,
        ObjectLockRetentionMode::Governance,
        1,
        false,
    )
    .await;
    // THEN both are refused
    assert_eq!(by_admin, Err("Some(\"AccessDenied\")".into()));
    assert_eq!(by_root, Err("Some(\"AccessDenied\")".into()));
    assert_eq!(run.refused("s3.PutObjectRetention", StrictKind::ObjectLocked), 1);
    assert_eq!(run.refused("s3.PutObjectRetention", StrictKind::AccessDenied), 1);
    run.verify().await.assert_every_item_found();

    // WHEN the root user bypasses governance retention and deletes the version (the escape
    // hatch GOVERNANCE keeps, the reason the template recommends COMPLIANCE)
    assert!(delete_version(&run.root, &run.bucket, &target, true).await);
    // THEN verify reports the records it held missing from the archive: nothing is lost quietly
    let v = run.verify().await;
    assert_eq!(v.code, Some(1), "{}", v.tally);
    assert!(!v.findings.get("missing").is_none_or(Vec::is_empty), "{:?}", v.findings);
}

#[tokio::test]
async fn given_an_archived_object_when_overwritten_with_a_forged_record_then_the_original_stays_and_verify_reports_it()
{
    let run = archived_run("forged", LockMode::Governance, FaultPlan::new(34)).await;
    run.archive().await;
    let target = run.versions().await.remove(0);
    let original = s3_client(&run.h.sdk)
        .get_object()
        .bucket(&run.bucket)
        .key(&target.0)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let first: Value = serde_json::from_slice(original.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let mut forged = first.clone();
    forged["Item"]["reason"] = json!({"S": "forged: nothing happened here"});
    let forged_body = format!("{forged}\n");
    let overwrite = |sdk: SdkConfig| {
        let (bucket, key, body) = (run.bucket.clone(), target.0.clone(), forged_body.clone());
        async move {
            s3_client(&sdk)
                .put_object()
                .bucket(bucket)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(body.into_bytes()))
                .send()
                .await
        }
    };

    // WHEN an administrator overwrites the object with a forged record
    let by_admin = overwrite(run.admin.clone()).await;
    // AND the delivery role (the only writer the bucket policy lets through) does
    let by_delivery = overwrite(run.delivery.clone()).await;

    // THEN the administrator is refused; the delivery role's write is a new version beside the
    // original, and verify reports the record altered (two archived copies differ)
    assert!(is_access_denied(&by_admin), "{by_admin:?}");
    assert!(by_delivery.is_ok(), "{by_delivery:?}");
    assert!(run.versions().await.contains(&target), "the original version stays");
    let v = run.verify().await;
    assert_eq!(v.code, Some(1), "{}", v.tally);
    let id = first["Item"]["audit_id"]["S"].as_str().unwrap();
    // (once or twice: the forged copy against the original, and against the export when the
    // forged version is the one read first)
    let altered = v.findings.get("altered").cloned().unwrap_or_default();
    assert!(
        !altered.is_empty() && altered.iter().all(|a| a == id),
        "{:?}",
        v.findings
    );
    assert!(!v.findings.contains_key("missing"), "{:?}", v.findings);
}

#[tokio::test]
async fn given_a_locked_bucket_when_an_upload_has_no_checksum_then_s3_refuses_it_and_the_stand_in_always_sends_one() {
    let run = archived_run("checksum", LockMode::Governance, FaultPlan::new(35)).await;
    // GIVEN clients that compute a checksum only when an operation requires one
    let when_required = latch_aws::config::sdk_loader()
        .endpoint_url(run.proxy.url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            DELIVERY_KEY,
            "test",
            None,
            None,
            "strict",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .load()
        .await;

    // WHEN one uploads without a checksum
    let bare = s3_client(&when_required)
        .put_object()
        .bucket(&run.bucket)
        .key("audit/date=2026-01-01/bare")
        .body(ByteStream::from_static(b"{}\n"))
        .send()
        .await;
    // AND the archive stand-in runs on such a client
    let mut feed = ArchiveFeed::open(&when_required, &run.h.config.table, &run.bucket)
        .await
        .expect("the feed");
    let pumped = feed.pump().await;

    // THEN S3 refuses the bare upload, and the stand-in's uploads carry a checksum and land
    let code = bare
        .as_ref()
        .err()
        .and_then(|e| e.as_service_error())
        .and_then(|se| se.meta().code());
    assert_eq!(code, Some("InvalidRequest"), "{bare:?}");
    assert_eq!(run.refused("s3.PutObject", StrictKind::ChecksumRequired), 1);
    assert!(pumped.is_ok(), "{pumped:?}");
    run.verify().await.assert_every_item_found();
}

#[tokio::test]
async fn given_a_delivery_whose_answer_is_lost_when_retried_then_the_archive_holds_a_duplicate_that_verify_counts() {
    // GIVEN every upload's answer lost after S3 applied it
    let plan = FaultPlan::new(36)
        .op("s3", "PutObject", 1.0)
        .weights(&[(FaultKind::DropAfterApply, 1)]);
    let run = archived_run("at-least-once", LockMode::Governance, plan).await;
    let mut feed = ArchiveFeed::open(&run.delivery, &run.h.config.table, &run.bucket)
        .await
        .expect("the feed");

    // WHEN the first pump's uploads fail that way, and the next pump runs with answers back
    let first = feed.pump().await;
    assert!(first.is_err(), "{first:?}");
    assert!(feed.pending_partitions() >= 1);
    run.proxy.set_enabled(false);
    let second = feed.pump().await.expect("the batch uploaded again");

    // THEN the archive holds each of those records twice (two objects), and verify counts the
    // duplicates and reports nothing
    assert!(second.objects_written >= 1);
    assert_eq!(feed.pending_partitions(), 0);
    let v = run.verify().await;
    v.assert_every_item_found();
    assert!(v.count("duplicate lines") >= 3, "{}", v.tally);
}

#[tokio::test]
async fn given_a_lifecycle_rule_that_expires_every_version_when_s3_runs_it_then_locked_versions_stay_until_their_retention_ends()
 {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
        NoncurrentVersionExpiration,
    };
    let run = archived_run("lifecycle", LockMode::Governance, FaultPlan::new(37)).await;
    run.archive().await;
    let before = run.versions().await;
    // GIVEN an administrator's rule (the bucket policy leaves lifecycle to the owner): current
    // versions expire after a day, noncurrent ones a day later
    let rule = LifecycleRule::builder()
        .id("expire-everything")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("audit/").build())
        .expiration(LifecycleExpiration::builder().days(1).build())
        .noncurrent_version_expiration(NoncurrentVersionExpiration::builder().noncurrent_days(1).build())
        .build()
        .unwrap();
    s3_client(&run.admin)
        .put_bucket_lifecycle_configuration()
        .bucket(&run.bucket)
        .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(rule).build().unwrap())
        .send()
        .await
        .expect("the lifecycle rule");

    // WHEN S3 runs it two days on (delete markers) and four days on (noncurrent versions)
    let now = Utc::now();
    let markers = run
        .proxy
        .run_s3_lifecycle(&run.bucket, now + chrono::Duration::days(2))
        .await;
    let expiry = run
        .proxy
        .run_s3_lifecycle(&run.bucket, now + chrono::Duration::days(4))
        .await;

    // THEN every object got a delete marker, no locked version was expired, and verify over the
    // copy by versions finds every audit item
    assert_eq!(markers.delete_markers, before.len(), "{markers:?}");
    assert_eq!(expiry.versions_kept_locked, before.len(), "{expiry:?}");
    assert_eq!(expiry.versions_expired, 0, "{expiry:?}");
    assert_eq!(run.versions().await, before);
    run.verify().await.assert_every_item_found();

    // WHEN it runs after the 30-day retention has ended
    let after = run
        .proxy
        .run_s3_lifecycle(&run.bucket, now + chrono::Duration::days(31))
        .await;
    // THEN the versions go (the template sets no such rule: removing records after the
    // retention is the owner's decision), and verify says so
    assert_eq!(after.versions_expired, before.len(), "{after:?}");
    let v = run.verify().await;
    assert_ne!(v.code, Some(0), "{}", v.tally);
}
