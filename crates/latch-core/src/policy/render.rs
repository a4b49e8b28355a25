//! Rendering a permission set into the IAM policy document a grant attaches.
//!
//! Contract: every statement carries `Condition.DateLessThan.aws:CurrentTime` = the grant's
//! expiry (I1), merged beside the set's own conditions; actions are exactly the set's; a
//! resource differs from its template only where a placeholder was filled with a value from
//! the safe character set, so no event can add `*`, `?`, `:` or `/` to a resource (condition
//! values get the same placeholders, filled the same way). The size is
//! counted as IAM counts it (no whitespace) and refused over the per-role inline limit.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Effect, PermissionSet, Statement};
use crate::model::{GrantId, RoleArn};
use crate::probe;

/// IAM's limit on the aggregate size of a role's inline policies, in characters without whitespace.
pub const MAX_POLICY_CHARS: usize = 10_240;
const MAX_PLACEHOLDER_CHARS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Pipeline,
    Job,
    Account,
    Region,
}

impl Placeholder {
    fn name(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::Job => "job",
            Self::Account => "account",
            Self::Region => "region",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Fill(Placeholder),
}

/// A resource string with `${pipeline}`, `${job}`, `${account}`, `${region}` placeholders,
/// parsed at load time so rendering cannot meet an unknown one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTemplate {
    text: String,
    segments: Vec<Segment>,
}

impl ResourceTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                segments.push(Segment::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or("unclosed ${")?;
            let placeholder = match &after[..end] {
                "pipeline" => Placeholder::Pipeline,
                "job" => Placeholder::Job,
                "account" => Placeholder::Account,
                "region" => Placeholder::Region,
                other => return Err(format!("unknown placeholder ${{{other}}}")),
            };
            segments.push(Segment::Fill(placeholder));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        if text.is_empty() {
            return Err("empty resource".into());
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every resource this template can become when each placeholder may take any of `widest`'s
    /// patterns (IAM wildcards): what a rule's grants can reach at most.
    pub fn widest(&self, widest: &Widest) -> Vec<String> {
        let mut out = vec![String::new()];
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => out.iter_mut().for_each(|o| o.push_str(l)),
                Segment::Fill(p) => {
                    let values = widest.values(*p);
                    out = out
                        .iter()
                        .flat_map(|o| values.iter().map(move |v| format!("{o}{v}")))
                        .collect();
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn fill(&self, ctx: &RenderContext<'_>) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.text.len());
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Fill(p) => out.push_str(ctx.safe_value(*p)?),
            }
        }
        Ok(out)
    }
}

/// The values placeholders are filled from: the event's job claims and trusted envelope.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    pub pipeline: &'a str,
    pub job: &'a str,
    pub account: &'a str,
    pub region: &'a str,
    /// The one role session the grant holds for (`bind_session`), if any.
    pub session: Option<&'a str>,
}

/// What each placeholder can be at most under one rule, as IAM wildcard patterns (`*`: any
/// value): the worst case `latch policy check` renders and the guardrails are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widest {
    pub pipeline: Vec<String>,
    pub job: Vec<String>,
    pub account: Vec<String>,
    pub region: Vec<String>,
    /// Whether grants are bound to the job's role session.
    pub session: bool,
}

impl Widest {
    /// Past this many patterns for one placeholder, it is rendered as `*`: wider, never narrower.
    const MAX_ALTERNATIVES: usize = 8;

    /// Any value at all, for a set no rule grants.
    pub fn anything() -> Self {
        let any = || vec!["*".to_owned()];
        Self {
            pipeline: any(),
            job: any(),
            account: any(),
            region: any(),
            session: false,
        }
    }

    fn values(&self, p: Placeholder) -> Vec<&str> {
        let list = match p {
            Placeholder::Pipeline => &self.pipeline,
            Placeholder::Job => &self.job,
            Placeholder::Account => &self.account,
            Placeholder::Region => &self.region,
        };
        if list.is_empty() || list.len() > Self::MAX_ALTERNATIVES || list.iter().any(|v| v == "*") {
            vec!["*"]
        } else {
            list.iter().map(String::as_str).collect()
        }
    }

