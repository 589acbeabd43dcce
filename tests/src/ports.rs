//! Free loopback ports for servers, never handed out twice within one test binary, and taken
//! from below the kernel's ephemeral range.
//!
//! Why below: a server is told its port some time before it binds it (a JVM takes seconds to
//! start). A port from the ephemeral range can meanwhile become the local end of any outgoing
//! connection on the machine (a client, a proxy, another server's peer link), and the server
//! then fails with "address already in use". Ports below the range are only ever taken by
//! explicit binds.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

/// Where the search starts: below this are well-known and registered services' ports.
const LOWEST: u16 = 10_000;

/// A loopback port that was free a moment ago, that this process has not handed out before,
/// and that the kernel does not pick for outgoing connections.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    let range = below_ephemeral();
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    for attempt in 0u32..10_000 {
        let port = match range {
            Some(range) => {
                random.write_u32(attempt);
                range.start + (random.finish() % u64::from(range.end - range.start)) as u16
            }
            None => 0,
        };
        let Ok(port) = TcpListener::bind(("127.0.0.1", port)).and_then(|l| l.local_addr()).map(|a| a.port()) else {
            continue;
        };
        if given.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found in 10000 attempts");
}

/// This machine's [`candidates`], read once.
fn below_ephemeral() -> &'static Option<Range<u16>> {
    static RANGE: OnceLock<Option<Range<u16>>> = OnceLock::new();
    RANGE.get_or_init(|| {
        candidates(&std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default())
    })
}

/// The ports below the ephemeral range named by `ip_local_port_range` ("32768\t60999"), or
/// `None` if that leaves too few (then the kernel picks).
fn candidates(ip_local_port_range: &str) -> Option<Range<u16>> {
    let low: u16 = ip_local_port_range.split_whitespace().next()?.parse().ok()?;
    (low >= LOWEST + 1_000).then_some(LOWEST..low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_lie_below_the_ephemeral_range() {
        assert_eq!(candidates("32768\t60999\n"), Some(10_000..32_768));
        assert_eq!(candidates("10500 60999"), None, "too few below: let the kernel pick");
        assert_eq!(candidates(""), None);
        assert_eq!(candidates("garbage"), None);
    }

    #[test]
    fn ports_are_distinct_and_outside_the_ephemeral_range() {
        let range = below_ephemeral();
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        if let Some(range) = range {
            assert!(ports.iter().all(|p| range.contains(p)), "{ports:?} not all in {range:?}");
        }
    }
}
