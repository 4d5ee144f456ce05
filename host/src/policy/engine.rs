//! The wasmtime engine and compiled components.
//!
//! - One engine per memory limit, shared by the process: fuel metering on,
//!   the pooling allocator when the machine can reserve its memory (a
//!   fresh instance per call is then cheap), on-demand allocation if not.
//! - Components are compiled once per process, and cached on disk keyed
//!   by the component's SHA-256 and the engine's compatibility hash, so a
//!   restart does not recompile. A cache entry is checked (header,
//!   digest of its contents, and wasmtime's own compatibility check) before
//!   use; anything that fails is ignored and replaced, never trusted.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::component::Component;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::content::Digest;
use crate::error::{Error, Result};

/// Instances the pool holds at once; calls beyond that wait for a slot
/// (wasmtime fails the instantiation, so the pool is sized generously).
const POOL_INSTANCES: u32 = 128;

/// Header of a cache file: magic, then the SHA-256 of what follows.
const CACHE_MAGIC: &[u8; 8] = b"COFFERC1";

/// A configured engine and the components compiled for it.
pub struct PolicyEngine {
    pub engine: Engine,
    /// Whether the pooling allocator is in use.
    pub pooling: bool,
    compiled: Mutex<HashMap<Digest, Component>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("pooling", &self.pooling).finish_non_exhaustive()
    }
}

fn config(memory: usize, pooling: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Fuel counts only the guest's own instructions, not time spent in
    // host I/O, so a slow upload never makes a policy "time out".
    config.consume_fuel(true);
    config.max_wasm_stack(512 << 10);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 16)
            .total_memories(POOL_INSTANCES * 4)
            .total_tables(POOL_INSTANCES * 16)
            .max_memories_per_component(16)
            .max_tables_per_component(64)
            .max_memory_size(memory)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl PolicyEngine {
    /// The process's engine for guests limited to `memory` bytes.
    pub fn shared(memory: usize) -> Arc<PolicyEngine> {
        static ENGINES: OnceLock<Mutex<HashMap<usize, Arc<PolicyEngine>>>> = OnceLock::new();
        let engines = ENGINES.get_or_init(Default::default);
        let mut engines = engines.lock().unwrap_or_else(|p| p.into_inner());
        engines.entry(memory).or_insert_with(|| Arc::new(PolicyEngine::new(memory))).clone()
    }

    fn new(memory: usize) -> PolicyEngine {
        let (engine, pooling) = match Engine::new(&config(memory, true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reserve memory for the pooling allocator; instantiating on demand");
                (Engine::new(&config(memory, false)).expect("the on-demand engine configuration is valid"), false)
            }
        };
        PolicyEngine { engine, pooling, compiled: Mutex::new(HashMap::new()) }
    }

    fn compatibility(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }

    /// The compiled component for `bytes`: from this process's memory, the
    /// disk cache in `cache_dir`, or compiled now (and cached).
    pub fn compile(&self, bytes: &[u8], cache_dir: Option<&Path>) -> Result<Component> {
        let digest = Digest::of(bytes);
        if let Some(c) = self.compiled.lock().ok().and_then(|m| m.get(&digest).cloned()) {
            return Ok(c);
        }
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
            return Err(Error::Policy(
                "this is a core WebAssembly module, not a component: build the policy for wasm32-wasip2 \
                 (or wrap it with `wasm-tools component new`)"
                    .into(),
            ));
        }
        let cache_file = cache_dir.map(|d| d.join(format!("{digest}-{:016x}.cwasm", self.compatibility())));
        let component = match cache_file.as_deref().and_then(|f| self.load_cached(f)) {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, bytes)
                    .map_err(|e| Error::Policy(format!("not a valid WebAssembly component: {}", first_line(&e))))?;
                tracing::debug!(%digest, "compiled a policy component");
                if let Some(f) = &cache_file {
                    store_cached(f, &c);
                }
                c
            }
        };
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(digest, component.clone());
        }
        Ok(component)
    }

    /// A cached compilation, if the file is intact and wasmtime accepts it
    /// for this engine.
    fn load_cached(&self, file: &Path) -> Option<Component> {
        let data = std::fs::read(file).ok()?;
        let verified =
            data.len() > 40 && data[..8] == *CACHE_MAGIC && data[8..40] == *Digest::of(&data[40..]).as_bytes();
        if !verified {
            tracing::warn!(file = %file.display(), "ignoring a damaged compiled-policy cache entry");
            return None;
        }
        // SAFETY: deserialising runs machine code from the file, so only
        // bytes this process wrote are accepted: the digest above proves
        // the file is whole as written (not truncated or altered by
        // accident), the name ties it to this component and engine
        // configuration, and wasmtime refuses artefacts from another
        // version or configuration. The cache directory must be writable
        // only by the operator, like the binary itself.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(&self.engine, &data[40..]) };
        match loaded {
            Ok(c) => {
                tracing::debug!(file = %file.display(), "loaded a compiled policy component from the cache");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "ignoring an incompatible compiled-policy cache entry");
                None
            }
        }
    }
}

/// Write a cache entry atomically (temporary file, then rename); failures
/// only cost a recompilation later, so they are logged, not returned.
fn store_cached(file: &Path, component: &Component) {
    let write = || -> std::io::Result<()> {
        let payload = component.serialize().map_err(std::io::Error::other)?;
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        use std::io::Write;
        tmp.write_all(CACHE_MAGIC)?;
        tmp.write_all(Digest::of(&payload).as_bytes())?;
        tmp.write_all(&payload)?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(file = %file.display(), error = %e, "cannot write the compiled-policy cache");
    }
}

pub fn first_line(e: &wasmtime::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or_default().to_string()
}

/// The default cache directory: `$XDG_CACHE_HOME/coffer`, or
/// `~/.cache/coffer`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("coffer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_falls_back_to_on_demand_when_the_pool_cannot_be_reserved() {
        // 512 memories of 64 TiB each cannot be reserved on any machine.
        let engine = PolicyEngine::new(1 << 46);
        assert!(!engine.pooling);
        let component = engine.compile(super::super::DEFAULT_POLICY, None).unwrap();
        assert!(component.component_type().exports(&engine.engine).count() > 0);
        // The usual limit gets the pool here.
        assert!(PolicyEngine::new(64 << 20).pooling);
    }
}
