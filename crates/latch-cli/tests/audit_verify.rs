//! `latch audit verify` and the archive readers end to end, through the binary, over an export
//! and the archive of the same generated decisions (`latch audit generate --archive`). Each
//! tampering is done here the way it would happen: an audit item deleted from the table (so a
//! later export, consistent with its manifest, lacks it), a line missing from a copy of the
//! archive, a record altered in one copy, a line forged into the archive.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use md5::{Digest, Md5};
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_latch"))
}

struct Generated {
    export: PathBuf,
    archive: PathBuf,
    truth: Value,
}

fn generate(name: &str, items: u64) -> Generated {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&out);
    let status = bin()
        .args([
            "audit",
            "generate",
            "--items",
            &items.to_string(),
            "--seed",
            "21",
            "--out",
        ])
        .arg(out.join("export"))
        .arg("--archive")
        .arg(out.join("archive"))
        .status()
        .unwrap();
    assert!(status.success());
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("export/latch-generator-truth.json")).unwrap()).unwrap();
    Generated {
        export: out.join("export").join(truth["export_dir"].as_str().unwrap()),
        archive: out.join("archive"),
        truth,
    }
}

fn verify(g: &Generated) -> (Output, Vec<(String, String)>) {
    let out = bin()
        .args(["audit", "verify"])
        .arg(&g.export)
        .arg(&g.archive)
        .output()
        .unwrap();
    let findings = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.split('\t');
            (parts.next().unwrap().to_owned(), parts.next().unwrap_or("").to_owned())
        })
        .collect();
    (out, findings)
}

fn archive_objects(g: &Generated) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(g.archive.join("audit")).unwrap() {
        for obj in std::fs::read_dir(day.unwrap().path()).unwrap() {
            out.push(obj.unwrap().path());
        }
    }
    out.sort();
    out
}

