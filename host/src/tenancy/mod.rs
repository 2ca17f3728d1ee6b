//! Tenants of a shared host: each has a name, a CPU weight (its share of the guest
//! scheduler's cores, [`crate::scheduler`]) and quotas, and every job belongs to one. A
//! host's configuration (`sluice run --host-config host.toml`) defines them; a job's
//! manifest names its tenant (`tenant = "a"`), or runs for the host's `default` tenant.
//!
//! A tenant's instance quota is a reservation in the host's pool: the reservations of all
//! tenants must fit in it, and the instances left over are shared by the tenants without
//! one. A tenant's jobs also count the host memory they hold against its
//! `max_host_bytes` ([`HeldBytes`]). Every quota a job goes over fails that job, with an error naming the quota and
//! its value; its neighbours keep running.

mod config;
mod held;

pub use config::{DEFAULT_MAX_INSTANCES, HostConfig, MAX_INSTANCES, Quotas, TenantConfig};
pub use held::HeldBytes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};

use crate::manifest::JobConfig;
use crate::runtime::{CallError, Footprint, Limit};
use crate::scheduler::{Scheduler, Seat};

/// The name of the tenant of jobs that name none.
pub const DEFAULT_TENANT: &str = "default";

/// The tenants of a host and what each holds.
pub struct Tenancy {
    max_instances: u32,
    tenants: Mutex<HashMap<String, Arc<Account>>>,
    /// The instances no tenant reserved, shared by the tenants without a reservation.
    rest: Arc<SharedRest>,
}

/// The part of the pool no tenant reserved.
#[derive(Default)]
struct SharedRest {
    size: AtomicUsize,
    in_use: AtomicUsize,
}

/// One tenant's quotas and what its jobs hold now.
pub struct Account {
    config: TenantConfig,
    /// Instances the tenant's jobs hold.
    instances: AtomicUsize,
    /// The pool slots those instances take ([`Footprint::slots`]).
    slots: AtomicUsize,
    /// Guest linear memory the tenant's instances hold, in bytes.
    memory: AtomicU64,
    /// Host memory the tenant's jobs hold, in bytes ([`HeldBytes`]).
    host_bytes: AtomicU64,
    /// The unreserved instances, for a tenant without a reservation.
    shared: Option<Arc<SharedRest>>,
}

/// Where a job runs: its tenant's account and its seat on the guest scheduler.
#[derive(Clone)]
pub struct Placement {
    /// The job's place in the fair queue, and its forced stop.
    pub seat: Seat,
    /// The tenant's quotas and holdings.
    pub account: Arc<Account>,
    /// The job's name, which its guests' output is logged under (`None`: the host's
    /// own calls).
    pub job: Option<Arc<str>>,
}

impl Tenancy {
    /// The tenants of `config`, each registered with the scheduler at its weight. Refused
    /// when their instance reservations do not fit in the pool together.
    pub fn new(config: &HostConfig) -> Result<Self> {
        let tenancy = Self {
            max_instances: config.max_instances,
            tenants: Mutex::new(HashMap::new()),
            rest: Arc::new(SharedRest::default()),
        };
        tenancy
            .rest
            .size
            .store(config.max_instances as usize, Ordering::SeqCst);
        for tenant in &config.tenants {
            tenancy.add(tenant.clone())?;
        }
        Ok(tenancy)
    }

    /// Adds (or replaces) a tenant. A tenant whose instance reservation no longer fits
    /// in the pool, next to the other tenants' reservations, is refused.
    pub fn add(&self, tenant: TenantConfig) -> Result<()> {
        let mut tenants = self.tenants.lock().expect("tenants poisoned");
        let reservable = self.reservable_among(&tenants, &tenant.name);
        if let Some(quota) = tenant.quotas.max_instances
            && quota > reservable
        {
            bail!(
                "tenant `{}` is refused: its instance quota (`max_instances` = {quota}) does \
                 not fit in the host's pool of {} instances, {} of which other tenants \
                 have reserved; lower the quota or raise the host's `max_instances`",
                tenant.name,
                self.max_instances,
                self.max_instances - reservable
            );
        }
        let shared = tenant
            .quotas
            .max_instances
            .is_none()
            .then(|| self.rest.clone());
        tenants.insert(
            tenant.name.clone(),
            Arc::new(Account {
                config: tenant,
                instances: AtomicUsize::new(0),
                slots: AtomicUsize::new(0),
                memory: AtomicU64::new(0),
                host_bytes: AtomicU64::new(0),
                shared,
            }),
        );
        self.resize_rest(&tenants);
        Ok(())
    }

