//! `latch demo`: a scripted scenario on the local emulator, printed as a timeline a person can
//! follow. Everything goes through the real path: PutEvents on the bus, the rule's queue target,
//! the grant function's handler, IAM, DynamoDB, and the audit events back on the bus.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use grant::Outcome;
use latch_aws::provision::Provisioner;
use latch_aws::{Clients, Config};
use latch_core::policy::Policy;
use latch_core::ports::SystemClock;
use latch_core::service::{GrantService, StartOutcome};
use serde_json::{Value, json};

use crate::runner::Runner;
use crate::{CliError, local};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The emulator's endpoint [default: $AWS_ENDPOINT_URL or http://127.0.0.1:4566]
    #[arg(long)]
    endpoint: Option<String>,
    /// The policy file the demo runs with.
    #[arg(long, default_value = "infra/policies.yaml")]
    policy: std::path::PathBuf,
}

const ACCOUNT: &str = "123456789012";
const DEPLOYER: &str = "arn:aws:iam::123456789012:role/latch/app-deployer";

struct Timeline {
    started: Instant,
}

impl Timeline {
    fn say(&self, what: &str) {
        println!("[{:>5.1}s] {what}", self.started.elapsed().as_secs_f64());
    }
    fn more(&self, what: &str) {
        for line in what.lines() {
            println!("         {line}");
        }
    }
}

fn aws(context: &str) -> impl Fn(String) -> CliError + '_ {
    move |e| CliError::Aws(format!("{context}: {e}"))
}

