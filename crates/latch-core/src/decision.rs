//! Why a request was denied: stable reason codes, the vocabulary of audits and exit codes.

use std::fmt;

/// Declaration order matters: among rules that each got part of the way, the policy reports
/// the reason furthest down this list (the rule that came closest to allowing the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DenyReason {
    MalformedEvent,
    EventTooLarge,
    UnsupportedEvent,
    NoMatchingRule,
    RoleNotEligible,
    PermissionSetUnknown,
    PermissionSetNotAllowed,
    DurationOverMax,
    EventTimeInFuture,
    RequestStale,
    UnsafePlaceholderValue,
    PolicyTooLarge,
    ConcurrencyCap,
    JobFinished,
    GrantEnded,
    IamRejected,
    StoreRejected,
}

impl DenyReason {
    /// The stable code written to audits and events. Never rename one: exports depend on them.
    pub fn code(self) -> &'static str {
        match self {
            Self::MalformedEvent => "malformed_event",
            Self::EventTooLarge => "event_too_large",
            Self::UnsupportedEvent => "unsupported_event",
            Self::NoMatchingRule => "no_matching_rule",
            Self::RoleNotEligible => "role_not_eligible",
            Self::PermissionSetUnknown => "permission_set_unknown",
            Self::PermissionSetNotAllowed => "permission_set_not_allowed",
            Self::DurationOverMax => "duration_over_max",
            Self::EventTimeInFuture => "event_time_in_future",
            Self::RequestStale => "request_stale",
            Self::UnsafePlaceholderValue => "unsafe_placeholder_value",
            Self::PolicyTooLarge => "policy_too_large",
            Self::ConcurrencyCap => "concurrency_cap",
            Self::JobFinished => "job_finished",
            Self::GrantEnded => "grant_ended",
            Self::IamRejected => "iam_rejected",
            Self::StoreRejected => "store_rejected",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
