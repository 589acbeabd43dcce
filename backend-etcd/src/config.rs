//! Settings of an etcd client: the typed builder, and the same settings read from an
//! `etcd://user:pass@h1:2379,h2:2379/prefix?ttl=10s` URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distlock_core::backend::Recipe;
use distlock_core::{parse_duration, validate_ttl, LockClient, LockError, LockUrl};

use crate::EtcdBackend;

/// The default session (lease) TTL: 10 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The default bound on connecting: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default bound on one request: 5 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The default key prefix: keys are `distlock/<name>/<lease-id hex>`.
pub const DEFAULT_PREFIX: &str = "distlock";

/// Settings of an etcd lock client. Build one with [`EtcdBackend::builder`] or from a URL with
/// [`EtcdConfig::from_url`].
///
/// ```
/// use std::time::Duration;
/// use distlock_etcd::EtcdBackend;
///
/// let config = EtcdBackend::builder()
///     .endpoints(["10.0.0.1:2379", "10.0.0.2:2379"])
///     .prefix("myapp")
///     .ttl(Duration::from_secs(10))
///     .config()?;
/// assert_eq!(config.lock_prefix("jobs/a"), "myapp/jobs/a/");
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) user: Option<(String, String)>,
    pub(crate) tls: bool,
    pub(crate) ca_file: Option<PathBuf>,
    /// The client certificate and its key (PEM files), for servers that require one.
    pub(crate) client_identity: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("user", &self.user.as_ref().map(|(name, _)| format!("{name}:***")))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("client_identity", &self.client_identity)
            .finish()
    }
}

/// The typed builder of an etcd lock client.
#[derive(Clone)]
pub struct EtcdBuilder {
    config: EtcdConfig,
}

impl std::fmt::Debug for EtcdBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EtcdBuilder").field(&self.config).finish()
    }
}

impl Default for EtcdBuilder {
    fn default() -> Self {
        EtcdBuilder {
            config: EtcdConfig {
                endpoints: vec!["127.0.0.1:2379".into()],
                prefix: DEFAULT_PREFIX.into(),
                ttl: DEFAULT_TTL,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                user: None,
                tls: false,
                ca_file: None,
                client_identity: None,
            },
        }
    }
}

