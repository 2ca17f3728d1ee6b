//! Pre-instantiated instances of one operator's component, checked out for one call on
//! one partition and returned after it; an instance that trapped is dropped and replaced.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};

use super::{CallError, Limits, LoadedComponent, UdfInstance};
use crate::metrics::StepMeter;
use crate::tenancy::Placement;

/// The instances of one operator's UDF.
pub struct InstancePool {
    component: Arc<LoadedComponent>,
    owner: String,
    limits: Limits,
    placement: Placement,
    idle: Mutex<Vec<UdfInstance>>,
    /// The step's meter: its calls, their time and the instances' guest memory.
    meter: Arc<StepMeter>,
}

impl InstancePool {
    /// A pool with `warm` instances made up front, so the first batch pays no instantiation.
    /// Its instances count against, and its calls run for, the job's `placement`; its
    /// calls and guest memory are counted on `meter`.
    pub fn new(
        component: Arc<LoadedComponent>,
        owner: String,
        limits: Limits,
        placement: Placement,
        warm: usize,
        meter: Arc<StepMeter>,
    ) -> Result<Self> {
        let idle: Vec<UdfInstance> = (0..warm)
            .map(|_| component.instantiate(&owner, limits, &placement))
            .collect::<Result<_, _>>()
            .with_context(|| format!("UDF component {} for {owner}", component.path().display()))?;
        meter.memory(
            idle.iter()
                .map(|instance| instance.memory_bytes() as i64)
                .sum(),
        );
        Ok(Self {
            component,
            owner,
            limits,
            placement,
            idle: Mutex::new(idle),
            meter,
        })
    }

    /// The component the instances are of.
    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    /// Runs `call` on an idle instance (or a new one), and keeps the instance for later
    /// unless it trapped. The error is why no instance could be made. The call, its time,
    /// whether it failed and the memory it grew are counted on the pool's meter.
    pub fn with_instance<R, E>(
        &self,
        call: impl FnOnce(&mut UdfInstance) -> Result<R, E>,
    ) -> Result<Result<R, E>, CallError> {
        let idle = self.idle.lock().expect("instance pool poisoned").pop();
        let (mut instance, before) = match idle {
            Some(instance) => {
                let before = instance.memory_bytes();
                (instance, before)
            }
            None => (
                self.component
                    .instantiate(&self.owner, self.limits, &self.placement)
                    .inspect_err(|_| self.meter.call(Default::default(), true))?,
                0,
            ),
        };
        let started = Instant::now();
        let result = call(&mut instance);
        self.meter.call(started.elapsed(), result.is_err());
        // A trapped instance is dropped, and its memory with it.
        self.meter
            .memory(instance.memory_bytes() as i64 - before as i64);
        if instance.is_usable() {
            self.idle
                .lock()
                .expect("instance pool poisoned")
                .push(instance);
        }
        Ok(result)
    }
}
