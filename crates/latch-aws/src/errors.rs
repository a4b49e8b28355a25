//! Sorting SDK errors into "a retry may help" and "it will not".

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Error codes AWS services use for throttling and their own transient faults.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "RequestThrottledException",
    "TransactionConflictException",
    // IAM: another write on the same role is in progress (HTTP 409). Retried in process first
    // (crate::conflicts); what is left after that is transient, never a refusal.
    "ConcurrentModification",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

pub(crate) fn is_transient_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| TRANSIENT_CODES.contains(&c))
}

/// The error code of a service error (`None` for timeouts, dispatch failures and the like).
pub(crate) fn code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// IAM: a write on a role another write is changing. Nothing was applied. (IAM's model has no
/// type for it on Put/DeleteRolePolicy: it arrives unmodelled, known by its code.)
pub(crate) fn is_concurrent_modification<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    code(err) == Some("ConcurrentModification")
}

/// True when retrying the same call later may succeed: timeouts, connection failures,
/// unparseable responses, throttling and 5xx. (Every SDK crate's `SdkError` is the same type.)
pub(crate) fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => is_transient_code(e.err().code()) || e.raw().status().is_server_error(),
        _ => false,
    }
}

/// The code and message of an SDK error, for logs and audits.
pub(crate) fn describe<E: ProvideErrorMetadata + std::error::Error>(err: &SdkError<E>) -> String {
    match err {
        SdkError::ServiceError(e) => match (e.err().code(), e.err().message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            // No error code: the body was not an AWS error (a proxy's or emulator's 5xx page).
            _ => format!("HTTP {}: {}", e.raw().status().as_u16(), e.err()),
        },
        other => format!("{other}"),
    }
}
