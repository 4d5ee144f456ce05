//! OpenKAT Bytes (S3 or its file layout) and directories, copied into
//! Coffer's layout: each object read and stored through an ordinary put,
//! its mapping line appended once it is stored.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::StreamExt;

use super::mapping::{Mapping, MappingLine};
use super::options::{ImportOptions, ImportReport, ImportSource, Imported};
use crate::backend::BackendKind;
use crate::coffer::Coffer;
use crate::content::Content;
use crate::error::{Error, Result};
use crate::gc::Progress;
use crate::org::validate_org;

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

impl Coffer {
    /// Copy an OpenKAT store (S3 or files) or a directory into Coffer's
    /// layout, writing the mapping file. Sources are read a page (a
    /// listing page, a directory) at a time, so memory stays bounded
    /// whatever their size.
    pub(super) async fn copy_in(
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
                Content::from_stream(stream, None, item.size, self.spool()).await?
            }
            From::File(path) => {
                // Opened once, without following a symbolic link or
                // waiting on a FIFO swapped in since the listing, checked to
                // be a regular file, and read from that one descriptor.
                let p = path.clone();
                let file = tokio::task::spawn_blocking(move || open_regular(&p)).await??;
                Content::from_reader(file, None, self.spool()).await?
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
                    Err(e) => r.error(format!("{:?} {:?}", item.org, item.raw_id), &e),
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
