//! Running policy components: components compiled once and instantiated
//! fresh for every call (a clean, isolated instance per operation; see
//! BENCHMARKS.md for the measurements behind the choice), each call bounded
//! in fuel, memory and store operations.
//!
//! - this file: [`Policy`], one loaded component, and its calls;
//! - `bindings.rs`: the one `bindgen!` of `wit/storage.wit`;
//! - `host.rs`: the per-call state and the thin imports a guest calls;
//! - `convert.rs`: the contract's types to the host's, errors mapped in one
//!   place;
//! - `limits.rs`: what bounds one call (memory, tables, the guest's clock);
//! - `share.rs`: each organisation's share of instances and CPU;
//! - `engine.rs` (and `engine/cache.rs`): engines shared by the process,
//!   instance slots, compiled components cached on disk;
//! - `set.rs`: the policies in force, swapped while the host runs.

mod bindings;
mod convert;
pub mod engine;
pub(crate) mod host;
pub(crate) mod limits;
pub mod set;
pub mod share;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

use self::bindings::ContentHandle;
use self::bindings::coffer::storage::types;
use self::bindings::{PolicyComponent, PolicyComponentPre};
use self::engine::{PolicyEngine, first_line};
use self::host::{CallState, HostServices};
use crate::backend::Location;
use crate::catalog::Record;
use crate::catalog::lifecycle::Reservation;
use crate::catalog::namespace::Namespace;
use crate::content::{Content, Digest};
use crate::error::{Error, Result};

/// The contract version this host implements.
pub const CONTRACT: &str = "coffer:storage/policy@0.2.0";

/// What a policy built for contract 0.1.0 must change to run on this host.
pub const FROM_0_1: &str = "to move a policy from 0.1.0 to 0.2.0: (1) replace `container-name(org)` with \
    `namespaces(org) -> result<list<namespace>, error>`, the containers and name prefixes the organisation's \
    objects may live in (the deployment's policy answers for every organisation); (2) `check-config` now \
    takes `org: option<string>` and checks the settings as that tenant sees them; (3) object names passed to \
    `head` and `write` must contain the content's SHA-256, inside one of the organisation's namespaces; \
    (4) call `head`, `ensure-container` and `write` only from `put`; (5) every import now counts against \
    the call's host-call budget. Then rebuild against this host's wit/";

/// The built-in default policy component.
pub static DEFAULT_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/coffer_policy_default.wasm"));

/// Where host/build.rs put the components the test suite attacks the
/// sandbox with (`tests/guests/`). Not part of the API.
#[doc(hidden)]
pub const TEST_GUESTS_DIR: &str = env!("COFFER_TEST_GUESTS");

/// An operation on a stored object that the policy authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Stat,
    Link,
    Delete,
}

/// What a policy decided for a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub location: Location,
    pub deduplicated: bool,
    /// Stored in the database after an S3 store call of the same put
    /// failed as unavailable: parked, for `coffer migrate` to move.
    pub parked: bool,
}