impl EtcdBuilder {
    /// The etcd endpoints, `host:port` each (default `127.0.0.1:2379`).
    ///
    /// ```
    /// let b = distlock_etcd::EtcdBackend::builder().endpoints(["h1:2379", "h2:2379"]);
    /// # drop(b);
    /// ```
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// The key prefix under which lock keys live (default `distlock`). A lock `jobs/a` uses keys
    /// `<prefix>/jobs/a/<lease-id hex>`, so `etcdctl lock <prefix>/jobs/a` contends with it.
    ///
    /// ```
    /// let b = distlock_etcd::EtcdBackend::builder().prefix("myapp/locks");
    /// # drop(b);
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// The lease TTL: how long after a client dies its locks pass on. Whole seconds, 1 s to
    /// 24 h (default 10 s).
    ///
    /// ```
    /// let b = distlock_etcd::EtcdBackend::builder().ttl(std::time::Duration::from_secs(5));
    /// # drop(b);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// How long connecting (and the first request) may take (default 5 s).
    ///
    /// ```
    /// let b = distlock_etcd::EtcdBackend::builder().connect_timeout(std::time::Duration::from_secs(2));
    /// # drop(b);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long one request may take before it is retried or reported (default 5 s).
    ///
    /// ```
    /// let b = distlock_etcd::EtcdBackend::builder().request_timeout(std::time::Duration::from_secs(2));
    /// # drop(b);
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// etcd user and password.
    ///
    /// ```
    /// let b = distlock_etcd::EtcdBackend::builder().user("app", "secret");
    /// # drop(b);
    /// ```
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.config.user = Some((name.into(), password.into()));
        self
    }

    /// Connects over TLS, trusting the CA certificate in `ca_file` (PEM), or the system roots
    /// when `None`.
    ///
    /// ```
    /// let b = distlock_etcd::EtcdBackend::builder().tls(Some("/etc/etcd/ca.pem".into()));
    /// # drop(b);
    /// ```
    pub fn tls(mut self, ca_file: Option<PathBuf>) -> Self {
        self.config.tls = true;
        self.config.ca_file = ca_file;
        self
    }

    /// Shows the client certificate in `cert_file` (PEM, with its private key in `key_file`)
    /// to servers that require one (etcd's `--client-cert-auth`). Needs [`EtcdBuilder::tls`].
    ///
    /// ```
    /// let b = distlock_etcd::EtcdBackend::builder()
    ///     .tls(Some("/etc/etcd/ca.pem".into()))
    ///     .client_certificate("/etc/etcd/client.pem", "/etc/etcd/client.key");
    /// # drop(b);
    /// ```
    pub fn client_certificate(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.config.client_identity = Some((cert_file.into(), key_file.into()));
        self
    }

    /// Validates the settings without connecting.
    ///
    /// ```
    /// let err = distlock_etcd::EtcdBackend::builder().ttl(std::time::Duration::ZERO).config().unwrap_err();
    /// assert!(err.to_string().contains("ttl"));
    /// ```
    pub fn config(self) -> Result<EtcdConfig, LockError> {
        let c = self.config;
        validate_ttl("ttl", c.ttl, Duration::from_secs(1))?;
        if c.ttl.subsec_nanos() != 0 {
            return Err(LockError::invalid_config("ttl", format!("{:?}: etcd leases take whole seconds", c.ttl)));
        }
        validate_ttl("connect_timeout", c.connect_timeout, Duration::from_millis(100))?;
        validate_ttl("request_timeout", c.request_timeout, Duration::from_millis(100))?;
        if c.endpoints.is_empty() || c.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(LockError::invalid_config("endpoints", "give at least one host:port, none empty"));
        }
        if c.client_identity.is_some() && !c.tls {
            return Err(LockError::invalid_config(
                "cert",
                "a client certificate is for TLS: call tls() too (etcds://)",
            ));
        }
        let prefix = c.prefix.trim_matches('/');
        if prefix.contains(|ch: char| ch.is_control()) || prefix.contains("//") {
            return Err(LockError::invalid_config("prefix", format!("{prefix:?} has control characters or '//'")));
        }
        Ok(EtcdConfig { prefix: prefix.to_owned(), ..c })
    }

    /// Validates the settings, connects, and grants the session's lease.
    ///
    /// # Cancel safety
    /// Cancel safe: a half-made client is dropped (its lease, if granted, is revoked in the
    /// background or expires after the TTL).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::DistributedLock;
    /// let locks = distlock_etcd::EtcdBackend::builder().endpoints(["127.0.0.1:2379"]).connect().await?;
    /// let guard = locks.lock("jobs/nightly").await?;
    /// # drop(guard); Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<LockClient<EtcdBackend>, LockError> {
        Ok(LockClient::new(EtcdBackend::connect(self.config()?).await?))
    }
}

