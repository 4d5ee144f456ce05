//! S3 as a [`BlobStore`]: what each operation asks of the server.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::TryStreamExt;
use reqwest::{Method, StatusCode};

use super::client::{DIGEST_METADATA, Payload, S3Store, check_names, sha256_hex};
use super::error::{Op, S3ErrorBody, parse_error};
use super::listing::{ListBucketResult, parse_timestamp};
use super::multipart::part_size_for;
use super::sign::encode;
use crate::backend::{BackendKind, BlobEntry, BlobMeta, BlobStore, Disposition, IncompleteUpload};
use crate::config::MAX_SINGLE_PUT;
use crate::content::{ByteStream, Content, Digest};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

#[async_trait]
impl BlobStore for S3Store {
    fn kind(&self) -> BackendKind {
        BackendKind::S3
    }

    /// The object's size and the digest S3 confirms for it: the full-object
    /// `ChecksumSHA256` the server verified at upload (asked for with
    /// `x-amz-checksum-mode: ENABLED`), or else the digest Coffer wrote as
    /// metadata. Composite (per-part) checksums say nothing about the whole
    /// object and are not used.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<BlobMeta>> {
        check_names(bucket, Some(key))?;
        let op = Op { name: "HeadObject", bucket, key: Some(key) };
        let url = self.url(bucket, Some(key), "");
        let headers = [("x-amz-checksum-mode", "ENABLED")];
        let resp = self.send(&op, Method::HEAD, &url, &headers, Payload::Empty, &[StatusCode::NOT_FOUND]).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let size = header("content-length").and_then(|v| v.parse().ok()).ok_or_else(|| Error::Backend {
            message: format!("{op}: answer without a Content-Length"),
            retryable: false,
            source: None,
        })?;
        let checksum = header("x-amz-checksum-sha256").and_then(|v| {
            let raw = base64::engine::general_purpose::STANDARD.decode(v.trim()).ok()?;
            <[u8; 32]>::try_from(raw.as_slice()).ok().map(Digest::from_raw)
        });
        let written = header(DIGEST_METADATA).and_then(|v| v.trim().parse::<Digest>().ok());
        if let (Some(c), Some(w)) = (checksum, written)
            && c != w
        {
            tracing::warn!(bucket, key, checksum = %c, metadata = %w, "an object's checksum and Coffer digest disagree; trusting the checksum");
        }
        Ok(Some(BlobMeta { size, sha256: checksum.or(written), checked_by_store: checksum.is_some() }))
    }

    async fn ping(&self) -> Result<()> {
        // One attempt: a probe reports the state now, and is asked again.
        // Any answer but a server error means S3 is there: a bucket not
        // created yet, or keys not allowed to list buckets, are questions
        // for the requests that need them.
        let once = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
        let answered = [StatusCode::NOT_FOUND, StatusCode::FORBIDDEN];
        match &self.probe_bucket {
            // A bucket not created yet is still an answer from the server.
            Some(bucket) => {
                let op = Op { name: "HeadBucket", bucket, key: None };
                let url = self.url(bucket, None, "");
                self.send_with(&once, &op, Method::HEAD, &url, &[], Payload::Empty, &answered).await?;
            }
            // A bucket per organisation: the credentials' own bucket list.
            None => {
                let op = Op { name: "ListBuckets", bucket: "", key: None };
                let url = format!("{}://{}{}/?max-buckets=1", self.scheme, self.authority, self.base_path);
                self.send_with(&once, &op, Method::GET, &url, &[], Payload::Empty, &answered).await?;
            }
        }
        Ok(())
    }

    async fn ensure_container(&self, bucket: &str) -> Result<()> {
        check_names(bucket, None)?;
        if self.ensured.lock().map(|s| s.contains(bucket)).unwrap_or(false) {
            return Ok(());
        }
        let op = Op { name: "HeadBucket", bucket, key: None };
        let url = self.url(bucket, None, "");
        let exists = self
            .send(&op, Method::HEAD, &url, &[], Payload::Empty, &[StatusCode::NOT_FOUND])
            .await?
            .status()
            .is_success();
        if !exists {
            if !self.create_buckets {
                return Err(Error::Config(format!(
                    "bucket {bucket} does not exist and creating buckets is switched off (COFFER_CREATE_BUCKETS=false): \
                     create it, or let Coffer create it"
                )));
            }
            let op = Op { name: "CreateBucket", bucket, key: None };
            let body = if self.region == "us-east-1" {
                Bytes::new()
            } else {
                Bytes::from(format!(
                    "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                     <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                    self.region
                ))
            };
            let sha = sha256_hex(&body);
            let created =
                self.send(&op, Method::PUT, &url, &[], Payload::Bytes(body, sha), &[StatusCode::CONFLICT]).await?;
            if created.status() == StatusCode::CONFLICT {
                let text = created.text().await.unwrap_or_default();
                let code = S3ErrorBody::parse(&text).code;
                // Ours already (another process or request made it): fine.
                // Someone else's: the name is taken.
                let ours = code == "BucketAlreadyOwnedByYou"
                    || self
                        .send(
                            &op,
                            Method::HEAD,
                            &url,
                            &[],
                            Payload::Empty,
                            &[StatusCode::NOT_FOUND, StatusCode::FORBIDDEN],
                        )
                        .await?
                        .status()
                        .is_success();
                if !ours {
                    return Err(parse_error(&op, StatusCode::CONFLICT, &text));
                }
            }
        }
        if let Ok(mut set) = self.ensured.lock() {
            set.insert(bucket.to_string());
        }
        Ok(())
    }

    async fn put(&self, bucket: &str, key: &str, content: &Content) -> Result<bool> {
        check_names(bucket, Some(key))?;
        // Refused before anything is sent (and the part size planned).
        let part_size = part_size_for(content.size(), self.part_size)?;
        if content.size() > self.multipart_threshold || content.size() > MAX_SINGLE_PUT {
            // Completing a multipart upload has no precondition everywhere:
            // look first (one small request against a large upload).
            match self.confirm_existing(bucket, key, content).await? {
                Some(written) => Ok(written),
                None => self.put_multipart(bucket, key, content, part_size).await,
            }
        } else {
            self.put_single(bucket, key, content).await
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<ByteStream> {
        check_names(bucket, Some(key))?;
        let op = Op { name: "GetObject", bucket, key: Some(key) };
        let url = self.url(bucket, Some(key), "");
        let resp = self.send(&op, Method::GET, &url, &[], Payload::Empty, &[]).await?;
        Ok(Self::body(&op, resp))
    }

    /// A `Range` GET: the server sends only the range. An answer for other
    /// bytes than asked (a server that ignores `Range` and sends the whole
    /// object, or another range) is refused, never cut to fit.
    async fn get_range(&self, bucket: &str, key: &str, start: u64, end: u64, size: u64) -> Result<ByteStream> {
        check_names(bucket, Some(key))?;
        let op = Op { name: "GetObject", bucket, key: Some(key) };
        let url = self.url(bucket, Some(key), "");
        let range = format!("bytes={start}-{end}");
        let resp = self.send(&op, Method::GET, &url, &[("range", range.as_str())], Payload::Empty, &[]).await?;
        let answered = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("");
        let asked = format!("bytes {start}-{end}/");
        // The total as a number: `*` (unknown) or anything else that is
        // not one is an answer that cannot be checked, not other content.
        let total = answered.strip_prefix(&asked).and_then(|t| t.parse::<u64>().ok());
        if let Some(total) = total.filter(|t| *t != size)
            && resp.status() == StatusCode::PARTIAL_CONTENT
        {
            return Err(Error::Integrity(format!(
                "{op}: the object holds {total} bytes, where {size} were recorded: it is not the recorded content"
            )));
        }
        if resp.status() != StatusCode::PARTIAL_CONTENT || total.is_none() {
            return Err(Error::Backend {
                message: format!(
                    "{op}: asked for bytes {start}-{end}, the server answered {} with Content-Range {answered:?}",
                    resp.status()
                ),
                retryable: false,
                source: None,
            });
        }
        Ok(Self::body(&op, resp))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        check_names(bucket, Some(key))?;
        let op = Op { name: "DeleteObject", bucket, key: Some(key) };
        let url = self.url(bucket, Some(key), "");
        self.send(&op, Method::DELETE, &url, &[], Payload::Empty, &[StatusCode::NOT_FOUND]).await?;
        Ok(())
    }

    async fn list(&self, bucket: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<BlobEntry>> {
        check_names(bucket, None)?;
        let op = Op { name: "ListObjectsV2", bucket, key: None };
        let mut query = format!("list-type=2&max-keys={}&prefix={}", limit.min(1000), encode(prefix));
        if let Some(a) = after {
            query.push_str(&format!("&start-after={}", encode(a)));
        }
        let resp = self.send(&op, Method::GET, &self.url(bucket, None, &query), &[], Payload::Empty, &[]).await?;
        let parsed: ListBucketResult = Self::xml(&op, resp).await?;
        Ok(parsed
            .contents
            .into_iter()
            .map(|e| BlobEntry { modified: parse_timestamp(&e.last_modified), name: e.key, size: e.size })
            .collect())
    }

    async fn incomplete_uploads(&self, bucket: &str) -> Result<Vec<IncompleteUpload>> {
        self.list_multipart_uploads(bucket).await
    }

    async fn abort_upload(&self, bucket: &str, upload: &IncompleteUpload) -> Result<()> {
        check_names(bucket, Some(&upload.name))?;
        self.abort(bucket, &upload.name, &encode(&upload.id)).await
    }

    fn link(
        &self,
        bucket: &str,
        key: &str,
        expires: Option<Duration>,
        filename: Option<&str>,
        disposition: Disposition,
    ) -> Result<String> {
        check_names(bucket, Some(key))?;
        match expires {
            Some(expires) => self.presign_get(bucket, key, expires, filename, disposition),
            None => Ok(self.public_url(bucket, key)),
        }
    }
}

impl S3Store {
    /// A GET's body as a stream; a connection that breaks mid-body is an
    /// error worth retrying.
    fn body(op: &Op<'_>, resp: reqwest::Response) -> ByteStream {
        let what = format!("{op}");
        Box::pin(resp.bytes_stream().map_err(move |e| Error::Backend {
            message: format!("{what}: the download broke off: {e}"),
            retryable: true,
            source: Some(Box::new(e)),
        }))
    }
}
