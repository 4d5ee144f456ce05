//! [`Server`]: bind, then serve until the shutdown future completes,
//! draining requests in flight within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::app::{App, Limits};
use super::auth::Tokens;
use super::router::router;
use crate::coffer::Coffer;
use crate::config::DEFAULT_LISTEN;
use crate::error::{Error, Result};

/// A bound, not yet serving, server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
}

impl Server {
    /// Check the settings and bind: to `listen`, or the configured
    /// address, or `127.0.0.1:8080`. Without any token configured, only
    /// a loopback address is accepted.
    pub async fn bind(coffer: Coffer, listen: Option<&str>) -> Result<Server> {
        let settings = coffer.config().server.clone();
        settings.validate()?;
        let listen = listen.or(settings.listen.as_deref()).unwrap_or(DEFAULT_LISTEN).to_string();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&listen)
            .await
            .map_err(|e| Error::Config(format!("cannot use listen address {listen:?}: {e}")))?
            .collect();
        let tokens = Tokens::new(&settings);
        if !tokens.any() && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(Error::Config(format!(
                "no tokens are configured, so the server would let anyone read and write: it listens only on a \
                 loopback address (127.0.0.1, ::1) until tokens are set ([[server.tokens]] in the config file), \
                 not on {listen}"
            )));
        }
        let listener = TcpListener::bind(&addrs[..])
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {listen}: {e}")))?;
        let limits = Limits::from_settings(&settings);
        let app = Arc::new(App {
            coffer,
            tokens,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            per_org: Default::default(),
            readiness: Default::default(),
            limits,
            draining: AtomicBool::new(false),
        });
        Ok(Server { listener, app })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::io("the listening socket", e))
    }

    /// Serve until `shutdown` completes; then stop accepting, let requests
    /// in flight finish (for up to the grace period), and wait for
    /// clean-up. Policy files are watched and swapped in as they change.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Server { listener, app } = self;
        let watcher = app.coffer.watch_policies(Duration::from_secs(2));
        let router = router(app.clone());
        // HTTP/1.1 only: h2c would bring streams that flow control can
        // stall without a write ever blocking, out of the timeouts' reach
        // (put a proxy in front for HTTP/2).
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
        builder.http1().timer(TokioTimer::new()).header_read_timeout(app.limits.idle_timeout);
        let builder = Arc::new(builder);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut connections = tokio::task::JoinSet::new();
        tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), tokens = app.tokens.any(), "serving");
        let mut shutdown = std::pin::pin!(shutdown);
        let open = Arc::new(Semaphore::new(app.limits.max_connections));
        let lingering = Arc::new(Semaphore::new(lingering_cap(app.limits.max_connections)));
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, say: wait a moment rather than spin.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Finished connections leave the set as new ones come.
            while connections.try_join_next().is_some() {}
            // Past the connection limit: answered and closed at once (or
            // after a short lingering close), so the descriptor is free
            // again soon.
            let Ok(slot) = open.clone().try_acquire_owned() else {
                refuse_connection(stream, app.limits.max_connections, &lingering);
                continue;
            };
            let _ = stream.set_nodelay(true);
            // Clients that stop reading a response are dropped after the
            // idle timeout (a write that cannot proceed).
            let mut io = tokio_io_timeout::TimeoutStream::new(stream);
            io.set_write_timeout(Some(app.limits.idle_timeout));
            let io = TokioIo::new(Box::pin(io));
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let builder = builder.clone();
            let watch = graceful.watcher();
            connections.spawn(async move {
                let connection = builder.serve_connection_with_upgrades(io, service);
                if let Err(e) = watch.watch(connection.into_owned()).await {
                    tracing::debug!(%peer, "connection: {e}");
                }
                drop(slot);
            });
        }
        app.draining.store(true, Ordering::Relaxed);
        drop(listener);
        tracing::info!("shutting down: finishing requests in flight");
        let grace = app.limits.shutdown_grace;
        let finished = tokio::time::timeout(grace, graceful.shutdown()).await.is_ok();
        if !finished {
            // Cancel what is left: dropped handlers queue their clean-up
            // (reservations released, uploads aborted), awaited below.
            tracing::warn!("requests still in flight after {} s are cancelled", grace.as_secs());
            connections.abort_all();
        }
        while connections.join_next().await.is_some() {}
        watcher.abort();
        let cleaned = app.coffer.quiesce(Duration::from_secs(30)).await;
        if !cleaned {
            tracing::warn!("clean-up of cancelled requests did not finish; run coffer gc");
        }
        Ok(())
    }
}

/// How many refused connections may be answered at once (each held at
/// most about 3 × [`LINGER`]): past that, refused connections get the 503
/// without waiting and are closed at once.
const LINGERING: usize = 64;

/// Refused connections answered at once beside `max_connections` open
/// ones: [`LINGERING`], but no more than an eighth of the connection
/// limit (and at least 8), so they do not take the descriptors the limit
/// leaves for the database, the spool and S3.
fn lingering_cap(max_connections: usize) -> usize {
    LINGERING.min(max_connections / 8).max(8)
}

/// How long a refused connection waits for its request head, and then
/// lingers (reading and discarding what the client still sends) after
/// its answer, before it is closed.
const LINGER: Duration = Duration::from_millis(500);

/// Answer a connection over the limit with a 503 (`Retry-After: 1`,
/// `Connection: close`) and close it; no request on it is ever served.
/// HTTP clients treat an answer that comes before their request as a
/// broken connection, and closing a socket with unread bytes answers with
/// a reset that can destroy the 503 before the client reads it; so, like
/// nginx, the answer waits for the request head (at most [`LINGER`], 16
/// KiB), and is followed by a FIN and a lingering close (what the client
/// still sends is discarded for at most [`LINGER`], 64 KiB). At most
/// [`lingering_cap`] connections are answered this way at once; the rest get
/// the 503 without waiting and are closed at once.
fn refuse_connection(stream: tokio::net::TcpStream, limit: usize, lingering: &Arc<Semaphore>) {
    crate::metrics::global().inc(
        "coffer_http_connections_refused_total",
        "Connections refused because too many were open.",
        &[],
        1.0,
    );
    let body = format!(
        "{{\"error\":\"overloaded\",\"message\":\"more than {limit} connections are open; try again shortly\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        let _ = stream.try_write(answer.as_bytes());
        return;
    };
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _permit = permit;
        let mut stream = stream;
        discard(&mut stream, 16 << 10, true).await;
        let _ = tokio::time::timeout(LINGER, stream.write_all(answer.as_bytes())).await;
        let _ = stream.shutdown().await;
        discard(&mut stream, 64 << 10, false).await;
    });
}

/// Read and discard what the client sends, for at most [`LINGER`] and
/// about `limit` bytes, until it closes, or (with `head`) until a blank
/// line ends a request head. Only the 3 bytes before each read are kept
/// to find that line: a head dripped in byte by byte costs no more than
/// one sent at once.
async fn discard(stream: &mut tokio::net::TcpStream, limit: usize, head: bool) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 3 + 4096];
    let (mut read, mut kept) = (0, 0);
    let _ = tokio::time::timeout(LINGER, async {
        while read < limit {
            match stream.read(&mut buf[kept..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    read += n;
                    let seen = kept + n;
                    if head && buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                    kept = seen.min(3);
                    buf.copy_within(seen - kept..seen, 0);
                }
            }
        }
    })
    .await;
}