impl EtcdConfig {
    /// Reads the settings from an `etcd://` or `etcds://` URL:
    /// `etcd://[user:pass@]host[:port][,host[:port]...][/prefix][?ttl=10s&connect_timeout=5s&request_timeout=5s]`.
    /// Ports default to 2379; `etcds` means TLS, with `ca=/path/ca.pem` (else the system roots)
    /// and, for servers that require a client certificate, `cert=/path/client.pem&key=/path/client.key`.
    ///
    /// ```
    /// use distlock_core::LockUrl;
    /// let url = LockUrl::parse("etcd://u:p@h1,h2:2380/myapp?ttl=3s")?;
    /// let config = distlock_etcd::EtcdConfig::from_url(&url)?;
    /// assert_eq!(config.endpoints(), ["h1:2379", "h2:2380"]);
    /// assert_eq!(config.lock_prefix("a"), "myapp/a/");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn from_url(url: &LockUrl) -> Result<Self, LockError> {
        let bad = |reason: &str| LockError::InvalidUrl { url: url.to_string(), reason: reason.to_owned() };
        let tls = match url.scheme.as_str() {
            "etcd" => false,
            "etcds" => true,
            _ => return Err(bad("the scheme must be etcd:// or etcds://")),
        };
        url.reject_unknown_params(&["ttl", "connect_timeout", "request_timeout", "ca", "cert", "key"])?;
        if url.hosts.is_empty() {
            return Err(bad("it names no host; write etcd://host:2379"));
        }
        let mut builder = EtcdBuilder::default().endpoints(url.endpoints(2379));
        let prefix = url.path.trim_matches('/');
        if !prefix.is_empty() {
            builder = builder.prefix(prefix);
        }
        if let Some(ttl) = url.param("ttl") {
            builder = builder.ttl(parse_duration("ttl", ttl)?);
        }
        if let Some(t) = url.param("connect_timeout") {
            builder = builder.connect_timeout(parse_duration("connect_timeout", t)?);
        }
        if let Some(t) = url.param("request_timeout") {
            builder = builder.request_timeout(parse_duration("request_timeout", t)?);
        }
        match (&url.username, &url.password) {
            (Some(user), Some(pass)) => builder = builder.user(user, pass),
            (Some(_), None) => return Err(bad("etcd needs a password with the user: etcd://user:pass@host")),
            (None, Some(_)) => return Err(bad("etcd needs a user with the password: etcd://user:pass@host")),
            (None, None) => {}
        }
        if !tls && ["ca", "cert", "key"].iter().any(|p| url.param(p).is_some()) {
            return Err(bad("ca=, cert= and key= are for TLS: use etcds://"));
        }
        if tls {
            builder = builder.tls(url.param("ca").map(PathBuf::from));
        }
        match (url.param("cert"), url.param("key")) {
            (Some(cert), Some(key)) => builder = builder.client_certificate(cert, key),
            (None, None) => {}
            _ => return Err(bad("a client certificate needs both cert=/path/client.pem and key=/path/client.key")),
        }
        builder.config()
    }

    /// The endpoints, `host:port` each.
    ///
    /// ```
    /// let c = distlock_etcd::EtcdBackend::builder().config()?;
    /// assert_eq!(c.endpoints(), ["127.0.0.1:2379"]);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The session TTL.
    ///
    /// ```
    /// let c = distlock_etcd::EtcdBackend::builder().config()?;
    /// assert_eq!(c.ttl(), distlock_etcd::DEFAULT_TTL);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The key prefix of lock `name`'s queue: `<prefix>/<name>/` (Go's `concurrency.Mutex` pfx).
    ///
    /// ```
    /// let c = distlock_etcd::EtcdBackend::builder().prefix("p").config()?;
    /// assert_eq!(c.lock_prefix("x/y"), "p/x/y/");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn lock_prefix(&self, name: &str) -> String {
        crate::layout::queue_prefix(&self.prefix, name)
    }

    /// The key prefix of the queue that `recipe`'s entries for `name` join: the lock's (and the
    /// election's) [`EtcdConfig::lock_prefix`], the read-write lock's
    /// [`crate::layout::read_write_prefix`], or the semaphore's
    /// [`crate::layout::semaphore_prefix`].
    pub(crate) fn queue_prefix(&self, name: &str, recipe: Recipe) -> String {
        match recipe {
            Recipe::Read | Recipe::Write => crate::layout::read_write_prefix(&self.prefix, name),
            Recipe::Permit(_) => crate::layout::semaphore_prefix(&self.prefix, name),
            _ => self.lock_prefix(name),
        }
    }

    /// Where the release markers live: `<prefix>//released/`. A holder's release writes its
    /// marker for lock `name`, `<prefix>//released/<name>//<lease id hex>`, in the Txn that
    /// deletes its key, so the waiter behind it hears or reads one key, not the whole queue, to
    /// learn that the holder itself released (see the queue). The empty segment keeps markers
    /// out of every lock's queue: no lock name starts with `/`. Markers carry the releasing
    /// session's lease and go with it.
    ///
    /// ```
    /// let c = distlock_etcd::EtcdBackend::builder().prefix("p").config()?;
    /// assert_eq!(c.release_marker_prefix(), "p//released/");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn release_marker_prefix(&self) -> String {
        crate::layout::release_marker_prefix(&self.prefix)
    }

    /// The release marker that the holder of queue entry `entry` (the last segment of its queue
    /// key) writes when it releases lock `name`: `<prefix>//released/<name>//<entry>`.
    /// Lock names have no empty segment, so the `//` keeps every (name, lease) pair apart.
    pub(crate) fn release_marker(&self, name: &str, entry: &str) -> String {
        crate::layout::release_marker(&self.prefix, name, entry)
    }

    /// The mailbox of the session with lease `lease` ([`crate::layout::permit_mailbox`]).
    pub(crate) fn permit_mailbox(&self, lease: i64) -> String {
        crate::layout::permit_mailbox(&self.prefix, lease)
    }

    /// The mark in `lease`'s mailbox for its permit created at `revision`.
    pub(crate) fn permit_mark(&self, lease: i64, revision: i64) -> String {
        crate::layout::permit_mark(&self.prefix, lease, revision)
    }

    pub(crate) fn endpoints_label(&self) -> String {
        self.endpoints.join(",")
    }
}

