//! The server's configuration (`sluice serve --config server.toml`): the instance pool,
//! the quotas of tenants created without their own, the `host:port`s jobs may connect
//! to, and how failed jobs are restarted.
//!
//! ```toml
//! max_instances = 4096               # the pool shared by every job
//! allowed_hosts = ["127.0.0.1:9999"] # socket sources may connect only here (none by default)
//!
//! [default_quotas]                   # as `quotas` of POST /v1/tenants
//! max_jobs = 10
//! max_component_bytes = 67108864
//!
//! [restart]                          # Flink's failure-rate strategy
//! max_failures = 3                   # failures within `interval` before a job stays failed
//! interval = "10m"
//! first_delay = "1s"                 # doubled after each failure, up to `max_delay`
//! max_delay = "1m"
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::runtime::MAX_COMPONENT_BYTES;
use crate::tenancy::{DEFAULT_MAX_INSTANCES, MAX_INSTANCES, Quotas};

/// The server's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Instances alive at once across every job.
    pub max_instances: u32,
    /// The `host:port`s socket sources may connect to.
    pub allowed_hosts: Vec<String>,
    /// The quotas of a tenant where its own leave one out.
    pub default_quotas: TenantQuotas,
    /// How failed jobs are restarted.
    pub restart: RestartPolicy,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_instances: DEFAULT_MAX_INSTANCES,
            allowed_hosts: Vec::new(),
            default_quotas: TenantQuotas::default(),
            restart: RestartPolicy::default(),
        }
    }
}

/// How a failed job is restarted: after a delay doubling from `first_delay` up to
/// `max_delay`, unless it failed more than `max_failures` times within `interval`; then
/// it stays failed (Flink's failure-rate restart strategy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failures allowed within `interval`.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub interval: Duration,
    /// The delay before the first restart.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_failures: 3,
            interval: Duration::from_secs(600),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before restarting after the `failures`-th failure in the interval
    /// (counting from 1), or `None` when the job has failed too often and stays failed.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures > self.max_failures {
            return None;
        }
        let doubled = self
            .first_delay
            .saturating_mul(1 << failures.saturating_sub(1).min(20));
        Some(doubled.min(self.max_delay))
    }
}

/// A tenant's quotas as the API and the configuration write them (sizes in bytes,
/// durations in milliseconds); a quota left out is the server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    /// Jobs the tenant may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<u64>,
    /// Components the tenant may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_components: Option<u64>,
    /// The largest component it may upload, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_component_bytes: Option<u64>,
    /// The bytes its directory may hold: files, checkpoints and logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_disk_bytes: Option<u64>,
    /// Instances reserved for it in the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// The most memory one instance may have, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_per_instance: Option<u64>,
    /// The most guest memory of all its instances, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_total: Option<u64>,
    /// The longest call timeout a job may ask for, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_call_timeout_ms: Option<u64>,
    /// The most partitions a job may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_partitions: Option<u64>,
    /// The most records one guest call may return.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_call_output_records: Option<u64>,
    /// The most bytes one guest call may return.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_call_output_bytes: Option<u64>,
    /// The most records a batch may bring into a step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_records: Option<u64>,
}

/// Jobs a tenant may have unless its quotas say otherwise.
pub const DEFAULT_MAX_JOBS: u64 = 10;
/// Components a tenant may have unless its quotas say otherwise.
pub const DEFAULT_MAX_COMPONENTS: u64 = 100;
/// The largest component a tenant may upload unless its quotas say otherwise.
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 64 << 20;
/// The bytes a tenant's directory may hold unless its quotas say otherwise.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 1 << 30;

impl TenantQuotas {
    /// Each of these quotas, else the one of `defaults`.
    pub fn or(&self, defaults: &TenantQuotas) -> TenantQuotas {
        macro_rules! either {
            ($($field:ident),*) => {
                TenantQuotas { $($field: self.$field.or(defaults.$field)),* }
            };
        }
        either!(
            max_jobs,
            max_components,
            max_component_bytes,
            max_disk_bytes,
            max_instances,
            memory_per_instance,
            memory_total,
            max_call_timeout_ms,
            max_partitions,
            max_call_output_records,
            max_call_output_bytes,
            max_batch_records
        )
    }

    /// The jobs the tenant may have.
    pub fn jobs(&self) -> u64 {
        self.max_jobs.unwrap_or(DEFAULT_MAX_JOBS)
    }

    /// The components the tenant may have.
    pub fn components(&self) -> u64 {
        self.max_components.unwrap_or(DEFAULT_MAX_COMPONENTS)
    }

    /// The largest component the tenant may upload.
    pub fn component_bytes(&self) -> u64 {
        self.max_component_bytes
            .unwrap_or(DEFAULT_MAX_COMPONENT_BYTES)
            .min(MAX_COMPONENT_BYTES)
    }

    /// The bytes the tenant's directory may hold.
    pub fn disk_bytes(&self) -> u64 {
        self.max_disk_bytes.unwrap_or(DEFAULT_MAX_DISK_BYTES)
    }

