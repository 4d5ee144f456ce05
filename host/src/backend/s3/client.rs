//! The S3 client: one pooled transport (`transport.rs`), every request
//! signed and retried here ([`S3Store::send`]), single uploads and "is this content
//! already there?", decided by digest, and links built from the
//! configured endpoint.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

use super::error::{Op, parse_error, transport_error};
use super::sign::{EMPTY_SHA256, Signer, encode, encode_key};
use super::transport::Transport;
use crate::backend::{BlobStore, Disposition};
use crate::config::S3Settings;
use crate::content::{Content, PartDigest, verify_stream};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// User metadata Coffer writes on every upload: the lowercase hex SHA-256
/// of the whole object. Multipart objects have no full-object SHA-256
/// checksum on S3 (only per part), so this is how a later HEAD confirms
/// what an object holds. Sent as `x-amz-meta-coffer-sha256`.
pub const DIGEST_METADATA: &str = "x-amz-meta-coffer-sha256";

/// How the bucket appears in URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `https://endpoint/bucket/key`: what MinIO, Ceph and Garage expect.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
}

/// S3 as a [`BlobStore`]. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct S3Store {
    pub(super) transport: Transport,
    pub(super) scheme: String,
    /// Host and port of the endpoint.
    pub(super) authority: String,
    /// Path prefix of the endpoint, without a trailing `/`.
    pub(super) base_path: String,
    pub(super) addressing: Addressing,
    pub(super) region: String,
    pub(super) signer: Signer,
    pub(super) create_buckets: bool,
    pub(super) multipart_threshold: u64,
    pub(super) part_size: u64,
    pub(super) retry: RetryPolicy,
    /// Buckets already ensured by this process.
    pub(super) ensured: Arc<Mutex<HashSet<String>>>,
    /// The one bucket (`S3_BUCKET`), if configured: what a readiness probe asks about.
    pub(super) probe_bucket: Option<String>,
}

/// What a request sends as its body; re-created for every attempt.
pub(super) enum Payload<'a> {
    Empty,
    Bytes(Bytes, String),
    Content(&'a Content),
    /// One part of the content, starting at `offset`.
    Part {
        content: &'a Content,
        offset: u64,
        part: PartDigest,
    },
}

impl Payload<'_> {
    pub(super) fn sha256(&self) -> String {
        match self {
            Payload::Empty => EMPTY_SHA256.to_string(),
            Payload::Bytes(_, sha) => sha.clone(),
            Payload::Content(c) => c.sha256().to_string(),
            Payload::Part { part, .. } => part.sha256.to_string(),
        }
    }

    pub(super) async fn body(&self) -> Result<(reqwest::Body, u64)> {
        Ok(match self {
            Payload::Empty => (reqwest::Body::from(Bytes::new()), 0),
            Payload::Bytes(b, _) => (reqwest::Body::from(b.clone()), b.len() as u64),
            // Bytes read from a file are checked against the digest they
            // are signed with as they go out: if the file changed since it
            // was hashed, the upload breaks off with an integrity error,
            // whatever the server would have said. Bytes in memory cannot
            // change, so they are not hashed twice.
            Payload::Content(c) if c.in_memory() => (reqwest::Body::wrap_stream(c.stream().await?), c.size()),
            Payload::Content(c) => {
                let what = "the input changed after it was hashed".to_string();
                let stream = verify_stream(c.stream().await?, c.sha256(), c.size(), what);
                (reqwest::Body::wrap_stream(stream), c.size())
            }
            // Checked against the part's CRC32C as it goes out; the server
            // verifies its SHA-256 (the signed payload digest).
            Payload::Part { content, offset, part } => {
                (reqwest::Body::wrap_stream(content.stream_part(*offset, *part).await?), part.len)
            }
        })
    }
}

