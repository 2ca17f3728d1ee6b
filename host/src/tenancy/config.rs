//! The host configuration (`sluice run --host-config host.toml`): the instance pool and
//! the tenants, with their weights and quotas.
//!
//! ```toml
//! max_instances = 4096          # the pool, shared by every job (default 4096)
//!
//! [[tenants]]
//! name = "a"
//! weight = 1                    # CPU share against other tenants (default 1)
//! max_instances = 64            # a reservation in the pool
//! memory_per_instance = "256MiB"
//! memory_total = "2GiB"         # guest memory of all the tenant's instances
//! max_call_timeout = "10s"
//! max_partitions = 8
//! max_call_output_records = 1000000
//! max_call_output_bytes = "256MiB"
//! max_batch_records = 1000000
//! max_host_bytes = "512MiB"     # what its jobs hold (batches, state, buffers, logs)
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The default size of the host's instance pool. Each instance's memory slot reserves
/// 4 GiB plus guard pages of address space (reserved, not used): 4096 instances of two
/// memories each reserve about 33 TiB of the 128 TiB a 48-bit address space gives a
/// process, and a pool of about 12,000 instances is the ceiling (a reservation of 100 TiB
/// fails).
pub const DEFAULT_MAX_INSTANCES: u32 = 4096;

/// The most instances a host's pool may have (see [`DEFAULT_MAX_INSTANCES`]).
pub const MAX_INSTANCES: u32 = 12_000;

/// The host's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Instances alive at once across every job.
    pub max_instances: u32,
    /// The tenants; a job naming none runs for `default`, which shares what no tenant
    /// reserved.
    pub tenants: Vec<TenantConfig>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            max_instances: DEFAULT_MAX_INSTANCES,
            tenants: Vec::new(),
        }
    }
}

/// One tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    /// As manifests name it (`tenant = "a"`).
    pub name: String,
    /// Its share of the guest scheduler's cores against other tenants'.
    pub weight: u32,
    /// What its jobs may use.
    pub quotas: Quotas,
}

impl TenantConfig {
    /// A tenant of weight 1 with the default quotas.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            weight: 1,
            quotas: Quotas::default(),
        }
    }
}

/// A tenant's quotas; `None` is no quota of the tenant's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Quotas {
    /// Instances reserved for the tenant in the host's pool (none: it shares what no
    /// tenant reserved).
    pub max_instances: Option<u32>,
    /// The most memory a job may give one instance (`limits.memory`).
    pub memory_per_instance: Option<usize>,
    /// The most guest memory all the tenant's instances may hold together.
    pub memory_total: Option<usize>,
    /// The longest call timeout a job may ask for (`limits.call_timeout`).
    pub max_call_timeout: Option<Duration>,
    /// The most partitions a job may have.
    pub max_partitions: Option<usize>,
    /// The most records one guest call may return.
    pub max_call_output_records: usize,
    /// The most bytes of records one guest call may return.
    pub max_call_output_bytes: usize,
    /// The most records a batch may bring into any step of a job.
    pub max_batch_records: usize,
    /// The most host memory all the tenant's jobs may hold together: batches in flight
    /// (a batch's records as received and every step's output while it is computed),
    /// state and window stores, what receivers buffer until a cut, and the write-ahead
    /// log's segment files until a state checkpoint lets them go ([`super::HeldBytes`]).
    pub max_host_bytes: Option<usize>,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_instances: None,
            memory_per_instance: None,
            memory_total: None,
            max_call_timeout: None,
            max_partitions: None,
            max_call_output_records: 1_000_000,
            max_call_output_bytes: 256 << 20,
            max_batch_records: 1_000_000,
            max_host_bytes: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    max_instances: Option<u32>,
    #[serde(default)]
    tenants: Vec<TenantSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantSpec {
    name: String,
    weight: Option<u32>,
    max_instances: Option<u32>,
    memory_per_instance: Option<String>,
    memory_total: Option<String>,
    max_call_timeout: Option<String>,
    max_partitions: Option<usize>,
    max_call_output_records: Option<usize>,
    max_call_output_bytes: Option<String>,
    max_batch_records: Option<usize>,
    max_host_bytes: Option<String>,
}

