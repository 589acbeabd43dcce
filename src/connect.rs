//! `connect(url)`: the URL's scheme picks the backend.

use distlock_core::mem::{MemBackend, MemServer};
use distlock_core::metrics::MetricNames;
use distlock_core::{parse_duration, DistributedLock, LockClient, LockError, LockUrl};

/// Connects to the lock service the URL names and returns a client with a new session.
///
/// | scheme | backend | feature |
/// |---|---|---|
/// | `mem://[name][?ttl=10s]` | in-process server `name` (default: the process-wide one) | always |
/// | `etcd://`, `etcds://` | etcd | `etcd` |
/// | `zk://` | ZooKeeper | `zookeeper` |
/// | `redis://`, `rediss://` | Redis | `redis` |
///
/// Every scheme takes `metrics_names=jobs/,payments/settle`: the lock names (and, ending in `/`,
/// the prefixes) whose metrics carry a `name` label ([`crate::metrics::MetricNames`]).
///
/// A scheme whose feature is not compiled in is [`LockError::BackendNotEnabled`], naming the
/// feature; a malformed URL is [`LockError::InvalidUrl`].
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the half-made client; nothing is held yet.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock::LockError> {
/// let locks = distlock::connect("mem://?ttl=5s").await?;
/// assert!(locks.session_state().is_connected());
/// assert!(distlock::connect("nats://localhost").await.is_err());
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Box<dyn DistributedLock>, LockError> {
    connect_url(&LockUrl::parse(url)?).await
}

/// The name of the session-TTL parameter of a URL scheme: `ttl` for `mem://` and etcd,
/// `session_timeout` for ZooKeeper.
///
/// ```
/// assert_eq!(distlock::ttl_param("zk"), Some("session_timeout"));
/// assert_eq!(distlock::ttl_param("etcd"), Some("ttl"));
/// assert_eq!(distlock::ttl_param("redis"), Some("ttl"));
/// assert_eq!(distlock::ttl_param("nats"), None);
/// ```
pub fn ttl_param(scheme: &str) -> Option<&'static str> {
    match scheme {
        "mem" | "etcd" | "etcds" | "redis" | "rediss" => Some("ttl"),
        "zk" => Some("session_timeout"),
        _ => None,
    }
}

/// [`connect`] with a URL already parsed (and perhaps adjusted, as the CLI's `--ttl` does).
///
/// # Cancel safety
/// Cancel safe, as [`connect`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock::LockError> {
/// let mut url = distlock::LockUrl::parse("mem://")?;
/// url.set_param("ttl", "3s");
/// let locks = distlock::connect_url(&url).await?;
/// # drop(locks); Ok(()) }
/// ```
pub async fn connect_url(parsed: &LockUrl) -> Result<Box<dyn DistributedLock>, LockError> {
    check_compiled(parsed, COMPILED)?;
    // Every backend takes `metrics_names`: the lock names its metrics label (MetricNames).
    let mut parsed = parsed.clone();
    let names = MetricNames::parse(parsed.take_param("metrics_names").as_deref().unwrap_or(""))?;
    match parsed.scheme.as_str() {
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => Ok(Box::new(distlock_etcd::connect_url(&parsed).await?.with_metric_names(names))),
        #[cfg(feature = "zookeeper")]
        "zk" => Ok(Box::new(distlock_zk::connect_url(&parsed).await?.with_metric_names(names))),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Box::new(distlock_redis::connect_url(&parsed).await?.with_metric_names(names))),
        _ => connect_mem(&parsed, names),
    }
}

/// Which backends this build includes.
#[derive(Clone, Copy, Debug)]
struct Compiled {
    etcd: bool,
    zookeeper: bool,
    redis: bool,
}

const COMPILED: Compiled =
    Compiled { etcd: cfg!(feature = "etcd"), zookeeper: cfg!(feature = "zookeeper"), redis: cfg!(feature = "redis") };

