//! The pipeline client: `latch request` asks for a grant, `latch release` ends the job's grants.
//!
//! Both publish the pipeline event contract (v1) on the bus with the publisher's own `source`;
//! the job's identity comes from the CI system's variables ([`crate::ci_env`]) or flags. With
//! `--wait`, `request` watches the table for the decision: the grant id and the denial's audit id
//! are both deterministic, so two GetItem calls a second tell the answer. It needs
//! `dynamodb:GetItem` on the table and `sts:GetCallerIdentity` besides `events:PutEvents`.
//!
//! Exit codes of `request --wait`: 0 active (after the settle time), 3 denied (reason on stderr),
//! 4 timed out; 1 on errors, 2 on usage errors.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use clap::Args;
use latch_core::event::{DETAIL_TYPE_FINISHED, DETAIL_TYPE_STARTED, JobKey};
use latch_core::model::{AccountId, GrantDuration, GrantId, GrantIdentity, Name, RoleArn, digest};
use serde_json::{Value, json};

use crate::CliError;
use crate::ci_env::JobEnv;

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
    /// After the grant is active, wait this long for IAM to propagate it.
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
}

fn missing(flag: &str) -> CliError {
    CliError::Usage(format!(
        "{flag} is not set and no CI environment (GitHub Actions, GitLab CI, Jenkins, CodeBuild) provides it"
    ))
}

impl JobArgs {
    fn resolve(&self, env: &JobEnv) -> Result<JobKey, CliError> {
        Ok(JobKey {
            principal: None,
            pipeline: self
                .pipeline
                .clone()
                .or(env.pipeline.clone())
                .ok_or_else(|| missing("--pipeline"))?,
            run_id: self
                .run_id
                .clone()
                .or(env.run_id.clone())
                .ok_or_else(|| missing("--run-id"))?,
            job: self.job.clone().or(env.job.clone()).ok_or_else(|| missing("--job"))?,
            attempt: self.attempt.or(env.attempt).unwrap_or(1),
        })
    }
}

fn job_detail(job: &JobKey) -> serde_json::Map<String, Value> {
    let mut d = serde_json::Map::new();
    d.insert("pipeline".into(), json!(job.pipeline));
    d.insert("run_id".into(), json!(job.run_id));
    d.insert("job".into(), json!(job.job));
    d.insert("attempt".into(), json!(job.attempt));
    d
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
    let job = args.job.resolve(&env)?;
    let role = RoleArn::parse(&args.role).map_err(|e| CliError::Usage(format!("--role: {e}")))?;
    let set = Name::parse(&args.permission_set).map_err(|e| CliError::Usage(format!("--permission-set: {e}")))?;
    GrantDuration::parse(&args.duration).map_err(|e| CliError::Usage(format!("--duration: {e}")))?;
    let mut detail = job_detail(&job);
    detail.insert("role_arn".into(), json!(role.as_str()));
    detail.insert("permission_set".into(), json!(set.as_str()));
    detail.insert("duration".into(), json!(args.duration));
    let context = [
        ("reason", args.reason.clone()),
        ("ticket", args.ticket.clone()),
        ("environment", args.environment.clone()),
        ("actor", args.actor.clone().or(env.actor.clone())),
        ("commit", args.commit.clone().or(env.commit.clone())),
        ("ref", args.git_ref.clone().or(env.git_ref.clone())),
    ];
    for (k, v) in context {
        if let Some(v) = v {
            detail.insert(k.into(), json!(v));
        }
    }
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let event_id = publish(&sdk, &args.job, DETAIL_TYPE_STARTED, Value::Object(detail)).await?;
    eprintln!(
        "requested {} on {} for {} as {}/{}/{}#{} (event {event_id})",
        set, role, args.duration, job.pipeline, job.run_id, job.job, job.attempt
    );
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let account = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await
        .ok()
        .and_then(|o| o.account)
        .and_then(|a| AccountId::parse(&a).ok())
        .unwrap_or_else(|| role.account().clone());
    let id = GrantId::derive(GrantIdentity {
        account: &account,
        source: &args.job.source,
        job: &job,
        permission_set: &set,
        role: &role,
    });
    let denial_ids = [
        digest(&[&args.job.source, account.as_str(), &event_id, "denied"]),
        digest(&[id.as_str(), "iam-rejected"]),
    ];
    wait_for_decision(&sdk, &args.table, &id, &denial_ids, args.timeout, args.settle).await
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
        .key("pk", AttributeValue::S(pk))
        .key("sk", AttributeValue::S(sk.into()))
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

async fn wait_for_decision(
    sdk: &aws_config::SdkConfig,
    table: &str,
    id: &GrantId,
    denial_ids: &[String],
    timeout: Duration,
    settle: Duration,
) -> Result<ExitCode, CliError> {
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(grant) = get(&dynamo, table, format!("GRANT#{id}"), "GRANT").await? {
            if text(&grant, "status") != "active" {
                eprintln!("denied: grant {id} has already ended (its job finished or it expired)");
                return Ok(ExitCode::from(EXIT_DENIED));
            }
            println!(
                "active: grant {id} on {} until {} (policy {})",
                text(&grant, "role_arn"),
                text(&grant, "expires_at"),
                id.policy_name()
            );
            if !settle.is_zero() {
                eprintln!(
                    "waiting {} for IAM to propagate the policy",
                    humantime::format_duration(settle)
                );
                tokio::time::sleep(settle).await;
            }
            return Ok(ExitCode::SUCCESS);
        }
        for denial in denial_ids {
            if let Some(audit) = get(&dynamo, table, format!("AUDIT#{denial}"), "AUDIT").await? {
                let detail = text(&audit, "detail");
                eprintln!(
                    "denied: {}{}",
                    text(&audit, "reason"),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    }
                );
                return Ok(ExitCode::from(EXIT_DENIED));
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "timed out after {} waiting for a decision on grant {id}; is Latch deployed on this bus?",
                humantime::format_duration(timeout)
            );
            return Ok(ExitCode::from(EXIT_TIMED_OUT));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn release(args: ReleaseArgs) -> Result<ExitCode, CliError> {
    let env = JobEnv::detect(|k| std::env::var(k).ok());
    let job = args.job.resolve(&env)?;
    let mut detail = job_detail(&job);
    detail.insert("outcome".into(), json!(args.outcome));
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let event_id = publish(&sdk, &args.job, DETAIL_TYPE_FINISHED, Value::Object(detail)).await?;
    eprintln!(
        "released {}/{}/{}#{} (event {event_id}): its grants end now",
        job.pipeline, job.run_id, job.job, job.attempt
    );
    Ok(ExitCode::SUCCESS)
}
