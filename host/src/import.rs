//! `coffer import`: adopt the stores people already have. Nothing in a
//! source is ever modified or deleted.
//!
//! - **Request Tracker external storage** (one bucket, keys that are the
//!   SHA-256 of the content, no organisations): adopted *in place* for one
//!   organisation. The bucket (or the part under a prefix) becomes a
//!   namespace the organisation holds, marked adopted: Coffer never
//!   deletes bytes there. Each key must be a digest; its object is reserved
//!   (so nothing deletes it meanwhile), its digest confirmed — by the
//!   SHA-256 checksum the server reports, or, when it reports none or with
//!   `deep`, by reading the bytes — and only then recorded.
//! - **OpenKAT Bytes on S3** (a bucket per organisation, `PREFIX + org`, or
//!   one bucket with `org/` keys; object names are raw-file ids) and
//!   **directories** (OpenKAT's file layout `ORG/ID[:3]/ID`, or any tree
//!   for one organisation): each object is read and stored through an
//!   ordinary put (policy, de-duplication, verification), and a mapping
//!   line `{org, raw_id, sha256, size}` is appended to the mapping file
//!   once it is stored, so the platform can update its references. A run
//!   again skips what the mapping file lists and the catalog still has.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::backend::{BackendKind, Location};
use crate::catalog::namespace::{Claimed, Namespace};
use crate::catalog::{Committed, Record};
use crate::coffer::{Coffer, validate_org};
use crate::content::{Content, DEFAULT_CONTENT_TYPE, Digest, verify_stream};
use crate::error::{Error, Result};
use crate::gc::Progress;

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

/// One line of the mapping file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingLine {
    pub org: String,
    pub raw_id: String,
    pub sha256: String,
    pub size: u64,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    pub elapsed_secs: f64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl ImportReport {
    fn error(&mut self, what: String) {
        tracing::warn!(error = %what, "import");
        self.failed += 1;
        crate::gc::keep_line(&mut self.errors, what);
    }

    fn skip(&mut self, what: String) {
        self.skipped += 1;
        crate::gc::keep_line(&mut self.warnings, what);
    }
}

/// What happened to one object.
enum Imported {
    Now(u64),
    Already,
}

/// One object to copy: where it is read from, and what it is to the
/// platform.
#[derive(Debug, Clone)]
struct Item {
    org: String,
    raw_id: String,
    from: From,
    size: u64,
}

#[derive(Debug, Clone)]
enum From {
    S3 { bucket: String, key: String },
    File(PathBuf),
}

/// The mapping file: what earlier runs recorded, and the lines this run
/// appends (each written whole, with `O_APPEND`, once its object is
/// stored).
struct Mapping {
    done: HashMap<(String, String), Digest>,
    file: Option<Mutex<std::fs::File>>,
}

impl Mapping {
    fn open(path: Option<&Path>) -> Result<Mapping> {
        let Some(path) = path else { return Ok(Mapping { done: HashMap::new(), file: None }) };
        let mut done = HashMap::new();
        match std::fs::File::open(path) {
            Ok(f) => {
                for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
                    let line = line.map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    // A line cut short by a crash is the last one; it is
                    // simply done again.
                    let Ok(m) = serde_json::from_str::<MappingLine>(&line) else {
                        tracing::warn!(file = %path.display(), line = n + 1, "skipping a mapping line that does not parse");
                        continue;
                    };
                    if let Ok(d) = m.sha256.parse() {
                        done.insert((m.org, m.raw_id), d);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        if created {
            // The new file's name survives a power loss too.
            let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if let Ok(d) = std::fs::File::open(folder) {
                let _ = d.sync_all();
            }
        }
        // A line a crash cut short must not run into the next one.
        let mut file = file;
        if file.metadata().map(|m| m.len() > 0).unwrap_or(false) && !ends_with_newline(path) {
            file.write_all(b"\n").map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(Mapping { done, file: Some(Mutex::new(file)) })
    }

    fn append(&self, line: &MappingLine) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let mut text = serde_json::to_string(line).map_err(|e| Error::Internal(format!("JSON: {e}")))?;
        text.push('\n');
        // One write per line (O_APPEND); synced once at the end. A line a
        // crash loses is done again by the next run (its put de-duplicates).
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(text.as_bytes()).map_err(|e| Error::io("writing the mapping file", e))
    }

    fn sync(&self) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        file.lock().unwrap_or_else(|e| e.into_inner()).sync_all().map_err(|e| Error::io("syncing the mapping file", e))
    }
}

fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return true };
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] == b'\n'
}