/// Refuses a scheme that is unknown, or whose backend `compiled` lacks (naming the feature).
fn check_compiled(url: &LockUrl, compiled: Compiled) -> Result<(), LockError> {
    let not_enabled = |feature| Err(LockError::BackendNotEnabled { scheme: url.scheme.clone(), feature });
    match url.scheme.as_str() {
        "mem" => Ok(()),
        "etcd" | "etcds" if compiled.etcd => Ok(()),
        "etcd" | "etcds" => not_enabled("etcd"),
        "zk" if compiled.zookeeper => Ok(()),
        "zk" => not_enabled("zookeeper"),
        "redis" | "rediss" if compiled.redis => Ok(()),
        "redis" | "rediss" => not_enabled("redis"),
        other => Err(LockError::InvalidUrl {
            url: url.to_string(),
            reason: format!("unknown scheme {other:?}; use mem://, etcd://, etcds://, zk://, redis:// or rediss://"),
        }),
    }
}

fn connect_mem(url: &LockUrl, names: MetricNames) -> Result<Box<dyn DistributedLock>, LockError> {
    url.reject_unknown_params(&["ttl"])?;
    if url.username.is_some()
        || url.password.is_some()
        || url.hosts.len() > 1
        || !url.path.is_empty()
        || url.hosts.iter().any(|h| h.port.is_some())
    {
        return Err(LockError::InvalidUrl {
            url: url.to_string(),
            reason: "mem:// takes only a server name: mem:// or mem://NAME, with an optional ?ttl=".into(),
        });
    }
    let server = MemServer::named(url.hosts.first().map(|h| h.host.as_str()).unwrap_or(""));
    let mut builder = MemBackend::builder().server(server);
    if let Some(ttl) = url.param("ttl") {
        builder = builder.ttl(parse_duration("ttl", ttl)?);
    }
    Ok(Box::new(LockClient::new(builder.build()?).with_metric_names(names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schemes_pick_backends_or_say_what_is_missing() {
        assert!(connect("mem://").await.is_ok());
        assert!(connect("mem://named?ttl=2s").await.is_ok());
        assert!(connect("mem://?metrics_names=jobs/,payments/settle").await.is_ok());
        let cases: &[(&str, &str)] = &[
            ("nats://localhost", "unknown scheme"),
            ("mem://:secret@", "only a server name"),
            ("localhost:2379", "no scheme"),
            ("mem://?ttl=0s", "too short"),
            ("mem://?ttl=10", "not a duration"),
            ("mem://?tll=1s", "unknown parameter"),
            ("mem://?metrics_names=jobs//x", "metrics_names"),
            ("mem://a,b", "only a server name"),
            ("mem:///path", "only a server name"),
        ];
        for (url, why) in cases {
            let err = connect(url).await.err().unwrap_or_else(|| panic!("{url} connected"));
            assert!(err.to_string().contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn schemes_of_backends_not_compiled_in_name_their_feature() {
        let none = Compiled { etcd: false, zookeeper: false, redis: false };
        let all = Compiled { etcd: true, zookeeper: true, redis: true };
        let table = [
            ("etcd://h", "etcd"),
            ("etcds://h", "etcd"),
            ("zk://h", "zookeeper"),
            ("redis://h", "redis"),
            ("rediss://h", "redis"),
        ];
        for (url, feature) in table {
            let url = LockUrl::parse(url).unwrap();
            let err = check_compiled(&url, none).unwrap_err();
            assert!(matches!(err, LockError::BackendNotEnabled { .. }), "{url}");
            assert!(err.to_string().contains(&format!("enable the `{feature}` feature")), "{url}: {err}");
            assert!(check_compiled(&url, all).is_ok(), "{url}");
        }
        assert!(check_compiled(&LockUrl::parse("mem://").unwrap(), none).is_ok());
        let unknown = check_compiled(&LockUrl::parse("nats://h").unwrap(), all).unwrap_err();
        assert!(unknown.to_string().contains("unknown scheme"), "{unknown}");
    }

    #[tokio::test]
    async fn named_mem_servers_are_shared_within_the_process() {
        let a = connect("mem://shared-test").await.unwrap();
        let b = connect("mem://shared-test").await.unwrap();
        let other = connect("mem://other-test").await.unwrap();
        let guard = a.lock("x").await.unwrap();
        assert!(b.try_lock("x").await.unwrap().is_none());
        assert!(other.try_lock("x").await.unwrap().is_some());
        drop(guard);
    }
}
