//! The exit statuses of `distlock` (sysexits.h), and how lock errors map onto them.

use std::fmt;

use distlock::LockError;

/// Why `distlock` stops without the command's own status.
#[derive(Debug)]
pub enum Exit {
    /// 64: bad URL, name or option.
    Usage,
    /// 64 with a message.
    BadInput(String),
    /// 69: the service is unreachable or failed.
    Unavailable(String),
    /// 70: the lock was lost while the command ran.
    Lost(String),
    /// 75: the lock was not acquired (busy, or timed out).
    NotAcquired(String),
    /// 77: the service refused the credentials or the rights (retrying will not help).
    NoPermission(String),
}

impl Exit {
    /// The process exit status.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Usage | Exit::BadInput(_) => 64,
            Exit::Unavailable(_) => 69,
            Exit::Lost(_) => 70,
            Exit::NotAcquired(_) => 75,
            Exit::NoPermission(_) => 77,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Usage => f.write_str("bad usage; see distlock --help"),
            Exit::BadInput(m) | Exit::Unavailable(m) | Exit::Lost(m) | Exit::NotAcquired(m) | Exit::NoPermission(m) => {
                f.write_str(m)
            }
        }
    }
}

impl From<LockError> for Exit {
    fn from(error: LockError) -> Self {
        let message = error.to_string();
        match error {
            LockError::InvalidName { .. }
            | LockError::InvalidConfig { .. }
            | LockError::InvalidUrl { .. }
            | LockError::BackendNotEnabled { .. }
            | LockError::PermitsMismatch { .. }
            | LockError::WouldWaitForItself { .. } => Exit::BadInput(message),
            LockError::Lost { .. } => Exit::Lost(message),
            LockError::Unauthorized { .. } => Exit::NoPermission(message),
            _ => Exit::Unavailable(format!("{message}; check the service and retry")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_exits_77_without_advice_to_retry() {
        let refused = LockError::Unauthorized {
            backend: "etcd",
            op: "connect".into(),
            reason: "authentication failed, invalid user ID or password".into(),
            source: "InvalidArgument".into(),
        };
        let exit = Exit::from(refused);
        assert_eq!(exit.code(), 77);
        assert!(!exit.to_string().contains("retry"), "{exit}");
        let unreachable = LockError::Unreachable { endpoints: "h:2379".into(), what: "connect".into(), source: None };
        assert_eq!(Exit::from(unreachable).code(), 69);
    }
}
