//! The wasmtime engine, its instance slots, and compiled components.
//!
//! - One engine per (memory limit, instance count), shared by the process:
//!   fuel metering on, an epoch ticking every [`EPOCH_TICK`] (a running
//!   guest yields to the runtime at each tick, so it never holds a worker
//!   thread), the pooling allocator when the machine can reserve its
//!   memory (a fresh instance per call is then cheap), on-demand
//!   allocation if not.
//! - Instance slots: at most `instances` calls hold an instance at once;
//!   more wait in a bounded queue, and beyond it fail as busy, whatever the
//!   allocator (see [`PolicyEngine::slot`]).
//! - Components are compiled once per process, and cached on disk (see
//!   [`cache`]), where an entry is loaded only from a private directory,
//!   only when its owner and mode are the user's own, and only when its
//!   HMAC (keyed by a secret kept in the directory) binds it to the exact
//!   component bytes and engine: native code compiled from anything else
//!   is never run.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Component;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::content::Digest;
use crate::error::{Error, Result};

pub mod cache;

/// How often the engines' epoch advances: the longest a running guest
/// goes without yielding to the runtime (and so without its time limit
/// being looked at).
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(5);

/// Core instances, tables and memories one call may create; checked by
/// wasmtime against the store's limiter with either allocator. Generous
/// enough for language runtimes (componentize-py components hold a dozen
/// core instances); memory and table sizes are what is really bounded.
pub const MAX_INSTANCES: usize = 32;
pub const MAX_TABLES: usize = 32;
pub const MAX_MEMORIES: usize = 4;
/// Table elements one call may hold, all its tables together.
pub const MAX_TABLE_ELEMENTS: usize = 200_000;

/// A configured engine, its instance slots, and the components compiled
/// for it.
pub struct PolicyEngine {
    pub engine: Engine,
    /// Whether the pooling allocator is in use.
    pub pooling: bool,
    slots: Arc<Semaphore>,
    instances: u32,
    waiting: AtomicU32,
    compiled: Mutex<HashMap<Digest, Component>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("pooling", &self.pooling).finish_non_exhaustive()
    }
}

fn config(memory: usize, instances: u32, pooling: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Fuel counts only the guest's own instructions, not time spent in
    // host I/O, so a slow upload never makes a policy "time out".
    config.consume_fuel(true);
    // Epochs tick every EPOCH_TICK; a guest yields to the runtime at the
    // first loop or call after each tick (see `Policy::instantiate`), so
    // the time limit can stop it even while it makes cheap host calls in
    // a loop.
    config.epoch_interruption(true);
    config.max_wasm_stack(512 << 10);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        // Room for every slot's call at its limits, so one tenant's
        // calls at the limits never leave another's without an instance.
        let per_call = |n: usize| instances.saturating_mul(n as u32);
        pool.total_component_instances(instances)
            .total_core_instances(per_call(MAX_INSTANCES))
            .total_memories(per_call(MAX_MEMORIES))
            .total_tables(per_call(MAX_TABLES))
            .max_memories_per_component(MAX_MEMORIES as u32)
            .max_tables_per_component(MAX_TABLES as u32)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(memory)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// A held instance slot; the slot frees when this is dropped.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl PolicyEngine {
    /// The process's engine for guests limited to `memory` bytes, running
    /// at most `instances` at once.
    pub fn shared(memory: usize, instances: u32) -> Arc<PolicyEngine> {
        type Engines = Mutex<HashMap<(usize, u32), Arc<PolicyEngine>>>;
        static ENGINES: OnceLock<Engines> = OnceLock::new();
        let engines = ENGINES.get_or_init(Default::default);
        let mut engines = engines.lock().unwrap_or_else(|p| p.into_inner());
        engines.entry((memory, instances)).or_insert_with(|| Arc::new(PolicyEngine::new(memory, instances))).clone()
    }

    fn new(memory: usize, instances: u32) -> PolicyEngine {
        let (engine, pooling) = match Engine::new(&config(memory, instances, true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reserve memory for the pooling allocator; instantiating on demand");
                (
                    Engine::new(&config(memory, instances, false))
                        .expect("the on-demand engine configuration is valid"),
                    false,
                )
            }
        };
        let weak = engine.weak();
        // Without the ticker no guest would ever yield or be stopped in
        // time: a process that cannot start a thread cannot run policies.
        std::thread::Builder::new()
            .name("coffer-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("starting the policy engine's epoch ticker thread");
        PolicyEngine {
            engine,
            pooling,
            slots: Arc::new(Semaphore::new(instances as usize)),
            instances,
            waiting: AtomicU32::new(0),
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// An instance slot: at once when one is free; otherwise after waiting
    /// behind at most `queue` other calls; beyond that, a busy error at
    /// once (a caller may retry), rather than an instantiation failure.
    pub async fn slot(&self, queue: u32) -> Result<Slot> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot(permit));
        }
        struct Waiting<'a>(&'a AtomicU32);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        if ahead >= queue {
            return Err(Error::Backend {
                message: format!(
                    "busy: all {} policy instances are in use and {ahead} calls are waiting \
                     (COFFER_POLICY_INSTANCES, COFFER_POLICY_QUEUE); try again shortly",
                    self.instances
                ),
                retryable: true,
                source: None,
            });
        }
        let permit =
            self.slots.clone().acquire_owned().await.map_err(|_| Error::Internal("instance slots closed".into()))?;
        Ok(Slot(permit))
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
        let cache = cache_dir.and_then(|d| match cache::Cache::open(d) {
            Ok(c) => Some(c),
            Err(why) => {
                tracing::warn!(dir = %d.display(), "not using the compiled-policy cache: {why}");
                None
            }
        });
        let entry = cache.as_ref().map(|c| c.entry(&digest, self.compatibility()));
        let component = match entry.as_ref().and_then(|e| e.load(&self.engine)) {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, bytes)
                    .map_err(|e| Error::Policy(format!("not a valid WebAssembly component: {}", first_line(&e))))?;
                tracing::debug!(%digest, "compiled a policy component");
                if let Some(e) = &entry {
                    e.store(&c);
                }
                c
            }
        };
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(digest, component.clone());
        }
        Ok(component)
    }
}

