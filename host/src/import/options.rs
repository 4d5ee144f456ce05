//! What `coffer import` is asked to do, and what it did.

use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};
use serde::Serialize;

/// A store to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// A Request Tracker external-storage bucket (objects under `prefix`),
    /// adopted in place for `org`.
    RequestTracker { bucket: String, prefix: String, org: String },
    /// OpenKAT Bytes with a bucket per organisation: `prefix + org` for
    /// each of `orgs`.
    OpenKatBuckets { prefix: String, orgs: Vec<String> },
    /// OpenKAT Bytes with one bucket and `org/raw-id` keys: every
    /// organisation found, or only `orgs`.
    OpenKatBucket { bucket: String, orgs: Vec<String> },
    /// A directory: OpenKAT's file layout (`ORG/ID[:3]/ID`) when `org` is
    /// `None`, otherwise every file below it, for `org`.
    Directory { root: PathBuf, org: Option<String> },
}

/// What `coffer import` should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    pub source: ImportSource,
    /// Where the mapping lines go (copies only; required for them).
    pub mapping: Option<PathBuf>,
    /// Request Tracker: confirm every object by reading its bytes, even
    /// when the server reports a checksum.
    pub deep: bool,
    /// Objects imported at once.
    pub jobs: usize,
}

/// What `coffer import` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    pub source: String,
    /// Objects found in the source.
    pub objects: u64,
    /// Recorded now (adopted in place, or copied), and their bytes.
    pub imported: u64,
    pub imported_bytes: u64,
    /// Already recorded (by an earlier run, or the organisation had the
    /// same content already, under another id): nothing stored.
    pub already: u64,
    /// Objects that are not the source's kind (a key that is not a digest,
    /// a file outside the layout): left alone.
    pub skipped: u64,
    /// Could not be imported (see `errors`): nothing recorded for them.
    pub failed: u64,
    /// Of those, how many hold other bytes than their key or id promises
    /// (a permanent finding: importing again does not change it).
    pub corrupt: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    pub elapsed_secs: f64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl ImportReport {
    pub(super) fn error(&mut self, what: String, e: &Error) {
        tracing::warn!(error = %what, "import");
        self.failed += 1;
        if e.kind() == ErrorKind::Integrity {
            self.corrupt += 1;
        }
        crate::gc::keep_line(&mut self.errors, format!("{what}: {e}"));
    }

    /// The run's outcome: an [`Error::Integrity`] when objects hold other
    /// bytes than their keys promise (running again will not help), an
    /// error worth retrying when others failed, `Ok` when none did.
    pub fn outcome(&self) -> Result<()> {
        if self.corrupt > 0 {
            return Err(Error::Integrity(format!(
                "{} objects hold other bytes than their keys promise (listed in the summary): they were not \
                 imported, and running again will not change that",
                self.corrupt
            )));
        }
        match self.failed {
            0 => Ok(()),
            n => Err(Error::Backend {
                message: format!("{n} objects could not be imported (listed in the summary); run it again"),
                retryable: true,
                source: None,
            }),
        }
    }

    pub(super) fn skip(&mut self, what: String) {
        self.skipped += 1;
        crate::gc::keep_line(&mut self.warnings, what);
    }
}

/// What happened to one object.
pub(super) enum Imported {
    Now(u64),
    Already,
}
