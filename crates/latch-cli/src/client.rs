//! The pipeline client: `latch request` asks for a grant, `latch extend` asks for more time on
//! it, `latch release` ends the job's grants.
//!
//! Each publishes the pipeline event contract (v2) on the bus with the publisher's own `source`,
//! with the CI's OIDC ID token in `token` ([`crate::token`]: how it is had, and that it is never
//! printed). The job's fields come from the CI system's variables ([`crate::ci_env`]) or flags;
//! with a token, the job the token proves replaces them (a flag that contradicts it is a usage
//! error, as the grant function would deny it). With `--wait`, `request` and `extend` watch the
//! table for the decision: the grant id (over the token's principal, predicted as the function
//! reconciles it), the extension's audit id and the denial's audit id are all deterministic, so
//! a few GetItem calls a second tell the answer. They need `dynamodb:GetItem` on the table and
//! `sts:GetCallerIdentity` besides `events:PutEvents`. Once the grant is active, `request`
//! probes with the role's credentials until IAM applies it ([`latch_aws::probe`]); that takes
//! `sts:AssumeRole` on the role (a job that chains into the role has it), else it waits `--settle`.
//!
//! `request` prints `session: <name>` on stdout, the IAM role session name the job must assume
//! its role with when its rule says `bind_session` (with --wait: only when the grant is bound).
//!
//! Exit codes with `--wait`: 0 active and applied by IAM / extended, 3 denied (reason on
//! stderr), 4 timed out; 1 on errors, 2 on usage errors.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use clap::Args;
use latch_core::audit;
use latch_core::event::{DETAIL_TYPE_EXTEND, DETAIL_TYPE_FINISHED, DETAIL_TYPE_STARTED};
use latch_core::identity::claims::session_name;
use latch_core::identity::{AudienceBinding, Presented, request_audience};
use latch_core::model::{AccountId, GrantDuration, GrantId, GrantIdentity, JobContext, JobKey, Name, RoleArn};
use serde_json::{Value, json};

use aws_sdk_sts::error::DisplayErrorContext;
use latch_aws::items;
use latch_aws::probe::{Waited, wait_until_applied};

use crate::CliError;
use crate::ci_env::JobEnv;
use crate::token::{IdToken, TokenArgs, TokenSource, predict};

pub const EXIT_DENIED: u8 = 3;
pub const EXIT_TIMED_OUT: u8 = 4;

/// Which job, and where to publish. Each flag falls back to the CI system's variables.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// The EventBridge source this pipeline publishes as (pinned to it by IAM).
    #[arg(long, env = "LATCH_SOURCE")]
    source: String,
    /// The Latch event bus.
    #[arg(long, env = "LATCH_BUS", default_value = "latch")]
    bus: String,
    /// Pipeline name [default: from the CI environment]
    #[arg(long)]
    pipeline: Option<String>,
    /// Run id [default: from the CI environment]
    #[arg(long)]
    run_id: Option<String>,
    /// Job name [default: from the CI environment]
    #[arg(long)]
    job: Option<String>,
    /// Attempt of the run, from 1 [default: from the CI environment, else 1]
    #[arg(long)]
    attempt: Option<u32>,
    #[command(flatten)]
    token: TokenArgs,
    /// What stdout carries: `text` (the lines scripts parse: `active: …`, `session: …`,
    /// `extended: …`) or `json` (one object: outcome, grant_id, role, expires_at, policy_name,
    /// session, reason, detail, event_id). Messages for people go to stderr either way.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// How a client command ended, as its exit code says it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// Published without --wait.
    #[default]
    Published,
    Active,
    Extended,
    Denied,
    TimedOut,
    Released,
}

