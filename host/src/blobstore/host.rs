//! The `wasi:blobstore` imports, each a thin call into Coffer's named
//! objects ([`crate::named`]) for the context's organisation, its error
//! turned into the plugin's string in one place (`ctx.rs`), and
//! [`add_to_linker`], which wires them into a platform's linker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::bindings::wasi::blobstore::{blobstore, container, types};
use super::ctx::{Blobstore, Open, error_string};
use super::resources::{ContainerHandle, IncomingValue, MAX_NAMES_PER_VALUE, NameStream, OutgoingValue, Writing};
use super::streams::{BodyWriter, End, Failure, IN_FLIGHT, ValueReader};
use crate::content::{ByteStream, Content};
use crate::error::{Error, Result};

/// Names fetched from the catalog at a time by `list-objects`.
const LIST_PAGE: usize = 1000;

/// Most names one `read-stream-object-names` (or `skip`) takes, whatever
/// it asks.
const MAX_NAMES_PER_READ: u64 = 1000;

/// `Ok(Err(string))` for a failed operation: the plugin's error.
type Answer<T> = wasmtime::Result<std::result::Result<T, String>>;

fn answer<T>(r: Result<T>) -> Answer<T> {
    Ok(r.map_err(|e| error_string(&e)))
}

/// The stream the spooling task reads: the plugin's writes, stopped with
/// an error at the first byte past `limit` (which `why` names).
fn received(rx: mpsc::Receiver<Bytes>, (limit, why): (u64, &'static str)) -> ByteStream {
    Box::pin(futures_util::stream::unfold((rx, 0u64, false), move |(mut rx, total, over)| async move {
        if over {
            return None;
        }
        let chunk = rx.recv().await?;
        let total = total + chunk.len() as u64;
        if total > limit {
            let e = Error::InvalidInput(format!("the value is over {why}: {limit} bytes"));
            return Some((Err(e), (rx, total, true)));
        }
        Some((Ok(chunk), (rx, total, false)))
    }))
}

impl Blobstore<'_> {
    fn container_name(&self, handle: &Resource<ContainerHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(handle)?.name.clone())
    }

    async fn read_names(&mut self, this: &Resource<NameStream>, want: u64) -> Answer<(Vec<String>, bool)> {
        let want = want.min(MAX_NAMES_PER_READ) as usize;
        let (coffer, org) = (self.ctx.coffer.clone(), self.ctx.org.clone());
        let s = self.table.get_mut(this)?;
        while s.buffered.len() < want && !s.exhausted {
            // What is asked for and one more (to tell the end): never more
            // than a read's worth of names is held.
            let limit = (want - s.buffered.len() + 1).min(LIST_PAGE);
            let page = match coffer.list_named(&org, &s.container, &s.after, limit).await {
                Ok(page) => page,
                Err(e) => return answer(Err(e)),
            };
            s.exhausted = page.len() < limit;
            if let Some(last) = page.last() {
                s.after = last.name.clone();
            }
            s.buffered.extend(page.into_iter().map(|n| n.name));
        }
        let n = want.min(s.buffered.len());
        let names: Vec<String> = s.buffered.drain(..n).collect();
        Ok(Ok((names, s.exhausted && s.buffered.is_empty())))
    }
}

impl types::Host for Blobstore<'_> {}
impl container::Host for Blobstore<'_> {}

