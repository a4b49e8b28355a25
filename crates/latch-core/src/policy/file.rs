//! Loading a policy file: YAML into documents, documents into a validated [`Policy`].
//! Every problem is collected (not just the first) with its file position and a hint.

use std::collections::BTreeMap;
use std::fmt;

use globset::GlobBuilder;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::positions::{Path, Positions, at};
use super::render::ResourceTemplate;
use super::{
    BuildChecks, ClaimPattern, DEFAULT_ELEVATABLE_PATH, Effect, ExecutionChecks, FairShare, NativeRule, NativeTrigger,
    Pattern, PermissionSet, Policy, Rule, RuleIdentity, Statement,
};
use crate::identity::{AudienceForm, Issuer, IssuerKind, JwkSet, TokenAlgorithm, claims::REFUSED_TRIGGERS};
use crate::model::{AccountId, GrantDuration, Name, RoleArn};

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct FileDoc {
    version: u32,
    /// The file's version as its owners name it (a release, a commit): copied into every record.
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    elevatable_path: Option<String>,
    #[serde(default)]
    issuers: Vec<IssuerDoc>,
    permission_sets: BTreeMap<String, PermissionSetDoc>,
    #[serde(default)]
    rules: Vec<RuleDoc>,
    #[serde(default)]
    native: Vec<NativeRuleDoc>,
    #[serde(default)]
    fair_share: Option<FairShareDoc>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct FairShareDoc {
    #[serde(default)]
    grants_per_minute: Option<u32>,
    #[serde(default)]
    sources: BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct PermissionSetDoc {
    description: String,
    max_duration: String,
    statements: Vec<StatementDoc>,
    #[serde(default)]
    guardrail_exceptions: Vec<Guardrail>,
    /// Catalogued escalation methods the set may use anyway, by name.
    #[serde(default)]
    allow_escalation: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct StatementDoc {
    #[serde(default)]
    sid: Option<String>,
    #[serde(default = "allow")]
    effect: Effect,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    not_actions: Vec<String>,
    #[serde(default)]
    not_resources: Vec<String>,
    #[serde(default)]
    conditions: Map<String, Value>,
}

fn allow() -> Effect {
    Effect::Allow
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct IssuerDoc {
    name: String,
    kind: String,
    url: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    exact_audience: Option<String>,
    algorithms: Vec<String>,
    max_token_age: String,
    #[serde(default)]
    keys: Option<Value>,
}

/// A claim pattern or a list of them.
#[derive(Debug)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[cfg(test)]
impl schemars::JsonSchema for OneOrMany {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OneOrMany".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        })
    }
}

/// The JSON Schema of a policy file, derived from the documents it is read into.
#[cfg(test)]
pub(crate) fn schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(FileDoc)).unwrap_or_default();
    schema["$id"] = Value::from("https://latch.dev/schemas/policy-file.v1.json");
    schema["title"] = Value::from("Latch policy file (version 1)");
    schema["description"] = Value::from(
        "Generated from the Rust types the file is read into (crates/latch-core/src/policy/file.rs); \
         docs/reference/policy-file.md explains each field. Checks shape only: `latch policy check` \
         checks everything else.",
    );
    schema
}

// Read by a visitor rather than `#[serde(untagged)]`: untagged buffering goes through serde's
// generic content, which the YAML parser cannot feed a sequence through.
impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Patterns;
        impl<'de> serde::de::Visitor<'de> for Patterns {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pattern or a list of patterns")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut patterns = Vec::new();
                while let Some(p) = seq.next_element()? {
                    patterns.push(p);
                }
                Ok(OneOrMany::Many(patterns))
            }
        }
        d.deserialize_any(Patterns)
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    name: String,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    claims: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    allow_triggers: Vec<String>,
    #[serde(default)]
    bind_session: bool,
    #[serde(default)]
    max_total: Option<String>,
    sources: Vec<String>,
    accounts: Vec<String>,
    #[serde(default)]
    pipelines: Option<Vec<String>>,
    #[serde(default)]
    refs: Option<Vec<String>>,
    #[serde(default)]
    environments: Option<Vec<String>>,
    roles: Vec<String>,
    permission_sets: Vec<String>,
    max_duration: String,
    #[serde(default)]
    max_active_grants_per_role: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct NativeRuleDoc {
    name: String,
    #[serde(default)]
    codepipeline: Option<CodePipelineDoc>,
    #[serde(default)]
    codebuild: Option<CodeBuildDoc>,
    role: String,
    permission_set: String,
    duration: String,
    #[serde(default)]
    max_active_grants_per_role: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct CodePipelineDoc {
    pipeline: String,
    stage: String,
    action: String,
    #[serde(default)]
    initiators: Option<Vec<String>>,
    #[serde(default)]
    triggers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct CodeBuildDoc {
    project: String,
    #[serde(default)]
    initiators: Option<Vec<String>>,
    #[serde(default)]
    source_versions: Option<Vec<String>>,
    #[serde(default)]
    buildspec: Option<String>,
    #[serde(default)]
    allow_buildspec_override: bool,
    #[serde(default = "yes")]
    require_service_role: bool,
}

fn yes() -> bool {
    true
}

/// A dangerous statement shape, refused unless a permission set lists it under
/// `guardrail_exceptions` (DESIGN.md, trust model limit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Guardrail {
    /// `*`, `*:*` or a service wildcard such as `*:Get*`.
    WildcardAction,
    /// Any `iam:` action with a wildcard, such as `iam:*` or `iam:Put*`.
    IamWildcard,
    NotAction,
    NotResource,
}

impl fmt::Display for Guardrail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WildcardAction => "wildcard_action",
            Self::IamWildcard => "iam_wildcard",
            Self::NotAction => "not_action",
            Self::NotResource => "not_resource",
        })
    }
}

/// One problem in a policy file, at `line:column` (1-based) when it can be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

/// Why a policy file was refused: every problem found, each with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl LoadError {
    pub(super) fn unreadable(origin: &str, e: std::io::Error) -> Self {
        Self {
            origin: origin.to_owned(),
            problems: vec![Problem {
                line: None,
                column: None,
                message: format!("cannot read the policy file: {e}"),
                hint: Some("check the path (LATCH_POLICY_PATH) and its permissions".into()),
            }],
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (p.line, p.column) {
                (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.origin, p.message)?,
                (Some(l), None) => write!(f, "{}:{l}: {}", self.origin, p.message)?,
                _ => write!(f, "{}: {}", self.origin, p.message)?,
            }
            if let Some(h) = &p.hint {
                write!(f, " (hint: {h})")?;
            }
        }
        Ok(())
    }
}

