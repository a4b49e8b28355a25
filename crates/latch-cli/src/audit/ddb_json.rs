//! DynamoDB JSON, as an export writes it: every data line is `{"Item": {...}}` and every
//! attribute is wrapped in its type (`{"S": "x"}`, `{"N": "42"}`, `{"L": [...]}`, ...).
//!
//! Contract: [`parse_line`] turns one line into an [`ExportItem`] without touching any other
//! line (the reader streams); [`ExportItem::record_type`] is cheap, so items that are not audit
//! records are skipped before anything is converted; [`ExportItem::into_record`] reads the typed
//! attributes straight into the Rust type with `serde_dynamo` (the crate that wrote them), with
//! no plain-JSON copy in between. An attribute object with an unknown type descriptor, or with
//! more than one, is a refusal.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_dynamo::{AttributeValue, Item};

/// One exported item: its attributes, still typed.
#[derive(Debug, Deserialize)]
pub struct ExportItem {
    #[serde(rename = "Item")]
    pub item: Item,
}

/// Parses one data line. Errors name what serde saw, for the caller to put a file:line on.
pub fn parse_line(line: &[u8]) -> Result<ExportItem, serde_json::Error> {
    serde_json::from_slice(line)
}

impl ExportItem {
    /// The item's `record_type` string attribute, when it has one.
    pub fn record_type(&self) -> Option<&str> {
        self.string("record_type")
    }

    /// A string attribute, when the item has it as a string.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.item.get(name) {
            Some(AttributeValue::S(s)) => Some(s),
            _ => None,
        }
    }

    /// The item read as `T`: numbers as numbers, sets and lists as sequences, `NULL` as absent.
    pub fn into_record<T: DeserializeOwned>(self) -> Result<T, serde_dynamo::Error> {
        serde_dynamo::from_item(self.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn given_every_attribute_type_when_unwrapped_then_plain_json_comes_out() {
        let line = br#"{"Item":{"s":{"S":"x"},"n":{"N":"42"},"neg":{"N":"-7"},"f":{"N":"1.5"},"b":{"BOOL":true},"z":{"NULL":true},"l":{"L":[{"S":"a"},{"N":"1"}]},"ss":{"SS":["p","q"]},"ns":{"NS":["3"]},"m":{"M":{"k":{"S":"v"}}},"bin":{"B":"AAE="}}}"#;
        let mut item = parse_line(line).unwrap();
        // Binary decodes to bytes, which plain JSON has no type for.
        assert_eq!(item.item.remove("bin"), Some(AttributeValue::B(vec![0, 1])));
        let plain: Value = item.into_record().unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"s":"x","n":42,"neg":-7,"f":1.5,"b":true,"z":null,
                "l":["a",1],"ss":["p","q"],"ns":[3],"m":{"k":"v"}})
        );
    }

    #[test]
    fn given_an_item_when_record_type_is_asked_then_only_a_string_counts() {
        let audit = parse_line(br#"{"Item":{"record_type":{"S":"audit"}}}"#).unwrap();
        assert_eq!(audit.record_type(), Some("audit"));
        let odd = parse_line(br#"{"Item":{"record_type":{"N":"1"}}}"#).unwrap();
        assert_eq!(odd.record_type(), None);
    }

    #[test]
    fn given_a_line_that_is_not_dynamodb_json_when_parsed_then_it_is_an_error() {
        assert!(parse_line(br#"{"Item":{"a":{"X":"?"}}}"#).is_err());
        assert!(parse_line(br#"{"a":1}"#).is_err());
        assert!(parse_line(b"not json").is_err());
    }

    #[test]
    fn given_an_attribute_with_two_type_descriptors_when_parsed_then_it_is_an_error() {
        assert!(parse_line(br#"{"Item":{"a":{"S":"x","N":"1"}}}"#).is_err());
    }
}
