//! Settings of a Redis client: the typed builder, and the same settings read from a
//! `redis://[user:pass@]host:port/db?prefix=app&ttl=10s` URL (`rediss://` for TLS).

use std::path::PathBuf;
use std::time::Duration;

use distlock_core::{parse_duration, validate_ttl, LockClient, LockError, LockUrl};

use crate::RedisBackend;

/// The default session TTL: 10 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The default bound on connecting: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default bound on one request: 5 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most replicas [`RedisBuilder::replicas`] may ask to acknowledge.
pub const MAX_REPLICAS: u32 = 64;
/// The default key prefix: keys are `distlock:q:lock:<name>`, `distlock:s:<session>`, ...
pub const DEFAULT_PREFIX: &str = "distlock";

/// Settings of a Redis lock client. Build one with [`RedisBackend::builder`] or from a URL with
/// [`RedisConfig::from_url`].
///
/// ```
/// use std::time::Duration;
/// use distlock_redis::RedisBackend;
///
/// let config = RedisBackend::builder().address("10.0.0.1:6379").prefix("myapp").ttl(Duration::from_secs(10)).config()?;
/// assert_eq!(config.address(), "10.0.0.1:6379");
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) address: String,
    pub(crate) db: i64,
    pub(crate) prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) replicas: u32,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) tls: bool,
    pub(crate) ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address)
            .field("db", &self.db)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("replicas", &self.replicas)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The typed builder of a Redis lock client.
#[derive(Clone, Debug)]
pub struct RedisBuilder {
    config: RedisConfig,
}

impl Default for RedisBuilder {
    fn default() -> Self {
        RedisBuilder {
            config: RedisConfig {
                address: "127.0.0.1:6379".into(),
                db: 0,
                prefix: DEFAULT_PREFIX.into(),
                ttl: DEFAULT_TTL,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                replicas: 0,
                user: None,
                password: None,
                tls: false,
                ca_file: None,
            },
        }
    }
}

