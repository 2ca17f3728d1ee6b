//! A weighted fair queue of run slots: at most `slots` guest calls run at once, and when a
//! slot frees up it goes to the waiting tenant that has had the least CPU for its weight
//! (start-time fair queueing over per-tenant virtual time), first come first served
//! within a tenant.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The most run time, for its weight, a tenant coming back from idleness may be behind the
/// active tenants: two epoch ticks.
const IDLE_CREDIT: Duration = Duration::from_millis(20);

/// Identifies a tenant registered with a [`FairGate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantId(usize);

/// The run slots shared by every tenant.
#[derive(Clone)]
pub struct FairGate {
    inner: Arc<Mutex<GateState>>,
}

struct GateState {
    free: usize,
    tenants: Vec<TenantQueue>,
}

struct TenantQueue {
    name: String,
    weight: u32,
    /// Run time received, divided by the weight, in nanoseconds: the tenant whose virtual
    /// time is least is served next.
    virtual_ns: u128,
    /// Run time received in all.
    used: Duration,
    running: usize,
    waiters: VecDeque<oneshot::Sender<Slot>>,
}

impl TenantQueue {
    fn active(&self) -> bool {
        self.running > 0 || !self.waiters.is_empty()
    }
}

/// A run slot held by one guest call; dropping it charges the time held to the tenant and
/// hands the slot on.
pub struct Slot {
    gate: Arc<Mutex<GateState>>,
    tenant: TenantId,
    since: Instant,
}

impl FairGate {
    /// A gate of `slots` run slots.
    pub fn new(slots: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(GateState {
                free: slots.max(1),
                tenants: Vec::new(),
            })),
        }
    }

    /// Registers a tenant with its CPU `weight` (at least 1), or updates the weight of the
    /// tenant of that name.
    pub fn tenant(&self, name: &str, weight: u32) -> TenantId {
        let mut state = self.lock();
        if let Some(index) = state.tenants.iter().position(|tenant| tenant.name == name) {
            state.tenants[index].weight = weight.max(1);
            return TenantId(index);
        }
        state.tenants.push(TenantQueue {
            name: name.to_owned(),
            weight: weight.max(1),
            virtual_ns: 0,
            used: Duration::ZERO,
            running: 0,
            waiters: VecDeque::new(),
        });
        TenantId(state.tenants.len() - 1)
    }

    /// The tenant registered as `name`, if any.
    pub fn find(&self, name: &str) -> Option<TenantId> {
        let state = self.lock();
        let index = state
            .tenants
            .iter()
            .position(|tenant| tenant.name == name)?;
        Some(TenantId(index))
    }

    /// The run time `tenant`'s guest calls have held slots for.
    pub fn used(&self, tenant: TenantId) -> Duration {
        self.lock().tenants[tenant.0].used
    }

    /// Waits for a run slot for `tenant`, behind tenants that have had less for their
    /// weight. Dropping the future gives up the place in the queue.
    pub async fn acquire(&self, tenant: TenantId) -> Slot {
        self.enqueue(tenant).await
    }

    /// Takes a place in the queue for `tenant` now; the ticket resolves to the slot.
    pub fn enqueue(&self, tenant: TenantId) -> Ticket {
        let (sender, receiver) = oneshot::channel();
        let granted = {
            let mut state = self.lock();
            if !state.tenants[tenant.0].active() {
                // A tenant that was idle comes back at most `IDLE_CREDIT` behind the
                // active ones: idleness is not saved up to hold the cores later. (Some
                // credit is kept because a busy tenant is briefly idle between one call
                // giving its slot back and the next asking.)
                let floor = state
                    .tenants
                    .iter()
                    .filter(|other| other.active())
                    .map(|other| other.virtual_ns)
                    .min()
                    .unwrap_or(0);
                let queue = &mut state.tenants[tenant.0];
                queue.virtual_ns = queue
                    .virtual_ns
                    .max(floor.saturating_sub(IDLE_CREDIT.as_nanos()));
            }
            state.tenants[tenant.0].waiters.push_back(sender);
            state.dispatch(&self.inner)
        };
        hand_out(granted);
        Ticket(receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.inner.lock().expect("fair gate poisoned")
    }
}