impl HostConfig {
    /// Reads the host configuration at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the host configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid host configuration {}", path.display()))
    }

    /// Parses a host configuration.
    pub fn parse(text: &str) -> Result<Self> {
        let spec: HostSpec = toml::from_str(text)?;
        let max_instances = spec.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
        if !(1..=MAX_INSTANCES).contains(&max_instances) {
            bail!(
                "`max_instances` = {max_instances} is out of range: it must be from 1 to \
                 {MAX_INSTANCES} (each instance reserves over 8 GiB of address space)"
            );
        }
        let defaults = Quotas::default();
        let mut tenants: Vec<TenantConfig> = Vec::new();
        for tenant in spec.tenants {
            let name = tenant.name.trim().to_owned();
            if name.is_empty() || tenants.iter().any(|other| other.name == name) {
                bail!("tenant names must be given and unique: `{name}`");
            }
            let weight = tenant.weight.unwrap_or(1);
            if !(1..=1000).contains(&weight) {
                bail!("tenant `{name}`: `weight` = {weight} must be from 1 to 1000");
            }
            let size = |key: &str, value: Option<String>| -> Result<Option<usize>> {
                value
                    .map(|value| {
                        value
                            .parse::<bytesize::ByteSize>()
                            .map(|size| size.as_u64() as usize)
                            .map_err(|error| {
                                anyhow::anyhow!("tenant `{name}`: `{key}` = \"{value}\": {error}")
                            })
                    })
                    .transpose()
            };
            let quotas = Quotas {
                max_instances: tenant.max_instances,
                memory_per_instance: size("memory_per_instance", tenant.memory_per_instance)?,
                memory_total: size("memory_total", tenant.memory_total)?,
                max_call_timeout: tenant
                    .max_call_timeout
                    .map(|value| {
                        humantime::parse_duration(&value).map_err(|error| {
                            anyhow::anyhow!(
                                "tenant `{name}`: `max_call_timeout` = \"{value}\": {error}"
                            )
                        })
                    })
                    .transpose()?,
                max_partitions: tenant.max_partitions,
                max_call_output_records: tenant
                    .max_call_output_records
                    .unwrap_or(defaults.max_call_output_records),
                max_call_output_bytes: size("max_call_output_bytes", tenant.max_call_output_bytes)?
                    .unwrap_or(defaults.max_call_output_bytes),
                max_batch_records: tenant
                    .max_batch_records
                    .unwrap_or(defaults.max_batch_records),
                max_host_bytes: size("max_host_bytes", tenant.max_host_bytes)?,
            };
            tenants.push(TenantConfig {
                name,
                weight,
                quotas,
            });
        }
        Ok(Self {
            max_instances,
            tenants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tenants_with_their_weights_and_quotas() {
        let config = HostConfig::parse(
            "max_instances = 100\n[[tenants]]\nname = \"a\"\nweight = 3\nmax_instances = 10\n\
             memory_total = \"1GiB\"\nmax_call_timeout = \"2s\"\nmax_call_output_records = 5\n\
             max_host_bytes = \"512MiB\"\n\
             [[tenants]]\nname = \"b\"\n",
        )
        .unwrap();
        assert_eq!(config.max_instances, 100);
        let a = &config.tenants[0];
        assert_eq!((a.name.as_str(), a.weight), ("a", 3));
        assert_eq!(a.quotas.max_instances, Some(10));
        assert_eq!(a.quotas.memory_total, Some(1 << 30));
        assert_eq!(a.quotas.max_call_timeout, Some(Duration::from_secs(2)));
        assert_eq!(a.quotas.max_call_output_records, 5);
        assert_eq!(a.quotas.max_host_bytes, Some(512 << 20));
        assert_eq!(config.tenants[1].quotas, Quotas::default());
    }

    #[test]
    fn refuses_bad_values_naming_them() {
        for (text, says) in [
            ("max_instances = 0", "`max_instances` = 0 is out of range"),
            ("max_instances = 100000", "from 1 to 12000"),
            ("[[tenants]]\nname = \"a\"\nweight = 0", "`weight` = 0"),
            (
                "[[tenants]]\nname = \"a\"\n[[tenants]]\nname = \"a\"",
                "unique",
            ),
            (
                "[[tenants]]\nname = \"a\"\nmemory_total = \"lots\"",
                "`memory_total`",
            ),
            (
                "[[tenants]]\nname = \"a\"\nmax_host_bytes = \"12 parsecs\"",
                "`max_host_bytes`",
            ),
        ] {
            let error = format!("{:#}", HostConfig::parse(text).unwrap_err());
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
