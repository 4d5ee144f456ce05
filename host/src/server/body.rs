//! Bodies in and out: the upload stream (bounded, with an idle timeout),
//! JSON request bodies, ranges of a verified stream, the minimum rate of
//! responses, and counting what goes out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt;

use super::error::{ApiError, ApiResult};
use crate::content::ByteStream;
use crate::{Error, Result};

/// Why an upload stream stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// More than the limit arrived.
    TooLarge(u64),
    /// Nothing arrived for the idle timeout.
    Idle(Duration),
    /// Bytes arrived, on average, slower than the minimum rate.
    TooSlow(u64),
    /// The connection broke (the client went away).
    Broken,
}

/// A minimum average rate, counted from the start once a grace period
/// has passed: a client that trickles bytes (just often enough to escape
/// the idle timeout) would otherwise hold its request's resources for as
/// long as it likes.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Bytes per second, on average.
    pub min_rate: u64,
    /// Time before the rate counts.
    pub grace: Duration,
}

impl Pace {
    /// Whether `bytes` in `elapsed` are too slow.
    pub fn too_slow(&self, bytes: u64, elapsed: Duration) -> bool {
        elapsed > self.grace && (bytes as f64) < self.min_rate as f64 * elapsed.as_secs_f64()
    }
}

/// A response stream that fails (cutting the response short) once its
/// client reads, on average, slower than `pace` allows (with a minimum
/// rate of 0, the stream as it is). A client that stops reading
/// altogether is the connection's write timeout's.
pub fn paced(stream: ByteStream, pace: Pace) -> ByteStream {
    if pace.min_rate == 0 {
        return stream;
    }
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let mut failed = false;
    Box::pin(stream.map(move |item| {
        if failed {
            return item;
        }
        if let Ok(chunk) = &item {
            if pace.too_slow(sent, started.elapsed()) {
                failed = true;
                return Err(Error::InvalidInput(format!(
                    "the client read slower than {} bytes/s; the response was cut off",
                    pace.min_rate
                )));
            }
            sent += chunk.len() as u64;
        }
        item
    }))
}

/// The request body as a stream for [`crate::Content::from_stream`]: at
/// most `limit` bytes (one byte more and it fails, before the rest is
/// read), each chunk within `idle` of the last, on average at `pace`.
/// What stopped it is left in the returned cell, for the status.
pub fn upload(body: Body, limit: u64, idle: Duration, pace: Pace) -> (ByteStream, Arc<Mutex<Option<Fault>>>) {
    let fault = Arc::new(Mutex::new(None));
    let cell = fault.clone();
    let set = move |f: Fault| {
        *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    };
    let data = body.into_data_stream();
    let started = std::time::Instant::now();
    let stream = futures_util::stream::unfold((data, 0u64, false), move |(mut data, seen, done)| {
        let set = set.clone();
        async move {
            if done {
                return None;
            }
            let failed = |f: Fault, data| {
                set(f);
                let message = match f {
                    Fault::TooLarge(limit) => format!("the body is larger than {limit} bytes"),
                    Fault::Idle(t) => format!("the client sent nothing for {} s", t.as_secs()),
                    Fault::TooSlow(rate) => format!("the client sent slower than {rate} bytes/s"),
                    Fault::Broken => "the request body broke off (the client went away?)".into(),
                };
                Some((Err(Error::InvalidInput(message)), (data, seen, true)))
            };
            match tokio::time::timeout(idle, data.next()).await {
                Err(_) => failed(Fault::Idle(idle), data),
                Ok(None) => None,
                Ok(Some(Err(_))) => failed(Fault::Broken, data),
                Ok(Some(Ok(chunk))) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > limit {
                        failed(Fault::TooLarge(limit), data)
                    } else if pace.too_slow(seen, started.elapsed()) {
                        failed(Fault::TooSlow(pace.min_rate), data)
                    } else {
                        Some((Ok(chunk), (data, seen, false)))
                    }
                }
            }
        }
    });
    (Box::pin(stream), fault)
}

/// A `Range` header's one range over `size` bytes, as `(start, end)`
/// inclusive: `Ok(None)` to answer the whole object (several ranges, a
/// unit other than bytes, or a header that does not parse, which RFC 9110
/// lets a server ignore), `Err(())` when unsatisfiable.
#[allow(clippy::result_unit_err)]
pub fn parse_range(header: &str, size: u64) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let number =
        |s: &str| (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten();
    if spec.contains(',')
        || (a.is_empty() && number(b).is_none())
        || (!a.is_empty() && (number(a).is_none() || (!b.is_empty() && number(b).is_none())))
    {
        return Ok(None);
    }
    let range = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(size.saturating_sub(1))
        };
        if start >= size || end < start {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

/// Call `finish` with the number of data bytes once `body` is dropped
/// (sent, or abandoned), keeping `guard` alive until then.
pub fn counted<G: Send + Sync + 'static>(
    body: Body,
    guard: G,
    finish: impl FnOnce(u64) + Send + Sync + 'static,
) -> Body {
    struct Done<G, F: FnOnce(u64)> {
        bytes: std::sync::atomic::AtomicU64,
        finish: Mutex<Option<F>>,
        _guard: G,
    }
    impl<G, F: FnOnce(u64)> Drop for Done<G, F> {
        fn drop(&mut self) {
            if let Some(f) = self.finish.lock().unwrap_or_else(|e| e.into_inner()).take() {
                f(self.bytes.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
    }
    let done = Done { bytes: Default::default(), finish: Mutex::new(Some(finish)), _guard: guard };
    Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
        if let Some(data) = frame.data_ref() {
            done.bytes.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        frame
    }))
}

/// A stream of verified bytes as a response body (an error cuts the
/// response short, so the client sees it fail, never complete).
pub fn streamed(stream: ByteStream) -> Body {
    Body::from_stream(stream.map(|r| r.map_err(|e: Error| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })))
}

