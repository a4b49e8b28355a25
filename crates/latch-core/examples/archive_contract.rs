//! Prints, as JSON, the audit archive's contract straight from the code (filter pattern, input
//! template, partition query, object prefix) and what the stand-in's evaluators make of every
//! stream record in the sample files given as arguments, for the archive parity test
//! (infra/checks/test_archive_parity.py), which holds template.yaml to the same strings and
//! checks the filter verdicts against EventBridge's own matcher.
//!
//! `cargo run -q -p latch-core --example archive_contract -- events/dynamodb-stream-*.json`

use latch_core::archive::{
    FILTER_PATTERN, INPUT_TEMPLATE, OBJECT_PREFIX, PARTITION_KEY, PARTITION_QUERY, archive_line,
    metadata_extraction_query,
};
use serde_json::{Value, json};

fn main() {
    let mut verdicts = Vec::new();
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).expect("a sample file");
        let sample: Value = serde_json::from_str(&text).expect("JSON");
        for (i, record) in sample["Records"].as_array().into_iter().flatten().enumerate() {
            let verdict = match archive_line(record) {
                Ok(Some((line, partition))) => json!({"archived": true, "line": line, "partition": partition}),
                Ok(None) => json!({"archived": false}),
                Err(e) => json!({"error": e.to_string()}),
            };
            verdicts.push(json!({"file": path, "index": i, "verdict": verdict}));
        }
    }
    let out = json!({
        "filter_pattern": FILTER_PATTERN,
        "input_template": INPUT_TEMPLATE,
        "partition_key": PARTITION_KEY,
        "partition_query": PARTITION_QUERY,
        "metadata_extraction_query": metadata_extraction_query(),
        "object_prefix": OBJECT_PREFIX,
        "verdicts": verdicts,
    });
    println!("{out}");
}
