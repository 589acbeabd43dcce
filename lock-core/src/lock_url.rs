//! The lock URL parser: `scheme://user:pass@h1:2379,h2:2379/prefix?ttl=10s`. Pure, no I/O,
//! table-tested. `url::Url` rejects comma-separated hosts, so the authority is parsed here.

use crate::LockError;

/// One `host[:port]` of a URL's authority.
///
/// ```
/// let url = distlock_core::LockUrl::parse("etcd://[::1]:2379")?;
/// assert_eq!(url.hosts[0].host, "::1");
/// assert_eq!(url.hosts[0].port, Some(2379));
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port, if given.
    pub port: Option<u16>,
}

/// A parsed lock URL. Which scheme means which backend is decided by the `distlock` facade.
///
/// ```
/// use distlock_core::LockUrl;
///
/// let url = LockUrl::parse("zk://app:s3cret@zk1:2181,zk2/locks/myapp?session_timeout=10s")?;
/// assert_eq!(url.scheme, "zk");
/// assert_eq!(url.username.as_deref(), Some("app"));
/// assert_eq!(url.hosts.len(), 2);
/// assert_eq!(url.path, "/locks/myapp");
/// assert_eq!(url.param("session_timeout"), Some("10s"));
/// assert!(!url.to_string().contains("s3cret")); // Display masks the password
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LockUrl {
    /// The scheme, lower-cased (`etcd`, `etcds`, `zk`, `mem`).
    pub scheme: String,
    /// The user name, percent-decoded; `None` also for `:password@` (a password alone).
    pub username: Option<String>,
    /// The password, percent-decoded. Never printed by `Display` or `Debug`.
    pub password: Option<String>,
    /// The hosts in the order given; empty for `mem://`.
    pub hosts: Vec<HostPort>,
    /// The path, with its leading `/`, or empty.
    pub path: String,
    /// The query parameters in the order given; each key at most once.
    pub params: Vec<(String, String)>,
}

