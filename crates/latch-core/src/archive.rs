//! The audit archive's contract: which table changes reach the archive, in which line format,
//! under which object key.
//!
//! In AWS an EventBridge Pipe reads the table's stream, keeps the records [`FILTER_PATTERN`]
//! matches (INSERTs of `AUDIT#` keys: audit items are created once and never updated), reshapes
//! each with [`INPUT_TEMPLATE`] and hands it to Firehose, which writes JSON lines under
//! [`OBJECT_PREFIX`], the partition taken from each line by [`PARTITION_QUERY`]. Nothing of
//! Latch runs on that path. The emulator has none of those services, so a local stand-in
//! (`latch_aws::archive`) applies these very strings with the evaluators below; the template
//! parity test holds template.yaml to the same strings, and checks the filter with moto's own
//! EventBridge matcher. The evaluators cover the subset of each language these strings use and
//! refuse anything else, so a change to a string that the stand-in could not honour fails loudly.
//!
//! A line is the audit item exactly as the stream carried it, `{"Item": {<typed attributes>}}`:
//! the line format of a DynamoDB table export, so one reader and one Athena view serve both.
//! Pipes input templates cannot unwrap DynamoDB's typed JSON, and a transforming function on the
//! path would be code to trust between the table and the archive.

use serde_json::Value;

/// The Pipe's filter (EventBridge pattern syntax) on the table's stream records.
pub const FILTER_PATTERN: &str = r#"{"eventName":["INSERT"],"dynamodb":{"Keys":{"pk":{"S":[{"prefix":"AUDIT#"}]}}}}"#;

/// The Pipe's input template: the record's new image, as an export line.
pub const INPUT_TEMPLATE: &str = r#"{"Item": <$.dynamodb.NewImage>}"#;

/// The name of the one partition key.
pub const PARTITION_KEY: &str = "date";

/// Firehose's inline-parsing (jq 1.6) query for the partition key: the decision's UTC date,
/// from the record's own `recorded_at` (not the arrival time, so a late delivery lands beside
/// its decision).
pub const PARTITION_QUERY: &str = ".Item.recorded_at.S[0:10]";

/// Firehose's `MetadataExtractionQuery`: the jq object naming each partition key.
pub fn metadata_extraction_query() -> String {
    format!("{{{PARTITION_KEY}: {PARTITION_QUERY}}}")
}

/// Firehose's S3 prefix; Firehose appends its own object name after it.
pub const OBJECT_PREFIX: &str = "audit/date=!{partitionKeyFromQuery:date}/";

/// The folder every archive object sits under.
pub const ARCHIVE_ROOT: &str = "audit/";

/// A string of this contract the evaluators cannot honour, or a record they cannot shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveFormatError {
    #[error("unsupported filter pattern: {0}")]
    Pattern(String),
    #[error("input template: {0}")]
    Template(String),
    #[error("partition query: {0}")]
    Partition(String),
}

/// Whether an EventBridge pattern matches `event`. Supported: nested objects, and leaves that
/// are arrays of exact values or of `{"prefix": "..."}`; anything else is refused.
pub fn pattern_matches(pattern: &Value, event: &Value) -> Result<bool, ArchiveFormatError> {
    let Value::Object(fields) = pattern else {
        return Err(ArchiveFormatError::Pattern(format!(
            "expected an object, got {pattern}"
        )));
    };
    for (name, expected) in fields {
        let actual = event.get(name);
        let matched = match expected {
            Value::Object(_) => match actual {
                Some(inner @ Value::Object(_)) => pattern_matches(expected, inner)?,
                _ => false,
            },
            Value::Array(alternatives) => match actual {
                Some(Value::Array(values)) => {
                    let mut any = false;
                    for v in values {
                        any |= leaf_matches(alternatives, v)?;
                    }
                    any
                }
                Some(v) => leaf_matches(alternatives, v)?,
                None => false,
            },
            other => {
                return Err(ArchiveFormatError::Pattern(format!(
                    "{name}: {other} is neither object nor array"
                )));
            }
        };
        if !matched {
            return Ok(false);
        }
    }
    Ok(true)
}

