//! Settings of a ZooKeeper client: the typed builder, and the same settings read from a
//! `zk://user:pass@h1:2181,h2:2181/chroot?session_timeout=10s` URL.

use std::time::Duration;

use distlock_core::{parse_duration, validate_ttl, LockClient, LockError, LockUrl};

use crate::ZkBackend;

/// The default session timeout: 10 s.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound on connecting: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default path under which lock directories live: locks are `/distlock/<name>/...`.
pub const DEFAULT_CHROOT: &str = "/distlock";

/// Settings of a ZooKeeper lock client. Build one with [`ZkBackend::builder`] or from a URL with
/// [`ZkConfig::from_url`].
///
/// ```
/// let config = distlock_zk::ZkBackend::builder().hosts(["zk1:2181", "zk2:2181"]).chroot("/myapp").config()?;
/// assert_eq!(config.lock_dir("jobs/a"), "/myapp/jobs/a");
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone)]
pub struct ZkConfig {
    pub(crate) hosts: Vec<String>,
    pub(crate) chroot: String,
    pub(crate) session_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) digest: Option<(String, String)>,
}

impl std::fmt::Debug for ZkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkConfig")
            .field("hosts", &self.hosts)
            .field("chroot", &self.chroot)
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("digest", &self.digest.as_ref().map(|(user, _)| format!("{user}:***")))
            .finish()
    }
}

/// The typed builder of a ZooKeeper lock client.
#[derive(Clone, Debug)]
pub struct ZkBuilder {
    config: ZkConfig,
}

impl Default for ZkBuilder {
    fn default() -> Self {
        ZkBuilder {
            config: ZkConfig {
                hosts: vec!["127.0.0.1:2181".into()],
                chroot: DEFAULT_CHROOT.into(),
                session_timeout: DEFAULT_SESSION_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                digest: None,
            },
        }
    }
}

impl ZkBuilder {
    /// The ZooKeeper servers, `host:port` each (default `127.0.0.1:2181`).
    ///
    /// ```
    /// let b = distlock_zk::ZkBackend::builder().hosts(["zk1:2181", "zk2:2181"]);
    /// # drop(b);
    /// ```
    pub fn hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// The path under which lock directories live (default `/distlock`). Lock `jobs/a` uses
    /// znodes `<chroot>/jobs/a/_c_<uuid>-lock-<seq>`: a Curator `InterProcessMutex` on
    /// `<chroot>/jobs/a` contends with it.
    ///
    /// ```
    /// let b = distlock_zk::ZkBackend::builder().chroot("/myapp/locks");
    /// # drop(b);
    /// ```
    pub fn chroot(mut self, chroot: impl Into<String>) -> Self {
        self.config.chroot = chroot.into();
        self
    }

    /// The session timeout: how long after a client dies its locks pass on (default 10 s). The
    /// server may negotiate it into its own bounds; the client uses what was negotiated.
    ///
    /// ```
    /// let b = distlock_zk::ZkBackend::builder().session_timeout(std::time::Duration::from_secs(6));
    /// # drop(b);
    /// ```
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }

    /// How long connecting may take (default 5 s).
    ///
    /// ```
    /// let b = distlock_zk::ZkBackend::builder().connect_timeout(std::time::Duration::from_secs(2));
    /// # drop(b);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Digest authentication (`addauth digest user:pass`).
    ///
    /// ```
    /// let b = distlock_zk::ZkBackend::builder().digest("app", "secret");
    /// # drop(b);
    /// ```
    pub fn digest(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.config.digest = Some((user.into(), password.into()));
        self
    }

    /// Validates the settings without connecting.
    ///
    /// ```
    /// let err = distlock_zk::ZkBackend::builder().session_timeout(std::time::Duration::ZERO).config().unwrap_err();
    /// assert!(err.to_string().contains("session_timeout"));
    /// ```
    pub fn config(self) -> Result<ZkConfig, LockError> {
        let c = self.config;
        validate_ttl("session_timeout", c.session_timeout, Duration::from_millis(100))?;
        validate_ttl("connect_timeout", c.connect_timeout, Duration::from_millis(100))?;
        if c.hosts.is_empty() || c.hosts.iter().any(|h| h.trim().is_empty()) {
            return Err(LockError::invalid_config("hosts", "give at least one host:port, none empty"));
        }
        let chroot = format!("/{}", c.chroot.trim_matches('/'));
        let chroot = if chroot == "/" { String::new() } else { chroot };
        if chroot.contains("//")
            || chroot.split('/').any(|s| s == "." || s == "..")
            || chroot.contains(char::is_control)
        {
            return Err(LockError::invalid_config("chroot", format!("{:?} is not a valid znode path", c.chroot)));
        }
        Ok(ZkConfig { chroot, ..c })
    }

    /// Validates the settings and connects (a new session).
    ///
    /// # Cancel safety
    /// Cancel safe: a half-made session is closed when dropped.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::DistributedLock;
    /// let locks = distlock_zk::ZkBackend::builder().hosts(["127.0.0.1:2181"]).connect().await?;
    /// let guard = locks.lock("jobs/nightly").await?;
    /// # drop(guard); Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<LockClient<ZkBackend>, LockError> {
        Ok(LockClient::new(ZkBackend::connect(self.config()?).await?))
    }
}