/// What a client command learned, printed once on stdout at the end ([`Output`]).
#[derive(Debug, Default, serde::Serialize)]
struct Answer {
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl Answer {
    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            ..Self::default()
        }
    }

    fn print(&self, output: Output) -> ExitCode {
        let or_blank = |v: &Option<String>| v.clone().unwrap_or_default();
        match output {
            Output::Json => println!("{}", serde_json::to_string(self).unwrap_or_default()),
            Output::Text => {
                let id = or_blank(&self.grant_id);
                match self.outcome {
                    Outcome::Active => println!(
                        "active: grant {id} on {} until {} (policy {})",
                        or_blank(&self.role),
                        or_blank(&self.expires_at),
                        or_blank(&self.policy_name)
                    ),
                    Outcome::Extended => println!("extended: grant {id} until {}", or_blank(&self.expires_at)),
                    _ => {}
                }
                if let Some(session) = &self.session {
                    println!("session: {session}");
                }
            }
        }
        ExitCode::from(match self.outcome {
            Outcome::Denied => EXIT_DENIED,
            Outcome::TimedOut => EXIT_TIMED_OUT,
            _ => 0,
        })
    }
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    job: JobArgs,
    /// The role to elevate (under the elevatable path, e.g. /latch/).
    #[arg(long, value_name = "ARN")]
    role: String,
    /// A permission set from the policy file.
    #[arg(long, value_name = "NAME")]
    permission_set: String,
    /// How long: 15m, 1h, or ISO 8601 such as PT15M.
    #[arg(long)]
    duration: String,
    /// Why, in words (kept in the audit record).
    #[arg(long)]
    reason: Option<String>,
    /// A change ticket (kept in the audit record).
    #[arg(long)]
    ticket: Option<String>,
    /// Deployment environment; rules may require it.
    #[arg(long)]
    environment: Option<String>,
    /// Who started the job [default: from the CI environment]
    #[arg(long)]
    actor: Option<String>,
    /// Commit [default: from the CI environment]
    #[arg(long)]
    commit: Option<String>,
    /// Git ref, e.g. refs/heads/main [default: from the CI environment]
    #[arg(long = "ref")]
    git_ref: Option<String>,
    /// Wait for the decision: exit 0 when active, 3 when denied, 4 on timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits for a decision.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// After the grant is active, when the client cannot probe with the role's credentials
    /// whether IAM applies it (no sts:AssumeRole on the role): wait this long instead.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// The grants table --wait reads.
    #[arg(long, env = "LATCH_TABLE", default_value = "latch-grants")]
    table: String,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    job: JobArgs,
    /// How the job ended (recorded; any outcome ends the grants).
    #[arg(long, default_value = "success")]
    outcome: String,
    /// The account the bus is in, for the token's audience when STS cannot say
    /// [default: STS GetCallerIdentity]
    #[arg(long, env = "LATCH_ACCOUNT")]
    account: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExtendArgs {
    #[command(flatten)]
    job: JobArgs,
    /// The role of the grant to extend.
    #[arg(long, value_name = "ARN")]
    role: String,
    /// The permission set of the grant to extend.
    #[arg(long, value_name = "NAME")]
    permission_set: String,
    /// How much longer: 10m, or ISO 8601 such as PT10M (within the rule's max_total).
    #[arg(long)]
    by: String,
    /// Wait for the decision: exit 0 when extended, 3 when refused, 4 on timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits for a decision.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The grants table --wait reads.
    #[arg(long, env = "LATCH_TABLE", default_value = "latch-grants")]
    table: String,
}

fn missing(flag: &str) -> CliError {
    CliError::Usage(format!(
        "{flag} is not set and no CI environment (GitHub Actions, GitLab CI, Jenkins, CodeBuild) provides it"
    ))
}

impl JobArgs {
    /// Each field from its flag, else the CI variables, else what the token names (`signed`).
    fn resolve(&self, env: &JobEnv, signed: &JobEnv) -> Result<JobKey, CliError> {
        Ok(JobKey {
            principal: None,
            pipeline: self
                .pipeline
                .clone()
                .or(env.pipeline.clone())
                .or(signed.pipeline.clone())
                .ok_or_else(|| missing("--pipeline"))?,
            run_id: self
                .run_id
                .clone()
                .or(env.run_id.clone())
                .or(signed.run_id.clone())
                .ok_or_else(|| missing("--run-id"))?,
            job: self
                .job
                .clone()
                .or(env.job.clone())
                .or(signed.job.clone())
                .ok_or_else(|| missing("--job"))?,
            attempt: self.attempt.or(env.attempt).or(signed.attempt).unwrap_or(1),
        })
    }
}

fn job_detail(job: &JobKey, token: Option<&IdToken>) -> serde_json::Map<String, Value> {
    let mut d = serde_json::Map::new();
    d.insert("pipeline".into(), json!(job.pipeline));
    d.insert("run_id".into(), json!(job.run_id));
    d.insert("job".into(), json!(job.job));
    d.insert("attempt".into(), json!(job.attempt));
    if let Some(t) = token {
        d.insert("token".into(), json!(t.expose()));
    }
    d
}