impl RedisBuilder {
    /// The Redis primary, `host:port` (default `127.0.0.1:6379`). Locks are written to the
    /// primary only: point this at the primary, not a replica.
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().address("redis.internal:6379");
    /// # drop(b);
    /// ```
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.config.address = address.into();
        self
    }

    /// The database number (default 0).
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().db(2);
    /// # drop(b);
    /// ```
    pub fn db(mut self, db: i64) -> Self {
        self.config.db = db;
        self
    }

    /// The key prefix (default `distlock`): every key and channel of distlock starts with
    /// `<prefix>:`, so two applications with their own prefixes never meet.
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().prefix("myapp");
    /// # drop(b);
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// The session TTL: how long after a client dies its locks pass on. 1 s to 24 h, whole
    /// milliseconds (default 10 s).
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().ttl(std::time::Duration::from_secs(5));
    /// # drop(b);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// How long connecting (and opening the session) may take (default 5 s).
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().connect_timeout(std::time::Duration::from_secs(2));
    /// # drop(b);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long one request may take before it is retried or reported (default 5 s).
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().request_timeout(std::time::Duration::from_secs(2));
    /// # drop(b);
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How many replicas must acknowledge each grant, release and session renewal (Redis
    /// `WAIT`) before it counts (default 0: the primary's reply is enough). With 1 or more, a
    /// lock returned by `lock` is on that many replicas, so a failover to one of them keeps it;
    /// a grant they do not acknowledge within half the request timeout fails the acquire with a
    /// retryable error and leaves the queue, and an unacknowledged renewal does not count
    /// (the lock's `lost()` fires if renewals go unacknowledged for the TTL). docs/redis.md says
    /// what this does and does not guarantee, and what it costs.
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().replicas(1);
    /// # drop(b);
    /// ```
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.config.replicas = replicas;
        self
    }

    /// The user (Redis 6 ACL; `None` for the `default` user) and password (`AUTH`).
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().auth(Some("app".into()), "secret");
    /// # drop(b);
    /// ```
    pub fn auth(mut self, user: Option<String>, password: impl Into<String>) -> Self {
        self.config.user = user;
        self.config.password = Some(password.into());
        self
    }

    /// Connects over TLS, trusting the CA certificate in `ca_file` (PEM), or the web's roots
    /// when `None`.
    ///
    /// ```
    /// let b = distlock_redis::RedisBackend::builder().tls(Some("/etc/redis/ca.pem".into()));
    /// # drop(b);
    /// ```
    pub fn tls(mut self, ca_file: Option<PathBuf>) -> Self {
        self.config.tls = true;
        self.config.ca_file = ca_file;
        self
    }

    /// Validates the settings without connecting.
    ///
    /// ```
    /// let err = distlock_redis::RedisBackend::builder().ttl(std::time::Duration::ZERO).config().unwrap_err();
    /// assert!(err.to_string().contains("ttl"));
    /// ```
    pub fn config(self) -> Result<RedisConfig, LockError> {
        let c = self.config;
        validate_ttl("ttl", c.ttl, Duration::from_secs(1))?;
        if !c.ttl.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(LockError::invalid_config(
                "ttl",
                format!("{:?}: Redis expiries take whole milliseconds", c.ttl),
            ));
        }
        validate_ttl("connect_timeout", c.connect_timeout, Duration::from_millis(100))?;
        validate_ttl("request_timeout", c.request_timeout, Duration::from_millis(100))?;
        if c.address.trim().is_empty() {
            return Err(LockError::invalid_config("address", "give the primary's host:port"));
        }
        if !(0..=1_000_000).contains(&c.db) {
            return Err(LockError::invalid_config("db", format!("{} is not a database number (0, 1, ...)", c.db)));
        }
        if c.replicas > MAX_REPLICAS {
            return Err(LockError::invalid_config(
                "replicas",
                format!(
                    "{} replicas to acknowledge each grant is more than distlock takes; give 0 to {MAX_REPLICAS} \
                     (at most the number of replicas the primary has)",
                    c.replicas
                ),
            ));
        }
        if c.prefix.is_empty() || c.prefix.contains(|ch: char| ch.is_control() || ch.is_whitespace()) {
            return Err(LockError::invalid_config(
                "prefix",
                format!("{:?} is empty or has spaces or control characters", c.prefix),
            ));
        }
        Ok(c)
    }

    /// Validates the settings, connects, and opens the session.
    ///
    /// # Cancel safety
    /// Cancel safe: a half-made client is dropped (its session key, if written, expires
    /// after the TTL).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::DistributedLock;
    /// let locks = distlock_redis::RedisBackend::builder().address("127.0.0.1:6379").connect().await?;
    /// let guard = locks.lock("jobs/nightly").await?;
    /// # drop(guard); Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<LockClient<RedisBackend>, LockError> {
        Ok(LockClient::new(RedisBackend::connect(self.config()?).await?))
    }
}

