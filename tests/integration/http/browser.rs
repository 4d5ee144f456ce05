//! Stored content in a real browser (Debian's `chromium`, headless): an
//! uploaded page or SVG that tries to read another organisation's object
//! from the API's origin gets nothing, and does not even run. The stored
//! page is opened in a frame of a page elsewhere, to which its script
//! reports (`postMessage`) that it ran and what it read; a control run of
//! the same page from a server without Coffer's headers shows that the
//! browser runs it and the check would see the leak, and a run with only
//! Coffer's `Content-Security-Policy` shows the sandbox alone stops the
//! script. A forwarder in front of Coffer shows the browser did ask for
//! the stored page. (Headless chromium
//! cannot be asked for the DOM of a top-level download: the stored page's
//! `Content-Disposition: attachment` makes it one, so the headers are
//! checked for that case.)

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{client, put, sqlite_server};

/// The DOM chromium ends with after loading `url` and letting its scripts
/// run (up to a few seconds of virtual time). Chromium is stopped once it
/// has printed the DOM (a download started by a frame keeps it running),
/// or after a minute, when the test fails rather than hangs.
fn dom_after_scripts(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let dom = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--timeout=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(dom.reopen().unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium runs (Debian's chromium package; .ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = String::new();
    loop {
        printed.clear();
        dom.reopen().unwrap().read_to_string(&mut printed).unwrap();
        let exited = child.try_wait().unwrap().is_some();
        if exited || printed.contains("</html>") {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not print the DOM of {url} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    printed
}

/// The script of a hostile stored page: it reports to the page framing it
/// that it ran, then reads `target` from its own origin and reports what
/// it got.
fn hostile_script(target: &str) -> String {
    format!(
        "parent.postMessage('SCRIPT-RAN', '*');
        fetch('{target}').then(r => r.text()).then(t => parent.postMessage('SCRIPT-RAN READ:' + t, '*'));"
    )
}

fn hostile_page(target: &str) -> String {
    format!("<html><body>a page<script>{}</script></body></html>", hostile_script(target))
}

fn hostile_svg(target: &str) -> String {
    format!(
        "<svg xmlns='http://www.w3.org/2000/svg'><text>an image</text><script>{}</script></svg>",
        hostile_script(target)
    )
}

/// The page that frames the stored one (the `u` of its query) and shows
/// what the frame reports.
const FRAMING_PAGE: &str = "<html><body><div id=out>quiet</div><script>
    window.addEventListener('message', e => {
        document.getElementById('out').textContent += ' ' + e.data;
    });
    const frame = document.createElement('iframe');
    frame.onload = () => { document.getElementById('out').textContent += ' FRAME-LOADED'; };
    frame.src = new URLSearchParams(location.search).get('u');
    document.body.appendChild(frame);
    </script></body></html>";

/// A server without Coffer's headers: `/page` answers `page` as
/// `content_type`; `/sandboxed` the same with only Coffer's
/// `Content-Security-Policy` (`csp`) and `nosniff`, no attachment;
/// `/frame?u=URL` the [`FRAMING_PAGE`]; anything else answers `secret`.
async fn plain_server(page: String, content_type: &'static str, csp: String, secret: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (page, csp) = (page.clone(), csp.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let (ct, extra, body) = if head.starts_with("GET /page ") {
                    (content_type, String::new(), page)
                } else if head.starts_with("GET /sandboxed ") {
                    (
                        content_type,
                        format!("content-security-policy: {csp}\r\nx-content-type-options: nosniff\r\n"),
                        page,
                    )
                } else if head.starts_with("GET /frame?") {
                    ("text/html", String::new(), FRAMING_PAGE.into())
                } else {
                    ("text/plain", String::new(), secret.into())
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// A forwarder to `to` on a port of its own (so an origin of its own),
/// which keeps the first request line of each connection: proof that the
/// browser asked Coffer for the stored page.
async fn forwarder(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let n = client.read(&mut buf).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string();
                log.lock().unwrap().push(line);
                let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await else { return };
                if upstream.write_all(&buf[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_page_cannot_read_another_object_in_a_browser() {
    const SECRET: &str = "beta-secret-4711";
    // No tokens: loopback only, where any local program may read any
    // organisation, and so could a page the API serves.
    let s = sqlite_server(|_| {}).await;
    let secret = put(&s, "beta", SECRET.as_bytes()).await["sha256"].as_str().unwrap().to_string();
    let target = format!("/v1/orgs/beta/objects/{secret}");
    let (front, requests) = forwarder(s.addr).await;
    let csp = client().get(format!("{}/{secret}", s.objects("beta"))).send().await.unwrap().headers()
        ["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("sandbox"), "{csp}");
    let cases = [("text/html", hostile_page(&target)), ("image/svg+xml", hostile_svg(&target))];
    for (content_type, page) in cases {
        let plain = plain_server(page.clone(), content_type, csp.clone(), SECRET).await;
        let dom =
            |path: String| tokio::task::spawn_blocking(move || dom_after_scripts(&format!("http://{plain}{path}")));
        // The control: served without Coffer's headers, the browser runs
        // the framed page and it reads the secret, so the checks below
        // can fail.
        let control = dom("/frame?u=/page".into()).await.unwrap();
        assert!(control.contains("FRAME-LOADED"), "{content_type}: {control}");
        assert!(control.contains(&format!("READ:{SECRET}")), "{content_type}: the control run did not leak: {control}");
        // Coffer's Content-Security-Policy alone (no attachment): the
        // page is shown in the frame, and its script does not run.
        let sandboxed = dom("/frame?u=/sandboxed".into()).await.unwrap();
        assert!(sandboxed.contains("FRAME-LOADED"), "{content_type}: {sandboxed}");
        assert!(!sandboxed.contains("SCRIPT-RAN"), "{content_type}: the script ran under Coffer's CSP: {sandboxed}");

        // Stored in Coffer, and framed from its own origin (the forwarder).
        let r = client().put(s.objects("acme")).header("content-type", content_type).body(page).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let sha = super::json(r).await["sha256"].as_str().unwrap().to_string();
        let r = client().get(format!("{}/{sha}", s.objects("acme"))).send().await.unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["content-disposition"], "attachment", "{content_type}");
        assert_eq!(r.headers()["content-security-policy"], csp.as_str());
        let stored = format!("http://{front}/v1/orgs/acme/objects/{sha}");
        let framed = dom(format!("/frame?u={stored}")).await.unwrap();
        assert!(framed.contains("quiet"), "{content_type}: the framing page was not loaded: {framed}");
        let asked = format!("GET /v1/orgs/acme/objects/{sha} ");
        assert!(
            requests.lock().unwrap().iter().any(|l| l.starts_with(&asked)),
            "{content_type}: the browser never asked Coffer for the stored page"
        );
        assert!(!framed.contains(SECRET), "{content_type}: the stored page read the other object: {framed}");
        assert!(!framed.contains("SCRIPT-RAN"), "{content_type}: the stored page's script ran: {framed}");
    }
    // A type that is not active is shown, still sandboxed and unsniffed.
    let r = client().get(format!("{}/{secret}", s.objects("beta"))).send().await.unwrap();
    assert!(!r.headers().contains_key("content-disposition"), "text/plain is shown, not downloaded");
}