impl GateState {
    /// Gives free slots to the waiters of the tenants with the least virtual time; the
    /// slots are sent once the lock is released.
    fn dispatch(&mut self, gate: &Arc<Mutex<GateState>>) -> Vec<(oneshot::Sender<Slot>, Slot)> {
        let mut granted = Vec::new();
        while self.free > 0 {
            let Some(next) = self
                .tenants
                .iter()
                .enumerate()
                .filter(|(_, tenant)| !tenant.waiters.is_empty())
                .min_by_key(|(_, tenant)| tenant.virtual_ns)
                .map(|(index, _)| index)
            else {
                break;
            };
            let queue = &mut self.tenants[next];
            let sender = queue.waiters.pop_front().expect("a tenant with waiters");
            if sender.is_closed() {
                continue;
            }
            queue.running += 1;
            self.free -= 1;
            granted.push((
                sender,
                Slot {
                    gate: gate.clone(),
                    tenant: TenantId(next),
                    since: Instant::now(),
                },
            ));
        }
        granted
    }
}

/// Sends granted slots outside the lock; a waiter that left meanwhile drops its slot,
/// which hands it on.
fn hand_out(granted: Vec<(oneshot::Sender<Slot>, Slot)>) {
    for (sender, slot) in granted {
        let _ = sender.send(slot);
    }
}

/// A place in the queue for a run slot; dropping it gives the place up.
pub struct Ticket(oneshot::Receiver<Slot>);

impl std::future::Future for Ticket {
    type Output = Slot;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Slot> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|slot| slot.expect("the gate hands every queued waiter a slot"))
    }
}

impl Slot {
    /// The tenant the slot runs for.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// How long the slot has been held.
    pub fn held_for(&self) -> Duration {
        self.since.elapsed()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        let granted = {
            let mut state = self.gate.lock().expect("fair gate poisoned");
            let queue = &mut state.tenants[self.tenant.0];
            queue.running -= 1;
            queue.used += held;
            queue.virtual_ns += held.as_nanos() / u128::from(queue.weight);
            state.free += 1;
            state.dispatch(&self.gate)
        };
        hand_out(granted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Charges `ns` nanoseconds of run time for `slot` and releases it, without sleeping.
    fn charge(mut slot: Slot, ns: u64) {
        slot.since = Instant::now() - Duration::from_nanos(ns);
    }

    /// With one slot and both tenants always waiting, who gets each of `rounds` slots of
    /// 1 ms each, starting with `holder` charged.
    async fn contest(gate: &FairGate, a: TenantId, b: TenantId, rounds: usize) -> Vec<TenantId> {
        let mut holder = gate.acquire(a).await;
        let mut waiting_a = gate.enqueue(a);
        let mut waiting_b = gate.enqueue(b);
        let mut grants = Vec::new();
        for _ in 0..rounds {
            charge(holder, 1_000_000);
            holder = tokio::select! {
                biased;
                slot = &mut waiting_a => {
                    waiting_a = gate.enqueue(a);
                    slot
                }
                slot = &mut waiting_b => {
                    waiting_b = gate.enqueue(b);
                    slot
                }
            };
            grants.push(holder.tenant());
        }
        grants
    }

    #[tokio::test]
    async fn slots_go_to_the_tenant_with_least_time_for_its_weight() {
        let gate = FairGate::new(1);
        let light = gate.tenant("light", 1);
        let heavy = gate.tenant("heavy", 3);
        let grants = contest(&gate, light, heavy, 400).await;
        let heavy_share = grants.iter().filter(|&&t| t == heavy).count();
        assert!(
            (290..=310).contains(&heavy_share),
            "weight 3 of 4 should get 3/4 of 400 slots, got {heavy_share}"
        );
        assert!(gate.used(heavy) >= Duration::from_millis(290));
    }

    #[tokio::test]
    async fn an_idle_tenant_saves_no_credit() {
        let gate = FairGate::new(1);
        let busy = gate.tenant("busy", 1);
        let late = gate.tenant("late", 1);
        for _ in 0..1000 {
            charge(gate.acquire(busy).await, 1_000_000);
        }
        // `busy` has had 1 s alone; `late` catches up 20 ms, then the two share evenly.
        let grants = contest(&gate, busy, late, 100).await;
        let late_share = grants.iter().filter(|&&t| t == late).count();
        assert!(
            (58..=62).contains(&late_share),
            "the newcomer gets 20 ms of credit, then half: {late_share} of 100"
        );
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_hands_its_slot_on() {
        let gate = FairGate::new(1);
        let tenant = gate.tenant("t", 1);
        let held = gate.acquire(tenant).await;
        let left = gate.enqueue(tenant);
        let stays = gate.enqueue(tenant);
        drop(left);
        drop(held);
        let slot = tokio::time::timeout(Duration::from_secs(5), stays).await;
        assert!(slot.is_ok(), "the slot passed over the waiter that left");
    }
}
