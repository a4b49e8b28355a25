//! The sweep function: on a schedule, revokes every grant past its expiry and repairs drift
//! (see [`latch_core::sweep`] for the contract). The schedule's payload is ignored. It stops
//! starting new work [`DEADLINE_MARGIN`] before the Lambda deadline and leaves the rest to the
//! next run. Err (so the scheduler retries) only when the expiry index cannot be read.
//!
//! Settings from the environment, besides [`latch_aws::Config`]'s: `LATCH_DRIFT_GRACE`
//! (humantime, default `10m`) and `LATCH_SWEEP_CONCURRENCY` (default 8).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent};
use latch_aws::dynamo::DynamoStore;
use latch_aws::events::EventBridgeSink;
use latch_aws::iam::IamAdapter;
use latch_core::policy::Policy;
use latch_core::ports::{AuditSink, Clock, GrantStore, IamInventory, IamWriter, SystemClock};
use latch_core::sweep::{SweepReport, SweepSettings, Sweeper};
use serde_json::Value;

/// Room left for the work in flight when the sweep stops starting new work.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

pub const ENV_DRIFT_GRACE: &str = "LATCH_DRIFT_GRACE";
pub const ENV_SWEEP_CONCURRENCY: &str = "LATCH_SWEEP_CONCURRENCY";

pub struct SweepFunction<I, S, A, C> {
    pub policy: Policy,
    pub iam: I,
    pub store: S,
    pub audit: A,
    pub clock: C,
    pub settings: SweepSettings,
}

pub type AwsSweepFunction = SweepFunction<IamAdapter, DynamoStore, EventBridgeSink, SystemClock>;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Load(#[from] latch_aws::InitError),
    #[error("{name}: {why}")]
    Setting { name: &'static str, why: String },
}

/// Sweep settings from a lookup (the environment in Lambda).
pub fn settings_from(lookup: impl Fn(&str) -> Option<String>) -> Result<SweepSettings, InitError> {
    let mut settings = SweepSettings::default();
    if let Some(v) = lookup(ENV_DRIFT_GRACE) {
        let grace = humantime::parse_duration(&v).map_err(|e| InitError::Setting {
            name: ENV_DRIFT_GRACE,
            why: e.to_string(),
        })?;
        settings.drift_grace = chrono::Duration::from_std(grace).map_err(|e| InitError::Setting {
            name: ENV_DRIFT_GRACE,
            why: e.to_string(),
        })?;
    }
    if let Some(v) = lookup(ENV_SWEEP_CONCURRENCY) {
        settings.concurrency = v
            .parse::<usize>()
            .ok()
            .filter(|c| (1..=64).contains(c))
            .ok_or(InitError::Setting {
                name: ENV_SWEEP_CONCURRENCY,
                why: "a whole number from 1 to 64".into(),
            })?;
    }
    Ok(settings)
}

pub async fn init() -> Result<AwsSweepFunction, InitError> {
    let settings = settings_from(|n| std::env::var(n).ok())?;
    let (policy, clients) = latch_aws::load_with_policy().await?;
    let settings = SweepSettings {
        deployment: clients.deployment.clone(),
        ..settings
    };
    Ok(SweepFunction {
        policy,
        iam: clients.iam,
        store: clients.store,
        audit: clients.audit,
        clock: SystemClock,
        settings,
    })
}

/// When to stop starting new work: the invocation's deadline less the margin; none when the
/// context carries no deadline (local runs).
pub fn stop_by(deadline_epoch_ms: u64) -> Option<Instant> {
    if deadline_epoch_ms == 0 {
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms));
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN))
}

impl<I, S, A, C> SweepFunction<I, S, A, C>
where
    I: IamWriter + IamInventory,
    S: GrantStore,
    A: AuditSink,
    C: Clock,
{
    pub async fn sweep(&self, stop_by: Option<Instant>) -> Result<SweepReport, Error> {
        let sweeper = Sweeper {
            policy: &self.policy,
            iam: &self.iam,
            inventory: &self.iam,
            store: &self.store,
            audit: &self.audit,
            clock: &self.clock,
            settings: self.settings.clone(),
        };
        Ok(sweeper.run(stop_by).await?)
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Error> {
        let report = self.sweep(stop_by(event.context.deadline)).await?;
        Ok(serde_json::json!({
            "revoked": report.revoked,
            "already_revoked": report.already_revoked,
            "revoke_failed": report.revoke_failed,
            "events_unpublished": report.events_unpublished,
            "drift_repaired": report.drift_repaired,
            "drift_pending": report.drift_pending,
            "drift_errors": report.drift_errors,
            "stopped_early": report.stopped_early,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_nonsense() {
        let s = settings_from(|n| match n {
            ENV_DRIFT_GRACE => Some("0s".into()),
            ENV_SWEEP_CONCURRENCY => Some("4".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((s.drift_grace, s.concurrency), (chrono::Duration::zero(), 4));
        assert!(settings_from(|n| (n == ENV_SWEEP_CONCURRENCY).then(|| "0".into())).is_err());
        assert!(settings_from(|n| (n == ENV_DRIFT_GRACE).then(|| "soon".into())).is_err());
    }
}
