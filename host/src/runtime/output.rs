//! A guest's stdout and stderr, captured in memory and passed to the job's log after
//! every call, at most a bounded number of bytes per call. Each line is logged naming
//! its job and tenant, so that a server files it in that job's log.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: usize,
}

/// The capture buffers of one instance.
#[derive(Clone)]
pub struct GuestOutput {
    captured: Arc<Mutex<Captured>>,
    limit: usize,
}

impl GuestOutput {
    pub fn new(limit: usize) -> Self {
        Self {
            captured: Arc::default(),
            limit,
        }
    }

    pub fn stdout(&self) -> CaptureStream {
        CaptureStream {
            output: self.clone(),
            is_stderr: false,
        }
    }

    pub fn stderr(&self) -> CaptureStream {
        CaptureStream {
            output: self.clone(),
            is_stderr: true,
        }
    }

    fn append(&self, is_stderr: bool, bytes: &[u8]) {
        let mut captured = self.captured.lock().expect("guest output poisoned");
        let room = self
            .limit
            .saturating_sub(captured.stdout.len() + captured.stderr.len());
        let kept = bytes.len().min(room);
        let buffer = if is_stderr {
            &mut captured.stderr
        } else {
            &mut captured.stdout
        };
        buffer.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }

    /// Logs what the guest wrote during the last call, one event per line, and empties
    /// the buffers.
    pub fn flush_to_log(&self, origin: &Origin) {
        let captured = std::mem::take(&mut *self.captured.lock().expect("guest output poisoned"));
        let (udf, job) = (origin.udf.as_str(), origin.job.as_deref());
        // The host's own calls (no job) name no tenant either: no job log takes them.
        let tenant = job.map(|_| origin.tenant.as_str());
        for (stream, bytes) in [("stdout", &captured.stdout), ("stderr", &captured.stderr)] {
            for line in String::from_utf8_lossy(bytes).lines() {
                tracing::info!(target: "sluice::guest", tenant, job, udf, stream, "{line}");
            }
        }
        if captured.dropped > 0 {
            tracing::warn!(
                target: "sluice::guest",
                tenant,
                job,
                udf,
                "dropped {} bytes of guest output past the limit of {} bytes per call",
                captured.dropped,
                self.limit
            );
        }
    }
}

/// Whose output it is: the UDF, and the job and tenant it runs for.
pub struct Origin {
    /// The UDF, as errors name it (job, step and function).
    pub udf: String,
    /// The tenant the job runs for.
    pub tenant: String,
    /// The job (`None`: the host's own calls, such as listing a component's functions).
    pub job: Option<Arc<str>>,
}

/// `text` cut to at most `limit` bytes (at a character boundary), with a note of how many
/// bytes were dropped: a failure or panic message from a guest is kept to the same size as
/// its output, so that a guest cannot flood the log through it.
pub fn capped(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(
        "... [{dropped} more bytes dropped: past the limit of {limit} bytes of guest output \
         per call, `limits.output`]"
    ));
    text
}

/// One of a guest's two output streams. Writes never fail: past the limit they are
/// counted and dropped, so a chatty UDF cannot fail its job by printing.
#[derive(Clone)]
pub struct CaptureStream {
    output: GuestOutput,
    is_stderr: bool,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.append(self.is_stderr, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.output.append(self.is_stderr, bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(capped("short".into(), 10), "short");
        let cut = capped("é".repeat(10), 5);
        assert!(cut.starts_with("éé... [16 more bytes dropped"), "{cut}");
        assert!(cut.contains("`limits.output`"), "{cut}");
        let huge = capped("x".repeat(64 << 20), 64 << 10);
        assert!(huge.len() < (64 << 10) + 200);
        assert!(huge.contains(&format!("{} more bytes dropped", (64 << 20) - (64 << 10))));
    }
}
