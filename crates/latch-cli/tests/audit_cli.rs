//! `latch audit` end to end, through the binary: a generated export (the exact layout
//! DynamoDB writes) is read back and every count is checked against what the generator says
//! it wrote (`latch-generator-truth.json`), never against the reader itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_latch"))
}

/// A fresh export under target/tmp; returns (output folder, truth).
fn generate(name: &str, items: u64, seed: u64) -> (PathBuf, Value) {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&out);
    let status = bin()
        .args([
            "audit",
            "generate",
            "--items",
            &items.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let truth =
        serde_json::from_str(&std::fs::read_to_string(out.join("latch-generator-truth.json")).unwrap()).unwrap();
    (out, truth)
}

fn audit(dir: &Path, args: &[&str]) -> Output {
    bin().arg("audit").arg(dir).args(args).output().unwrap()
}

fn jsonl(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--format", "jsonl"];
    all.extend_from_slice(args);
    let out = audit(dir, &all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count_by(records: &[Value], key: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r[key].as_str().unwrap_or("-").to_owned()).or_insert(0) += 1;
    }
    m
}

fn truth_map(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

fn export_dir(out: &Path, truth: &Value) -> PathBuf {
    out.join(truth["export_dir"].as_str().unwrap())
}

#[test]
fn given_a_generated_export_when_read_whole_then_every_decision_and_reason_count_matches_the_generator() {
    let (out, truth) = generate("audit-cli-whole", 6000, 3);
    let records = jsonl(&out, &[]);
    assert_eq!(count_by(&records, "decision"), truth_map(&truth["audit_by_decision"]));
    let revoked: Vec<Value> = records.iter().filter(|r| r["decision"] == "revoked").cloned().collect();
    assert_eq!(count_by(&revoked, "reason"), truth_map(&truth["revoked_by_reason"]));
    let denied: Vec<Value> = records.iter().filter(|r| r["decision"] == "denied").cloned().collect();
    assert_eq!(count_by(&denied, "reason"), truth_map(&truth["denied_by_reason"]));
    // The summary line counts the items that are not audit records, by type.
    let out = audit(&out, &["--format", "jsonl"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let by_type = truth_map(&truth["by_record_type"]);
    assert!(stderr.contains(&format!("read {} items", truth["items"])), "{stderr}");
    assert!(stderr.contains(&format!("{} grant", by_type["grant"])), "{stderr}");
    assert!(stderr.contains(&format!("{} job", by_type["job"])), "{stderr}");
}

#[test]
fn given_the_export_folder_itself_or_its_parent_when_located_then_both_read_the_same() {
    let (out, truth) = generate("audit-cli-locate", 1500, 5);
    let from_parent = jsonl(&out, &["--decision", "activated"]);
    let from_export = jsonl(&export_dir(&out, &truth), &["--decision", "activated"]);
    let from_aws = jsonl(&out.join("AWSDynamoDB"), &["--decision", "activated"]);
    assert_eq!(from_parent, from_export);
    assert_eq!(from_parent, from_aws);
    assert_eq!(
        from_parent.len() as u64,
        truth["audit_by_decision"]["activated"].as_u64().unwrap()
    );
}

#[test]
fn given_filters_when_reading_then_only_matching_records_come_out() {
    let (out, truth) = generate("audit-cli-filters", 5000, 9);
    let app = jsonl(&out, &["--role", "app-deployer", "--decision", "activated"]);
    assert_eq!(
        app.len() as u64,
        truth["activated_by_role"]["app-deployer"].as_u64().unwrap()
    );
    let arn = jsonl(
        &out,
        &[
            "--role",
            "arn:aws:iam::123456789012:role/latch/app-*",
            "--decision",
            "activated",
        ],
    );
    assert_eq!(arn, app);
    // Activations are recorded when granted: the first week's, by recorded_at.
    let week = jsonl(
        &out,
        &[
            "--decision",
            "activated",
            "--since",
            "2026-03-01",
            "--until",
            "2026-03-08",
        ],
    );
    let want: u64 = truth_map(&truth["activated_first_week_by_role"]).values().sum();
    assert_eq!(week.len() as u64, want);
    // Relative times count back from the export's time (2026-03-31T00:00:00Z).
    let last = jsonl(&out, &["--since", "2d"]);
    assert!(!last.is_empty());
    assert!(
        last.iter()
            .all(|r| r["recorded_at"].as_str().unwrap() >= "2026-03-29T00:00:00Z")
    );
    let pipelines = jsonl(&out, &["--pipeline", "docs-*,release"]);
    assert!(
        pipelines.iter().all(|r| r["pipeline"] == "docs-site"),
        "a comma is not a pipeline separator"
    );
    let two = jsonl(
        &out,
        &[
            "--pipeline",
            "docs-*",
            "--pipeline",
            "release",
            "--decision",
            "revoked",
            "--reason",
            "job_finished",
        ],
    );
    assert!(!two.is_empty());
    assert!(
        two.iter()
            .all(|r| (r["pipeline"] == "docs-site" || r["pipeline"] == "release") && r["reason"] == "job_finished")
    );
}

#[test]
fn given_the_same_seed_twice_when_generated_then_the_bytes_are_identical() {
    let (a, ta) = generate("audit-cli-det-a", 2000, 42);
    let (b, tb) = generate("audit-cli-det-b", 2000, 42);
    assert_eq!(ta, tb);
    let (da, db) = (export_dir(&a, &ta), export_dir(&b, &tb));
    for name in ["manifest-summary.json", "manifest-files.json"] {
        assert_eq!(
            std::fs::read(da.join(name)).unwrap(),
            std::fs::read(db.join(name)).unwrap(),
            "{name}"
        );
    }
    let mut files: Vec<_> = std::fs::read_dir(da.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "at least two partitions and one empty file");
    for f in files {
        assert_eq!(
            std::fs::read(da.join("data").join(&f)).unwrap(),
            std::fs::read(db.join("data").join(&f)).unwrap()
        );
    }
}

#[test]
fn given_a_damaged_or_missing_export_when_read_then_it_fails_with_a_hint() {
    let (out, truth) = generate("audit-cli-damaged", 1500, 1);
    let dir = export_dir(&out, &truth);
    // Append a byte to the largest data file: its MD5 no longer matches the manifest.
    let data = dir.join("data");
    let biggest = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&biggest).unwrap();
    bytes.push(0);
    std::fs::write(&biggest, bytes).unwrap();
    let o = audit(&out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("does not match the export's manifest"), "{err}");
    assert!(err.contains("hint: the copy is incomplete or altered"), "{err}");

    let empty = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("audit-cli-not-an-export");
    std::fs::create_dir_all(&empty).unwrap();
    let o = audit(&empty, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("is not a DynamoDB export"), "{err}");
    assert!(
        err.contains("hint: copy the export with `aws s3 cp --recursive"),
        "{err}"
    );

    let o = audit(&out, &["--since", "2026-03-09", "--until", "2026-03-01"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn given_csv_and_table_formats_when_reading_then_one_row_per_match_plus_a_header() {
    let (out, truth) = generate("audit-cli-formats", 1500, 2);
    let denied = truth["audit_by_decision"]["denied"].as_u64().unwrap() as usize;
    for format in ["csv", "table"] {
        let o = audit(&out, &["--decision", "denied", "--format", format]);
        assert!(o.status.success());
        let text = String::from_utf8(o.stdout).unwrap();
        assert_eq!(text.lines().count(), denied + 1, "{format}");
    }
}

#[test]
fn given_a_report_request_when_written_then_the_page_holds_the_counts_and_no_network_reference() {
    let (out, truth) = generate("audit-cli-report", 4000, 4);
    let report = out.join("report.html");
    let o = audit(&out, &["--report", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "--report alone prints no records");
    let html = std::fs::read_to_string(&report).unwrap();
    let d = &truth["audit_by_decision"];
    for (id, n) in [
        ("activated", &d["activated"]),
        ("revoked", &d["revoked"]),
        ("denied", &d["denied"]),
        ("revoke-failed", &d["revoke_failed"]),
        ("drift-repaired", &d["drift_repaired"]),
        ("job-finished", &truth["revoked_by_reason"]["job_finished"]),
        ("active", &truth["active_at_export"]),
    ] {
        assert!(
            html.contains(&format!("id=\"count-{id}\" data-count=\"{n}\"")),
            "count-{id} = {n}"
        );
    }
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !without_ns.contains("http:") && !without_ns.contains("https:"),
        "no network reference"
    );
    assert!(
        !html.contains("<link") && !html.contains(" src="),
        "nothing loaded from elsewhere"
    );
}
