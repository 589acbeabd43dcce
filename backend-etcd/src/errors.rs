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

/// What the server said if it refused our credentials or our rights. etcd answers a wrong
/// password with `InvalidArgument` ("authentication failed, invalid user ID or password") and a
/// missing user with "user name is empty"; `etcd-client` itself renews an expired token.
fn refusal(error: &Error) -> Option<String> {
    let Error::GRpcStatus(status) = error else { return None };
    let message = status.message();
    let refused = matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied)
        || ["authentication failed", "user name is empty", "authentication is not enabled", "permission denied"]
            .iter()
            .any(|m| message.contains(m));
    refused.then(|| message.trim_start_matches("etcdserver: ").to_owned())
}

/// The error for a failed request `op` to `endpoints`.
pub(crate) fn request_error(op: &str, endpoints: &str, error: Error) -> LockError {
    if let Some(reason) = refusal(&error) {
        LockError::Unauthorized { backend: "etcd", op: op.to_owned(), reason, source: Box::new(error) }
    } else if is_transient(&error) {
        LockError::Unreachable { endpoints: endpoints.to_owned(), what: op.to_owned(), source: Some(Box::new(error)) }
    } else {
        LockError::Backend { backend: "etcd", op: op.to_owned(), retryable: false, source: Box::new(error) }
    }
}