struct Collector {
    positions: Positions,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Per permission set, the file's index of each statement the set kept (a refused
    /// statement is dropped, so the set's index and the file's can differ).
    statement_origins: BTreeMap<Name, Vec<usize>>,
}

impl Collector {
    fn problem(&self, at: &Path, message: impl Into<String>, hint: Option<&str>) -> Problem {
        Problem {
            line: self.positions.line(at),
            column: None,
            message: message.into(),
            hint: hint.map(str::to_owned),
        }
    }

    fn push(&mut self, at: &Path, message: impl Into<String>, hint: Option<&str>) {
        let p = self.problem(at, message, hint);
        self.problems.push(p);
    }

    /// Loads, but `latch policy check` says so.
    fn warn(&mut self, at: &Path, message: impl Into<String>, hint: Option<&str>) {
        let p = self.problem(at, message, hint);
        self.warnings.push(p);
    }
}

/// How policy files are read: YAML 1.2 booleans only (`yes` is not true), duplicate keys and
/// merge keys refused, unknown tags refused, the parser's alias and size budget on. Text
/// fields and keys take what is written (`Null` is a condition operator, not a null).
pub(super) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        null_as_string: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        merge_keys: serde_saphyr::MergeKeyPolicy::Error,
        reject_unsupported_tags: true,
        with_snippet: false,
    }
}

/// The parser's message for people, without the location (the problem carries it) and with no
/// control character from the file.
fn parse_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    serde_saphyr::UserMessageFormatter
        .format_message(e)
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

pub(super) fn load(text: &str, origin: &str) -> Result<Policy, LoadError> {
    let doc: FileDoc = serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
        let at = e.location().filter(|l| l.line() > 0);
        LoadError {
            origin: origin.to_owned(),
            problems: vec![Problem {
                line: at.and_then(|l| usize::try_from(l.line()).ok()),
                column: at.and_then(|l| usize::try_from(l.column()).ok()),
                message: parse_message(&e),
                hint: Some(
                    "top-level keys are version, label, elevatable_path, issuers, permission_sets, rules, native, fair_share; see infra/policies.yaml"
                        .into(),
                ),
            }],
        }
    })?;
    let mut c = Collector {
        positions: Positions::of(text),
        problems: Vec::new(),
        warnings: Vec::new(),
        statement_origins: BTreeMap::new(),
    };
    let mut policy = validate(doc, &mut c);
    check_catalogue(&mut c, &policy);
    policy.file_sha256 = {
        use sha2::{Digest, Sha256};
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    if c.problems.is_empty() {
        policy.warnings = c.warnings;
        Ok(policy)
    } else {
        Err(LoadError {
            origin: origin.to_owned(),
            problems: c.problems,
        })
    }
}

/// On error the problem is recorded and validation goes on with `fallback`, chosen so that the
/// one mistake is not reported again by a check that compares with it (a maximum falls back to
/// the hard cap, a requested duration to the shortest); the policy is discarded anyway.
fn duration(c: &mut Collector, at: &Path, text: &str, fallback: GrantDuration) -> GrantDuration {
    GrantDuration::parse(text).unwrap_or_else(|e| {
        c.push(
            at,
            format!("{} {text:?}: {e}", at.field().unwrap_or("duration")),
            Some("write PT15M or 15m, at most 12h"),
        );
        fallback
    })
}

fn glob(c: &mut Collector, at: &Path, text: &str, what: &str) -> Option<Pattern> {
    match GlobBuilder::new(text).literal_separator(true).build() {
        Ok(g) => Some(Pattern {
            text: text.to_owned(),
            matcher: g.compile_matcher(),
        }),
        Err(e) => {
            c.push(
                at,
                format!("{what} pattern {text:?}: {e}"),
                Some("use * within a segment, ** across /"),
            );
            None
        }
    }
}

/// The file's documents into a [`Policy`], every problem recorded in `c`: each step checks one
/// part of the file and returns what the later steps and the policy need from it.
fn validate(doc: FileDoc, c: &mut Collector) -> Policy {
    check_version_and_label(c, doc.version, doc.label.as_deref());
    let elevatable_path = elevatable_path(c, doc.elevatable_path);
    let permission_sets = permission_sets(c, doc.permission_sets);
    let issuers = issuers(c, doc.issuers);
    let rules = rules(c, doc.rules, &elevatable_path, &permission_sets, &issuers);
    let native = native_rules(c, doc.native, &elevatable_path, &permission_sets, &rules);
    if rules.is_empty() && native.is_empty() {
        c.push(
            &at("rules"),
            "the file has no rules: nothing could ever be granted",
            None,
        );
    }
    let fair_share = fair_share(c, doc.fair_share);
    Policy {
        label: doc.label,
        file_sha256: String::new(),
        elevatable_path,
        issuers,
        permission_sets,
        rules,
        native,
        fair_share,
        warnings: Vec::new(),
    }
}

fn check_version_and_label(c: &mut Collector, version: u32, label: Option<&str>) {
    if version != 1 {
        c.push(
            &at("version"),
            format!("unsupported version {version}"),
            Some("this Latch reads version: 1"),
        );
    }
    if let Some(label) = label
        && (label.is_empty() || label.chars().count() > 128 || label.chars().any(char::is_control))
    {
        c.push(
            &at("label"),
            "label must be 1-128 characters without control characters",
            Some("for example: label: release-2026-03-01 or the commit the file comes from"),
        );
    }
}

/// The IAM path every elevatable role sits under; the default when the file gives none.
fn elevatable_path(c: &mut Collector, path: Option<String>) -> String {
    let path = path.unwrap_or_else(|| DEFAULT_ELEVATABLE_PATH.to_owned());
    if !(path.len() > 2 && path.starts_with('/') && path.ends_with('/')) || path.contains(['*', '?']) {
        c.push(
            &at("elevatable_path"),
            format!("elevatable_path {path:?} must be a non-root IAM path such as /latch/"),
            None,
        );
    }
    path
}

