//! `coffer serve` over real TCP: reqwest as the client (and raw sockets
//! where a client must misbehave: stall, disconnect mid-body, send no
//! body at all), the real policy, SQLite and the S3 test server.

mod auth;
mod browser;
mod fairness;
mod limits;
mod objects;
mod operations;

use std::time::Duration;

use coffer::server::Server;
use coffer::{Coffer, Config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{s3_config, sqlite_config, unique_bucket};

/// A server on 127.0.0.1 with a port of its own, stopped when dropped
/// (or through [`TestServer::stop`]).
pub struct TestServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub coffer: Coffer,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<coffer::Result<()>>>,
}

impl TestServer {
    pub async fn start(dir: tempfile::TempDir, config: Config) -> TestServer {
        let coffer = Coffer::open(config).await.unwrap();
        let server = Server::bind(coffer.clone(), Some("127.0.0.1:0")).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestServer { url: format!("http://{addr}"), addr, coffer, dir, stop: Some(tx), task: Some(task) }
    }

    /// Ask for a graceful shutdown; the returned handle ends when the
    /// server has.
    pub fn stop(&mut self) -> tokio::task::JoinHandle<coffer::Result<()>> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running")
    }

    pub fn objects(&self, org: &str) -> String {
        format!("{}/v1/orgs/{org}/objects", self.url)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn sqlite_server(change: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    change(&mut config);
    TestServer::start(dir, config).await
}

async fn s3_server(change: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = s3_config(dir.path(), Some(&unique_bucket("http")), None);
    change(&mut config);
    TestServer::start(dir, config).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn json(r: reqwest::Response) -> Value {
    let status = r.status();
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"))
}

async fn put(s: &TestServer, org: &str, bytes: &[u8]) -> Value {
    let r =
        client().put(s.objects(org)).header("content-type", "text/plain").body(bytes.to_vec()).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    json(r).await
}

/// Send `head` and `body` on a fresh connection, leaving it open.
async fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    s
}

/// What came back on a raw connection within `within` (until it closed).
async fn answer(s: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // A complete JSON answer is enough.
                if out.ends_with(b"}") || out.ends_with(b"}\r\n\r\n") || out.ends_with(b"0\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn upload_head(org: &str, length: usize, extra: &str) -> String {
    format!("PUT /v1/orgs/{org}/objects HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {length}\r\n{extra}\r\n")
}

/// Reservations and records in the SQLite catalog.
fn catalog_rows(dir: &std::path::Path) -> (i64, i64) {
    let db = rusqlite::Connection::open(dir.join("coffer.db")).unwrap();
    let count = |t: &str| db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap();
    (count("objects"), count("pending"))
}
