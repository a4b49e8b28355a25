//! `latch dev`: Latch running locally against the emulator, until Ctrl-C.
//!
//! Provisions the table, bus, rules and example roles, then loops: deliveries from the bus
//! rule's queue to the grant handler, new stream records to the revoke handler, the sweep on its
//! timer, and (with `--expire-ttl`) TTL deletions the emulator would otherwise never make. The
//! table's audit items go on to the archive as in AWS: `latch_aws::archive`'s stand-in for the
//! Pipe and Firehose stream, into a locked bucket. Each step prints one line a person can
//! follow. Ctrl-C finishes the step in progress and stops.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use grant::Outcome;
use latch_core::grant::{ExtendOutcome, FinishOutcome, StartOutcome};
use revoke::RecordOutcome;

use crate::local::{self, LocalTarget};
use crate::runner::Handled;
use crate::{CliError, now};

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    target: LocalTarget,
    /// How often the sweep runs (AWS runs it every minute).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    sweep_every: Duration,
    /// Delete items whose `ttl` has passed, as DynamoDB's TTL would, so the stream path runs.
    /// The emulator never expires items by itself; without this only the sweep revokes.
    #[arg(long)]
    expire_ttl: bool,
    /// How long drift repair waits before removing a `latch-*` policy with no live grant.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    drift_grace: Duration,
    /// The audit archive's bucket (Object Lock, GOVERNANCE, one day) [default: <table>-archive].
    #[arg(long)]
    archive_bucket: Option<String>,
    /// Stop by itself after this long (for scripts and tests); runs until Ctrl-C otherwise.
    #[arg(long, value_parser = humantime::parse_duration)]
    stop_after: Option<Duration>,
    /// Once ready, write the variables a shell needs to act as a GitHub Actions job of
    /// example-org/app-release against this Latch (`. FILE`, then `latch request` / `release`):
    /// the emulator's endpoint and test credentials, the bus, table and source, and the token
    /// endpoint, with one run id for the whole session.
    #[arg(long, value_name = "FILE")]
    env_file: Option<std::path::PathBuf>,
}

