//! The gRPC connection to one etcd endpoint: tonic's channel over a TCP stream that sends what
//! one turn of the scheduler wrote as one segment and acknowledges etcd's pings in bulk
//! ([`coalescing::Coalescing`]).
//!
//! Written as hyper and h2 write it, a request to etcd costs three TCP segments out and two
//! back: hyper queues the HEADERS frame in its connection task and the DATA frame from a second
//! task, and flushes after each; etcd (grpc-go) answers each DATA frame with a window update and
//! a ping to estimate the bandwidth, and h2 acknowledges the ping at once. Each segment costs a
//! send on one side and a wake-up and a read on the other. Over this connection a request
//! leaves as one segment and its answer comes as one: held back, our acknowledgement keeps
//! etcd's ping outstanding, and etcd sends no new one meanwhile.
//!
//! Several endpoints connect through etcd-client's balanced channel instead, which spreads
//! requests over them and moves away from one that fails; tonic offers that balancing only
//! over its own connector.

mod coalescing;
mod frames;

use std::io;

use tokio::net::TcpStream;

use crate::EtcdConfig;
use coalescing::Coalescing;

/// A channel to `url` (`http://host:port` or `https://…`) with the settings etcd-client would
/// give its own (keepalive, timeouts, TLS), connecting lazily over [`Coalescing`] streams.
pub(crate) fn channel(
    url: &str,
    config: &EtcdConfig,
    tls: Option<etcd_client::TlsOptions>,
) -> Result<etcd_client::Channel, tonic::transport::Error> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .keep_alive_while_idle(true)
        .http2_keep_alive_interval(config.ttl / 4)
        .keep_alive_timeout(config.ttl / 4)
        .timeout(config.request_timeout)
        .connect_timeout(config.connect_timeout);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(etcd_client::Channel::Tonic(endpoint.connect_with_connector_lazy(tower::service_fn(connect))))
}

/// Opens the TCP stream to `uri`'s host and port (without one, the scheme's, as tonic's own
/// connector does), without Nagle's delay.
async fn connect(uri: http::Uri) -> io::Result<hyper_util::rt::TokioIo<Coalescing>> {
    let plain = uri.scheme_str() == Some("http");
    let Some(host) = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} names no host")));
    };
    let port = uri.port_u16().unwrap_or(if plain { 80 } else { 443 });
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(hyper_util::rt::TokioIo::new(Coalescing::new(stream, plain)))
}