impl Coffer {
    /// Import `options.source`; see [`crate::import`].
    pub async fn import(&self, options: &ImportOptions, progress: &dyn Progress) -> Result<ImportReport> {
        let started = Instant::now();
        let mut report = match &options.source {
            ImportSource::RequestTracker { bucket, prefix, org } => {
                self.adopt_rt(bucket, prefix, org, options, progress).await?
            }
            other => self.copy_in(other, options, progress).await?,
        };
        report.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Adopt a Request Tracker bucket in place.
    async fn adopt_rt(
        &self,
        bucket: &str,
        prefix: &str,
        org: &str,
        options: &ImportOptions,
        progress: &dyn Progress,
    ) -> Result<ImportReport> {
        validate_org(org)?;
        let mut report = ImportReport { source: format!("s3:{bucket}/{prefix}"), ..ImportReport::default() };
        let s3 = self.services.backends.get(BackendKind::S3)?.clone();
        let namespace =
            Namespace { backend: BackendKind::S3, container: bucket.to_string(), prefix: prefix.to_string() };
        namespace.validate()?;
        let catalog = &self.services.catalog;
        let adopted = catalog.adopted().await?;
        // A bucket adopted before (in part) is another system's: the
        // adoption itself refuses what overlaps.
        if !adopted.iter().any(|(_, ns)| ns.backend == namespace.backend && ns.container == namespace.container) {
            // Only another system's bucket: never one Coffer writes to,
            // whose bytes must stay deletable.
            let declared = self.namespaces(org).await?;
            if self.is_coffers_bucket(bucket).await? || declared.iter().any(|ns| ns.overlaps(&namespace)) {
                return Err(Error::InvalidInput(format!(
                    "bucket {bucket:?} is one Coffer stores objects in (or would, under this configuration); \
                     only another system's bucket can be adopted in place"
                )));
            }
            // It must exist and be readable before anything is recorded.
            s3.list(bucket, prefix, None, 1).await?;
        }
        if let Claimed::Taken(other) = catalog.adopt(org, &namespace).await? {
            return Err(Error::Denied(format!(
                "s3:{bucket}/{prefix} overlaps s3:{}/{}, which an organisation holds; it cannot be adopted for {org:?}",
                other.container, other.prefix
            )));
        }
        progress.stage("adopting", None);
        let report_cell = Mutex::new(report);
        let mut after: Option<String> = None;
        loop {
            let page = s3.list(bucket, prefix, after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            futures_util::stream::iter(page)
                .for_each_concurrent(options.jobs.max(1), |entry| {
                    let report = &report_cell;
                    let s3 = &s3;
                    async move {
                        let name = entry.name;
                        let key = name.strip_prefix(prefix).unwrap_or(&name);
                        let outcome = match key.parse::<Digest>() {
                            Ok(digest) => {
                                Some(self.adopt_one(s3.as_ref(), org, bucket, &name, digest, options.deep).await)
                            }
                            Err(_) => None,
                        };
                        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                        r.objects += 1;
                        match outcome {
                            None => r.skip(format!("s3:{bucket}/{name}: the key is not a SHA-256 digest; left alone")),
                            Some(Ok(Imported::Now(size))) => {
                                r.imported += 1;
                                r.imported_bytes += size;
                                progress.bytes(size);
                            }
                            Some(Ok(Imported::Already)) => r.already += 1,
                            Some(Err(e)) => r.error(format!("s3:{bucket}/{name}: {e}")),
                        }
                        progress.advance(1);
                    }
                })
                .await;
        }
        report = report_cell.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(report)
    }

    /// Whether Coffer stores objects in `bucket`, or would under this
    /// configuration (its one bucket, a bucket its per-organisation prefix
    /// names, a bucket the catalog knows).
    async fn is_coffers_bucket(&self, bucket: &str) -> Result<bool> {
        let s3 = &self.services.config.s3;
        Ok(s3.bucket.as_deref() == Some(bucket)
            || (s3.bucket_per_org == Some(true) && s3.bucket_prefix.as_deref().is_some_and(|p| bucket.starts_with(p)))
            || self.services.catalog.containers(BackendKind::S3).await?.iter().any(|c| c == bucket))
    }

    /// Record the object `name` in `bucket`, named by `digest`, for `org`,
    /// where it is: reserved first (so nothing deletes it meanwhile), its
    /// digest confirmed, then committed.
    async fn adopt_one(
        &self,
        s3: &dyn crate::backend::BlobStore,
        org: &str,
        bucket: &str,
        name: &str,
        digest: Digest,
        deep: bool,
    ) -> Result<Imported> {
        let catalog = &self.services.catalog;
        if catalog.lookup(org, &digest).await?.is_some() {
            return Ok(Imported::Already);
        }
        let at = Location { backend: BackendKind::S3, container: bucket.to_string(), name: name.to_string() };
        let meta = s3.head(bucket, name).await?.ok_or_else(|| Error::NotFound(format!("{at} is gone")))?;
        let reservation = self.services.lifecycle.reserve(org, digest, meta.size, &at).await?;
        let confirmed = async {
            match meta.sha256 {
                Some(d) if meta.checked_by_store && d != digest => {
                    Err(Error::Integrity(format!("{at}: the server reports SHA-256 {d}")))
                }
                Some(_) if meta.checked_by_store && !deep => Ok(()),
                // No checksum the server checked (metadata any writer of
                // the bucket could set does not count), or asked to read:
                // hash the bytes.
                _ => {
                    let stream = s3.get(bucket, name).await?;
                    let mut stream = verify_stream(stream, digest, meta.size, at.to_string());
                    while let Some(chunk) = stream.next().await {
                        chunk?;
                    }
                    Ok(())
                }
            }
        };
        if let Err(e) = confirmed.await {
            reservation.release().await?;
            return Err(e);
        }
        let record = Record {
            org: org.to_string(),
            sha256: digest,
            size: meta.size,
            content_type: DEFAULT_CONTENT_TYPE.to_string(),
            location: at,
            created_at: crate::now_secs(),
            parked: false,
        };
        match self.services.lifecycle.commit(&record, Some(&reservation)).await {
            Ok(Committed::Inserted(_)) => {
                reservation.settle();
                Ok(Imported::Now(meta.size))
            }
            Ok(Committed::Existing(_)) => {
                reservation.release().await?;
                Ok(Imported::Already)
            }
            Ok(Committed::Lost) => {
                reservation.settle();
                Err(Error::Backend {
                    message: "the reservation was reaped before the record was written; import again".into(),
                    retryable: true,
                    source: None,
                })
            }
            Err(e) => {
                reservation.release().await?;
                Err(e)
            }
        }
    }

    /// Copy an OpenKAT store (S3 or files) or a directory into Coffer's
    /// layout, writing the mapping file. Sources are read a page (a
    /// listing page, a directory) at a time, so memory stays bounded
    /// whatever their size.
    async fn copy_in(
        &self,
        source: &ImportSource,
        options: &ImportOptions,
        progress: &dyn Progress,
    ) -> Result<ImportReport> {
        // Never write into the source.
        if let (ImportSource::Directory { root, .. }, Some(map)) = (source, &options.mapping) {
            // Compared with links resolved: the file's folder, and the root.
            let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            let folder = map.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if real(folder).starts_with(real(root)) {
                return Err(Error::InvalidInput(format!(
                    "the mapping file {} is inside the directory being imported; put it elsewhere",
                    map.display()
                )));
            }
        }
        let mapping = Mapping::open(options.mapping.as_deref())?;
        let report = Mutex::new(ImportReport {
            mapping: options.mapping.as_ref().map(|p| p.display().to_string()),
            ..ImportReport::default()
        });
        progress.stage("importing", None);
        let copy = Copier { coffer: self, mapping: &mapping, report: &report, progress, jobs: options.jobs.max(1) };
        let described = match source {
            ImportSource::OpenKatBuckets { prefix, orgs } => {
                if orgs.is_empty() {
                    return Err(Error::InvalidInput(
                        "with a bucket per organisation, name the organisations to import (--org, repeated)".into(),
                    ));
                }
                for org in orgs {
                    validate_org(org)?;
                }
                for org in orgs {
                    let bucket = format!("{prefix}{org}");
                    copy.s3(&bucket, |key| Some((org.clone(), key.to_string()))).await?;
                }
                format!("s3:{prefix}<org>")
            }
            ImportSource::OpenKatBucket { bucket, orgs } => {
                copy.s3(bucket, |key| {
                    let (org, id) = key.split_once('/')?;
                    (!id.is_empty() && !id.contains('/') && (orgs.is_empty() || orgs.iter().any(|o| o == org)))
                        .then(|| (org.to_string(), id.to_string()))
                })
                .await?;
                format!("s3:{bucket}")
            }
            ImportSource::Directory { root, org } => {
                copy.dir(root, org.as_deref()).await?;
                root.display().to_string()
            }
            ImportSource::RequestTracker { .. } => unreachable!("adopted in place"),
        };
        mapping.sync()?;
        let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        report.source = described;
        Ok(report)
    }

    /// Store one item through an ordinary put and append its mapping line.
    async fn copy_one(&self, item: &Item, mapping: &Mapping) -> Result<Imported> {
        let key = (item.org.clone(), item.raw_id.clone());
        if let Some(d) = mapping.done.get(&key)
            && self.services.catalog.lookup(&item.org, d).await?.is_some()
        {
            return Ok(Imported::Already);
        }
        let content = match &item.from {
            From::S3 { bucket, key } => {
                let stream = self.services.backends.get(BackendKind::S3)?.get(bucket, key).await?;
                Content::from_stream(stream, None, item.size, None).await?
            }
            From::File(path) => {
                // Opened once, without following a symbolic link or
                // waiting on a FIFO swapped in since the listing, checked to
                // be a regular file, and read from that one descriptor.
                let p = path.clone();
                let file = tokio::task::spawn_blocking(move || open_regular(&p)).await??;
                Content::from_reader(file, None, None).await?
            }
        };
        let info = self.put(&item.org, content).await?;
        mapping.append(&MappingLine {
            org: item.org.clone(),
            raw_id: item.raw_id.clone(),
            sha256: info.sha256.to_string(),
            size: info.size,
        })?;
        Ok(if info.deduplicated == Some(true) { Imported::Already } else { Imported::Now(info.size) })
    }
}

/// One copy run: where items go and what is counted.
struct Copier<'a> {
    coffer: &'a Coffer,
    mapping: &'a Mapping,
    report: &'a Mutex<ImportReport>,
    progress: &'a dyn Progress,
    jobs: usize,
}

impl Copier<'_> {
    /// Copy `items`, `jobs` at a time, and note what was skipped.
    async fn page(&self, items: Vec<Item>, skipped: Vec<String>) {
        {
            let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
            for s in skipped {
                r.objects += 1;
                r.skip(s);
            }
        }
        futures_util::stream::iter(items)
            .for_each_concurrent(self.jobs, |item| async move {
                let outcome = self.coffer.copy_one(&item, self.mapping).await;
                let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
                r.objects += 1;
                match outcome {
                    Ok(Imported::Now(size)) => {
                        r.imported += 1;
                        r.imported_bytes += size;
                        self.progress.bytes(size);
                    }
                    Ok(Imported::Already) => r.already += 1,
                    Err(e) => r.error(format!("{:?} {:?}: {e}", item.org, item.raw_id)),
                }
                self.progress.advance(1);
            })
            .await;
    }