fn permission_sets(c: &mut Collector, docs: BTreeMap<String, PermissionSetDoc>) -> BTreeMap<Name, PermissionSet> {
    docs.into_iter()
        .filter_map(|(name_text, set)| permission_set(c, &name_text, set))
        .map(|set| (set.name.clone(), set))
        .collect()
}

fn permission_set(c: &mut Collector, name_text: &str, set: PermissionSetDoc) -> Option<PermissionSet> {
    let here = at("permission_sets").key(name_text);
    let Ok(name) = Name::parse(name_text) else {
        c.push(
            &here,
            format!("permission set name {name_text:?} is not a valid name"),
            Some("1-64 of A-Z a-z 0-9 _ -"),
        );
        return None;
    };
    let max_duration = duration(c, &here.key("max_duration"), &set.max_duration, GrantDuration::LONGEST);
    if set.statements.is_empty() {
        c.push(&here, format!("permission set {name_text} has no statements"), None);
    }
    let mut origins = Vec::new();
    let mut statements = Vec::new();
    for (i, s) in set.statements.into_iter().enumerate() {
        if let Some(kept) = statement(c, &here, name_text, i, s, &set.guardrail_exceptions) {
            origins.push(i);
            statements.push(kept);
        }
    }
    c.statement_origins.insert(name.clone(), origins);
    for (i, method) in set.allow_escalation.iter().enumerate() {
        if super::guardrails::method(method).is_none() {
            c.push(
                &here.key("allow_escalation").index(i),
                format!(
                    "permission set {name_text}: allow_escalation names {method:?}, which is not a catalogued method"
                ),
                Some("`latch policy check --guardrails` lists the catalogue"),
            );
        }
    }
    Some(PermissionSet {
        name,
        description: set.description,
        max_duration,
        statements,
        allow_escalation: set.allow_escalation,
    })
}

fn rules(
    c: &mut Collector,
    docs: Vec<RuleDoc>,
    elevatable_path: &str,
    permission_sets: &BTreeMap<Name, PermissionSet>,
    issuers: &[Issuer],
) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in docs.into_iter().enumerate() {
        let here = at("rules").index(i);
        let Ok(name) = Name::parse(&r.name) else {
            c.push(
                &here.key("name"),
                format!("rule name {:?} is not a valid name", r.name),
                Some("1-64 of A-Z a-z 0-9 _ -"),
            );
            continue;
        };
        if rules.iter().any(|prev| prev.name == name) {
            c.push(
                &here.key("name"),
                format!("rule name {name} is used twice"),
                Some("rule names appear in audits: keep them unique"),
            );
        }
        if let Some(rule) = rule(c, &here, name, r, elevatable_path, permission_sets, issuers) {
            rules.push(rule);
        }
    }
    rules
}

/// One rule whose name is valid. `None` when its identity cannot be settled (the problem is
/// recorded); every other problem is recorded and the rule kept, as the policy is refused anyway.
fn rule(
    c: &mut Collector,
    here: &Path,
    name: Name,
    r: RuleDoc,
    elevatable_path: &str,
    permission_sets: &BTreeMap<Name, PermissionSet>,
    issuers: &[Issuer],
) -> Option<Rule> {
    let named = here.key("name");
    if r.sources.is_empty() {
        c.push(
            &named,
            format!("rule {name} lists no sources"),
            Some("name the EventBridge source(s) it trusts"),
        );
    }
    let accounts = rule_accounts(c, here, &name, &r.accounts);
    let identity = rule_identity(c, here, &name, &r, issuers);
    let pipelines = rule_pipelines(c, here, &name, r.pipelines.as_deref(), identity.as_ref());
    let refs = r.refs.as_ref().map(|refs| {
        refs.iter()
            .enumerate()
            .filter_map(|(i, p)| glob(c, &here.key("refs").index(i), p, "ref"))
            .collect()
    });
    let roles = rule_roles(c, here, &name, &r.roles, elevatable_path, &accounts);
    let mut sets = Vec::new();
    for (i, s) in r.permission_sets.iter().enumerate() {
        match Name::parse(s) {
            Ok(n) if permission_sets.contains_key(&n) => sets.push(n),
            _ => c.push(
                &here.key("permission_sets").index(i),
                format!("rule {name}: unknown permission set {s:?}"),
                Some("define it under permission_sets"),
            ),
        }
    }
    let (max_duration, max_total) = rule_durations(c, here, &name, &r.max_duration, r.max_total.as_deref());
    if r.max_active_grants_per_role == Some(0) {
        c.push(
            &here.key("max_active_grants_per_role"),
            format!("rule {name}: a cap of 0 allows nothing"),
            Some("remove the rule instead"),
        );
    }
    for trigger in &r.allow_triggers {
        if !REFUSED_TRIGGERS.contains(&trigger.as_str()) {
            c.push(
                &here.key("allow_triggers"),
                format!("rule {name}: {trigger:?} is not a refused trigger"),
                Some(&format!("allow_triggers opts in to: {}", REFUSED_TRIGGERS.join(", "))),
            );
        }
    }
    let identity = identity?;
    if r.bind_session && identity == RuleIdentity::Claimed {
        c.push(
            &here.key("bind_session"),
            format!("rule {name}: bind_session needs a verified identity"),
            Some("name an issuer: the session is derived from the verified run"),
        );
    }
    Some(Rule {
        name,
        identity,
        allow_triggers: r.allow_triggers,
        bind_session: r.bind_session,
        max_total,
        sources: r.sources,
        accounts,
        pipelines,
        refs,
        environments: r.environments,
        roles,
        permission_sets: sets,
        max_duration,
        max_active_grants_per_role: r.max_active_grants_per_role,
    })
}

fn rule_accounts(c: &mut Collector, here: &Path, name: &Name, texts: &[String]) -> Vec<AccountId> {
    if texts.is_empty() {
        c.push(&here.key("name"), format!("rule {name} lists no accounts"), None);
    }
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            AccountId::parse(a)
                .map_err(|e| {
                    c.push(
                        &here.key("accounts").index(i),
                        format!("rule {name}: account {a:?}: {e}"),
                        None,
                    )
                })
                .ok()
        })
        .collect()
}

