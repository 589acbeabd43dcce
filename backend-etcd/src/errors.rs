//! Maps `etcd-client` errors into [`LockError`], keeping the source and deciding what is retryable.

use distlock_core::LockError;
use etcd_client::Error;
use tonic::Code;

/// Whether an etcd error is a transport-level failure after which the request may or may not
/// have been applied (an ambiguous reply) and a retry can succeed.
pub(crate) fn is_transient(error: &Error) -> bool {
    match error {
        Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled | Code::Aborted
        ),
        Error::TransportError(_) | Error::IoError(_) | Error::WatchError(_) | Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

/// Whether the error says that the lease does not exist (any more).
pub(crate) fn is_lease_not_found(error: &Error) -> bool {
    match error {
        Error::GRpcStatus(status) => status.message().contains("lease not found"),
        _ => false,
    }
}

/// The error for a failed request `op` to `endpoints`.
pub(crate) fn request_error(op: &str, endpoints: &str, error: Error) -> LockError {
    if is_transient(&error) {
        LockError::Unreachable { endpoints: endpoints.to_owned(), what: op.to_owned(), source: Some(Box::new(error)) }
    } else {
        LockError::Backend { backend: "etcd", op: op.to_owned(), retryable: false, source: Box::new(error) }
    }
}
