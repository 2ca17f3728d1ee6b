//! Compiled components cached on disk, keyed by the component's SHA-256 and the engine's
//! compatibility hash, so a second start skips compilation (~50-100 ms a component) and
//! a cache written under another configuration is never loaded.
//!
//! A cached artifact is native code the host runs, so it is only loaded when it is exactly
//! what the host wrote: the file is read into memory, its SHA-256 checked against a seal
//! the host wrote beside it, and the checked bytes are what wasmtime loads (never the
//! file itself, which could change after the check). The seal is only worth as much as
//! the directory is private, so a cache directory that is not the user's own, or that
//! its group or others may write to, is refused. A damaged or unsealed artifact is
//! compiled again and replaced.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The compiled-component cache of one engine.
pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_hash: String,
}

impl ComponentCache {
    /// A cache in `dir` (`None`: no disk cache) for components compiled by `engine`.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
        }
    }

    /// The compiled form of `wasm` (whose SHA-256 is `digest`), from the cache if an
    /// intact artifact is there. A damaged one is compiled again and replaced; a cache
    /// that cannot be written only costs a compilation; a cache directory other users
    /// could write to is an error.
    pub fn compile(&self, engine: &Engine, wasm: &[u8], digest: &str) -> Result<Component> {
        let Some(dir) = &self.dir else {
            return Ok(Component::new(engine, wasm)?);
        };
        private_dir(dir)?;
        let artifact = Artifact::new(dir.join(format!("{digest}-{}.cwasm", self.engine_hash)));
        match artifact.load(engine) {
            Ok(Some(component)) => return Ok(component),
            Ok(None) => {}
            Err(error) => tracing::warn!(
                "ignoring unreadable cached component {}: {error:#}; compiling it again",
                artifact.path.display()
            ),
        }
        let compiled = engine.precompile_component(wasm)?;
        if let Err(error) = artifact.store(&compiled) {
            tracing::warn!(
                "cannot cache compiled component in {}: {error:#}",
                dir.display()
            );
        }
        // SAFETY: `compiled` was just produced by this engine.
        Ok(unsafe { Component::deserialize(engine, &compiled) }?)
    }
}

/// One cached artifact and the seal that vouches for it: the artifact's SHA-256 and the
/// key it was stored under (the component's digest and the engine's hash), so that an
/// intact artifact of another component, copied or renamed with its seal, is not taken
/// for this one.
struct Artifact {
    path: PathBuf,
    seal: PathBuf,
}

impl Artifact {
    fn new(path: PathBuf) -> Self {
        let seal = path.with_extension("cwasm.sha256");
        Self { path, seal }
    }

    /// What the seal of an artifact of these bytes, stored here, says.
    fn sealed(&self, bytes: &[u8]) -> String {
        let key = self.path.file_stem().unwrap_or_default().to_string_lossy();
        format!("{} {key}", hex(&Sha256::digest(bytes)))
    }

    /// The cached component, `None` if there is none, an error if it is not intact.
    fn load(&self, engine: &Engine) -> Result<Option<Component>> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).context("cannot read it"),
        };
        let recorded = self.read_seal()?;
        let actual = self.sealed(&bytes);
        ensure!(
            recorded == actual,
            "its SHA-256 and name are `{actual}`, not the `{recorded}` the host recorded when \
             it wrote it: it was damaged or replaced"
        );
        // SAFETY: these bytes are, by the check above against the seal the host wrote in a
        // directory only this user can write, exactly what `precompile_component` of an
        // engine with the same compatibility hash (it is in the name) produced; being in
        // memory, they cannot change after the check.
        let component = unsafe { Component::deserialize(engine, &bytes) }
            .map_err(anyhow::Error::from)
            .context("wasmtime refuses it")?;
        Ok(Some(component))
    }

    /// The digest the host recorded, if the seal is the user's own and only theirs to write.
    fn read_seal(&self) -> Result<String> {
        let metadata = fs::metadata(&self.seal)
            .with_context(|| format!("its seal {} cannot be read", self.seal.display()))?;
        ensure!(
            metadata.uid() == current_user() && metadata.mode() & 0o022 == 0,
            "its seal {} is not private to this user",
            self.seal.display()
        );
        let text = fs::read_to_string(&self.seal)
            .with_context(|| format!("its seal {} cannot be read", self.seal.display()))?;
        Ok(text.trim().to_owned())
    }

    /// Writes the artifact, then its seal, each through a private temporary file renamed
    /// into place.
    fn store(&self, compiled: &[u8]) -> Result<()> {
        write_privately(&self.path, compiled)?;
        write_privately(&self.seal, self.sealed(compiled).as_bytes())
    }
}

