//! Why a request was denied: stable reason codes, the vocabulary of audits and exit codes.

use std::fmt;

/// Declaration order matters: among rules that each got part of the way, the policy reports
/// the reason furthest down this list (the rule that came closest to allowing the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DenyReason {
    MalformedEvent,
    EventTooLarge,
    UnsupportedEvent,
    TokenMissing,
    TokenMalformed,
    TokenTooLarge,
    TokenAlgorithmRefused,
    TokenKeySourceRefused,
    TokenUnknownIssuer,
    TokenUnknownKey,
    TokenBadSignature,
    TokenWrongAudience,
    TokenExpired,
    TokenNotYetValid,
    TokenTooOld,
    ClaimMismatch,
    FinishNotProven,
    NoMatchingRule,
    UntrustedTrigger,
    NativeNotConfirmed,
    NativeInitiatorNotAllowed,
    NativeTriggerNotAllowed,
    NativeBuildspecOverride,
    NativeRoleMismatch,
    RoleNotEligible,
    PermissionSetUnknown,
    PermissionSetNotAllowed,
    /// A rule names the role and set, but a field of the job (its ref, environment or a
    /// signed claim) is missing or does not match: the audit's detail names the field.
    FieldMismatch,
    DurationOverMax,
    EventTimeInFuture,
    RequestStale,
    UnsafePlaceholderValue,
    PolicyTooLarge,
    RoleInOtherAccount,
    RoleWithoutBoundary,
    RolePolicyQuota,
    ConcurrencyCap,
    RateLimited,
    TokenReplayed,
    JobFinished,
    GrantEnded,
    NoActiveGrant,
    ExtensionOverMax,
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
            Self::TokenMissing => "token_missing",
            Self::TokenMalformed => "token_malformed",
            Self::TokenTooLarge => "token_too_large",
            Self::TokenAlgorithmRefused => "token_algorithm_refused",
            Self::TokenKeySourceRefused => "token_key_source_refused",
            Self::TokenUnknownIssuer => "token_unknown_issuer",
            Self::TokenUnknownKey => "token_unknown_key",
            Self::TokenBadSignature => "token_bad_signature",
            Self::TokenWrongAudience => "token_wrong_audience",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::TokenTooOld => "token_too_old",
            Self::ClaimMismatch => "claim_mismatch",
            Self::FinishNotProven => "finish_not_proven",
            Self::UntrustedTrigger => "untrusted_trigger",
            Self::NoMatchingRule => "no_matching_rule",
            Self::NativeNotConfirmed => "native_not_confirmed",
            Self::NativeInitiatorNotAllowed => "native_initiator_not_allowed",
            Self::NativeTriggerNotAllowed => "native_trigger_not_allowed",
            Self::NativeBuildspecOverride => "native_buildspec_override",
            Self::NativeRoleMismatch => "native_role_mismatch",
            Self::RoleNotEligible => "role_not_eligible",
            Self::PermissionSetUnknown => "permission_set_unknown",
            Self::PermissionSetNotAllowed => "permission_set_not_allowed",
            Self::FieldMismatch => "field_mismatch",
            Self::DurationOverMax => "duration_over_max",
            Self::EventTimeInFuture => "event_time_in_future",
            Self::RequestStale => "request_stale",
            Self::UnsafePlaceholderValue => "unsafe_placeholder_value",
            Self::PolicyTooLarge => "policy_too_large",
            Self::RoleInOtherAccount => "role_in_other_account",
            Self::RoleWithoutBoundary => "role_without_boundary",
            Self::RolePolicyQuota => "role_policy_quota",
            Self::ConcurrencyCap => "concurrency_cap",
            Self::RateLimited => "rate_limited",
            Self::TokenReplayed => "token_replayed",
            Self::JobFinished => "job_finished",
            Self::GrantEnded => "grant_ended",
            Self::NoActiveGrant => "no_active_grant",
            Self::ExtensionOverMax => "extension_over_max",
            Self::IamRejected => "iam_rejected",
            Self::StoreRejected => "store_rejected",
        }
    }
}

impl From<&crate::identity::TokenError> for DenyReason {
    /// The denial a refused token gets (a retryable key fetch failure is never a denial).
    fn from(e: &crate::identity::TokenError) -> Self {
        use crate::identity::TokenError as E;
        match e {
            E::TooLarge { .. } => Self::TokenTooLarge,
            E::Malformed(_) | E::DuplicateKey { .. } | E::MissingClaim(_) | E::CriticalHeader(_) => {
                Self::TokenMalformed
            }
            E::AlgorithmRefused(_) => Self::TokenAlgorithmRefused,
            E::ForeignKeySource(_) => Self::TokenKeySourceRefused,
            E::UnknownIssuer(_) => Self::TokenUnknownIssuer,
            E::UnknownKey { .. } | E::KeysUnavailable { .. } => Self::TokenUnknownKey,
            E::BadSignature => Self::TokenBadSignature,
            E::WrongAudience { .. } => Self::TokenWrongAudience,
            E::Expired(_) => Self::TokenExpired,
            E::NotYetValid(_) => Self::TokenNotYetValid,
            E::TooOld { .. } => Self::TokenTooOld,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
