//! The host side of the contract: the per-call state a guest runs with,
//! and thin implementations of the imports that look things up, check the
//! organisation's boundary, and delegate to the catalog and backends.

use std::collections::HashSet;
use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::coffer::storage::{host, store, types};
use super::convert;
use crate::backend::{Backends, Location};
use crate::catalog::Catalog;
use crate::catalog::lifecycle::{Lifecycle, Reservation};
use crate::config::Config;
use crate::content::Content;
use crate::error::{Error, Result};

/// What every call shares: configuration, catalog, backends, and the
/// lifecycle of locations built on them.
#[derive(Debug)]
pub struct HostServices {
    pub config: Config,
    pub catalog: Arc<dyn Catalog>,
    pub backends: Backends,
    pub lifecycle: Arc<Lifecycle>,
}

/// The content resource as the guest holds it.
#[derive(Debug)]
pub struct ContentHandle(pub Content);

/// The state of one policy call: for one organisation, with its own
/// resource table, an empty WASI context (no files, network, environment
/// or stdio), memory limits, and the locations the host has seen hold the
/// content during this call.
pub struct CallState {
    org: Option<String>,
    services: Arc<HostServices>,
    table: ResourceTable,
    wasi: WasiCtx,
    limits: StoreLimits,
    host_calls_left: u32,
    /// Locations proven (by lookup, head or write in this call) to hold
    /// the content being put. The host accepts a put outcome only for one
    /// of these.
    pub(super) verified: HashSet<Location>,
    /// The content being put, during a put.
    pub(super) put_content: Option<Content>,
    /// The locations this put reserved (before looking or writing there),
    /// so no delete can take their bytes until the put commits or
    /// releases them.
    pub(super) reservations: Vec<Reservation>,
}

impl std::fmt::Debug for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallState").field("org", &self.org).finish_non_exhaustive()
    }
}