    /// Refuses values no host can honour, naming the quota.
    pub fn check(&self) -> Result<()> {
        if let Some(bytes) = self.max_component_bytes
            && bytes > MAX_COMPONENT_BYTES
        {
            bail!(
                "quota `max_component_bytes` = {bytes} is over the most any component may be \
                 ({MAX_COMPONENT_BYTES} bytes)"
            );
        }
        if let Some(instances) = self.max_instances
            && !(1..=MAX_INSTANCES).contains(&instances)
        {
            bail!("quota `max_instances` = {instances} must be from 1 to {MAX_INSTANCES}");
        }
        Ok(())
    }

    /// The quotas the runtime enforces on the tenant's jobs (those the server does not
    /// set keep the runtime's defaults).
    pub fn runtime(&self) -> Quotas {
        let size = |value: Option<u64>| value.map(|value| value as usize);
        let mut quotas = Quotas {
            max_instances: self.max_instances,
            memory_per_instance: size(self.memory_per_instance),
            memory_total: size(self.memory_total),
            max_call_timeout: self.max_call_timeout_ms.map(Duration::from_millis),
            max_partitions: size(self.max_partitions),
            ..Quotas::default()
        };
        if let Some(records) = size(self.max_call_output_records) {
            quotas.max_call_output_records = records;
        }
        if let Some(bytes) = size(self.max_call_output_bytes) {
            quotas.max_call_output_bytes = bytes;
        }
        if let Some(records) = size(self.max_batch_records) {
            quotas.max_batch_records = records;
        }
        quotas
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSpec {
    max_instances: Option<u32>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    default_quotas: TenantQuotas,
    restart: Option<RestartSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartSpec {
    max_failures: Option<u32>,
    interval: Option<String>,
    first_delay: Option<String>,
    max_delay: Option<String>,
}

impl ServerConfig {
    /// Reads the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the server configuration {}", path.display()))?;
        Self::parse(&text)
            .with_context(|| format!("invalid server configuration {}", path.display()))
    }

    /// Parses a configuration.
    pub fn parse(text: &str) -> Result<Self> {
        let spec: ServerSpec = toml::from_str(text)?;
        let max_instances = spec.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
        if !(1..=MAX_INSTANCES).contains(&max_instances) {
            bail!("`max_instances` = {max_instances} must be from 1 to {MAX_INSTANCES}");
        }
        for host in &spec.allowed_hosts {
            if host
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                bail!("`allowed_hosts` entry `{host}` is not `host:port`");
            }
        }
        spec.default_quotas
            .check()
            .context("in `[default_quotas]`")?;
        let defaults = RestartPolicy::default();
        let restart = match spec.restart {
            None => defaults,
            Some(restart) => {
                let duration = |key: &str, value: Option<String>, default: Duration| {
                    value.map_or(Ok(default), |value| {
                        humantime::parse_duration(&value)
                            .with_context(|| format!("`restart.{key}` = \"{value}\""))
                    })
                };
                RestartPolicy {
                    max_failures: restart.max_failures.unwrap_or(defaults.max_failures),
                    interval: duration("interval", restart.interval, defaults.interval)?,
                    first_delay: duration(
                        "first_delay",
                        restart.first_delay,
                        defaults.first_delay,
                    )?,
                    max_delay: duration("max_delay", restart.max_delay, defaults.max_delay)?,
                }
            }
        };
        Ok(Self {
            max_instances,
            allowed_hosts: spec.allowed_hosts,
            default_quotas: spec.default_quotas,
            restart,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays_double_up_to_the_limit_then_stop() {
        let policy = RestartPolicy {
            max_failures: 4,
            interval: Duration::from_secs(600),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
        };
        let delays: Vec<_> = (1..=5).map(|failures| policy.delay(failures)).collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(delays, [secs(1), secs(2), secs(3), secs(3), None]);
    }

    #[test]
    fn reads_the_configuration_and_refuses_bad_values() {
        let config = ServerConfig::parse(
            "allowed_hosts = [\"127.0.0.1:9\"]\n[default_quotas]\nmax_jobs = 2\n\
             [restart]\nmax_failures = 1\nfirst_delay = \"10ms\"\n",
        )
        .unwrap();
        assert_eq!(config.allowed_hosts, ["127.0.0.1:9"]);
        assert_eq!(config.default_quotas.jobs(), 2);
        assert_eq!(config.restart.first_delay, Duration::from_millis(10));
        for (text, says) in [
            ("allowed_hosts = [\"nowhere\"]", "not `host:port`"),
            ("[default_quotas]\nmax_jobz = 1", "max_jobz"),
            ("[restart]\ninterval = \"soon\"", "restart.interval"),
        ] {
            let error = format!("{:#}", ServerConfig::parse(text).unwrap_err());
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_tenants_quotas_fall_back_to_the_defaults() {
        let own = TenantQuotas {
            max_jobs: Some(1),
            ..TenantQuotas::default()
        };
        let defaults = TenantQuotas {
            max_jobs: Some(5),
            max_partitions: Some(2),
            ..TenantQuotas::default()
        };
        let quotas = own.or(&defaults);
        assert_eq!((quotas.jobs(), quotas.max_partitions), (1, Some(2)));
        assert_eq!(quotas.runtime().max_partitions, Some(2));
    }
}
