//! The grant function: EventBridge events in, grant decisions out.
//!
//! `Pipeline Job Started` → [`GrantService::on_start`]; `Pipeline Job Finished` →
//! [`GrantService::on_finish`]; `Pipeline Grant Extension Requested` → [`GrantService::on_extend`]; CodePipeline action and CodeBuild build state changes from their
//! `aws.*` sources → [`GrantService::on_native`]; a payload that is not an EventBridge event at
//! all → a Denied audit naming the field ([`handle_payload`]) (this function, not the revoke function, handles finish events:
//! the bus delivers them here with the starts, and ending a job's grants at once needs the same
//! store, IAM and audit ports the grant path holds); anything else is denied as
//! `unsupported_event`. Returns `Err` only when a retry may help (Lambda's async
//! retries, then the dead-letter queue); every permanent problem has been audited and is `Ok`.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use lambda_runtime::{Diagnostic, LambdaEvent};
use latch_aws::dynamo::DynamoStore;
use latch_aws::events::EventBridgeSink;
use latch_aws::iam::IamAdapter;
use latch_aws::jwks::HttpKeySource;
use latch_aws::native::NativeRunsAdapter;
use latch_core::event::{DETAIL_TYPE_EXTEND, DETAIL_TYPE_FINISHED, DETAIL_TYPE_STARTED, Envelope};
use latch_core::grant::{ExtendOutcome, FinishOutcome, GrantError, GrantService, NativeOutcome, StartOutcome};
use latch_core::identity::KeySource;
use latch_core::metrics::{self, MetricRecord};
use latch_core::model::{AccountId, digest};
use latch_core::native::is_native;
use latch_core::ports::{AuditSink, Clock, GrantStore, IamWriter, NativeRuns, Ports, Retryable, SystemClock};
use latch_core::revoke::RevokeReason;
use serde_json::Value;
use tracing::error;

/// The service as deployed: AWS adapters, the wall clock.
pub type AwsGrantService =
    GrantService<IamAdapter, DynamoStore, EventBridgeSink, SystemClock, HttpKeySource, NativeRunsAdapter>;

/// Reads configuration and the policy file, builds the clients (and the issuer key cache) once.
pub async fn init() -> Result<AwsGrantService, latch_aws::InitError> {
    let (policy, clients) = latch_aws::load_with_policy().await?;
    let ports = Ports::new(clients.iam, clients.store, clients.audit, SystemClock);
    Ok(GrantService::new(policy, ports)
        .with_keys(HttpKeySource::new()?)
        .with_native(clients.native)
        .with_deployment(clients.deployment))
}

/// The trusted envelope, or what is missing from it.
pub fn envelope(event: &EventBridgeEvent<Value>) -> Result<Envelope, &'static str> {
    let account = event.account.as_deref().ok_or("account is missing")?;
    Ok(Envelope {
        id: event.id.clone().ok_or("id is missing")?,
        detail_type: event.detail_type.clone(),
        source: event.source.clone(),
        account: AccountId::parse(account).map_err(|_| "account is not a 12-digit account id")?,
        region: event.region.clone().ok_or("region is missing")?,
        time: event.time.ok_or("time is missing")?,
    })
}

/// What the function did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Start(StartOutcome),
    Finish(FinishOutcome),
    Extend(ExtendOutcome),
    /// The end of a native job no rule names: not Latch's business.
    NotManaged,
}

impl From<NativeOutcome> for Outcome {
    fn from(native: NativeOutcome) -> Self {
        match native {
            NativeOutcome::Start(o) => Self::Start(o),
            NativeOutcome::Finish(o) => Self::Finish(o),
            NativeOutcome::NotManaged => Self::NotManaged,
        }
    }
}

/// A failure Lambda should retry, as the runtime reports it: a [`Diagnostic`] naming the error's
/// type and whether a retry can help, in logs and in the dead-letter message.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct GrantFailure(#[from] pub GrantError);

impl GrantFailure {
    pub fn kind(&self) -> &'static str {
        match self.0 {
            GrantError::Store(_) => "StoreUnavailable",
            GrantError::Iam(_) => "IamUnavailable",
            GrantError::Audit(_) => "AuditEventNotPublished",
            GrantError::Keys(_) => "IssuerKeysUnavailable",
            GrantError::Native(_) => "NativeRunUnavailable",
        }
    }
}

impl From<GrantFailure> for Diagnostic {
    fn from(e: GrantFailure) -> Self {
        let retryable = e.0.is_retryable();
        let verdict = if retryable { "Retryable" } else { "Permanent" };
        Diagnostic {
            error_type: format!("Grant.{}.{verdict}", e.kind()),
            error_message: format!("{e} (retryable: {retryable})"),
        }
    }
}

