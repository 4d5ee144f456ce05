//! Running the service: graceful shutdown, the OpenAPI document, metrics,
//! readiness, and other languages' clients against the binary.

use std::time::Duration;

use coffer::Digest;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{answer, catalog_rows, client, json, put, raw, s3_server, sqlite_server, upload_head};
use crate::support::{data, unique_bucket};

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
