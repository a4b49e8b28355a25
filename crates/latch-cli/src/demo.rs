//! `latch demo`: a scripted scenario on the local emulator, printed as a timeline a person can
//! follow. Everything goes through the real path: PutEvents on the bus, the rule's queue target,
//! the grant handler, IAM and DynamoDB, the table's stream to the revoke handler, the sweep, and
//! the audit records at the end.
//!
//! Every job proves who it is with an ID token minted by the local development issuer standing
//! in for the policy's `github` issuer ([`crate::dev_issuer`]), with the claims GitHub Actions
//! would sign for example-org/app-release and the audience bound to each request. The story:
//! a verified grant; requests the policy refuses (a set the rule does not allow, a feature branch
//! that claims main in its detail, an honest feature branch); a retried start; finishes that do
//! not prove the run (no token, another run's token) and change nothing; the real finish; a job
//! whose grant expires.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use grant::Outcome;
use latch_aws::items;
use latch_core::grant::{ExtendOutcome, FinishOutcome, StartOutcome};
use latch_core::identity::{AudienceBinding, Presented, request_audience};
use latch_core::model::{AccountId, GrantDuration, Name, RoleArn};
use revoke::RecordOutcome;
use serde_json::{Value, json};

use crate::CliError;
use crate::local::{self, LocalTarget};
use crate::runner::{Handled, LocalLatch};

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    target: LocalTarget,
}

const SOURCE: &str = "ci.github";

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
    fn step(&self, title: &str) {
        println!("\n── {title}");
    }
}

fn aws(context: &'static str) -> impl Fn(String) -> CliError {
    move |e| CliError::Aws(format!("{context}: {e}"))
}

pub async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let t = Timeline {
        started: Instant::now(),
    };
    let local::Started {
        latch,
        provisioned,
        sdk,
        issuers,
    } = local::start_latch(&args.target, chrono::Duration::minutes(10)).await?;
    println!(
        "Latch demo on the local emulator ({})",
        local::endpoint(args.target.endpoint.clone())
    );
    t.say(&format!(
        "provisioned table {}, bus {}, and the roles {} names",
        provisioned.table,
        provisioned.bus,
        args.target.policy.display()
    ));
    let mut demo = Demo {
        t,
        latch,
        events: aws_sdk_eventbridge::Client::new(&sdk),
        iam: aws_sdk_iam::Client::new(&sdk),
        bus: provisioned.bus.clone(),
        run_id: chrono::Utc::now().timestamp().to_string(),
        deployer: format!("arn:aws:iam::{}:role/latch/app-deployer", args.target.account),
        account: AccountId::parse(&args.target.account).map_err(|e| CliError::Usage(format!("--account: {e}")))?,
        issuers,
    };
    let deploy = demo.verified_grant().await?;
    demo.refused_requests(&deploy).await?;
    demo.unproven_finishes().await?;
    demo.proven_finish().await?;
    demo.expiry().await?;
    demo.t.step(&format!(
        "Audit trail of run {} (durable items in table {})",
        demo.run_id, provisioned.table
    ));
    audit_trail(&sdk, &provisioned.table, &demo.run_id).await?;
    Ok(ExitCode::SUCCESS)
}

/// The story's cast: the local Latch, the clients it is watched with, and the run it follows
/// (example-org/app-release on GitHub, its tokens minted by the local issuer).
struct Demo {
    t: Timeline,
    latch: LocalLatch,
    events: aws_sdk_eventbridge::Client,
    iam: aws_sdk_iam::Client,
    bus: String,
    run_id: String,
    deployer: String,
    account: AccountId,
    issuers: crate::dev_issuer::DevIssuers,
}

