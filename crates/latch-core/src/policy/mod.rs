//! Policy-as-code: which trusted publisher may get which permission set on which role, for how long.
//!
//! A policy file (YAML, see `infra/policies.yaml`) is loaded and validated once, up front:
//! unknown keys, unknown permission-set names, roles outside the elevatable path, bad durations
//! and guardrail violations are [`LoadError`]s that carry the file position. A loaded [`Policy`]
//! is therefore always safe to decide with. Decisions deny by default: a request is allowed only
//! by a rule whose trusted fields (`source`, `account`) match, whose identity matches — for a
//! verified rule, a token from its issuer whose signed claims match every `claims:` pattern;
//! for an `identity: claimed` rule, the publisher's own pipeline/ref/environment claims — and
//! which lists the role and the permission set and allows the duration.
//!
//! Each set is also checked, at load, against the guardrail catalogue ([`CATALOGUE`]) at its
//! worst case: rendered with the widest values every rule that grants it lets each placeholder
//! take ([`Policy::worst_cases`]).

pub(crate) mod file;
mod guardrails;
mod positions;
pub(crate) mod render;

use std::collections::BTreeMap;

use globset::GlobMatcher;
use serde_json::{Map, Value};

pub use file::{DEFAULT_BUILDSPEC, Guardrail, LoadError, Problem};
pub use guardrails::{CATALOGUE, Method, Use, method, methods_used, wildcards_intersect};
pub use render::{
    MAX_POLICY_CHARS, PolicyDocument, RenderContext, RenderError, ResourceTemplate, Widest, is_safe_placeholder_value,
};

use crate::event::{Envelope, StartRequest};
use crate::grant::DenyReason;
use crate::identity::claims::REFUSED_TRIGGERS;
use crate::identity::{Issuer, IssuerKind, Verified};
use crate::model::{AccountId, GrantDuration, JobContext, Name, RoleArn};
use crate::native::{NativeJob, SOURCE_CODEBUILD, SOURCE_CODEPIPELINE};

/// The IAM path every elevatable role sits under, unless the file says otherwise.
pub const DEFAULT_ELEVATABLE_PATH: &str = "/latch/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum Effect {
    Allow,
    Deny,
}

/// One IAM statement of a permission set, as validated at load time.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub actions: Vec<String>,
    pub resources: Vec<ResourceTemplate>,
    pub not_actions: Vec<String>,
    pub not_resources: Vec<ResourceTemplate>,
    /// The set's own IAM condition block; the expiry condition is merged into it on rendering.
    pub conditions: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct PermissionSet {
    pub name: Name,
    pub description: String,
    pub max_duration: GrantDuration,
    pub statements: Vec<Statement>,
    /// Catalogued escalation methods ([`CATALOGUE`]) this set may use anyway, by name.
    pub allow_escalation: Vec<String>,
}

impl PermissionSet {
    /// Every action the set can grant, for audit summaries.
    pub fn actions(&self) -> Vec<String> {
        let mut all: Vec<String> = self.statements.iter().flat_map(|s| s.actions.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }
}

/// A glob with the text it was written as, so decisions and errors can quote it.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn is_match(&self, candidate: &str) -> bool {
        self.matcher.is_match(candidate)
    }
}

/// A verified claim and the globs one of which it must match.
#[derive(Debug, Clone)]
pub struct ClaimPattern {
    pub claim: String,
    pub patterns: Vec<Pattern>,
}

/// Whom a rule trusts to say who the job is.
#[derive(Debug, Clone)]
pub enum RuleIdentity {
    /// Only `source` and `account` are trusted; the rest is the publisher's word.
    Claimed,
    /// A token from `issuer` whose signed claims match every pattern.
    Verified { issuer: Name, claims: Vec<ClaimPattern> },
}

impl PartialEq for RuleIdentity {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Claimed, Self::Claimed) => true,
            (Self::Verified { issuer: a, .. }, Self::Verified { issuer: b, .. }) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Name,
    pub identity: RuleIdentity,
    /// Refused triggers ([`REFUSED_TRIGGERS`]) this rule accepts anyway, by name.
    pub allow_triggers: Vec<String>,
    /// Every statement also requires the job's own role session ([`crate::identity::claims::session_name`]).
    pub bind_session: bool,
    /// How long a grant may last with its extensions; `None`: no extensions.
    pub max_total: Option<GrantDuration>,
    pub sources: Vec<String>,
    pub accounts: Vec<AccountId>,
    pub pipelines: Vec<Pattern>,
    /// `None`: any ref (or none). `Some`: the event must claim a ref matching one of these.
    pub refs: Option<Vec<Pattern>>,
    /// `None`: any environment. `Some`: the event must claim one of these.
    pub environments: Option<Vec<String>>,
    pub roles: Vec<Pattern>,
    pub permission_sets: Vec<Name>,
    pub max_duration: GrantDuration,
    pub max_active_grants_per_role: Option<u32>,
}