impl CallState {
    pub(super) fn new(services: Arc<HostServices>, org: Option<String>) -> CallState {
        let limits = services.config.limits;
        CallState {
            org,
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().build(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(limits.memory)
                // Generous enough for language runtimes (componentize-py
                // components hold a dozen core instances); memory is what
                // is really bounded.
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            host_calls_left: limits.host_calls,
            services,
            verified: HashSet::new(),
            put_content: None,
            reservations: Vec::new(),
        }
    }

    pub(super) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    fn org(&self) -> Result<&str> {
        self.org
            .as_deref()
            .ok_or_else(|| Error::Policy("store operations act for an organisation; check-config has none".into()))
    }

    /// Count a store operation against the per-call budget, so a guest
    /// cannot keep the host busy with I/O forever.
    fn spend_host_call(&mut self) -> Result<()> {
        if self.host_calls_left == 0 {
            return Err(Error::Policy(format!(
                "the policy made more than {} store calls in one operation",
                self.services.config.limits.host_calls
            )));
        }
        self.host_calls_left -= 1;
        Ok(())
    }

    /// Refuse locations another organisation owns: the host, not the
    /// guest, keeps tenants apart.
    async fn check_boundary(&mut self, at: &Location) -> Result<()> {
        let org = self.org()?;
        let owners = self.services.catalog.owners(at).await?;
        if !owners.is_empty() && !owners.iter().any(|o| o == org) {
            return Err(Error::Denied(format!("{at} belongs to another organisation")));
        }
        Ok(())
    }

    async fn lookup(&mut self, sha256: String) -> Result<Option<types::ObjectInfo>> {
        self.spend_host_call()?;
        let org = self.org()?.to_string();
        let digest = sha256.parse()?;
        let record = self.services.catalog.lookup(&org, &digest).await?;
        if let Some(r) = &record {
            self.verified.insert(r.location.clone());
        }
        Ok(record.map(|r| convert::object_info(&r)))
    }

    /// The index of this put's reservation of `at`, reserving it first if
    /// needed (waiting while the location's bytes are being deleted).
    async fn reservation_for(&mut self, at: &Location, content: &Content) -> Result<usize> {
        if let Some(i) = self.reservations.iter().position(|r| r.location() == at) {
            return Ok(i);
        }
        let org = self.org()?.to_string();
        let r = self.services.lifecycle.reserve(&org, content.sha256(), content.size(), at).await?;
        self.reservations.push(r);
        Ok(self.reservations.len() - 1)
    }

    async fn head(&mut self, at: types::Location) -> Result<Option<u64>> {
        self.spend_host_call()?;
        let at = convert::location_from_wit(at);
        let store = self.services.backends.get(at.backend)?.clone();
        let Some(content) = self.put_content.clone() else {
            // Outside a put there is nothing to confirm: just the size.
            self.check_boundary(&at).await?;
            return Ok(store.head(&at.container, &at.name).await?.map(|m| m.size));
        };
        // Reserved before looking (the reservation refuses another
        // organisation's location): what is found cannot be deleted before
        // this put commits or lets go.
        let i = self.reservation_for(&at, &content).await?;
        match store.head(&at.container, &at.name).await? {
            None => Ok(None),
            Some(meta) => {
                // Same size is not enough: the digest must be confirmed.
                meta.confirm(&at, &content)?;
                // If this put lets go, these bytes may be the last copy
                // anyone refers to: releasing then deletes them (they are
                // confirmed to be this content).
                self.reservations[i].mark_written();
                self.verified.insert(at);
                Ok(Some(meta.size))
            }
        }
    }

    async fn ensure_container(&mut self, backend: types::Backend, container: String) -> Result<()> {
        self.spend_host_call()?;
        self.org()?;
        let kind = convert::backend_from_wit(backend);
        self.services.backends.get(kind)?.ensure_container(&container).await
    }

    async fn write(&mut self, at: types::Location, body: &Resource<ContentHandle>) -> Result<bool> {
        self.spend_host_call()?;
        let at = convert::location_from_wit(at);
        let content = self.table.get(body).map_err(|e| Error::Policy(format!("bad content handle: {e}")))?.0.clone();
        let store = self.services.backends.get(at.backend)?.clone();
        let i = self.reservation_for(&at, &content).await?;
        let reservation = &mut self.reservations[i];
        // Marked before the write: if the call is cancelled mid-upload, the
        // server may still store the bytes, and releasing the reservation
        // must then delete them (only ever bytes confirmed to be this
        // content, and only when nothing else refers to them).
        reservation.mark_written();
        let written = reservation.keep_alive(store.put(&at.container, &at.name, &content)).await?;
        self.verified.insert(at);
        Ok(written)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for CallState {}

impl store::HostContent for CallState {
    async fn describe(&mut self, this: Resource<ContentHandle>) -> wasmtime::Result<types::ContentInfo> {
        let c = &self.table.get(&this)?.0;
        Ok(types::ContentInfo {
            sha256: c.sha256().to_string(),
            size: c.size(),
            content_type: c.content_type().to_string(),
        })
    }

    async fn peek(&mut self, this: Resource<ContentHandle>, max_len: u32) -> wasmtime::Result<Vec<u8>> {
        let content = self.table.get(&this)?.0.clone();
        let peeked = tokio::task::spawn_blocking(move || content.peek(max_len as usize)).await??;
        Ok(peeked)
    }

    async fn drop(&mut self, this: Resource<ContentHandle>) -> wasmtime::Result<()> {
        // The host owns the handle and removes it after the call; a guest
        // dropping its borrow changes nothing.
        let _ = this;
        Ok(())
    }
}

impl store::Host for CallState {
    async fn backends(&mut self) -> wasmtime::Result<Vec<types::Backend>> {
        Ok(self.services.backends.kinds().into_iter().map(convert::backend_to_wit).collect())
    }

    async fn lookup(&mut self, sha256: String) -> wasmtime::Result<Result<Option<types::ObjectInfo>, types::Error>> {
        Ok(CallState::lookup(self, sha256).await.map_err(|e| convert::error_to_wit(&e)))
    }

    async fn head(&mut self, at: types::Location) -> wasmtime::Result<Result<Option<u64>, types::Error>> {
        Ok(CallState::head(self, at).await.map_err(|e| convert::error_to_wit(&e)))
    }

    async fn ensure_container(
        &mut self,
        backend: types::Backend,
        container: String,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        Ok(CallState::ensure_container(self, backend, container).await.map_err(|e| convert::error_to_wit(&e)))
    }

    async fn write(
        &mut self,
        at: types::Location,
        body: Resource<ContentHandle>,
    ) -> wasmtime::Result<Result<bool, types::Error>> {
        Ok(CallState::write(self, at, &body).await.map_err(|e| convert::error_to_wit(&e)))
    }
}

impl host::Host for CallState {
    async fn setting(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.services.config.setting(self.org.as_deref(), &name))
    }

    async fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::now_secs())
    }

    async fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        // Bounded, so a guest cannot flood the log with one call.
        let message: String = message.chars().take(1024).collect();
        let org = self.org.as_deref().unwrap_or("-");
        match level {
            host::Level::Debug => tracing::debug!(target: "coffer::policy", org, "{message}"),
            host::Level::Info => tracing::info!(target: "coffer::policy", org, "{message}"),
            host::Level::Warn => tracing::warn!(target: "coffer::policy", org, "{message}"),
            host::Level::Error => tracing::error!(target: "coffer::policy", org, "{message}"),
        }
        Ok(())
    }
}