/// The rule's pipeline patterns; a verified rule that lists none means any (its claims say who).
fn rule_pipelines(
    c: &mut Collector,
    here: &Path,
    name: &Name,
    listed: Option<&[String]>,
    identity: Option<&RuleIdentity>,
) -> Vec<Pattern> {
    let texts: Vec<String> = match (listed, identity) {
        (Some(p), _) => p.to_vec(),
        (None, Some(RuleIdentity::Verified { .. })) => vec!["*".to_owned()],
        (None, _) => Vec::new(),
    };
    if texts.is_empty() {
        c.push(
            &here.key("name"),
            format!("rule {name} lists no pipelines"),
            Some("use [\"*\"] to mean any pipeline"),
        );
    }
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| glob(c, &here.key("pipelines").index(i), p, "pipeline"))
        .collect()
}

fn rule_roles(
    c: &mut Collector,
    here: &Path,
    name: &Name,
    texts: &[String],
    elevatable_path: &str,
    accounts: &[AccountId],
) -> Vec<Pattern> {
    let mut roles = Vec::new();
    for (i, role) in texts.iter().enumerate() {
        let item = here.key("roles").index(i);
        if let Some(problem) = role_pattern_problem(role, elevatable_path, accounts) {
            c.push(
                &item,
                format!("rule {name}: role {role:?} {problem}"),
                Some("roles are ARNs under the elevatable path; * only in the role name"),
            );
        } else if let Some(p) = glob(c, &item, role, "role") {
            roles.push(p);
        }
    }
    if texts.is_empty() {
        c.push(&here.key("name"), format!("rule {name} lists no roles"), None);
    }
    roles
}

/// `max_duration`, and `max_total` (a grant's whole life), which may not be the shorter.
fn rule_durations(
    c: &mut Collector,
    here: &Path,
    name: &Name,
    max_duration_text: &str,
    max_total_text: Option<&str>,
) -> (GrantDuration, Option<GrantDuration>) {
    let max_duration = duration(c, &here.key("max_duration"), max_duration_text, GrantDuration::LONGEST);
    let max_duration_parsed = GrantDuration::parse(max_duration_text).is_ok();
    let max_total = max_total_text.map(|t| {
        let total = duration(c, &here.key("max_total"), t, GrantDuration::LONGEST);
        if max_duration_parsed && total < max_duration {
            c.push(
                &here.key("max_total"),
                format!("rule {name}: max_total {t} is shorter than max_duration {max_duration_text}"),
                Some("max_total caps a grant's whole life, extensions included"),
            );
        }
        total
    });
    (max_duration, max_total)
}

fn native_rules(
    c: &mut Collector,
    docs: Vec<NativeRuleDoc>,
    elevatable_path: &str,
    permission_sets: &BTreeMap<Name, PermissionSet>,
    rules: &[Rule],
) -> Vec<NativeRule> {
    let mut native: Vec<NativeRule> = Vec::new();
    for (i, r) in docs.into_iter().enumerate() {
        let here = at("native").index(i);
        let Some(rule) = native_rule(c, &here, r, elevatable_path, permission_sets, rules) else {
            continue;
        };
        if native.iter().any(|prev| prev.name == rule.name) {
            c.push(
                &here.key("name"),
                format!("rule name {} is used twice", rule.name),
                Some("rule names appear in audits: keep them unique"),
            );
        }
        native.push(rule);
    }
    native
}

/// The issuers a verified rule may name. URLs must be https (http only on loopback, for the
/// local issuer), and algorithms only RS256/ES256: `none` and HS* are refused here, at load.
fn issuers(c: &mut Collector, docs: Vec<IssuerDoc>) -> Vec<Issuer> {
    /// A token older than this is refused whatever the file says: CI tokens live minutes.
    const MAX_TOKEN_AGE_CAP: std::time::Duration = std::time::Duration::from_secs(3600);
    let mut out: Vec<Issuer> = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        let here = at("issuers").index(i);
        let named = here.key("name");
        let Ok(name) = Name::parse(&d.name) else {
            c.push(
                &named,
                format!("issuer name {:?} is not a valid name", d.name),
                Some("1-64 of A-Z a-z 0-9 _ -"),
            );
            continue;
        };
        if out.iter().any(|i| i.name == name) {
            c.push(&named, format!("issuer name {name} is used twice"), None);
        }
        let kind = match d.kind.as_str() {
            "github" => Some(IssuerKind::GitHub),
            "gitlab" => Some(IssuerKind::GitLab),
            "generic" => Some(IssuerKind::Generic),
            other => {
                c.push(
                    &here.key("kind"),
                    format!("issuer {name}: unknown kind {other:?}"),
                    Some("github, gitlab or generic"),
                );
                None
            }
        };
        if let Some(problem) = issuer_url_problem(&d.url) {
            c.push(
                &here.key("url"),
                format!("issuer {name}: url {:?} {problem}", d.url),
                None,
            );
        }
        if out.iter().any(|i| i.url == d.url) {
            c.push(
                &here.key("url"),
                format!("issuer {name}: url {} is already named by another issuer", d.url),
                Some("one entry per issuer; rules pick it by name"),
            );
        }
        let audience = match (d.audience, d.exact_audience) {
            (Some(prefix), None) if Name::parse(&prefix).is_ok() => Some(AudienceForm::BoundToRequest { prefix }),
            (None, Some(aud)) if !aud.trim().is_empty() => Some(AudienceForm::Exact(aud)),
            _ => {
                c.push(
                    &named,
                    format!("issuer {name}: give exactly one of audience (a prefix such as latch) or exact_audience"),
                    Some("audience: latch binds each token to its request (latch:<digest>); exact_audience is for CIs that fix it in pipeline configuration"),
                );
                None
            }
        };
        let mut algorithms = Vec::new();
        for a in &d.algorithms {
            match TokenAlgorithm::parse(a) {
                Ok(alg) => algorithms.push(alg),
                Err(why) => c.push(
                    &here.key("algorithms"),
                    format!("issuer {name}: algorithm {a:?}: {why}"),
                    None,
                ),
            }
        }
        if d.algorithms.is_empty() {
            c.push(
                &here.key("algorithms"),
                format!("issuer {name} lists no algorithms"),
                Some("RS256 for GitHub and GitLab"),
            );
        }
        let max_token_age = duration(c, &here.key("max_token_age"), &d.max_token_age, GrantDuration::SHORTEST).as_std();
        if max_token_age > MAX_TOKEN_AGE_CAP {
            c.push(
                &here.key("max_token_age"),
                format!(
                    "issuer {name}: max_token_age {} is over the one-hour cap",
                    d.max_token_age
                ),
                Some("ask the CI for a fresh token right before the request"),
            );
        }
        let pinned_keys = d.keys.and_then(|keys| match JwkSet::from_value(&keys) {
            Ok(set) => Some(std::sync::Arc::new(set)),
            Err(e) => {
                c.push(
                    &here.key("keys"),
                    format!("issuer {name}: pinned keys: {e}"),
                    Some("a JWKS: {keys: [...]}"),
                );
                None
            }
        });
        if let (Some(kind), Some(audience)) = (kind, audience) {
            out.push(Issuer {
                name,
                kind,
                url: d.url,
                audience,
                algorithms,
                pinned_keys,
                max_token_age,
            });
        }
    }
    out
}

