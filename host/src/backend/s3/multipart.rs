//! Multipart uploads that cannot be misread or left behind:
//!
//! - the part size grows so no object needs more than [`MAX_PARTS`] parts,
//!   and objects larger than S3's largest are refused before anything is
//!   sent;
//! - an upload that fails, or whose future is dropped (a timeout, Ctrl-C),
//!   is aborted ([`UploadGuard`]); one left by a killed process is aborted
//!   by `coffer gc` after the grace period;
//! - a completion whose answer is ambiguous (the connection dropped after
//!   the server may have acted, a 5xx, `NoSuchUpload` on a retry, a 200
//!   carrying an error) is settled by a HEAD that confirms the digest, never
//!   by guessing.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::client::{DIGEST_METADATA, Payload, S3Store, sha256_hex};
use super::error::{Op, S3ErrorBody, parse_error};
use super::sign::encode;
use crate::backend::BlobStore;
use crate::config::MAX_SINGLE_PUT;
use crate::content::Content;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Parts of one upload in flight at once: with the part size this bounds
/// the memory a multipart upload holds.
pub const PART_CONCURRENCY: usize = 4;

/// S3's most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest object: 5 TiB.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

/// The part size for an object of `size` bytes: the configured one, grown
/// (in whole MiB) where needed so the object fits in [`MAX_PARTS`] parts.
/// Objects larger than [`MAX_OBJECT_SIZE`] are refused.
pub fn part_size_for(size: u64, configured: u64) -> Result<u64> {
    if size > MAX_OBJECT_SIZE {
        return Err(Error::InvalidInput(format!(
            "the file is {size} bytes; S3 stores objects of at most {MAX_OBJECT_SIZE} bytes (5 TiB)"
        )));
    }
    let mib = 1u64 << 20;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(mib) * mib;
    Ok(configured.max(needed).min(MAX_SINGLE_PUT))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateMultipartUploadResult {
    upload_id: String,
}

/// Aborts its upload unless disarmed: on failure paths explicitly, and in
/// the background when the upload's future is dropped.
struct UploadGuard {
    store: S3Store,
    bucket: String,
    key: String,
    /// Already percent-encoded for the query string.
    upload_id: String,
    armed: bool,
}

impl UploadGuard {
    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Abort now; a failure is logged (the caller's own error matters more,
    /// and `coffer gc` aborts what stays).
    async fn abort(mut self) {
        self.armed = false;
        if let Err(e) = self.store.abort(&self.bucket, &self.key, &self.upload_id).await {
            tracing::warn!(bucket = self.bucket, key = self.key, error = %e, "could not abort a multipart upload; coffer gc will");
        }
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, bucket, key, id) =
            (self.store.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone());
        crate::cleanup::cleanups().spawn("aborting a cancelled multipart upload", async move {
            if let Err(e) = store.abort(&bucket, &key, &id).await {
                tracing::warn!(bucket, key, error = %e, "could not abort a cancelled multipart upload; coffer gc will");
            }
        });
    }
}

/// How one completion attempt ended.
enum Completion {
    /// The server answered with a success document.
    Done,
    /// The object exists already (`If-None-Match` refused the completion).
    AlreadyThere,
    /// It failed, and the server may or may not have completed the upload.
    Unclear(Error),
    /// It was refused. On a first attempt, that means the server did not
    /// complete it; after an unclear attempt, a HEAD decides.
    Failed(Error),
}

impl S3Store {
    pub(super) async fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        content: &Content,
        part_size: u64,
    ) -> Result<bool> {
        let op = Op { name: "CreateMultipartUpload", bucket, key: Some(key) };
        let digest = content.sha256().to_string();
        let created = self
            .send(
                &op,
                Method::POST,
                &self.url(bucket, Some(key), "uploads="),
                &[("content-type", content.content_type()), (DIGEST_METADATA, digest.as_str())],
                Payload::Empty,
                &[],
            )
            .await?;
        let upload: InitiateMultipartUploadResult = Self::xml(&op, created).await?;
        let mut guard = UploadGuard {
            store: self.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: encode(&upload.upload_id),
            armed: true,
        };
        let parts = match self.upload_parts(bucket, key, &guard.upload_id, content, part_size).await {
            Ok(parts) => parts,
            Err(e) => {
                guard.abort().await;
                return Err(e);
            }
        };
        match self.complete(bucket, key, &guard.upload_id, &parts, content).await {
            Ok((written, clean)) => {
                if clean {
                    guard.disarm();
                } else {
                    // The object is there, but it may be another upload's
                    // doing (the same content): make sure ours is not left
                    // open. Aborting a completed upload is harmless.
                    guard.abort().await;
                }
                Ok(written)
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }

    /// Upload the parts, at most [`PART_CONCURRENCY`] in flight, each
    /// streamed from the content (no part is held in memory) and signed
    /// with its SHA-256, which the server verifies. The part digests are
    /// the ones recorded when the content was hashed, when it was hashed in
    /// parts of this size ([`Content::parts`]): the bytes are then read
    /// once more, to send them, and checked against each part's CRC32C on
    /// the way, so content changed since it was hashed is caught on the
    /// client too. Otherwise each part is digested first, in order, with
    /// the whole re-hashed on the way so a change is caught before
    /// completion.
    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        content: &Content,
        part_size: u64,
    ) -> Result<Vec<(u32, String)>> {
        let url = self.url(bucket, Some(key), "");
        let recorded = content.parts(part_size);
        let mut whole = recorded.is_none().then(Sha256::new);
        let mut etags = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let mut offset = 0u64;
        let mut number = 0u32;
        loop {
            number += 1;
            let part = match (recorded, whole.take()) {
                (Some(parts), _) => match parts.get(number as usize - 1) {
                    Some(part) => *part,
                    None => break,
                },
                (None, Some(mut hasher)) => {
                    let c = content.clone();
                    let (part, hasher) = tokio::task::spawn_blocking(move || {
                        let part = c.part_digest(offset, part_size, &mut hasher)?;
                        Ok::<_, Error>((part, hasher))
                    })
                    .await??;
                    whole = Some(hasher);
                    part
                }
                (None, None) => unreachable!("the hasher is present between parts"),
            };
            let payload = Payload::Part { content, offset, part };
            // A file that shrank since it was hashed ends early; the checks
            // below report it.
            let last = part.len < part_size;
            offset += part.len;
            let part_url = format!("{url}?partNumber={number}&uploadId={upload_id}");
            in_flight.push(async move {
                let op = Op { name: "UploadPart", bucket, key: Some(key) };
                let resp = self.send(&op, Method::PUT, &part_url, &[], payload, &[]).await?;
                let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                Ok::<_, Error>((number, etag))
            });
            if in_flight.len() >= PART_CONCURRENCY {
                etags.push(in_flight.next().await.expect("a part is in flight")?);
            }
            if last || offset >= content.size() || u64::from(number) >= MAX_PARTS {
                break;
            }
        }
        while let Some(done) = in_flight.next().await {
            etags.push(done?);
        }
        if let Some(whole) = whole {
            let got = hex::encode(whole.finalize());
            if got != content.sha256().to_string() {
                return Err(Error::Integrity(format!(
                    "the input changed while it was being uploaded: hashed as {}, read as {got}",
                    content.sha256()
                )));
            }
        }
        if offset != content.size() {
            return Err(Error::Integrity(format!(
                "the input changed while it was being uploaded: hashed as {} bytes, read as {offset}",
                content.size()
            )));
        }
        etags.sort_by_key(|(n, _)| *n);
        Ok(etags)
    }

    /// Complete the upload: (written, clean). `written` is false when the
    /// same content was already there; `clean` is true only when the
    /// server plainly confirmed this completion. Each attempt is
    /// sent once; when its outcome is unclear, a HEAD decides: the object
    /// is there with this content's digest (done), there with other
    /// content (a conflict), or not there (try again, within the retry
    /// policy's attempts).
    async fn complete(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        content: &Content,
    ) -> Result<(bool, bool)> {
        let op = Op { name: "CompleteMultipartUpload", bucket, key: Some(key) };
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let body = Bytes::from(xml);
        let sha = sha256_hex(&body);
        let url = self.url(bucket, Some(key), &format!("uploadId={upload_id}"));
        let once = RetryPolicy { max_attempts: 1, ..self.retry };
        let mut failures = 0u32;
        loop {
            let sent = self
                .send_with(
                    &once,
                    &op,
                    Method::POST,
                    &url,
                    // Where supported, a completion never replaces an object.
                    &[("if-none-match", "*")],
                    Payload::Bytes(body.clone(), sha.clone()),
                    &[StatusCode::PRECONDITION_FAILED],
                )
                .await;
            let completion = match sent {
                Ok(resp) if resp.status() == StatusCode::PRECONDITION_FAILED => Completion::AlreadyThere,
                Ok(resp) => match resp.text().await {
                    // S3 may answer 200 and then report an error in the body.
                    Ok(text) if text.contains("<Error>") => {
                        let code = S3ErrorBody::parse(&text).code;
                        let status = if code == "SlowDown" {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::INTERNAL_SERVER_ERROR
                        };
                        Completion::Unclear(parse_error(&op, status, &text))
                    }
                    Ok(_) => Completion::Done,
                    // Headers came, the body did not: it may have completed.
                    Err(e) => Completion::Unclear(Error::Backend {
                        message: format!("{op}: the answer broke off: {e}"),
                        retryable: true,
                        source: Some(Box::new(e)),
                    }),
                },
                // A retried completion of an upload that an earlier attempt
                // completed answers NoSuchUpload.
                Err(e @ Error::NotFound(_)) => Completion::Unclear(e),
                Err(e) if e.is_retryable() => Completion::Unclear(e),
                Err(e) => Completion::Failed(e),
            };
            let error = match completion {
                Completion::Done => return Ok((true, true)),
                // Servers answer a completion that an earlier, unclear
                // attempt already made in different ways (AWS: 404
                // NoSuchUpload; some: 403). Whatever the refusal, look once.
                Completion::Failed(e) if failures > 0 => e,
                Completion::Failed(e) => return Err(e),
                Completion::AlreadyThere => {
                    return match self.confirm_existing(bucket, key, content).await? {
                        Some(_) => Ok((false, false)),
                        None => Err(Error::Conflict(format!("{op}: refused as existing, but nothing is there"))),
                    };
                }
                Completion::Unclear(e) => e,
            };
            failures += 1;
            tracing::warn!(bucket, key, attempt = failures, error = %error, "unclear completion; looking at the object");
            match self.head(bucket, key).await? {
                Some(meta) => {
                    meta.confirm(format!("s3://{bucket}/{key}"), content)?;
                    return Ok((true, false));
                }
                None if failures < self.retry.max_attempts && error.is_retryable() => {
                    tokio::time::sleep(self.retry.base_delay * failures).await;
                }
                None => {
                    return Err(match error {
                        Error::NotFound(m) => Error::Backend {
                            message: format!("{m}: the upload is gone and no object was made"),
                            retryable: true,
                            source: None,
                        },
                        other => other,
                    });
                }
            }
        }
    }

    /// Abort a multipart upload so no parts are left; an upload that is
    /// already gone is fine.
    pub(super) async fn abort(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let op = Op { name: "AbortMultipartUpload", bucket, key: Some(key) };
        let url = self.url(bucket, Some(key), &format!("uploadId={upload_id}"));
        self.send(&op, Method::DELETE, &url, &[], Payload::Empty, &[StatusCode::NOT_FOUND]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_no_object_needs_more_than_ten_thousand() {
        let mib = 1u64 << 20;
        assert_eq!(part_size_for(100 * mib, 8 * mib).unwrap(), 8 * mib);
        // 80 GiB in 8 MiB parts would be 10,240 parts.
        let size = 80u64 << 30;
        let part = part_size_for(size, 8 * mib).unwrap();
        assert!(size.div_ceil(part) <= MAX_PARTS, "{part}");
        assert_eq!(part % mib, 0);
        let largest = part_size_for(MAX_OBJECT_SIZE, 8 * mib).unwrap();
        assert!(MAX_OBJECT_SIZE.div_ceil(largest) <= MAX_PARTS && largest <= MAX_SINGLE_PUT);
    }

    #[test]
    fn objects_beyond_five_tib_are_refused() {
        let err = part_size_for(MAX_OBJECT_SIZE + 1, 8 << 20).unwrap_err();
        assert!(matches!(&err, Error::InvalidInput(m) if m.contains("5 TiB")), "{err}");
    }
}
