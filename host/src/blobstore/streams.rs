//! The `wasi:io` streams of blobstore values, as wasmtime-wasi's stream
//! traits: an outgoing value's body goes into a bounded channel that a
//! task spools and hashes ([`BodyWriter`]); an incoming value's bytes come
//! from a verified stream ([`ValueReader`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::ctx::{Slot, error_string};
use crate::content::ByteStream;
use crate::named::OpenNamed;

/// Most bytes one write may carry (what `check-write` permits).
pub const WRITE_BUDGET: usize = 256 * 1024;

/// Writes in flight between the plugin and the spooling task: at most
/// `WRITE_BUDGET × IN_FLIGHT` bytes of a value are in memory.
pub const IN_FLIGHT: usize = 8;

/// Why the spooling task stopped early, for the plugin's next write.
pub type Failure = Arc<Mutex<Option<String>>>;

/// The body of an outgoing value.
pub struct BodyWriter {
    pub tx: mpsc::Sender<Bytes>,
    pub failure: Failure,
}

impl BodyWriter {
    fn failed(&self) -> StreamError {
        let why = self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
        StreamError::LastOperationFailed(wasmtime::Error::msg(
            why.unwrap_or_else(|| "the value's body is no longer being received".into()),
        ))
    }
}

#[async_trait::async_trait]
impl Pollable for BodyWriter {
    async fn ready(&mut self) {
        // A permit is free again (or the receiver is gone, which the next
        // call reports).
        let _ = self.tx.reserve().await;
    }
}

impl OutputStream for BodyWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > WRITE_BUDGET {
            return Err(StreamError::trap("write larger than check-write permitted"));
        }
        match self.tx.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(StreamError::trap("write without check-write's permit")),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.failed()),
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Every write is already handed over.
        if self.tx.is_closed() { Err(self.failed()) } else { Ok(()) }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if self.tx.is_closed() {
            return Err(self.failed());
        }
        Ok(if self.tx.capacity() > 0 { WRITE_BUDGET } else { 0 })
    }
}

/// The bytes of an incoming value; it keeps the value open (its bytes
/// pinned) until it is dropped.
pub struct ValueReader {
    pub stream: ByteStream,
    pub buffered: Bytes,
    pub end: End,
    pub _open: OpenNamed,
    /// Counted as an open read and as an open stream.
    pub _slots: (Slot, Slot),
}

/// How a [`ValueReader`]'s stream ended, once it has.
pub enum End {
    Open,
    Closed,
    Failed(Option<String>),
}

#[async_trait::async_trait]
impl Pollable for ValueReader {
    async fn ready(&mut self) {
        if !self.buffered.is_empty() || !matches!(self.end, End::Open) {
            return;
        }
        match self.stream.next().await {
            Some(Ok(chunk)) => self.buffered = chunk,
            Some(Err(e)) => self.end = End::Failed(Some(error_string(&e))),
            None => self.end = End::Closed,
        }
    }
}

impl InputStream for ValueReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if !self.buffered.is_empty() {
            let n = size.min(self.buffered.len());
            return Ok(self.buffered.split_to(n));
        }
        match &mut self.end {
            End::Open => Ok(Bytes::new()),
            End::Closed => Err(StreamError::Closed),
            End::Failed(why) => {
                let why = why.take().unwrap_or_else(|| "the value could not be read".into());
                Err(StreamError::LastOperationFailed(wasmtime::Error::msg(why)))
            }
        }
    }
}

impl std::fmt::Debug for BodyWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyWriter").finish_non_exhaustive()
    }
}
