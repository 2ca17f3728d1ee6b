//! The data directory's layout:
//!
//! ```text
//! DATA/admin-token                      the admin token, mode 0600 (its one plaintext copy)
//! DATA/registry.db                      the registry (SQLite)
//! DATA/components/SHA256.wasm           uploaded components, content-addressed
//! DATA/uploads/                         uploads being received
//! DATA/tenants/TENANT/files/            the tenant's files; relative paths of its jobs start here
//! DATA/tenants/TENANT/jobs/JOB/checkpoint   each job's checkpoint directory
//! DATA/tenants/TENANT/jobs/JOB/log[.1]      each job's log (the newer half, the older)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where a server keeps everything.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`, created with its folders if missing.
    pub fn create(root: &Path) -> Result<Self> {
        let data = Self {
            root: root.to_owned(),
        };
        for dir in [data.components(), data.uploads(), data.root.join("tenants")] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        }
        // Uploads cut short by the last exit are of no use.
        for entry in std::fs::read_dir(data.uploads())? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(data)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The admin token's file.
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin-token")
    }

    /// The registry database.
    pub fn registry(&self) -> PathBuf {
        self.root.join("registry.db")
    }

    /// The content-addressed component store.
    pub fn components(&self) -> PathBuf {
        self.root.join("components")
    }

    /// The component with SHA-256 `digest`.
    pub fn component(&self, digest: &str) -> PathBuf {
        self.components().join(format!("{digest}.wasm"))
    }

    /// Where uploads are received before they are checked.
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Everything of `tenant`.
    pub fn tenant(&self, tenant: &str) -> PathBuf {
        self.root.join("tenants").join(tenant)
    }

    /// The tenant's files: where its jobs' relative paths start.
    pub fn files(&self, tenant: &str) -> PathBuf {
        self.tenant(tenant).join("files")
    }

    /// Everything of the tenant's job `job`.
    pub fn job(&self, tenant: &str, job: &str) -> PathBuf {
        self.tenant(tenant).join("jobs").join(job)
    }

    /// The log of the tenant's job `job` (its older half is `log.1` beside it).
    pub fn log(&self, tenant: &str, job: &str) -> PathBuf {
        self.job(tenant, job).join("log")
    }

    /// The checkpoint directory the server gives the tenant's job `job`.
    pub fn checkpoint(&self, tenant: &str, job: &str) -> PathBuf {
        self.job(tenant, job).join("checkpoint")
    }
}