    /// Removes a tenant whose jobs have stopped: its instance reservation goes back to
    /// the part of the pool tenants share.
    pub fn remove(&self, name: &str) {
        let mut tenants = self.tenants.lock().expect("tenants poisoned");
        tenants.remove(name);
        self.resize_rest(&tenants);
    }

    /// The most instances tenant `name` could reserve: the pool less the other tenants'
    /// reservations.
    pub fn reservable(&self, name: &str) -> u32 {
        self.reservable_among(&self.tenants.lock().expect("tenants poisoned"), name)
    }

    fn reservable_among(&self, tenants: &HashMap<String, Arc<Account>>, name: &str) -> u32 {
        u64::from(self.max_instances).saturating_sub(reserved(tenants, Some(name))) as u32
    }

    /// Sizes the shared part of the pool: what the tenants' reservations leave.
    fn resize_rest(&self, tenants: &HashMap<String, Arc<Account>>) {
        self.rest.size.store(
            u64::from(self.max_instances).saturating_sub(reserved(tenants, None)) as usize,
            Ordering::SeqCst,
        );
    }

    /// Places a job: checks it against its tenant's quotas (partitions, call timeout,
    /// memory per instance) and gives it a seat on `scheduler`. A job naming a tenant the
    /// host does not have is refused; one naming none runs for [`DEFAULT_TENANT`].
    pub fn place(
        &self,
        job: &JobConfig,
        scheduler: &Scheduler,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Placement> {
        let name = job.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        let account = {
            let mut tenants = self.tenants.lock().expect("tenants poisoned");
            match tenants.get(name) {
                Some(account) => account.clone(),
                None if name == DEFAULT_TENANT => {
                    drop(tenants);
                    self.add(TenantConfig::named(DEFAULT_TENANT))?;
                    tenants = self.tenants.lock().expect("tenants poisoned");
                    tenants[DEFAULT_TENANT].clone()
                }
                None => {
                    let mut known: Vec<&str> = tenants.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(crate::failure::Failing::new(
                        crate::failure::FailureKind::Manifest,
                        format!(
                            "job `{}` names tenant `{name}`, which this host does not have (it \
                             has: {}); define it in the host configuration (`--host-config`)",
                            job.name,
                            known.join(", ")
                        ),
                    )
                    .into());
                }
            }
        };
        account.admit(job)?;
        Ok(Placement {
            seat: scheduler.seat(name, account.config.weight, stop),
            account,
            job: Some(job.name.as_str().into()),
        })
    }
}

/// The instances `tenants` reserve in the pool, but for tenant `except`.
fn reserved(tenants: &HashMap<String, Arc<Account>>, except: Option<&str>) -> u64 {
    tenants
        .values()
        .filter(|tenant| Some(tenant.config.name.as_str()) != except)
        .filter_map(|tenant| tenant.config.quotas.max_instances)
        .map(u64::from)
        .sum()
}

impl Tenancy {
    /// The account of tenant `name`: its quotas and what its jobs hold now.
    pub fn account(&self, name: &str) -> Option<Arc<Account>> {
        self.tenants
            .lock()
            .expect("tenants poisoned")
            .get(name)
            .cloned()
    }