/// Makes `dir` if it is missing (readable and writable by the user alone), and refuses
/// it if it is not the user's own or its group or others may write to it: anyone who can
/// write the cache can make the host run their native code.
fn private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the component cache {}", dir.display()))?;
    }
    let metadata = fs::metadata(dir)
        .with_context(|| format!("cannot read the component cache {}", dir.display()))?;
    let fix = "or point SLUICE_CACHE_DIR at a directory of your own";
    if !metadata.is_dir() {
        bail!(
            "the component cache {} is not a directory: remove it, {fix}",
            dir.display()
        );
    }
    if metadata.uid() != current_user() {
        bail!(
            "the component cache {} belongs to user {}, not to you (user {}): compiled \
             components are native code the host runs, so it only uses a cache of your own; \
             {fix}",
            dir.display(),
            metadata.uid(),
            current_user()
        );
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        bail!(
            "the component cache {} may be written by its group or others (mode {mode:o}): \
             compiled components are native code the host runs, so anyone who can write \
             there could run theirs in it; run `chmod go-w {}`, {fix}",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

fn write_privately(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(bytes)?;
    fs::rename(&temporary, path)
        .with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(())
}

fn current_user() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is: the header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn cache(dir: &Path) -> (Engine, ComponentCache, Artifact) {
        let engine = Engine::default();
        let cache = ComponentCache::new(&engine, Some(dir.to_owned()));
        cache
            .compile(&engine, EMPTY_COMPONENT, "empty")
            .expect("compiles and caches");
        let artifact = Artifact::new(dir.join(format!("empty-{}.cwasm", cache.engine_hash)));
        (engine, cache, artifact)
    }

    #[test]
    fn an_intact_artifact_is_loaded_and_a_damaged_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, cache, artifact) = cache(dir.path());
        assert!(
            artifact.load(&engine).unwrap().is_some(),
            "loads when intact"
        );
        let intact = fs::read(&artifact.path).unwrap();
        let damages: [fn(&mut Vec<u8>); 3] = [
            |bytes| bytes[100] ^= 0x40,
            |bytes| bytes.truncate(bytes.len() / 2),
            |bytes| bytes.extend_from_slice(b"junk"),
        ];
        for damage in damages {
            let mut bytes = intact.clone();
            damage(&mut bytes);
            fs::write(&artifact.path, &bytes).unwrap();
            let error = artifact.load(&engine).expect_err("damage is noticed");
            assert!(
                error.to_string().contains("damaged or replaced"),
                "{error:#}"
            );
            cache.compile(&engine, EMPTY_COMPONENT, "empty").unwrap();
            assert_eq!(fs::read(&artifact.path).unwrap(), intact, "rebuilt");
        }
    }

    #[test]
    fn an_artifact_without_its_seal_or_with_a_forged_one_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, artifact) = cache(dir.path());
        fs::write(&artifact.seal, "0".repeat(64)).unwrap();
        assert!(artifact.load(&engine).is_err());
        fs::set_permissions(&artifact.seal, fs::Permissions::from_mode(0o666)).unwrap();
        let seal = artifact.sealed(&fs::read(&artifact.path).unwrap());
        fs::write(&artifact.seal, seal).unwrap();
        let error = artifact.load(&engine).expect_err("a seal others may write");
        assert!(error.to_string().contains("not private"), "{error:#}");
        fs::remove_file(&artifact.seal).unwrap();
        assert!(artifact.load(&engine).is_err(), "no seal");
    }

    #[test]
    fn another_components_intact_artifact_and_seal_are_not_taken_for_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, cache, artifact) = cache(dir.path());
        let other = Artifact::new(
            dir.path()
                .join(format!("other-{}.cwasm", cache.engine_hash)),
        );
        fs::copy(&artifact.path, &other.path).unwrap();
        fs::copy(&artifact.seal, &other.seal).unwrap();
        let error = other.load(&engine).expect_err("sealed for another name");
        assert!(
            error.to_string().contains("damaged or replaced"),
            "{error:#}"
        );
    }

    #[test]
    fn a_cache_others_may_write_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let engine = Engine::default();
        let cache = ComponentCache::new(&engine, Some(shared.clone()));
        let error = cache
            .compile(&engine, EMPTY_COMPONENT, "empty")
            .expect_err("refused");
        assert!(
            error.to_string().contains("mode 777")
                && error
                    .to_string()
                    .contains(&format!("chmod go-w {}", shared.display())),
            "{error:#}"
        );
        let fresh = dir.path().join("new/cache");
        let cache = ComponentCache::new(&engine, Some(fresh.clone()));
        cache.compile(&engine, EMPTY_COMPONENT, "empty").unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "a cache it makes is private");
    }
}
