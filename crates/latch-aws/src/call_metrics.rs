//! Every AWS call's time and retries, for the metrics ([`latch_core::metrics::Metric::AwsCallLatency`],
//! [`latch_core::metrics::Metric::AwsCallRetries`]): an SDK interceptor on each client records
//! them in process, and the function drains them into its invocation's EMF lines. No call of
//! its own; a sample lost to a poisoned lock is a lost metric, never a failed call.

use std::sync::Mutex;
use std::time::Instant;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use latch_core::metrics::MetricRecord;

/// Samples since the last [`drain`], at most this many (a warm function drains every
/// invocation; the cap only bounds a process that never does).
const MAX_SAMPLES: usize = 10_000;

static SAMPLES: Mutex<Vec<MetricRecord>> = Mutex::new(Vec::new());

/// The records of the calls made since the last drain.
pub fn drain() -> Vec<MetricRecord> {
    SAMPLES.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default()
}

#[derive(Debug, Clone)]
struct Started(Instant);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

/// Times each call from before serialization to after its last attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTimer;

impl Intercept for CallTimer {
    fn name(&self) -> &'static str {
        "LatchCallTimer"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Started(started)) = cfg.load::<Started>() else {
            return Ok(());
        };
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        let operation = cfg
            .load::<Metadata>()
            .map_or_else(|| "unknown".to_owned(), |m| format!("{}.{}", m.service(), m.name()));
        let attempts = cfg.load::<RequestAttempts>().map_or(1, RequestAttempts::attempts);
        if let Ok(mut samples) = SAMPLES.lock()
            && samples.len() < MAX_SAMPLES
        {
            samples.extend(MetricRecord::aws_call(&operation, millis, attempts));
        }
        Ok(())
    }
}
