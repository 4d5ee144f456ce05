//! Limits held while streaming: body sizes, clients that disconnect,
//! stall, trickle or stop reading, in-flight limits per server and per
//! organisation, the request timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{answer, catalog_rows, client, json, put, raw, s3_server, sqlite_server, upload_head};
use crate::support::data;

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

/// The spool has one budget for the whole host: an upload that would go
/// past it is refused with 507 and Retry-After — at once when its length
/// is announced, at the byte that crosses it when not — and leaves nothing
/// (no record, no reservation, no spool file); the budget comes back when
/// uploads end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_spool_budget_uploads_get_507_and_leave_nothing() {
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_path_buf();
    let s = sqlite_server(|c| {
        c.server.spool_dir = Some(spool_dir);
        c.server.spool_limit = Some(10 << 20);
    })
    .await;
    assert_eq!(s.coffer.spool().limit(), 10 << 20);
    // 6 MiB announced and half sent: what has arrived is held, not what
    // was announced (a slow client cannot hold bytes it never sends).
    let first = data(6 << 20, 1);
    let mut held = raw(s.addr, &upload_head("acme", first.len(), ""), &first[..3 << 20]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.coffer.spool().used(), 3 << 20);
    // Another 8 MiB, announced: it cannot fit beside those 3, so it is
    // refused before its body is read (only its head is sent).
    let second = data(8 << 20, 2);
    let mut refused = raw(s.addr, &upload_head("beta", second.len(), ""), b"").await;
    let text = answer(&mut refused, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 507"), "{text}");
    assert!(text.contains("retry-after: 10") && text.contains("\"insufficient-storage\""), "{text}");
    // Not announced (chunked): refused at the byte that crosses the budget.
    let pieces: Vec<Vec<u8>> = second.chunks(1 << 20).map(<[u8]>::to_vec).collect();
    let chunks = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let r = client().put(s.objects("beta")).body(reqwest::Body::wrap_stream(chunks)).send().await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 507);
    }
    assert!(s.coffer.list("beta", None, 10).await.unwrap().is_empty(), "nothing stored");
    assert_eq!(s.coffer.spool().used(), 3 << 20, "the refused uploads hold nothing");
    // The first goes on; its end gives the budget back, and the second fits.
    held.write_all(&first[3 << 20..]).await.unwrap();
    assert!(answer(&mut held, Duration::from_secs(10)).await.starts_with("HTTP/1.1 201"));
    assert_eq!(s.coffer.spool().used(), 0);
    let r = client().put(s.objects("beta")).body(second).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(catalog_rows(s.dir.path()).1, 0, "no reservation left");
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0, "no spool file left");
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

/// Past the connection limit a connection is answered 503 and closed at
/// once (nothing waits on it); a connection that closes frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_connections_are_refused_at_once() {
    let s = sqlite_server(|c| c.server.max_connections = Some(2)).await;
    // Two connections held open, idle (as a slow or hostile client would).
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        let mut extra = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        if i % 2 == 1 {
            // A request sent at once, as clients do: it is never served,
            // and the 503 still reaches the client (no reset destroys it).
            extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        }
        let text = answer(&mut extra, Duration::from_secs(2)).await;
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("retry-after: 1") && text.contains("\"overloaded\""), "{text}");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), extra.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the refused connection is closed by the server");
    }
    // An HTTP client sees the 503 (and its Retry-After), not a reset.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    for _ in 0..20 {
        let r = fresh.get(format!("{}/healthz", s.url)).send().await.expect("a 503, not a broken connection");
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
    }
    // A held connection still works; once one closes, new ones are served.
    let mut first = held.remove(0);
    first.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.unwrap();
    assert!(answer(&mut first, Duration::from_secs(5)).await.starts_with("HTTP/1.1 200"));
    drop(first);
    let mut served = false;
    for _ in 0..50 {
        if client().get(format!("{}/healthz", s.url)).send().await.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a freed place is taken by the next connection");
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
