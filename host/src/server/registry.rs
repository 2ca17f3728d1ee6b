//! The registry: tenants with their token hashes and quotas, components and jobs, in an
//! SQLite database in the data directory. The schema grows by migrations, each applied
//! once in order and counted in the database's `user_version`.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};

use super::config::TenantQuotas;

/// The schema, one migration per step. Never edit one that has shipped: add another.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        weight INTEGER NOT NULL,
        quotas TEXT NOT NULL
    );
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        -- NULL: the admin's token.
        tenant TEXT REFERENCES tenants(name) ON DELETE CASCADE
    );
    CREATE TABLE components (
        tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        functions TEXT NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE jobs (
        tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        manifest TEXT NOT NULL,
        desired TEXT NOT NULL,
        error TEXT,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE job_components (
        tenant TEXT NOT NULL,
        job TEXT NOT NULL,
        component TEXT NOT NULL,
        digest TEXT NOT NULL,
        FOREIGN KEY (tenant, job) REFERENCES jobs(tenant, name) ON DELETE CASCADE
    );
    CREATE INDEX job_components_by_component ON job_components (tenant, component);
",
    "
    -- Each job's last failure, kept apart from `jobs`, whose rows a redeploy replaces.
    CREATE TABLE job_failures (
        tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
        job TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (tenant, job)
    );
",
];

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The server's administrator.
    Admin,
    /// A tenant, by name.
    Tenant(String),
}

/// A tenant as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// Its name.
    pub name: String,
    /// Its CPU weight.
    pub weight: u32,
    /// Its own quotas (the server's defaults fill the others in).
    pub quotas: TenantQuotas,
}

/// A component as registered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentRow {
    /// The name the tenant gave it.
    pub name: String,
    /// SHA-256 of its bytes, in hex.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The functions it exports, as `name (kind)`.
    pub functions: Vec<String>,
}

/// What should become of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Running (again at the server's next start).
    Running,
    /// Stopped by its tenant.
    Stopped,
    /// Failed too often to be restarted; `start` runs it again.
    Failed,
}

impl Desired {
    fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "stopped" => Desired::Stopped,
            "failed" => Desired::Failed,
            _ => Desired::Running,
        }
    }
}

/// A job as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// Its tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// The manifest as submitted.
    pub manifest: String,
    /// What should become of it.
    pub desired: Desired,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A job's last failure, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    /// Why, as the metrics' `reason` label says it.
    pub reason: String,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
    /// What happened.
    pub text: String,
}

/// The registry database.
pub struct Registry {
    db: Mutex<Connection>,
}