impl Demo {
    /// An ID token as GitHub Actions signs it for `run` of example-org/app-release on
    /// `git_ref`, bound to `presented`.
    fn token_for(&self, presented: Presented<'_>, run: &str, git_ref: &str) -> Result<String, CliError> {
        let claims = json!({"sub": format!("repo:example-org/app-release:ref:{git_ref}"),
               "repository": "example-org/app-release", "repository_id": "100001",
               "repository_owner": "example-org", "run_id": run, "run_attempt": "1",
               "ref": git_ref, "sha": "0123abcd", "actor": "octocat", "event_name": "push"});
        self.issuers
            .mint("github", &claims, Some(&request_audience("latch", presented)))
    }

    /// A start as the job publishes it: its claims in the detail, its token (from `token_ref`,
    /// which may differ from what the detail claims) bound to this very request.
    fn start(&self, job: &str, set: &str, duration: &str, git_ref: &str, token_ref: &str) -> Result<Value, CliError> {
        let usage = |e: latch_core::model::InvalidValue| CliError::Usage(e.to_string());
        let role = RoleArn::parse(&self.deployer).map_err(usage)?;
        let set_name = Name::parse(set).map_err(usage)?;
        let presented = Presented::Start(AudienceBinding {
            account: &self.account,
            role: &role,
            permission_set: &set_name,
            duration: GrantDuration::parse(duration).map_err(usage)?,
        });
        let token = self.token_for(presented, &self.run_id, token_ref)?;
        Ok(
            json!({"pipeline": "app-release", "run_id": self.run_id, "job": job, "attempt": 1, "role_arn": self.deployer,
               "permission_set": set, "duration": duration, "ref": git_ref, "actor": "octocat", "token": token}),
        )
    }

    /// The deploy job's finish, with a token of `run` or none.
    fn finish(&self, run: &str, with_token: bool) -> Result<Value, CliError> {
        let mut d = json!({"pipeline": "app-release", "run_id": self.run_id, "job": "deploy", "attempt": 1,
                           "outcome": "success"});
        if with_token {
            let presented = Presented::Finish { account: &self.account };
            d["token"] = json!(self.token_for(presented, run, "refs/heads/main")?);
        }
        Ok(d)
    }

    /// Publishes one pipeline event and says what the grant function made of it.
    async fn play(&self, detail_type: &str, detail: &Value) -> Result<(), CliError> {
        play(&self.t, &self.latch, &self.events, &self.bus, detail_type, detail).await
    }

    /// Which of Latch's policies app-deployer holds now.
    async fn say_policies_left(&self) -> Result<(), CliError> {
        let left = latch_policies(&self.iam, "app-deployer").await?;
        let left = if left.is_empty() {
            "none".into()
        } else {
            left.join(", ")
        };
        self.t.say(&format!("latch-* policies left on app-deployer: {left}"));
        Ok(())
    }

