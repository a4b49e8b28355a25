//! The sweep function: two schedules invoke it, one per task (see [`latch_core::sweep`] for the
//! contract). The payload's `detail-type` says which: [`DETAIL_TYPE_SWEEP`] revokes grants past
//! their expiry, [`DETAIL_TYPE_DRIFT`] repairs drift; any other payload is refused (logged, and
//! Ok: a retry cannot help). It stops starting new work [`DEADLINE_MARGIN`] before the Lambda
//! deadline and leaves the rest to the next run; its lease lasts until the deadline and a little
//! more. Err (so the scheduler retries) only when the store cannot be read; the error reaches
//! the runtime as a [`Diagnostic`] naming its type and whether a retry can help. Each run's
//! metrics go out as EMF lines ([`latch_core::metrics`]).
//!
//! Settings from the environment, besides [`latch_aws::Config`]'s: `LATCH_DRIFT_GRACE`
//! (humantime, default `10m`), `LATCH_SWEEP_CONCURRENCY` (default 8) and
//! `LATCH_DRIFT_IAM_RATE` (IAM calls a second for drift repair, default 5).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, LambdaEvent};
use latch_aws::dynamo::DynamoStore;
use latch_aws::events::EventBridgeSink;
use latch_aws::iam::IamAdapter;
use latch_core::metrics;
use latch_core::policy::Policy;
use latch_core::ports::{
    AuditSink, Clock, GrantStore, IamInventory, IamWriter, Ports, Retryable, StoreError, SystemClock,
};
use latch_core::sweep::{SweepReport, SweepSettings, SweepState, SweepTask, Sweeper};
use serde_json::Value;
use tracing::error;

/// Room left for the work in flight when the sweep stops starting new work.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

pub const ENV_DRIFT_GRACE: &str = "LATCH_DRIFT_GRACE";
pub const ENV_SWEEP_CONCURRENCY: &str = "LATCH_SWEEP_CONCURRENCY";
pub const ENV_DRIFT_IAM_RATE: &str = "LATCH_DRIFT_IAM_RATE";

/// The schedules' payloads (events/scheduled-sweep.json, events/scheduled-drift-repair.json).
pub const DETAIL_TYPE_SWEEP: &str = "Latch Sweep";
pub const DETAIL_TYPE_DRIFT: &str = "Latch Drift Repair";

/// How long a lease outlives the invocation's deadline: a run that dies still frees the task
/// well before the next schedule tick (the function's timeout is 50 s, the tick 60 s).
pub const LEASE_SLACK: Duration = Duration::from_secs(5);

/// Why a run failed; only the store being unreachable makes the scheduler retry.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("the grant store could not be read: {0}")]
    Store(#[from] StoreError),
}

impl SweepError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Store(_) => "StoreUnavailable",
        }
    }
}

impl Retryable for SweepError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
        }
    }
}

/// What Lambda logs and puts in the dead-letter message: the error's type and whether a retry
/// can help, not an opaque boxed error.
impl From<SweepError> for Diagnostic {
    fn from(e: SweepError) -> Self {
        let verdict = if e.is_retryable() { "Retryable" } else { "Permanent" };
        Diagnostic {
            error_type: format!("Sweep.{}.{verdict}", e.kind()),
            error_message: format!("{e} (retryable: {})", e.is_retryable()),
        }
    }
}

/// Which task a schedule's payload asks for; `None` for anything else.
pub fn task_of(payload: &Value) -> Option<SweepTask> {
    match payload.get("detail-type").and_then(Value::as_str) {
        Some(DETAIL_TYPE_SWEEP) => Some(SweepTask::Expired),
        Some(DETAIL_TYPE_DRIFT) => Some(SweepTask::Drift),
        _ => None,
    }
}

pub struct SweepFunction<I, S, A, C> {
    pub policy: Policy,
    pub ports: Ports<I, S, A, C>,
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
    if let Some(v) = lookup(ENV_DRIFT_IAM_RATE) {
        settings.drift_iam_per_second =
            v.parse::<f64>()
                .ok()
                .filter(|r| (0.1..=100.0).contains(r))
                .ok_or(InitError::Setting {
                    name: ENV_DRIFT_IAM_RATE,
                    why: "calls a second, from 0.1 to 100".into(),
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
        ports: Ports::new(clients.iam, clients.store, clients.audit, SystemClock),
        settings,
    })
}

/// Time left before the invocation's deadline; none when the context carries no deadline
/// (local runs).
pub fn time_left(deadline_epoch_ms: u64) -> Option<Duration> {
    if deadline_epoch_ms == 0 {
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Some(Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms)))
}