/// Rewrites an object's lines with `edit` (which may drop, change or add lines).
fn edit_object(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    edit(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Deletes one audit item from the export as if it had been deleted from the table before the
/// export ran: the data file, its manifest line and the summary's count all agree without it.
fn delete_from_export(g: &Generated, audit_id: &str) {
    let manifest = g.export.join("manifest-files.json");
    let mut entries: Vec<Value> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut removed = 0;
    for e in &mut entries {
        let name = e["dataFileS3Key"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let path = g.export.join("data").join(name);
        let mut text = String::new();
        MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(&format!("\"AUDIT#{audit_id}\"")))
            .collect();
        let dropped = text.lines().count() - kept.len();
        if dropped == 0 {
            continue;
        }
        removed += dropped;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        for l in &kept {
            gz.write_all(l.as_bytes()).unwrap();
            gz.write_all(b"\n").unwrap();
        }
        let bytes = gz.finish().unwrap();
        std::fs::write(&path, &bytes).unwrap();
        e["itemCount"] = Value::from(kept.len());
        e["md5Checksum"] = Value::from(BASE64.encode(Md5::digest(&bytes)));
    }
    assert_eq!(removed, 1, "the item was in the export once");
    let lines: Vec<String> = entries.iter().map(Value::to_string).collect();
    std::fs::write(&manifest, lines.join("\n") + "\n").unwrap();
    let summary_path = g.export.join("manifest-summary.json");
    let mut summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    summary["itemCount"] = Value::from(summary["itemCount"].as_u64().unwrap() - 1);
    std::fs::write(&summary_path, summary.to_string()).unwrap();
}

fn line_id(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    v["Item"]["audit_id"]["S"].as_str().unwrap().to_owned()
}

#[test]
fn given_an_export_and_its_archive_when_verified_then_they_agree_despite_repeated_lines() {
    let g = generate("verify-clean", 3000);
    let (out, findings) = verify(&g);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{findings:?}");
    assert!(findings.is_empty(), "{findings:?}");
    let audits = g.truth["by_record_type"]["audit"].as_u64().unwrap();
    let lines = g.truth["archive_lines"].as_u64().unwrap();
    assert!(lines > audits, "the generated archive repeats some records");
    assert!(
        stderr.contains(&format!(
            "export {audits} audit records; archive {lines} lines, {audits} records"
        )),
        "{stderr}"
    );
}

#[test]
fn given_an_audit_item_deleted_from_the_table_when_verified_then_it_is_reported_deleted() {
    let g = generate("verify-deleted", 3000);
    let first = std::fs::read_to_string(&archive_objects(&g)[0]).unwrap();
    let victim = line_id(first.lines().next().unwrap());
    delete_from_export(&g, &victim);
    let (out, findings) = verify(&g);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(findings, [("deleted".to_owned(), victim)]);
}

#[test]
fn given_a_line_missing_from_the_archive_copy_when_verified_then_it_is_reported_missing() {
    let g = generate("verify-missing", 3000);
    let objects = archive_objects(&g);
    let mut victim = String::new();
    edit_object(&objects[1], |lines| {
        // A record stored once (a repeated one would still be there).
        let all: Vec<String> = lines.iter().map(|l| line_id(l)).collect();
        let at = (0..lines.len())
            .find(|&i| all.iter().filter(|x| **x == all[i]).count() == 1)
            .unwrap();
        victim = all[at].clone();
        lines.remove(at);
    });
    let (out, findings) = verify(&g);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(findings, [("missing".to_owned(), victim)]);
}

#[test]
fn given_a_forged_and_an_altered_record_when_verified_then_both_are_reported() {
    let g = generate("verify-forged", 3000);
    let objects = archive_objects(&g);
    let mut altered = String::new();
    let mut forged = String::new();
    edit_object(&objects[2], |lines| {
        let mut v: Value = serde_json::from_str(&lines[0]).unwrap();
        altered = v["Item"]["audit_id"]["S"].as_str().unwrap().to_owned();
        // A wider role in the copy than in the table.
        v["Item"]["role_arn"]["S"] = Value::from("arn:aws:iam::123456789012:role/latch/admin");
        lines[0] = v.to_string();
        // An activation nobody made: its id is not the one its grant determines.
        let activation = lines
            .iter()
            .find(|l| l.contains(r#""decision":{"S":"activated"}"#))
            .expect("an activation that day")
            .clone();
        let mut fake: Value = serde_json::from_str(&activation).unwrap();
        forged = "0123456789abcdef0123456789abcdef".to_owned();
        fake["Item"]["audit_id"]["S"] = Value::from(forged.clone());
        fake["Item"]["pk"]["S"] = Value::from(format!("AUDIT#{forged}"));
        lines.push(fake.to_string());
    });
    let (out, findings) = verify(&g);
    assert_eq!(out.status.code(), Some(1));
    let found: BTreeSet<(String, String)> = findings.into_iter().collect();
    let want = BTreeSet::from([("altered".to_owned(), altered), ("forged".to_owned(), forged)]);
    assert!(want.is_subset(&found), "{found:?}");
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn given_the_archive_when_read_then_it_holds_the_exports_records_and_ocsf_maps_each_one() {
    let g = generate("archive-read", 3000);
    let read = |dir: &Path, format: &str| -> Vec<Value> {
        let out = bin().arg("audit").arg(dir).args(["--format", format]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let archived = read(&g.archive, "jsonl");
    assert_eq!(archived.len() as u64, g.truth["archive_lines"].as_u64().unwrap());
    let ids: BTreeSet<&str> = archived.iter().map(|r| r["audit_id"].as_str().unwrap()).collect();
    let exported = read(&g.export, "jsonl");
    let export_ids: BTreeSet<&str> = exported.iter().map(|r| r["audit_id"].as_str().unwrap()).collect();
    assert_eq!(ids, export_ids);

    let ocsf = read(&g.export, "ocsf");
    assert_eq!(ocsf.len(), exported.len());
    for (event, record) in ocsf.iter().zip(&exported) {
        assert_eq!(event["class_uid"], 3001);
        assert_eq!(event["metadata"]["uid"], record["audit_id"]);
        let attach = matches!(record["decision"].as_str(), Some("activated" | "extended" | "denied"));
        assert_eq!(event["activity_id"], if attach { 7 } else { 8 }, "{record}");
        assert_eq!(event["unmapped"]["latch"], *record);
    }
}