/// Signed claims that say what a job runs on rather than whose it is: the requester can change
/// them (another branch, another environment), so a denial may name them.
const NARROWING_CLAIMS: &[&str] = &["ref", "ref_type", "ref_protected", "environment"];

fn any_match(patterns: &[Pattern], candidate: &str) -> bool {
    patterns.iter().any(|p| p.is_match(candidate))
}

impl Rule {
    /// The widest value each placeholder can take in this rule's grants. `${pipeline}` is what
    /// the rule's pipeline globs admit or, for a GitHub or GitLab rule that binds the repository
    /// or project, that claim's last segment (the pipeline is derived from it); `${job}` and
    /// `${region}` are anything; `${account}` one of the rule's accounts.
    pub fn widest(&self, issuers: &[Issuer]) -> Widest {
        let declared: Vec<String> = self
            .pipelines
            .iter()
            .map(|p| guardrails::iam_wildcard_of_glob(&p.text))
            .collect();
        let pipeline = match &self.identity {
            RuleIdentity::Claimed => declared,
            RuleIdentity::Verified { issuer, claims } => {
                let naming_claim = match issuers.iter().find(|i| &i.name == issuer).map(|i| i.kind) {
                    Some(IssuerKind::GitHub) => Some("repository"),
                    Some(IssuerKind::GitLab) => Some("project_path"),
                    _ => None,
                };
                let derived: Option<Vec<String>> = naming_claim
                    .and_then(|name| claims.iter().find(|c| c.claim == name))
                    .map(|c| c.patterns.iter().map(|p| last_segment_wildcard(&p.text)).collect());
                match derived {
                    Some(d) if !d.is_empty() && !d.iter().any(|v| v == "*") => d,
                    _ => declared,
                }
            }
        };
        Widest {
            pipeline,
            job: vec!["*".to_owned()],
            account: self.accounts.iter().map(|a| a.as_str().to_owned()).collect(),
            region: vec!["*".to_owned()],
            session: self.bind_session,
        }
    }

    /// Whether the bus-level facts EventBridge guarantees fit this rule.
    fn trusts_publisher(&self, envelope: &Envelope) -> bool {
        self.sources.iter().any(|s| s == &envelope.source) && self.accounts.contains(&envelope.account)
    }