fn issuer_url_problem(url: &str) -> Option<&'static str> {
    let loopback = [
        "http://127.0.0.1:",
        "http://127.0.0.1/",
        "http://localhost:",
        "http://[::1]:",
    ];
    let ok_scheme = url.starts_with("https://") || loopback.iter().any(|p| url.starts_with(p));
    if !ok_scheme {
        return Some("must be https:// (http:// only on loopback, for a local issuer)");
    }
    if url.ends_with('/') || url.contains(['?', '#', ' ']) {
        return Some("must be the exact `iss` value: no trailing slash, query or fragment");
    }
    None
}

/// Claims that pin who the job is, per issuer kind: a verified rule must bind one of them, or
/// every repository the issuer serves would match it.
fn identifying_claims(kind: IssuerKind) -> &'static [&'static str] {
    match kind {
        IssuerKind::GitHub => &[
            "repository",
            "repository_id",
            "repository_owner",
            "repository_owner_id",
            "job_workflow_ref",
            "sub",
        ],
        IssuerKind::GitLab => &["project_path", "project_id", "namespace_path", "namespace_id", "sub"],
        IssuerKind::Generic => &["sub"],
    }
}

/// `identity: claimed` (trusts only source and account, warned about), or a named issuer whose
/// verified claims the rule binds. `None` after recording the problem.
fn rule_identity(c: &mut Collector, here: &Path, name: &Name, r: &RuleDoc, issuers: &[Issuer]) -> Option<RuleIdentity> {
    match (r.identity.as_deref(), r.issuer.as_deref()) {
        (Some("claimed"), None) => {
            if !r.claims.is_empty() {
                c.push(&here.key("claims"), format!("rule {name}: claims need an issuer"), None);
            }
            c.warn(
                &here.key("name"),
                format!("rule {name} trusts claimed identity: any publisher of its sources can ask as any pipeline, ref or environment"),
                Some("name an issuer and bind claims such as repository and ref"),
            );
            Some(RuleIdentity::Claimed)
        }
        (Some("claimed"), Some(_)) => {
            c.push(
                &here.key("name"),
                format!("rule {name}: identity: claimed cannot name an issuer"),
                None,
            );
            None
        }
        (Some("verified") | None, Some(issuer_name)) => {
            let Some(issuer) = issuers.iter().find(|i| i.name.as_str() == issuer_name) else {
                c.push(
                    &here.key("issuer"),
                    format!("rule {name}: unknown issuer {issuer_name:?}"),
                    Some("define it under issuers"),
                );
                return None;
            };
            for (field, claim) in [("refs", "ref"), ("environments", "environment")] {
                let present = if field == "refs" {
                    r.refs.is_some()
                } else {
                    r.environments.is_some()
                };
                if present {
                    c.push(
                        &here.key(field),
                        format!("rule {name}: {field} is a claimed-identity field; a verified rule binds `{claim}` under claims"),
                        Some(&format!("claims: {{{claim}: ...}}")),
                    );
                }
            }
            let required = identifying_claims(issuer.kind);
            if !r.claims.keys().any(|k| required.contains(&k.as_str())) {
                c.push(
                    &here.key("issuer"),
                    format!(
                        "rule {name}: binds none of {}: every job the issuer serves would match",
                        required.join(", ")
                    ),
                    Some("bind the repository or project, e.g. claims: {repository: my-org/my-repo}"),
                );
            }
            let mut claims = Vec::new();
            for (claim, patterns) in &r.claims {
                let texts = patterns_of(patterns);
                if texts.is_empty() {
                    c.push(
                        &here.key("claims").key(claim),
                        format!("rule {name}: claim {claim} lists no patterns"),
                        None,
                    );
                }
                let patterns = texts
                    .iter()
                    .filter_map(|p| glob(c, &here.key("claims").key(claim), p, "claim"))
                    .collect();
                claims.push(ClaimPattern {
                    claim: claim.clone(),
                    patterns,
                });
            }
            Some(RuleIdentity::Verified {
                issuer: issuer.name.clone(),
                claims,
            })
        }
        (None, None) => {
            c.push(
                &here.key("name"),
                format!("rule {name} names no issuer"),
                Some("name an issuer and bind its claims, or say identity: claimed to trust only source and account"),
            );
            None
        }
        (Some(other), _) => {
            c.push(
                &here.key("identity"),
                format!("rule {name}: identity {other:?} is neither verified nor claimed"),
                None,
            );
            None
        }
    }
}

fn patterns_of(p: &OneOrMany) -> Vec<String> {
    match p {
        OneOrMany::One(s) => vec![s.clone()],
        OneOrMany::Many(v) => v.clone(),
    }
}

