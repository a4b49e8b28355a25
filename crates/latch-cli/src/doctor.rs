//! `latch doctor`: checks a deployed Latch against its policy file, with the caller's AWS
//! credentials, and says what is wrong in words a platform engineer can act on.
//!
//! Checks (read-only calls only): the table has Latch's key layout, its TTL on `ttl`, a stream
//! carrying old images and the expiry index; the bus exists and its pipeline rule sends the
//! pipeline detail-types somewhere; every role the policy names exactly exists, sits under the
//! elevatable path and carries the deployment's boundary (when given). One line per check;
//! exit 0 when every check passes, 1 otherwise.
//!
//! Not checked here (they need services the CLI does not carry): that the sweep's schedule
//! runs and that the alarm topic has a subscriber; docs/deploy.md (step 4) says how to look.

use std::path::PathBuf;
use std::process::ExitCode;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use clap::Args;
use latch_aws::items::{EXPIRY_INDEX, PK, SK, TTL};
use latch_aws::provision::pipeline_events_pattern;
use latch_core::model::RoleArn;
use latch_core::policy::Policy;

use crate::CliError;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The policy file the stack serves [default: infra/policies.yaml]
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The grants table.
    #[arg(long, env = "LATCH_TABLE", default_value = "latch-grants")]
    table: String,
    /// The Latch event bus.
    #[arg(long, env = "LATCH_BUS", default_value = "latch")]
    bus: String,
    /// The permissions boundary every elevatable role must carry (the stack's `BoundaryArn`
    /// output); without it the boundary is not checked.
    #[arg(long, env = "LATCH_BOUNDARY_ARN", value_name = "ARN")]
    boundary: Option<String>,
}

/// One check's verdict.
struct Finding {
    ok: bool,
    what: String,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        Self {
            ok: true,
            what: what.into(),
        }
    }
    fn fail(what: impl Into<String>) -> Self {
        Self {
            ok: false,
            what: what.into(),
        }
    }
}