    /// Step 1: a verified deploy job gets what its rule allows; returns its start, to replay.
    async fn verified_grant(&self) -> Result<Value, CliError> {
        self.t.step("1. A deploy job starts and asks for what its rule allows");
        let deploy = self.start(
            "deploy",
            "deploy-artifacts",
            "PT15M",
            "refs/heads/main",
            "refs/heads/main",
        )?;
        self.t.say(&format!(
            "example-org/app-release run {}, job deploy: deploy-artifacts on app-deployer for 15m, with its ID token",
            self.run_id
        ));
        publish(&self.events, &self.bus, "Pipeline Job Started", &deploy).await?;
        for h in deliver(&self.latch, 1).await? {
            let Ok(Outcome::Start(StartOutcome::Activated(id))) = &h.outcome else {
                report(&self.t, &h);
                continue;
            };
            self.t.say(&format!(
                "GRANTED by the policy to the verified job (issuer github, repository example-org/app-release, ref main): {} is on role app-deployer",
                id.policy_name()
            ));
            let doc = role_policy(&self.iam, "app-deployer", &id.policy_name())
                .await
                .map_err(aws("reading the policy back"))?;
            self.t.more(&serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Ok(deploy)
    }

    /// Step 2: a set the rule does not allow, a branch lying in its detail, an honest feature
    /// branch, and the first start again.
    async fn refused_requests(&self, deploy: &Value) -> Result<(), CliError> {
        self.t.step("2. Requests the policy does not allow");
        self.t.say("the same job asks db-migrate on app-deployer");
        let wrong_set = self.start("deploy", "db-migrate", "PT10M", "refs/heads/main", "refs/heads/main")?;
        self.play("Pipeline Job Started", &wrong_set).await?;
        self.t
            .say("a feature-branch job claims refs/heads/main in its detail; its token says feature/x");
        let lying = self.start(
            "preview",
            "deploy-artifacts",
            "PT15M",
            "refs/heads/main",
            "refs/heads/feature/x",
        )?;
        self.play("Pipeline Job Started", &lying).await?;
        self.t.say("the same feature-branch job, honest this time");
        let honest = self.start(
            "preview",
            "deploy-artifacts",
            "PT15M",
            "refs/heads/feature/x",
            "refs/heads/feature/x",
        )?;
        self.play("Pipeline Job Started", &honest).await?;
        self.t.say("the first start is published again (a retried step)");
        self.play("Pipeline Job Started", deploy).await
    }

    /// Step 3: finishes without a token, or with another run's, change nothing.
    async fn unproven_finishes(&self) -> Result<(), CliError> {
        self.t.step("3. Finishes that do not prove the run change nothing");
        self.t
            .say("someone on the bus publishes the deploy job's finish without a token");
        self.play("Pipeline Job Finished", &self.finish(&self.run_id, false)?)
            .await?;
        self.t.say("again, with a token of another run of the same repository");
        let other_run = format!("{}9", self.run_id);
        self.play("Pipeline Job Finished", &self.finish(&other_run, true)?)
            .await?;
        let left = latch_policies(&self.iam, "app-deployer").await?;
        self.t
            .say(&format!("latch-* policies on app-deployer: {}", left.join(", ")));
        Ok(())
    }

    /// Step 4: the job's own finish ends its grant at once.
    async fn proven_finish(&self) -> Result<(), CliError> {
        self.t
            .step("4. The deploy job finishes, with its own token: its grant goes at once");
        self.play("Pipeline Job Finished", &self.finish(&self.run_id, true)?)
            .await?;
        self.say_policies_left().await
    }

    /// Step 5: a job that never finishes: IAM stops honouring its grant at expiry, the sweep
    /// and the TTL stream take it off.
    async fn expiry(&mut self) -> Result<(), CliError> {
        self.t.step("5. A job that never says it finished: its grant expires");
        let lost = self.start(
            "smoke-test",
            "deploy-artifacts",
            "PT8S",
            "refs/heads/main",
            "refs/heads/main",
        )?;
        self.t
            .say("job smoke-test asks deploy-artifacts for 8s, then its runner dies without a finish event");
        self.play("Pipeline Job Started", &lost).await?;
        self.t
            .say("IAM itself stops honouring the policy at its expiry (DateLessThan aws:CurrentTime); waiting 9s");
        tokio::time::sleep(Duration::from_secs(9)).await;
        let sweep = self.latch.run_sweep().await?;
        self.t.say(&format!(
            "the sweep (every minute in AWS) revoked {} expired grant(s)",
            sweep.revoked
        ));
        let deleted = self.latch.expire_ttl().await?;
        self.t.say(&format!(
            "DynamoDB's TTL deletes {deleted} expired item(s) later; the stream brings them to the revoke function:"
        ));
        for (_, outcome) in self.latch.pump_stream().await? {
            self.t.more(&format!("revoke function: {}", stream_outcome(&outcome)));
        }
        self.say_policies_left().await
    }
}

fn stream_outcome(outcome: &RecordOutcome) -> String {
    match outcome {
        RecordOutcome::Skipped(why) => format!("skipped ({why})"),
        RecordOutcome::Revoked => "revoked (expired_ttl)".into(),
        RecordOutcome::AlreadyRevoked => "already revoked by another path: nothing written".into(),
        RecordOutcome::Failed => "IAM refused; audited as Revoke Failed".into(),
        RecordOutcome::Retry => "will retry".into(),
    }
}

fn report(t: &Timeline, h: &Handled) {
    match &h.outcome {
        Ok(Outcome::Start(StartOutcome::Activated(id))) => t.say(&format!("GRANTED: {}", id.policy_name())),
        Ok(Outcome::Start(StartOutcome::Denied(reason))) => t.say(&format!("DENIED: {reason}")),
        Ok(Outcome::Start(StartOutcome::AlreadyActive(id))) => t.say(&format!(
            "duplicate: grant {id} is already active; nothing new recorded, expiry unchanged"
        )),
        Ok(Outcome::Start(StartOutcome::AlreadyEnded(id))) => t.say(&format!("duplicate: grant {id} already ended")),
        Ok(Outcome::Finish(FinishOutcome::Finished { revoked, .. })) => {
            t.say(&format!("REVOKED {revoked} grant(s): reason job_finished"))
        }
        Ok(Outcome::Finish(FinishOutcome::Denied(reason))) => t.say(&format!("finish refused: {reason}")),
        Ok(Outcome::Extend(ExtendOutcome::Extended(id) | ExtendOutcome::AlreadyExtended(id))) => {
            t.say(&format!("EXTENDED: grant {id}"))
        }
        Ok(Outcome::Extend(ExtendOutcome::Denied(reason))) => t.say(&format!("extension refused: {reason}")),
        Ok(Outcome::NotManaged) => t.say("not a job Latch manages: ignored"),
        Err(e) => t.say(&format!("{} handler failed (Lambda would retry): {e}", h.detail_type)),
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
        .source(SOURCE)
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

/// Publishes one pipeline event on the bus and says what the grant function made of it.
async fn play(
    t: &Timeline,
    latch: &LocalLatch,
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
    detail_type: &str,
    detail: &Value,
) -> Result<(), CliError> {
    publish(events, bus, detail_type, detail).await?;
    deliver(latch, 1).await?.iter().for_each(|h| report(t, h));
    Ok(())
}

/// Pumps the inbox until `expected` deliveries were handled (or 10 s passed).
async fn deliver(latch: &LocalLatch, expected: usize) -> Result<Vec<Handled>, CliError> {
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while all.len() < expected && Instant::now() < deadline {
        all.extend(latch.pump_inbox(1).await?);
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

async fn latch_policies(iam: &aws_sdk_iam::Client, role: &str) -> Result<Vec<String>, CliError> {
    let out = iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(|e| CliError::Aws(format!("ListRolePolicies: {e}")))?;
    Ok(out
        .policy_names()
        .iter()
        .filter(|n| n.starts_with("latch-"))
        .cloned()
        .collect())
}

async fn audit_trail(sdk: &aws_config::SdkConfig, table: &str, run_id: &str) -> Result<(), CliError> {
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let mut rows: Vec<latch_core::audit::AuditRecord> = Vec::new();
    let mut start = None;
    loop {
        let out = dynamo
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| CliError::Aws(format!("Scan: {e}")))?;
        rows.extend(
            out.items()
                .iter()
                .filter(|i| {
                    i.get(items::RECORD_TYPE)
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|s| s == items::RECORD_AUDIT)
                })
                .filter_map(|i| serde_dynamo::from_item(i.clone()).ok())
                .filter(|r: &latch_core::audit::AuditRecord| r.run_id.as_deref() == Some(run_id)),
        );
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    rows.sort_by(|a, b| (a.recorded_at_epoch, a.decision.code()).cmp(&(b.recorded_at_epoch, b.decision.code())));
    println!(
        "  {:<20}  {:<10} {:<26} {:<10} {:<16} rule",
        "recorded", "decision", "reason", "job", "permission set"
    );
    for r in rows {
        println!(
            "  {:<20}  {:<10} {:<26} {:<10} {:<16} {}",
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