/// A native rule names one exact role under the path and one known permission set, for a
/// duration the set allows: everything a native event does not say is settled here.
fn native_rule(
    c: &mut Collector,
    here: &Path,
    r: NativeRuleDoc,
    elevatable_path: &str,
    permission_sets: &BTreeMap<Name, PermissionSet>,
    rules: &[Rule],
) -> Option<NativeRule> {
    let named = here.key("name");
    let Ok(name) = Name::parse(&r.name) else {
        c.push(
            &named,
            format!("native rule name {:?} is not a valid name", r.name),
            Some("1-64 of A-Z a-z 0-9 _ -"),
        );
        return None;
    };
    if rules.iter().any(|prev| prev.name == name) {
        c.push(
            &named,
            format!("rule name {name} is used by a rule and a native rule"),
            Some("rule names appear in audits: keep them unique"),
        );
    }
    let pipeline_at = here.key("codepipeline");
    let trigger = match (r.codepipeline, r.codebuild) {
        (Some(p), None) => NativeTrigger::CodePipeline {
            pipeline: glob(c, &pipeline_at.key("pipeline"), &p.pipeline, "pipeline")?,
            stage: glob(c, &pipeline_at.key("stage"), &p.stage, "stage")?,
            action: glob(c, &pipeline_at.key("action"), &p.action, "action")?,
            checks: ExecutionChecks {
                initiators: globs(c, &pipeline_at.key("initiators"), p.initiators, "initiator")?,
                triggers: trigger_types(c, &pipeline_at.key("triggers"), p.triggers, &name)?,
            },
        },
        (None, Some(b)) => NativeTrigger::CodeBuild {
            project: glob(c, &here.key("codebuild").key("project"), &b.project, "project")?,
            checks: build_checks(c, &here.key("codebuild"), b, &name)?,
        },
        _ => {
            c.push(
                &named,
                format!("native rule {name}: give exactly one of codepipeline or codebuild"),
                Some("codepipeline: {pipeline, stage, action} or codebuild: {project}"),
            );
            return None;
        }
    };
    let role = match RoleArn::parse(&r.role) {
        Ok(role) if role.is_under_path(elevatable_path) => Some(role),
        Ok(_) => {
            c.push(
                &here.key("role"),
                format!(
                    "native rule {name}: role {:?} is outside the elevatable path {elevatable_path}",
                    r.role
                ),
                None,
            );
            None
        }
        Err(e) => {
            c.push(
                &here.key("role"),
                format!("native rule {name}: role {:?}: {e}", r.role),
                Some("one exact role ARN: the event names none, so the rule must"),
            );
            None
        }
    };
    let duration = duration(c, &here.key("duration"), &r.duration, GrantDuration::SHORTEST);
    let set = Name::parse(&r.permission_set)
        .ok()
        .and_then(|n| permission_sets.get(&n));
    match set {
        None => c.push(
            &here.key("permission_set"),
            format!("native rule {name}: unknown permission set {:?}", r.permission_set),
            Some("define it under permission_sets"),
        ),
        Some(set) if duration > set.max_duration => c.push(
            &here.key("duration"),
            format!(
                "native rule {name}: duration {} is over permission set {}'s max_duration {}",
                r.duration, set.name, set.max_duration
            ),
            None,
        ),
        Some(_) => {}
    }
    if r.max_active_grants_per_role == Some(0) {
        c.push(
            &here.key("max_active_grants_per_role"),
            format!("native rule {name}: a cap of 0 allows nothing"),
            Some("remove the rule instead"),
        );
    }
    Some(NativeRule {
        name,
        trigger,
        role: role?,
        permission_set: set?.name.clone(),
        duration,
        max_active_grants_per_role: r.max_active_grants_per_role,
    })
}

/// Optional globs: absent is "any"; present must be a non-empty list of valid globs.
fn globs(c: &mut Collector, at: &Path, texts: Option<Vec<String>>, what: &str) -> Option<Option<Vec<Pattern>>> {
    let Some(texts) = texts else { return Some(None) };
    if texts.is_empty() {
        c.push(
            at,
            format!("an empty {what} list allows nothing"),
            Some("remove the key to allow any, or list patterns"),
        );
        return None;
    }
    let patterns: Vec<Option<Pattern>> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| glob(c, &at.index(i), t, what))
        .collect();
    patterns.into_iter().collect::<Option<Vec<_>>>().map(Some)
}

/// CodePipeline's execution trigger types (`PipelineExecution.trigger.triggerType`).
const TRIGGER_TYPES: [&str; 9] = [
    "CreatePipeline",
    "StartPipelineExecution",
    "PollForSourceChanges",
    "Webhook",
    "CloudWatchEvent",
    "PutActionRevision",
    "WebhookV2",
    "ManualRollback",
    "AutomatedRollback",
];

fn trigger_types(c: &mut Collector, at: &Path, types: Option<Vec<String>>, rule: &Name) -> Option<Option<Vec<String>>> {
    let Some(types) = types else { return Some(None) };
    let unknown: Vec<&String> = types.iter().filter(|t| !TRIGGER_TYPES.contains(&t.as_str())).collect();
    if types.is_empty() || !unknown.is_empty() {
        c.push(
            at,
            format!("native rule {rule}: triggers {unknown:?} are not CodePipeline trigger types (or the list is empty)"),
            Some("one or more of CreatePipeline, StartPipelineExecution, PollForSourceChanges, Webhook, CloudWatchEvent, PutActionRevision, WebhookV2, ManualRollback, AutomatedRollback"),
        );
        return None;
    }
    Some(Some(types))
}

/// The build a CodeBuild rule accepts. The buildspec defaults to the source's `buildspec.yml`:
/// `BatchGetBuilds` reports the buildspec a build ran, override or not, but not the project's, so
/// the rule names the one it trusts; a rule that trusts any must say `allow_buildspec_override`.
fn build_checks(c: &mut Collector, here: &Path, b: CodeBuildDoc, rule: &Name) -> Option<BuildChecks> {
    let buildspec = match (b.allow_buildspec_override, b.buildspec) {
        (true, Some(_)) => {
            c.push(
                &here.key("allow_buildspec_override"),
                format!("native rule {rule}: buildspec and allow_buildspec_override contradict each other"),
                Some("name the buildspec the build must run, or allow any"),
            );
            return None;
        }
        (true, None) => None,
        (false, Some(path)) if !is_buildspec_path(&path) => {
            c.push(
                &here.key("buildspec"),
                format!("native rule {rule}: buildspec {path:?} is not a path in the source"),
                Some("a relative path such as buildspec.yml or ci/deploy.yml; inline buildspecs cannot be pinned"),
            );
            return None;
        }
        (false, path) => Some(path.unwrap_or_else(|| DEFAULT_BUILDSPEC.to_owned())),
    };
    Some(BuildChecks {
        initiators: globs(c, &here.key("initiators"), b.initiators, "initiator")?,
        source_versions: globs(c, &here.key("source_versions"), b.source_versions, "source version")?,
        buildspec,
        require_service_role: b.require_service_role,
    })
}