impl LockUrl {
    /// Parses `text`. The error says what is wrong, with the password masked.
    ///
    /// ```
    /// let err = distlock_core::LockUrl::parse("etcd://h1:99999").unwrap_err();
    /// assert!(err.to_string().contains("port"));
    /// ```
    pub fn parse(text: &str) -> Result<Self, LockError> {
        let bad = |reason: &str| LockError::InvalidUrl { url: mask_password(text), reason: reason.to_owned() };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("it has no scheme; start it with etcd://, etcds://, zk:// or mem://"))?;
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return Err(bad("the scheme is empty or has characters other than letters, digits, '+', '-', '.'"));
        }
        if rest.contains('#') {
            return Err(bad("it has a '#' fragment; lock URLs take none (percent-encode '#' in passwords as %23)"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                // `:pass@` (a password alone, as Redis's AUTH takes it) has no user name.
                if user.is_empty() && pass.is_none() {
                    return Err(bad("the user name before '@' is empty"));
                }
                let user = match user {
                    "" => None,
                    user => Some(percent_decode(user).ok_or_else(|| bad("the user name has a bad %-escape"))?),
                };
                let pass = pass
                    .map(|p| percent_decode(p).ok_or_else(|| bad("the password has a bad %-escape")))
                    .transpose()?;
                (user, pass)
            }
        };
        let hosts = if hosts.is_empty() {
            Vec::new()
        } else {
            hosts.split(',').map(|h| parse_host(h).map_err(|why| bad(&why))).collect::<Result<_, _>>()?
        };
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key).ok_or_else(|| bad("a query key has a bad %-escape"))?;
            let value = percent_decode(value).ok_or_else(|| bad("a query value has a bad %-escape"))?;
            if key.is_empty() {
                return Err(bad("a query parameter has no name"));
            }
            if params.iter().any(|(k, _)| *k == key) {
                return Err(bad(&format!("the parameter {key:?} is given twice")));
            }
            params.push((key, value));
        }
        Ok(LockUrl { scheme: scheme.to_ascii_lowercase(), username, password, hosts, path: path.to_owned(), params })
    }

    /// The value of query parameter `key`.
    ///
    /// ```
    /// let url = distlock_core::LockUrl::parse("mem://?ttl=3s")?;
    /// assert_eq!(url.param("ttl"), Some("3s"));
    /// assert_eq!(url.param("other"), None);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets query parameter `key` to `value`, replacing any earlier value.
    ///
    /// ```
    /// let mut url = distlock_core::LockUrl::parse("mem://?ttl=3s")?;
    /// url.set_param("ttl", "5s");
    /// assert_eq!(url.param("ttl"), Some("5s"));
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn set_param(&mut self, key: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.params.push((key.to_owned(), value.to_owned())),
        }
    }

    /// Removes query parameter `key` and returns its value.
    ///
    /// ```
    /// let mut url = distlock_core::LockUrl::parse("mem://?ttl=3s")?;
    /// assert_eq!(url.take_param("ttl").as_deref(), Some("3s"));
    /// assert_eq!(url.param("ttl"), None);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn take_param(&mut self, key: &str) -> Option<String> {
        let at = self.params.iter().position(|(k, _)| k == key)?;
        Some(self.params.remove(at).1)
    }

    /// Fails if a parameter other than `known` is present, naming the accepted ones.
    ///
    /// ```
    /// let url = distlock_core::LockUrl::parse("mem://?tll=3s")?;
    /// assert!(url.reject_unknown_params(&["ttl"]).unwrap_err().to_string().contains("tll"));
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn reject_unknown_params(&self, known: &[&str]) -> Result<(), LockError> {
        match self.params.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((key, _)) => Err(LockError::InvalidUrl {
                url: self.to_string(),
                reason: format!("unknown parameter {key:?}; {}:// accepts {}", self.scheme, known.join(", ")),
            }),
        }
    }

    /// The hosts as `host:port` strings, with `default_port` where none was given.
    ///
    /// ```
    /// let url = distlock_core::LockUrl::parse("etcd://a,b:1,[::1]")?;
    /// assert_eq!(url.endpoints(2379), ["a:2379", "b:1", "[::1]:2379"]);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn endpoints(&self, default_port: u16) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| {
                let port = h.port.unwrap_or(default_port);
                if h.host.contains(':') {
                    format!("[{}]:{port}", h.host)
                } else {
                    format!("{}:{port}", h.host)
                }
            })
            .collect()
    }
}

impl std::fmt::Display for LockUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(user) = &self.username {
            write!(f, "{user}{}@", if self.password.is_some() { ":***" } else { "" })?;
        }
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|h| {
                let host = if h.host.contains(':') { format!("[{}]", h.host) } else { h.host.clone() };
                match h.port {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            })
            .collect();
        write!(f, "{}{}", hosts.join(","), self.path)?;
        if !self.params.is_empty() {
            let query: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for LockUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockUrl({self})")
    }
}