/// `tar` ustar header for a regular file.
pub fn tar_header(name: &str, size: u64, mtime: u64) -> Result<Bytes> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(|e| Error::Internal(format!("tar entry name {name:?}: {e}")))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(Bytes::copy_from_slice(h.as_bytes()))
}

/// Zeros that pad a tar entry of `size` bytes to its 512-byte block.
pub fn tar_padding(size: u64) -> Bytes {
    let rest = (size % 512) as usize;
    if rest == 0 { Bytes::new() } else { Bytes::from(vec![0u8; 512 - rest]) }
}

/// Largest JSON request body.
const MAX_JSON: usize = 1 << 20;

/// A JSON request body (at most [`MAX_JSON`] bytes); an empty one is
/// `T::default()`.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned + Default>(body: Body) -> ApiResult<T> {
    let bytes = axum::body::to_bytes(body, MAX_JSON).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", format!("a JSON body is at most {MAX_JSON} bytes"))
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the JSON body: {e}")))
}

/// A response stream whose failure (a corrupt object, a backend gone, a
/// client too slow) is logged under the request's id (taken now: the body
/// streams after the handler, outside its scope): the client only sees
/// its response cut off, and has the id from `X-Request-Id`.
pub(crate) fn logged(stream: ByteStream, what: String) -> ByteStream {
    let id = super::error::request_id();
    Box::pin(stream.inspect(move |item| {
        if let Err(e) = item {
            let id = id.as_deref().unwrap_or("-");
            tracing::error!(request_id = id, object = %what, "a read broke off: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::range;
    use crate::content::{Digest, verify_stream};

    fn chunks(data: &[u8], size: usize) -> ByteStream {
        let v: Vec<Result<Bytes>> = data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Box::pin(futures_util::stream::iter(v))
    }

    async fn collect(mut s: ByteStream) -> (Vec<u8>, Option<Error>) {
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-4", 100), Err(()));
        assert_eq!(parse_range("bytes=x-", 100), Ok(None));
        assert_eq!(parse_range("bytes=+5-9", 100), Ok(None));
        assert_eq!(parse_range("bytes=abc", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-", 0), Err(()));
    }

    #[tokio::test]
    async fn a_range_is_cut_from_the_stream_across_chunks() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let digest = Digest::of(&data);
        for (start, end) in [(0, 0), (0, 9_999), (1_000, 3_333), (9_999, 9_999), (511, 512)] {
            let verified = verify_stream(chunks(&data, 700), digest, data.len() as u64, "t".into());
            let (got, err) = collect(range(verified, start, end)).await;
            assert!(err.is_none());
            assert_eq!(got, &data[start as usize..=end as usize], "{start}-{end}");
        }
    }

    #[tokio::test]
    async fn a_range_of_corrupt_content_never_completes() {
        let data: Vec<u8> = vec![7u8; 10_000];
        let mut bad = data.clone();
        bad[9_000] = 8;
        // The range lies wholly before the corruption: it is still held
        // back, because the object as a whole is wrong.
        let verified = verify_stream(chunks(&bad, 700), Digest::of(&data), data.len() as u64, "t".into());
        let (got, err) = collect(range(verified, 0, 1_000)).await;
        assert!(matches!(err, Some(Error::Integrity(_))), "{err:?}");
        assert!(got.len() < 1_001, "the whole range was delivered: {}", got.len());
    }

    #[tokio::test]
    async fn a_slow_reader_is_cut_off_after_the_grace_period() {
        let pace = Pace { min_rate: 1000, grace: Duration::from_millis(50) };
        assert!(!pace.too_slow(0, Duration::from_millis(40)));
        assert!(pace.too_slow(10, Duration::from_millis(100)));
        assert!(!pace.too_slow(1000, Duration::from_millis(100)));
        let slow = Box::pin(futures_util::stream::iter(0..5).then(|_| async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            Ok(Bytes::from_static(b"x"))
        }));
        let (got, err) = collect(paced(slow, pace)).await;
        assert!(matches!(err, Some(Error::InvalidInput(m)) if m.contains("slower")));
        assert!(got.len() < 5);
    }

    #[test]
    fn tar_blocks() {
        let h = tar_header(&"a".repeat(64), 1000, 0).unwrap();
        assert_eq!(h.len(), 512);
        assert_eq!(tar_padding(1000).len(), 24);
        assert_eq!(tar_padding(1024).len(), 0);
    }

    #[tokio::test]
    async fn a_read_that_breaks_off_is_logged_under_the_request_id() {
        #[derive(Clone, Default)]
        struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let items = vec![Ok(Bytes::from_static(b"a")), Err(Error::Integrity("the bytes differ".into()))];
        let failing: ByteStream = Box::pin(futures_util::stream::iter(items));
        // Made inside the request's scope, streamed outside it (as axum does).
        let stream =
            super::super::error::REQUEST_ID.scope("feedc0de".into(), async { logged(failing, "acme/x".into()) }).await;
        let (_, err) = collect(stream).await;
        assert!(err.is_some());
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("feedc0de") && text.contains("the bytes differ"), "{text}");
    }
}
