//! Receiving an upload: streamed to a file under the data directory while its SHA-256 is
//! computed, cut off at a size limit, removed unless kept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use axum::body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// An upload received whole, in a temporary file removed on drop unless kept.
pub struct Upload {
    path: Option<PathBuf>,
    /// SHA-256 of its bytes, in hex.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Why an upload was not received.
#[derive(Debug)]
pub enum UploadError {
    /// It was longer than `limit` bytes.
    TooLarge {
        /// The limit.
        limit: u64,
        /// Its length, when it was read to its end.
        size: Option<u64>,
    },
    /// Reading or writing it failed.
    Failed(anyhow::Error),
}

impl Upload {
    /// Receives `body` into a new file of `dir`, refusing it past `limit` bytes. The
    /// rest of a refused body up to [`DRAIN_LIMIT`] is read and dropped, so that a client
    /// still sending it reads the refusal rather than a broken connection.
    pub async fn receive(body: Body, dir: &Path, limit: u64) -> Result<Self, UploadError> {
        let name = format!(
            "{}.part",
            super::tokens::generate().map_err(UploadError::Failed)?
        );
        let mut upload = Self {
            path: Some(dir.join(name)),
            digest: String::new(),
            size: 0,
        };
        let path = upload.path.clone().expect("just set");
        let mut file = tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("cannot create {}", path.display()))
            .map_err(UploadError::Failed)?;
        let mut hasher = Sha256::new();
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .context("the upload was cut short")
                .map_err(UploadError::Failed)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            upload.size += data.len() as u64;
            if upload.size > limit {
                drop(file);
                let size = drain(body, upload.size).await;
                return Err(UploadError::TooLarge { limit, size });
            }
            hasher.update(&data);
            file.write_all(&data)
                .await
                .with_context(|| format!("cannot write {}", path.display()))
                .map_err(UploadError::Failed)?;
        }
        file.sync_all()
            .await
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(UploadError::Failed)?;
        upload.digest = format!("{:x}", hasher.finalize());
        Ok(upload)
    }

    /// Moves the upload to `to` (kept from then on); a file already there, of the same
    /// content by its address, is kept instead.
    pub fn keep(self, to: &Path) -> Result<()> {
        self.keep_by(|from| {
            if to.exists() {
                return std::fs::remove_file(from);
            }
            std::fs::rename(from, to)
        })
        .with_context(|| format!("cannot keep an upload as {}", to.display()))
    }

    /// Keeps the upload by `place`, which moves its file away; if `place` fails, the
    /// upload is removed.
    pub fn keep_by(
        mut self,
        place: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let from = self.path.clone().expect("kept once");
        place(&from)?;
        self.path = None;
        Ok(())
    }
}

/// The most of a refused upload read to its end.
pub const DRAIN_LIMIT: u64 = crate::runtime::MAX_COMPONENT_BYTES;

/// Reads and drops the rest of `body` (of a refused upload, so that a client still
/// sending it reads the refusal rather than a broken connection), `read` bytes of which
/// were read; its length, or `None` when it is longer than [`DRAIN_LIMIT`] or cut short.
pub async fn drain(mut body: Body, mut read: u64) -> Option<u64> {
    while let Some(frame) = body.frame().await {
        read += frame.ok()?.into_data().map_or(0, |data| data.len() as u64);
        if read > DRAIN_LIMIT {
            return None;
        }
    }
    Some(read)
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}
