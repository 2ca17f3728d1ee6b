//! What one instance of a component takes from the host's pooling allocator: its core
//! instances, memories and tables, read when the component loads. The pool is sized in
//! slots of a Rust component's footprint; a larger component (a Python one, with CPython
//! linked from many core modules) takes as many slots as its largest count needs, so the
//! tenants' instance quotas and the pool's own limits count the same thing.

use anyhow::{Context, Result};
use wasmparser::{Instance, Parser, Payload};

/// The core instances, memories and tables one instance of a component allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Core module instances (the pool's `total_core_instances`).
    pub core_instances: u32,
    /// Linear memories defined by those instances (`total_memories`).
    pub memories: u32,
    /// Tables defined by those instances (`total_tables`).
    pub tables: u32,
}

impl Footprint {
    /// What one slot of the host's pool holds: a Rust component (its main module and the
    /// adapter shims, with room to spare) fits in one.
    pub const SLOT: Footprint = Footprint {
        core_instances: 8,
        memories: 2,
        tables: 4,
    };

    /// The footprint of `component`, compiled from `wasm`: memories and tables as
    /// wasmtime counts them, core instances counted from the component's instantiations.
    pub fn of(component: &wasmtime::component::Component, wasm: &[u8]) -> Result<Self> {
        let core_instances = count_core_instances(wasm)?;
        // `None` only for a component instantiating an imported module, which the
        // `udf` world has none of; count it as a full slot's worth then.
        let (memories, tables) = component
            .resources_required()
            .map_or((Self::SLOT.memories, Self::SLOT.tables), |required| {
                (required.num_memories, required.num_tables)
            });
        Ok(Self {
            core_instances,
            memories,
            tables,
        })
    }

    /// The pool slots an instance takes: enough for its largest count, and at least one.
    pub fn slots(&self) -> u32 {
        let slot = Self::SLOT;
        [
            self.core_instances.div_ceil(slot.core_instances),
            self.memories.div_ceil(slot.memories),
            self.tables.div_ceil(slot.tables),
        ]
        .into_iter()
        .max()
        .unwrap_or(1)
        .max(1)
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} core instances, {} memories and {} tables",
            self.core_instances, self.memories, self.tables
        )
    }
}

/// The core module instantiations in a component, nested components included.
fn count_core_instances(wasm: &[u8]) -> Result<u32> {
    let mut count = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::InstanceSection(section) =
            payload.context("cannot read the component's sections")?
        {
            for instance in section {
                if let Instance::Instantiate { .. } =
                    instance.context("cannot read the component's core instances")?
                {
                    count += 1;
                }
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footprint(core_instances: u32, memories: u32, tables: u32) -> Footprint {
        Footprint {
            core_instances,
            memories,
            tables,
        }
    }

    #[test]
    fn an_instance_takes_the_slots_its_largest_count_needs() {
        assert_eq!(footprint(0, 0, 0).slots(), 1);
        assert_eq!(footprint(3, 1, 2).slots(), 1);
        assert_eq!(footprint(8, 2, 4).slots(), 1);
        assert_eq!(footprint(14, 1, 1).slots(), 2);
        assert_eq!(footprint(9, 5, 1).slots(), 3);
        assert_eq!(footprint(1, 1, 13).slots(), 4);
    }

    /// A component of two core modules, `m` (one memory, one table) instantiated twice
    /// and `n` (nothing) once, and a core instance made from exports, which allocates
    /// nothing. (Hand-encoded: the host has no text-format parser.)
    fn component_bytes() -> Vec<u8> {
        const MODULE: &[u8] = b"\0asm\x01\0\0\0";
        let table = [4, 4, 1, 0x70, 0, 1];
        let memory = [5, 3, 1, 0, 1];
        let m = [MODULE, &table, &memory].concat();
        let instances = [4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0];
        let mut wasm = b"\0asm\x0d\0\x01\0".to_vec();
        for (id, contents) in [(1u8, &m[..]), (1, MODULE), (2, &instances)] {
            wasm.push(id);
            wasm.push(contents.len() as u8);
            wasm.extend_from_slice(contents);
        }
        wasm
    }

    #[test]
    fn the_counts_are_read_from_the_component() {
        let engine = wasmtime::Engine::default();
        let wasm = component_bytes();
        let component = wasmtime::component::Component::new(&engine, &wasm).unwrap();
        let counted = Footprint::of(&component, &wasm).unwrap();
        assert_eq!(counted, footprint(3, 2, 2));
        assert_eq!(counted.slots(), 1);
        assert_eq!(
            counted.to_string(),
            "3 core instances, 2 memories and 2 tables"
        );
    }
}
