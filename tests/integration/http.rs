//! `coffer serve` over real TCP: reqwest as the client (and raw sockets
//! where a client must misbehave: stall, disconnect mid-body, send no
//! body at all), the real policy, SQLite and the S3 test server.

use std::time::Duration;

use coffer::config::{Scope, TokenSettings};
use coffer::server::Server;
use coffer::server::auth::token_hash;
use coffer::{Coffer, Config, Digest};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{data, s3_config, sqlite_config, unique_bucket};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_ranges_etags_pages_and_deletes_on_sqlite() {
    let s = sqlite_server(|_| {}).await;
    round_trip(&s).await;
    // Objects in the database have no direct link: a clear 400, and a
    // redirect request is served directly.
    let bytes = data(5000, 9);
    let sha = Digest::of(&bytes).to_string();
    put(&s, "acme", &bytes).await;
    let r = client().post(format!("{}/{sha}/link", s.objects("acme"))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(json(r).await["message"].as_str().unwrap().contains("direct links need S3"));
    let r = client().get(format!("{}/{sha}?redirect=true", s.objects("acme"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_on_s3_with_links_and_redirects_to_the_endpoint() {
    let s = s3_server(|_| {}).await;
    round_trip(&s).await;
    let bytes = data(70_000, 4);
    let sha = Digest::of(&bytes).to_string();
    put(&s, "acme", &bytes).await;
    let endpoint = crate::s3_server::server().endpoint();
    let r = client().get(format!("{}/{sha}?redirect=true", s.objects("acme"))).send().await.unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&endpoint), "{location}");
    let direct = client().get(&location).send().await.unwrap();
    assert_eq!(direct.status(), 200, "the presigned link works without Coffer");
    assert!(direct.bytes().await.unwrap() == bytes);
    let r = client()
        .post(format!("{}/{sha}/link", s.objects("acme")))
        .body(serde_json::json!({"expires_in": 60, "filename": "scan.txt"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let link = json(r).await;
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&endpoint) && url.contains("X-Amz-Expires=60"), "{url}");
    let direct = client().get(url).send().await.unwrap();
    assert!(direct.headers()["content-disposition"].to_str().unwrap().contains("scan.txt"));
    assert!(direct.bytes().await.unwrap() == bytes);
    let r = client()
        .post(format!("{}/{sha}/link", s.objects("acme")))
        .body(serde_json::json!({"expires_in": 0}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn round_trip(s: &TestServer) {
    let c = client();
    let bytes = data(700_000, 1);
    let sha = Digest::of(&bytes).to_string();
    let first = client()
        .put(s.objects("acme"))
        .header("content-type", "application/pdf")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first = json(first).await;
    assert_eq!(first["sha256"], sha.as_str());
    assert_eq!(first["size"], 700_000);
    assert_eq!(first["content_type"], "application/pdf");
    assert_eq!(first["deduplicated"], false);
    // Stored twice, stored once; POST is the same as PUT.
    let again = c.post(s.objects("acme")).body(bytes.clone()).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await["deduplicated"], true);

    let object = format!("{}/{sha}", s.objects("acme"));
    let r = c.get(&object).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.headers()["content-length"], "700000");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert!(r.headers()["repr-digest"].to_str().unwrap().starts_with("sha-256=:"));
    assert!(r.bytes().await.unwrap() == bytes);

    let head = c.head(&object).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "700000");
    assert!(head.bytes().await.unwrap().is_empty());

    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=699990-", 699_990, 699_999),
        ("bytes=-10", 699_990, 699_999),
        ("bytes=300000-300000", 300_000, 300_000),
    ] {
        let r = c.get(&object).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["content-range"], format!("bytes {start}-{end}/700000").as_str());
        assert!(r.bytes().await.unwrap() == bytes[start..=end], "{range}");
    }
    let r = c.get(&object).header("range", "bytes=700000-").send().await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */700000");
    assert_eq!(json(r).await["error"], "range-not-satisfiable");
    // If-Range with another validator: the whole object.
    let r = c.get(&object).header("range", "bytes=0-9").header("if-range", "\"other\"").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = c.get(&object).header("if-none-match", format!("\"{sha}\"")).send().await.unwrap();
    assert_eq!(r.status(), 304);
    let r = c.get(&object).header("if-none-match", "\"something-else\"").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let meta = json(c.get(format!("{object}/meta")).send().await.unwrap()).await;
    assert_eq!(meta["sha256"], sha.as_str());

    // Pages.
    let mut all = vec![sha.clone()];
    for i in 0..4u8 {
        all.push(put(s, "acme", &data(100, 100 + i)).await["sha256"].as_str().unwrap().to_string());
    }
    all.sort();
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = json(c.get(format!("{}?limit=2&after={after}", s.objects("acme"))).send().await.unwrap()).await;
        for o in page["objects"].as_array().unwrap() {
            seen.push(o["sha256"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let r = c.get(format!("{}?limit=0", s.objects("acme"))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(format!("{}?limit=abc", s.objects("acme"))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "invalid-input", "axum's own rejections are JSON too");

    // Another organisation has none of it.
    let r = c.get(format!("{}/{sha}", s.objects("other"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json(r).await["error"], "not-found");

    let r = c.delete(&object).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["sha256"], sha.as_str());
    for r in [c.get(&object).send().await.unwrap(), c.delete(&object).send().await.unwrap()] {
        assert_eq!(r.status(), 404);
        assert_eq!(json(r).await["error"], "not-found");
    }
    let r = c.get(format!("{}/not-a-digest", s.objects("acme"))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(format!("{}/nowhere", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json(r).await["error"], "not-found");
    let r = c.patch(s.objects("acme")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(json(r).await["error"], "method-not-allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_header_answers_known_content_without_reading_the_body() {
    let s = sqlite_server(|_| {}).await;
    let bytes = data(10_000, 5);
    let d = Digest::of(&bytes);
    put(&s, "acme", &bytes).await;
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d.as_bytes());

    // A megabyte announced with `Expect: 100-continue`, not one byte sent:
    // the answer comes anyway.
    for header in [format!("repr-digest: sha-512=:AAAA:, sha-256=:{b64}:\r\n"), format!("x-coffer-sha256: {d}\r\n")] {
        let head = upload_head("acme", 1 << 20, &format!("{header}expect: 100-continue\r\n"));
        let mut conn = raw(s.addr, &head, b"").await;
        let text = answer(&mut conn, Duration::from_secs(10)).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("\"deduplicated\":true"), "{text}");
        assert!(!text.contains("100 Continue"), "the client was never asked for the body: {text}");
    }
    // Sent with the body anyway (no Expect): the body is taken and
    // discarded, and the connection stays usable for the next request.
    let big = data(4 << 20, 17);
    let big_digest =
        s.coffer.put("acme", coffer::Content::from_bytes(big.clone(), None).unwrap()).await.unwrap().sha256;
    let head = upload_head("acme", big.len(), &format!("x-coffer-sha256: {big_digest}\r\n"));
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let sent = async {
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(&big).await
    };
    let sent = sent.await;
    let text = answer(&mut conn, Duration::from_secs(10)).await;
    assert!(sent.is_ok(), "the connection was reset under the client: {sent:?}");
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("\"deduplicated\":true"), "{text}");
    conn.write_all(b"GET /v1/orgs/acme/objects HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    let text = answer(&mut conn, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "the connection was kept: {text}");
    let hits = coffer::metrics::global().value("coffer_dedup_hits_total", &[("how", "digest-header")]);
    assert!(hits >= 2.0, "{hits}");

    // Content the organisation does not have: the body is read and must match.
    let other = data(3000, 6);
    let r = client()
        .put(s.objects("acme"))
        .header("x-coffer-sha256", Digest::of(b"what the client thinks it sends").to_string())
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(json(r).await["error"], "digest-mismatch");
    // Another organisation's content is not this one's: claiming its
    // digest gets no answer from its record; the body is read and checked.
    let r = client()
        .put(s.objects("fresh"))
        .header("x-coffer-sha256", d.to_string())
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(s.coffer.list("fresh", None, 10).await.unwrap().len(), 0);
    let r = client()
        .put(s.objects("fresh"))
        .header("x-coffer-sha256", d.to_string())
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.coffer.list("acme", None, 10).await.unwrap().len(), 2, "no mismatched body was stored");
    for bad in [("x-coffer-sha256", "xyz".to_string()), ("repr-digest", "sha-256=:c2hvcnQ=:".to_string())] {
        let r = client().put(s.objects("acme")).header(bad.0, bad.1).body("x").send().await.unwrap();
        assert_eq!(r.status(), 400);
    }
    let r = client()
        .put(s.objects("acme"))
        .header("x-coffer-sha256", d.to_string())
        .header(
            "repr-digest",
            format!(
                "sha-256=:{}:",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, Digest::of(b"x").as_bytes())
            ),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "two digests that disagree");
}

fn token(name: &str, org: &str, secret: &str, scopes: &[Scope]) -> TokenSettings {
    TokenSettings { name: name.into(), org: org.into(), sha256: token_hash(secret), scopes: scopes.to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_organisations_and_scopes_apart() {
    let s = sqlite_server(|c| {
        c.server.tokens = vec![
            token("acme-rw", "acme", "acme-secret-rw", &[Scope::Read, Scope::Write]),
            token("acme-ro", "acme", "acme-secret-ro", &[Scope::Read]),
            token("acme-wo", "acme", "acme-secret-wo", &[Scope::Write]),
            token("beta", "beta", "beta-secret", &Scope::ALL),
        ];
        c.server.admin_token_sha256 = Some(token_hash("admin-secret"));
    })
    .await;
    let c = client();
    let bytes = b"acme's file".to_vec();
    let sha = Digest::of(&bytes).to_string();
    let object = format!("{}/{sha}", s.objects("acme"));

    let r = c.put(s.objects("acme")).body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"coffer\"");
    assert_eq!(json(r).await["error"], "unauthorized");
    let r = c.put(s.objects("acme")).bearer_auth("wrong").body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.put(s.objects("acme")).bearer_auth("acme-secret-ro").body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(json(r).await["error"], "forbidden");
    let r = c.put(s.objects("acme")).bearer_auth("acme-secret-rw").body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);

    // A token that may only write learns that content is stored, not its record.
    let r = c
        .put(s.objects("acme"))
        .bearer_auth("acme-secret-wo")
        .header("x-coffer-sha256", sha.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = json(r).await;
    assert_eq!(answer["deduplicated"], true);
    assert!(answer.get("size").is_none() && answer.get("container").is_none(), "{answer}");
    let r = c.get(&object).bearer_auth("acme-secret-wo").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(&object).bearer_auth("acme-secret-ro").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == bytes);
    // Another organisation's token: as if there were nothing there, for
    // an object that exists and one that does not alike.
    let missing = format!("{}/{}", s.objects("acme"), Digest::of(b"none"));
    let (a, b) = (
        c.get(&object).bearer_auth("beta-secret").send().await.unwrap(),
        c.get(&missing).bearer_auth("beta-secret").send().await.unwrap(),
    );
    assert_eq!((a.status(), b.status()), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(json(a).await, json(b).await, "the answers must not tell them apart");
    for r in [
        c.get(s.objects("acme")).bearer_auth("beta-secret").send().await.unwrap(),
        c.delete(&object).bearer_auth("beta-secret").send().await.unwrap(),
        c.put(s.objects("acme")).bearer_auth("beta-secret").body("x").send().await.unwrap(),
        c.post(format!("{object}/link")).bearer_auth("beta-secret").send().await.unwrap(),
        c.get(format!("{object}/meta")).bearer_auth("beta-secret").send().await.unwrap(),
    ] {
        assert_eq!(r.status(), 404);
    }
    let r = c.delete(&object).bearer_auth("acme-secret-rw").send().await.unwrap();
    assert_eq!(r.status(), 403, "no delete scope");
    let r = c.get(&object).bearer_auth("admin-secret").send().await.unwrap();
    assert_eq!(r.status(), 403, "the admin token is not an organisation's");
    let r = c
        .put(format!("{}/v1/admin/policies/default", s.url))
        .bearer_auth("acme-secret-rw")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Operations endpoints need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = c.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert_eq!(s.coffer.list("acme", None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn without_tokens_only_loopback_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let coffer = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    let err = Server::bind(coffer.clone(), Some("0.0.0.0:0")).await.unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_eq!(err.kind(), coffer::ErrorKind::Config);
    Server::bind(coffer.clone(), Some("[::1]:0"))
        .await
        .map(drop)
        .or_else(|e| {
            // A machine without IPv6 cannot bind ::1 at all; that is not the check.
            if e.to_string().contains("cannot listen") { Ok(()) } else { Err(e) }
        })
        .unwrap();

    let mut config = sqlite_config(dir.path(), &[]);
    config.server.tokens = vec![token("t", "acme", "s", &[Scope::Read])];
    let coffer = Coffer::open(config).await.unwrap();
    Server::bind(coffer, Some("0.0.0.0:0")).await.unwrap();

    // A token in clear where its hash belongs is refused at start-up.
    let mut config = sqlite_config(dir.path(), &[]);
    config.server.tokens = vec![TokenSettings { sha256: "my-token".into(), ..token("t", "acme", "s", &[Scope::Read]) }];
    assert!(Coffer::open(config).await.unwrap_err().to_string().contains("not the token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_while_streaming() {
    let s = sqlite_server(|c| {
        c.tenants.insert("small".into(), [("max-size".to_string(), "1000".to_string())].into());
        c.server.max_body = Some(1 << 20);
    })
    .await;
    // Announced too large: 413 before a byte of the body is sent.
    let mut conn = raw(s.addr, &upload_head("small", 1001, ""), b"").await;
    let text = answer(&mut conn, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"error\":\"too-large\""), "{text}");
    let mut conn = raw(s.addr, &upload_head("acme", (1 << 20) + 1, ""), b"").await;
    assert!(answer(&mut conn, Duration::from_secs(10)).await.starts_with("HTTP/1.1 413"));

    // Not announced (chunked): refused once the limit is passed, the rest unread.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..64).map(|i| Ok(data(64 << 10, i))).collect();
    let r = client()
        .put(s.objects("acme"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        // The server may close before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let r = client().put(s.objects("small")).body(data(1001, 1)).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let r = client().put(s.objects("small")).body(data(1000, 1)).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.coffer.list("acme", None, 10).await.unwrap().len(), 0);
    assert_eq!(s.coffer.list("small", None, 10).await.unwrap().len(), 1);
    let r = client().put(s.objects("acme")).body(Vec::new()).send().await.unwrap();
    assert_eq!(r.status(), 201, "an empty file is a file");
}

/// Reservations and records in the SQLite catalog.
fn catalog_rows(dir: &std::path::Path) -> (i64, i64) {
    let db = rusqlite::Connection::open(dir.join("coffer.db")).unwrap();
    let count = |t: &str| db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap();
    (count("objects"), count("pending"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_or_stalls_mid_body_leaves_no_record() {
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_path_buf();
    let s = sqlite_server(|c| {
        c.server.idle_timeout = Some(1);
        c.server.spool_dir = Some(spool_dir);
    })
    .await;
    // Disconnect after 1 MiB of 6 MiB (past the in-memory size, so spooled).
    let conn = raw(s.addr, &upload_head("acme", 6 << 20, ""), &data(1 << 20, 1)).await;
    drop(conn);
    // Stall after 100 bytes: dropped after the idle timeout.
    let mut stalled = raw(s.addr, &upload_head("acme", 5000, ""), &data(100, 2)).await;
    let text = answer(&mut stalled, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("nothing was stored"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(catalog_rows(s.dir.path()), (0, 0), "no record, no reservation");
    assert!(s.coffer.list("acme", None, 10).await.unwrap().is_empty());
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0, "the spool file went with the request");
    // And the server still serves.
    put(&s, "acme", b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_requests_get_503_with_retry_after() {
    let s = sqlite_server(|c| c.server.max_in_flight = Some(1)).await;
    let body = data(3000, 3);
    let mut slow = raw(s.addr, &upload_head("acme", body.len(), ""), &body[..1000]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client().get(s.objects("acme")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(json(r).await["error"], "overloaded");
    // Probes are not held back.
    assert_eq!(client().get(format!("{}/healthz", s.url)).send().await.unwrap().status(), 200);
    slow.write_all(&body[1000..]).await.unwrap();
    let text = answer(&mut slow, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    assert_eq!(client().get(s.objects("acme")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish_and_takes_no_new_ones() {
    let mut s = sqlite_server(|_| {}).await;
    let body = data(2 << 20, 7);
    let mut slow = raw(s.addr, &upload_head("acme", body.len(), ""), &body[..1 << 20]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = s.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(s.addr).await.is_err(), "no new connections once shutting down");
    assert!(!stopped.is_finished(), "a request is still in flight");
    slow.write_all(&body[1 << 20..]).await.unwrap();
    let text = answer(&mut slow, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    tokio::time::timeout(Duration::from_secs(10), stopped).await.unwrap().unwrap().unwrap();
    assert_eq!(catalog_rows(s.dir.path()), (1, 0));
    assert!(s.coffer.get_bytes("acme", &Digest::of(&body)).await.unwrap() == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_never_completes_a_response() {
    let s = sqlite_server(|_| {}).await;
    let bytes = data(3 << 20, 8);
    let size = bytes.len();
    let sha = put(&s, "acme", &bytes).await["sha256"].as_str().unwrap().to_string();
    let good = put(&s, "acme", b"fine").await["sha256"].as_str().unwrap().to_string();
    // One byte flipped in the object's last stored chunk, written back as a blob.
    let db = rusqlite::Connection::open(s.dir.path().join("coffer.db")).unwrap();
    let (rowid, mut chunk): (i64, Vec<u8>) = db
        .query_row(
            "SELECT rowid, data FROM blob_data WHERE length(data) > 100 ORDER BY blob_id DESC, seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let last = chunk.len() - 1;
    chunk[last] ^= 0xff;
    db.execute("UPDATE blob_data SET data = ?1 WHERE rowid = ?2", rusqlite::params![chunk, rowid]).unwrap();
    let err = s.coffer.get_bytes("acme", &sha.parse().unwrap()).await.unwrap_err();
    assert!(matches!(err, coffer::Error::Integrity(_)), "the damage is one the digest catches: {err}");

    /// Bytes that arrived, and whether the response broke off.
    async fn received(request: reqwest::RequestBuilder) -> (usize, bool) {
        let Ok(r) = request.send().await else { return (0, true) };
        let mut stream = r.bytes_stream();
        let mut n = 0;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            match chunk {
                Ok(c) => n += c.len(),
                Err(_) => return (n, true),
            }
        }
        (n, false)
    }
    let object = format!("{}/{sha}", s.objects("acme"));
    let (n, broke) = received(client().get(&object)).await;
    assert!(broke, "the body must break off, not complete");
    assert!(n > 0 && n < size, "the good chunks stream, the last is held back: {n} of {size}");
    let (n, broke) = received(client().get(&object).header("range", "bytes=0-99")).await;
    assert!(broke && n < 100, "a range of a corrupt object breaks off too: {n}");
    let (n, broke) = received(
        client()
            .post(format!("{}/v1/orgs/acme/batch-read", s.url))
            .body(serde_json::json!({"sha256": [good, sha]}).to_string()),
    )
    .await;
    assert!(broke && n < size + 2048, "the tar stream breaks off: {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_read_streams_a_tar_with_a_manifest() {
    let s = s3_server(|_| {}).await;
    let files: Vec<Vec<u8>> = vec![data(0, 1), data(511, 2), data(1 << 20, 3), b"plain".to_vec()];
    let mut shas = Vec::new();
    for f in &files {
        shas.push(put(&s, "acme", f).await["sha256"].as_str().unwrap().to_string());
    }
    let missing = Digest::of(b"never stored").to_string();
    let mut asked = shas.clone();
    asked.extend([missing.clone(), "not-a-digest".into(), shas[1].clone()]);
    let r = client()
        .post(format!("{}/v1/orgs/acme/batch-read", s.url))
        .body(serde_json::json!({"sha256": asked}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-tar");
    let body = r.bytes().await.unwrap();
    let mut archive = tar::Archive::new(&body[..]);
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().to_string();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut content).unwrap();
        entries.push((name, content));
    }
    assert_eq!(entries[0].0, "manifest.json");
    let manifest: Value = serde_json::from_slice(&entries[0].1).unwrap();
    let listed: Vec<&str> =
        manifest["objects"].as_array().unwrap().iter().map(|o| o["sha256"].as_str().unwrap()).collect();
    assert_eq!(listed, shas.iter().map(String::as_str).collect::<Vec<_>>());
    let errors = manifest["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["sha256"], missing.as_str());
    assert_eq!(errors[0]["error"], "not-found");
    assert_eq!(errors[1]["error"], "invalid-input");
    assert_eq!(entries.len(), 1 + files.len());
    for ((name, content), (sha, file)) in entries[1..].iter().zip(shas.iter().zip(&files)) {
        assert_eq!(name, sha);
        assert!(content == file, "{name}");
    }
    let too_many: Vec<String> = (0..1001).map(|i| Digest::of(&[i as u8]).to_string()).collect();
    let r = client()
        .post(format!("{}/v1/orgs/acme/batch-read", s.url))
        .body(serde_json::json!({"sha256": too_many}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client().post(format!("{}/v1/orgs/acme/batch-read", s.url)).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "invalid-input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_parses_and_lists_every_route() {
    let s = sqlite_server(|_| {}).await;
    let doc = json(client().get(format!("{}/openapi.json", s.url)).send().await.unwrap()).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let expected: &[(&str, &[&str])] = &[
        ("/v1/orgs/{org}/objects", &["put", "post", "get"]),
        ("/v1/orgs/{org}/objects/{sha256}", &["get", "head", "delete"]),
        ("/v1/orgs/{org}/objects/{sha256}/meta", &["get"]),
        ("/v1/orgs/{org}/objects/{sha256}/link", &["post"]),
        ("/v1/orgs/{org}/batch-read", &["post"]),
        ("/v1/admin/policies/{target}", &["put"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, methods) in expected {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} is not in the document"));
        let mut listed: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| ["get", "put", "post", "delete", "head", "patch"].contains(k))
            .collect();
        listed.sort();
        let mut want = methods.to_vec();
        want.sort();
        assert_eq!(listed, want, "{path}");
        // Every documented route is served (not the fallback's "no such route").
        let concrete = path
            .replace("{org}", "acme")
            .replace("{sha256}", &Digest::of(b"x").to_string())
            .replace("{target}", "default");
        for m in methods.iter() {
            let method = reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap();
            let r = client().request(method, format!("{}{concrete}", s.url)).send().await.unwrap();
            if r.status() == 404 && *m != "head" {
                let body = json(r).await;
                assert!(!body["message"].as_str().unwrap_or_default().contains("no such route"), "{m} {path}: {body}");
            }
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["ObjectInfo"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_bytes_dedup_and_policy_time() {
    let s = sqlite_server(|_| {}).await;
    let bytes = data(12_345, 11);
    put(&s, "metrics-org", &bytes).await;
    put(&s, "metrics-org", &bytes).await;
    let sha = Digest::of(&bytes).to_string();
    client().get(format!("{}/{sha}", s.objects("metrics-org"))).send().await.unwrap().bytes().await.unwrap();
    let text = client().get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    };
    assert!(value("coffer_http_requests_total{route=\"/v1/orgs/{org}/objects\",method=\"PUT\",status=\"201\"}") >= 1.0);
    assert!(
        value("coffer_http_requests_total{route=\"/v1/orgs/{org}/objects/{sha256}\",method=\"GET\",status=\"200\"}")
            >= 1.0
    );
    assert!(
        value("coffer_http_request_duration_seconds_count{route=\"/v1/orgs/{org}/objects\",method=\"PUT\"}") >= 2.0
    );
    assert!(value("coffer_http_received_bytes_total") >= 2.0 * 12_345.0);
    assert!(value("coffer_http_sent_bytes_total") >= 12_345.0);
    assert!(value("coffer_dedup_hits_total{how=\"content\"}") >= 1.0);
    assert!(value("coffer_policy_call_seconds_count{export=\"put\"}") >= 2.0);
    assert!(text.contains("# TYPE coffer_policy_call_seconds histogram"));
    // Any method a client invents is one label, OTHER.
    let odd = reqwest::Method::from_bytes(b"RANDOMX").unwrap();
    assert_eq!(client().request(odd, s.objects("metrics-org")).send().await.unwrap().status(), 405);
    let text = client().get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("method=\"OTHER\"") && !text.contains("RANDOMX"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_the_database_and_s3() {
    let s = s3_server(|_| {}).await;
    let r = client().get(format!("{}/readyz", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    assert_eq!((body["database"].as_str(), body["s3"].as_str()), (Some("ok"), Some("ok")));

    // S3 at an address where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = s3_server(|c| c.s3.endpoint_url = Some(format!("http://{closed}"))).await;
    let r = client().get(format!("{}/readyz", down.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = json(r).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"], "ok");
    assert_ne!(body["s3"], "ok");
    assert_eq!(client().get(format!("{}/healthz", down.url)).send().await.unwrap().status(), 200);
    // Puts fail as unavailable: 503 with Retry-After, nothing recorded.
    let r = client().put(down.objects("acme")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(json(r).await["error"], "unavailable");
    assert!(down.coffer.list("acme", None, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_swaps_policies_and_a_broken_one_is_refused() {
    let s = sqlite_server(|c| c.server.admin_token_sha256 = Some(token_hash("admin-secret"))).await;
    let c = client();
    let policies = format!("{}/v1/admin/policies", s.url);
    // A component that does not load: 422, the old policy stays.
    let r = c.put(format!("{policies}/default")).bearer_auth("admin-secret").body("garbage").send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(json(r).await["message"].as_str().unwrap().contains("the old policy stays"));
    assert_eq!(
        c.put(s.objects("trap")).body("a").send().await.unwrap().status(),
        401,
        "open access ends with a token configured"
    );
    assert!(s.coffer.put("trap", coffer::Content::from_bytes("a", None).unwrap()).await.is_ok());

    // The hostile guest (it traps for organisation "trap"), for that tenant only.
    let hostile = std::fs::read(crate::sandbox::guest("hostile")).unwrap();
    let r = c.put(format!("{policies}/trap")).bearer_auth("admin-secret").body(hostile).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["replaced"], "trap");
    assert!(s.coffer.put("trap", coffer::Content::from_bytes("b", None).unwrap()).await.is_err());
    let r = c.put(s.objects("trap")).bearer_auth("admin-secret").body("b").send().await.unwrap();
    assert_eq!(r.status(), 403, "the admin token does not store");
    assert!(s.coffer.put("acme", coffer::Content::from_bytes("b", None).unwrap()).await.is_ok());
    let r = c
        .put(format!("{policies}/trap"))
        .bearer_auth("admin-secret")
        .body(coffer::policy::DEFAULT_POLICY.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.coffer.put("trap", coffer::Content::from_bytes("c", None).unwrap()).await.is_ok());
    let r = c.put(format!("{policies}/default")).bearer_auth("wrong").body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

/// The README's clients: `tests/http/clients.py` drives the `coffer
/// serve` binary with curl and Python `requests` (through
/// `examples/python/coffer_client.py`), on SQLite and on S3.
#[test]
fn python_and_curl_clients() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let script = root.join("tests/http/clients.py");
    let bucket = unique_bucket("clients");
    let endpoint = crate::s3_server::server().endpoint();
    let s3: &[(&str, &str)] = &[
        ("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", crate::s3_server::SECRET_KEY),
        ("AWS_ENDPOINT_URL", &endpoint),
        ("S3_BUCKET", &bucket),
    ];
    for vars in [&[][..], s3] {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .env("COFFER_BIN", env!("CARGO_BIN_EXE_coffer"))
            .envs(vars.iter().copied())
            .output()
            .expect("python3 runs (the tests need python3 with requests, and curl)");
        assert!(
            out.status.success(),
            "{}\n{}\n(needs `python3 -m pip install requests` and curl)",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_download_is_dropped() {
    let s = sqlite_server(|c| c.server.idle_timeout = Some(1)).await;
    let bytes = data(24 << 20, 12);
    let sha = put(&s, "acme", &bytes).await["sha256"].as_str().unwrap().to_string();
    let mut conn =
        raw(s.addr, &format!("GET /v1/orgs/acme/objects/{sha} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"), b"").await;
    // Read nothing for a while: the socket buffers fill, the server's writes stall.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the server neither sent nor closed"),
        }
    }
    assert!(got < bytes.len(), "the stalled download was not dropped ({got} bytes arrived)");
    // The server goes on serving.
    assert_eq!(client().get(format!("{}/{sha}/meta", s.objects("acme"))).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_takes_too_long_answers_503_and_the_server_goes_on() {
    use crate::fault_proxy::{Fault, FaultProxy, Op};
    let proxy = FaultProxy::start();
    let endpoint = proxy.endpoint();
    let s = s3_server(|c| {
        c.s3.endpoint_url = Some(endpoint);
        c.server.request_timeout = Some(1);
    })
    .await;
    let bytes = data(1000, 13);
    let sha = put(&s, "acme", &bytes).await["sha256"].as_str().unwrap().to_string();
    proxy.once(Op::GetObject, 0, Fault::Stall(Duration::from_secs(20)));
    let started = std::time::Instant::now();
    let r = client().get(format!("{}/{sha}", s.objects("acme"))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(json(r).await["error"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let r = client().get(format!("{}/{sha}", s.objects("acme"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == bytes);
    // Storing is not under the request timeout: a put whose S3 upload
    // takes longer than it still succeeds.
    proxy.once(Op::PutObject, 0, Fault::Delay(Duration::from_secs(2)));
    let r = client().put(s.objects("acme")).body(data(2000, 14)).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organisation_cannot_take_every_slot() {
    let s = sqlite_server(|c| {
        c.server.max_in_flight = Some(8);
        c.server.max_in_flight_per_org = Some(1);
    })
    .await;
    let body = data(3000, 3);
    let mut slow = raw(s.addr, &upload_head("acme", body.len(), ""), &body[..1000]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for url in [s.objects("acme"), format!("{}/v1/orgs/%61cme/objects", s.url)] {
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 503, "{url}");
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(json(r).await["message"].as_str().unwrap().contains("this organisation"));
    }
    assert_eq!(client().get(s.objects("beta")).send().await.unwrap().status(), 200, "other organisations go on");
    slow.write_all(&body[1000..]).await.unwrap();
    assert!(answer(&mut slow, Duration::from_secs(10)).await.starts_with("HTTP/1.1 201"));
    assert_eq!(client().get(s.objects("acme")).send().await.unwrap().status(), 200, "the slot came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_web_pages_are_refused() {
    let s = sqlite_server(|_| {}).await;
    let r = client().put(s.objects("acme")).header("origin", "https://evil.example").body("x").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(json(r).await["error"], "forbidden");
    // DNS rebinding: the page's own host name, resolving to 127.0.0.1.
    let r = client().get(s.objects("acme")).header("host", "evil.example:8080").send().await.unwrap();
    assert_eq!(r.status(), 403);
    for host in ["localhost:1234", "127.0.0.1", "[::1]:80"] {
        let r = client().get(s.objects("acme")).header("host", host).send().await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    assert!(s.coffer.list("acme", None, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trickle_are_dropped() {
    let s = sqlite_server(|c| {
        c.server.idle_timeout = Some(1);
        c.server.min_rate = Some(2_000_000);
    })
    .await;
    // A body a byte every half second: never idle for a second, far too slow.
    let mut conn = raw(s.addr, &upload_head("acme", 100_000, ""), b"x").await;
    let mut text = String::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if conn.write_all(b"x").await.is_err() {
            break;
        }
        text = answer(&mut conn, Duration::from_millis(10)).await;
        if !text.is_empty() {
            break;
        }
    }
    if text.is_empty() {
        text = answer(&mut conn, Duration::from_secs(5)).await;
    }
    assert!(text.starts_with("HTTP/1.1 408") && text.contains("slower"), "{text}");
    assert_eq!(catalog_rows(s.dir.path()), (0, 0));

    // A download taken 64 KiB at a time, four times a second.
    let bytes = data(24 << 20, 15);
    let sha = s.coffer.put("acme", coffer::Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap().sha256;
    let mut conn =
        raw(s.addr, &format!("GET /v1/orgs/acme/objects/{sha} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"), b"").await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "a trickling reader was kept for 30 s ({got} bytes)");
        tokio::time::sleep(Duration::from_millis(250)).await;
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the server neither sent nor closed"),
        }
    }
    assert!(got < bytes.len(), "the trickling reader got everything ({got} bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_what_outlives_the_grace_period_and_cleans_up() {
    use crate::fault_proxy::{FaultProxy, HoldAt, Op};
    let proxy = FaultProxy::start();
    let endpoint = proxy.endpoint();
    let mut s = s3_server(|c| {
        c.s3.endpoint_url = Some(endpoint);
        c.server.shutdown_grace = Some(1);
    })
    .await;
    put(&s, "acme", b"before").await;
    // A put whose upload to S3 hangs past the grace period.
    let held = proxy.hold(Op::PutObject, 0, HoldAt::Before);
    let (c, url) = (client(), s.objects("acme"));
    let upload = tokio::spawn(async move { c.put(url).body(data(5000, 16)).send().await });
    assert!(held.reached(Duration::from_secs(10)).await, "the put reached S3");
    let stopped = s.stop();
    tokio::time::timeout(Duration::from_secs(20), stopped)
        .await
        .expect("the server stopped after the grace period")
        .unwrap()
        .unwrap();
    held.release();
    let answered = upload.await.unwrap();
    assert!(answered.map(|r| !r.status().is_success()).unwrap_or(true), "the cancelled put did not succeed");
    assert_eq!(catalog_rows(s.dir.path()), (1, 0), "nothing half-recorded, its reservation released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_policy_refusals_and_trapping_guests_answer_json() {
    let s = sqlite_server(|c| {
        c.tenants.insert("strict".into(), [("allowed-content-types".to_string(), "text/plain".to_string())].into());
        c.tenants.insert(
            "trap".into(),
            [("policy".to_string(), crate::sandbox::guest("hostile").display().to_string())].into(),
        );
    })
    .await;
    for org in ["%20lead", "a%2Fb", &"x".repeat(129)] {
        let r = client().put(s.objects(org)).body("x").send().await.unwrap();
        assert_eq!(r.status(), 400, "{org}");
        assert_eq!(json(r).await["error"], "invalid-input");
    }
    let r = client().put(s.objects("strict")).header("content-type", "image/png").body("x").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = json(r).await;
    assert_eq!(body["error"], "denied", "a policy refusal is `denied`, not a token's `forbidden`: {body}");
    let r = client().put(s.objects("strict")).header("content-type", "text/plain").body("x").send().await.unwrap();
    assert_eq!(r.status(), 201);
    // The hostile guest traps for organisation "trap".
    let r = client().put(s.objects("trap")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body = json(r).await;
    assert_eq!(body["error"], "policy");
    assert!(body["message"].as_str().unwrap().contains("trapped"), "{body}");
    assert!(s.coffer.list("trap", None, 10).await.unwrap().is_empty());
    assert_eq!(client().put(s.objects("acme")).body("x").send().await.unwrap().status(), 201, "the server goes on");
}

#[test]
fn token_new_prints_an_entry_the_server_accepts_and_hash_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(args)
            .env_clear()
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out =
        run(&["token", "new", "--org", "acme", "--name", "bytes \"prod\" \\ 1", "--scopes", "read,link,read"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text.lines().nth(1).unwrap().trim_start_matches("# ").to_string();
    assert!(token.starts_with("coffer_"), "{text}");
    assert!(!text.lines().skip(2).any(|l| l.contains(&token)), "the entry must not hold the token: {text}");
    let file = dir.path().join("coffer.toml");
    std::fs::write(&file, &text).unwrap();
    let config = Config::from_file(&file).unwrap();
    let entry = &config.server.tokens[0];
    assert_eq!((entry.name.as_str(), entry.org.as_str()), ("bytes \"prod\" \\ 1", "acme"));
    assert_eq!(entry.scopes, vec![Scope::Read, Scope::Link]);
    assert_eq!(entry.sha256, token_hash(&token));
    config.server.validate().unwrap();
    let hashed = run(&["token", "hash"], &format!("{token}\n"));
    assert_eq!(String::from_utf8(hashed.stdout).unwrap().trim(), entry.sha256);
    let empty = run(&["token", "hash"], "");
    assert_eq!(empty.status.code(), Some(2));
    let bad = run(&["token", "new", "--org", "acme", "--name", "x", "--scopes", "admin"], "");
    assert!(!bad.status.success());
}
