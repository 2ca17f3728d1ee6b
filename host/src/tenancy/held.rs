//! The host bytes a tenant's jobs hold: each job keeps its counts of the bytes it holds
//! now (its batch in flight, its state and window stores, its receivers' buffers, its
//! write-ahead log's files) up to date, and the tenant's total of its jobs' counts is held
//! to its `max_host_bytes` quota.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use bytesize::ByteSize;

use super::Account;

/// Bytes one job holds in one place, counted against its tenant's `max_host_bytes` (a job
/// keeps one count per place: its batch and state, its receivers' buffers, its log).
/// Dropping it (the job went away) gives them back.
pub struct HeldBytes {
    account: Arc<Account>,
    job: String,
    held: AtomicU64,
}

impl HeldBytes {
    /// A count of nothing held yet for job `job` of the tenant of `account`.
    pub fn new(account: Arc<Account>, job: &str) -> Self {
        Self {
            account,
            job: job.to_owned(),
            held: AtomicU64::new(0),
        }
    }

    /// Whether the tenant has a `max_host_bytes` quota (without one, what a job holds is
    /// counted but nothing is refused, and sizes that cost time to measure need not be).
    pub fn is_limited(&self) -> bool {
        self.account.quotas().max_host_bytes.is_some()
    }

    /// Records that the job now holds `bytes` (`holding`: what they are, for the error).
    /// Fails when the tenant's jobs then hold more than its `max_host_bytes`; the bytes
    /// stay counted until the job holds less or goes away.
    pub fn hold(&self, bytes: u64, holding: &str) -> Result<()> {
        let before = self.held.swap(bytes, Ordering::SeqCst);
        let total = if bytes >= before {
            self.account
                .host_bytes
                .fetch_add(bytes - before, Ordering::SeqCst)
                + (bytes - before)
        } else {
            self.account
                .host_bytes
                .fetch_sub(before - bytes, Ordering::SeqCst)
                - (before - bytes)
        };
        if bytes > before {
            self.check(total, bytes, holding)?;
        }
        Ok(())
    }

    /// A count of its own for the same job, starting at nothing held.
    pub fn another(&self) -> Self {
        Self::new(self.account.clone(), &self.job)
    }

    /// Records that the job holds `bytes` more (`holding`: what they are, for the error).
    /// Fails, counting nothing, when the tenant's jobs would then hold more than its
    /// `max_host_bytes`: the caller refuses what it was about to keep.
    pub fn charge(&self, bytes: u64, holding: &str) -> Result<()> {
        let held = self.held.fetch_add(bytes, Ordering::SeqCst) + bytes;
        let total = self.account.host_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.check(total, held, holding).inspect_err(|_| {
            self.release(bytes);
        })
    }

    /// Records that the job no longer holds `bytes` it was charged.
    pub fn release(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::SeqCst);
        self.account.host_bytes.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// Fails when `total`, what the tenant's jobs hold with this count's `held`, is over
    /// the tenant's `max_host_bytes`.
    fn check(&self, total: u64, held: u64, holding: &str) -> Result<()> {
        let Some(quota) = self.account.quotas().max_host_bytes else {
            return Ok(());
        };
        if total > quota as u64 {
            return Err(crate::failure::Failing::quota(format!(
                "job `{}` is over a quota of tenant `{}`: `max_host_bytes` is {quota} bytes \
                 ({}), and its jobs would hold {total} bytes ({}), {held} of them this job's \
                 {holding}; lower the job's batch sizes or state, or raise the quota in the host \
                 configuration",
                self.job,
                self.account.name(),
                ByteSize(quota as u64).display().iec(),
                ByteSize(total).display().iec(),
            )));
        }
        Ok(())
    }

    /// The bytes the job holds now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.account
            .host_bytes
            .fetch_sub(*self.held.get_mut(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::{HostConfig, Quotas, Tenancy, TenantConfig};

    fn account(max_host_bytes: Option<usize>) -> Arc<Account> {
        let tenancy = Tenancy::new(&HostConfig {
            max_instances: 10,
            tenants: vec![TenantConfig {
                quotas: Quotas {
                    max_host_bytes,
                    ..Quotas::default()
                },
                ..TenantConfig::named("t")
            }],
        })
        .unwrap();
        tenancy.tenants.lock().unwrap()["t"].clone()
    }

    #[test]
    fn a_tenants_jobs_hold_together_up_to_the_quota() {
        let account = account(Some(1000));
        let (a, b) = (
            HeldBytes::new(account.clone(), "a"),
            HeldBytes::new(account.clone(), "b"),
        );
        a.hold(600, "batch in flight").unwrap();
        b.hold(300, "state").unwrap();
        assert_eq!(account.host_bytes(), 900);
        let error = b.hold(500, "batch in flight").unwrap_err().to_string();
        assert!(
            error.contains("job `b` is over a quota of tenant `t`")
                && error.contains("`max_host_bytes` is 1000 bytes")
                && error.contains("would hold 1100 bytes")
                && error.contains("500 of them this job's batch in flight"),
            "{error}"
        );
        // Holding less is always allowed, and frees room for the neighbour.
        a.hold(100, "state").unwrap();
        b.hold(500, "batch in flight").unwrap();
        assert_eq!(account.host_bytes(), 600);
        drop(b);
        assert_eq!(account.host_bytes(), 100);
        drop(a);
        assert_eq!(account.host_bytes(), 0);
    }

    #[test]
    fn a_charge_over_the_quota_counts_nothing_and_a_release_frees_room() {
        let account = account(Some(1000));
        let (batch, buffers) = (
            HeldBytes::new(account.clone(), "j"),
            HeldBytes::new(account.clone(), "j"),
        );
        batch.hold(500, "batch in flight").unwrap();
        buffers.charge(300, "receiver buffers").unwrap();
        buffers.charge(100, "receiver buffers").unwrap();
        let error = buffers
            .charge(200, "receiver buffers")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`max_host_bytes` is 1000 bytes")
                && error.contains("would hold 1100 bytes")
                && error.contains("600 of them this job's receiver buffers"),
            "{error}"
        );
        assert_eq!((buffers.held(), account.host_bytes()), (400, 900));
        buffers.release(300);
        buffers.charge(200, "receiver buffers").unwrap();
        assert_eq!((buffers.held(), account.host_bytes()), (300, 800));
        drop(buffers);
        assert_eq!(account.host_bytes(), 500);
    }

    #[test]
    fn without_a_quota_bytes_are_counted_and_never_refused() {
        let account = account(None);
        let job = HeldBytes::new(account.clone(), "j");
        assert!(!job.is_limited());
        job.hold(u64::from(u32::MAX), "batch in flight").unwrap();
        assert_eq!(account.host_bytes(), u64::from(u32::MAX));
        assert_eq!(job.held(), u64::from(u32::MAX));
    }
}
