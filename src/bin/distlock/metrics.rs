//! `--metrics-addr`: serves the library's metrics (docs/OPERATIONS.md) as Prometheus text on
//! `http://ADDR/metrics` while `run` or `elect` runs its command.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::exit::Exit;

/// Installs the Prometheus exporter, listening on `addr`. A port that cannot be bound is bad
/// input: nothing is locked and the command does not start.
pub fn serve(addr: SocketAddr) -> Result<(), Exit> {
    PrometheusBuilder::new().with_http_listener(addr).install().map_err(|e| {
        Exit::BadInput(format!("cannot serve metrics on {addr}: {e}; pick a free address for --metrics-addr"))
    })
}
