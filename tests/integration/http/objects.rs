//! Objects over HTTP: round trips on SQLite and S3 (ranges, ETags, pages,
//! links, redirects), digest headers answered without the body, corrupt
//! objects breaking responses off, batch reads, errors as JSON.

use std::time::Duration;

use coffer::Digest;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{TestServer, answer, client, json, put, raw, s3_server, sqlite_server, upload_head};
use crate::support::data;

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
    let (n, broke) = received(client().get(&object).header("range", "bytes=0-")).await;
    assert!(broke && n < size, "a range of the whole object is verified, and breaks off too: {n}");
    // A range reads only its own bytes: a range before the damage never
    // touches it, and is answered in full.
    let r = client().get(&object).header("range", "bytes=0-99").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == bytes[..100], "the range's own bytes, complete");
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
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = json(r).await;
    assert_eq!(body["error"], "policy");
    // Said in general words, with the request id the log has the details
    // under; never the policy's file path.
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("policy component failed") && message.contains(&id), "{body}");
    assert_eq!(body["request_id"], id.as_str());
    assert!(!message.contains("hostile") && !message.contains(".wasm"), "no host internals: {message}");
    assert!(s.coffer.list("trap", None, 10).await.unwrap().is_empty());
    assert_eq!(client().put(s.objects("acme")).body("x").send().await.unwrap().status(), 201, "the server goes on");
}

/// S3 refusing the operator's keys, failing, or down is the server's problem:
/// the client is told so in general words with a request id, never the
/// S3 endpoint, the bucket, or which AWS variables to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refusals_and_failures_reach_clients_without_host_internals() {
    use crate::fault_proxy::{Fault, FaultProxy, Op};
    let proxy = FaultProxy::start();
    let s = super::s3_server(|c| {
        c.s3.endpoint_url = Some(proxy.endpoint());
        c.s3.timeout = Some(1);
    })
    .await;
    let bucket = s.coffer.config().s3.bucket.clone().unwrap();
    let port = proxy.endpoint().rsplit(':').next().unwrap().to_string();
    for (fault, status, kind) in [
        (Fault::Refuse(403, "AccessDenied"), 500, "config"),
        (Fault::Refuse(403, "SignatureDoesNotMatch"), 500, "config"),
        (Fault::Refuse(500, "InternalError"), 503, "unavailable"),
        // A server that is down: every connection closed unanswered.
        (Fault::Stall(std::time::Duration::ZERO), 503, "unavailable"),
    ] {
        proxy.always(Op::PutObject, fault);
        let r = client().put(s.objects("acme")).body(format!("{fault:?}")).send().await.unwrap();
        assert_eq!(r.status(), status, "{fault:?}");
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let body = json(r).await;
        assert_eq!(body["error"], kind, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(&id), "{message}");
        for internal in ["AWS_", "127.0.0.1", &port, &bucket, "http://", "PutObject"] {
            assert!(!message.contains(internal), "{fault:?}: {internal:?} in {message}");
        }
        proxy.calm();
    }
    assert_eq!(client().put(s.objects("acme")).body("fine").send().await.unwrap().status(), 201);
}
