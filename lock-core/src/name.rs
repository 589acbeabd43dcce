//! Lock names: the one place that decides which names are valid on every backend.

use std::fmt;

use crate::LockError;

/// The longest name accepted, in bytes. Keys and znode paths stay well inside server limits.
pub const MAX_NAME_LEN: usize = 256;

/// A validated lock name such as `jobs/nightly-report`.
///
/// Names are `/`-separated segments relative to the client's prefix (etcd) or chroot
/// (ZooKeeper). A valid name is non-empty, at most [`MAX_NAME_LEN`] bytes, has no leading or
/// trailing `/`, no empty, `.` or `..` segment, and no control characters (NUL included).
/// The same name is valid on every backend, so swapping backends never breaks a name.
///
/// ```
/// use distlock_core::LockName;
///
/// let name = LockName::new("jobs/nightly-report")?;
/// assert_eq!(name.as_str(), "jobs/nightly-report");
/// assert!(LockName::new("jobs/../etc").is_err());
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockName(String);

impl LockName {
    /// Validates `name`. The error says which rule it breaks.
    ///
    /// ```
    /// let err = distlock_core::LockName::new("a//b").unwrap_err();
    /// assert!(err.to_string().contains("empty segment"));
    /// ```
    pub fn new(name: &str) -> Result<Self, LockError> {
        let bad = |reason: &str| LockError::InvalidName { name: name.to_owned(), reason: reason.to_owned() };
        if name.is_empty() {
            return Err(bad("the name is empty; give a name such as \"jobs/nightly-report\""));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad(&format!("the name is {} bytes long; at most {MAX_NAME_LEN} are allowed", name.len())));
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(bad(&format!("it contains the control character {:?}; use printable characters only", c)));
        }
        if name.starts_with('/') {
            return Err(bad("it starts with '/'; names are relative to the client's prefix, drop the leading '/'"));
        }
        if name.ends_with('/') {
            return Err(bad("it ends with '/'; drop the trailing '/'"));
        }
        for segment in name.split('/') {
            match segment {
                "" => return Err(bad("it has an empty segment (\"//\"); separate segments with one '/'")),
                "." | ".." => return Err(bad("it has a \".\" or \"..\" segment; names cannot step out of the prefix")),
                _ => {}
            }
        }
        Ok(LockName(name.to_owned()))
    }

    /// The name as a string.
    ///
    /// ```
    /// assert_eq!(distlock_core::LockName::new("a/b")?.as_str(), "a/b");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in
            ["a", "jobs/nightly-report", "orders/42/pay", "ünïcode", "a.b", "..a", "x".repeat(MAX_NAME_LEN).as_str()]
        {
            assert_eq!(LockName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn invalid_names_say_why() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("a\0b", "control character"),
            ("a\nb", "control character"),
            ("/a", "starts with '/'"),
            ("a/", "ends with '/'"),
            ("/", "starts with '/'"),
            ("a//b", "empty segment"),
            ("..", "\"..\""),
            ("a/../b", "\"..\""),
            ("a/./b", "\"..\""),
            (&long, "at most 256"),
        ];
        for (name, why) in cases {
            let err = LockName::new(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
    }
}
