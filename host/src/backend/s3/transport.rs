//! How S3 requests travel: reqwest's requests and responses, sent by
//! hyper-util's pooled client (what reqwest itself runs on) over a
//! connector of Coffer's own.
//!
//! Why a connector of its own: many S3 servers (s3s, Garage, anything on
//! hyper) write an answer's headers and then, once the object's bytes are
//! read from disk, its body, with Nagle's algorithm on. The body is held
//! back until the client acknowledges the headers, and a client that has
//! just sent a request on a kept-alive connection delays that ACK by up to
//! 40 ms, hoping to carry it on its next request. Every small GET then
//! takes ~44 ms (boto3, object_store and reqwest alike). Coffer sets
//! `TCP_QUICKACK` on its socket after each request it writes, so the
//! kernel acknowledges the answer's first segment as soon as it is read
//! and the server sends the rest at once. reqwest offers no way to set a
//! socket option on its connections; hyper-util's client does, through
//! the connector. See BENCHMARKS.md ("Small reads from S3").
//!
//! Timeouts are those reqwest applied: the answer's headers within the
//! timeout of sending the request, and then no read of the body silent
//! for longer than the timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::Uri;
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a connection may take to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The pooled client. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub(super) struct Transport {
    client: Client<hyper_rustls::HttpsConnector<QuickAckConnector>, reqwest::Body>,
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// No answer (or no more of it) came within the timeout.
#[derive(Debug, thiserror::Error)]
#[error("no answer for {0:?}")]
pub struct TimedOut(pub Duration);

impl Transport {
    /// A client for an endpoint; `https` loads the system's root
    /// certificates (an `http://` endpoint needs none).
    pub(super) fn new(https: bool, timeout: Duration) -> Result<Transport> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // As reqwest did: a dead peer on an idle connection is found.
        http.set_keepalive(Some(Duration::from_secs(15)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(https)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(QuickAckConnector(http));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Transport { client, timeout })
    }

    /// Send `req`; the answer's body is read with the idle timeout.
    pub(super) async fn execute(&self, req: reqwest::Request) -> std::result::Result<reqwest::Response, BoxError> {
        let req: http::Request<reqwest::Body> = req.try_into()?;
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(resp) => resp?,
            Err(_) => return Err(Box::new(TimedOut(self.timeout))),
        };
        let timeout = self.timeout;
        Ok(reqwest::Response::from(resp.map(|body| reqwest::Body::wrap(IdleTimeout::new(body, timeout)))))
    }
}

/// rustls with the system's root certificates, or none for plain HTTP.
fn tls_config(https: bool) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::Config(
                "AWS_ENDPOINT_URL is https://, but no root certificate was found on this system (install ca-certificates)"
                    .into(),
            ));
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// hyper-util's TCP connector, its connections wrapped in [`QuickAck`].
#[derive(Clone)]
struct QuickAckConnector(HttpConnector);

impl tower_service::Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<QuickAck, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(QuickAck { io: connecting.await?, ack_next_read: false }) })
    }
}

/// A TCP connection that acknowledges the first read after each write at
/// once (see the module's documentation). One `setsockopt` per request.
struct QuickAck {
    io: TokioIo<TcpStream>,
    ack_next_read: bool,
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for QuickAck {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.ack_next_read) {
            // Leaves the kernel's "interactive" mode, in which it holds
            // ACKs back to send them with the next request; any ACK
            // already held back goes out now. Failing costs only speed.
            let _ = rustix::net::sockopt::set_tcp_quickack(this.io.inner(), true);
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl QuickAck {
    fn wrote<T>(&mut self, written: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if matches!(written, Poll::Ready(Ok(_))) {
            self.ack_next_read = true;
        }
        written
    }
}

impl Write for QuickAck {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that fails with [`TimedOut`] when no frame arrives
/// within the timeout of the last one.
struct IdleTimeout {
    body: Incoming,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    fn new(body: Incoming, timeout: Duration) -> IdleTimeout {
        IdleTimeout { body, timeout, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TimedOut(this.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A server that answers every byte it reads with one byte.
    async fn echo_one() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while s.read_exact(&mut b).await.is_ok() && s.write_all(b"x").await.is_ok() {}
                });
            }
        });
        addr
    }

    /// Whether the kernel acknowledges at once (not in its "interactive"
    /// mode, where it holds ACKs back for the next request).
    fn acks_at_once(s: &TcpStream) -> bool {
        rustix::net::sockopt::tcp_quickack(s).unwrap()
    }

    /// The mechanism behind the small-read stall, and its cure: a plain
    /// socket that sends a request right after an answer enters the mode
    /// that delays ACKs (this is what the control shows, so the test can
    /// fail); through `QuickAck`, the first read after each request leaves
    /// it, every time.
    #[tokio::test]
    async fn the_read_after_a_request_acknowledges_at_once() {
        let addr = echo_one().await;
        let mut plain = TcpStream::connect(addr).await.unwrap();
        let mut delayed = 0;
        let mut b = [0u8; 1];
        for _ in 0..20 {
            plain.write_all(b"r").await.unwrap();
            plain.read_exact(&mut b).await.unwrap();
            delayed += usize::from(!acks_at_once(&plain));
        }
        assert!(delayed > 0, "the kernel never delayed an ACK on a plain socket: the test shows nothing here");

        let stream = TcpStream::connect(addr).await.unwrap();
        let mut quick = TokioIo::new(QuickAck { io: TokioIo::new(stream), ack_next_read: false });
        for round in 0..20 {
            quick.write_all(b"r").await.unwrap();
            quick.read_exact(&mut b).await.unwrap();
            assert!(acks_at_once(quick.inner().io.inner()), "round {round}: ACKs are held back after a request");
        }
    }
}