/// The shell lines `--env-file` writes. Values are quoted for a POSIX shell.
fn job_env(endpoint: &str, bus: &str, table: &str, token_url: &str, token_secret: &str) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\'', r"'\''"));
    // The dev endpoint fills the claims the URL does not give; one run id keeps request and
    // release on the same job.
    let run_id = chrono::Utc::now().timestamp().to_string();
    let claims = percent_encoding::utf8_percent_encode(
        &serde_json::json!({ "run_id": run_id }).to_string(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let vars = [
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("LATCH_SOURCE", "ci.github".to_owned()),
        ("LATCH_BUS", bus.to_owned()),
        ("LATCH_TABLE", table.to_owned()),
        // What GitHub Actions sets in a job, so that `latch request` reads the job as it would there.
        ("GITHUB_ACTIONS", "true".to_owned()),
        ("GITHUB_REPOSITORY", "example-org/app-release".to_owned()),
        ("GITHUB_RUN_ID", run_id),
        ("GITHUB_RUN_ATTEMPT", "1".to_owned()),
        ("GITHUB_JOB", "deploy".to_owned()),
        ("GITHUB_REF", "refs/heads/main".to_owned()),
        ("GITHUB_SHA", "0123abcd".to_owned()),
        ("GITHUB_ACTOR", "octocat".to_owned()),
        (
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            format!("{token_url}?issuer=github&claims={claims}"),
        ),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", token_secret.to_owned()),
    ];
    let mut out =
        String::from("# Written by `latch dev --env-file`: a GitHub Actions job of example-org/app-release on main.\n");
    for (name, value) in vars {
        out.push_str(&format!("export {name}={}\n", quote(&value)));
    }
    out
}

/// One line per handled pipeline event.
pub fn describe(h: &Handled) -> String {
    let job = |d: &serde_json::Value| {
        format!(
            "{}/{}/{}#{}",
            d["pipeline"].as_str().or(d["project-name"].as_str()).unwrap_or("?"),
            d["run_id"].as_str().or(d["execution-id"].as_str()).unwrap_or("?"),
            d["job"].as_str().or(d["action"].as_str()).unwrap_or("?"),
            d["attempt"]
        )
    };
    let what = match &h.outcome {
        Ok(Outcome::Start(StartOutcome::Activated(id))) => match h.detail["role_arn"].as_str() {
            Some(role) => format!(
                "GRANTED {} on {role} for {} (policy {})",
                h.detail["permission_set"].as_str().unwrap_or("?"),
                h.detail["duration"].as_str().unwrap_or("?"),
                id.policy_name()
            ),
            None => format!("GRANTED by a native rule (policy {})", id.policy_name()),
        },
        Ok(Outcome::Start(StartOutcome::AlreadyActive(id))) => format!("duplicate: grant {id} already active"),
        Ok(Outcome::Start(StartOutcome::AlreadyEnded(id))) => format!("duplicate: grant {id} already ended"),
        Ok(Outcome::Start(StartOutcome::Denied(reason))) => format!("DENIED: {reason}"),
        Ok(Outcome::Finish(FinishOutcome::Finished {
            revoked,
            already_ended,
            failed,
        })) => {
            format!("job finished: {revoked} grant(s) revoked, {already_ended} already ended, {failed} failed")
        }
        Ok(Outcome::Finish(FinishOutcome::Denied(reason))) => format!("finish refused: {reason}"),
        Ok(Outcome::Extend(ExtendOutcome::Extended(id))) => format!("EXTENDED grant {id}"),
        Ok(Outcome::Extend(ExtendOutcome::AlreadyExtended(id))) => format!("duplicate: grant {id} already extended"),
        Ok(Outcome::Extend(ExtendOutcome::Denied(reason))) => format!("extension refused: {reason}"),
        Ok(Outcome::NotManaged) => "native job no rule names: ignored".into(),
        Err(e) => format!("handler failed, will be retried: {e}"),
    };
    format!("{:<22} {:<28} {what}", h.detail_type, job(&h.detail))
}

pub async fn run(args: DevArgs) -> Result<ExitCode, CliError> {
    let grace = chrono::Duration::from_std(args.drift_grace).map_err(|e| CliError::Usage(e.to_string()))?;
    let local::Started {
        mut latch,
        provisioned,
        mut issuers,
        sdk,
    } = local::start_latch(&args.target, grace).await?;
    let archive_bucket = args
        .archive_bucket
        .clone()
        .unwrap_or_else(|| format!("{}-archive", provisioned.table));
    let archive_err = |e: latch_aws::archive::ArchiveError| CliError::Aws(e.to_string());
    latch_aws::archive::create_bucket(&sdk, &archive_bucket, 1)
        .await
        .map_err(archive_err)?;
    let mut archive = latch_aws::archive::ArchiveFeed::open(&sdk, &provisioned.table, &archive_bucket)
        .await
        .map_err(archive_err)?;
    let tokens = issuers.serve_tokens().await?;
    println!(
        "latch dev: table {}, bus {}, policy {}, archive s3://{archive_bucket}/audit/",
        provisioned.table,
        provisioned.bus,
        args.target.policy.display()
    );
    // GitHub Actions' own pair of variables: `latch request` then takes the real GitHub path.
    // `&issuer=` picks another policy issuer, `&claims=<url-encoded JSON>` overrides the example
    // claims (a GitHub job of example-org/app-release on main).
    println!(
        "  tokens: ACTIONS_ID_TOKEN_REQUEST_URL='{}?issuer=github' ACTIONS_ID_TOKEN_REQUEST_TOKEN={} latch request --source ci.github --bus {} --run-id <claims.run_id> …",
        tokens.url, tokens.secret, provisioned.bus
    );
    println!(
        "  publish pipeline events on bus {:?}; sweep every {}; TTL expiry {}; Ctrl-C stops",
        provisioned.bus,
        humantime::format_duration(args.sweep_every),
        if args.expire_ttl {
            "simulated"
        } else {
            "off (the emulator never expires items)"
        }
    );
    if let Some(path) = &args.env_file {
        let endpoint = local::endpoint(args.target.endpoint.clone());
        let text = job_env(
            &endpoint,
            &provisioned.bus,
            &provisioned.table,
            &tokens.url,
            &tokens.secret,
        );
        std::fs::write(path, text).map_err(|e| CliError::Usage(format!("writing {}: {e}", path.display())))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let started = Instant::now();
    let mut next_sweep = Instant::now() + args.sweep_every;
    while !stop.load(Ordering::SeqCst) && args.stop_after.is_none_or(|d| started.elapsed() < d) {
        for h in latch.pump_inbox(1).await? {
            println!("[{}] grant   {}", now(), describe(&h));
        }
        if args.expire_ttl {
            let n = latch.expire_ttl().await?;
            if n > 0 {
                println!(
                    "[{}] ttl     deleted {n} expired item(s), as DynamoDB's TTL would",
                    now()
                );
            }
        }
        for (record, outcome) in latch.pump_stream().await? {
            if matches!(outcome, RecordOutcome::Skipped(_)) {
                continue;
            }
            let pk = record
                .change
                .keys
                .get("pk")
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            println!("[{}] revoke  stream REMOVE {pk}: {outcome:?}", now());
        }
        match archive.pump().await {
            Ok(p) if p.lines_written > 0 || p.objects_written > 0 => println!(
                "[{}] archive {} audit record(s) in {} object(s) to s3://{archive_bucket}/audit/",
                now(),
                p.lines_written,
                p.objects_written
            ),
            Ok(_) => {}
            Err(e) => println!("[{}] archive upload failed, kept for the next pass: {e}", now()),
        }
        if Instant::now() >= next_sweep {
            let r = latch.run_sweep().await?;
            println!(
                "[{}] sweep   revoked {}, failed {}, drift repaired {} (pending {})",
                now(),
                r.revoked,
                r.revoke_failed,
                r.drift_repaired,
                r.drift_pending
            );
            next_sweep = Instant::now() + args.sweep_every;
        }
    }
    println!("latch dev: stopped");
    Ok(ExitCode::SUCCESS)
}