/// A loaded, checked policy component, ready to instantiate.
#[derive(Clone)]
pub struct Policy {
    pre: PolicyComponentPre<CallState>,
    engine: Arc<PolicyEngine>,
    name: Arc<str>,
    digest: Digest,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The interfaces a component exports, for messages.
fn exported_names(engine: &PolicyEngine, component: &Component) -> Vec<String> {
    component.component_type().exports(&engine.engine).map(|(name, _)| name.to_string()).collect()
}

impl Policy {
    /// Load a policy component from its bytes, checking that it implements
    /// this host's contract and imports nothing the host does not give.
    /// `limits` choose the engine (memory, instance slots); `cache_dir`
    /// holds compiled components across restarts.
    pub fn from_bytes(
        bytes: &[u8],
        name: &str,
        limits: &crate::config::PolicyLimits,
        cache_dir: Option<&Path>,
    ) -> Result<Policy> {
        let engine = PolicyEngine::shared(limits.memory, limits.instances);
        let component = engine.compile(bytes, cache_dir).map_err(|e| match e {
            Error::Policy(m) => Error::Policy(format!("{name}: {m}")),
            other => other,
        })?;
        // Another contract version first: its imports would not link either,
        // and the version is what the author must hear about.
        let exports = exported_names(&engine, &component);
        if let Some(found) = exports.iter().find(|n| n.starts_with("coffer:storage/policy@") && *n != CONTRACT) {
            let what = if found.ends_with("@0.1.0") {
                FROM_0_1.to_string()
            } else {
                "rebuild the policy against this host's wit/ (contract versions must match)".into()
            };
            return Err(Error::Policy(format!("{name} implements {found}, but this host speaks {CONTRACT}; {what}")));
        }
        let mut linker: Linker<CallState> = Linker::new(&engine.engine);
        // WASI with an empty context: std guests import it even when they
        // do no I/O, and it grants no files, network, environment or stdio.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| Error::Internal(format!("linking WASI: {e}")))?;
        PolicyComponent::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| Error::Internal(format!("linking the contract: {e}")))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            Error::Policy(format!(
                "{name} needs an import this host does not provide ({}); policies may import only \
                 coffer:storage@0.2.0 and WASI 0.2",
                first_line(&e)
            ))
        })?;
        let pre = PolicyComponentPre::new(instance_pre).map_err(|_| {
            Error::Policy(format!("{name} does not implement {CONTRACT}; it exports [{}]", exports.join(", ")))
        })?;
        Ok(Policy { pre, engine, name: name.into(), digest: Digest::of(bytes) })
    }

    /// The built-in default policy.
    pub fn default_policy(limits: &crate::config::PolicyLimits, cache_dir: Option<&Path>) -> Result<Policy> {
        Policy::from_bytes(DEFAULT_POLICY, "the built-in policy", limits, cache_dir)
    }

    /// The SHA-256 of the component.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.engine.pooling
    }

    /// The interfaces the component exports.
    pub fn exports(&self) -> Vec<String> {
        exported_names(&self.engine, self.pre.instance_pre().component())
    }

    /// A fresh instance for one call, once an instance slot is free, with
    /// the call's limits set: fuel, memory, tables, instances, and a yield
    /// to the runtime at every epoch tick; the time limit is
    /// [`Policy::guarded`]'s.
    async fn instantiate(
        &self,
        services: &Arc<HostServices>,
        org: Option<&str>,
        namespaces: Vec<Namespace>,
    ) -> Result<Call> {
        let limits = services.config.limits;
        // The organisation's turn first (its instances and CPU share), then
        // one of the engine's slots.
        let share = services.shares.enter(org.unwrap_or_default()).await?;
        let slot = self.engine.slot(limits.queue).await?;
        let mut state = CallState::new(services.clone(), org.map(str::to_string), namespaces);
        state.share = Some(share);
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| s.limiter());
        let internal = |e: wasmtime::Error| Error::Internal(e.to_string());
        store.set_fuel(limits.fuel).map_err(internal)?;
        // Every transition to the host counts: WASI imports included.
        store.call_hook(|mut cx, hook| match hook {
            wasmtime::CallHook::CallingHost => cx.data_mut().spend_transition(),
            _ => Ok(()),
        });
        store.set_epoch_deadline(1);
        // At each tick the guest yields; past its organisation's CPU share
        // it pauses too (host time: not counted against its time limit).
        store.epoch_deadline_callback(|mut cx| {
            let pause = cx.data_mut().cpu_pause();
            if pause.is_zero() {
                return Ok(wasmtime::UpdateDeadline::Yield(1));
            }
            let clock = cx.data().clock.clone();
            Ok(wasmtime::UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    let _host = clock.in_host();
                    tokio::time::sleep(pause).await;
                }),
            ))
        });
        let clock = store.data().clock.clone();
        let instantiated = Self::guarded(&clock, &services.config, self.pre.instantiate_async(&mut store)).await;
        let instance = instantiated.map_err(|e| self.trap(e, &services.config))?;
        Ok(Call { store, instance, _slot: slot })
    }

    /// Run `call` against the call's time limit: the guest's own time
    /// (host I/O in the storage imports left out). Past it, the call is
    /// dropped where it stands (a running guest yields at its first loop
    /// or call after each epoch tick, [`engine::EPOCH_TICK`], so even a
    /// tight loop gets there) and a trap-like error returned.
    async fn guarded<T>(
        clock: &limits::GuestClock,
        config: &crate::config::Config,
        call: impl Future<Output = wasmtime::Result<T>>,
    ) -> wasmtime::Result<T> {
        let limit = Duration::from_millis(config.limits.timeout_ms);
        tokio::select! {
            biased;
            done = clock.counting(call) => done,
            () = clock.expired(limit) => Err(TimedOut(config.limits.timeout_ms).into()),
        }
    }

    /// Describe a trap (or other failure inside the guest) for operators.
    fn trap(&self, e: wasmtime::Error, config: &crate::config::Config) -> Error {
        let name = &self.name;
        if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) {
            return Error::Policy(format!(
                "{name} used up its CPU budget ({} instructions, COFFER_POLICY_FUEL) and was stopped",
                config.limits.fuel
            ));
        }
        if let Some(wasmtime::component::ResourceTableError::Full) =
            e.downcast_ref::<wasmtime::component::ResourceTableError>()
        {
            return Error::Policy(format!(
                "{name} held more than {} resources at once (WASI streams, pollables, content handles) and was stopped",
                host::MAX_RESOURCES
            ));
        }
        if let Some(TimedOut(ms)) = e.downcast_ref::<TimedOut>() {
            return Error::Policy(format!(
                "{name} ran for more than its time limit ({ms} ms of its own time, COFFER_POLICY_TIMEOUT) and was stopped"
            ));
        }
        match e.downcast_ref::<Error>() {
            Some(Error::Policy(what)) => return Error::Policy(format!("{name} {what} and was stopped")),
            Some(host_err) => return Error::Policy(format!("{name} was stopped: {host_err}")),
            None => {}
        }
        let text = format!("{e:#}");
        if text.contains("grow") && text.contains("memory") {
            return Error::Policy(format!(
                "{name} tried to use more than its memory limit ({} bytes, COFFER_POLICY_MEMORY) and was stopped",
                config.limits.memory
            ));
        }
        Error::Policy(format!("{name} trapped: {}", text.lines().next().unwrap_or_default()))
    }

    /// Ask the policy to validate the settings as `org` sees them (none:
    /// the deployment's).
    pub async fn check_config(&self, services: &Arc<HostServices>, org: Option<&str>) -> Result<()> {
        let Call { _slot, mut store, instance } = self.instantiate(services, org, Vec::new()).await?;
        let clock = store.data().clock.clone();
        let call = instance.coffer_storage_policy().call_check_config(&mut store, org);
        let result = Self::guarded(&clock, &services.config, call).await;
        record_call_time("check-config", &store.data().clock);
        self.finish(result, &mut store)
    }

    /// The namespaces the policy declares for `org`, checked for sense.
    pub async fn namespaces(&self, services: &Arc<HostServices>, org: &str) -> Result<Vec<Namespace>> {
        let Call { _slot, mut store, instance } = self.instantiate(services, Some(org), Vec::new()).await?;
        let clock = store.data().clock.clone();
        let call = instance.coffer_storage_policy().call_namespaces(&mut store, org);
        let result = Self::guarded(&clock, &services.config, call).await;
        record_call_time("namespaces", &store.data().clock);
        let declared = self.finish(result, &mut store)?;
        if declared.is_empty() || declared.len() > 16 {
            return Err(Error::Policy(format!(
                "{} declared {} namespaces for {org:?}; a policy declares 1 to 16",
                self.name,
                declared.len()
            )));
        }
        let declared: Vec<Namespace> = declared.into_iter().map(convert::namespace_from_wit).collect();
        for ns in &declared {
            ns.validate().map_err(|e| Error::Policy(format!("{}: {e}", self.name)))?;
        }
        Ok(declared)
    }

    /// Let the policy place (and, through the store imports, write)
    /// `content` for `org`. The host accepts the outcome only for a
    /// location it saw hold the content during this call. Returns the
    /// reservations the call made (the caller commits the one for the
    /// outcome's location and releases the rest); on failure they are
    /// released here.
    pub async fn put(
        &self,
        services: &Arc<HostServices>,
        org: &str,
        content: &Content,
        namespaces: Vec<Namespace>,
        relocating: bool,
    ) -> Result<(PutOutcome, Vec<Reservation>)> {
        let Call { _slot, mut store, instance } = self.instantiate(services, Some(org), namespaces).await?;
        store.data_mut().put_content = Some(content.clone());
        store.data_mut().relocating = relocating;
        let handle = store
            .data_mut()
            .table()
            .push(ContentHandle(content.clone()))
            .map_err(|e| Error::Internal(format!("content handle: {e}")))?;
        let clock = store.data().clock.clone();
        let call = instance.coffer_storage_policy().call_put(&mut store, org, handle);
        let result = Self::guarded(&clock, &services.config, call).await;
        let reservations = std::mem::take(&mut store.data_mut().reservations);
        record_call_time("put", &store.data().clock);
        let finished = self.finish(result, &mut store);
        let verified = std::mem::take(&mut store.data_mut().verified);
        let s3_unavailable = store.data().s3_unavailable;
        // The instance (and its slot) is not needed for what follows: the
        // store goes first, then the slot, so the pool always has room
        // for a call the slot lets in.
        drop(store);
        drop(_slot);
        let outcome: types::PutOutcome = match finished {
            Ok(o) => o,
            Err(e) => {
                Reservation::release_all(reservations).await;
                return Err(e);
            }
        };
        let location = convert::location_from_wit(outcome.location);
        if !verified.contains(&location) {
            Reservation::release_all(reservations).await;
            return Err(Error::Policy(format!(
                "{} reported {location} for the content, but neither wrote it there nor found it there",
                self.name
            )));
        }
        let parked = s3_unavailable && location.backend == crate::backend::BackendKind::Database;
        Ok((PutOutcome { location, deduplicated: outcome.deduplicated, parked }, reservations))
    }

    /// Ask whether `org` may perform `op` on `record`.
    pub async fn authorize(
        &self,
        services: &Arc<HostServices>,
        org: &str,
        op: Operation,
        record: &Record,
    ) -> Result<()> {
        let Call { _slot, mut store, instance } = self.instantiate(services, Some(org), Vec::new()).await?;
        let op = match op {
            Operation::Get => types::Operation::Get,
            Operation::Stat => types::Operation::Stat,
            Operation::Link => types::Operation::Link,
            Operation::Delete => types::Operation::Delete,
        };
        let info = convert::object_info(record);
        let clock = store.data().clock.clone();
        let call = instance.coffer_storage_policy().call_authorize(&mut store, org, op, &info);
        let result = Self::guarded(&clock, &services.config, call).await;
        record_call_time("authorize", &store.data().clock);
        self.finish(result, &mut store)
    }

    /// Time `n` policy decisions: `authorize` for a get of `record`, or
    /// (`put`) the placement decision of a put, `namespaces` (what the
    /// default policy computes before it writes). Each on a fresh instance
    /// (what Coffer does), or all on one reused instance. For the
    /// benchmarks.
    #[doc(hidden)]
    pub async fn time_decisions(
        &self,
        services: &Arc<HostServices>,
        record: &Record,
        n: usize,
        reuse: bool,
        put: bool,
    ) -> Result<Vec<std::time::Duration>> {
        let info = convert::object_info(record);
        let org = record.org.as_str();
        let mut times = Vec::with_capacity(n);
        let mut warm = if reuse { Some(self.instantiate(services, Some(org), Vec::new()).await?) } else { None };
        for _ in 0..n {
            let start = std::time::Instant::now();
            let mut fresh = None;
            if warm.is_none() {
                fresh = Some(self.instantiate(services, Some(org), Vec::new()).await?);
            }
            let Call { store, instance, .. } = warm.as_mut().or(fresh.as_mut()).expect("an instance");
            // A reused instance gets each decision's budget afresh, as a
            // fresh one would.
            store.data_mut().refill();
            let policy = instance.coffer_storage_policy();
            if put {
                let result = policy.call_namespaces(&mut *store, org).await;
                self.finish(result, store)?;
            } else {
                let result = policy.call_authorize(&mut *store, org, types::Operation::Get, &info).await;
                self.finish(result, store)?;
            }
            times.push(start.elapsed());
        }
        Ok(times)
    }

    /// The call's result as the host reports it: a guest's error (or, if
    /// the guest passed on a host error it was given, the host's full
    /// error), or a description of the trap.
    fn finish<T>(
        &self,
        result: wasmtime::Result<std::result::Result<T, types::Error>>,
        store: &mut Store<CallState>,
    ) -> Result<T> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(store.data_mut().withheld(&e).unwrap_or_else(|| convert::error_from_wit(e))),
            Err(trap) => Err(self.trap(trap, &store.data().services().config)),
        }
    }
}

/// Count a call's wall time (instantiation and host I/O included) in
/// `coffer_policy_call_seconds`, by export.
fn record_call_time(export: &str, clock: &limits::GuestClock) {
    crate::metrics::global().observe(
        "coffer_policy_call_seconds",
        "Policy component calls: wall time from instantiation to the answer, host I/O included.",
        &[("export", export)],
        clock.wall().as_secs_f64(),
    );
}

/// A call stopped at its time limit (milliseconds).
#[derive(Debug)]
struct TimedOut(u64);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped after {} ms of the policy's own time", self.0)
    }
}

impl std::error::Error for TimedOut {}

/// One call's instance, and the instance slot it holds. Bound as
/// `let Call { _slot, mut store, instance } = …`, the store is dropped
/// before the slot (locals drop in reverse order): wasmtime drops a
/// store's data before it gives its instance back to the pool, so a slot
/// kept in the data would let the next call in while the pool is still
/// full ("maximum concurrent limit … reached").
pub(crate) struct Call {
    pub(crate) store: Store<CallState>,
    pub(crate) instance: PolicyComponent,
    pub(crate) _slot: engine::Slot,
}