/// When to stop starting new work: the deadline less the margin.
pub fn stop_by(deadline_epoch_ms: u64) -> Option<Instant> {
    time_left(deadline_epoch_ms).map(|left| Instant::now() + left.saturating_sub(DEADLINE_MARGIN))
}

impl<I, S, A, C> SweepFunction<I, S, A, C>
where
    I: IamWriter + IamInventory,
    S: GrantStore + SweepState,
    A: AuditSink,
    C: Clock,
{
    fn sweeper(&self) -> Sweeper<'_, I, I, S, A, C> {
        self.ports.sweeper(&self.policy, &self.ports.iam, self.settings.clone())
    }

    /// Both tasks, one after the other (the local runner and tests).
    pub async fn sweep(&self, stop_by: Option<Instant>) -> Result<SweepReport, SweepError> {
        Ok(self.sweeper().run(stop_by).await?)
    }

    /// One task, as a schedule runs it: under its lease, within the deadline, metrics emitted.
    pub async fn run_task(&self, task: SweepTask, deadline_epoch_ms: u64) -> Result<SweepReport, SweepError> {
        let left = time_left(deadline_epoch_ms);
        let lease_for = left.and_then(|l| chrono::Duration::from_std(l + LEASE_SLACK).ok());
        let report = self
            .sweeper()
            .run_task(task, stop_by(deadline_epoch_ms), lease_for)
            .await
            .inspect_err(|e| error!(error = %e, retryable = e.is_retryable(), "sweep failed"))?;
        let mut records = metrics::sweep_records(&report);
        records.extend(latch_aws::call_metrics::drain());
        metrics::emit(&records, "sweep", self.ports.clock.now());
        Ok(report)
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, SweepError> {
        let Some(task) = task_of(&event.payload) else {
            error!(payload = %event.payload, "not a sweep schedule's payload; nothing done");
            return Ok(serde_json::json!({ "refused": "unknown detail-type" }));
        };
        let report = self.run_task(task, event.context.deadline).await?;
        Ok(serde_json::json!({
            "task": task.code(),
            "revoked": report.revoked,
            "already_revoked": report.already_revoked,
            "revoke_failed": report.revoke_failed,
            "events_unpublished": report.events_unpublished,
            "expired_found": report.expired_found,
            "not_reached": report.not_reached,
            "drift_repaired": report.drift_repaired,
            "drift_pending": report.drift_pending,
            "drift_errors": report.drift_errors,
            "drift_roles_checked": report.drift_roles_checked,
            "drift_roles_eligible": report.drift_roles_eligible,
            "lease_held_elsewhere": !report.lease_held_elsewhere.is_empty(),
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
        assert!(settings_from(|n| (n == ENV_DRIFT_IAM_RATE).then(|| "0".into())).is_err());
        let paced = settings_from(|n| (n == ENV_DRIFT_IAM_RATE).then(|| "2.5".into())).unwrap();
        assert_eq!(paced.drift_iam_per_second, 2.5);
    }

    #[test]
    fn given_each_schedules_payload_then_its_task_and_nothing_else() {
        let fixture = |name: &str| -> Value {
            let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        assert_eq!(task_of(&fixture("scheduled-sweep.json")), Some(SweepTask::Expired));
        assert_eq!(task_of(&fixture("scheduled-drift-repair.json")), Some(SweepTask::Drift));
        assert_eq!(task_of(&serde_json::json!({})), None);
        assert_eq!(task_of(&serde_json::json!({"detail-type": "Latch Sweep "})), None);
    }

    #[test]
    fn given_a_store_error_then_the_diagnostic_names_its_type_and_retryability() {
        let d = Diagnostic::from(SweepError::Store(StoreError::Transient("throttled".into())));
        assert_eq!(d.error_type, "Sweep.StoreUnavailable.Retryable");
        assert!(d.error_message.contains("throttled") && d.error_message.contains("retryable: true"));
        let d = Diagnostic::from(SweepError::Store(StoreError::Rejected("AccessDenied".into())));
        assert_eq!(d.error_type, "Sweep.StoreUnavailable.Permanent");
    }
}
