//! The audit archive on the emulator: the stand-in for the template's Pipe and Firehose stream
//! (latch_aws::archive, applying latch_core::archive's filter, template and partition query)
//! reads the table's stream through the real SDK and writes S3 objects; the archive is then
//! read back from S3 and compared with the table's audit items. The fault campaign checks the
//! same over a whole run with faults (fault_campaign.rs).

use std::collections::HashMap;

use latch_aws::archive::{ArchiveFeed, create_bucket, read_archive};
use latch_tests::{Harness, s, unique};
use serde_json::json;

#[tokio::test]
async fn every_audit_item_reaches_the_archive_under_its_date_and_nothing_else_does() {
    let h = Harness::new().await;
    let bucket = unique("archive");
    create_bucket(&h.sdk, &bucket, 1).await.expect("the locked bucket");
    let mut feed = ArchiveFeed::open(&h.sdk, &h.config.table, &bucket)
        .await
        .expect("the feed");

    // GIVEN a grant and a denial, each written with its audit item (and grant, job, counter items).
    let service = h.grant_service();
    grant::handle(&service, h.event("pipeline-job-started.json", json!({})))
        .await
        .expect("granted");
    grant::handle(
        &service,
        h.event("pipeline-job-started.json", json!({"permission_set": "no-such-set"})),
    )
    .await
    .expect("denied");

    // WHEN the stream is archived, twice.
    let first = feed.pump().await.expect("archived");
    let second = feed.pump().await.expect("archived again");

    // THEN the archive holds each audit item exactly as the table does, under its decision's
    // date, and nothing else; a second pass adds nothing.
    let audits = h.items("audit").await;
    assert_eq!(audits.len(), 2);
    assert_eq!(first.lines_written, 2);
    assert!(
        first.records_read > first.lines_written,
        "other items' records were read and left out"
    );
    assert_eq!(second.lines_written, 0);
    let archived = read_archive(&h.sdk, &bucket).await.expect("the archive");
    let by_id: HashMap<String, (String, serde_json::Value)> = archived
        .into_iter()
        .map(|(key, line)| {
            (
                line["Item"]["audit_id"]["S"].as_str().unwrap_or("").to_owned(),
                (key, line),
            )
        })
        .collect();
    assert_eq!(by_id.len(), 2);
    for a in &audits {
        let id = s(a, "audit_id").unwrap();
        let (key, line) = &by_id[&id];
        let date = &s(a, "recorded_at").unwrap()[..10];
        assert!(key.starts_with(&format!("audit/date={date}/")), "{key}");
        assert_eq!(
            line["Item"],
            serde_json::to_value(serde_dynamo::Item::from(a.clone())).unwrap()
        );
    }
}
