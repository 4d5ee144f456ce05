//! Running policy components: engines shared by the process (`engine.rs`),
//! components compiled once and instantiated fresh for every call (a
//! clean, isolated instance per operation; see BENCHMARKS.md for the
//! measurements behind the choice), each call bounded in fuel, memory and
//! store operations; the policies in force in `set.rs`.

mod bindings;
pub mod check;
mod convert;
pub mod engine;
pub(crate) mod host;
pub mod set;

use std::path::Path;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

use self::bindings::coffer::storage::types;
use self::bindings::{PolicyComponent, PolicyComponentPre};
use self::engine::{PolicyEngine, first_line};
use self::host::{CallState, ContentHandle, HostServices};
use crate::backend::Location;
use crate::catalog::Record;
use crate::catalog::lifecycle::Reservation;
use crate::content::{Content, Digest};
use crate::error::{Error, Result};

/// The contract version this host implements.
pub const CONTRACT: &str = "coffer:storage/policy@0.1.0";

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
    /// `memory` is the per-call memory limit; `cache_dir` holds compiled
    /// components across restarts.
    pub fn from_bytes(bytes: &[u8], name: &str, memory: usize, cache_dir: Option<&Path>) -> Result<Policy> {
        let engine = PolicyEngine::shared(memory);
        let component = engine.compile(bytes, cache_dir).map_err(|e| match e {
            Error::Policy(m) => Error::Policy(format!("{name}: {m}")),
            other => other,
        })?;
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
                 coffer:storage@0.1.0 and WASI 0.2",
                first_line(&e)
            ))
        })?;
        let pre = PolicyComponentPre::new(instance_pre).map_err(|_| {
            let exports = exported_names(&engine, &component);
            let other_version = exports.iter().find(|n| n.starts_with("coffer:storage/policy@"));
            match other_version {
                Some(found) => Error::Policy(format!(
                    "{name} implements {found}, but this host speaks {CONTRACT}: rebuild the policy against \
                     this host's wit/ (contract versions must match)"
                )),
                None => {
                    Error::Policy(format!("{name} does not implement {CONTRACT}; it exports [{}]", exports.join(", ")))
                }
            }
        })?;
        Ok(Policy { pre, engine, name: name.into(), digest: Digest::of(bytes) })
    }

    /// The built-in default policy.
    pub fn default_policy(memory: usize, cache_dir: Option<&Path>) -> Result<Policy> {
        Policy::from_bytes(DEFAULT_POLICY, "the built-in policy", memory, cache_dir)
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

    async fn instantiate(
        &self,
        services: &Arc<HostServices>,
        org: Option<&str>,
    ) -> Result<(Store<CallState>, PolicyComponent)> {
        let mut store = Store::new(&self.engine.engine, CallState::new(services.clone(), org.map(str::to_string)));
        store.limiter(|s| s.limiter());
        store.set_fuel(services.config.limits.fuel).map_err(|e| Error::Internal(e.to_string()))?;
        let instance = self.pre.instantiate_async(&mut store).await.map_err(|e| self.trap(e, &services.config))?;
        Ok((store, instance))
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
        if let Some(host_err) = e.downcast_ref::<Error>() {
            return Error::Policy(format!("{name} was stopped: {host_err}"));
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

    /// Ask the policy to validate the configuration.
    pub async fn check_config(&self, services: &Arc<HostServices>) -> Result<()> {
        let (mut store, instance) = self.instantiate(services, None).await?;
        let result = instance.coffer_storage_policy().call_check_config(&mut store).await;
        self.finish(result, &services.config)
    }

    /// The container (bucket) the policy gives `org`.
    pub async fn container_name(&self, services: &Arc<HostServices>, org: &str) -> Result<String> {
        let (mut store, instance) = self.instantiate(services, Some(org)).await?;
        let result = instance.coffer_storage_policy().call_container_name(&mut store, org).await;
        self.finish(result, &services.config)
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
    ) -> Result<(PutOutcome, Vec<Reservation>)> {
        let (mut store, instance) = self.instantiate(services, Some(org)).await?;
        store.data_mut().put_content = Some(content.clone());
        let handle = store
            .data_mut()
            .table()
            .push(ContentHandle(content.clone()))
            .map_err(|e| Error::Internal(format!("content handle: {e}")))?;
        let result = instance.coffer_storage_policy().call_put(&mut store, org, handle).await;
        let reservations = std::mem::take(&mut store.data_mut().reservations);
        let outcome: types::PutOutcome = match self.finish(result, &services.config) {
            Ok(o) => o,
            Err(e) => {
                Reservation::release_all(reservations).await;
                return Err(e);
            }
        };
        let location = convert::location_from_wit(outcome.location);
        if !store.data().verified.contains(&location) {
            Reservation::release_all(reservations).await;
            return Err(Error::Policy(format!(
                "{} reported {location} for the content, but neither wrote it there nor found it there",
                self.name
            )));
        }
        Ok((PutOutcome { location, deduplicated: outcome.deduplicated }, reservations))
    }

    /// Ask whether `org` may perform `op` on `record`.
    pub async fn authorize(
        &self,
        services: &Arc<HostServices>,
        org: &str,
        op: Operation,
        record: &Record,
    ) -> Result<()> {
        let (mut store, instance) = self.instantiate(services, Some(org)).await?;
        let op = match op {
            Operation::Get => types::Operation::Get,
            Operation::Stat => types::Operation::Stat,
            Operation::Link => types::Operation::Link,
            Operation::Delete => types::Operation::Delete,
        };
        let info = convert::object_info(record);
        let result = instance.coffer_storage_policy().call_authorize(&mut store, org, op, &info).await;
        self.finish(result, &services.config)
    }

    /// Time `n` policy decisions: `authorize` for a get of `record`, or
    /// (`put`) the placement decision of a put, `container-name` (what the
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
        let mut warm = if reuse { Some(self.instantiate(services, Some(org)).await?) } else { None };
        for _ in 0..n {
            let start = std::time::Instant::now();
            let mut fresh = None;
            if warm.is_none() {
                fresh = Some(self.instantiate(services, Some(org)).await?);
            }
            let (store, instance) = warm.as_mut().or(fresh.as_mut()).expect("an instance");
            let policy = instance.coffer_storage_policy();
            if put {
                let result = policy.call_container_name(&mut *store, org).await;
                self.finish(result, &services.config)?;
            } else {
                let result = policy.call_authorize(&mut *store, org, types::Operation::Get, &info).await;
                self.finish(result, &services.config)?;
            }
            times.push(start.elapsed());
        }
        Ok(times)
    }

    fn finish<T>(
        &self,
        result: wasmtime::Result<std::result::Result<T, types::Error>>,
        config: &crate::config::Config,
    ) -> Result<T> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(convert::error_from_wit(e)),
            Err(trap) => Err(self.trap(trap, config)),
        }
    }
}
