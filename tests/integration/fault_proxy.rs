//! A fault-injecting HTTP proxy on 127.0.0.1 between Coffer and the S3
//! test server. It forwards each request unchanged (the `Host` header
//! too, so SigV4 signatures still verify), unless a rule or the random
//! mode tells it to break that request in one of the ways real networks
//! and S3 servers do; or to hold it, so a test can kill the client at that
//! exact point. Each proxy runs on its own thread and runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// What a request is, from its method and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    PutObject,
    UploadPart,
    CreateMultipart,
    Complete,
    Abort,
    DeleteObject,
    HeadObject,
    GetObject,
    ListObjects,
    ListUploads,
    Bucket,
}

fn classify(method: &Method, path: &str, query: &str) -> Op {
    let has = |k: &str| query.split('&').any(|p| p == k || p.starts_with(&format!("{k}=")));
    // Path style: /bucket or /bucket/ is the bucket, /bucket/key an object.
    let object = path.trim_start_matches('/').split_once('/').is_some_and(|(_, k)| !k.is_empty());
    match *method {
        Method::PUT if has("partNumber") => Op::UploadPart,
        Method::PUT if object => Op::PutObject,
        Method::POST if has("uploads") => Op::CreateMultipart,
        Method::POST if has("uploadId") => Op::Complete,
        Method::DELETE if has("uploadId") => Op::Abort,
        Method::DELETE if object => Op::DeleteObject,
        Method::HEAD if object => Op::HeadObject,
        Method::GET if object => Op::GetObject,
        Method::GET if has("uploads") => Op::ListUploads,
        Method::GET if has("list-type") => Op::ListObjects,
        _ => Op::Bucket,
    }
}

/// How to break a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status and S3 error code without forwarding.
    Refuse(u16, &'static str),
    /// Forward (the server acts), then answer this status instead.
    RefuseAfter(u16, &'static str),
    /// Read the start of the request body, then reset the connection.
    ResetMidBody,
    /// Forward (the server acts), then close before any answer.
    DropBeforeHeaders,
    /// Forward, send the server's status and headers, then close before
    /// the body.
    DropAfterHeaders,
    /// Say nothing for this long (past the client's timeout), then close;
    /// never forwarded.
    Stall(Duration),
    /// Answer 200 with an S3 error document, without forwarding (S3 may
    /// do that for CompleteMultipartUpload).
    OkWithError,
    /// Forward, and remove checksum and user-metadata headers from the
    /// answer: a server that reports no digests.
    StripDigests,
    /// Wait this long, then forward: a slow server.
    Delay(Duration),
    /// Forward, then answer as a server that ignores `Range` would: 200,
    /// no `Content-Range`, and a body as long as the object (the range's
    /// bytes padded with zeros to the total the server reported).
    IgnoreRange,
    /// Forward, then report this object size in `Content-Range` instead of
    /// the server's: another object than the one recorded.
    RangeOf(u64),
    /// Wait this long, then answer this status and S3 error code without
    /// forwarding: a request refused once what it asked for changed.
    Late(Duration, u16, &'static str),
}

/// Where a held request waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldAt {
    /// Before it is forwarded (the server never sees it).
    Before,
    /// After the server answered (it acted), before the client hears.
    After,
}

/// A request held for a test: `reached` when it arrives, dropped (never
/// answered) once `release` is called.
#[derive(Debug, Default)]
pub struct Held {
    reached: Notify,
    released: Notify,
}

impl Held {
    /// Wait, at most `within`, for the request to arrive.
    pub async fn reached(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.reached.notified()).await.is_ok()
    }

    /// Let the held request go (its connection is closed unanswered).
    pub fn release(&self) {
        self.released.notify_one();
    }
}

#[derive(Debug, Clone)]
enum Action {
    Fault(Fault),
    Hold(HoldAt, Arc<Held>),
}

#[derive(Debug)]
struct Rule {
    op: Op,
    /// Fire on this many more matching requests before it (0: the next).
    skip: usize,
    action: Action,
    /// How many times it fires (usize::MAX: always).
    times: usize,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    random: Option<(fastrand::Rng, f64, Vec<Fault>)>,
    seen: HashMap<Op, usize>,
    injected: Vec<(Op, Fault)>,
    /// The `Range` header of each GetObject, in order (`None`: no range).
    ranges: Vec<Option<String>>,
}