pub async fn run(args: DoctorArgs) -> Result<ExitCode, CliError> {
    let path = args
        .policy
        .clone()
        .unwrap_or_else(|| PathBuf::from("infra/policies.yaml"));
    let policy = Policy::load_path(&path)?;
    let sdk = latch_aws::config::sdk_loader().load().await;
    let mut findings = table(&aws_sdk_dynamodb::Client::new(&sdk), &args.table).await;
    findings.extend(bus(&aws_sdk_eventbridge::Client::new(&sdk), &args.bus).await);
    let iam = aws_sdk_iam::Client::new(&sdk);
    for role in policy.exact_roles() {
        findings.push(role_finding(&iam, &role, &policy.elevatable_path, args.boundary.as_deref()).await);
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    for f in &findings {
        println!("{} {}", if f.ok { "ok  " } else { "FAIL" }, f.what);
    }
    println!("{} checks, {failed} failed", findings.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn table(dynamo: &aws_sdk_dynamodb::Client, name: &str) -> Vec<Finding> {
    let described = match dynamo.describe_table().table_name(name).send().await {
        Ok(d) => d,
        Err(e) => return vec![Finding::fail(format!("table {name}: {}", DisplayErrorContext(&e)))],
    };
    let Some(table) = described.table() else {
        return vec![Finding::fail(format!("table {name}: DescribeTable answered no table"))];
    };
    let keys: Vec<&str> = table.key_schema().iter().map(|k| k.attribute_name()).collect();
    let mut out = vec![if keys == [PK, SK] {
        Finding::ok(format!("table {name}: keys {PK}, {SK}"))
    } else {
        Finding::fail(format!("table {name}: keys {keys:?}, Latch's are [{PK:?}, {SK:?}]"))
    }];
    let stream = table.stream_specification();
    let view = stream.and_then(|s| s.stream_view_type()).map(|v| v.as_str());
    out.push(
        if stream.is_some_and(|s| s.stream_enabled()) && matches!(view, Some("OLD_IMAGE" | "NEW_AND_OLD_IMAGES")) {
            Finding::ok(format!(
                "table {name}: stream with old images (the revoke function's trigger)"
            ))
        } else {
            Finding::fail(format!(
                "table {name}: no stream with old images ({view:?}): expired grants would wait for the sweep"
            ))
        },
    );
    let index = table
        .global_secondary_indexes()
        .iter()
        .any(|i| i.index_name() == Some(EXPIRY_INDEX));
    out.push(if index {
        Finding::ok(format!("table {name}: index {EXPIRY_INDEX} (the sweep's query)"))
    } else {
        Finding::fail(format!(
            "table {name}: index {EXPIRY_INDEX} missing: the sweep cannot find expired grants"
        ))
    });
    let ttl = dynamo.describe_time_to_live().table_name(name).send().await;
    let ttl_on = ttl
        .as_ref()
        .ok()
        .and_then(|t| t.time_to_live_description())
        .is_some_and(|d| {
            d.attribute_name() == Some(TTL) && d.time_to_live_status().is_some_and(|s| s.as_str() == "ENABLED")
        });
    out.push(if ttl_on {
        Finding::ok(format!("table {name}: TTL on `{TTL}`"))
    } else {
        Finding::fail(format!(
            "table {name}: TTL is not enabled on `{TTL}`: expired grants are never removed"
        ))
    });
    out
}

async fn bus(events: &aws_sdk_eventbridge::Client, name: &str) -> Vec<Finding> {
    if let Err(e) = events.describe_event_bus().name(name).send().await {
        return vec![Finding::fail(format!("bus {name}: {}", DisplayErrorContext(&e)))];
    }
    let rules = match events.list_rules().event_bus_name(name).send().await {
        Ok(r) => r,
        Err(e) => {
            return vec![Finding::fail(format!(
                "bus {name}: ListRules: {}",
                DisplayErrorContext(&e)
            ))];
        }
    };
    let want = pipeline_events_pattern();
    let pipeline_rule = rules.rules().iter().find(|r| {
        r.event_pattern()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .is_some_and(|p| p == want)
    });
    let Some(rule) = pipeline_rule else {
        return vec![Finding::fail(format!(
            "bus {name}: no rule with the pipeline pattern {want}: pipeline events reach nothing"
        ))];
    };
    let rule_name = rule.name().unwrap_or_default();
    let targets = events
        .list_targets_by_rule()
        .rule(rule_name)
        .event_bus_name(name)
        .send()
        .await
        .map(|t| t.targets().len())
        .unwrap_or(0);
    vec![if targets > 0 {
        Finding::ok(format!(
            "bus {name}: rule {rule_name} routes pipeline events ({targets} target(s))"
        ))
    } else {
        Finding::fail(format!("bus {name}: rule {rule_name} has no target"))
    }]
}

async fn role_finding(iam: &aws_sdk_iam::Client, role: &RoleArn, path: &str, boundary: Option<&str>) -> Finding {
    let got = match iam.get_role().role_name(role.name()).send().await {
        Ok(g) => g,
        Err(e) => return Finding::fail(format!("role {role}: {}", DisplayErrorContext(&e))),
    };
    let Some(found) = got.role() else {
        return Finding::fail(format!("role {role}: GetRole answered no role"));
    };
    if !found.path().starts_with(path) {
        return Finding::fail(format!(
            "role {role}: IAM has it under {}, outside the elevatable path {path}",
            found.path()
        ));
    }
    if found.arn() != role.as_str() {
        return Finding::fail(format!("role {role}: IAM's ARN is {}", found.arn()));
    }
    let carried = found.permissions_boundary().and_then(|b| b.permissions_boundary_arn());
    match (boundary, carried) {
        (None, _) => Finding::ok(format!(
            "role {role}: exists under {path} (boundary not checked: no --boundary)"
        )),
        (Some(want), Some(has)) if want == has => Finding::ok(format!("role {role}: under {path}, with the boundary")),
        (Some(want), has) => Finding::fail(format!(
            "role {role}: boundary {}, not {want}: grants on it are refused (role_without_boundary)",
            has.unwrap_or("none")
        )),
    }
}