    /// `Ok` when the rule admits who is asking; otherwise how close it came
    /// ([`DenyReason::UntrustedTrigger`]: everything matched but what started the run;
    /// [`DenyReason::FieldMismatch`]: the rule names this role and set, and one of the job's
    /// fields (its ref or environment, claimed or signed) is missing or does not match, which
    /// the refusal names).
    fn admits(&self, envelope: &Envelope, request: &StartRequest, verified: Option<&Verified>) -> Result<(), Refusal> {
        let no = Err(Refusal::from(DenyReason::NoMatchingRule));
        if !self.trusts_publisher(envelope) || !any_match(&self.pipelines, &request.job.pipeline) {
            return no;
        }
        // A field is worth naming only when changing it would let this rule grant what was asked.
        let mismatch = |field: &str, wanted: &[&str], got: Option<&str>| {
            if any_match(&self.roles, request.role.as_str()) && self.permission_sets.contains(&request.permission_set) {
                Err(Refusal::field_mismatch(&self.name, field, wanted, got))
            } else {
                no.clone()
            }
        };
        match &self.identity {
            RuleIdentity::Claimed => {
                if let Some(refs) = &self.refs {
                    let git_ref = request.context.git_ref.as_deref();
                    if !git_ref.is_some_and(|r| any_match(refs, r)) {
                        let wanted: Vec<&str> = refs.iter().map(|p| p.text.as_str()).collect();
                        return mismatch("ref", &wanted, git_ref);
                    }
                }
                if let Some(envs) = &self.environments {
                    let environment = request.context.environment.as_deref();
                    if !environment.is_some_and(|e| envs.iter().any(|allowed| allowed == e)) {
                        let wanted: Vec<&str> = envs.iter().map(String::as_str).collect();
                        return mismatch("environment", &wanted, environment);
                    }
                }
                Ok(())
            }
            RuleIdentity::Verified { issuer, claims } => {
                let Some(v) = verified.filter(|v| &v.token.issuer == issuer) else {
                    return no;
                };
                let value_of = |c: &ClaimPattern| v.token.claims.get(&c.claim).map(String::as_str);
                let fails = |c: &&ClaimPattern| !value_of(c).is_some_and(|value| any_match(&c.patterns, value));
                // Who the job is decides whether the rule is about it at all: a mismatch there is
                // no rule, and the rule's identity patterns are not told to a stranger.
                if claims
                    .iter()
                    .filter(|c| !NARROWING_CLAIMS.contains(&c.claim.as_str()))
                    .any(|c| fails(&c))
                {
                    return no;
                }
                if let Some(c) = claims.iter().find(fails) {
                    let wanted: Vec<&str> = c.patterns.iter().map(|p| p.text.as_str()).collect();
                    return mismatch(&c.claim, &wanted, value_of(c));
                }
                match v.job.trigger.as_deref() {
                    Some(t) if REFUSED_TRIGGERS.contains(&t) && !self.allow_triggers.iter().any(|a| a == t) => {
                        Err(DenyReason::UntrustedTrigger.into())
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

/// Why the policy refused a request: the reason and, when a field is at fault, which one and
/// what the rule wanted, so the requester learns what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: DenyReason,
    pub detail: Option<String>,
}

impl From<DenyReason> for Refusal {
    fn from(reason: DenyReason) -> Self {
        Self { reason, detail: None }
    }
}

impl Refusal {
    /// `field` of the request is `got` where rule `rule` wants one of `wanted`.
    fn field_mismatch(rule: &Name, field: &str, wanted: &[&str], got: Option<&str>) -> Self {
        let got = got.map_or_else(|| "none".to_owned(), |g| format!("{g:?}"));
        Self {
            reason: DenyReason::FieldMismatch,
            detail: Some(format!(
                "{field}: rule {rule} wants {}; the request has {got}",
                wanted.join(" or ")
            )),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{} ({detail})", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// Which native AWS job a [`NativeRule`] elevates.
#[derive(Debug, Clone)]
#[expect(clippy::large_enum_variant, reason = "a handful per policy file, built once at load")]
pub enum NativeTrigger {
    CodePipeline {
        pipeline: Pattern,
        stage: Pattern,
        action: Pattern,
        checks: ExecutionChecks,
    },
    CodeBuild {
        project: Pattern,
        checks: BuildChecks,
    },
}

/// What a native CodeBuild rule demands of the build `BatchGetBuilds` reports.
#[derive(Debug, Clone)]
pub struct BuildChecks {
    /// One of these must match the build's initiator; `None`: any initiator.
    pub initiators: Option<Vec<Pattern>>,
    /// One of these must match the build's source version (`pr/*` is a pull request);
    /// `None`: any version.
    pub source_versions: Option<Vec<Pattern>>,
    /// The buildspec the build must run: a path in its source. `None` when the rule opted in to
    /// any buildspec (`allow_buildspec_override: true`).
    pub buildspec: Option<String>,
    /// Whether the build must run as the rule's role (default): a build of the project started
    /// with another service role gets no grant on the rule's role.
    pub require_service_role: bool,
}

/// What a native CodePipeline rule demands of the execution `GetPipelineExecution` reports.
#[derive(Debug, Clone)]
pub struct ExecutionChecks {
    /// One of these must match the execution's trigger detail (the caller's ARN for
    /// `StartPipelineExecution`, the webhook's ARN, …); `None`: any.
    pub initiators: Option<Vec<Pattern>>,
    /// The trigger types allowed (`Webhook`, `StartPipelineExecution`, …); `None`: any.
    pub triggers: Option<Vec<String>>,
}

impl NativeTrigger {
    fn matches(&self, job: &NativeJob) -> bool {
        match (self, job) {
            (
                Self::CodePipeline {
                    pipeline,
                    stage,
                    action,
                    ..
                },
                NativeJob::CodePipelineAction {
                    pipeline: p,
                    stage: s,
                    action: a,
                    ..
                },
            ) => pipeline.is_match(p) && stage.is_match(s) && action.is_match(a),
            (Self::CodeBuild { project, .. }, NativeJob::CodeBuild { project: p, .. }) => project.is_match(p),
            _ => false,
        }
    }
}

/// A rule for native CodePipeline/CodeBuild events. The event names no role and asks for no
/// permission set, so the rule gives both, and the duration; the role's account must be the
/// event's (trusted) account.
#[derive(Debug, Clone)]
pub struct NativeRule {
    pub name: Name,
    pub trigger: NativeTrigger,
    pub role: RoleArn,
    pub permission_set: Name,
    pub duration: GrantDuration,
    pub max_active_grants_per_role: Option<u32>,
}

impl NativeRule {
    /// The widest value each placeholder can take in this rule's grants: AWS's own names, as
    /// the trigger's globs admit them (`${job}` is `stage.action`, or `build`).
    pub fn widest(&self) -> Widest {
        let glob = |p: &Pattern| guardrails::iam_wildcard_of_glob(&p.text);
        let (pipeline, job) = match &self.trigger {
            NativeTrigger::CodePipeline {
                pipeline,
                stage,
                action,
                ..
            } => (glob(pipeline), format!("{}.{}", glob(stage), glob(action))),
            NativeTrigger::CodeBuild { project, .. } => (glob(project), "build".to_owned()),
        };
        Widest {
            pipeline: vec![pipeline],
            job: vec![job],
            account: vec![self.role.account().as_str().to_owned()],
            region: vec!["*".to_owned()],
            session: false,
        }
    }
}

/// A repository or project glob's last path segment, as the pipeline name derived from it;
/// `*` when a wildcard or alternation could reach across segments.
fn last_segment_wildcard(glob: &str) -> String {
    let last = glob.rsplit('/').next().unwrap_or(glob);
    if glob.contains(['{', '}']) || last.contains("**") {
        "*".to_owned()
    } else {
        guardrails::iam_wildcard_of_glob(last)
    }
}

/// A permission set as one rule can grant it, at its widest.
#[derive(Debug, Clone)]
pub struct WorstCase<'p> {
    /// The rule (or native rule) that grants it; `None` for a set no rule grants.
    pub rule: Option<&'p Name>,
    pub set: &'p PermissionSet,
    pub widest: Widest,
}

/// An `aws.codepipeline` job must come from `aws.codepipeline`, and so on.
fn native_source_matches(source: &str, job: &NativeJob) -> bool {
    match job {
        NativeJob::CodePipelineAction { .. } => source == SOURCE_CODEPIPELINE,
        NativeJob::CodeBuild { .. } => source == SOURCE_CODEBUILD,
    }
}

/// A validated policy file.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file's `label:`, its version as its owners name it.
    pub label: Option<String>,
    /// SHA-256 (hex) of the file's bytes as loaded: which exact file decided.
    pub file_sha256: String,
    pub elevatable_path: String,
    pub issuers: Vec<Issuer>,
    pub permission_sets: BTreeMap<Name, PermissionSet>,
    pub rules: Vec<Rule>,
    pub native: Vec<NativeRule>,
    /// Each publisher's share of new grants.
    pub fair_share: FairShare,
    /// What loads but deserves a second look (rules that trust claimed identity).
    pub warnings: Vec<Problem>,
}

/// How many new grants a publisher may get per minute: one flooding publisher is refused
/// (`rate_limited`) while the others still get theirs. A publisher is a source and, when the
/// job's identity is verified, its repository or project; for native jobs, the pipeline or
/// project AWS names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairShare {
    pub grants_per_minute: u32,
    /// Per-source limits that replace the default.
    pub sources: BTreeMap<String, u32>,
}

impl FairShare {
    /// Allowed when the file says nothing: well above one busy repository's jobs per minute.
    pub const DEFAULT_GRANTS_PER_MINUTE: u32 = 120;
    /// The most a file may allow: more is no limit at all, and a typo of one.
    pub const MAX_GRANTS_PER_MINUTE: u32 = 100_000;

    /// The limit for publishers of `source`.
    pub fn limit_for(&self, source: &str) -> u32 {
        self.sources.get(source).copied().unwrap_or(self.grants_per_minute)
    }
}

impl Default for FairShare {
    fn default() -> Self {
        Self {
            grants_per_minute: Self::DEFAULT_GRANTS_PER_MINUTE,
            sources: BTreeMap::new(),
        }
    }
}

/// What a request was allowed by.
#[derive(Debug, Clone, Copy)]
pub struct Allowed<'p> {
    pub rule: &'p Name,
    pub max_active_grants_per_role: Option<u32>,
    pub permission_set: &'p PermissionSet,
    pub bind_session: bool,
    pub max_total: Option<GrantDuration>,
}

impl Policy {
    /// Parses and validates a policy file; `origin` (usually the path) prefixes error positions.
    pub fn load(text: &str, origin: &str) -> Result<Self, LoadError> {
        file::load(text, origin)
    }

    /// Reads and loads the policy file at `path`.
    pub fn load_path(path: &std::path::Path) -> Result<Self, LoadError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::unreadable(&origin, e))?;
        Self::load(&text, &origin)
    }

    /// Deny by default. When several rules get part of the way, the reason reported is the
    /// one from the rule that got furthest, so the requester learns what to change.
    ///
    /// `verified` is the requester's verified identity, when its event carried a token that
    /// verified; `request.job` and `request.context` must already be the reconciled ones.
    pub fn decide(
        &self,
        envelope: &Envelope,
        request: &StartRequest,
        verified: Option<&Verified>,
    ) -> Result<Allowed<'_>, Refusal> {
        if !request.role.is_under_path(&self.elevatable_path) || request.role.account() != &envelope.account {
            return Err(DenyReason::RoleNotEligible.into());
        }
        let Some(permission_set) = self.permission_sets.get(&request.permission_set) else {
            return Err(DenyReason::PermissionSetUnknown.into());
        };
        let mut closest = Refusal::from(DenyReason::NoMatchingRule);
        let mut admitted_any = false;
        for rule in &self.rules {
            let refusal = match rule.admits(envelope, request, verified) {
                Ok(()) => {
                    admitted_any = true;
                    if !any_match(&rule.roles, request.role.as_str()) {
                        DenyReason::RoleNotEligible.into()
                    } else if !rule.permission_sets.contains(&request.permission_set) {
                        DenyReason::PermissionSetNotAllowed.into()
                    } else if request.duration > rule.max_duration.min(permission_set.max_duration) {
                        DenyReason::DurationOverMax.into()
                    } else {
                        return Ok(Allowed {
                            rule: &rule.name,
                            max_active_grants_per_role: rule.max_active_grants_per_role,
                            permission_set,
                            bind_session: rule.bind_session,
                            max_total: rule.max_total,
                        });
                    }
                }
                Err(refusal) => refusal,
            };
            if refusal.reason > closest.reason {
                closest = refusal;
            }
        }
        // Nothing admitted an unproven requester, but a verified rule trusts its publisher:
        // say what is missing rather than that no rule exists.
        let nothing_came_close = closest.reason == DenyReason::NoMatchingRule;
        if !admitted_any && nothing_came_close && verified.is_none() && self.wants_token(envelope) {
            return Err(DenyReason::TokenMissing.into());
        }
        Err(closest)
    }

    /// Whether a verified rule trusts this publisher (its events should carry tokens).
    pub fn wants_token(&self, envelope: &Envelope) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.identity, RuleIdentity::Verified { .. }) && r.trusts_publisher(envelope))
    }

    /// Whether an `identity: claimed` rule trusts this publisher: only then may its events
    /// finish jobs without a token.
    pub fn trusts_claims_of(&self, envelope: &Envelope) -> bool {
        self.rules
            .iter()
            .any(|r| r.identity == RuleIdentity::Claimed && r.trusts_publisher(envelope))
    }

    /// Whether the rule named `name` (or the native rule) lists this role: a role IAM spells
    /// differently from the request must still be one the rule names.
    pub fn rule_allows_role(&self, name: &Name, role: &RoleArn) -> bool {
        self.rules
            .iter()
            .filter(|r| &r.name == name)
            .any(|r| any_match(&r.roles, role.as_str()))
            || self.native.iter().any(|r| &r.name == name && &r.role == role)
    }

    /// The rule named `name`, if any (extensions look up the rule that granted).
    pub fn rule(&self, name: &Name) -> Option<&Rule> {
        self.rules.iter().find(|r| &r.name == name)
    }

    /// A native job's request, from the first native rule that names the job and whose role is
    /// in the event's account. The rule was checked against its permission set at load time.
    pub fn decide_native(
        &self,
        envelope: &Envelope,
        job: &NativeJob,
    ) -> Result<(StartRequest, Allowed<'_>), DenyReason> {
        if !native_source_matches(&envelope.source, job) {
            return Err(DenyReason::UnsupportedEvent);
        }
        let rule = self
            .native
            .iter()
            .find(|r| r.trigger.matches(job) && r.role.account() == &envelope.account)
            .ok_or(DenyReason::NoMatchingRule)?;
        let permission_set = self
            .permission_sets
            .get(&rule.permission_set)
            .ok_or(DenyReason::PermissionSetUnknown)?;
        let request = StartRequest {
            job: job.key(),
            role: rule.role.clone(),
            permission_set: rule.permission_set.clone(),
            duration: rule.duration,
            context: JobContext::default(),
            token: None,
        };
        let allowed = Allowed {
            rule: &rule.name,
            max_active_grants_per_role: rule.max_active_grants_per_role,
            permission_set,
            bind_session: false,
            max_total: None,
        };
        Ok((request, allowed))
    }

    /// The native rule named `name`, if any (a native start checks its run against it).
    pub fn native_rule(&self, name: &Name) -> Option<&NativeRule> {
        self.native.iter().find(|r| &r.name == name)
    }

    /// Whether any native rule names this job (whatever the account): its end is worth acting on.
    pub fn manages_native(&self, job: &NativeJob) -> bool {
        self.native.iter().any(|r| r.trigger.matches(job))
    }

    /// Whether any rule, native or not, may elevate this role (drift repair looks only there).
    pub fn is_eligible_role(&self, role: &RoleArn) -> bool {
        self.rules
            .iter()
            .flat_map(|r| r.roles.iter())
            .any(|p| p.is_match(role.as_str()))
            || self.native.iter().any(|r| &r.role == role)
    }

    /// Every set as each rule that grants it can render it at its widest, rules in file order
    /// then native rules; a set no rule grants, once, with every placeholder unbounded.
    pub fn worst_cases(&self) -> Vec<WorstCase<'_>> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for name in &rule.permission_sets {
                if let Some(set) = self.permission_sets.get(name) {
                    out.push(WorstCase {
                        rule: Some(&rule.name),
                        set,
                        widest: rule.widest(&self.issuers),
                    });
                }
            }
        }
        for rule in &self.native {
            if let Some(set) = self.permission_sets.get(&rule.permission_set) {
                out.push(WorstCase {
                    rule: Some(&rule.name),
                    set,
                    widest: rule.widest(),
                });
            }
        }
        for set in self.permission_sets.values() {
            if !out.iter().any(|w| w.set.name == set.name) {
                out.push(WorstCase {
                    rule: None,
                    set,
                    widest: Widest::anything(),
                });
            }
        }
        out
    }

    /// Every role a rule names exactly, without wildcards (the roles `latch dev` provisions).
    pub fn exact_roles(&self) -> Vec<RoleArn> {
        let patterned = self
            .rules
            .iter()
            .flat_map(|r| r.roles.iter())
            .filter_map(|p| RoleArn::parse(&p.text).ok());
        let mut roles: Vec<RoleArn> = patterned.chain(self.native.iter().map(|r| r.role.clone())).collect();
        roles.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        roles.dedup();
        roles
    }
}

impl Policy {
    /// Problems for every rule naming roles outside `account`, the account Latch runs in (the
    /// loader already refuses a wildcard account). Latch elevates roles in its own account only
    /// (IAM is per account, and it resolves roles there): the functions refuse such a file at
    /// init, and role resolution refuses such a role at run time (`role_in_other_account`).
    pub fn roles_outside_account(&self, account: &AccountId) -> Vec<Problem> {
        let account_of = |arn: &str| arn.split(':').nth(4).map(str::to_owned).unwrap_or_default();
        let patterned = self
            .rules
            .iter()
            .flat_map(|r| r.roles.iter().map(move |p| (r.name.as_str(), p.text.clone())));
        let native = self
            .native
            .iter()
            .map(|r| (r.name.as_str(), r.role.as_str().to_owned()));
        patterned
            .chain(native)
            .filter(|(_, arn)| account_of(arn) != account.as_str())
            .map(|(rule, arn)| Problem {
                line: None,
                column: None,
                message: format!(
                    "rule {rule} names {arn}, outside this deployment's account {}: \
                     `role_in_other_account`",
                    account.as_str()
                ),
                hint: Some("name roles in the account Latch is deployed in; deploy Latch in each account".into()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