impl State {
    fn decide(&mut self, op: Op) -> Option<Action> {
        *self.seen.entry(op).or_default() += 1;
        if let Some(i) = self.rules.iter().position(|r| r.op == op) {
            let rule = &mut self.rules[i];
            if rule.skip > 0 {
                rule.skip -= 1;
            } else {
                let action = rule.action.clone();
                rule.times -= 1;
                if rule.times == 0 {
                    self.rules.remove(i);
                }
                if let Action::Fault(f) = &action {
                    self.injected.push((op, *f));
                }
                return Some(action);
            }
        }
        let (rng, rate, faults) = self.random.as_mut()?;
        if faults.is_empty() || rng.f64() >= *rate {
            return None;
        }
        let fault = faults[rng.usize(..faults.len())];
        self.injected.push((op, fault));
        Some(Action::Fault(fault))
    }
}

/// The proxy.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// Start a proxy in front of the S3 test server.
    pub fn start() -> FaultProxy {
        let upstream = crate::s3_server::server().addr;
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    tx.send(listener.local_addr().unwrap()).unwrap();
                    loop {
                        let Ok((socket, _)) = listener.accept().await else { continue };
                        let _ = socket.set_nodelay(true);
                        let state = shared.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| handle(state.clone(), upstream, req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(socket), service)
                                .await;
                        });
                    }
                });
            })
            .unwrap();
        FaultProxy { addr: rx.recv().unwrap(), state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn add(&self, op: Op, skip: usize, action: Action, times: usize) {
        self.state.lock().unwrap().rules.push(Rule { op, skip, action, times });
    }

    /// Break the next `op` request (after `skip` others) with `fault`.
    pub fn once(&self, op: Op, skip: usize, fault: Fault) {
        self.add(op, skip, Action::Fault(fault), 1);
    }

    /// Break every `op` request with `fault`.
    pub fn always(&self, op: Op, fault: Fault) {
        self.add(op, 0, Action::Fault(fault), usize::MAX);
    }

    /// Hold the next `op` request (after `skip` others) at `at`.
    pub fn hold(&self, op: Op, skip: usize, at: HoldAt) -> Arc<Held> {
        let held = Arc::new(Held::default());
        self.add(op, skip, Action::Hold(at, held.clone()), 1);
        held
    }

    /// Break each request with probability `rate`, with a fault drawn from
    /// `faults`, reproducibly from `seed`.
    pub fn random(&self, seed: u64, rate: f64, faults: &[Fault]) {
        self.state.lock().unwrap().random = Some((fastrand::Rng::with_seed(seed), rate, faults.to_vec()));
    }

    /// No more faults.
    pub fn calm(&self) {
        let mut s = self.state.lock().unwrap();
        s.rules.clear();
        s.random = None;
    }

    /// The faults injected so far.
    pub fn injected(&self) -> Vec<(Op, Fault)> {
        self.state.lock().unwrap().injected.clone()
    }

    /// The test server's S3 configuration ([`crate::support::s3_config`]),
    /// reached through this proxy.
    pub fn s3_config(&self, dir: &std::path::Path, bucket: Option<&str>, prefix: Option<&str>) -> coffer::Config {
        let mut config = crate::support::s3_config(dir, bucket, prefix);
        config.s3.endpoint_url = Some(self.endpoint());
        config
    }

    /// The `Range` header of each GetObject so far (`None`: a whole read).
    pub fn ranges(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().ranges.clone()
    }

    /// How many `op` requests arrived.
    pub fn seen(&self, op: Op) -> usize {
        self.state.lock().unwrap().seen.get(&op).copied().unwrap_or(0)
    }
}

fn closed(why: &str) -> BoxError {
    Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why.to_string()))
}

fn full(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert("content-type", "application/xml".parse().unwrap());
    resp
}

fn s3_error(status: u16, code: &str) -> Response<Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>"
    );
    full(StatusCode::from_u16(status).unwrap(), body)
}

async fn forward(upstream: SocketAddr, req: Request<Incoming>) -> Result<Response<Incoming>, BoxError> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}

/// Forward and read the whole answer, so the server has certainly acted.
async fn forward_fully(upstream: SocketAddr, req: Request<Incoming>) -> Result<Response<Bytes>, BoxError> {
    let resp = forward(upstream, req).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, bytes))
}