    /// A placement for the host's own calls, for tenant `name`.
    pub(crate) fn place_host(&self, name: &str, scheduler: &Scheduler) -> Result<Placement> {
        let account = self.tenants.lock().expect("tenants poisoned")[name].clone();
        Ok(Placement {
            seat: scheduler.seat(name, account.config.weight, Default::default()),
            account,
            job: None,
        })
    }
}

impl Account {
    /// The tenant's quotas.
    pub fn quotas(&self) -> &Quotas {
        &self.config.quotas
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn admit(&self, job: &JobConfig) -> Result<()> {
        let quotas = &self.config.quotas;
        let over = |quota: &str, value: String, asked: String| {
            crate::failure::Failing::quota(format!(
                "job `{}` is over a quota of tenant `{}`: `{quota}` is {value}, and the job asks \
                 for {asked}",
                job.name, self.config.name
            ))
        };
        if let Some(max) = quotas.max_partitions
            && job.partitions > max
        {
            return Err(over(
                "max_partitions",
                max.to_string(),
                format!("{} partitions", job.partitions),
            ));
        }
        if let Some(max) = quotas.max_call_timeout
            && job.limits.call_timeout > max
        {
            return Err(over(
                "max_call_timeout",
                format!("{} ms", max.as_millis()),
                format!(
                    "a call timeout of {} ms",
                    job.limits.call_timeout.as_millis()
                ),
            ));
        }
        if let Some(max) = quotas.memory_per_instance
            && job.limits.memory_bytes > max
        {
            return Err(over(
                "memory_per_instance",
                format!("{} MiB", max >> 20),
                format!("{} MiB per instance", job.limits.memory_bytes >> 20),
            ));
        }
        Ok(())
    }

    /// Takes the pool slots one instance of a component of `footprint` takes from the
    /// tenant's quota (or the shared remainder of the pool); the hold gives them back
    /// when dropped. Quotas and the pool count slots, so that a large component (a
    /// Python one) is refused here, by name, before the pooling allocator runs out.
    pub fn hold_instance(
        self: &Arc<Self>,
        footprint: &Footprint,
    ) -> Result<InstanceHold, CallError> {
        let slots = footprint.slots() as usize;
        let quota = self.config.quotas.max_instances;
        self.instances.fetch_add(1, Ordering::SeqCst);
        let taken = self.slots.fetch_add(slots, Ordering::SeqCst);
        let (in_use, limit) = match (&self.shared, quota) {
            (Some(rest), _) => (
                rest.in_use.fetch_add(slots, Ordering::SeqCst),
                rest.size.load(Ordering::SeqCst),
            ),
            (None, quota) => (taken, quota.unwrap_or(u32::MAX) as usize),
        };
        let hold = InstanceHold {
            account: self.clone(),
            shared: self.shared.clone(),
            slots,
        };
        if in_use + slots > limit {
            drop(hold);
            let takes = if slots > 1 {
                format!(
                    "an instance of this component takes {slots} slots of the host's instance \
                     pool (it has {footprint}, where one slot holds {}), and ",
                    Footprint::SLOT
                )
            } else {
                String::new()
            };
            let message = match quota {
                Some(quota) => format!(
                    "could not be instantiated: {takes}tenant `{}` holds {} instance quota \
                     (`max_instances` = {quota}); stop some of its jobs or raise its quota in \
                     the host configuration",
                    self.config.name,
                    if in_use >= limit {
                        "its whole".to_owned()
                    } else {
                        format!("{in_use} slots of its")
                    }
                ),
                None => format!(
                    "could not be instantiated: {takes}{} of the {limit} instance slots of the \
                     host's pool not reserved by tenants are in use; no job may use another tenant's \
                     reservation, so give tenant `{}` a quota (`max_instances`) or raise the \
                     host's `max_instances`",
                    if in_use >= limit {
                        "all".to_owned()
                    } else {
                        in_use.to_string()
                    },
                    self.config.name
                ),
            };
            return Err(CallError::Limit {
                limit: Limit::TenantInstances,
                message,
                record_index: None,
            });
        }
        Ok(hold)
    }

    /// Asks for `grow` more bytes of guest memory for the tenant; `false` when that would
    /// pass its `memory_total`, which then names itself in the error.
    pub fn grow_memory(&self, grow: u64) -> bool {
        let Some(total) = self.config.quotas.memory_total else {
            self.memory.fetch_add(grow, Ordering::SeqCst);
            return true;
        };
        let before = self.memory.fetch_add(grow, Ordering::SeqCst);
        if before + grow > total as u64 {
            self.memory.fetch_sub(grow, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Gives back `bytes` of guest memory (an instance went away).
    pub fn release_memory(&self, bytes: u64) {
        self.memory.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// The guest memory the tenant's instances hold now, in bytes.
    pub fn memory(&self) -> u64 {
        self.memory.load(Ordering::SeqCst)
    }

    /// The host memory the tenant's jobs hold now, in bytes.
    pub fn host_bytes(&self) -> u64 {
        self.host_bytes.load(Ordering::SeqCst)
    }

    /// The instances the tenant's jobs hold now.
    pub fn instances(&self) -> usize {
        self.instances.load(Ordering::SeqCst)
    }

    /// The pool slots the tenant's instances take now ([`Footprint::slots`]).
    pub fn slots(&self) -> usize {
        self.slots.load(Ordering::SeqCst)
    }
}

/// One instance counted against its tenant; dropping it gives the instance, and the
/// pool slots it takes, back.
pub struct InstanceHold {
    account: Arc<Account>,
    shared: Option<Arc<SharedRest>>,
    slots: usize,
}

impl Drop for InstanceHold {
    fn drop(&mut self) {
        self.account.instances.fetch_sub(1, Ordering::SeqCst);
        self.account.slots.fetch_sub(self.slots, Ordering::SeqCst);
        if let Some(rest) = &self.shared {
            rest.in_use.fetch_sub(self.slots, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component that fits one slot, and one (like a Python one) that takes two.
    const RUST: Footprint = Footprint {
        core_instances: 3,
        memories: 1,
        tables: 2,
    };
    const PYTHON: Footprint = Footprint {
        core_instances: 14,
        memories: 1,
        tables: 1,
    };

    fn tenant(name: &str, max_instances: Option<u32>) -> TenantConfig {
        TenantConfig {
            quotas: Quotas {
                max_instances,
                ..Quotas::default()
            },
            ..TenantConfig::named(name)
        }
    }

    fn host(max_instances: u32, tenants: Vec<TenantConfig>) -> Result<Tenancy> {
        Tenancy::new(&HostConfig {
            max_instances,
            tenants,
        })
    }

    #[test]
    fn reservations_must_fit_in_the_pool() {
        let tenancy = host(10, vec![tenant("a", Some(6))]).unwrap();
        let error = tenancy.add(tenant("b", Some(5))).unwrap_err().to_string();
        assert!(
            error.contains("tenant `b` is refused")
                && error.contains("`max_instances` = 5")
                && error.contains("6 of which"),
            "{error}"
        );
        tenancy.add(tenant("b", Some(4))).unwrap();
    }

    #[test]
    fn a_removed_tenant_gives_its_reservation_back() {
        let tenancy = host(10, vec![tenant("a", Some(10)), tenant("c", None)]).unwrap();
        assert_eq!(tenancy.reservable("b"), 0);
        let shared = tenancy.account("c").unwrap();
        assert!(
            shared.hold_instance(&RUST).is_err(),
            "a reserved the whole pool"
        );
        tenancy.remove("a");
        assert_eq!(tenancy.reservable("b"), 10);
        let _held = shared.hold_instance(&RUST).unwrap();
        tenancy.add(tenant("b", Some(9))).unwrap();
        assert_eq!(tenancy.reservable("a"), 1);
    }

    #[test]
    fn no_tenant_uses_another_tenants_reservation() {
        let tenancy = host(4, vec![tenant("a", Some(3)), tenant("b", None)]).unwrap();
        let accounts = tenancy.tenants.lock().unwrap().clone();
        let (a, b) = (&accounts["a"], &accounts["b"]);
        let held_b = b.hold_instance(&RUST).unwrap();
        let refused = b.hold_instance(&RUST).err().unwrap().to_string();
        assert!(refused.contains("not reserved by tenants"), "{refused}");
        let held_a: Vec<_> = (0..3).map(|_| a.hold_instance(&RUST).unwrap()).collect();
        let refused = a.hold_instance(&RUST).err().unwrap().to_string();
        assert!(
            refused.contains("tenant `a` holds its whole instance quota (`max_instances` = 3)"),
            "{refused}"
        );
        drop(held_a);
        drop(held_b);
        assert_eq!((a.instances(), b.instances()), (0, 0));
        let _again = b.hold_instance(&RUST).unwrap();
    }

    #[test]
    fn an_instance_holds_the_slots_its_component_takes() {
        let tenancy = host(7, vec![tenant("a", Some(5)), tenant("b", None)]).unwrap();
        let (a, b) = (tenancy.account("a").unwrap(), tenancy.account("b").unwrap());
        // Tenant a: two Python instances (4 slots) and a Rust one fill its quota of 5.
        let python: Vec<_> = (0..2).map(|_| a.hold_instance(&PYTHON).unwrap()).collect();
        let refused = a.hold_instance(&PYTHON).err().unwrap().to_string();
        assert!(
            refused.contains("takes 2 slots of the host's instance pool")
                && refused.contains("it has 14 core instances, 1 memories and 1 tables")
                && refused.contains("one slot holds 8 core instances, 2 memories and 4 tables")
                && refused.contains("tenant `a` holds 4 slots of its instance quota"),
            "{refused}"
        );
        let rust = a.hold_instance(&RUST).unwrap();
        assert_eq!((a.instances(), a.slots()), (3, 5));
        // The shared rest (2 slots) takes one Python instance, or two Rust ones.
        let shared = b.hold_instance(&PYTHON).unwrap();
        let refused = b.hold_instance(&RUST).err().unwrap().to_string();
        assert!(refused.contains("all of the 2 instance slots"), "{refused}");
        drop(shared);
        let both = [
            b.hold_instance(&RUST).unwrap(),
            b.hold_instance(&RUST).unwrap(),
        ];
        drop((python, rust, both));
        assert_eq!((a.instances(), a.slots(), b.slots()), (0, 0, 0));
    }

    #[test]
    fn memory_is_counted_per_tenant_up_to_its_total() {
        let account = Account {
            config: TenantConfig {
                quotas: Quotas {
                    memory_total: Some(100),
                    ..Quotas::default()
                },
                ..TenantConfig::named("m")
            },
            instances: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            memory: AtomicU64::new(0),
            host_bytes: AtomicU64::new(0),
            shared: None,
        };
        assert!(account.grow_memory(60));
        assert!(!account.grow_memory(41));
        assert_eq!(account.memory(), 60);
        account.release_memory(60);
        assert!(account.grow_memory(100));
    }
}
