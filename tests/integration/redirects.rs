//! S3 answers that redirect: Coffer must not follow them, so a signed
//! request and its session token never reach a host nobody configured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use coffer::{Coffer, Content, ErrorKind};
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::support::{s3_config, unique_bucket};

/// Serve every connection on 127.0.0.1 with `answer`, counting the
/// connections accepted (a followed redirect has to connect first).
async fn serve(
    answer: impl Fn() -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let answer = answer.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer()) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn redirects_are_errors_and_never_followed() {
    // Where the redirect points: answers every request with success, so a
    // followed redirect would look like it worked.
    let (elsewhere, reached) = serve(|| Response::new(Full::new(Bytes::new()))).await;
    let (redirector, _) = serve(move || {
        Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header("location", format!("http://{elsewhere}/stolen"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;

    // Record an object on the real test server, so the get below has
    // something to fetch; then point the same catalog at the redirector.
    let bucket = unique_bucket("moved");
    let dir = tempfile::tempdir().unwrap();
    let direct = Coffer::open(s3_config(dir.path(), Some(&bucket), None)).await.unwrap();
    let stored = direct.put("acme", Content::from_bytes("stored", None).unwrap()).await.unwrap();
    drop(direct);
    let mut config = s3_config(dir.path(), Some(&bucket), None);
    config.s3.endpoint_url = Some(format!("http://{redirector}"));
    config.s3.session_token = Some("SESSION-TOKEN".into());
    let coffer = Coffer::open(config).await.unwrap();

    let put = coffer.put("acme", Content::from_bytes("new bytes", None).unwrap()).await.unwrap_err();
    let get = coffer.get_bytes("acme", &stored.sha256).await.unwrap_err();
    assert_eq!(reached.load(Ordering::SeqCst), 0, "a redirect was followed");
    for e in [put, get] {
        let message = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Config, "{message}");
        assert!(message.contains("307") && message.contains("does not follow redirects"), "{message}");
        assert!(!message.contains("SESSION-TOKEN"), "{message}");
    }
}