/// The job's token (if any) and the job the grant function will see: the one the token proves
/// (principal included, so grant ids match), or the claimed one without a token.
async fn prove<F, Fut>(
    args: &JobArgs,
    env: &JobEnv,
    context: &JobContext,
    audience: F,
) -> Result<(JobKey, Option<IdToken>), CliError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, CliError>>,
{
    let lookup = |k: &str| std::env::var(k).ok();
    let source = TokenSource::choose(&args.token, lookup)?;
    let Some(token) = source.obtain(audience).await? else {
        return Ok((args.resolve(env, &JobEnv::default())?, None));
    };
    let kind = args.token.kind(&source, lookup);
    let claimed = args.resolve(env, &crate::token::signed_job(&token, kind))?;
    let verified = predict(&token, kind, &claimed, context)?;
    Ok((verified.job, Some(token)))
}

fn parse_role_set(role: &str, set: &str) -> Result<(RoleArn, Name), CliError> {
    let role = RoleArn::parse(role).map_err(|e| CliError::Usage(format!("--role: {e}")))?;
    let set = Name::parse(set).map_err(|e| CliError::Usage(format!("--permission-set: {e}")))?;
    Ok((role, set))
}

/// The account EventBridge will put on the envelope: the caller's (STS), else `fallback`.
async fn caller_account(sdk: &aws_config::SdkConfig) -> Option<AccountId> {
    aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .ok()
        .and_then(|o| o.account)
        .and_then(|a| AccountId::parse(&a).ok())
}

/// Publishes one event; returns EventBridge's id for it.
async fn publish(
    sdk: &aws_config::SdkConfig,
    job: &JobArgs,
    detail_type: &str,
    detail: Value,
) -> Result<String, CliError> {
    let entry = PutEventsRequestEntry::builder()
        .event_bus_name(&job.bus)
        .source(&job.source)
        .detail_type(detail_type)
        .detail(detail.to_string())
        .build();
    let out = aws_sdk_eventbridge::Client::new(sdk)
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(|e| {
            CliError::Aws(format!(
                "PutEvents on bus {}: {}",
                job.bus,
                aws_sdk_eventbridge::error::DisplayErrorContext(&e)
            ))
        })?;
    let first = out.entries().first();
    if out.failed_entry_count() > 0 {
        return Err(CliError::Aws(format!(
            "the bus refused the event: {} {}",
            first.and_then(|e| e.error_code()).unwrap_or("?"),
            first.and_then(|e| e.error_message()).unwrap_or("")
        )));
    }
    Ok(first.and_then(|e| e.event_id()).unwrap_or_default().to_owned())
}