    /// Every object in `bucket`, with the (organisation, raw id) `identify`
    /// gives its key; keys it gives none are skipped.
    async fn s3(&self, bucket: &str, identify: impl Fn(&str) -> Option<(String, String)>) -> Result<()> {
        let s3 = self.coffer.services.backends.get(BackendKind::S3)?;
        // Coffer's own buckets hold organisations' objects: copying from
        // one could hand one organisation's bytes to another.
        if self.coffer.is_coffers_bucket(bucket).await? {
            return Err(Error::InvalidInput(format!(
                "bucket {bucket:?} is one Coffer stores objects in; import only from another system's buckets"
            )));
        }
        let mut after: Option<String> = None;
        loop {
            let page = s3.list(bucket, "", after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { return Ok(()) };
            after = Some(last.name.clone());
            let (mut items, mut skipped) = (Vec::new(), Vec::new());
            for entry in page {
                match identify(&entry.name) {
                    Some((org, raw_id)) => items.push(Item {
                        org,
                        raw_id,
                        from: From::S3 { bucket: bucket.to_string(), key: entry.name },
                        size: entry.size,
                    }),
                    None => skipped.push(format!("s3:{bucket}/{}: not laid out as OpenKAT's; left alone", entry.name)),
                }
            }
            self.page(items, skipped).await;
        }
    }

    /// Files below `root`, a directory at a time: with `org`, every regular
    /// file (raw id: its path relative to `root`); without, OpenKAT's layout
    /// `ORG/ID[:3]/ID` (raw id: the file name). Symbolic links are neither
    /// followed nor imported.
    async fn dir(&self, root: &Path, org: Option<&str>) -> Result<()> {
        let meta = std::fs::metadata(root).map_err(|e| Error::InvalidInput(format!("{}: {e}", root.display())))?;
        if !meta.is_dir() {
            return Err(Error::InvalidInput(format!("{} is not a directory", root.display())));
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let (root, org) = (root.to_path_buf(), org.map(str::to_string));
            let (items, skipped, subdirs) =
                tokio::task::spawn_blocking(move || list_dir(&root, &dir, org.as_deref())).await??;
            stack.extend(subdirs);
            self.page(items, skipped).await;
        }
        Ok(())
    }
}

/// `path`, opened for reading only if it is a regular file itself (not a
/// symbolic link to one, not a FIFO or device).
fn open_regular(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || Error::InvalidInput(format!("{}: not a regular file (any more); left alone", path.display()));
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(
            |e| match e.raw_os_error() {
                Some(libc::ELOOP) => not_regular(),
                _ => Error::io(format!("opening {}", path.display()), e),
            },
        )?;
    let meta = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// The files directly in `dir` (below `root`) as items, what is skipped,
/// and the subdirectories.
fn list_dir(root: &Path, dir: &Path, org: Option<&str>) -> Result<(Vec<Item>, Vec<String>, Vec<PathBuf>)> {
    let (mut items, mut skipped, mut subdirs) = (Vec::new(), Vec::new(), Vec::new());
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if kind.is_dir() {
            subdirs.push(path);
            continue;
        }
        if !kind.is_file() {
            skipped.push(format!("{}: not a regular file; left alone", path.display()));
            continue;
        }
        let relative = path.strip_prefix(root).unwrap_or(&path);
        // Raw ids are text: a name that is not UTF-8 would be mapped
        // ambiguously, so it is reported instead.
        let Some(parts) =
            relative.components().map(|c| c.as_os_str().to_str().map(str::to_string)).collect::<Option<Vec<String>>>()
        else {
            skipped.push(format!("{}: the name is not UTF-8; left alone", path.display()));
            continue;
        };
        let identified = match org {
            Some(org) => Some((org.to_string(), parts.join("/"))),
            None => match parts.as_slice() {
                [org, shard, id] if id.get(..3) == Some(shard.as_str()) => Some((org.clone(), id.clone())),
                _ => None,
            },
        };
        match identified {
            Some((org, raw_id)) => items.push(Item { org, raw_id, size: 0, from: From::File(path) }),
            None => skipped.push(format!(
                "{}: not laid out as OpenKAT's ORG/ID[:3]/ID (give --org to import any directory); left alone",
                path.display()
            )),
        }
    }
    items.sort_by(|a, b| a.raw_id.cmp(&b.raw_id));
    subdirs.sort();
    Ok((items, skipped, subdirs))
}