/// What CodeBuild runs when a project names no buildspec.
pub const DEFAULT_BUILDSPEC: &str = "buildspec.yml";

fn is_buildspec_path(path: &str) -> bool {
    (1..=255).contains(&path.len())
        && !path.starts_with('/')
        && !path.contains(['\n', ':', '{', ' '])
        && !path.split('/').any(|seg| seg.is_empty() || seg == "..")
}

/// The file's `fair_share`, or the default; every limit between 1 and the maximum.
fn fair_share(c: &mut Collector, doc: Option<FairShareDoc>) -> FairShare {
    let Some(doc) = doc else {
        return FairShare::default();
    };
    let valid = |n: u32| (1..=FairShare::MAX_GRANTS_PER_MINUTE).contains(&n);
    let hint = format!(
        "1 to {} new grants per publisher per minute",
        FairShare::MAX_GRANTS_PER_MINUTE
    );
    let grants_per_minute = doc.grants_per_minute.unwrap_or(FairShare::DEFAULT_GRANTS_PER_MINUTE);
    if !valid(grants_per_minute) {
        c.push(
            &at("fair_share").key("grants_per_minute"),
            format!("fair_share: grants_per_minute {grants_per_minute} is out of range"),
            Some(&hint),
        );
    }
    for (source, limit) in &doc.sources {
        if !valid(*limit) {
            c.push(
                &at("fair_share").key("sources").key(source),
                format!("fair_share: source {source}: {limit} is out of range"),
                Some(&hint),
            );
        }
    }
    FairShare {
        grants_per_minute,
        sources: doc.sources,
    }
}

/// A role pattern must be an ARN under the elevatable path, in one of the rule's accounts,
/// with wildcards only in the role name, so no pattern can reach a role outside the path.
fn role_pattern_problem(pattern: &str, path: &str, accounts: &[AccountId]) -> Option<String> {
    let name_start = pattern.rfind('/').map_or(0, |i| i + 1);
    if pattern[..name_start].contains(['*', '?', '[', '{']) {
        return Some("has a wildcard before the role name".into());
    }
    let concrete: String = pattern
        .chars()
        .map(|ch| if "*?[]{}!,".contains(ch) { 'x' } else { ch })
        .collect();
    match RoleArn::parse(&concrete) {
        Err(e) => Some(format!("is not a role ARN: {e}")),
        Ok(arn) if !arn.is_under_path(path) => Some(format!("is outside the elevatable path {path}")),
        Ok(arn) if !accounts.contains(arn.account()) => Some("is in an account the rule does not list".into()),
        Ok(_) => None,
    }
}

fn statement(
    c: &mut Collector,
    set_at: &Path,
    set: &str,
    index: usize,
    s: StatementDoc,
    exceptions: &[Guardrail],
) -> Option<Statement> {
    let here = set_at.key("statements").index(index);
    let where_ = format!("permission set {set}, statement {}", index + 1);
    let mut violations = Vec::new();
    if s.actions.is_empty() == s.not_actions.is_empty() {
        c.push(
            &here,
            format!("{where_}: give exactly one of actions or not_actions"),
            None,
        );
        return None;
    }
    if s.resources.is_empty() == s.not_resources.is_empty() {
        c.push(
            &here,
            format!("{where_}: give exactly one of resources or not_resources"),
            None,
        );
        return None;
    }
    if let Some(sid) = s
        .sid
        .as_ref()
        .filter(|sid| sid.is_empty() || !sid.chars().all(|ch| ch.is_ascii_alphanumeric()))
    {
        c.push(
            &here.key("sid"),
            format!("{where_}: sid {sid:?} must be ASCII letters and digits"),
            None,
        );
    }
    if let Some(sid) = s
        .sid
        .as_ref()
        .filter(|sid| sid.eq_ignore_ascii_case(crate::probe::PROBE_SID))
    {
        c.push(
            &here.key("sid"),
            format!("{where_}: sid {sid:?} is Latch's own (the propagation probe every grant carries)"),
            Some("choose another sid"),
        );
    }
    let listed = |field: &str, list: &[String]| -> Vec<(Path, String)> {
        list.iter()
            .enumerate()
            .map(|(i, a)| (here.key(field).index(i), a.clone()))
            .collect()
    };
    let actions = listed("actions", &s.actions)
        .into_iter()
        .chain(listed("not_actions", &s.not_actions));
    for (action_at, a) in actions {
        let Some((service, name)) = a
            .split_once(':')
            .filter(|(svc, n)| !svc.is_empty() && !n.is_empty())
            .or(if a == "*" { Some(("*", "*")) } else { None })
        else {
            c.push(
                &action_at,
                format!("{where_}: action {a:?} is not service:Action"),
                None,
            );
            continue;
        };
        if service.contains(['*', '?']) {
            violations.push((Guardrail::WildcardAction, a.clone(), action_at));
        } else if service.eq_ignore_ascii_case("iam") && name.contains(['*', '?']) {
            violations.push((Guardrail::IamWildcard, a.clone(), action_at));
        }
    }
    if !s.not_actions.is_empty() {
        violations.push((Guardrail::NotAction, "not_actions".into(), here.key("not_actions")));
    }
    if !s.not_resources.is_empty() {
        violations.push((
            Guardrail::NotResource,
            "not_resources".into(),
            here.key("not_resources"),
        ));
    }
    for (guardrail, what, what_at) in violations {
        if !exceptions.contains(&guardrail) {
            c.push(
                &what_at,
                format!("{where_}: {what:?} breaks guardrail {guardrail}"),
                Some(&format!(
                    "narrow it, or opt in with guardrail_exceptions: [{guardrail}] on the permission set"
                )),
            );
        }
    }
    for operator in s.conditions.keys().filter(|op| !is_condition_operator(op)) {
        c.push(
            &here.key("conditions").key(operator),
            format!("{where_}: condition operator {operator:?} is not one IAM documents, spelled as it does"),
            Some("e.g. StringEquals, ArnLike, DateLessThan, ForAnyValue:StringLike, StringEqualsIfExists"),
        );
    }
    // IAM matches condition keys case-insensitively (https://docs.aws.amazon.com/IAM/latest/
    // UserGuide/reference_policies_elements_condition.html): so must the check for Latch's own
    // keys, in every operator. A key name outside ASCII could fold onto one of them in a
    // Unicode-aware comparison (`awſ:CurrentTime`); no IAM key name has such a character.
    for (operator, block) in &s.conditions {
        let Some(keys) = block.as_object() else { continue };
        for key in keys.keys() {
            let name = key.split('/').next().unwrap_or(key);
            if !name.is_ascii() {
                c.push(
                    &here.key("conditions").key(operator).key(key),
                    format!("{where_}: condition key {key:?} has a character outside ASCII before any '/'"),
                    Some("condition key names are ASCII, such as aws:SourceIp or s3:prefix"),
                );
            }
            if key.eq_ignore_ascii_case("aws:CurrentTime") || key.eq_ignore_ascii_case(super::render::SESSION_KEY) {
                c.push(
                    &here.key("conditions"),
                    format!(
                        "{where_}: {operator} {key} is reserved: Latch sets it (the grant's expiry, the bound session)"
                    ),
                    None,
                );
            }
        }
    }
    if s.conditions.values().any(|v| !v.is_object()) {
        c.push(
            &here.key("conditions"),
            format!("{where_}: each condition operator maps to {{key: value}}"),
            None,
        );
    }
    let mut templates = |field: &str, list: Vec<String>| -> Vec<ResourceTemplate> {
        list.into_iter()
            .enumerate()
            .filter_map(|(i, r)| match ResourceTemplate::parse(&r) {
                Ok(t) => Some(t),
                Err(e) => {
                    c.push(
                        &here.key(field).index(i),
                        format!("{where_}: resource {r:?}: {e}"),
                        Some("placeholders are ${pipeline} ${job} ${account} ${region}"),
                    );
                    None
                }
            })
            .collect()
    };
    let resources = templates("resources", s.resources);
    let not_resources = templates("not_resources", s.not_resources);
    Some(Statement {
        sid: s.sid,
        effect: s.effect,
        actions: s.actions,
        resources,
        not_actions: s.not_actions,
        not_resources,
        conditions: s.conditions,
    })
}

