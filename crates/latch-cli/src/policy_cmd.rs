//! `latch policy check` and `latch policy explain`: the policy file, offline, loaded exactly as
//! the functions load it.

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
use latch_core::policy::{CATALOGUE, Policy, Refusal, RenderContext};
use serde_json::Value;

use crate::CliError;

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
        PolicyCommand::Check { guardrails: true, .. } => {
            for method in CATALOGUE {
                println!("{:<30} {} ({})", method.name, method.why, method.sources.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Check { file, .. } => {
            let path = default_policy(file);
            let policy = load(&path)?;
            let origin = path.display().to_string();
            for w in &policy.warnings {
                let at = w.line.map_or(String::new(), |l| format!(":{l}"));
                let hint = w.hint.as_deref().map_or(String::new(), |h| format!(" (hint: {h})"));
                eprintln!("{origin}{at}: warning: {}{hint}", w.message);
            }
            for w in quota_warnings(&policy) {
                eprintln!("{origin}: warning: {w}");
            }
            println!(
                "{}: ok ({} permission sets, {} rules, {} native rules, elevatable path {})",
                path.display(),
                policy.permission_sets.len(),
                policy.rules.len(),
                policy.native.len(),
                policy.elevatable_path
            );
            print_worst_cases(&policy);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain { event, policy } => explain(&event, &default_policy(policy)),
    }
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

/// Each set at its worst case under each rule that grants it: what the guardrails checked.
fn print_worst_cases(policy: &Policy) {
    for case in policy.worst_cases() {
        let granted_by = case
            .rule
            .map_or("no rule (every placeholder unbounded)".to_owned(), |r| {
                format!("rule {r}")
            });
        println!(
            "\nworst case of {} under {granted_by}: {}",
            case.set.name,
            case.widest.describe()
        );
        let doc = case.set.render_widest(&case.widest);
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
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

fn explain(event_path: &Path, policy_path: &Path) -> Result<ExitCode, CliError> {
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
    let decided = if is_native(&envelope.detail_type, &envelope.source) {
        match NativeEvent::parse(&envelope.detail_type, &event.detail, size) {
            Err(e) => {
                eprintln!("denied: malformed_event: {e}");
                return Ok(ExitCode::from(3));
            }
            Ok(NativeEvent {
                job,
                phase: NativePhase::Ended { state },
            }) => {
                if policy.manages_native(&job) {
                    println!("{state}: ends job {}; its grants are revoked now", job.key());
                } else {
                    println!("{state}: no native rule names job {}; ignored", job.key());
                }
                return Ok(ExitCode::SUCCESS);
            }
            Ok(NativeEvent { job, .. }) => policy.decide_native(&envelope, &job).map_err(Refusal::from),
        }
    } else if envelope.detail_type == DETAIL_TYPE_STARTED {
        let mut request = match StartRequest::parse(&event.detail, size) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("denied: malformed_event: {e}");
                return Ok(ExitCode::from(3));
            }
        };
        let verified = match request.token.as_deref().map(|t| read_token(&policy, t, &request)) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err((reason, why))) => {
                eprintln!("denied: {reason}: {why}");
                return Ok(ExitCode::from(3));
            }
        };
        if let Some(v) = &verified {
            println!(
                "token: issuer {}, principal {} (offline: signature, audience and times are not checked)",
                v.token.issuer,
                v.job.job.principal.as_deref().unwrap_or("-")
            );
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
            eprintln!("denied: {refusal}");
            return Ok(ExitCode::from(3));
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
        Ok(doc) => {
            println!(
                "allowed by rule {} (permission set {}, until {})",
                allowed.rule,
                allowed.permission_set.name,
                latch_core::iam_time(expires)
            );
            let pretty: Value = serde_json::from_str(doc.as_json()).unwrap_or(Value::Null);
            println!("{}", serde_json::to_string_pretty(&pretty).unwrap_or_default());
            println!(
                "({} characters as IAM counts them, sha256 {})",
                doc.chars(),
                doc.sha256()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("denied: {e}");
            Ok(ExitCode::from(3))
        }
    }
}