pub fn first_line(e: &wasmtime::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_falls_back_to_on_demand_when_the_pool_cannot_be_reserved() {
        // 512 memories of 64 TiB each cannot be reserved on any machine.
        let engine = PolicyEngine::new(1 << 46, 128);
        assert!(!engine.pooling);
        let component = engine.compile(super::super::DEFAULT_POLICY, None).unwrap();
        assert!(component.component_type().exports(&engine.engine).count() > 0);
        // The usual limit gets the pool here.
        assert!(PolicyEngine::new(64 << 20, 128).pooling);
    }

    /// A store with a call's limiter, as policy calls get, on `engine`.
    fn limited(engine: &Engine, memory: usize) -> wasmtime::Store<crate::policy::limits::CallLimiter> {
        let mut store = wasmtime::Store::new(engine, crate::policy::limits::CallLimiter::new(memory));
        store.limiter(|l| l);
        store.set_fuel(u64::MAX).unwrap();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
        store
    }

    /// Instantiate the component `wat` under a call's limits, with the
    /// pooling allocator and without it; the errors.
    async fn instantiate_both_ways(wat: &str) -> Vec<String> {
        let bytes = wat::parse_str(wat).unwrap();
        let mut errors = Vec::new();
        for pooling in [true, false] {
            let engine = Engine::new(&config(64 << 20, 4, pooling)).unwrap();
            let component = Component::new(&engine, &bytes).unwrap();
            let mut store = limited(&engine, 4 << 20);
            let linker = wasmtime::component::Linker::new(&engine);
            let result = linker.instantiate_async(&mut store, &component).await;
            errors.push(format!("{:#}", result.expect_err("instantiation must fail")));
        }
        errors
    }

    #[tokio::test]
    async fn memory_is_limited_across_all_of_a_guests_memories() {
        // Three instances of a module whose memory grows by 30 pages
        // (1.9 MiB): under the 4 MiB limit one by one, over it together.
        let errors = instantiate_both_ways(
            r#"(component
                (core module $m
                  (memory 1)
                  (func $grow (if (i32.eq (memory.grow (i32.const 30)) (i32.const -1)) (then unreachable)))
                  (start $grow))
                (core instance (instantiate $m))
                (core instance (instantiate $m))
                (core instance (instantiate $m)))"#,
        )
        .await;
        for e in errors {
            assert!(e.contains("memory limit") && e.contains("across all its memories"), "{e}");
        }
    }

    #[tokio::test]
    async fn table_elements_are_limited_across_all_of_a_guests_tables() {
        let errors = instantiate_both_ways(&format!(
            r#"(component
                (core module $m
                  (table 1 funcref)
                  (func $grow (if (i32.eq (table.grow (ref.null func) (i32.const {half})) (i32.const -1)) (then unreachable)))
                  (start $grow))
                (core instance (instantiate $m))
                (core instance (instantiate $m)))"#,
            half = MAX_TABLE_ELEMENTS / 2 + 1
        ))
        .await;
        for e in errors {
            assert!(e.contains("table elements"), "{e}");
        }
    }

    #[tokio::test]
    async fn core_instances_are_limited_with_either_allocator() {
        let many = "(core instance (instantiate $m))\n".repeat(MAX_INSTANCES + 1);
        let errors = instantiate_both_ways(&format!("(component (core module $m) {many})")).await;
        for e in errors {
            assert!(e.contains("instance"), "{e}");
        }
    }
}
