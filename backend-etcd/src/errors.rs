//! Maps `etcd-client` errors into [`LockError`], keeping the source and deciding what is retryable.

use distlock_core::LockError;
use etcd_client::Error;
use tonic::Code;

use crate::EtcdConfig;

/// Whether an etcd error is a transport-level failure after which the request may or may not
/// have been applied (an ambiguous reply) and a retry can succeed.
pub(crate) fn is_transient(error: &Error) -> bool {
    if untrusted_certificate(error).is_some() || refused_client_certificate(error).is_some() {
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
    cause_saying(error, &["invalid peer certificate"])
}

/// What TLS said if the server refused our client certificate, or its absence, with an alert
/// (rustls: "received fatal alert: BadCertificate"). Trying again cannot help either.
fn refused_client_certificate(error: &Error) -> Option<String> {
    let alerts = ["BadCertificate", "CertificateRequired", "UnknownCA", "UnsupportedCertificate", "CertificateUnknown"];
    let alerts = alerts.map(|alert| format!("received fatal alert: {alert}"));
    cause_saying(error, &alerts.each_ref().map(String::as_str))
}

/// The text from the first of `markers` on, in the first of `error`'s causes that says one (a
/// status by its message).
fn cause_saying(error: &Error, markers: &[&str]) -> Option<String> {
    causes(error).find_map(|e| {
        let text = match (e.downcast_ref::<tonic::Status>(), e.downcast_ref::<Error>()) {
            (Some(status), _) => status.message().to_owned(),
            (None, Some(Error::GRpcStatus(_))) => return None, // its status comes next
            _ => e.to_string(),
        };
        markers.iter().find_map(|m| text.find(m)).map(|at| text[at..].to_owned())
    })
}

/// `error` and every error below it. etcd-client's `GRpcStatus` does not give its status as its
/// source, so the walk steps into the status itself.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| match e.downcast_ref::<Error>() {
        Some(Error::GRpcStatus(status)) => Some(status as &(dyn std::error::Error + 'static)),
        _ => e.source(),
    })
}

/// The error for a failed request `op` to `endpoints`.
pub(crate) fn request_error(op: &str, endpoints: &str, error: Error) -> LockError {
    if let Some(reason) = untrusted_certificate(&error) {
        LockError::invalid_config(
            "ca",
            format!("{op}: the server's TLS certificate is not trusted ({reason}); give the CA that signed it with ca=/path/ca.pem"),
        )
    } else if let Some(reason) = refused_client_certificate(&error) {
        LockError::invalid_config(
            "cert",
            format!("{op}: the server refused our TLS client certificate or its absence ({reason}); give one signed by a CA it trusts with cert=/path/client.pem&key=/path/client.key"),
        )
    } else if let Some(reason) = refusal(&error) {
        LockError::Unauthorized { backend: "etcd", op: op.to_owned(), reason, source: Box::new(error) }
    } else if is_transient(&error) {
        LockError::Unreachable { endpoints: endpoints.to_owned(), what: op.to_owned(), source: Some(Box::new(error)) }
    } else {
        LockError::Backend { backend: "etcd", op: op.to_owned(), retryable: false, source: Box::new(error) }
    }
}

/// Adds a hint to a connect error: a TLS connection without a client certificate that the server
/// closed under the first request is what an etcd with `--client-cert-auth` does when the client
/// does not get to read its alert (the handshake looked fine to the client). Other causes are
/// possible, so the error stays `Unreachable` and only gains the hint.
pub(crate) fn client_certificate_hint(error: LockError, config: &EtcdConfig) -> LockError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    let LockError::Unreachable { endpoints, what, source: Some(source) } = error else { return error };
    // hyper says "connection closed" when the close comes between requests, the socket says
    // broken pipe or reset when it comes during one.
    let closed = causes(source.as_ref()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), BrokenPipe | ConnectionReset | UnexpectedEof))
            || e.to_string() == "connection closed"
    });
    let what = if closed && config.tls && config.client_identity.is_none() {
        format!("{what}: the server closed the TLS connection; if it requires a client certificate (etcd --client-cert-auth), give cert=/path/client.pem&key=/path/client.key")
    } else {
        what
    };
    LockError::Unreachable { endpoints, what, source: Some(source) }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::EtcdBackend;

    /// What etcd-client returns when the connection under a request failed with `io`.
    fn failed_under_a_request(io: io::Error) -> Error {
        Error::GRpcStatus(tonic::Status::from_error(Box::new(io)))
    }

    #[test]
    fn a_refused_client_certificate_is_a_final_setting_error_on_cert() {
        let alert = io::Error::new(io::ErrorKind::InvalidData, "received fatal alert: BadCertificate");
        let error = failed_under_a_request(alert);
        assert!(!is_transient(&error));
        let err = request_error("grant a lease", "h:2379", error);
        assert!(matches!(&err, LockError::InvalidConfig { setting, .. } if setting == "cert"), "{err:?}");
        assert!(err.to_string().contains("BadCertificate") && err.to_string().contains("key="), "{err}");
    }

    #[test]
    fn a_tls_connection_closed_under_a_request_hints_at_a_client_certificate_only_when_none_is_given() {
        let closed =
            || request_error("grant a lease", "h:2379", failed_under_a_request(io::ErrorKind::BrokenPipe.into()));
        assert!(matches!(closed(), LockError::Unreachable { .. }));
        let tls = EtcdBackend::builder().tls(None).config().unwrap();
        let hinted = client_certificate_hint(closed(), &tls).to_string();
        assert!(hinted.contains("client certificate") && hinted.contains("cert="), "{hinted}");
        let with_identity = EtcdBackend::builder().tls(None).client_certificate("c.pem", "c.key").config().unwrap();
        let plain = EtcdBackend::builder().config().unwrap();
        for config in [with_identity, plain] {
            let shown = client_certificate_hint(closed(), &config).to_string();
            assert!(!shown.contains("certificate"), "{shown}");
        }
    }
}
