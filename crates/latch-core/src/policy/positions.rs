//! Where each key and each list item of a policy file sits, as the YAML parser saw it.
//!
//! Contract: [`Positions::of`] reads the file once more into a tree that keeps nothing but the
//! parser's location of every mapping key and every sequence item; [`Positions::line`] answers
//! for a path through that tree (`rules`, 2, `roles`, 0), with the line of the last key or item
//! on it, or `None` when the file has no such node. Validation names what it is complaining
//! about by path, so a problem's line never depends on what else the file's text contains.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// A path from the document's root, built step by step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Path(Vec<Step>);

impl Path {
    pub(super) fn key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_owned()));
        Self(steps)
    }

    pub(super) fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        Self(steps)
    }

    /// The last key on the path: what a message calls the field.
    pub(super) fn field(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
    }
}

/// The path from the root to `key`.
pub(super) fn at(key: &str) -> Path {
    Path::default().key(key)
}

/// A mapping key as text, whatever scalar the file wrote.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(String::new()))
            }
        }
        d.deserialize_any(Text)
    }
}

/// A node of the file, with the parser's location of every key and item below it.
enum Node {
    Map(Vec<(Spanned<KeyText>, Node)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
        }
        d.deserialize_any(Any)
    }
}

/// The located tree of one policy file.
pub(super) struct Positions {
    root: Option<Node>,
}

fn line(location: &serde_saphyr::Location) -> Option<usize> {
    usize::try_from(location.line()).ok().filter(|l| *l > 0)
}

impl Positions {
    /// The tree of a file the typed read already accepted; empty (every line unknown) if the
    /// parser cannot read it a second time, which costs precision, never a refusal.
    pub(super) fn of(text: &str) -> Self {
        Self {
            root: serde_saphyr::from_str_with_options::<Node>(text, super::file::yaml_options()).ok(),
        }
    }

    /// The line of the last key or item on `path`.
    pub(super) fn line(&self, path: &Path) -> Option<usize> {
        let mut node = self.root.as_ref()?;
        let mut found = None;
        for step in &path.0 {
            match (node, step) {
                (Node::Map(entries), Step::Key(key)) => {
                    let (k, value) = entries.iter().find(|(k, _)| k.value.0 == *key)?;
                    found = line(&k.referenced);
                    node = value;
                }
                (Node::Seq(items), Step::Index(i)) => {
                    let item = items.get(*i)?;
                    found = line(&item.referenced);
                    node = &item.value;
                }
                _ => return None,
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "version: 1\nrules:\n  - name: a\n    roles: [x, y]\n  - name: b\n    roles:\n      - z\n    claims: {repository: r}\n";

    #[test]
    fn given_a_path_when_located_then_the_line_is_its_last_key_or_item() {
        let p = Positions::of(TEXT);
        assert_eq!(p.line(&at("version")), Some(1));
        assert_eq!(p.line(&at("rules")), Some(2));
        assert_eq!(p.line(&at("rules").index(0).key("name")), Some(3));
        assert_eq!(p.line(&at("rules").index(0).key("roles").index(1)), Some(4));
        assert_eq!(p.line(&at("rules").index(1).key("roles")), Some(6));
        assert_eq!(p.line(&at("rules").index(1).key("roles").index(0)), Some(7));
        assert_eq!(p.line(&at("rules").index(1).key("claims").key("repository")), Some(8));
    }

    #[test]
    fn given_a_path_the_file_does_not_have_when_located_then_there_is_no_line() {
        let p = Positions::of(TEXT);
        assert_eq!(p.line(&at("native")), None);
        assert_eq!(p.line(&at("rules").index(5)), None);
        assert_eq!(p.line(&at("version").key("x")), None);
        assert_eq!(Positions::of(": : :").line(&at("version")), None);
    }
}
