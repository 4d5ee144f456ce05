//! The host side of the contract: the per-call state a guest runs with,
//! and thin implementations of the imports that look things up, check the
//! organisation's boundary, and delegate to the catalog and backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::ContentHandle;
use super::bindings::coffer::storage::{host, store, types};
use super::convert;
use super::limits::{CallLimiter, GuestClock, IoBudget};
use super::share::{Share, TenantShares};
use crate::backend::{Backends, Location};
use crate::catalog::Catalog;
use crate::catalog::Namespace;
use crate::catalog::boundaries::Boundaries;
use crate::catalog::lifecycle::{Lifecycle, Reservation};
use crate::config::Config;
use crate::content::Content;
use crate::error::{Error, Result};

/// What every call shares: configuration, catalog, backends, the
/// lifecycle of locations built on them, and the organisations'
/// boundaries.
#[derive(Debug)]
pub struct HostServices {
    pub config: Config,
    pub catalog: Arc<dyn Catalog>,
    pub backends: Backends,
    pub lifecycle: Arc<Lifecycle>,
    pub boundaries: Boundaries,
    /// Each organisation's share of the sandbox (instances and CPU).
    pub shares: Arc<TenantShares>,
}

/// Host errors kept back from the guest, at most this many per call.
const WITHHELD: usize = 16;

/// Longest container and object name a policy may pass to the store.
const MAX_CONTAINER: usize = 255;
const MAX_NAME: usize = 1024;
/// Locations one put may reserve (look at or write to): its place, and a
/// fallback (say, the database while S3 is down).
const MAX_WRITES: usize = 2;
/// Longest setting name a policy may ask for.
const MAX_SETTING_NAME: usize = 128;
/// Entries in one call's resource table (content handles, and the WASI
/// streams, pollables and the like a guest opens): a guest that opens
/// more is stopped.
pub(super) const MAX_RESOURCES: usize = 1024;
/// Transitions to the host one call may make, per storage or log import
/// it may make: WASI imports (clocks, random, streams) and the runtime's
/// own calls (growing memory, each epoch tick) count here.
pub(super) const TRANSITIONS_PER_HOST_CALL: u32 = 16;
/// Transitions one call may make however few storage calls are allowed
/// (a guest's own start-up and memory growth need some).
const MIN_TRANSITIONS: u32 = 1024;

/// Transitions to the host one call may make, for a budget of `host_calls`.
pub(super) fn transition_budget(host_calls: u32) -> u32 {
    host_calls.saturating_mul(TRANSITIONS_PER_HOST_CALL).max(MIN_TRANSITIONS)
}

/// The state of one policy call: for one organisation, with its own
/// resource table, an empty WASI context (no files, network, environment
/// or stdio), memory limits, and the locations the host has seen hold the
/// content during this call.
pub struct CallState {
    org: Option<String>,
    services: Arc<HostServices>,
    table: ResourceTable,
    wasi: WasiCtx,
    limits: CallLimiter,
    host_calls_left: u32,
    /// Transitions to the host left (see [`TRANSITIONS_PER_HOST_CALL`]).
    transitions_left: u32,
    /// Time the storage lookups of this call may still wait on I/O.
    io: IoBudget,
    /// The organisation's share this call runs in (CPU charged to it).
    pub(super) share: Option<Share>,
    /// The guest's own time; host I/O in the imports below is left out.
    pub(super) clock: Arc<GuestClock>,
    /// The organisation's namespaces, as the deployment's policy declares
    /// them; store calls must stay inside them (only a put has any).
    namespaces: Vec<Namespace>,
    /// Host errors as the guest saw them (scrubbed), with the full error
    /// the host reports instead if the guest passes one on.
    withheld: Vec<(String, Error)>,
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
    /// A put that moves an existing record (`coffer migrate`): `lookup`
    /// answers none, so the policy places the content as it would place
    /// it new, instead of pointing at the record being moved.
    pub(super) relocating: bool,
    /// An S3 store call of this put failed as unavailable; an outcome in
    /// the database is then a parked object.
    pub(super) s3_unavailable: bool,
}

impl Drop for CallState {
    /// The call's own time not charged yet goes to its organisation's
    /// share.
    fn drop(&mut self) {
        let used = self.clock.charged();
        if let Some(share) = self.share.as_mut() {
            share.charge(used);
        }
    }
}

