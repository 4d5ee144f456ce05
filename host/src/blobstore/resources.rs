//! The resources a plugin holds: containers, name listings, outgoing and
//! incoming values. Each counts against the context's limits while it
//! lives.

use std::collections::VecDeque;

use super::ctx::Slot;
use super::streams::BodyWriter;
use crate::content::Content;
use crate::error::Result;
use crate::named::OpenNamed;

/// A container resource: the name of one of the organisation's
/// containers (each call checks it still exists).
#[derive(Debug)]
pub struct ContainerHandle {
    pub(super) name: String,
}

/// A `stream-object-names`: pages of a container's names, in name order.
#[derive(Debug)]
pub struct NameStream {
    pub(super) container: String,
    pub(super) after: String,
    pub(super) buffered: VecDeque<String>,
    pub(super) exhausted: bool,
    pub(super) _slot: Slot,
}

/// An outgoing value: its body is spooled and hashed by a task as the
/// plugin writes it; `write-data` adds names to store it under.
#[derive(Debug)]
pub struct OutgoingValue {
    pub(super) state: Writing,
    pub(super) names: Vec<(String, String)>,
}

/// An outgoing value's body, as it is being written.
#[derive(Debug)]
pub(super) enum Writing {
    /// Its stream (until taken) and the task spooling what is written.
    Open { body: Option<BodyWriter>, spooled: tokio::task::JoinHandle<Result<Content>>, _slot: Slot },
    /// Refused a slot (too many open): no stream, and `finish` gives
    /// this error.
    Refused(String),
}

/// Most names one outgoing value may be written under.
pub(super) const MAX_NAMES_PER_VALUE: usize = 16;

/// An incoming value: an open object (its bytes pinned) and the range of
/// it to read.
#[derive(Debug)]
pub struct IncomingValue {
    pub(super) open: OpenNamed,
    /// The range asked for (inclusive), and how many bytes it holds.
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) len: u64,
    pub(super) slot: Slot,
}
