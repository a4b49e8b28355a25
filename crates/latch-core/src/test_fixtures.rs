//! What the in-memory test modules share: the claimed-identity policy fixture, a service over memory ports
//! with a clock set where the test wants it, a sweep over the same ports, and the envelope of a
//! `ci.github` event at [`t0`].

use chrono::{DateTime, TimeZone, Utc};

use crate::event::Envelope;
use crate::grant::GrantService;
use crate::memory::{Faults, FixedClock, MemoryAuditSink, MemoryIam, MemoryNativeRuns, MemoryStore};
use crate::model::{AccountId, RoleArn};
use crate::policy::Policy;
use crate::ports::Ports;
use crate::sweep::{SweepSettings, Sweeper};

pub type MemoryService = GrantService<MemoryIam, MemoryStore, MemoryAuditSink, FixedClock>;
pub type MemoryPorts = Ports<MemoryIam, MemoryStore, MemoryAuditSink, FixedClock>;
pub type MemorySweeper<'a> = Sweeper<'a, MemoryIam, MemoryIam, MemoryStore, MemoryAuditSink, FixedClock>;

/// When the test events say they happened.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

/// events/policy-claimed.yaml: the worked example with every rule `identity: claimed`, for the
/// tests of everything that does not depend on who is asking.
pub fn claimed_policy() -> Policy {
    Policy::load(claimed_policy_text(), "policy-claimed.yaml").unwrap()
}

/// The text of events/policy-claimed.yaml (tests derive variants of it).
pub fn claimed_policy_text() -> &'static str {
    include_str!("../../../events/policy-claimed.yaml")
}

/// The example policy over memory ports sharing `faults`, the clock at `now`.
pub fn memory_service(now: DateTime<Utc>, faults: &Faults) -> MemoryService {
    GrantService::new(claimed_policy(), memory_ports(now, faults))
        .with_native(MemoryNativeRuns::default().with_faults(faults))
}

/// Memory ports sharing `faults`, the clock at `now`.
pub fn memory_ports(now: DateTime<Utc>, faults: &Faults) -> MemoryPorts {
    Ports::new(
        MemoryIam::default().with_faults(faults),
        MemoryStore::default().with_faults(faults),
        MemoryAuditSink::default().with_faults(faults),
        FixedClock::at(now),
    )
}

/// A sweep over `s`'s ports, policy and clock (its IAM is also the role inventory).
pub fn memory_sweeper(s: &MemoryService, settings: SweepSettings) -> MemorySweeper<'_> {
    s.ports.sweeper(&s.policy, &s.ports.iam, settings)
}

/// An event from `ci.github` in the example account, at [`t0`].
pub fn envelope(detail_type: &str, id: &str) -> Envelope {
    Envelope {
        id: id.into(),
        detail_type: detail_type.into(),
        source: "ci.github".into(),
        account: AccountId::parse("123456789012").unwrap(),
        region: "us-east-1".into(),
        time: t0(),
    }
}

/// The example file's app-deployer role.
pub fn deployer() -> RoleArn {
    RoleArn::parse("arn:aws:iam::123456789012:role/latch/app-deployer").unwrap()
}