impl std::fmt::Debug for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallState").field("org", &self.org).finish_non_exhaustive()
    }
}

impl CallState {
    pub(super) fn new(services: Arc<HostServices>, org: Option<String>, namespaces: Vec<Namespace>) -> CallState {
        let limits = services.config.limits;
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        CallState {
            org,
            table,
            transitions_left: transition_budget(limits.host_calls),
            io: IoBudget::new(Duration::from_millis(limits.host_io_ms)),
            share: None,
            // Random bytes are a host loop: a few KiB per call at most.
            wasi: WasiCtx::builder().max_random_size(4096).build(),
            limits: CallLimiter::new(limits.memory),
            host_calls_left: limits.host_calls,
            clock: GuestClock::start(),
            namespaces,
            withheld: Vec::new(),
            services,
            verified: HashSet::new(),
            put_content: None,
            reservations: Vec::new(),
            relocating: false,
            s3_unavailable: false,
        }
    }

    /// A new call's budget and clock, for the benchmarks' reused instance.
    pub(super) fn refill(&mut self) {
        self.host_calls_left = self.services.config.limits.host_calls;
        self.transitions_left = transition_budget(self.host_calls_left);
        self.io = IoBudget::new(Duration::from_millis(self.services.config.limits.host_io_ms));
        self.clock = GuestClock::start();
    }

    pub(super) fn services(&self) -> &HostServices {
        &self.services
    }

    pub(super) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The full host error behind `e`, if `e` is one the guest was given
    /// (scrubbed) and passed on unchanged.
    pub(super) fn withheld(&mut self, e: &types::Error) -> Option<Error> {
        let seen = format!("{e:?}");
        let i = self.withheld.iter().position(|(w, _)| *w == seen)?;
        Some(self.withheld.swap_remove(i).1)
    }

    /// `e` as the guest may see it; the full error is kept for the host's
    /// caller.
    fn for_guest(&mut self, e: Error) -> types::Error {
        let scrubbed = convert::error_to_wit(&e);
        if self.withheld.len() == WITHHELD {
            self.withheld.remove(0);
        }
        self.withheld.push((format!("{scrubbed:?}"), e));
        scrubbed
    }

    fn org(&self) -> Result<&str> {
        self.org
            .as_deref()
            .ok_or_else(|| Error::Policy("store operations act for an organisation; check-config has none".into()))
    }

    /// Count a transition to the host (any import, WASI's included, and
    /// the runtime's own calls) against the call's budget: past it the call
    /// is stopped, so no import loop keeps the host busy.
    pub(super) fn spend_transition(&mut self) -> wasmtime::Result<()> {
        if self.transitions_left == 0 {
            return Err(Error::Policy(format!(
                "made more than {} calls into the host (WASI imports and the runtime's own calls included) in one \
                 operation",
                transition_budget(self.services.config.limits.host_calls)
            ))
            .into());
        }
        self.transitions_left -= 1;
        Ok(())
    }

    /// How long the guest should pause now to keep its organisation within
    /// its CPU share (its own time so far charged to the share).
    pub(super) fn cpu_pause(&mut self) -> Duration {
        let used = self.clock.charged();
        self.share.as_mut().map_or(Duration::ZERO, |s| s.charge(used))
    }

    /// Count a host call against the per-call budget; past it the call is
    /// stopped (a trap, not an error the guest could ignore and loop on),
    /// so a guest cannot keep the host busy with calls of any kind.
    fn spend_host_call(&mut self) -> wasmtime::Result<()> {
        if self.host_calls_left == 0 {
            return Err(Error::Policy(format!(
                "made more than {} host calls in one operation",
                self.services.config.limits.host_calls
            ))
            .into());
        }
        self.host_calls_left -= 1;
        Ok(())
    }

    /// The content being put; `head`, `ensure-container` and `write` act
    /// for a put and are refused outside one.
    fn put_in_progress(&self) -> Result<Content> {
        self.put_content.clone().ok_or_else(|| {
            Error::Denied("head, ensure-container and write act for a put; outside put they are refused".into())
        })
    }