impl RedisConfig {
    /// Reads the settings from a `redis://` or `rediss://` URL:
    /// `redis://[user:pass@]host[:port][/db][?prefix=distlock&ttl=10s&connect_timeout=5s&request_timeout=5s&replicas=0]`.
    /// The port defaults to 6379 and the database to 0; `rediss` means TLS, with `ca=/path/ca.pem`
    /// (else the web's roots). A password without a user (`redis://:pass@host`) logs in as the
    /// `default` user.
    ///
    /// ```
    /// use distlock_core::LockUrl;
    /// let url = LockUrl::parse("redis://:secret@cache:6380/2?prefix=myapp&ttl=3s")?;
    /// let config = distlock_redis::RedisConfig::from_url(&url)?;
    /// assert_eq!(config.address(), "cache:6380");
    /// assert_eq!(config.ttl(), std::time::Duration::from_secs(3));
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn from_url(url: &LockUrl) -> Result<Self, LockError> {
        let bad = |reason: &str| LockError::InvalidUrl { url: url.to_string(), reason: reason.to_owned() };
        let tls = match url.scheme.as_str() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad("the scheme must be redis:// or rediss://")),
        };
        url.reject_unknown_params(&["prefix", "ttl", "connect_timeout", "request_timeout", "replicas", "ca"])?;
        let address = match url.endpoints(6379).as_slice() {
            [one] => one.clone(),
            [] => return Err(bad("it names no host; write redis://host:6379")),
            _ => return Err(bad("Redis takes one host, the primary: redis://primary:6379")),
        };
        let mut builder = RedisBuilder::default().address(address);
        let db = url.path.trim_matches('/');
        if !db.is_empty() {
            let db = db.parse().map_err(|_| bad("the path is the database number: redis://host:6379/0"))?;
            builder = builder.db(db);
        }
        if let Some(prefix) = url.param("prefix") {
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
        if let Some(replicas) = url.param("replicas") {
            let replicas = replicas
                .parse()
                .map_err(|_| bad("replicas is the number of replicas that must acknowledge each grant: replicas=1"))?;
            builder = builder.replicas(replicas);
        }
        match (&url.username, &url.password) {
            (user, Some(pass)) => builder = builder.auth(user.clone().filter(|u| !u.is_empty()), pass),
            (Some(_), None) => return Err(bad("a user needs a password: redis://user:pass@host")),
            _ => {}
        }
        if !tls && url.param("ca").is_some() {
            return Err(bad("ca= is for TLS: use rediss://"));
        }
        if tls {
            builder = builder.tls(url.param("ca").map(PathBuf::from));
        }
        builder.config()
    }

    /// The primary's `host:port`.
    ///
    /// ```
    /// let c = distlock_redis::RedisBackend::builder().config()?;
    /// assert_eq!(c.address(), "127.0.0.1:6379");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The session TTL.
    ///
    /// ```
    /// let c = distlock_redis::RedisBackend::builder().config()?;
    /// assert_eq!(c.ttl(), distlock_redis::DEFAULT_TTL);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The key prefix.
    ///
    /// ```
    /// let c = distlock_redis::RedisBackend::builder().prefix("app").config()?;
    /// assert_eq!(c.prefix(), "app");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many replicas must acknowledge each grant, release and renewal.
    ///
    /// ```
    /// let c = distlock_redis::RedisBackend::builder().replicas(1).config()?;
    /// assert_eq!(c.replicas(), 1);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// The address as errors show it.
    pub(crate) fn endpoint_label(&self) -> String {
        format!("{}://{}", if self.tls { "rediss" } else { "redis" }, self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<RedisConfig, LockError> {
        RedisConfig::from_url(&LockUrl::parse(url)?)
    }

    /// What a URL gives: (address, db, prefix, TTL in ms), or a word of the error.
    type Expected = Result<(&'static str, i64, &'static str, u64), &'static str>;

    #[test]
    fn urls_give_settings_or_a_clear_error() {
        let table: &[(&str, Expected)] = &[
            ("redis://h", Ok(("h:6379", 0, "distlock", 10_000))),
            ("redis://h:7000/3?prefix=app&ttl=1500ms", Ok(("h:7000", 3, "app", 1_500))),
            ("rediss://:pw@h", Ok(("h:6379", 0, "distlock", 10_000))),
            ("redis://h1,h2", Err("one host")),
            ("redis://h/x", Err("database number")),
            ("redis://h?ttl=0s", Err("ttl")),
            ("redis://h?ttl=10", Err("ttl")),
            ("redis://h?ca=/x.pem", Err("TLS")),
            ("redis://h?lease=1s", Err("lease")),
            ("redis://u@h", Err("password")),
            ("redis://h?prefix=", Err("prefix")),
            ("redis://h?replicas=1", Ok(("h:6379", 0, "distlock", 10_000))),
            ("redis://h?replicas=one", Err("replicas=1")),
            ("redis://h?replicas=-1", Err("replicas=1")),
            ("redis://h?replicas=65", Err("replicas")),
        ];
        for (url, expected) in table {
            match (parse(url), expected) {
                (Ok(c), Ok((address, db, prefix, ttl_ms))) => {
                    assert_eq!(
                        (c.address(), c.db, c.prefix(), c.ttl().as_millis() as u64),
                        (*address, *db, *prefix, *ttl_ms),
                        "{url}"
                    )
                }
                (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{url}: {e}"),
                (got, _) => panic!("{url}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn replicas_come_from_the_url() {
        assert_eq!(parse("redis://h").expect("parse").replicas(), 0);
        assert_eq!(parse("redis://h?replicas=2").expect("parse").replicas(), 2);
    }

    #[test]
    fn a_password_is_never_printed() {
        let c = parse("redis://app:s3cret@h").expect("parse");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.user.as_deref(), Some("app"));
    }
}
