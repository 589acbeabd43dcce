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
}

impl Exit {
    /// The process exit status.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Usage | Exit::BadInput(_) => 64,
            Exit::Unavailable(_) => 69,
            Exit::Lost(_) => 70,
            Exit::NotAcquired(_) => 75,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Usage => f.write_str("bad usage; see distlock --help"),
            Exit::BadInput(m) | Exit::Unavailable(m) | Exit::Lost(m) | Exit::NotAcquired(m) => f.write_str(m),
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
            | LockError::BackendNotEnabled { .. } => Exit::BadInput(message),
            LockError::Lost { .. } => Exit::Lost(message),
            _ => Exit::Unavailable(format!("{message}; check the service and retry")),
        }
    }
}
