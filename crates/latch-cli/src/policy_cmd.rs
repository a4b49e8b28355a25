//! `latch policy check` and `latch policy explain`: the policy file, offline, loaded exactly as
//! the functions load it.
//!
//! Each command first works out what it found (a [`CheckReport`], an [`Explanation`]) and only
//! then renders it, as text for people or, with `--output json`, as one JSON object on stdout
//! for scripts; both forms carry the same facts and the same exit code (0 ok or allowed, 1 a
//! file that does not load, 3 denied). Warnings and denials stay on stderr in text form.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use latch_core::event::{DETAIL_TYPE_STARTED, StartRequest};
use latch_core::grant::DenyReason;
use latch_core::identity::claims::{ClaimsError, reconcile};
use latch_core::identity::verify::read_unverified;
use latch_core::identity::{IssuerKind, TokenError, Verified};
use latch_core::model::{GrantId, GrantIdentity, Name, RoleArn};
use latch_core::native::{NativeEvent, NativePhase, is_native};
use latch_core::policy::{CATALOGUE, LoadError, Policy, Problem, Refusal, RenderContext, RenderError};
use serde::Serialize;
use serde_json::{Value, json};

use crate::CliError;
use crate::client::Output;

/// Exit code of `explain` for a denied event (the table in docs/reference/cli.md).
const EXIT_DENIED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; print each problem as FILE:LINE with a hint. Exit 1 on any.
    /// Rules that trust claimed identity load, with a warning each. On success, print each
    /// permission set's worst-case document under each rule that grants it (every placeholder at
    /// the widest value the rule allows), the document the guardrails were checked against.
    Check {
        /// The policy file [default: infra/policies.yaml]
        file: Option<PathBuf>,
        /// List the guardrail catalogue (the escalation methods a set must name under
        /// allow_escalation to use), one line each, instead of checking a file.
        #[arg(long, conflicts_with = "file")]
        guardrails: bool,
        /// What stdout carries: `text`, or `json`: one object (file, ok, counts, warnings,
        /// problems, worst_cases; with --guardrails, the catalogue as an array).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show which rule allows or denies an event, and the exact policy document it would attach.
    ///
    /// An event's token is read offline: its claims decide as they would once verified, but its
    /// signature, audience and times are not checked. Exit codes: 0 allowed, 3 denied (the
    /// reason on stderr).
    Explain {
        /// A `Pipeline Job Started` event, or a native CodePipeline action / CodeBuild build state
        /// change, the whole EventBridge envelope (see events/).
        #[arg(long, value_name = "FILE")]
        event: PathBuf,
        /// The policy file [default: infra/policies.yaml]
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// What stdout carries: `text`, or `json`: one object (decision, rule, permission_set,
        /// expires_at, document, characters, sha256, reason, detail, token, state, job).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

fn default_policy(file: Option<PathBuf>) -> PathBuf {
    file.unwrap_or_else(|| PathBuf::from("infra/policies.yaml"))
}

fn load(path: &Path) -> Result<Policy, CliError> {
    Ok(Policy::load_path(path)?)
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode, CliError> {
    match cmd {
        PolicyCommand::Check {
            guardrails: true,
            output,
            ..
        } => print_guardrails(output),
        PolicyCommand::Check { file, output, .. } => check(&default_policy(file), output),
        PolicyCommand::Explain { event, policy, output } => {
            let explanation = explain(&event, &default_policy(policy))?;
            explanation.print(output)
        }
    }
}

fn print_guardrails(output: Output) -> Result<ExitCode, CliError> {
    let text = match output {
        Output::Json => {
            let methods: Vec<Value> = CATALOGUE
                .iter()
                .map(|m| json!({"name": m.name, "why": m.why, "sources": m.sources}))
                .collect();
            json_line(&methods)
        }
        Output::Text => CATALOGUE
            .iter()
            .map(|m| format!("{:<30} {} ({})\n", m.name, m.why, m.sources.join(" ")))
            .collect(),
    };
    crate::stdout::write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// One problem or warning of a policy file, where it sits.
#[derive(Debug, Serialize)]
struct Finding {
    line: Option<usize>,
    column: Option<usize>,
    message: String,
    hint: Option<String>,
}

impl From<&Problem> for Finding {
    fn from(p: &Problem) -> Self {
        Self {
            line: p.line,
            column: p.column,
            message: p.message.clone(),
            hint: p.hint.clone(),
        }
    }
}

/// A permission set at its widest under the rule that grants it: what the guardrails checked.
#[derive(Debug, Serialize)]
struct WorstCaseDocument {
    permission_set: String,
    /// `None`: no rule grants the set, so every placeholder is unbounded.
    rule: Option<String>,
    widest: String,
    document: Value,
}

/// What `policy check` found in one file.
#[derive(Debug, Serialize)]
struct CheckReport {
    file: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    permission_sets: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    native_rules: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elevatable_path: Option<String>,
    warnings: Vec<Finding>,
    problems: Vec<Finding>,
    worst_cases: Vec<WorstCaseDocument>,
}

impl CheckReport {
    fn of(origin: String, policy: &Policy) -> Self {
        let mut warnings: Vec<Finding> = policy.warnings.iter().map(Finding::from).collect();
        warnings.extend(quota_warnings(policy).into_iter().map(|message| Finding {
            line: None,
            column: None,
            message,
            hint: None,
        }));
        let worst_cases = policy
            .worst_cases()
            .into_iter()
            .map(|case| WorstCaseDocument {
                permission_set: case.set.name.to_string(),
                rule: case.rule.map(ToString::to_string),
                widest: case.widest.describe(),
                document: case.set.render_widest(&case.widest),
            })
            .collect();
        Self {
            file: origin,
            ok: true,
            permission_sets: Some(policy.permission_sets.len()),
            rules: Some(policy.rules.len()),
            native_rules: Some(policy.native.len()),
            elevatable_path: Some(policy.elevatable_path.to_string()),
            warnings,
            problems: Vec::new(),
            worst_cases,
        }
    }

    fn refused(origin: String, error: &LoadError) -> Self {
        Self {
            file: origin,
            ok: false,
            permission_sets: None,
            rules: None,
            native_rules: None,
            elevatable_path: None,
            warnings: Vec::new(),
            problems: error.problems.iter().map(Finding::from).collect(),
            worst_cases: Vec::new(),
        }
    }

    fn text(&self) -> String {
        let mut out = format!(
            "{}: ok ({} permission sets, {} rules, {} native rules, elevatable path {})\n",
            self.file,
            self.permission_sets.unwrap_or_default(),
            self.rules.unwrap_or_default(),
            self.native_rules.unwrap_or_default(),
            self.elevatable_path.as_deref().unwrap_or_default()
        );
        for case in &self.worst_cases {
            let granted_by = case
                .rule
                .as_ref()
                .map_or("no rule (every placeholder unbounded)".to_owned(), |r| {
                    format!("rule {r}")
                });
            out.push_str(&format!(
                "\nworst case of {} under {granted_by}: {}\n{}\n",
                case.permission_set,
                case.widest,
                serde_json::to_string_pretty(&case.document).unwrap_or_default()
            ));
        }
        out
    }
}

fn check(path: &Path, output: Output) -> Result<ExitCode, CliError> {
    let origin = path.display().to_string();
    let policy = match Policy::load_path(path) {
        Ok(policy) => policy,
        Err(error) => {
            // Scripts get the problems on stdout too; people get them on stderr (from main).
            if output == Output::Json {
                crate::stdout::write_all(json_line(&CheckReport::refused(origin, &error)).as_bytes())?;
            }
            return Err(error.into());
        }
    };
    let report = CheckReport::of(origin, &policy);
    for w in &report.warnings {
        let at = w.line.map_or(String::new(), |l| format!(":{l}"));
        let hint = w.hint.as_deref().map_or(String::new(), |h| format!(" (hint: {h})"));
        eprintln!("{}{at}: warning: {}{hint}", report.file, w.message);
    }
    let text = match output {
        Output::Json => json_line(&report),
        Output::Text => report.text(),
    };
    crate::stdout::write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// One JSON value and a newline: what `--output json` prints.
fn json_line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default() + "\n"
}

/// The identity a token claims, read without checking its signature, audience or times: what
/// the grant function would decide *if* it verifies. Refused as the function would refuse a
/// token it cannot even read, or whose claims contradict the event.
fn read_token(policy: &Policy, token: &str, request: &StartRequest) -> Result<Verified, (DenyReason, String)> {
    let refuse = |e: &TokenError| (DenyReason::from(e), e.to_string());
    let mut token = read_unverified(
        token,
        Name::parse("unknown").map_err(|e| (DenyReason::TokenMalformed, e.0))?,
        IssuerKind::Generic,
        chrono::Utc::now(),
    )
    .map_err(|e| refuse(&e))?;
    let issuer = policy
        .issuers
        .iter()
        .find(|i| i.url == token.issuer_url)
        .ok_or_else(|| refuse(&TokenError::UnknownIssuer(token.issuer_url.clone())))?;
    token.issuer = issuer.name.clone();
    token.kind = issuer.kind;
    let job = reconcile(&token, &request.job, &request.context).map_err(|e| {
        let reason = match e {
            ClaimsError::Mismatch { .. } => DenyReason::ClaimMismatch,
            _ => DenyReason::TokenMalformed,
        };
        (reason, e.to_string())
    })?;
    Ok(Verified { token, job })
}

/// Rules whose cap of grants on one role, each of its sets rendered as large as the rule allows
/// (every placeholder at its longest), cannot fit IAM's aggregate inline quota: the grants past
/// the quota would be denied `role_policy_quota` at run time.
fn quota_warnings(policy: &Policy) -> Vec<String> {
    use latch_core::ports::ROLE_INLINE_POLICY_QUOTA;
    let widest = "x".repeat(128);
    // The probe statement names the grant and the role's partition and account.
    let (Ok(widest_grant), Ok(widest_role)) = (
        GrantId::parse(&"0".repeat(32)),
        RoleArn::parse("arn:aws-us-gov:iam::123456789012:role/r"),
    ) else {
        return Vec::new();
    };
    // Any expiry: IAM's time format has a fixed width.
    let expires = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let mut out = Vec::new();
    for rule in &policy.rules {
        for set_name in &rule.permission_sets {
            let Some(set) = policy.permission_sets.get(set_name) else {
                continue;
            };
            let session = rule.bind_session.then(|| "latch-".to_owned() + &"0".repeat(24));
            let ctx = RenderContext {
                pipeline: &widest,
                job: &widest,
                account: "123456789012",
                region: "ap-southeast-3",
                session: session.as_deref(),
            };
            let Ok(doc) = set.render_for_grant(&ctx, expires, &widest_grant, &widest_role) else {
                continue;
            };
            let fit = ROLE_INLINE_POLICY_QUOTA / doc.chars().max(1);
            let cap = rule.max_active_grants_per_role.map_or(u32::MAX, |c| c) as usize;
            if cap > fit {
                let asked = rule
                    .max_active_grants_per_role
                    .map_or("no cap on live grants".to_owned(), |c| {
                        format!("a cap of {c} live grants")
                    });
                out.push(format!(
                    "rule {}: {asked} of {} (up to {} characters each at its widest) cannot all fit IAM's \
                     {ROLE_INLINE_POLICY_QUOTA}-character inline quota on one role; at most {fit} do, fewer beside the \
                     role's own policies (the rest are denied role_policy_quota)",
                    rule.name,
                    set.name,
                    doc.chars()
                ));
            }
        }
    }
    out
}

/// What the grant function would do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Allowed,
    Denied,
    /// A native end state of a job a native rule names: its grants are revoked.
    EndsJob,
    /// A native event no rule names: nothing is read or written.
    Ignored,
}

/// The identity a token claims, as read offline.
#[derive(Debug, Serialize)]
struct TokenSeen {
    issuer: String,
    principal: Option<String>,
}

/// `policy explain`'s answer, rendered as text or JSON.
#[derive(Debug, Serialize)]
struct Explanation {
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<TokenSeen>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permission_set: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Value>,
    /// The document's length as IAM counts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    characters: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// The denial's code, as the audit record and `latch request` name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// A native event's state (STOPPED, SUCCEEDED, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    /// The native job an end state names.
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<String>,
}

impl Explanation {
    fn of(decision: Decision) -> Self {
        Self {
            decision,
            token: None,
            rule: None,
            permission_set: None,
            expires_at: None,
            document: None,
            characters: None,
            sha256: None,
            reason: None,
            detail: None,
            state: None,
            job: None,
        }
    }

    fn denied(reason: DenyReason, detail: Option<String>) -> Self {
        Self {
            reason: Some(reason.to_string()),
            detail,
            ..Self::of(Decision::Denied)
        }
    }

    fn print(&self, output: Output) -> Result<ExitCode, CliError> {
        let text = match output {
            Output::Json => json_line(self),
            Output::Text => self.text(),
        };
        if self.decision == Decision::Denied {
            let reason = self.reason.as_deref().unwrap_or_default();
            match &self.detail {
                Some(detail) => eprintln!("denied: {reason}: {detail}"),
                None => eprintln!("denied: {reason}"),
            }
        }
        crate::stdout::write_all(text.as_bytes())?;
        Ok(match self.decision {
            Decision::Denied => ExitCode::from(EXIT_DENIED),
            _ => ExitCode::SUCCESS,
        })
    }

    fn text(&self) -> String {
        let or_blank = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut out = String::new();
        if let Some(t) = &self.token {
            out.push_str(&format!(
                "token: issuer {}, principal {} (offline: signature, audience and times are not checked)\n",
                t.issuer,
                t.principal.as_deref().unwrap_or("-")
            ));
        }
        match self.decision {
            Decision::Allowed => {
                out.push_str(&format!(
                    "allowed by rule {} (permission set {}, until {})\n",
                    or_blank(&self.rule),
                    or_blank(&self.permission_set),
                    or_blank(&self.expires_at)
                ));
                if let Some(doc) = &self.document {
                    out.push_str(&serde_json::to_string_pretty(doc).unwrap_or_default());
                    out.push('\n');
                }
                out.push_str(&format!(
                    "({} characters as IAM counts them, sha256 {})\n",
                    self.characters.unwrap_or_default(),
                    or_blank(&self.sha256)
                ));
            }
            Decision::EndsJob => out.push_str(&format!(
                "{}: ends job {}; its grants are revoked now\n",
                or_blank(&self.state),
                or_blank(&self.job)
            )),
            Decision::Ignored => out.push_str(&format!(
                "{}: no native rule names job {}; ignored\n",
                or_blank(&self.state),
                or_blank(&self.job)
            )),
            Decision::Denied => {}
        }
        out
    }
}

fn explain(event_path: &Path, policy_path: &Path) -> Result<Explanation, CliError> {
    let policy = load(policy_path)?;
    let text = std::fs::read_to_string(event_path).map_err(|source| CliError::Read {
        path: event_path.into(),
        source,
    })?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", event_path.display())))?;
    let event: aws_lambda_events::event::eventbridge::EventBridgeEvent<Value> =
        serde_json::from_value(raw).map_err(|e| {
            CliError::Usage(format!(
                "{} is not an EventBridge event envelope: {e}",
                event_path.display()
            ))
        })?;
    let envelope = grant::envelope(&event).map_err(|p| CliError::Usage(format!("the envelope is not trusted: {p}")))?;
    let size = serde_json::to_vec(&event.detail).map_or(usize::MAX, |b| b.len());
    let mut token_seen = None;
    let decided = if is_native(&envelope.detail_type, &envelope.source) {
        match NativeEvent::parse(&envelope.detail_type, &event.detail, size) {
            Err(e) => return Ok(Explanation::denied(DenyReason::MalformedEvent, Some(e.to_string()))),
            Ok(NativeEvent {
                job,
                phase: NativePhase::Ended { state },
            }) => {
                let decision = if policy.manages_native(&job) {
                    Decision::EndsJob
                } else {
                    Decision::Ignored
                };
                return Ok(Explanation {
                    state: Some(state.to_string()),
                    job: Some(job.key().to_string()),
                    ..Explanation::of(decision)
                });
            }
            Ok(NativeEvent { job, .. }) => policy.decide_native(&envelope, &job).map_err(Refusal::from),
        }
    } else if envelope.detail_type == DETAIL_TYPE_STARTED {
        let mut request = match StartRequest::parse(&event.detail, size) {
            Ok(r) => r,
            Err(e) => return Ok(Explanation::denied(DenyReason::MalformedEvent, Some(e.to_string()))),
        };
        let verified = match request.token.as_deref().map(|t| read_token(&policy, t, &request)) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err((reason, why))) => return Ok(Explanation::denied(reason, Some(why))),
        };
        if let Some(v) = &verified {
            token_seen = Some(TokenSeen {
                issuer: v.token.issuer.to_string(),
                principal: v.job.job.principal.clone(),
            });
            request.job = v.job.job.clone();
            request.context = v.job.context.clone();
        }
        policy
            .decide(&envelope, &request, verified.as_ref())
            .map(|allowed| (request, allowed))
    } else {
        return Err(CliError::Usage(format!(
            "detail-type is {:?}; explain takes {DETAIL_TYPE_STARTED:?} or a native CodePipeline/CodeBuild event",
            envelope.detail_type
        )));
    };
    let (request, allowed) = match decided {
        Ok(d) => d,
        // The reason, and when a field is at fault, which one and what the rule wants.
        Err(refusal) => {
            return Ok(Explanation {
                token: token_seen,
                ..Explanation::denied(refusal.reason, refusal.detail)
            });
        }
    };
    let expires = envelope.time + chrono::Duration::seconds(request.duration.as_secs() as i64);
    let session = (allowed.bind_session && request.job.principal.is_some())
        .then(|| latch_core::identity::claims::session_name(&request.job));
    let ctx = RenderContext {
        pipeline: &request.job.pipeline,
        job: &request.job.job,
        account: envelope.account.as_str(),
        region: &envelope.region,
        session: session.as_deref(),
    };
    let grant = GrantId::derive(GrantIdentity {
        account: &envelope.account,
        source: &envelope.source,
        job: &request.job,
        permission_set: &request.permission_set,
        role: &request.role,
    });
    match allowed
        .permission_set
        .render_for_grant(&ctx, expires, &grant, &request.role)
    {
        Ok(doc) => Ok(Explanation {
            token: token_seen,
            rule: Some(allowed.rule.to_string()),
            permission_set: Some(allowed.permission_set.name.to_string()),
            expires_at: Some(latch_core::iam_time(expires)),
            document: Some(serde_json::from_str(doc.as_json()).unwrap_or(Value::Null)),
            characters: Some(doc.chars()),
            sha256: Some(doc.sha256().to_owned()),
            ..Explanation::of(Decision::Allowed)
        }),
        Err(e) => {
            let reason = match e {
                RenderError::UnsafePlaceholderValue { .. } => DenyReason::UnsafePlaceholderValue,
                RenderError::TooLarge { .. } => DenyReason::PolicyTooLarge,
            };
            Ok(Explanation {
                token: token_seen,
                ..Explanation::denied(reason, Some(e.to_string()))
            })
        }
    }
}