impl ZkConfig {
    /// Reads the settings from a `zk://` URL:
    /// `zk://[user:pass@]host[:port][,host[:port]...][/chroot][?session_timeout=10s&connect_timeout=5s]`.
    /// Ports default to 2181; a user means digest authentication.
    ///
    /// ```
    /// let url = distlock_core::LockUrl::parse("zk://u:p@zk1,zk2:2182/app?session_timeout=6s")?;
    /// let config = distlock_zk::ZkConfig::from_url(&url)?;
    /// assert_eq!(config.lock_dir("a"), "/app/a");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn from_url(url: &LockUrl) -> Result<Self, LockError> {
        let bad = |reason: &str| LockError::InvalidUrl { url: url.to_string(), reason: reason.to_owned() };
        if url.scheme != "zk" {
            return Err(bad("the scheme must be zk://"));
        }
        url.reject_unknown_params(&["session_timeout", "connect_timeout"])?;
        if url.hosts.is_empty() {
            return Err(bad("it names no host; write zk://host:2181"));
        }
        let mut builder = ZkBuilder::default().hosts(url.endpoints(2181));
        if !url.path.trim_matches('/').is_empty() {
            builder = builder.chroot(url.path.clone());
        }
        if let Some(t) = url.param("session_timeout") {
            builder = builder.session_timeout(parse_duration("session_timeout", t)?);
        }
        if let Some(t) = url.param("connect_timeout") {
            builder = builder.connect_timeout(parse_duration("connect_timeout", t)?);
        }
        match (&url.username, &url.password) {
            (Some(user), Some(pass)) => builder = builder.digest(user, pass),
            (Some(_), None) => return Err(bad("digest authentication needs a password: zk://user:pass@host")),
            (None, Some(_)) => return Err(bad("digest authentication needs a user name: zk://user:pass@host")),
            (None, None) => {}
        }
        builder.config()
    }

    /// The lock directory of `name`: `<chroot>/<name>`.
    ///
    /// ```
    /// let c = distlock_zk::ZkBackend::builder().config()?;
    /// assert_eq!(c.lock_dir("x/y"), "/distlock/x/y");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn lock_dir(&self, name: &str) -> String {
        format!("{}/{name}", self.chroot)
    }

    /// The hosts, `host:port` each.
    ///
    /// ```
    /// assert_eq!(distlock_zk::ZkBackend::builder().config()?.hosts(), ["127.0.0.1:2181"]);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    pub(crate) fn hosts_label(&self) -> String {
        self.hosts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_settings() {
        let c = ZkConfig::from_url(&LockUrl::parse("zk://u:p@h1:1,h2/a/b?session_timeout=3s").unwrap()).unwrap();
        assert_eq!(c.hosts, ["h1:1", "h2:2181"]);
        assert_eq!(c.chroot, "/a/b");
        assert_eq!(c.session_timeout, Duration::from_secs(3));
        assert_eq!(c.digest, Some(("u".into(), "p".into())));
        assert!(!format!("{c:?}").contains("\"p\""));
        let c = ZkConfig::from_url(&LockUrl::parse("zk://h").unwrap()).unwrap();
        assert_eq!(c.chroot, DEFAULT_CHROOT);
    }

    #[test]
    fn bad_settings_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("zk://", "no host"),
            ("zk://h?session_timeout=0s", "too short"),
            ("zk://h?session_timeout=5", "not a duration"),
            ("zk://h?ttl=1s", "unknown parameter"),
            ("zk://u@h", "password"),
            ("zk://h/a/../b", "not a valid znode path"),
            ("etcd://h", "zk://"),
        ];
        for (url, why) in cases {
            let err = ZkConfig::from_url(&LockUrl::parse(url).unwrap()).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