fn leaf_matches(alternatives: &[Value], value: &Value) -> Result<bool, ArchiveFormatError> {
    let mut matched = false;
    for alternative in alternatives {
        matched |= match alternative {
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => alternative == value,
            Value::Object(op) if op.len() == 1 => match (op.get("prefix"), value) {
                (Some(Value::String(prefix)), Value::String(s)) => s.starts_with(prefix.as_str()),
                (Some(Value::String(_)), _) => false,
                _ => return Err(ArchiveFormatError::Pattern(format!("operator {alternative}"))),
            },
            other => return Err(ArchiveFormatError::Pattern(format!("alternative {other}"))),
        };
    }
    Ok(matched)
}

/// Renders a Pipes input template: each `<$.a.b>` becomes the JSON at that path (an object or
/// array as it is, a string's bare text, as Pipes does), and the result must be JSON.
pub fn render_input_template(template: &str, event: &Value) -> Result<Value, ArchiveFormatError> {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("<$") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('>')
            .ok_or_else(|| ArchiveFormatError::Template(format!("unclosed variable in {template:?}")))?;
        let path = &after[..end];
        let value = json_path(path, event)
            .ok_or_else(|| ArchiveFormatError::Template(format!("{path} is not in the record")))?;
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).map_err(|e| ArchiveFormatError::Template(format!("output is not JSON: {e}")))
}

/// `$.a.b.c` (dot notation only, the part of Pipes' JSON path the template uses).
fn json_path<'a>(path: &str, event: &'a Value) -> Option<&'a Value> {
    let mut at = event;
    for part in path.strip_prefix("$.")?.split('.') {
        if part.is_empty() {
            return None;
        }
        at = at.get(part)?;
    }
    Some(at)
}

/// The partition query, parsed: a path of field names, then an optional string slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionQuery {
    path: Vec<String>,
    slice: Option<(usize, usize)>,
}

impl PartitionQuery {
    /// Parses `.a.b.c` or `.a.b.c[from:to]`, the jq the contract uses; refuses other jq.
    pub fn parse(query: &str) -> Result<Self, ArchiveFormatError> {
        let refuse = || ArchiveFormatError::Partition(format!("{query:?} is not .field.field[from:to]"));
        let (path_text, slice) = match query.find('[') {
            Some(i) => {
                let inner = query[i..]
                    .strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .ok_or_else(refuse)?;
                let (from, to) = inner.split_once(':').ok_or_else(refuse)?;
                let from: usize = from.parse().map_err(|_| refuse())?;
                let to: usize = to.parse().map_err(|_| refuse())?;
                if from >= to {
                    return Err(refuse());
                }
                (&query[..i], Some((from, to)))
            }
            None => (query, None),
        };
        let path: Vec<String> = path_text
            .strip_prefix('.')
            .ok_or_else(refuse)?
            .split('.')
            .map(str::to_owned)
            .collect();
        let plain = |p: &String| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !path.iter().all(plain) {
            return Err(refuse());
        }
        Ok(Self { path, slice })
    }

    /// The partition value of one line: a string at the path, sliced by characters as jq does.
    pub fn eval(&self, line: &Value) -> Result<String, ArchiveFormatError> {
        let mut at = line;
        for part in &self.path {
            at = at
                .get(part)
                .ok_or_else(|| ArchiveFormatError::Partition(format!("no .{part} in the line")))?;
        }
        let Value::String(s) = at else {
            return Err(ArchiveFormatError::Partition(format!("{at} is not a string")));
        };
        Ok(match self.slice {
            Some((from, to)) => s.chars().skip(from).take(to - from).collect(),
            None => s.clone(),
        })
    }
}

/// The object prefix for one partition value, as Firehose fills `!{partitionKeyFromQuery:…}`.
pub fn object_prefix(partition_value: &str) -> String {
    OBJECT_PREFIX.replace(&format!("!{{partitionKeyFromQuery:{PARTITION_KEY}}}"), partition_value)
}