    /// The host's checks before a policy touches `at` for the content being
    /// put: sane lengths (checked first, so nothing the guest sends is
    /// copied into messages or rows at any size), the name carries the
    /// content's digest, and `at` lies in a namespace of the organisation
    /// that no one else holds.
    async fn check_location(&mut self, at: &Location, content: &Content) -> Result<()> {
        if at.container.len() > MAX_CONTAINER || at.name.len() > MAX_NAME {
            return Err(Error::InvalidName(format!(
                "containers have at most {MAX_CONTAINER} bytes and object names at most {MAX_NAME}"
            )));
        }
        if self.reservations.len() >= MAX_WRITES && self.reservations.iter().all(|r| r.location() != at) {
            return Err(Error::Denied(format!("a put may use at most {MAX_WRITES} locations")));
        }
        let digest = content.sha256().to_string();
        if !at.name.contains(&digest) {
            return Err(Error::Denied(format!(
                "{at}: an object name must contain the SHA-256 of the content stored under it ({digest})"
            )));
        }
        let org = self.org()?.to_string();
        let _host = self.clock.in_host();
        self.io.within(self.services.boundaries.check_call(&org, at, &self.namespaces)).await
    }

    async fn lookup(&mut self, sha256: String) -> Result<Option<types::ObjectInfo>> {
        let org = self.org()?.to_string();
        if sha256.len() != 64 {
            return Err(Error::InvalidName("a digest is 64 lowercase hex digits".into()));
        }
        let digest = sha256.parse()?;
        if self.relocating {
            return Ok(None);
        }
        let _host = self.clock.in_host();
        let record = self.io.within(self.services.catalog.lookup(&org, &digest)).await?;
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
        let r = self.io.within(self.services.lifecycle.reserve(&org, content.sha256(), content.size(), at)).await?;
        self.reservations.push(r);
        Ok(self.reservations.len() - 1)
    }

    async fn head(&mut self, at: types::Location) -> Result<Option<u64>> {
        let at = convert::location_from_wit(at);
        let content = self.put_in_progress()?;
        self.check_location(&at, &content).await?;
        let store = self.services.backends.get(at.backend)?.clone();
        let _host = self.clock.in_host();
        // Reserved before looking (the reservation refuses another
        // organisation's location): what is found cannot be deleted before
        // this put commits or lets go.
        let i = self.reservation_for(&at, &content).await?;
        let found = self.io.within(async { Ok(store.head(&at.container, &at.name).await) }).await?;
        match self.note(&at, found)? {
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
        self.put_in_progress()?;
        let org = self.org()?.to_string();
        let kind = convert::backend_from_wit(backend);
        if container.len() > MAX_CONTAINER {
            return Err(Error::InvalidName(format!("containers have at most {MAX_CONTAINER} bytes")));
        }
        let Some(ns) = self.namespaces.iter().find(|n| n.backend == kind && n.container == container).cloned() else {
            return Err(Error::Denied(format!(
                "container {kind}:{container} is not one of organisation {org:?}'s namespaces"
            )));
        };
        let _host = self.clock.in_host();
        let services = &self.services;
        let ensured = self
            .io
            .within(async {
                services.boundaries.hold(&org, &ns).await?;
                Ok(services.backends.get(kind)?.ensure_container(&container).await)
            })
            .await?;
        let at = Location { backend: kind, container: container.clone(), name: String::new() };
        self.note(&at, ensured)
    }

    async fn write(&mut self, at: types::Location, body: &Resource<ContentHandle>) -> Result<bool> {
        let at = convert::location_from_wit(at);
        let content = self.table.get(body).map_err(|e| Error::Policy(format!("bad content handle: {e}")))?.0.clone();
        if self.put_in_progress()?.sha256() != content.sha256() {
            return Err(Error::Denied("write stores the content of the put in progress only".into()));
        }
        self.check_location(&at, &content).await?;
        let store = self.services.backends.get(at.backend)?.clone();
        let _host = self.clock.in_host();
        let i = self.reservation_for(&at, &content).await?;
        let reservation = &mut self.reservations[i];
        // Marked before the write: if the call is cancelled mid-upload, the
        // server may still store the bytes, and releasing the reservation
        // must then delete them (only ever bytes confirmed to be this
        // content, and only when nothing else refers to them).
        reservation.mark_written();
        let written = reservation.keep_alive(store.put(&at.container, &at.name, &content)).await;
        let written = self.note(&at, written)?;
        self.verified.insert(at);
        Ok(written)
    }

    /// Note a store call on S3 that failed as unavailable (what the guest
    /// is told is `unavailable`), as the host saw it, whatever the policy
    /// then says: a database outcome of this put is then recorded as
    /// parked. Only the store's own answer counts, not the reservation
    /// before it.
    fn note<T>(&mut self, at: &Location, answer: Result<T>) -> Result<T> {
        if at.backend == crate::backend::BackendKind::S3
            && matches!(&answer, Err(e) if e.kind() == crate::error::ErrorKind::Unavailable)
        {
            self.s3_unavailable = true;
        }
        answer
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
        self.spend_host_call()?;
        let c = &self.table.get(&this)?.0;
        Ok(types::ContentInfo {
            sha256: c.sha256().to_string(),
            size: c.size(),
            content_type: c.content_type().to_string(),
        })
    }

    async fn peek(&mut self, this: Resource<ContentHandle>, max_len: u32) -> wasmtime::Result<Vec<u8>> {
        // Over budget, the call is stopped: the signature has no error.
        self.spend_host_call()?;
        let content = self.table.get(&this)?.0.clone();
        let _host = self.clock.in_host();
        // Bytes in memory are copied here; only a file is read off the
        // runtime's threads.
        if content.in_memory() {
            return Ok(content.peek(max_len as usize)?);
        }
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
        self.spend_host_call()?;
        Ok(self.services.backends.kinds().into_iter().map(convert::backend_to_wit).collect())
    }

    async fn lookup(&mut self, sha256: String) -> wasmtime::Result<Result<Option<types::ObjectInfo>, types::Error>> {
        self.spend_host_call()?;
        Ok(CallState::lookup(self, sha256).await.map_err(|e| self.for_guest(e)))
    }

    async fn head(&mut self, at: types::Location) -> wasmtime::Result<Result<Option<u64>, types::Error>> {
        self.spend_host_call()?;
        Ok(CallState::head(self, at).await.map_err(|e| self.for_guest(e)))
    }

    async fn ensure_container(
        &mut self,
        backend: types::Backend,
        container: String,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        self.spend_host_call()?;
        Ok(CallState::ensure_container(self, backend, container).await.map_err(|e| self.for_guest(e)))
    }

    async fn write(
        &mut self,
        at: types::Location,
        body: Resource<ContentHandle>,
    ) -> wasmtime::Result<Result<bool, types::Error>> {
        self.spend_host_call()?;
        Ok(CallState::write(self, at, &body).await.map_err(|e| self.for_guest(e)))
    }
}

impl host::Host for CallState {
    async fn setting(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        self.spend_host_call()?;
        if name.len() > MAX_SETTING_NAME {
            return Ok(None);
        }
        Ok(self.services.config.setting(self.org.as_deref(), &name))
    }

