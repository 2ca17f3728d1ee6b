//! Pre-instantiated instances of one operator's component, checked out for one call on
//! one partition and returned after it; an instance that trapped is dropped and replaced.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::{CallError, Limits, LoadedComponent, UdfInstance};
use crate::tenancy::Placement;

/// The instances of one operator's UDF.
pub struct InstancePool {
    component: Arc<LoadedComponent>,
    owner: String,
    limits: Limits,
    placement: Placement,
    idle: Mutex<Vec<UdfInstance>>,
}

impl InstancePool {
    /// A pool with `warm` instances made up front, so the first batch pays no instantiation.
    /// Its instances count against, and its calls run for, the job's `placement`.
    pub fn new(
        component: Arc<LoadedComponent>,
        owner: String,
        limits: Limits,
        placement: Placement,
        warm: usize,
    ) -> Result<Self> {
        let idle = (0..warm)
            .map(|_| component.instantiate(&owner, limits, &placement))
            .collect::<Result<_, _>>()
            .with_context(|| format!("UDF component {} for {owner}", component.path().display()))?;
        Ok(Self {
            component,
            owner,
            limits,
            placement,
            idle: Mutex::new(idle),
        })
    }

    /// The component the instances are of.
    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    /// Runs `call` on an idle instance (or a new one), and keeps the instance for later
    /// unless it trapped. The error is why no instance could be made.
    pub fn with_instance<R>(
        &self,
        call: impl FnOnce(&mut UdfInstance) -> R,
    ) -> Result<R, CallError> {
        let idle = self.idle.lock().expect("instance pool poisoned").pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self
                .component
                .instantiate(&self.owner, self.limits, &self.placement)?,
        };
        let result = call(&mut instance);
        if instance.is_usable() {
            self.idle
                .lock()
                .expect("instance pool poisoned")
                .push(instance);
        }
        Ok(result)
    }
}
