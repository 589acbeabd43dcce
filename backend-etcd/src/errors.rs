//! Maps `etcd-client` errors into [`LockError`], keeping the source and deciding what is retryable.

use distlock_core::LockError;
use etcd_client::Error;
use tonic::Code;

/// Whether an etcd error is a transport-level failure after which the request may or may not
/// have been applied (an ambiguous reply) and a retry can succeed.
pub(crate) fn is_transient(error: &Error) -> bool {
    if untrusted_certificate(error).is_some() {
        return false;
    }
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

/// What TLS said if it refused the server's certificate (rustls: "invalid peer certificate:
/// UnknownIssuer"). tonic reports it as `Unavailable`, like a server that is down, but trying
/// again cannot help: the client needs the CA that signed the certificate.
fn untrusted_certificate(error: &Error) -> Option<String> {
    // A status's own message, then every source below it, each by its Display.
    let (first, mut cause): (String, Option<&dyn std::error::Error>) = match error {
        Error::GRpcStatus(status) => (status.message().to_owned(), std::error::Error::source(status)),
        other => (other.to_string(), std::error::Error::source(other)),
    };
    let mut text = first;
    loop {
        if let Some(at) = text.find("invalid peer certificate") {
            return Some(text[at..].to_owned());
        }
        let e = cause?;
        text = e.to_string();
        cause = e.source();
    }
}

/// The error for a failed request `op` to `endpoints`.
pub(crate) fn request_error(op: &str, endpoints: &str, error: Error) -> LockError {
    if let Some(reason) = untrusted_certificate(&error) {
        LockError::invalid_config(
            "ca",
            format!("{op}: the server's TLS certificate is not trusted ({reason}); give the CA that signed it with ca=/path/ca.pem"),
        )
    } else if let Some(reason) = refusal(&error) {
        LockError::Unauthorized { backend: "etcd", op: op.to_owned(), reason, source: Box::new(error) }
    } else if is_transient(&error) {
        LockError::Unreachable { endpoints: endpoints.to_owned(), what: op.to_owned(), source: Some(Box::new(error)) }
    } else {
        LockError::Backend { backend: "etcd", op: op.to_owned(), retryable: false, source: Box::new(error) }
    }
}