/// IAM's condition operators, spelled exactly as documented
/// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html),
/// with an optional `ForAllValues:`/`ForAnyValue:` prefix and `IfExists` suffix (not on `Null`).
/// A case variant is refused: beside Latch's own `DateLessThan` block it would be a second block
/// for one operator, and which one IAM honours is not Latch's to guess.
fn is_condition_operator(operator: &str) -> bool {
    const OPERATORS: &[&str] = &[
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
        "NumericEquals",
        "NumericNotEquals",
        "NumericLessThan",
        "NumericLessThanEquals",
        "NumericGreaterThan",
        "NumericGreaterThanEquals",
        "DateEquals",
        "DateNotEquals",
        "DateLessThan",
        "DateLessThanEquals",
        "DateGreaterThan",
        "DateGreaterThanEquals",
        "Bool",
        "BinaryEquals",
        "IpAddress",
        "NotIpAddress",
        "ArnEquals",
        "ArnLike",
        "ArnNotEquals",
        "ArnNotLike",
    ];
    let unqualified = operator
        .strip_prefix("ForAllValues:")
        .or_else(|| operator.strip_prefix("ForAnyValue:"))
        .unwrap_or(operator);
    let base = unqualified.strip_suffix("IfExists").unwrap_or(unqualified);
    OPERATORS.contains(&base) || operator == "Null"
}

/// Refuses every catalogued escalation method a set could use at the worst case of a rule that
/// grants it, unless the set names the method under `allow_escalation`; warns about names it
/// lists but does not need. Each problem is placed at the set's action that reaches the method.
fn check_catalogue(c: &mut Collector, policy: &Policy) {
    let mut reported: Vec<(&Name, &'static str)> = Vec::new();
    let mut needed: Vec<(&Name, &'static str)> = Vec::new();
    for case in policy.worst_cases() {
        let set = case.set;
        for used in super::guardrails::methods_used(&set.statements, &case.widest) {
            let key = (&set.name, used.method.name);
            if !needed.contains(&key) {
                needed.push(key);
            }
            if set.allow_escalation.iter().any(|a| a == used.method.name) || reported.contains(&key) {
                continue;
            }
            reported.push(key);
            let action_at = used_action_at(c, set, used.statement, &used.action);
            let under = match (case.rule, &used.resource) {
                (Some(rule), Some(resource)) => format!(" (rule {rule} can render {resource})"),
                (None, Some(resource)) => format!(" (unbounded, it can render {resource})"),
                (_, None) => String::new(),
            };
            c.push(
                &action_at,
                format!(
                    "permission set {}, statement {}: {:?} uses escalation method {}{under}: {}",
                    set.name,
                    used.statement + 1,
                    used.action,
                    used.method.name,
                    used.method.why
                ),
                Some(&format!(
                    "narrow it, or name it under allow_escalation: [{}] on the permission set; `latch policy check --guardrails` lists the catalogue",
                    used.method.name
                )),
            );
        }
    }
    for set in policy.permission_sets.values() {
        for (i, name) in set.allow_escalation.iter().enumerate() {
            if super::guardrails::method(name).is_some() && !needed.contains(&(&set.name, name.as_str())) {
                c.warn(
                    &at("permission_sets")
                        .key(set.name.as_str())
                        .key("allow_escalation")
                        .index(i),
                    format!(
                        "permission set {}: allow_escalation names {name}, which it does not use",
                        set.name
                    ),
                    Some("remove it, so the exception cannot cover a later edit unnoticed"),
                );
            }
        }
    }
}

/// Where a set's statement names the action that reaches an escalation method: the action in
/// `actions` or `not_actions`, or the `not_actions` key when the statement grants by exclusion.
fn used_action_at(c: &Collector, set: &PermissionSet, statement: usize, action: &str) -> Path {
    let origin = c
        .statement_origins
        .get(&set.name)
        .and_then(|o| o.get(statement).copied())
        .unwrap_or(statement);
    let here = at("permission_sets")
        .key(set.name.as_str())
        .key("statements")
        .index(origin);
    let Some(s) = set.statements.get(statement) else {
        return here;
    };
    if let Some(i) = s.actions.iter().position(|a| a == action) {
        here.key("actions").index(i)
    } else if let Some(i) = s.not_actions.iter().position(|a| a == action) {
        here.key("not_actions").index(i)
    } else if !s.not_actions.is_empty() {
        here.key("not_actions")
    } else {
        here
    }
}