impl Registry {
    /// Opens (creating) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Connection::open(path)
            .with_context(|| format!("cannot open the registry database {}", path.display()))?;
        Self::migrated(db)
            .with_context(|| format!("cannot migrate the registry database {}", path.display()))
    }

    /// A registry in memory, for tests.
    #[cfg(test)]
    pub fn in_memory() -> Result<Self> {
        Self::migrated(Connection::open_in_memory()?)
    }

    fn migrated(mut db: Connection) -> Result<Self> {
        db.pragma_update(None, "foreign_keys", true)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = db.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            bail!(
                "its schema is version {version}, newer than this sluice knows ({}): run a \
                 newer sluice on it",
                MIGRATIONS.len()
            );
        }
        for (number, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            let transaction = db.transaction()?;
            transaction
                .execute_batch(migration)
                .with_context(|| format!("migration {}", number + 1))?;
            transaction.pragma_update(None, "user_version", number as i64 + 1)?;
            transaction.commit()?;
        }
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().expect("registry poisoned")
    }

    /// Whether an admin token exists.
    pub fn has_admin(&self) -> Result<bool> {
        let count: i64 = self.db().query_row(
            "SELECT COUNT(*) FROM tokens WHERE tenant IS NULL",
            [],
            |row| row.get(0),
        )?;
        Ok(count > 0)
    }

    /// Keeps the hash of a token of `tenant` (`None`: the admin).
    pub fn add_token(&self, hash: &str, tenant: Option<&str>) -> Result<()> {
        self.db().execute(
            "INSERT INTO tokens (hash, tenant) VALUES (?1, ?2)",
            params![hash, tenant],
        )?;
        Ok(())
    }

    /// Who the token with `hash` belongs to.
    pub fn caller(&self, hash: &str) -> Result<Option<Caller>> {
        let tenant: Option<Option<String>> = self
            .db()
            .query_row("SELECT tenant FROM tokens WHERE hash = ?1", [hash], |row| {
                row.get(0)
            })
            .optional()?;
        Ok(tenant.map(|tenant| tenant.map_or(Caller::Admin, Caller::Tenant)))
    }

    /// Adds a tenant with the hash of its token; `false` if the name is taken.
    pub fn create_tenant(&self, tenant: &TenantRow, token_hash: &str) -> Result<bool> {
        let mut db = self.db();
        let transaction = db.transaction()?;
        let added = transaction.execute(
            "INSERT OR IGNORE INTO tenants (name, weight, quotas) VALUES (?1, ?2, ?3)",
            params![
                tenant.name,
                tenant.weight,
                serde_json::to_string(&tenant.quotas)?
            ],
        )?;
        if added == 0 {
            return Ok(false);
        }
        transaction.execute(
            "INSERT INTO tokens (hash, tenant) VALUES (?1, ?2)",
            params![token_hash, tenant.name],
        )?;
        transaction.commit()?;
        Ok(true)
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> Result<Vec<TenantRow>> {
        let db = self.db();
        let mut query = db.prepare("SELECT name, weight, quotas FROM tenants ORDER BY name")?;
        let rows = query.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, String>(2)?))
        })?;
        rows.map(|row| {
            let (name, weight, quotas) = row?;
            Ok(TenantRow {
                name,
                weight,
                quotas: serde_json::from_str(&quotas).context("a tenant's quotas")?,
            })
        })
        .collect()
    }

    /// The tenant called `name`.
    pub fn tenant(&self, name: &str) -> Result<Option<TenantRow>> {
        Ok(self
            .tenants()?
            .into_iter()
            .find(|tenant| tenant.name == name))
    }

    /// Removes a tenant with its tokens, components and jobs; `false` if there is none.
    pub fn delete_tenant(&self, name: &str) -> Result<bool> {
        Ok(self
            .db()
            .execute("DELETE FROM tenants WHERE name = ?1", [name])?
            > 0)
    }

    /// Registers (or replaces) `tenant`'s component `component.name`.
    pub fn put_component(&self, tenant: &str, component: &ComponentRow) -> Result<()> {
        self.db().execute(
            "INSERT OR REPLACE INTO components (tenant, name, digest, size, functions) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                tenant,
                component.name,
                component.digest,
                component.size as i64,
                serde_json::to_string(&component.functions)?
            ],
        )?;
        Ok(())
    }

    /// The tenant's components, by name.
    pub fn components(&self, tenant: &str) -> Result<Vec<ComponentRow>> {
        let db = self.db();
        let mut query = db.prepare(
            "SELECT name, digest, size, functions FROM components WHERE tenant = ?1 ORDER BY name",
        )?;
        let rows = query.query_map([tenant], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get::<_, i64>(2)? as u64,
                row.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (name, digest, size, functions) = row?;
            Ok(ComponentRow {
                name,
                digest,
                size,
                functions: serde_json::from_str(&functions).context("a component's functions")?,
            })
        })
        .collect()
    }

    /// The tenant's component `name`.
    pub fn component(&self, tenant: &str, name: &str) -> Result<Option<ComponentRow>> {
        Ok(self
            .components(tenant)?
            .into_iter()
            .find(|component| component.name == name))
    }

    /// The tenant's jobs that use its component `name`.
    pub fn jobs_using(&self, tenant: &str, name: &str) -> Result<Vec<String>> {
        let db = self.db();
        let mut query = db.prepare(
            "SELECT DISTINCT job FROM job_components WHERE tenant = ?1 AND component = ?2 \
             ORDER BY job",
        )?;
        let jobs = query.query_map([tenant, name], |row| row.get(0))?;
        Ok(jobs.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes the tenant's component `name`; `false` if there is none.
    pub fn delete_component(&self, tenant: &str, name: &str) -> Result<bool> {
        Ok(self.db().execute(
            "DELETE FROM components WHERE tenant = ?1 AND name = ?2",
            [tenant, name],
        )? > 0)
    }

    /// Whether any tenant's component, or any job, still has the bytes of `digest`.
    pub fn digest_in_use(&self, digest: &str) -> Result<bool> {
        let count: i64 = self.db().query_row(
            "SELECT (SELECT COUNT(*) FROM components WHERE digest = ?1) + \
             (SELECT COUNT(*) FROM job_components WHERE digest = ?1)",
            [digest],
            |row| row.get(0),
        )?;
        Ok(count > 0)
    }

    /// Registers (or replaces) a job with the components it uses (`(name, digest)`).
    pub fn put_job(&self, job: &JobRow, components: &[(String, String)]) -> Result<()> {
        let mut db = self.db();
        let transaction = db.transaction()?;
        transaction.execute(
            "DELETE FROM job_components WHERE tenant = ?1 AND job = ?2",
            [&job.tenant, &job.name],
        )?;
        transaction.execute(
            "INSERT OR REPLACE INTO jobs (tenant, name, manifest, desired, error) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                job.tenant,
                job.name,
                job.manifest,
                job.desired.as_str(),
                job.error
            ],
        )?;
        for (component, digest) in components {
            transaction.execute(
                "INSERT INTO job_components (tenant, job, component, digest) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![job.tenant, job.name, component, digest],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Sets what should become of a job, and why it failed.
    pub fn set_desired(
        &self,
        tenant: &str,
        name: &str,
        desired: Desired,
        error: Option<&str>,
    ) -> Result<()> {
        self.db().execute(
            "UPDATE jobs SET desired = ?3, error = ?4 WHERE tenant = ?1 AND name = ?2",
            params![tenant, name, desired.as_str(), error],
        )?;
        Ok(())
    }

    /// The jobs of `tenant` (`None`: of every tenant), by tenant and name.
    pub fn jobs(&self, tenant: Option<&str>) -> Result<Vec<JobRow>> {
        let db = self.db();
        let mut query = db.prepare(
            "SELECT tenant, name, manifest, desired, error FROM jobs \
             WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name",
        )?;
        let rows = query.query_map([tenant], |row| {
            Ok(JobRow {
                tenant: row.get(0)?,
                name: row.get(1)?,
                manifest: row.get(2)?,
                desired: Desired::parse(&row.get::<_, String>(3)?),
                error: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The tenant's job `name`.
    pub fn job(&self, tenant: &str, name: &str) -> Result<Option<JobRow>> {
        Ok(self
            .jobs(Some(tenant))?
            .into_iter()
            .find(|job| job.name == name))
    }

    /// Removes the tenant's job `name`; `false` if there is none.
    pub fn delete_job(&self, tenant: &str, name: &str) -> Result<bool> {
        let db = self.db();
        db.execute(
            "DELETE FROM job_failures WHERE tenant = ?1 AND job = ?2",
            [tenant, name],
        )?;
        Ok(db.execute(
            "DELETE FROM jobs WHERE tenant = ?1 AND name = ?2",
            [tenant, name],
        )? > 0)
    }

    /// Records the last failure of the tenant's job `name`.
    pub fn set_last_failure(&self, tenant: &str, name: &str, failure: &FailureRow) -> Result<()> {
        self.db().execute(
            "INSERT OR REPLACE INTO job_failures (tenant, job, reason, at_ms, text) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant, name, failure.reason, failure.at_ms, failure.text],
        )?;
        Ok(())
    }

    /// The last failure of the tenant's job `name`, if it failed.
    pub fn last_failure(&self, tenant: &str, name: &str) -> Result<Option<FailureRow>> {
        Ok(self
            .db()
            .query_row(
                "SELECT reason, at_ms, text FROM job_failures WHERE tenant = ?1 AND job = ?2",
                [tenant, name],
                |row| {
                    Ok(FailureRow {
                        reason: row.get(0)?,
                        at_ms: row.get(1)?,
                        text: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantRow {
        TenantRow {
            name: name.into(),
            weight: 1,
            quotas: TenantQuotas::default(),
        }
    }

    fn component(name: &str, digest: &str) -> ComponentRow {
        ComponentRow {
            name: name.into(),
            digest: digest.into(),
            size: 3,
            functions: vec!["tokenize (flat_map)".into()],
        }
    }

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        Registry::open(&path).unwrap().add_token("h", None).unwrap();
        let again = Registry::open(&path).unwrap();
        assert!(again.has_admin().unwrap(), "reopening keeps the data");
        drop(again);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let error = format!("{:#}", Registry::open(&path).err().unwrap());
        assert!(error.contains("version 99, newer"), "{error}");
    }

    #[test]
    fn tokens_name_their_tenant_and_names_are_unique() {
        let registry = Registry::in_memory().unwrap();
        registry.add_token("admin", None).unwrap();
        assert!(registry.create_tenant(&tenant("a"), "ha").unwrap());
        assert!(!registry.create_tenant(&tenant("a"), "ha2").unwrap());
        assert_eq!(registry.caller("admin").unwrap(), Some(Caller::Admin));
        assert_eq!(
            registry.caller("ha").unwrap(),
            Some(Caller::Tenant("a".into()))
        );
        assert_eq!(registry.caller("ha2").unwrap(), None);
    }

    #[test]
    fn components_and_jobs_belong_to_one_tenant_and_go_with_it() {
        let registry = Registry::in_memory().unwrap();
        registry.create_tenant(&tenant("a"), "ha").unwrap();
        registry.create_tenant(&tenant("b"), "hb").unwrap();
        registry.put_component("a", &component("wc", "d1")).unwrap();
        registry.put_component("b", &component("wc", "d2")).unwrap();
        assert_eq!(registry.component("a", "wc").unwrap().unwrap().digest, "d1");
        let job = JobRow {
            tenant: "a".into(),
            name: "count".into(),
            manifest: "name = \"count\"".into(),
            desired: Desired::Running,
            error: None,
        };
        registry
            .put_job(&job, &[("wc".into(), "d1".into())])
            .unwrap();
        assert_eq!(registry.jobs_using("a", "wc").unwrap(), ["count"]);
        assert!(registry.jobs_using("b", "wc").unwrap().is_empty());
        registry
            .set_desired("a", "count", Desired::Failed, Some("boom"))
            .unwrap();
        let stored = registry.job("a", "count").unwrap().unwrap();
        assert_eq!(
            (stored.desired, stored.error.as_deref()),
            (Desired::Failed, Some("boom"))
        );
        assert!(registry.job("b", "count").unwrap().is_none());
        let failure = FailureRow {
            reason: "udf".into(),
            at_ms: 1_700_000_000_123,
            text: "three is not allowed".into(),
        };
        registry.set_last_failure("a", "count", &failure).unwrap();
        registry
            .put_job(&job, &[("wc".into(), "d1".into())])
            .unwrap();
        assert_eq!(
            registry.last_failure("a", "count").unwrap(),
            Some(failure.clone()),
            "a redeploy keeps the last failure"
        );
        assert_eq!(registry.last_failure("b", "count").unwrap(), None);
        assert!(registry.delete_tenant("a").unwrap());
        assert_eq!(registry.last_failure("a", "count").unwrap(), None);
        assert!(registry.jobs(None).unwrap().is_empty());
        assert!(!registry.digest_in_use("d1").unwrap());
        assert!(registry.digest_in_use("d2").unwrap());
        assert_eq!(registry.caller("ha").unwrap(), None);
    }
}
