//! socket: text lines from a TCP server, as Spark's `socketTextStream`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{Intake, read_lines};

const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Connects to `host:port` and appends every line it sends, reconnecting whenever the
/// server goes away or is not there yet.
pub async fn receive(source: String, host: String, port: u16, intake: Arc<Intake>) {
    let mut reported_down = false;
    loop {
        match TcpStream::connect((host.as_str(), port)).await {
            Ok(stream) => {
                tracing::info!(source, "connected to {host}:{port}");
                reported_down = false;
                match read_lines(&source, stream, &intake).await {
                    Ok(()) => {
                        tracing::info!(source, "{host}:{port} closed the connection; reconnecting")
                    }
                    Err(error) => tracing::warn!(
                        source,
                        "reading from {host}:{port} failed: {error}; reconnecting"
                    ),
                }
            }
            Err(error) if !reported_down => {
                tracing::warn!(
                    source,
                    "cannot connect to {host}:{port}: {error}; retrying every {} ms until it is up",
                    RECONNECT_DELAY.as_millis()
                );
                reported_down = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}