pub async fn request(args: RequestArgs) -> Result<ExitCode, CliError> {
    let env = JobEnv::detect(|k| std::env::var(k).ok());
    let (role, set) = parse_role_set(&args.role, &args.permission_set)?;
    let duration = GrantDuration::parse(&args.duration).map_err(|e| CliError::Usage(format!("--duration: {e}")))?;
    let claimed_context = JobContext {
        reason: args.reason.clone(),
        git_ref: args.git_ref.clone().or(env.git_ref.clone()),
        commit: args.commit.clone().or(env.commit.clone()),
        actor: args.actor.clone().or(env.actor.clone()),
        ticket: args.ticket.clone(),
        environment: args.environment.clone(),
    };
    // The bus is in the role's account: the audience binds the request as the function sees it.
    let audience = request_audience(
        &args.job.token.audience_prefix,
        Presented::Start(AudienceBinding {
            account: role.account(),
            role: &role,
            permission_set: &set,
            duration,
        }),
    );
    let (job, token) = prove(&args.job, &env, &claimed_context, || async { Ok(audience) }).await?;
    let mut detail = job_detail(&job, token.as_ref());
    detail.insert("role_arn".into(), json!(role.as_str()));
    detail.insert("permission_set".into(), json!(set.as_str()));
    detail.insert("duration".into(), json!(args.duration));
    let context = [
        ("reason", claimed_context.reason),
        ("ticket", claimed_context.ticket),
        ("environment", claimed_context.environment),
        ("actor", claimed_context.actor),
        ("commit", claimed_context.commit),
        ("ref", claimed_context.git_ref),
    ];
    for (k, v) in context {
        if let Some(v) = v {
            detail.insert(k.into(), json!(v));
        }
    }
    let sdk = latch_aws::config::sdk_loader().load().await;
    let event_id = publish(&sdk, &args.job, DETAIL_TYPE_STARTED, Value::Object(detail)).await?;
    eprintln!(
        "requested {} on {} for {} as {}/{}/{}#{}{} (event {event_id})",
        set,
        role,
        args.duration,
        job.pipeline,
        job.run_id,
        job.job,
        job.attempt,
        if token.is_some() {
            " with the CI's ID token"
        } else {
            " without a token (claimed identity)"
        }
    );
    if !args.wait {
        // Without --wait the client cannot know whether the rule binds sessions; the name is
        // harmless to use either way.
        let answer = Answer {
            event_id: Some(event_id),
            session: token.as_ref().map(|_| session_name(&job)),
            ..Answer::of(Outcome::Published)
        };
        return Ok(answer.print(args.job.output));
    }
    let account = caller_account(&sdk).await.unwrap_or_else(|| role.account().clone());
    let id = GrantId::derive(GrantIdentity {
        account: &account,
        source: &args.job.source,
        job: &job,
        permission_set: &set,
        role: &role,
    });
    let denial_ids = [
        audit::denial_id(&args.job.source, &account, &event_id),
        audit::iam_refusal_id(&id),
    ];
    let wait = Wait {
        table: &args.table,
        id: &id,
        done_audit: None,
        denial_ids: &denial_ids,
        timeout: args.timeout,
        settle: args.settle,
        session: token.as_ref().map(|_| session_name(&job)),
    };
    Ok(wait_for_decision(&sdk, wait).await?.print(args.job.output))
}

pub async fn extend(args: ExtendArgs) -> Result<ExitCode, CliError> {
    let env = JobEnv::detect(|k| std::env::var(k).ok());
    let (role, set) = parse_role_set(&args.role, &args.permission_set)?;
    let by = GrantDuration::parse(&args.by).map_err(|e| CliError::Usage(format!("--by: {e}")))?;
    let audience = request_audience(
        &args.job.token.audience_prefix,
        Presented::Extend {
            binding: AudienceBinding {
                account: role.account(),
                role: &role,
                permission_set: &set,
                duration: by,
            },
            by,
        },
    );
    let (job, token) = prove(&args.job, &env, &JobContext::default(), || async { Ok(audience) }).await?;
    let mut detail = job_detail(&job, token.as_ref());
    detail.insert("role_arn".into(), json!(role.as_str()));
    detail.insert("permission_set".into(), json!(set.as_str()));
    detail.insert("by".into(), json!(args.by));
    let sdk = latch_aws::config::sdk_loader().load().await;
    let event_id = publish(&sdk, &args.job, DETAIL_TYPE_EXTEND, Value::Object(detail)).await?;
    eprintln!(
        "asked {} more of {set} on {role} for {}/{}/{}#{} (event {event_id})",
        args.by, job.pipeline, job.run_id, job.job, job.attempt
    );
    if !args.wait {
        let answer = Answer {
            event_id: Some(event_id),
            ..Answer::of(Outcome::Published)
        };
        return Ok(answer.print(args.job.output));
    }
    let account = caller_account(&sdk).await.unwrap_or_else(|| role.account().clone());
    let id = GrantId::derive(GrantIdentity {
        account: &account,
        source: &args.job.source,
        job: &job,
        permission_set: &set,
        role: &role,
    });
    // The function's audit ids: the extension's is over the grant and the token that asked.
    let (iss, jti) = token
        .as_ref()
        .and_then(|t| latch_core::identity::jwt::parse(t.expose()).ok())
        .map(|t| {
            let claim = |k: &str| t.claims().get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            (claim("iss"), claim("jti"))
        })
        .unwrap_or_default();
    let extended = audit::extension_id(&id, &iss, &jti);
    let denial_ids = [audit::denial_id(&args.job.source, &account, &event_id)];
    let wait = Wait {
        table: &args.table,
        id: &id,
        done_audit: Some(&extended),
        denial_ids: &denial_ids,
        timeout: args.timeout,
        settle: Duration::ZERO,
        session: None,
    };
    Ok(wait_for_decision(&sdk, wait).await?.print(args.job.output))
}