    async fn now(&mut self) -> wasmtime::Result<u64> {
        self.spend_host_call()?;
        Ok(crate::clock::now_secs())
    }

    async fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        // Counted (a flood stops the call) and bounded per line.
        self.spend_host_call()?;
        let message = escape_log(&message);
        let org = self.org.as_deref().unwrap_or("-");
        match level {
            host::Level::Debug => tracing::debug!(target: "coffer::policy", org, policy_message = %message),
            host::Level::Info => tracing::info!(target: "coffer::policy", org, policy_message = %message),
            host::Level::Warn => tracing::warn!(target: "coffer::policy", org, policy_message = %message),
            host::Level::Error => tracing::error!(target: "coffer::policy", org, policy_message = %message),
        }
        Ok(())
    }
}

/// A policy's log message as one line the host can print: at most 1024
/// characters, with control characters (line breaks, terminal escapes)
/// and quotes escaped, quoted, so it can never pass for a host log line
/// or a field of one.
pub fn escape_log(message: &str) -> String {
    let mut out = String::from("\"");
    for c in message.chars().take(1024) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Control characters, and what viewers treat as line breaks or
            // use to reorder text.
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.extend(c.escape_default())
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_log_lines_cannot_forge_host_lines() {
        let forged = "ok\n2026-11-23T00:00:00Z ERROR coffer: forged\r\u{1b}[2K\"x\" org=victim";
        let line = escape_log(forged);
        assert!(!line.chars().any(char::is_control), "{line}");
        assert_eq!(line, r#""ok\n2026-11-23T00:00:00Z ERROR coffer: forged\r\u{1b}[2K\"x\" org=victim""#);
        assert_eq!(escape_log(&"x".repeat(5000)).len(), 1026);
        assert_eq!(escape_log("a\u{2028}b\u{202e}c"), r#""a\u{2028}b\u{202e}c""#);
    }
}
