//! How a UDF call fails, with wasmtime's errors retold in the job's terms: which limit
//! stopped the call and the manifest key that raises it, or what the guest did wrong.

use wasmtime::{PoolConcurrencyLimitError, Trap};

use super::instance::Limits;
use crate::scheduler::Stopped;

/// A limit that stopped a call or an instantiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The most linear memory an instance may have (`limits.memory`).
    Memory,
    /// The longest one call may run (`limits.call_timeout`).
    CallTimeout,
    /// The most bytes one call may carry from the guest to the host (`limits.transfer`).
    Transfer,
    /// The host's pool of instances, shared by all its jobs, is full.
    InstancePool,
    /// The component needs more than one instance slot of the host holds (core
    /// instances, memories, tables or instance state): a quota of the host, not of the job.
    InstanceSlot,
    /// The tenant's instance quota, or the part of the pool no tenant reserved
    /// (`max_instances` in the host configuration).
    TenantInstances,
    /// The tenant's guest memory in all (`memory_total` in the host configuration).
    TenantMemory,
    /// The most records one call may return (`max_call_output_records`).
    CallOutputRecords,
    /// The most bytes of records one call may return (`max_call_output_bytes`).
    CallOutputBytes,
}

impl Limit {
    /// The manifest key that raises the limit; `None` for the host's own limits.
    pub fn key(self) -> Option<&'static str> {
        match self {
            Limit::Memory => Some("limits.memory"),
            Limit::CallTimeout => Some("limits.call_timeout"),
            Limit::Transfer => Some("limits.transfer"),
            Limit::InstancePool
            | Limit::InstanceSlot
            | Limit::TenantInstances
            | Limit::TenantMemory
            | Limit::CallOutputRecords
            | Limit::CallOutputBytes => None,
        }
    }
}

/// A call into a UDF that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The function returned an error (say, a record it cannot decode); the instance is fine.
    Failed {
        /// The guest's explanation, cut to the job's output limit.
        message: String,
        /// The record being processed, where known.
        record_index: Option<u32>,
    },
    /// The instance trapped (a panic, a guest bug) and cannot be called again.
    Trapped {
        /// What happened, with the guest's panic message if it panicked.
        message: String,
        /// The record being processed, where known.
        record_index: Option<u32>,
    },
    /// The function answered something the contract does not allow: a wrong number of
    /// results, a malformed record, or one nested deeper than the encoding allows. The
    /// component is faulty, or was not built with the Sluice SDK.
    Invalid {
        /// What is wrong, with the expected and actual counts or the bad result.
        message: String,
        /// The input record the bad answer belongs to, where it can be told.
        record_index: Option<u32>,
    },
    /// A limit stopped the call, or kept the instance from being made.
    Limit {
        /// Which one.
        limit: Limit,
        /// What happened, naming the limit's value and the key that raises it.
        message: String,
        /// The record being processed, where known.
        record_index: Option<u32>,
    },
    /// The host stopped the call for a reason of its own (its job was stopped by force,
    /// or the host's code running it failed): no record of the input is to blame.
    Stopped {
        /// Why.
        message: String,
    },
}

impl CallError {
    /// The record being processed when the call failed, where known.
    pub fn record_index(&self) -> Option<u32> {
        match self {
            CallError::Failed { record_index, .. }
            | CallError::Trapped { record_index, .. }
            | CallError::Invalid { record_index, .. }
            | CallError::Limit { record_index, .. } => *record_index,
            CallError::Stopped { .. } => None,
        }
    }

    /// The same error for a call whose input started at record `first` of its partition.
    pub fn shifted(mut self, first: usize) -> Self {
        if let Some(index) = self.record_index_mut() {
            *index = index.map(|index| index + first as u32);
        }
        self
    }

    fn record_index_mut(&mut self) -> Option<&mut Option<u32>> {
        match self {
            CallError::Failed { record_index, .. }
            | CallError::Trapped { record_index, .. }
            | CallError::Invalid { record_index, .. }
            | CallError::Limit { record_index, .. } => Some(record_index),
            CallError::Stopped { .. } => None,
        }
    }

    /// Whether the guest's own run stopped the call without telling which record it was
    /// working on: a trap (its memory limit, its stack, a guest bug) or the call timeout.
    /// Running the records again one at a time can tell ([`CallError::is_like`]).
    pub fn wants_record(&self) -> bool {
        match self {
            CallError::Trapped { record_index, .. } => record_index.is_none(),
            CallError::Limit {
                limit: Limit::Memory | Limit::TenantMemory | Limit::CallTimeout,
                record_index,
                ..
            } => record_index.is_none(),
            _ => false,
        }
    }

