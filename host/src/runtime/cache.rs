//! Compiled components cached on disk, keyed by the component's SHA-256 and the engine's
//! compatibility hash, so a second start skips compilation (~50-100 ms a component) and
//! a cache written under another configuration is never loaded.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use anyhow::{Context, Result};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_hash: String,
}

impl ComponentCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
        }
    }

    /// The compiled form of `wasm` (whose SHA-256 is `digest`), from the cache if present.
    /// A cache that cannot be read or written only costs a compilation.
    pub fn compile(&self, engine: &Engine, wasm: &[u8], digest: &str) -> Result<Component> {
        let Some(dir) = &self.dir else {
            return Ok(Component::new(engine, wasm)?);
        };
        let path = dir.join(format!("{digest}-{}.cwasm", self.engine_hash));
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine with the
            // same compatibility hash (it is in the name), and is replaced only by rename.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(
                    "ignoring unreadable cached component {}: {error:#}",
                    path.display()
                ),
            }
        }
        let compiled = engine.precompile_component(wasm)?;
        if let Err(error) = write_atomically(&path, &compiled) {
            tracing::warn!(
                "cannot cache compiled component in {}: {error:#}",
                dir.display()
            );
        }
        // SAFETY: `compiled` was just produced by this engine.
        Ok(unsafe { Component::deserialize(engine, &compiled) }?)
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}
