//! DynamoDB JSON, as an export writes it: every data line is `{"Item": {...}}` and every
//! attribute is wrapped in its type (`{"S": "x"}`, `{"N": "42"}`, `{"L": [...]}`, ...).
//!
//! Contract: [`parse_line`] turns one line into an [`ExportItem`] without touching any other
//! line (the reader streams); [`ExportItem::record_type`] is cheap, so items that are not audit
//! records are skipped before anything is converted; [`ExportItem::into_plain`] unwraps every
//! attribute into plain JSON (numbers become JSON numbers, sets and lists become arrays,
//! binary stays base64 text), the shape `serde_dynamo` wrote it from.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// One typed attribute value. The variant names are DynamoDB's type descriptors.
#[derive(Debug, Deserialize)]
pub enum AttributeValue {
    S(String),
    N(String),
    B(String),
    #[serde(rename = "BOOL")]
    Bool(bool),
    #[serde(rename = "NULL")]
    Null(serde::de::IgnoredAny),
    M(HashMap<String, AttributeValue>),
    L(Vec<AttributeValue>),
    #[serde(rename = "SS")]
    Ss(Vec<String>),
    #[serde(rename = "NS")]
    Ns(Vec<String>),
    #[serde(rename = "BS")]
    Bs(Vec<String>),
}

/// One exported item: its attributes, still typed.
#[derive(Debug, Deserialize)]
pub struct ExportItem {
    #[serde(rename = "Item")]
    pub item: HashMap<String, AttributeValue>,
}

/// Parses one data line. Errors name what serde saw, for the caller to put a file:line on.
pub fn parse_line(line: &[u8]) -> Result<ExportItem, serde_json::Error> {
    serde_json::from_slice(line)
}

fn number(n: &str) -> Value {
    if let Ok(i) = n.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = n.parse::<u64>() {
        return Value::Number(u.into());
    }
    match n.parse::<f64>().ok().and_then(Number::from_f64) {
        Some(f) => Value::Number(f),
        // Not a number JSON can hold: keep the digits rather than lose them.
        None => Value::String(n.to_owned()),
    }
}

impl AttributeValue {
    /// The plain JSON value this attribute holds.
    pub fn into_plain(self) -> Value {
        match self {
            Self::S(s) | Self::B(s) => Value::String(s),
            Self::N(n) => number(&n),
            Self::Bool(b) => Value::Bool(b),
            Self::Null(_) => Value::Null,
            Self::M(m) => Value::Object(m.into_iter().map(|(k, v)| (k, v.into_plain())).collect()),
            Self::L(l) => Value::Array(l.into_iter().map(Self::into_plain).collect()),
            Self::Ss(s) | Self::Bs(s) => Value::Array(s.into_iter().map(Value::String).collect()),
            Self::Ns(n) => Value::Array(n.iter().map(|x| number(x)).collect()),
        }
    }
}

impl ExportItem {
    /// The item's `record_type` string attribute, when it has one.
    pub fn record_type(&self) -> Option<&str> {
        match self.item.get("record_type") {
            Some(AttributeValue::S(s)) => Some(s),
            _ => None,
        }
    }

    /// Every attribute unwrapped into one plain JSON object.
    pub fn into_plain(self) -> Value {
        let map: Map<String, Value> = self.item.into_iter().map(|(k, v)| (k, v.into_plain())).collect();
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_every_attribute_type_when_unwrapped_then_plain_json_comes_out() {
        let line = br#"{"Item":{"s":{"S":"x"},"n":{"N":"42"},"neg":{"N":"-7"},"f":{"N":"1.5"},"b":{"BOOL":true},"z":{"NULL":true},"l":{"L":[{"S":"a"},{"N":"1"}]},"ss":{"SS":["p","q"]},"ns":{"NS":["3"]},"m":{"M":{"k":{"S":"v"}}},"bin":{"B":"AAE="}}}"#;
        let item = parse_line(line).unwrap();
        let plain = item.into_plain();
        assert_eq!(
            plain,
            serde_json::json!({"s":"x","n":42,"neg":-7,"f":1.5,"b":true,"z":null,
                "l":["a",1],"ss":["p","q"],"ns":[3],"m":{"k":"v"},"bin":"AAE="})
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
}