    /// One line: `${pipeline}=app-* ${job}=* ...`.
    pub fn describe(&self) -> String {
        [
            Placeholder::Pipeline,
            Placeholder::Job,
            Placeholder::Account,
            Placeholder::Region,
        ]
        .iter()
        .map(|p| format!("${{{}}}={}", p.name(), self.values(*p).join("|")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// The condition key a session-bound grant uses; reserved, like the expiry's `aws:CurrentTime`.
pub const SESSION_KEY: &str = "aws:userid";

/// A placeholder value may only hold these: nothing that is a wildcard or an ARN separator.
pub fn is_safe_placeholder_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_PLACEHOLDER_CHARS
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.+=@-".contains(&b))
}

impl RenderContext<'_> {
    fn safe_value(&self, p: Placeholder) -> Result<&str, RenderError> {
        let v = match p {
            Placeholder::Pipeline => self.pipeline,
            Placeholder::Job => self.job,
            Placeholder::Account => self.account,
            Placeholder::Region => self.region,
        };
        if is_safe_placeholder_value(v) {
            Ok(v)
        } else {
            Err(RenderError::UnsafePlaceholderValue { placeholder: p.name() })
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the value for ${{{placeholder}}} has characters outside A-Z a-z 0-9 _ . + = @ - (or is empty or over 128)"
    )]
    UnsafePlaceholderValue { placeholder: &'static str },
    #[error("the rendered policy is {chars} characters, over IAM's {MAX_POLICY_CHARS}")]
    TooLarge { chars: usize },
}

/// A rendered IAM policy document: compact JSON (as IAM counts it) and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    json: String,
    sha256: String,
}

impl PolicyDocument {
    pub fn as_json(&self) -> &str {
        &self.json
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Size as IAM counts it: characters, whitespace outside strings excluded (compact JSON has none).
    pub fn chars(&self) -> usize {
        self.json.chars().count()
    }
}

/// A rendered statement's id, effect and actions, as the set wrote them (ids default to `LatchN`).
fn statement_head(index: usize, s: &Statement) -> Map<String, Value> {
    let mut st = Map::new();
    st.insert(
        "Sid".into(),
        Value::String(s.sid.clone().unwrap_or_else(|| format!("Latch{index}"))),
    );
    st.insert(
        "Effect".into(),
        json!(if s.effect == Effect::Allow { "Allow" } else { "Deny" }),
    );
    if !s.actions.is_empty() {
        st.insert("Action".into(), json!(s.actions));
    }
    if !s.not_actions.is_empty() {
        st.insert("NotAction".into(), json!(s.not_actions));
    }
    st
}

/// IAM wants second precision in UTC, e.g. `2026-11-25T23:15:00Z`.
pub fn iam_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Fills Latch's placeholders in condition values (strings, and strings in lists); anything
/// else, IAM's own policy variables such as `${aws:username}` included, is left as written.
fn fill_condition_value(v: &Value, ctx: &RenderContext<'_>) -> Result<Value, RenderError> {
    Ok(match v {
        Value::String(text) => {
            let mut out = text.clone();
            for p in [
                Placeholder::Pipeline,
                Placeholder::Job,
                Placeholder::Account,
                Placeholder::Region,
            ] {
                let token = format!("${{{}}}", p.name());
                if out.contains(&token) {
                    out = out.replace(&token, ctx.safe_value(p)?);
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| fill_condition_value(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), fill_condition_value(v, ctx)?)))
                .collect::<Result<_, RenderError>>()?,
        ),
        other => other.clone(),
    })
}

fn merged_conditions(
    own: &Map<String, Value>,
    expires: &str,
    ctx: &RenderContext<'_>,
) -> Result<Map<String, Value>, RenderError> {
    let Value::Object(mut conditions) = fill_condition_value(&Value::Object(own.clone()), ctx)? else {
        return Ok(Map::new());
    };
    let date_less_than = conditions
        .entry("DateLessThan")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = date_less_than {
        m.insert("aws:CurrentTime".into(), Value::String(expires.to_owned()));
    }
    if let Some(session) = ctx.session {
        // An assumed role's userid is `<RoleId>:<session name>`: only the job's own session matches.
        let string_like = conditions
            .entry("StringLike")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = string_like {
            m.insert(SESSION_KEY.into(), Value::String(format!("*:{session}")));
        }
    }
    Ok(conditions)
}

impl PermissionSet {
    /// The document at its widest under `widest`: every resource each template can become,
    /// placeholders in condition values as their patterns (`*` when several), the expiry as
    /// `<expiry>`. For reading and for the guardrails, never for IAM.
    pub fn render_widest(&self, widest: &Widest) -> Value {
        let pattern_of = |p: Placeholder| match widest.values(p).as_slice() {
            [one] => (*one).to_owned(),
            _ => "*".to_owned(),
        };
        let fill_text = |text: &str| {
            [
                Placeholder::Pipeline,
                Placeholder::Job,
                Placeholder::Account,
                Placeholder::Region,
            ]
            .iter()
            .fold(text.to_owned(), |t, p| {
                t.replace(&format!("${{{}}}", p.name()), &pattern_of(*p))
            })
        };
        fn fill_value(v: &Value, fill_text: &dyn Fn(&str) -> String) -> Value {
            match v {
                Value::String(s) => Value::String(fill_text(s)),
                Value::Array(items) => Value::Array(items.iter().map(|i| fill_value(i, fill_text)).collect()),
                Value::Object(m) => {
                    Value::Object(m.iter().map(|(k, v)| (k.clone(), fill_value(v, fill_text))).collect())
                }
                other => other.clone(),
            }
        }
        let statements: Vec<Value> = self
            .statements
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut st = statement_head(i, s);
                let widen = |ts: &[ResourceTemplate]| ts.iter().flat_map(|t| t.widest(widest)).collect::<Vec<_>>();
                if !s.resources.is_empty() {
                    st.insert("Resource".into(), json!(widen(&s.resources)));
                }
                if !s.not_resources.is_empty() {
                    st.insert("NotResource".into(), json!(widen(&s.not_resources)));
                }
                let mut conditions: Map<String, Value> = s
                    .conditions
                    .iter()
                    .map(|(k, v)| (k.clone(), fill_value(v, &fill_text)))
                    .collect();
                if let Value::Object(m) = conditions
                    .entry("DateLessThan")
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    m.insert("aws:CurrentTime".into(), Value::String("<expiry>".into()));
                }
                if widest.session
                    && let Value::Object(m) = conditions
                        .entry("StringLike")
                        .or_insert_with(|| Value::Object(Map::new()))
                {
                    m.insert(SESSION_KEY.into(), Value::String("*:<session>".into()));
                }
                st.insert("Condition".into(), Value::Object(conditions));
                Value::Object(st)
            })
            .collect();
        json!({ "Version": "2012-10-17", "Statement": statements })
    }

    /// Renders the set's own statements for one grant. Statement ids are the set's own or `LatchN`.
    pub fn render(&self, ctx: &RenderContext<'_>, expires: DateTime<Utc>) -> Result<PolicyDocument, RenderError> {
        PolicyDocument::from_statements(self.statements(ctx, &iam_time(expires))?)
    }

    /// The document a grant attaches: the set's statements and the grant's propagation probe
    /// ([`crate::probe`]), under the same conditions.
    pub fn render_for_grant(
        &self,
        ctx: &RenderContext<'_>,
        expires: DateTime<Utc>,
        grant: &GrantId,
        role: &RoleArn,
    ) -> Result<PolicyDocument, RenderError> {
        let expires = iam_time(expires);
        let mut statements = self.statements(ctx, &expires)?;
        statements.push(json!({
            "Sid": probe::PROBE_SID,
            "Effect": "Allow",
            "Action": [probe::PROBE_ACTION],
            "Resource": [probe::resource(grant, role)],
            "Condition": merged_conditions(&Map::new(), &expires, ctx)?,
        }));
        PolicyDocument::from_statements(statements)
    }

    fn statements(&self, ctx: &RenderContext<'_>, expires: &str) -> Result<Vec<Value>, RenderError> {
        let mut statements = Vec::with_capacity(self.statements.len() + 1);
        for (i, s) in self.statements.iter().enumerate() {
            let mut st = statement_head(i, s);
            let fill = |ts: &[ResourceTemplate]| ts.iter().map(|t| t.fill(ctx)).collect::<Result<Vec<_>, _>>();
            if !s.resources.is_empty() {
                st.insert("Resource".into(), json!(fill(&s.resources)?));
            }
            if !s.not_resources.is_empty() {
                st.insert("NotResource".into(), json!(fill(&s.not_resources)?));
            }
            st.insert(
                "Condition".into(),
                Value::Object(merged_conditions(&s.conditions, expires, ctx)?),
            );
            statements.push(Value::Object(st));
        }
        Ok(statements)
    }
}

impl PolicyDocument {
    fn from_statements(statements: Vec<Value>) -> Result<Self, RenderError> {
        let doc = json!({ "Version": "2012-10-17", "Statement": statements });
        let json = doc.to_string();
        let chars = json.chars().count();
        if chars > MAX_POLICY_CHARS {
            return Err(RenderError::TooLarge { chars });
        }
        let sha256 = Sha256::digest(json.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(PolicyDocument { json, sha256 })
    }
}