    /// Whether `other` is the same kind of failure (the same variant and limit): a record
    /// that fails alone as the whole call failed is the one that failed it.
    pub fn is_like(&self, other: &CallError) -> bool {
        match (self, other) {
            (CallError::Limit { limit, .. }, CallError::Limit { limit: other, .. }) => {
                limit == other
            }
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }

    /// The same error, blamed on record `index` of the call's input.
    pub fn at_record(mut self, index: usize) -> Self {
        if let Some(record_index) = self.record_index_mut() {
            *record_index = Some(index as u32);
        }
        self
    }

    /// The same error, saying that it came while the call worked on records `first` to
    /// `last` of its partition, and that none of them failed when run alone.
    pub fn within_records(mut self, first: usize, last: usize) -> Self {
        let (CallError::Failed { message, .. }
        | CallError::Trapped { message, .. }
        | CallError::Invalid { message, .. }
        | CallError::Limit { message, .. }
        | CallError::Stopped { message }) = &mut self;
        message.push_str(&format!(
            "; it was working on records {first} to {last} of its partition, and none of them \
             failed when run again alone (the function keeps state from record to record?)"
        ));
        self
    }

    /// The function answered `message`'s contract breach about input record `record_index`.
    pub(crate) fn invalid(message: String, record_index: Option<usize>) -> Self {
        CallError::Invalid {
            message,
            record_index: record_index.map(|index| index as u32),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (CallError::Failed { message, .. }
        | CallError::Trapped { message, .. }
        | CallError::Invalid { message, .. }
        | CallError::Limit { message, .. }
        | CallError::Stopped { message }) = self;
        f.write_str(message)
    }
}

impl std::error::Error for CallError {}

/// What the guest's store saw before a call or an instantiation failed.
pub(super) struct Witness {
    /// The panic the guest reported, with its record.
    pub panic: Option<(String, Option<u32>)>,
    /// The size the guest's memory was refused growing to.
    pub refused_memory: Option<usize>,
    /// The tenant whose `memory_total` refused the guest's memory, with that quota.
    pub refused_tenant_memory: Option<(String, usize)>,
}

/// The tenant's guest memory quota, if that is what refused a growth.
fn tenant_memory(seen: &Witness) -> Option<CallError> {
    seen.refused_tenant_memory
        .as_ref()
        .map(|(tenant, quota)| CallError::Limit {
            limit: Limit::TenantMemory,
            message: format!(
                "could not grow its memory: tenant `{tenant}`'s instances together hold its \
                 quota `memory_total` of {} MiB (the host configuration sets it)",
                quota >> 20
            ),
            record_index: None,
        })
}

/// A memory size in bytes and in MiB to two decimals, so that two sizes a guest's 64 KiB
/// pages apart never read as equal: `33619968 bytes (32.06 MiB)`.
fn exact_size(bytes: usize) -> String {
    format!(
        "{bytes} bytes ({:.2} MiB)",
        bytes as f64 / f64::from(1 << 20)
    )
}

/// Why a call trapped.
pub(super) fn explain_trap(error: &wasmtime::Error, seen: Witness, limits: &Limits) -> CallError {
    if let Some(quota) = tenant_memory(&seen) {
        return quota;
    }
    // A refused growth comes first: a guest that handles it (Python's `MemoryError`) and
    // then reports a panic failed for the limit, not for its own fault.
    if let Some(desired) = seen.refused_memory {
        let then = seen
            .panic
            .as_ref()
            .map(|(message, _)| format!(", and then panicked: {message}"))
            .unwrap_or_default();
        let mut error = limit(
            Limit::Memory,
            format!(
                "tried to grow its memory to {}, past the limit of {}{then}",
                exact_size(desired),
                exact_size(limits.memory_bytes)
            ),
            Some("if it really needs more"),
        );
        if let Some((_, Some(record_index))) = seen.panic {
            error = error.at_record(record_index as usize);
        }
        return error;
    }
    if let Some((message, record_index)) = seen.panic {
        if ran_out_of_memory(&message) {
            return CallError::Limit {
                limit: Limit::Memory,
                message: format!(
                    "ran out of memory: {message}; it asked for more than it can have: its \
                     memory limit is {} (`limits.memory` in the manifest), and a WebAssembly \
                     guest can address at most 4 GiB",
                    exact_size(limits.memory_bytes)
                ),
                record_index,
            };
        }
        return CallError::Trapped {
            message: format!("panicked: {message}"),
            record_index,
        };
    }
    if let Some(limit) = transfer_exhausted(error, limits) {
        return limit;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => CallError::Trapped {
            message: "was stopped by a stack overflow: it exhausted its WebAssembly call stack \
                      (unbounded or very deep recursion in the function, in Python also \
                      through `repr`, `==` or other built-ins after `sys.setrecursionlimit`); \
                      the stack size is the host's, not the job's: recurse less deeply"
                .into(),
            record_index: None,
        },
        _ => CallError::Trapped {
            message: format!("trapped: {error:#}"),
            record_index: None,
        },
    }
}

/// Whether a guest's panic says it ran out of memory without the limit refusing it: Python
/// raises `MemoryError` for an allocation larger than a 32-bit guest can address, before
/// asking to grow (the Python SDK reports it as `MemoryError ...`, or `in `f`: MemoryError
/// ...` in a chain).
fn ran_out_of_memory(panic: &str) -> bool {
    let exception = panic
        .strip_prefix("in `")
        .and_then(|rest| rest.split_once("`: ").map(|(_, exception)| exception))
        .unwrap_or(panic);
    exception.starts_with("MemoryError")
}

/// Why the scheduler stopped a call (or an instantiation) before it finished: its timeout
/// ran out, counting the time it ran and the time it was blocked in host calls, or its
/// job was stopped by force.
pub(super) fn explain_stop(stopped: Stopped, limits: &Limits) -> CallError {
    match stopped {
        Stopped::Timeout {
            ran,
            blocked,
            in_host_call,
        } => {
            let doing = if in_host_call {
                "while blocked in a host call (a clock wait or `poll`: is it sleeping?)"
            } else {
                "while running (is it looping?)"
            };
            limit(
                Limit::CallTimeout,
                format!(
                    "did not finish within the call timeout of {} ms and was stopped {doing}: \
                     it ran for {} ms and was blocked in host calls for {} ms (time queued \
                     behind other calls does not count)",
                    limits.call_timeout.as_millis(),
                    ran.as_millis(),
                    blocked.as_millis()
                ),
                Some("if it is only slow"),
            )
        }
        Stopped::Cancelled => CallError::Stopped {
            message: "was cancelled: its job was stopped by force".into(),
        },
    }
}

/// Why an instance could not be made: the pool being full, the memory limit, or the
/// component not fitting an instance slot, each said as such.
pub(super) fn explain_instantiation(
    error: &wasmtime::Error,
    seen: Witness,
    limits: &Limits,
) -> CallError {
    if let Some(quota) = tenant_memory(&seen) {
        return quota;
    }
    if let Some(desired) = seen.refused_memory {
        return limit(
            Limit::Memory,
            format!(
                "could not be instantiated: it needs {} of memory to start, past the limit of {}",
                exact_size(desired),
                exact_size(limits.memory_bytes)
            ),
            None,
        );
    }
    if let Some(full) = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<PoolConcurrencyLimitError>())
    {
        return CallError::Limit {
            limit: Limit::InstancePool,
            message: format!(
                "could not be instantiated: the host's instance pool is full ({full}); every \
                 job and partition of the process holds instances from it, so run fewer jobs \
                 or partitions, or give the host a larger pool (`RuntimeConfig::max_instances`)"
            ),
            record_index: None,
        };
    }
    if error
        .chain()
        .any(|cause| cause.to_string().contains("exceeds the configured maximum"))
    {
        return CallError::Limit {
            limit: Limit::InstanceSlot,
            message: format!(
                "could not be instantiated: the component needs more than one instance slot \
                 of the host holds ({error:#}); this is the host's quota, not the job's: \
                 split the component or build it with fewer modules"
            ),
            record_index: None,
        };
    }
    match seen.panic {
        Some((message, record_index)) => CallError::Trapped {
            message: format!("panicked while starting: {message}"),
            record_index,
        },
        None => CallError::Trapped {
            message: format!("could not be instantiated: {error:#}"),
            record_index: None,
        },
    }
}

/// The transfer limit, if that is what `error` hit (wasmtime's own error type for it is
/// private, so it is known by its words).
fn transfer_exhausted(error: &wasmtime::Error, limits: &Limits) -> Option<CallError> {
    error
        .chain()
        .any(|cause| {
            cause
                .to_string()
                .contains("fuel allocated for hostcalls has been exhausted")
        })
        .then(|| {
            limit(
                Limit::Transfer,
                format!(
                    "tried to pass more than the transfer limit of {} MiB to the host in one call",
                    limits.transfer_bytes >> 20
                ),
                Some("or have the function return less per record"),
            )
        })
}

/// A manifest limit's error: what happened, then the key that raises it and, if given,
/// when raising it is the right fix.
fn limit(limit: Limit, what: String, when: Option<&str>) -> CallError {
    let key = limit.key().expect("manifest limits have a key");
    let when = when.map(|when| format!(" {when}")).unwrap_or_default();
    CallError::Limit {
        limit,
        message: format!("{what} (raise `{key}` in the manifest{when})"),
        record_index: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing_seen() -> Witness {
        Witness {
            panic: None,
            refused_memory: None,
            refused_tenant_memory: None,
        }
    }

    #[test]
    fn each_trap_names_its_limit_and_key() {
        let limits = Limits::default();
        let timeout = explain_stop(
            Stopped::Timeout {
                ran: std::time::Duration::from_millis(3),
                blocked: std::time::Duration::from_millis(9_998),
                in_host_call: true,
            },
            &limits,
        );
        assert!(
            timeout
                .to_string()
                .contains("call timeout of 10000 ms and was stopped while blocked in a host call")
                && timeout
                    .to_string()
                    .contains("ran for 3 ms and was blocked in host calls for 9998 ms"),
            "{timeout}"
        );
        assert!(matches!(
            timeout,
            CallError::Limit {
                limit: Limit::CallTimeout,
                ..
            }
        ));
        assert!(
            timeout.to_string().contains("`limits.call_timeout`"),
            "{timeout}"
        );
        let memory = explain_trap(
            &wasmtime::Error::msg("memory limit reached"),
            Witness {
                panic: None,
                refused_memory: Some(300 << 20),
                refused_tenant_memory: None,
            },
            &limits,
        );
        assert!(
            memory.to_string().contains(
                "to 314572800 bytes (300.00 MiB), past the limit of 268435456 bytes (256.00 MiB)"
            ) && memory.to_string().contains("`limits.memory`"),
            "{memory}"
        );
        let handled = explain_trap(
            &wasmtime::Error::msg("wasm trap: wasm `unreachable` instruction executed"),
            Witness {
                panic: Some(("MemoryError (at udf.py:3, in `bomb`)".into(), Some(7))),
                refused_memory: Some(300 << 20),
                refused_tenant_memory: None,
            },
            &limits,
        );
        assert!(
            matches!(
                handled,
                CallError::Limit {
                    limit: Limit::Memory,
                    record_index: Some(7),
                    ..
                }
            ) && handled
                .to_string()
                .contains("past the limit of 268435456 bytes")
                && handled.to_string().contains("then panicked: MemoryError"),
            "a guest that caught the refusal and then panicked failed for the limit: {handled}"
        );
        let transfer = explain_trap(
            &wasmtime::Error::msg(
                "too much data is being copied between the host and the guest: \
                 fuel allocated for hostcalls has been exhausted",
            ),
            nothing_seen(),
            &limits,
        );
        assert!(
            transfer.to_string().contains("transfer limit of 128 MiB")
                && transfer.to_string().contains("`limits.transfer`"),
            "{transfer}"
        );
        let stack = explain_trap(
            &wasmtime::Error::from(Trap::StackOverflow),
            nothing_seen(),
            &limits,
        );
        assert!(
            stack.to_string().contains(
                "was stopped by a stack overflow: it exhausted its WebAssembly call stack"
            )
        );
    }

    #[test]
    fn a_python_memory_error_names_the_memory_limit() {
        for panic in [
            "MemoryError (at udf.py:3, in `bomb`)",
            "in `bomb`: MemoryError (at udf.py:3, in `bomb`)",
        ] {
            let error = explain_trap(
                &wasmtime::Error::from(Trap::UnreachableCodeReached),
                Witness {
                    panic: Some((panic.into(), Some(2))),
                    ..nothing_seen()
                },
                &Limits::default(),
            );
            assert!(
                matches!(
                    error,
                    CallError::Limit {
                        limit: Limit::Memory,
                        record_index: Some(2),
                        ..
                    }
                ) && error
                    .to_string()
                    .contains(&format!("ran out of memory: {panic}"))
                    && error
                        .to_string()
                        .contains("memory limit is 268435456 bytes (256.00 MiB) (`limits.memory`"),
                "{error}"
            );
        }
        let other = explain_trap(
            &wasmtime::Error::from(Trap::UnreachableCodeReached),
            Witness {
                panic: Some(("ValueError: no MemoryError here".into(), Some(0))),
                ..nothing_seen()
            },
            &Limits::default(),
        );
        assert_eq!(
            other.to_string(),
            "panicked: ValueError: no MemoryError here"
        );
    }

    #[test]
    fn a_reported_panic_explains_the_trap_it_caused() {
        let error = explain_trap(
            &wasmtime::Error::from(Trap::UnreachableCodeReached),
            Witness {
                panic: Some(("boom".into(), Some(3))),
                refused_memory: None,
                refused_tenant_memory: None,
            },
            &Limits::default(),
        );
        assert_eq!(error.to_string(), "panicked: boom");
        assert_eq!(error.shifted(10).record_index(), Some(13));
    }

    #[test]
    fn only_the_guests_own_traps_and_timeouts_want_a_record_found() {
        let limits = Limits::default();
        let memory = explain_trap(
            &wasmtime::Error::msg("memory limit reached"),
            Witness {
                refused_memory: Some(300 << 20),
                ..nothing_seen()
            },
            &limits,
        );
        let stack = explain_trap(
            &wasmtime::Error::from(Trap::StackOverflow),
            nothing_seen(),
            &limits,
        );
        let timeout = explain_stop(
            Stopped::Timeout {
                ran: std::time::Duration::from_secs(10),
                blocked: std::time::Duration::ZERO,
                in_host_call: false,
            },
            &limits,
        );
        for error in [&memory, &stack, &timeout] {
            assert!(error.wants_record(), "{error}");
            assert!(error.is_like(error));
        }
        assert!(!memory.is_like(&timeout) && !memory.is_like(&stack));
        let cancelled = explain_stop(Stopped::Cancelled, &limits);
        let failed = CallError::Failed {
            message: "no".into(),
            record_index: None,
        };
        let pool = explain_instantiation(
            &wasmtime::Error::msg(
                "The component transitively contains 9 Wasm linear memories, which exceeds the configured maximum of 4 in the pooling allocator",
            ),
            nothing_seen(),
            &limits,
        );
        for error in [&cancelled, &failed, &pool] {
            assert!(!error.wants_record(), "{error}");
        }
        let placed = memory.clone().at_record(2);
        assert!(!placed.wants_record());
        assert_eq!(placed.shifted(4096).record_index(), Some(4098));
        let unplaced = stack.within_records(4096, 8191);
        assert!(
            unplaced
                .to_string()
                .ends_with("working on records 4096 to 8191 of its partition, and none of them failed when run again alone (the function keeps state from record to record?)"),
            "{unplaced}"
        );
        assert_eq!(cancelled.shifted(3).record_index(), None);
    }

    #[test]
    fn a_growth_one_page_past_the_limit_does_not_read_as_equal() {
        let limits = Limits {
            memory_bytes: 32 << 20,
            ..Limits::default()
        };
        let memory = explain_trap(
            &wasmtime::Error::msg("memory limit reached"),
            Witness {
                panic: None,
                refused_memory: Some((32 << 20) + (64 << 10)),
                refused_tenant_memory: None,
            },
            &limits,
        );
        assert!(
            memory.to_string().contains(
                "to 33619968 bytes (32.06 MiB), past the limit of 33554432 bytes (32.00 MiB)"
            ),
            "{memory}"
        );
    }

    #[test]
    fn instantiation_blames_memory_or_slots_and_not_the_pool_by_default() {
        let limits = Limits {
            memory_bytes: 0,
            ..Limits::default()
        };
        let memory = explain_instantiation(
            &wasmtime::Error::msg("memory limit reached"),
            Witness {
                panic: None,
                refused_memory: Some(17 << 16),
                refused_tenant_memory: None,
            },
            &limits,
        );
        assert!(
            memory
                .to_string()
                .contains("needs 1114112 bytes (1.06 MiB) of memory to start")
                && memory.to_string().contains("`limits.memory`"),
            "{memory}"
        );
        let slot = explain_instantiation(
            &wasmtime::Error::msg(
                "The component transitively contains 9 Wasm linear memories, which exceeds the configured maximum of 4 in the pooling allocator",
            ),
            nothing_seen(),
            &limits,
        );
        assert!(matches!(
            slot,
            CallError::Limit {
                limit: Limit::InstanceSlot,
                ..
            }
        ));
        let other = explain_instantiation(
            &wasmtime::Error::msg("start function failed"),
            nothing_seen(),
            &limits,
        );
        assert!(!other.to_string().contains("pool"), "{other}");
    }
}