fn parse_host(text: &str) -> Result<HostPort, String> {
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(|| format!("the host {text:?} opens '[' without ']'"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected {after:?} after the IPv6 address in {text:?}")),
            },
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(format!("a host is empty in {text:?}; separate hosts with a single ','"));
    }
    if host.contains(['/', '@', ' ', '[', ']']) || (!text.starts_with('[') && host.contains(':')) {
        return Err(format!("the host {host:?} has characters a host cannot have"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("the port {p:?} of {host:?} is not a number from 1 to 65535"))?,
        ),
    };
    Ok(HostPort { host: host.to_owned(), port })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `text` with the password of its user info replaced by `***`, for error messages.
fn mask_password(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else { return text.to_owned() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => text.to_owned(),
        },
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: Option<u16>) -> HostPort {
        HostPort { host: host.into(), port }
    }

    #[test]
    fn parses_valid_urls() {
        struct Case {
            text: &'static str,
            scheme: &'static str,
            user: Option<&'static str>,
            pass: Option<&'static str>,
            hosts: Vec<HostPort>,
            path: &'static str,
            params: Vec<(&'static str, &'static str)>,
        }
        let cases = vec![
            Case { text: "mem://", scheme: "mem", user: None, pass: None, hosts: vec![], path: "", params: vec![] },
            Case {
                text: "redis://:s3cret@h",
                scheme: "redis",
                user: None,
                pass: Some("s3cret"),
                hosts: vec![hp("h", None)],
                path: "",
                params: vec![],
            },
            Case {
                text: "mem://?ttl=2s",
                scheme: "mem",
                user: None,
                pass: None,
                hosts: vec![],
                path: "",
                params: vec![("ttl", "2s")],
            },
            Case {
                text: "mem://tests",
                scheme: "mem",
                user: None,
                pass: None,
                hosts: vec![hp("tests", None)],
                path: "",
                params: vec![],
            },
            Case {
                text: "etcd://10.0.0.1:2379,10.0.0.2:2379/myapp?ttl=10s",
                scheme: "etcd",
                user: None,
                pass: None,
                hosts: vec![hp("10.0.0.1", Some(2379)), hp("10.0.0.2", Some(2379))],
                path: "/myapp",
                params: vec![("ttl", "10s")],
            },
            Case {
                text: "ETCDS://user:p%40ss%3Aw@h1,h2:2380/a/b",
                scheme: "etcds",
                user: Some("user"),
                pass: Some("p@ss:w"),
                hosts: vec![hp("h1", None), hp("h2", Some(2380))],
                path: "/a/b",
                params: vec![],
            },
            Case {
                text: "zk://app@zk1:2181,[::1]:2182,[fe80::1]/chroot?session_timeout=10s&connect_timeout=2s",
                scheme: "zk",
                user: Some("app"),
                pass: None,
                hosts: vec![hp("zk1", Some(2181)), hp("::1", Some(2182)), hp("fe80::1", None)],
                path: "/chroot",
                params: vec![("session_timeout", "10s"), ("connect_timeout", "2s")],
            },
            Case {
                text: "zk://h?flag",
                scheme: "zk",
                user: None,
                pass: None,
                hosts: vec![hp("h", None)],
                path: "",
                params: vec![("flag", "")],
            },
        ];
        for c in cases {
            let url = LockUrl::parse(c.text).unwrap_or_else(|e| panic!("{}: {e}", c.text));
            assert_eq!(url.scheme, c.scheme, "{}", c.text);
            assert_eq!(url.username.as_deref(), c.user, "{}", c.text);
            assert_eq!(url.password.as_deref(), c.pass, "{}", c.text);
            assert_eq!(url.hosts, c.hosts, "{}", c.text);
            assert_eq!(url.path, c.path, "{}", c.text);
            let params: Vec<(&str, &str)> = url.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(params, c.params, "{}", c.text);
        }
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        let cases: &[(&str, &str)] = &[
            ("", "no scheme"),
            ("localhost:2379", "no scheme"),
            ("://h", "scheme is empty"),
            ("et cd://h", "scheme is empty"),
            ("etcd://h1,,h2", "host is empty"),
            ("etcd://h1,", "host is empty"),
            ("etcd://:2379", "host is empty"),
            ("etcd://h:0", "port"),
            ("etcd://h:99999", "port"),
            ("etcd://h:abc", "port"),
            ("etcd://[::1", "without ']'"),
            ("etcd://[::1]x", "unexpected"),
            ("etcd://a:b:c", "characters a host cannot have"),
            ("etcd://@h", "user name"),
            ("etcd://u:p%zz@h", "password"),
            ("etcd://h/x#frag", "fragment"),
            ("etcd://h?ttl=1s&ttl=2s", "given twice"),
            ("etcd://h?=1", "no name"),
        ];
        for (text, why) in cases {
            let err = LockUrl::parse(text).unwrap_err();
            assert!(matches!(err, LockError::InvalidUrl { .. }), "{text}");
            assert!(err.to_string().contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn never_prints_the_password() {
        let err = LockUrl::parse("etcd://u:topsecret@h:bad").unwrap_err().to_string();
        assert!(!err.contains("topsecret"), "{err}");
        let url = LockUrl::parse("etcd://u:topsecret@h").unwrap();
        assert!(!format!("{url} {url:?}").contains("topsecret"));
    }
}