/// What an outcome adds to the metrics: activations (with the time from the start event's
/// `time` to now), denials by reason, the finish path's revocations.
pub fn outcome_records(outcome: &Outcome, event_time: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Vec<MetricRecord> {
    match outcome {
        Outcome::Start(StartOutcome::Activated(_)) => MetricRecord::grant_activated(event_time.unwrap_or(now), now),
        Outcome::Start(StartOutcome::Denied(r))
        | Outcome::Finish(FinishOutcome::Denied(r))
        | Outcome::Extend(ExtendOutcome::Denied(r)) => vec![MetricRecord::denial(*r)],
        Outcome::Finish(FinishOutcome::Finished { revoked, failed, .. }) => {
            let mut out = vec![MetricRecord::revocation(RevokeReason::JobFinished); *revoked];
            out.extend(vec![MetricRecord::revoke_failure(RevokeReason::JobFinished); *failed]);
            out
        }
        _ => Vec::new(),
    }
}

/// Lambda's entry point: [`handle_payload`], then the outcome's metrics as EMF lines.
pub async fn invoke<I, S, A, C, K, N>(
    service: &GrantService<I, S, A, C, K, N>,
    event: LambdaEvent<Value>,
) -> Result<(), GrantFailure>
where
    I: IamWriter,
    S: GrantStore,
    A: AuditSink,
    C: Clock,
    K: KeySource,
    N: NativeRuns,
{
    let event_time = event
        .payload
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let outcome = handle_payload(service, event).await?;
    let now = service.ports.clock.now();
    let mut records = outcome_records(&outcome, event_time, now);
    records.extend(latch_aws::call_metrics::drain());
    metrics::emit(&records, "grant", now);
    Ok(())
}

/// The function's entry point: the payload exactly as Lambda hands it over. One that does not
/// even deserialize as an EventBridge event (a hand-made invoke, a misrouted target, a field of
/// the wrong type) is denied as `malformed_event` with the path of the field at fault, rather
/// than failing before the handler and retrying into the dead-letter queue unaudited.
pub async fn handle_payload<I, S, A, C, K, N>(
    service: &GrantService<I, S, A, C, K, N>,
    event: LambdaEvent<Value>,
) -> Result<Outcome, GrantFailure>
where
    I: IamWriter,
    S: GrantStore,
    A: AuditSink,
    C: Clock,
    K: KeySource,
    N: NativeRuns,
{
    let LambdaEvent { payload, context } = event;
    // Labels for a refusal's audit, taken before parsing consumes the payload (parsing it by
    // value spares a copy of every event's detail); nothing here is trusted. Without an id, the
    // payload's digest keeps different bad payloads apart and the same one (redelivered) together.
    let id = match payload.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => format!("payload-{}", digest(&[&payload.to_string()])),
    };
    let source = payload.get("source").and_then(Value::as_str).unwrap_or("-").to_owned();
    let problem = match serde_path_to_error::deserialize::<_, EventBridgeEvent<Value>>(payload) {
        Ok(parsed) => return handle(service, LambdaEvent::new(parsed, context)).await,
        Err(e) => format!("not an EventBridge event: field `{}`: {}", e.path(), e.inner()),
    };
    service
        .on_untrusted_envelope(&id, &source, &problem)
        .await
        .map(Outcome::Start)
        .map_err(for_lambda)
}

/// An error reaches Lambda only when a retry may help; it is logged with that verdict.
fn for_lambda(e: GrantError) -> GrantFailure {
    error!(error = %e, retryable = e.is_retryable(), "grant handling failed");
    GrantFailure(e)
}

pub async fn handle<I, S, A, C, K, N>(
    service: &GrantService<I, S, A, C, K, N>,
    event: LambdaEvent<EventBridgeEvent<Value>>,
) -> Result<Outcome, GrantFailure>
where
    I: IamWriter,
    S: GrantStore,
    A: AuditSink,
    C: Clock,
    K: KeySource,
    N: NativeRuns,
{
    let event = event.payload;
    let detail_len = || serde_json::to_vec(&event.detail).map_or(usize::MAX, |b| b.len());
    let result = match envelope(&event) {
        Err(problem) => {
            let id = event.id.as_deref().unwrap_or("-");
            service
                .on_untrusted_envelope(id, &event.source, problem)
                .await
                .map(Outcome::Start)
        }
        Ok(env) if env.detail_type == DETAIL_TYPE_STARTED => service
            .on_start(&env, &event.detail, detail_len())
            .await
            .map(Outcome::Start),
        Ok(env) if env.detail_type == DETAIL_TYPE_FINISHED => service
            .on_finish(&env, &event.detail, detail_len())
            .await
            .map(Outcome::Finish),
        Ok(env) if env.detail_type == DETAIL_TYPE_EXTEND => service
            .on_extend(&env, &event.detail, detail_len())
            .await
            .map(Outcome::Extend),
        Ok(env) if is_native(&env.detail_type, &env.source) => service
            .on_native(&env, &event.detail, detail_len())
            .await
            .map(Outcome::from),
        Ok(env) => service.on_unsupported(&env).await.map(Outcome::Start),
    };
    result.map_err(for_lambda)
}