/// The contents of the PEM file `path` named by setting `setting` (the `what` it holds, for the
/// error).
pub(crate) fn read_pem(setting: &str, what: &str, path: &Path) -> Result<Vec<u8>, LockError> {
    std::fs::read(path)
        .map_err(|e| LockError::invalid_config(setting, format!("cannot read the {what} file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_markers_lie_in_no_lock_queue() {
        for prefix in ["", "p", "app/locks"] {
            let c = EtcdBackend::builder().prefix(prefix).config().unwrap();
            for name in ["released", "a", "released/a", "a/released"] {
                let marker = c.release_marker(name, "694d");
                for other in ["released", "a", "released/a", "a/released", "x"] {
                    let queue = c.lock_prefix(other);
                    assert!(!marker.starts_with(&queue), "{marker:?} lies in the queue {queue:?}");
                }
            }
        }
        let c = EtcdBackend::builder().prefix("p").config().unwrap();
        assert_eq!(c.release_marker("jobs/a", "694d"), "p//released/jobs/a//694d");
        let c = EtcdBackend::builder().prefix("").config().unwrap();
        assert_eq!(c.release_marker("jobs/a", "694d"), "/released/jobs/a//694d");
    }

    #[test]
    fn urls_map_to_settings() {
        let c = EtcdConfig::from_url(&LockUrl::parse("etcd://h1:1,h2/app/locks?ttl=3s&request_timeout=2s").unwrap())
            .unwrap();
        assert_eq!(c.endpoints, ["h1:1", "h2:2379"]);
        assert_eq!(c.prefix, "app/locks");
        assert_eq!(c.ttl, Duration::from_secs(3));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert!(!c.tls);
        let c = EtcdConfig::from_url(&LockUrl::parse("etcds://u:p@h?ca=/ca.pem").unwrap()).unwrap();
        assert!(c.tls);
        assert_eq!(c.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.client_identity, None);
        assert_eq!(c.user, Some(("u".into(), "p".into())));
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        let c = EtcdConfig::from_url(&LockUrl::parse("etcds://h?cert=/c.pem&key=/c.key").unwrap()).unwrap();
        assert_eq!(c.ca_file, None);
        assert_eq!(c.client_identity, Some((PathBuf::from("/c.pem"), PathBuf::from("/c.key"))));
    }

    #[test]
    fn a_client_certificate_needs_tls() {
        let err = EtcdBuilder::default().client_certificate("c.pem", "c.key").config().unwrap_err();
        assert!(matches!(&err, LockError::InvalidConfig { setting, .. } if setting == "cert"), "{err:?}");
        assert!(err.to_string().contains("tls()"), "{err}");
        assert!(EtcdBuilder::default().tls(None).client_certificate("c.pem", "c.key").config().is_ok());
    }

    #[test]
    fn debug_never_prints_the_password() {
        let c = EtcdBuilder::default().user("app", "topsecret").config().unwrap();
        let shown = format!("{c:?} {:?}", EtcdBuilder::default().user("app", "topsecret"));
        assert!(!shown.contains("topsecret"), "{shown}");
    }

    #[test]
    fn bad_settings_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("etcd://", "no host"),
            ("etcd://h?ttl=0s", "too short"),
            ("etcd://h?ttl=1500ms", "whole seconds"),
            ("etcd://h?ttl=10", "not a duration"),
            ("etcd://h?bogus=1", "unknown parameter"),
            ("etcd://u@h", "password"),
            ("etcd://h?ca=/x", "TLS"),
            ("etcd://h?cert=/c.pem&key=/c.key", "TLS"),
            ("etcds://h?cert=/c.pem", "both"),
            ("etcds://h?key=/c.key", "both"),
            ("zk://h", "etcd://"),
        ];
        for (url, why) in cases {
            let err = EtcdConfig::from_url(&LockUrl::parse(url).unwrap()).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