impl types::HostOutgoingValue for Blobstore<'_> {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        // The contract gives this no error to return: past the limit, the
        // value gets no body stream and no task, and `finish` says why.
        let slot = match self.ctx.slot(Open::Write) {
            Ok(slot) => slot,
            Err(e) => {
                let value = OutgoingValue { state: Writing::Refused(error_string(&e)), names: Vec::new() };
                return Ok(self.table.push(value)?);
            }
        };
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let failure: Failure = Arc::new(Mutex::new(None));
        // Values over 4 MiB are spooled within the host's one budget
        // (`Coffer::spool`), shared with every other upload.
        let spool = self.ctx.coffer.spool().clone();
        let stream = received(rx, self.ctx.value_limit());
        let why = failure.clone();
        let spooled = tokio::spawn(async move {
            let content = Content::from_stream(stream, None, 0, &spool).await;
            if let Err(e) = &content {
                *why.lock().unwrap_or_else(|e| e.into_inner()) = Some(error_string(e));
            }
            content
        });
        let writing = Writing::Open { body: Some(BodyWriter { tx, failure }), spooled, _slot: slot };
        Ok(self.table.push(OutgoingValue { state: writing, names: Vec::new() })?)
    }

    async fn outgoing_value_write_body(
        &mut self,
        this: Resource<OutgoingValue>,
    ) -> wasmtime::Result<std::result::Result<Resource<DynOutputStream>, ()>> {
        let Writing::Open { body, .. } = &mut self.table.get_mut(&this)?.state else { return Ok(Err(())) };
        let Some(body) = body.take() else { return Ok(Err(())) };
        // A child of the value: finishing or dropping the value while its
        // stream is open traps, as the contract says.
        let stream: DynOutputStream = Box::new(body);
        Ok(Ok(self.table.push_child(stream, &this)?))
    }

    async fn finish(&mut self, this: Resource<OutgoingValue>) -> Answer<()> {
        let OutgoingValue { state, names } = self.table.delete(this)?;
        let (body, spooled, slot) = match state {
            Writing::Open { body, spooled, _slot } => (body, spooled, _slot),
            Writing::Refused(why) => return Ok(Err(why)),
        };
        // The end of the body, if its stream was never taken.
        drop(body);
        let content = match spooled.await {
            Ok(Ok(content)) => content,
            Ok(Err(e)) => return answer(Err(e)),
            Err(e) => return answer(Err(Error::Internal(format!("spooling the value: {e}")))),
        };
        if names.is_empty() {
            tracing::debug!("an outgoing value was finished without write-data: nothing is stored");
        }
        // Every name is tried; the first failure is the answer.
        let mut first = None;
        for (container, name) in names {
            if let Err(e) = self.ctx.coffer.put_named(&self.ctx.org, &container, &name, content.clone()).await {
                first.get_or_insert(e);
            }
        }
        drop(slot);
        answer(first.map_or(Ok(()), Err))
    }

    async fn drop(&mut self, this: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        // Dropped without `finish`: nothing is stored; the spooling task
        // ends with the body's channel and its spool file is removed.
        self.table.delete(this)?;
        Ok(())
    }
}

