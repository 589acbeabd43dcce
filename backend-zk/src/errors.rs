//! Maps `zookeeper-client` errors into [`LockError`], keeping the source and deciding what is
//! retryable.

use distlock_core::{backend::Attempt, LockError};
use zookeeper_client::Error;

/// Whether the request may or may not have been applied: the connection was lost or went
/// silent before the reply (`zookeeper-client` reports a silent connection as a custom error,
/// "no response from connection in ...").
pub(crate) fn is_ambiguous(error: &Error) -> bool {
    matches!(error, Error::ConnectionLoss | Error::Timeout | Error::Custom(_) | Error::UnexpectedError(_))
}

/// Ambiguous failures and throttling are retryable; everything else is final for the request.
pub(crate) fn classify(error: &Error) -> Attempt<()> {
    if is_ambiguous(error) || matches!(error, Error::Throttled) {
        Attempt::Transient(())
    } else {
        Attempt::Fatal(())
    }
}

/// The error for a failed request `op` to `hosts` (`None`: it timed out).
pub(crate) fn request_error(op: &str, hosts: &str, error: Option<Error>) -> LockError {
    match error {
        None => LockError::Unreachable {
            endpoints: hosts.to_owned(),
            what: format!("{op} (no answer in time)"),
            source: None,
        },
        Some(Error::SessionExpired) => LockError::SessionExpired { during: op.to_owned() },
        Some(e) if is_ambiguous(&e) || matches!(e, Error::NoHosts) => {
            LockError::Unreachable { endpoints: hosts.to_owned(), what: op.to_owned(), source: Some(Box::new(e)) }
        }
        Some(e @ (Error::NoAuth | Error::AuthFailed)) => LockError::Unauthorized {
            backend: "zookeeper",
            op: op.to_owned(),
            reason: match e {
                Error::AuthFailed => "authentication failed".to_owned(),
                _ => "permission denied by the znodes' ACL (NoAuth)".to_owned(),
            },
            source: Box::new(e),
        },
        Some(e @ Error::Throttled) => {
            LockError::Backend { backend: "zookeeper", op: op.to_owned(), retryable: true, source: Box::new(e) }
        }
        Some(e) => {
            LockError::Backend { backend: "zookeeper", op: op.to_owned(), retryable: false, source: Box::new(e) }
        }
    }
}