/// Refuse names that cannot be a bucket or key before they reach a URL.
/// The policy chooses names, and a policy may be hostile: a bucket with
/// `/` or a key with `..` segments would otherwise address something else
/// once the URL is parsed.
pub(super) fn check_names(bucket: &str, key: Option<&str>) -> Result<()> {
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !bucket_ok {
        return Err(Error::InvalidName(format!(
            "{bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-')"
        )));
    }
    if let Some(key) = key {
        let key_ok = !key.is_empty()
            && key.len() <= 1024
            && !key.chars().any(char::is_control)
            && key.split('/').all(|seg| seg != "." && seg != "..");
        if !key_ok {
            return Err(Error::InvalidName(format!(
                "{key:?} is not a usable object key (1 to 1024 bytes, no control characters, no '.' or '..' segments)"
            )));
        }
    }
    Ok(())
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl S3Store {
    /// An S3 store for checked settings (see `Config::validate`).
    pub fn new(s: &S3Settings) -> Result<S3Store> {
        let region = s.region.clone().unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = s.endpoint_url.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| Error::Config(format!("AWS_ENDPOINT_URL {endpoint:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.query().is_some() {
            return Err(Error::Config(format!(
                "AWS_ENDPOINT_URL {endpoint:?} must be an http:// or https:// URL with a host and no query"
            )));
        }
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let (Some(key_id), Some(secret)) = (&s.access_key_id, &s.secret_access_key) else {
            return Err(Error::Config("S3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into()));
        };
        // A request that stays silent this long fails and is retried (a
        // stalled server, a half-open connection). Redirects are never
        // followed: one would carry a signed request, and any session
        // token in it, to a host the operator did not configure; a 3xx
        // answer is an error (see `error::parse_error`).
        let transport = Transport::new(url.scheme() == "https", Duration::from_secs(s.timeout.unwrap_or(60)))?;
        Ok(S3Store {
            transport,
            scheme: url.scheme().to_string(),
            authority,
            base_path: url.path().trim_end_matches('/').to_string(),
            addressing: if s.virtual_hosted.unwrap_or(false) { Addressing::Virtual } else { Addressing::Path },
            signer: Signer::new(key_id, secret, s.session_token.as_deref(), &region),
            region,
            create_buckets: s.create_buckets.unwrap_or(true),
            multipart_threshold: s.multipart_threshold.unwrap_or(64 << 20),
            part_size: s.part_size.unwrap_or(8 << 20),
            retry: RetryPolicy::default(),
            ensured: Arc::new(Mutex::new(HashSet::new())),
            probe_bucket: s.bucket.clone(),
        })
    }

    /// The URL of a bucket or an object, with `query` (already encoded)
    /// appended. The key is encoded here, once.
    pub fn url(&self, bucket: &str, key: Option<&str>, query: &str) -> String {
        let key = key.map(encode_key).unwrap_or_default();
        let mut url = match self.addressing {
            Addressing::Path => format!("{}://{}{}/{}/{}", self.scheme, self.authority, self.base_path, bucket, key),
            Addressing::Virtual => format!("{}://{}.{}{}/{}", self.scheme, bucket, self.authority, self.base_path, key),
        };
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// Sign and send one request, retrying what may clear up. Statuses in
    /// `accept` come back as responses; other failures as errors.
    pub(super) async fn send(
        &self,
        op: &Op<'_>,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
        accept: &[StatusCode],
    ) -> Result<reqwest::Response> {
        self.send_with(&self.retry, op, method, url, headers, payload, accept).await
    }

    /// [`S3Store::send`] with its own retry policy (one attempt, for
    /// requests whose failures need a look before they are repeated).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_with(
        &self,
        retry: &RetryPolicy,
        op: &Op<'_>,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
        accept: &[StatusCode],
    ) -> Result<reqwest::Response> {
        let payload_sha = payload.sha256();
        retry
            .run(op.name, || async {
                let signed =
                    self.signer.sign_headers(method.as_str(), url, headers, &payload_sha, SystemTime::now())?;
                let (body, len) = payload.body().await?;
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| Error::InvalidName(format!("{op}: {url:?} is not a URL: {e}")))?;
                let mut req = reqwest::Request::new(method.clone(), parsed);
                *req.body_mut() = Some(body);
                let fields = req.headers_mut();
                if method == Method::PUT || method == Method::POST {
                    fields.insert(reqwest::header::CONTENT_LENGTH, len.into());
                }
                for (k, v) in headers.iter().copied().chain(signed.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes());
                    let value = reqwest::header::HeaderValue::from_str(v);
                    let (Ok(name), Ok(value)) = (name, value) else {
                        return Err(Error::InvalidInput(format!("{op}: header {k:?} cannot be sent as {v:?}")));
                    };
                    fields.append(name, value);
                }
                let resp = self.transport.execute(req).await.map_err(|e| transport_error(op, e))?;
                let status = resp.status();
                if status.is_success() || accept.contains(&status) {
                    return Ok(resp);
                }
                let body = resp.text().await.unwrap_or_default();
                Err(parse_error(op, status, &body))
            })
            .await
    }

    pub(super) async fn put_single(&self, bucket: &str, key: &str, content: &Content) -> Result<bool> {
        let op = Op { name: "PutObject", bucket, key: Some(key) };
        let checksum = base64::engine::general_purpose::STANDARD.encode(content.sha256().as_bytes());
        let digest = content.sha256().to_string();
        let headers = [
            ("content-type", content.content_type()),
            // The server verifies the bytes against it and keeps it, so a
            // later HEAD can confirm what the object holds.
            ("x-amz-checksum-sha256", checksum.as_str()),
            (DIGEST_METADATA, digest.as_str()),
            // Never overwrite: if the object exists, the server answers
            // 412 and keeps it. This also settles concurrent puts.
            ("if-none-match", "*"),
        ];
        let url = self.url(bucket, Some(key), "");
        // A 412 followed by a HEAD that finds nothing means the object was
        // deleted in between (by something outside Coffer): try once more.
        for _ in 0..2 {
            let resp = self
                .send(&op, Method::PUT, &url, &headers, Payload::Content(content), &[StatusCode::PRECONDITION_FAILED])
                .await?;
            if resp.status() != StatusCode::PRECONDITION_FAILED {
                return Ok(true);
            }
            // Something is there already: it counts as this content only
            // if its digest is confirmed.
            if let Some(written) = self.confirm_existing(bucket, key, content).await? {
                return Ok(written);
            }
        }
        Err(Error::Conflict(format!("{op}: the object keeps vanishing after the server says it exists")))
    }

    /// What is stored under `key` already: `None` when nothing is,
    /// `Some(false)` (nothing written) when it is confirmed to be this
    /// content, and a conflict otherwise (see [`BlobMeta::confirm`]).
    ///
    /// An object of the right size whose digest cannot be confirmed yet is
    /// looked at again a few times (within about a second): a server that
    /// does not write an object and its metadata in one step (s3s-fs does
    /// not) shows a concurrent put's object before its checksum and
    /// metadata, and that put is most likely this same content.
    pub(super) async fn confirm_existing(&self, bucket: &str, key: &str, content: &Content) -> Result<Option<bool>> {
        let (mut delay, mut attempt) = (Duration::from_millis(25), 0);
        loop {
            attempt += 1;
            match self.head(bucket, key).await? {
                None => return Ok(None),
                Some(meta) if meta.sha256.is_none() && meta.size == content.size() && attempt < 6 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Some(meta) => {
                    meta.confirm(format!("s3://{bucket}/{key}"), content)?;
                    return Ok(Some(false));
                }
            }
        }
    }

    /// Read an XML answer into `T`.
    pub(super) async fn xml<T: serde::de::DeserializeOwned>(op: &Op<'_>, resp: reqwest::Response) -> Result<T> {
        let text = resp.text().await.map_err(|e| transport_error(op, e))?;
        quick_xml::de::from_str(&text).map_err(|e| Error::Backend {
            message: format!("{op}: unreadable answer: {e}"),
            retryable: false,
            source: None,
        })
    }

    /// A presigned GET link, valid for `expires`, that asks S3 to answer
    /// with `disposition` and the download file name. The disposition is
    /// always sent, so a link saves the download unless the caller asked
    /// for inline, whatever the object's stored headers say.
    pub fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        expires: Duration,
        filename: Option<&str>,
        disposition: Disposition,
    ) -> Result<String> {
        let query = format!("response-content-disposition={}", encode(&content_disposition(disposition, filename)));
        self.signer.presign("GET", &self.url(bucket, Some(key), &query), expires, SystemTime::now())
    }

    /// The plain URL of an object, for operators who made the bucket public.
    pub fn public_url(&self, bucket: &str, key: &str) -> String {
        self.url(bucket, Some(key), "")
    }
}

/// `attachment` (or `inline`), and with a name `; filename="…";
/// filename*=UTF-8''…`: a plain ASCII fallback for old clients and the
/// exact name for the rest (RFC 6266).
fn content_disposition(disposition: Disposition, name: Option<&str>) -> String {
    let kind = disposition.as_str();
    let Some(name) = name else { return kind.to_string() };
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}", encode(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(virtual_hosted: bool, endpoint: &str) -> S3Store {
        S3Store::new(&S3Settings {
            access_key_id: Some("AK".into()),
            secret_access_key: Some("SK".into()),
            endpoint_url: Some(endpoint.into()),
            virtual_hosted: Some(virtual_hosted),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn urls_follow_the_endpoint_and_addressing_style() {
        let path = store(false, "http://127.0.0.1:9000");
        assert_eq!(path.url("b", Some("org/k"), ""), "http://127.0.0.1:9000/b/org/k");
        assert_eq!(path.url("b", None, "list-type=2"), "http://127.0.0.1:9000/b/?list-type=2");
        let virt = store(true, "https://s3.example.net/base/");
        assert_eq!(virt.url("b", Some("a b"), ""), "https://b.s3.example.net/base/a%20b");
    }

    #[test]
    fn names_that_would_address_something_else_are_refused() {
        for (bucket, key) in [
            ("a/b", Some("k")),
            ("UPPER", Some("k")),
            ("ab", None),
            ("ok-bucket", Some("../other")),
            ("ok-bucket", Some("a/./b")),
            ("ok-bucket", Some("")),
            ("ok-bucket", Some("nul\0")),
        ] {
            assert!(matches!(check_names(bucket, key), Err(Error::InvalidName(_))), "{bucket:?} {key:?}");
        }
        check_names("ok-bucket", Some("org name/..x/ä")).unwrap();
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in ["not a url", "ftp://h", "http://h/?q=1"] {
            let r = S3Store::new(&S3Settings {
                access_key_id: Some("AK".into()),
                secret_access_key: Some("SK".into()),
                endpoint_url: Some(bad.into()),
                ..Default::default()
            });
            assert!(matches!(r, Err(Error::Config(m)) if m.contains("AWS_ENDPOINT_URL")), "{bad}");
        }
    }

    #[test]
    fn links_use_the_configured_endpoint_and_name_the_download() {
        let s = store(false, "http://127.0.0.1:9000");
        let link =
            s.presign_get("b", "k", Duration::from_secs(60), Some("report é.pdf"), Disposition::Attachment).unwrap();
        assert!(link.starts_with("http://127.0.0.1:9000/b/k?"), "{link}");
        assert!(
            link.contains(
                "response-content-disposition=attachment%3B%20filename%3D%22report%20_.pdf%22%3B%20filename%2A%3DUTF-8%27%27report%2520%25C3%25A9.pdf"
            ),
            "{link}"
        );
        assert!(link.contains("X-Amz-Expires=60"), "{link}");
    }

    /// Without a name, a link must still say "attachment": otherwise the
    /// browser shows an uploaded HTML or SVG file on the endpoint's origin.
    #[test]
    fn links_without_a_filename_are_still_attachments() {
        let s = store(false, "http://127.0.0.1:9000");
        let link = s.presign_get("b", "k", Duration::from_secs(60), None, Disposition::Attachment).unwrap();
        let query = link.split_once('?').unwrap().1;
        assert!(query.split('&').any(|p| p == "response-content-disposition=attachment"), "{link}");
    }

    #[test]
    fn inline_links_ask_for_inline_and_keep_the_name() {
        let s = store(false, "http://127.0.0.1:9000");
        let named = s.presign_get("b", "k", Duration::from_secs(60), Some("a\"b.png"), Disposition::Inline).unwrap();
        assert!(named.contains("response-content-disposition=inline%3B%20filename%3D%22a_b.png%22"), "{named}");
        let bare = s.presign_get("b", "k", Duration::from_secs(60), None, Disposition::Inline).unwrap();
        assert!(bare.split('&').any(|p| p.ends_with("response-content-disposition=inline")), "{bare}");
        assert!(!bare.contains("attachment"), "{bare}");
    }

    #[test]
    fn content_disposition_escapes_the_ascii_fallback() {
        assert_eq!(content_disposition(Disposition::Attachment, None), "attachment");
        assert_eq!(content_disposition(Disposition::Inline, None), "inline");
        assert_eq!(
            content_disposition(Disposition::Inline, Some("x\\\"é.txt")),
            "inline; filename=\"x___.txt\"; filename*=UTF-8''x%5C%22%C3%A9.txt"
        );
    }
}
