//! The client's side of the propagation probe ([`latch_core::probe`]): with the elevated role's
//! credentials, ask for the grant's probe bus until IAM answers "not found" (the grant applies to
//! those credentials) rather than "access denied" (not yet), with a backoff, until a deadline.
//!
//! Any other answer (no credentials, the network, a deployment whose documents carry no probe)
//! is [`Waited::CannotProbe`]: the caller falls back to a fixed wait and says so.

use std::time::{Duration, Instant};

use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eventbridge::operation::describe_event_bus::DescribeEventBusError;
use latch_core::model::GrantId;
use latch_core::probe::bus_name;

/// One probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Authorised: IAM applies the grant's document to these credentials.
    Applies,
    /// Refused (or throttled): IAM does not apply it yet.
    NotYet,
    /// An answer that says nothing about the grant.
    Unknown(String),
}

/// How waiting for the grant to apply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    Applies { probes: u32, waited: Duration },
    TimedOut { probes: u32 },
    CannotProbe(String),
}

/// First pause between probes; it grows by half each time up to [`MAX_PAUSE`], so a quick IAM
/// costs a few hundred milliseconds and a slow one a handful of calls.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(1);

pub async fn probe(events: &aws_sdk_eventbridge::Client, grant: &GrantId) -> Probe {
    match events.describe_event_bus().name(bus_name(grant)).send().await {
        Ok(_) => Probe::Applies,
        Err(e) => match e.as_service_error() {
            Some(DescribeEventBusError::ResourceNotFoundException(_)) => Probe::Applies,
            Some(other)
                if matches!(
                    other.code(),
                    Some("AccessDeniedException" | "AccessDenied" | "ThrottlingException")
                ) =>
            {
                Probe::NotYet
            }
            _ => Probe::Unknown(DisplayErrorContext(&e).to_string()),
        },
    }
}

/// Probes until the grant applies, the deadline passes, or the answer says nothing.
pub async fn wait_until_applied(events: &aws_sdk_eventbridge::Client, grant: &GrantId, deadline: Instant) -> Waited {
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut probes = 0;
    loop {
        probes += 1;
        match probe(events, grant).await {
            Probe::Applies => {
                return Waited::Applies {
                    probes,
                    waited: started.elapsed(),
                };
            }
            Probe::Unknown(why) => return Waited::CannotProbe(why),
            Probe::NotYet => {}
        }
        if Instant::now() + pause > deadline {
            return Waited::TimedOut { probes };
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(MAX_PAUSE);
    }
}
