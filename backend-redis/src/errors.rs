//! Maps `redis` errors into [`LockError`], keeping the source and deciding what is retryable
//! and what means the connection must be made anew.

use distlock_core::{backend::Attempt, LockError};
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Whether the request may or may not have been applied because the connection failed: the
/// connection is made anew before the next attempt.
pub(crate) fn is_connection_failure(error: &RedisError) -> bool {
    error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal()
}

/// Connection failures and a server that is busy for a moment (loading its data set, no
/// primary link) are retryable; everything else is final for the request.
pub(crate) fn classify(error: &RedisError) -> Attempt<()> {
    let busy = matches!(
        error.kind(),
        ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown)
    );
    if is_connection_failure(error) || busy {
        Attempt::Transient(())
    } else {
        Attempt::Fatal(())
    }
}

/// The error for a failed request `op` to `endpoint` (`None`: it timed out).
pub(crate) fn request_error(op: &str, endpoint: &str, error: Option<RedisError>) -> LockError {
    let Some(error) = error else {
        return LockError::Unreachable {
            endpoints: endpoint.to_owned(),
            what: format!("{op} (no answer in time)"),
            source: None,
        };
    };
    if is_connection_failure(&error) {
        return LockError::Unreachable {
            endpoints: endpoint.to_owned(),
            what: op.to_owned(),
            source: Some(Box::new(error)),
        };
    }
    let unauthorized = |reason: &str| LockError::Unauthorized {
        backend: "redis",
        op: op.to_owned(),
        reason: reason.to_owned(),
        source: Box::new(error.clone()),
    };
    match error.kind() {
        ErrorKind::AuthenticationFailed => unauthorized("authentication failed (AUTH)"),
        ErrorKind::Server(ServerErrorKind::NoPerm) => {
            unauthorized("the user's ACL does not allow it (NOPERM): it needs EVALSHA, EVAL, SET, PUBLISH and SUBSCRIBE on the prefix")
        }
        ErrorKind::Server(ServerErrorKind::ReadOnly) => LockError::Backend {
            backend: "redis",
            op: format!("{op} (the server is a read-only replica: point the URL at the primary)"),
            retryable: false,
            source: Box::new(error),
        },
        _ if error.code() == Some("WRONGPASS") || error.code() == Some("NOAUTH") => {
            unauthorized("the user or password is wrong, or the server requires one (WRONGPASS/NOAUTH)")
        }
        _ => {
            let retryable = matches!(classify(&error), Attempt::Transient(()));
            LockError::Backend { backend: "redis", op: op.to_owned(), retryable, source: Box::new(error) }
        }
    }
}