pub async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let endpoint = local::endpoint(args.endpoint);
    local::ensure_emulator(&endpoint)?;
    let t = Timeline {
        started: Instant::now(),
    };
    println!("Latch demo on the local emulator at {endpoint}\n");

    let policy = Policy::load_path(&args.policy)?;
    let sdk = local::sdk_config(&endpoint).await;
    let config = Config::from_lookup(|_| None).map_err(|e| CliError::Usage(e.to_string()))?;
    let provisioned = Provisioner::new(&sdk)
        .all(&config.table, &config.bus, &policy)
        .await
        .map_err(|e| CliError::Aws(e.to_string()))?;
    t.say(&format!(
        "provisioned table {}, bus {}, and the roles {} names",
        config.table,
        config.bus,
        args.policy.display()
    ));

    let clients = Clients::from_sdk_config(&sdk, &config);
    let runner = Runner {
        grant: GrantService {
            policy,
            iam: clients.iam,
            store: clients.store,
            audit: clients.audit,
            clock: SystemClock,
        },
        sqs: aws_sdk_sqs::Client::new(&sdk),
        inbox_url: provisioned.inbox_queue_url.clone(),
        account: ACCOUNT.into(),
    };
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let iam = aws_sdk_iam::Client::new(&sdk);
    let run_id = chrono::Utc::now().timestamp().to_string();

    // 1. A job starts and asks for what the policy allows.
    let deploy = json!({"pipeline": "app-release", "run_id": run_id, "job": "deploy", "attempt": 1,
        "role_arn": DEPLOYER, "permission_set": "deploy-artifacts", "duration": "PT15M",
        "ref": "refs/heads/main", "actor": "octocat", "reason": "release v1.4.2"});
    t.say(&format!(
        "pipeline app-release run {run_id}, job deploy starts: asks deploy-artifacts on app-deployer for 15m"
    ));
    publish(&events, &config.bus, "Pipeline Job Started", &deploy).await?;
    for h in deliver(&runner, 1).await? {
        match &h.outcome {
            Ok(Outcome::Start(StartOutcome::Activated(id))) => {
                t.say(&format!("GRANTED: policy {} is on role app-deployer", id.policy_name()));
                let doc = role_policy(&iam, "app-deployer", &id.policy_name())
                    .await
                    .map_err(aws("reading the policy back"))?;
                t.more(&serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            other => t.say(&format!("unexpected: {other:?}")),
        }
    }

    // 2. The same job asks for more than its rule allows.
    let greedy = json!({"pipeline": "app-release", "run_id": run_id, "job": "deploy", "attempt": 1,
        "role_arn": DEPLOYER, "permission_set": "db-migrate", "duration": "PT10M", "ref": "refs/heads/main"});
    t.say("the same job asks db-migrate on app-deployer");
    publish(&events, &config.bus, "Pipeline Job Started", &greedy).await?;
    report(&t, deliver(&runner, 1).await?);

    // 3. A job from a feature branch asks for the deploy role.
    let feature = json!({"pipeline": "app-release", "run_id": run_id, "job": "preview", "attempt": 1,
        "role_arn": DEPLOYER, "permission_set": "deploy-artifacts", "duration": "PT15M", "ref": "refs/heads/feature/x"});
    t.say("a feature-branch job asks deploy-artifacts on app-deployer");
    publish(&events, &config.bus, "Pipeline Job Started", &feature).await?;
    report(&t, deliver(&runner, 1).await?);

    // 4. The first start is delivered again: nothing changes.
    t.say("the first start event is published again (a retry)");
    publish(&events, &config.bus, "Pipeline Job Started", &deploy).await?;
    report(&t, deliver(&runner, 1).await?);

    println!("\nAudit trail (durable items in {}):", config.table);
    audit_trail(&sdk, &config.table, &run_id).await?;
    Ok(ExitCode::SUCCESS)
}

fn report(t: &Timeline, handled: Vec<crate::runner::Handled>) {
    for h in handled {
        match h.outcome {
            Ok(Outcome::Start(StartOutcome::Denied(reason))) => t.say(&format!("DENIED: {reason}")),
            Ok(Outcome::Start(StartOutcome::AlreadyActive(id))) => {
                t.say(&format!("already active: grant {id} unchanged, no second grant"))
            }
            Ok(other) => t.say(&format!("{other:?}")),
            Err(e) => t.say(&format!("{} handler failed (will be retried): {e}", h.detail_type)),
        }
    }
}

async fn publish(
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
    detail_type: &str,
    detail: &Value,
) -> Result<(), CliError> {
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source("ci.github")
        .detail_type(detail_type)
        .detail(detail.to_string())
        .build();
    let out = events
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(|e| CliError::Aws(format!("PutEvents: {e}")))?;
    if out.failed_entry_count() > 0 {
        return Err(CliError::Aws(format!(
            "PutEvents refused the event: {:?}",
            out.entries()
        )));
    }
    Ok(())
}

/// Pumps the inbox until `expected` deliveries were handled (or 10 s passed).
async fn deliver(runner: &Runner, expected: usize) -> Result<Vec<crate::runner::Handled>, CliError> {
    let mut all = Vec::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while all.len() < expected && Instant::now() < deadline {
        all.extend(runner.pump(1).await?);
    }
    Ok(all)
}

async fn role_policy(iam: &aws_sdk_iam::Client, role: &str, name: &str) -> Result<Value, String> {
    let out = iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let decoded = percent_encoding::percent_decode_str(out.policy_document())
        .decode_utf8()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&decoded).map_err(|e| e.to_string())
}

async fn audit_trail(sdk: &aws_config::SdkConfig, table: &str, run_id: &str) -> Result<(), CliError> {
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let out = dynamo
        .scan()
        .table_name(table)
        .send()
        .await
        .map_err(|e| CliError::Aws(format!("Scan: {e}")))?;
    let mut rows: Vec<latch_core::audit::AuditRecord> = out
        .items()
        .iter()
        .filter(|i| {
            i.get("record_type")
                .and_then(|v| v.as_s().ok())
                .is_some_and(|s| s == "audit")
        })
        .filter_map(|i| serde_dynamo::from_item(i.clone()).ok())
        .filter(|r: &latch_core::audit::AuditRecord| r.run_id.as_deref() == Some(run_id))
        .collect();
    rows.sort_by(|a, b| a.recorded_at.cmp(&b.recorded_at));
    for r in rows {
        println!(
            "  {}  {:<10} {:<28} job={} set={} rule={}",
            r.recorded_at,
            r.decision.code(),
            r.reason,
            r.job.as_deref().unwrap_or("-"),
            r.permission_set.as_deref().unwrap_or("-"),
            r.rule.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}