/// Everything the Pipe and Firehose do to one stream record: `None` when the filter drops it,
/// else the line and its partition value.
pub fn archive_line(record: &Value) -> Result<Option<(Value, String)>, ArchiveFormatError> {
    let pattern: Value =
        serde_json::from_str(FILTER_PATTERN).map_err(|e| ArchiveFormatError::Pattern(e.to_string()))?;
    if !pattern_matches(&pattern, record)? {
        return Ok(None);
    }
    let line = render_input_template(INPUT_TEMPLATE, record)?;
    let partition = PartitionQuery::parse(PARTITION_QUERY)?.eval(&line)?;
    Ok(Some((line, partition)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Vec<Value> {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        v["Records"].as_array().cloned().unwrap_or_default()
    }

    #[test]
    fn given_the_audit_insert_sample_when_archived_then_its_line_is_the_new_image_under_its_date() {
        let records = fixture("dynamodb-stream-audit-insert.json");
        assert!(!records.is_empty());
        for record in records {
            let (line, date) = archive_line(&record).unwrap().expect("an audit insert is archived");
            assert_eq!(line, json!({"Item": record["dynamodb"]["NewImage"]}));
            let recorded = record["dynamodb"]["NewImage"]["recorded_at"]["S"].as_str().unwrap();
            assert_eq!(date, recorded[..10]);
            assert_eq!(object_prefix(&date), format!("audit/date={date}/"));
        }
    }

    #[test]
    fn given_every_other_stream_sample_when_filtered_then_nothing_is_archived() {
        for name in [
            "dynamodb-stream-insert.json",
            "dynamodb-stream-modify.json",
            "dynamodb-stream-ttl-remove.json",
            "dynamodb-stream-user-remove.json",
        ] {
            for record in fixture(name) {
                assert_eq!(archive_line(&record).unwrap(), None, "{name}");
            }
        }
    }

    #[test]
    fn given_an_audit_key_changed_or_removed_when_filtered_then_it_is_not_archived_again() {
        let [record] = fixture("dynamodb-stream-audit-insert.json").try_into().unwrap();
        for name in ["MODIFY", "REMOVE"] {
            let mut other = record.clone();
            other["eventName"] = json!(name);
            assert_eq!(archive_line(&other).unwrap(), None, "{name}");
        }
    }

    #[test]
    fn given_pattern_leaves_when_matched_then_exact_and_prefix_follow_eventbridge() {
        let p = json!({"a": ["x", {"prefix": "AU"}], "n": {"m": [1]}});
        assert!(pattern_matches(&p, &json!({"a": "x", "n": {"m": 1}})).unwrap());
        assert!(pattern_matches(&p, &json!({"a": "AUDIT#1", "n": {"m": 1}})).unwrap());
        assert!(pattern_matches(&p, &json!({"a": ["q", "AUX"], "n": {"m": 1}})).unwrap());
        assert!(!pattern_matches(&p, &json!({"a": "xa", "n": {"m": 1}})).unwrap());
        assert!(!pattern_matches(&p, &json!({"n": {"m": 1}})).unwrap());
        assert!(!pattern_matches(&p, &json!({"a": "x", "n": {"m": 2}})).unwrap());
        assert!(!pattern_matches(&p, &json!({"a": 5, "n": {"m": 1}})).unwrap());
    }

    #[test]
    fn given_an_operator_the_stand_in_does_not_know_when_matched_then_it_is_refused() {
        for p in [json!({"a": [{"anything-but": "x"}]}), json!({"a": "x"}), json!(["x"])] {
            assert!(pattern_matches(&p, &json!({"a": "y"})).is_err(), "{p}");
        }
    }

    #[test]
    fn given_templates_when_rendered_then_objects_go_in_whole_and_strings_bare() {
        let e = json!({"a": {"b": {"S": "x"}}, "s": "t"});
        assert_eq!(
            render_input_template(r#"{"I": <$.a>}"#, &e).unwrap(),
            json!({"I": {"b": {"S": "x"}}})
        );
        assert_eq!(
            render_input_template(r#"{"v": "<$.s>"}"#, &e).unwrap(),
            json!({"v": "t"})
        );
        assert!(render_input_template(r#"{"I": <$.missing>}"#, &e).is_err());
        assert!(render_input_template(r#"{"I": <$.a"#, &e).is_err());
    }

    #[test]
    fn given_partition_queries_when_parsed_then_only_paths_with_a_slice_are_accepted() {
        let q = PartitionQuery::parse(".Item.recorded_at.S[0:10]").unwrap();
        let line = json!({"Item": {"recorded_at": {"S": "2026-03-01T10:00:00Z"}}});
        assert_eq!(q.eval(&line).unwrap(), "2026-03-01");
        assert!(q.eval(&json!({"Item": {}})).is_err());
        assert!(q.eval(&json!({"Item": {"recorded_at": {"N": "1"}}})).is_err());
        for bad in [
            ".Item | strftime(\"%Y\")",
            "Item.x",
            ".a[3:1]",
            ".a[0:x]",
            ".a..b",
            ".a[0:2",
        ] {
            assert!(PartitionQuery::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(metadata_extraction_query(), "{date: .Item.recorded_at.S[0:10]}");
    }
}
