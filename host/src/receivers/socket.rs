//! socket: text lines from a TCP server, as Spark's `socketTextStream`.

use std::sync::Arc;
use std::time::Duration;

use sluice_abi::Batch;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

use super::{Intake, push_line};

const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Connects to `host:port` and appends every line it sends, reconnecting whenever the
/// server goes away or is not there yet. A line that is not UTF-8 is kept with
/// replacement characters and reported, never dropped.
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

async fn read_lines(source: &str, stream: TcpStream, intake: &Intake) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut pending = Batch::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            intake.append(&pending);
            return Ok(());
        }
        line_number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let text = String::from_utf8_lossy(text);
        if let std::borrow::Cow::Owned(_) = text {
            tracing::warn!(
                source,
                line_number,
                "line is not valid UTF-8; kept with U+FFFD in place of the bad bytes"
            );
        }
        push_line(&mut pending, &text);
        // Hand over what has arrived once the read buffer is empty: one lock per read,
        // not one per line.
        if reader.buffer().is_empty() {
            intake.append(&std::mem::take(&mut pending));
        }
    }
}
