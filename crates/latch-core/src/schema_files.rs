//! The JSON Schemas in events/schemas are generated output, derived with schemars from the types
//! the documents are read into (the policy file) or written from (the audit record). Each test
//! fails when its checked-in file is not what the types say; `LATCH_WRITE_SCHEMAS=1 cargo test
//! -p latch-core schema_files` rewrites them.
//!
//! Keys keep the order the generator gives them (a struct's fields in declaration order: the
//! Athena view reads the record's columns in that order), which needs serde_json's
//! `preserve_order`; latch-core's dev-dependencies switch it on, so `-p latch-core` and
//! `--workspace` write the same file.

use std::path::Path;

use serde_json::Value;

fn assert_up_to_date(file: &str, schema: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/schemas")
        .join(file);
    let derived = serde_json::to_string_pretty(schema).unwrap_or_default() + "\n";
    if std::env::var_os("LATCH_WRITE_SCHEMAS").is_some() {
        std::fs::write(&path, &derived).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == derived,
        "{} is out of date: LATCH_WRITE_SCHEMAS=1 cargo test -p latch-core schema_files",
        path.display()
    );
}

#[test]
fn given_the_policy_file_types_when_their_schema_is_derived_then_the_checked_in_file_is_up_to_date() {
    assert_up_to_date("policy-file.schema.json", &crate::policy::file::schema());
}

#[test]
fn given_the_audit_record_type_when_its_schema_is_derived_then_the_checked_in_file_is_up_to_date() {
    assert_up_to_date("audit-record.schema.json", &crate::audit::record_schema());
}