async fn get(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: String,
    sk: &str,
) -> Result<Option<std::collections::HashMap<String, AttributeValue>>, CliError> {
    let out = dynamo
        .get_item()
        .table_name(table)
        .key(items::PK, AttributeValue::S(pk))
        .key(items::SK, AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| {
            CliError::Aws(format!(
                "reading table {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            ))
        })?;
    Ok(out.item)
}

fn text(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

/// What `--wait` watches for.
struct Wait<'a> {
    table: &'a str,
    id: &'a GrantId,
    /// For an extension: its audit id (the grant exists already, so its presence says nothing).
    done_audit: Option<&'a str>,
    denial_ids: &'a [String],
    timeout: Duration,
    settle: Duration,
    /// The session name the client predicted from its token, checked against the grant's.
    session: Option<String>,
}

async fn wait_for_decision(sdk: &aws_config::SdkConfig, w: Wait<'_>) -> Result<Answer, CliError> {
    let Wait {
        table,
        id,
        done_audit,
        denial_ids,
        timeout,
        settle,
        session,
    } = w;
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let deadline = Instant::now() + timeout;
    loop {
        // Denials first: a refused grant (`iam_rejected`) also leaves its record behind.
        for denial in denial_ids {
            if let Some(audit) = get(&dynamo, table, items::audit_pk(denial), items::SK_AUDIT).await? {
                let (reason, detail) = (text(&audit, "reason"), text(&audit, "detail"));
                eprintln!(
                    "denied: {reason}{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    }
                );
                return Ok(Answer {
                    grant_id: Some(id.to_string()),
                    reason: Some(reason),
                    detail: (!detail.is_empty()).then_some(detail),
                    ..Answer::of(Outcome::Denied)
                });
            }
        }
        if let Some(audit_id) = done_audit {
            if get(&dynamo, table, items::audit_pk(audit_id), items::SK_AUDIT)
                .await?
                .is_some()
            {
                let until = get(&dynamo, table, items::grant_pk(id), items::SK_GRANT)
                    .await?
                    .map(|g| text(&g, "expires_at"));
                return Ok(Answer {
                    grant_id: Some(id.to_string()),
                    expires_at: until,
                    ..Answer::of(Outcome::Extended)
                });
            }
        } else if let Some(grant) = get(&dynamo, table, items::grant_pk(id), items::SK_GRANT).await? {
            match text(&grant, "status").as_str() {
                // Recorded, but IAM has not yet accepted its document (I8): keep waiting.
                items::STATUS_PENDING => {}
                items::STATUS_ACTIVE => return Ok(active(sdk, &grant, id, session.as_deref(), deadline, settle).await),
                _ => {
                    eprintln!("denied: grant {id} has already ended (its job finished or it expired)");
                    return Ok(Answer {
                        grant_id: Some(id.to_string()),
                        reason: Some("grant_ended".into()),
                        ..Answer::of(Outcome::Denied)
                    });
                }
            }
        }
        if Instant::now() >= deadline {
            let detail = format!(
                "no decision on grant {id} within {}; is Latch deployed on this bus?",
                humantime::format_duration(timeout)
            );
            eprintln!("timed out: {detail}");
            return Ok(Answer {
                grant_id: Some(id.to_string()),
                detail: Some(detail),
                ..Answer::of(Outcome::TimedOut)
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An active grant (and its bound session), once IAM applies it: the propagation probe
/// ([`latch_aws::probe`]) with the role's credentials, or, when it cannot probe, after the
/// fixed `settle`.
async fn active(
    sdk: &aws_config::SdkConfig,
    grant: &std::collections::HashMap<String, AttributeValue>,
    id: &GrantId,
    session: Option<&str>,
    deadline: Instant,
    settle: Duration,
) -> Answer {
    let role = text(grant, "role_arn");
    let bound = text(grant, "session");
    if !bound.is_empty() && session.is_some_and(|s| s != bound) {
        eprintln!("note: the grant is bound to a session other than the one this client predicted");
    }
    let answer = Answer {
        grant_id: Some(id.to_string()),
        role: Some(role.clone()),
        expires_at: Some(text(grant, "expires_at")),
        policy_name: Some(text(grant, "policy_name")),
        session: (!bound.is_empty()).then(|| bound.clone()),
        ..Answer::of(Outcome::Active)
    };
    let waited = match elevated(sdk, &role, &bound).await {
        Ok(elevated) => wait_until_applied(&aws_sdk_eventbridge::Client::new(&elevated), id, deadline).await,
        Err(why) => Waited::CannotProbe(why),
    };
    match waited {
        Waited::Applies { probes, waited } => {
            eprintln!(
                "IAM applies the grant to {role} (probe answered after {}, {probes} probe(s))",
                humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
            );
            answer
        }
        Waited::TimedOut { probes } => {
            let detail = format!("IAM did not apply grant {id} to {role} before the timeout ({probes} probe(s))");
            eprintln!("timed out: {detail}");
            Answer {
                outcome: Outcome::TimedOut,
                detail: Some(detail),
                ..answer
            }
        }
        Waited::CannotProbe(why) => {
            eprintln!(
                "cannot probe whether IAM applies the grant ({why}); waiting {} for it to propagate",
                humantime::format_duration(settle)
            );
            tokio::time::sleep(settle).await;
            answer
        }
    }
}

/// Credentials of the elevated role, as the job will hold them: this client's own when it
/// already runs as the role, else a session assumed under the grant's bound session name (or
/// `latch-probe`), which the publisher may assume when its job chains into the role.
async fn elevated(
    sdk: &aws_config::SdkConfig,
    role: &str,
    bound_session: &str,
) -> Result<aws_config::SdkConfig, String> {
    let role = RoleArn::parse(role).map_err(|e| format!("the grant's role: {e}"))?;
    let sts = aws_sdk_sts::Client::new(sdk);
    let caller = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| format!("sts:GetCallerIdentity: {}", DisplayErrorContext(&e)))?;
    let runs_as_role = caller.arn().is_some_and(|arn| {
        arn.split_once(":assumed-role/")
            .and_then(|(_, rest)| rest.split('/').next())
            .is_some_and(|name| name.eq_ignore_ascii_case(role.name()))
    }) && caller.account() == Some(role.account().as_str());
    if runs_as_role {
        return Ok(sdk.clone());
    }
    let session = if bound_session.is_empty() {
        "latch-probe"
    } else {
        bound_session
    };
    let assumed = sts
        .assume_role()
        .role_arn(role.as_str())
        .role_session_name(session)
        .duration_seconds(900)
        .send()
        .await
        .map_err(|e| format!("sts:AssumeRole on {}: {}", role.as_str(), DisplayErrorContext(&e)))?;
    let c = assumed
        .credentials()
        .ok_or_else(|| "sts:AssumeRole answered no credentials".to_owned())?;
    let credentials = aws_sdk_sts::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "latch-probe",
    );
    Ok(sdk
        .to_builder()
        .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(credentials))
        .build())
}

pub async fn release(args: ReleaseArgs) -> Result<ExitCode, CliError> {
    let env = JobEnv::detect(|k| std::env::var(k).ok());
    let fallback = args
        .account
        .as_deref()
        .map(|a| AccountId::parse(a).map_err(|e| CliError::Usage(format!("--account: {e}"))))
        .transpose()?;
    let sdk = latch_aws::config::sdk_loader().load().await;
    // A finish proves the run whatever it held: its audience binds the bus's account only.
    let prefix = args.job.token.audience_prefix.clone();
    let audience = || async {
        let account = match caller_account(&sdk).await {
            Some(a) => a,
            None => fallback.ok_or_else(|| {
                CliError::Usage("STS cannot tell this job's account: pass --account or set LATCH_ACCOUNT".into())
            })?,
        };
        Ok(request_audience(&prefix, Presented::Finish { account: &account }))
    };
    let (job, token) = prove(&args.job, &env, &JobContext::default(), audience).await?;
    let mut detail = job_detail(&job, token.as_ref());
    detail.insert("outcome".into(), json!(args.outcome));
    let event_id = publish(&sdk, &args.job, DETAIL_TYPE_FINISHED, Value::Object(detail)).await?;
    eprintln!(
        "released {}/{}/{}#{} (event {event_id}): its grants end now",
        job.pipeline, job.run_id, job.job, job.attempt
    );
    let answer = Answer {
        event_id: Some(event_id),
        ..Answer::of(Outcome::Released)
    };
    Ok(answer.print(args.job.output))
}