impl types::HostIncomingValue for Blobstore<'_> {
    async fn incoming_value_consume_sync(&mut self, this: Resource<IncomingValue>) -> Answer<Vec<u8>> {
        let value = self.table.delete(this)?;
        let max = self.ctx.limits.max_sync_read;
        if value.len > max {
            return answer(Err(Error::InvalidInput(format!(
                "the value is {} bytes, over the {max} bytes incoming-value-consume-sync returns in one list; \
                 read it as a stream with incoming-value-consume-async",
                value.len
            ))));
        }
        let mut out = Vec::with_capacity(value.len as usize);
        let mut stream = match value.open.stream(value.start, value.end).await {
            Ok(s) => s,
            Err(e) => return answer(Err(e)),
        };
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => return answer(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    async fn incoming_value_consume_async(
        &mut self,
        this: Resource<IncomingValue>,
    ) -> Answer<Resource<DynInputStream>> {
        // Refused before the value is taken: the plugin may close a stream
        // and try again.
        let stream_slot = match self.ctx.slot(Open::Stream) {
            Ok(slot) => slot,
            Err(e) => return answer(Err(e)),
        };
        let value = self.table.delete(this)?;
        let stream = match value.open.stream(value.start, value.end).await {
            Ok(s) => s,
            Err(e) => return answer(Err(e)),
        };
        let reader: DynInputStream = Box::new(ValueReader {
            stream,
            buffered: Bytes::new(),
            end: End::Open,
            _open: value.open,
            _slots: (value.slot, stream_slot),
        });
        Ok(Ok(self.table.push(reader)?))
    }

    async fn size(&mut self, this: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&this)?.len)
    }

    async fn drop(&mut self, this: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl container::HostContainer for Blobstore<'_> {
    async fn name(&mut self, this: Resource<ContainerHandle>) -> Answer<String> {
        Ok(Ok(self.container_name(&this)?))
    }

    async fn info(&mut self, this: Resource<ContainerHandle>) -> Answer<types::ContainerMetadata> {
        let name = self.container_name(&this)?;
        answer(
            self.ctx
                .coffer
                .container_created(&self.ctx.org, &name)
                .await
                .map(|created_at| types::ContainerMetadata { name, created_at }),
        )
    }

    async fn get_data(
        &mut self,
        this: Resource<ContainerHandle>,
        name: String,
        start: u64,
        end: u64,
    ) -> Answer<Resource<IncomingValue>> {
        let container = self.container_name(&this)?;
        let slot = match self.ctx.slot(Open::Read) {
            Ok(slot) => slot,
            Err(e) => return answer(Err(e)),
        };
        let opened = self.ctx.coffer.open_named(&self.ctx.org, &container, &name).await;
        let (open, len) = match opened.and_then(|open| open.range_len(start, end).map(|len| (open, len))) {
            Ok(found) => found,
            Err(e) => return answer(Err(e)),
        };
        Ok(Ok(self.table.push(IncomingValue { open, start, end, len, slot })?))
    }

    async fn write_data(
        &mut self,
        this: Resource<ContainerHandle>,
        name: String,
        data: Resource<OutgoingValue>,
    ) -> Answer<()> {
        let container = self.container_name(&this)?;
        if let Err(e) = crate::catalog::named::validate_name("object", &name) {
            return answer(Err(e));
        }
        // Refused now if the container is gone; checked again when stored.
        if let Err(e) = self.ctx.coffer.container_created(&self.ctx.org, &container).await {
            return answer(Err(e));
        }
        let names = &mut self.table.get_mut(&data)?.names;
        if names.len() >= MAX_NAMES_PER_VALUE {
            let e = Error::InvalidInput(format!("a value is written under at most {MAX_NAMES_PER_VALUE} names"));
            return answer(Err(e));
        }
        if !names.contains(&(container.clone(), name.clone())) {
            names.push((container, name));
        }
        Ok(Ok(()))
    }

    async fn list_objects(&mut self, this: Resource<ContainerHandle>) -> Answer<Resource<NameStream>> {
        let container = self.container_name(&this)?;
        if let Err(e) = self.ctx.coffer.container_created(&self.ctx.org, &container).await {
            return answer(Err(e));
        }
        let _slot = match self.ctx.slot(Open::Read) {
            Ok(slot) => slot,
            Err(e) => return answer(Err(e)),
        };
        let stream = NameStream { container, after: String::new(), buffered: VecDeque::new(), exhausted: false, _slot };
        Ok(Ok(self.table.push(stream)?))
    }

    async fn delete_object(&mut self, this: Resource<ContainerHandle>, name: String) -> Answer<()> {
        let container = self.container_name(&this)?;
        answer(self.ctx.coffer.delete_named(&self.ctx.org, &container, &[name]).await)
    }

    async fn delete_objects(&mut self, this: Resource<ContainerHandle>, names: Vec<String>) -> Answer<()> {
        let container = self.container_name(&this)?;
        answer(self.ctx.coffer.delete_named(&self.ctx.org, &container, &names).await)
    }

    async fn has_object(&mut self, this: Resource<ContainerHandle>, name: String) -> Answer<bool> {
        let container = self.container_name(&this)?;
        answer(self.ctx.coffer.find_named(&self.ctx.org, &container, &name).await.map(|n| n.is_some()))
    }

    async fn object_info(&mut self, this: Resource<ContainerHandle>, name: String) -> Answer<types::ObjectMetadata> {
        let container = self.container_name(&this)?;
        answer(self.ctx.coffer.named(&self.ctx.org, &container, &name).await.map(|n| types::ObjectMetadata {
            name: n.name,
            container: n.container,
            created_at: n.created_at,
            size: n.size,
        }))
    }

    async fn clear(&mut self, this: Resource<ContainerHandle>) -> Answer<()> {
        let container = self.container_name(&this)?;
        answer(self.ctx.coffer.clear_container(&self.ctx.org, &container).await)
    }

    async fn drop(&mut self, this: Resource<ContainerHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl container::HostStreamObjectNames for Blobstore<'_> {
    async fn read_stream_object_names(&mut self, this: Resource<NameStream>, len: u64) -> Answer<(Vec<String>, bool)> {
        self.read_names(&this, len).await
    }

    async fn skip_stream_object_names(&mut self, this: Resource<NameStream>, num: u64) -> Answer<(u64, bool)> {
        // Bounded per call, as reads are.
        let num = num.min(MAX_NAMES_PER_READ);
        let mut skipped = 0;
        loop {
            let (names, end) = match self.read_names(&this, num - skipped).await? {
                Ok(page) => page,
                Err(e) => return Ok(Err(e)),
            };
            skipped += names.len() as u64;
            if end || skipped >= num || names.is_empty() {
                return Ok(Ok((skipped, end)));
            }
        }
    }

    async fn drop(&mut self, this: Resource<NameStream>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl blobstore::Host for Blobstore<'_> {
    async fn create_container(&mut self, name: String) -> Answer<Resource<ContainerHandle>> {
        if let Err(e) = self.ctx.coffer.create_container(&self.ctx.org, &name).await {
            return answer(Err(e));
        }
        Ok(Ok(self.table.push(ContainerHandle { name })?))
    }

    async fn get_container(&mut self, name: String) -> Answer<Resource<ContainerHandle>> {
        if let Err(e) = self.ctx.coffer.container_created(&self.ctx.org, &name).await {
            return answer(Err(e));
        }
        Ok(Ok(self.table.push(ContainerHandle { name })?))
    }

    async fn delete_container(&mut self, name: String) -> Answer<()> {
        answer(self.ctx.coffer.delete_container(&self.ctx.org, &name).await)
    }

    async fn container_exists(&mut self, name: String) -> Answer<bool> {
        answer(self.ctx.coffer.container_exists(&self.ctx.org, &name).await)
    }

    async fn copy_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> Answer<()> {
        let (from, to) =
            ((src.container.as_str(), src.object.as_str()), (dest.container.as_str(), dest.object.as_str()));
        answer(self.ctx.coffer.copy_named(&self.ctx.org, from, to, false).await.map(|_| ()))
    }

    async fn move_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> Answer<()> {
        let (from, to) =
            ((src.container.as_str(), src.object.as_str()), (dest.container.as_str(), dest.object.as_str()));
        answer(self.ctx.coffer.copy_named(&self.ctx.org, from, to, true).await.map(|_| ()))
    }
}

struct HasBlobstore;

impl HasData for HasBlobstore {
    type Data<'a> = Blobstore<'a>;
}

/// Add `wasi:blobstore` to `linker`; `view` gives each call the store's
/// [`Blobstore`] view. The `wasi:io` interfaces come from wasmtime-wasi
/// (`wasmtime_wasi::p2::add_to_linker_async`), on the same table.
///
/// ```no_run
/// # use wasmtime::component::{Linker, ResourceTable};
/// # use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
/// # use coffer::blobstore::{self, Blobstore, BlobstoreCtx};
/// struct Plugin { wasi: WasiCtx, blobs: BlobstoreCtx, table: ResourceTable }
/// impl WasiView for Plugin {
///     fn ctx(&mut self) -> WasiCtxView<'_> { WasiCtxView { ctx: &mut self.wasi, table: &mut self.table } }
/// }
/// # fn demo(engine: &wasmtime::Engine) -> wasmtime::Result<()> {
/// let mut linker = Linker::<Plugin>::new(engine);
/// wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
/// blobstore::add_to_linker(&mut linker, |p: &mut Plugin| Blobstore { ctx: &p.blobs, table: &mut p.table })?;
/// # Ok(()) }
/// ```
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Blobstore<'_>,
) -> wasmtime::Result<()> {
    super::bindings::wasi::blobstore::types::add_to_linker::<T, HasBlobstore>(linker, view)?;
    super::bindings::wasi::blobstore::container::add_to_linker::<T, HasBlobstore>(linker, view)?;
    super::bindings::wasi::blobstore::blobstore::add_to_linker::<T, HasBlobstore>(linker, view)?;
    Ok(())
}
