//! Server-side request counters: etcd's Prometheus `/metrics`, counted by gRPC method.

use std::collections::BTreeMap;
use std::io;

/// Requests by gRPC method, as etcd counts them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcdRequests {
    /// `grpc_server_started_total` (unary and stream RPCs started), by method.
    pub started: BTreeMap<String, f64>,
    /// `grpc_server_msg_received_total` for the Watch stream: one per watch created or cancelled.
    pub watch_messages: f64,
    /// `grpc_server_msg_received_total` for LeaseKeepAlive: one per keepalive.
    pub keepalive_messages: f64,
    /// `etcd_debugging_mvcc_events_total`: watch events the server sent.
    pub watch_events_sent: f64,
}

impl EtcdRequests {
    /// Reads the counters from `endpoint`'s `/metrics`.
    pub async fn read(endpoint: &str) -> io::Result<Self> {
        let body = distlock_tests::etcd::metrics_text(endpoint).await?;
        Ok(Self::parse(&body))
    }

    /// Parses Prometheus text.
    pub fn parse(text: &str) -> Self {
        let mut requests = EtcdRequests::default();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("etcd_debugging_mvcc_events_total ") {
                requests.watch_events_sent = v.trim().parse().unwrap_or(0.0);
                continue;
            }
            let (counter, rest) = match line.split_once('{') {
                Some(split) => split,
                None => continue,
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            let method = labels
                .split(',')
                .find_map(|l| l.strip_prefix("grpc_method=\""))
                .map(|m| m.trim_end_matches('"').to_owned());
            let Some(method) = method else { continue };
            match counter {
                "grpc_server_started_total" => *requests.started.entry(method).or_default() += value,
                "grpc_server_msg_received_total" if method == "Watch" => requests.watch_messages += value,
                "grpc_server_msg_received_total" if method == "LeaseKeepAlive" => requests.keepalive_messages += value,
                _ => {}
            }
        }
        requests
    }

    /// The lock requests between two readings: every RPC but keepalives and watch streams,
    /// plus one per watch created on a stream.
    pub fn lock_requests_since(&self, before: &EtcdRequests) -> f64 {
        let started: f64 = self
            .started
            .iter()
            .filter(|(m, _)| m.as_str() != "LeaseKeepAlive" && m.as_str() != "Watch")
            .map(|(m, v)| v - before.started.get(m).copied().unwrap_or(0.0))
            .sum();
        started + (self.watch_messages - before.watch_messages)
    }

    /// The per-method difference, for the JSON output.
    pub fn by_method_since(&self, before: &EtcdRequests) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self
            .started
            .iter()
            .map(|(m, v)| (m.clone(), v - before.started.get(m).copied().unwrap_or(0.0)))
            .filter(|(m, v)| *v > 0.0 && m != "LeaseKeepAlive" && m != "Watch")
            .collect();
        let watches = self.watch_messages - before.watch_messages;
        if watches > 0.0 {
            out.insert("Watch(create/cancel)".into(), watches);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_counters() {
        let text = r#"
# HELP grpc_server_started_total Total number of RPCs started on the server.
grpc_server_started_total{grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12
grpc_server_started_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 3
grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 2
grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 5
grpc_server_msg_received_total{grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 7
etcd_debugging_mvcc_events_total 9
"#;
        let r = EtcdRequests::parse(text);
        assert_eq!(r.started.get("Txn"), Some(&12.0));
        assert_eq!(r.watch_messages, 5.0);
        assert_eq!(r.keepalive_messages, 7.0);
        assert_eq!(r.watch_events_sent, 9.0);
        assert_eq!(r.lock_requests_since(&EtcdRequests::default()), 17.0);
    }
}

/// Redis's command counts (`INFO commandstats`, `INFO stats`) at one moment.
#[derive(Debug, Default, Clone)]
pub struct RedisCommands {
    /// Calls by command, client commands and those scripts ran alike.
    pub by_command: BTreeMap<String, f64>,
    /// Messages published (`PUBLISH`, by the scripts).
    pub published: f64,
}

/// The commands distlock's clients send (keepalives are scripts too; `wait` with `replicas=N`,
/// in one round trip with a `publish` that is not counted apart from the scripts'); everything
/// else in the command stats is run by the scripts, part of a script's one request.
const CLIENT_COMMANDS: &[&str] =
    &["evalsha", "eval", "script", "script|load", "subscribe", "unsubscribe", "scan", "wait"];

impl RedisCommands {
    /// Reads `endpoint`'s (`host:port`) counters.
    pub async fn read(endpoint: &str) -> io::Result<Self> {
        let failed = |e: redis::RedisError| io::Error::other(e.to_string());
        let client = redis::Client::open(format!("redis://{endpoint}")).map_err(failed)?;
        let mut connection = client.get_multiplexed_async_connection().await.map_err(failed)?;
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await.map_err(failed)?;
        let mut by_command = BTreeMap::new();
        for line in info.lines() {
            let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
            let calls = rest.split(',').find_map(|f| f.strip_prefix("calls=")).and_then(|c| c.parse().ok());
            if let Some(calls) = calls {
                by_command.insert(name.to_owned(), calls);
            }
        }
        let published = by_command.get("publish").copied().unwrap_or(0.0);
        Ok(RedisCommands { by_command, published })
    }

    /// Requests distlock's clients sent ([`CLIENT_COMMANDS`]).
    pub fn client_commands(&self) -> f64 {
        self.by_command
            .iter()
            .filter(|(name, _)| CLIENT_COMMANDS.contains(&name.as_str()))
            .map(|(_, calls)| calls)
            .sum()
    }
}