async fn handle(
    state: Arc<Mutex<State>>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let op = classify(req.method(), req.uri().path(), req.uri().query().unwrap_or(""));
    let action = {
        let mut state = state.lock().unwrap();
        if op == Op::GetObject {
            let range = req.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
            state.ranges.push(range);
        }
        state.decide(op)
    };
    let Some(action) = action else {
        return Ok(forward(upstream, req).await?.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()));
    };
    match action {
        Action::Fault(Fault::Refuse(status, code)) => Ok(s3_error(status, code)),
        Action::Fault(Fault::Late(d, status, code)) => {
            tokio::time::sleep(d).await;
            Ok(s3_error(status, code))
        }
        Action::Fault(Fault::RefuseAfter(status, code)) => {
            forward_fully(upstream, req).await?;
            Ok(s3_error(status, code))
        }
        Action::Fault(Fault::ResetMidBody) => {
            let mut body = req.into_body();
            let _ = body.frame().await;
            Err(closed("reset mid-body"))
        }
        Action::Fault(Fault::DropBeforeHeaders) => {
            forward_fully(upstream, req).await?;
            Err(closed("dropped before the answer"))
        }
        Action::Fault(Fault::DropAfterHeaders) => {
            let (parts, _) = forward_fully(upstream, req).await?.into_parts();
            let failing =
                futures_util::stream::iter([Err::<Frame<Bytes>, BoxError>(closed("dropped after the headers"))]);
            Ok(Response::from_parts(parts, BodyExt::boxed(StreamBody::new(failing))))
        }
        Action::Fault(Fault::Stall(d)) => {
            tokio::time::sleep(d).await;
            Err(closed("stalled"))
        }
        Action::Fault(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(forward(upstream, req).await?.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()))
        }
        Action::Fault(Fault::OkWithError) => {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>injected: \
                        we encountered an internal error</Message></Error>";
            Ok(full(StatusCode::OK, body.into()))
        }
        Action::Fault(Fault::StripDigests) => {
            let (mut parts, body) = forward_fully(upstream, req).await?.into_parts();
            let strip: Vec<_> = parts
                .headers
                .keys()
                .filter(|k| k.as_str().starts_with("x-amz-checksum-") || k.as_str().starts_with("x-amz-meta-"))
                .cloned()
                .collect();
            for k in strip {
                parts.headers.remove(k);
            }
            Ok(Response::from_parts(parts, Full::new(body).map_err(|e| match e {}).boxed()))
        }
        Action::Fault(Fault::IgnoreRange) => {
            let (mut parts, body) = forward_fully(upstream, req).await?.into_parts();
            let total = parts
                .headers
                .remove("content-range")
                .and_then(|v| v.to_str().ok()?.rsplit_once('/')?.1.parse::<usize>().ok())
                .unwrap_or(body.len());
            let mut whole = body.to_vec();
            whole.resize(total, 0);
            parts.status = StatusCode::OK;
            parts.headers.insert("content-length", whole.len().into());
            Ok(Response::from_parts(parts, Full::new(Bytes::from(whole)).map_err(|e| match e {}).boxed()))
        }
        Action::Fault(Fault::RangeOf(total)) => {
            let (mut parts, body) = forward_fully(upstream, req).await?.into_parts();
            if let Some(range) = parts.headers.get("content-range").and_then(|v| v.to_str().ok()) {
                let (span, _) = range.rsplit_once('/').unwrap_or((range, ""));
                parts.headers.insert("content-range", format!("{span}/{total}").parse().unwrap());
            }
            Ok(Response::from_parts(parts, Full::new(body).map_err(|e| match e {}).boxed()))
        }
        Action::Hold(HoldAt::Before, held) => {
            held.reached.notify_one();
            held.released.notified().await;
            Err(closed("held, then dropped"))
        }
        Action::Hold(HoldAt::After, held) => {
            forward_fully(upstream, req).await?;
            held.reached.notify_one();
            held.released.notified().await;
            Err(closed("held after the server acted, then dropped"))
        }
    }
}

#[test]
fn requests_are_told_apart() {
    assert_eq!(classify(&Method::PUT, "/b/k", ""), Op::PutObject);
    assert_eq!(classify(&Method::PUT, "/b/k", "partNumber=1&uploadId=x"), Op::UploadPart);
    assert_eq!(classify(&Method::PUT, "/b", ""), Op::Bucket);
    assert_eq!(classify(&Method::POST, "/b/k", "uploads="), Op::CreateMultipart);
    assert_eq!(classify(&Method::POST, "/b/k", "uploadId=x"), Op::Complete);
    assert_eq!(classify(&Method::DELETE, "/b/k", "uploadId=x"), Op::Abort);
    assert_eq!(classify(&Method::DELETE, "/b/org/k", ""), Op::DeleteObject);
    assert_eq!(classify(&Method::GET, "/b/", "list-type=2&prefix="), Op::ListObjects);
    assert_eq!(classify(&Method::GET, "/b/", "max-uploads=1000&uploads="), Op::ListUploads);
    assert_eq!(classify(&Method::HEAD, "/b", ""), Op::Bucket);
}
