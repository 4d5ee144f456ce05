//! Coffer's benchmarks, side by side in one run. Nothing here asserts a
//! time; the numbers go into BENCHMARKS.md.
//!
//! ```sh
//! cargo bench --bench coffer            # the full run (a few minutes)
//! cargo bench --bench coffer -- --quick # smoke run (CI)
//! cargo bench --bench coffer -- --guest-only # the policy-decision table alone
//! cargo bench --bench coffer -- --compare-only # Coffer, direct, object_store, boto3 alone
//! cargo bench --bench coffer -- --large-only # the large file alone, for profiling
//! cargo bench --bench coffer -- --catalogs-only # SQLite against PostgreSQL alone
//! cargo bench --bench coffer -- --http-only # `coffer serve` under wrk alone
//! ```
//!
//! Compared, on the same in-process S3 server (s3s-fs on 127.0.0.1, with
//! SigV4 verification), same data, interleaved rounds:
//! - guest overhead: a policy decision on a warm instance and on a fresh one;
//! - put/get through Coffer, the same signed requests made directly with
//!   Coffer's S3 client and no guest or catalog ("direct"), and boto3;
//! - a large file through the `coffer` binary: throughput, peak RSS, and
//!   SHA-256 alone as the ceiling;
//! - a duplicate put against a first put;
//! - small objects on SQLite;
//! - 4 KiB puts and gets with the catalog on PostgreSQL against SQLite (the
//!   database fallback and S3), one host against two;
//! - `coffer serve` under a real load generator (wrk, Debian's `wrk`
//!   package): 4 KiB puts and gets on SQLite and S3, requests/s, p50/p99
//!   latency and the server's peak RSS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer::backend::BlobStore;
use coffer::backend::s3::S3Store;
use coffer::{Coffer, Config, Content};
use futures_util::StreamExt;

/// The tests' PostgreSQL harness: a throwaway server on a free port.
#[allow(dead_code)]
#[path = "../../tests/integration/pg_server.rs"]
mod pg_server;

const KEY: &str = "bench-key";
const SECRET: &str = "bench-secret-0123456789";

struct Plan {
    quick: bool,
    rounds: usize,
    decisions: usize,
    sizes: Vec<(usize, usize)>,
    large: u64,
    sqlite_objects: usize,
}

fn plan(quick: bool) -> Plan {
    if quick {
        Plan {
            quick,
            rounds: 1,
            decisions: 200,
            sizes: vec![(4 << 10, 20), (1 << 20, 4), (64 << 20, 1)],
            large: 64 << 20,
            sqlite_objects: 50,
        }
    } else {
        Plan {
            quick,
            rounds: 3,
            decisions: 5000,
            sizes: vec![(4 << 10, 300), (1 << 20, 60), (64 << 20, 1), (1 << 30, 1)],
            large: 1 << 30,
            sqlite_objects: 1000,
        }
    }
}

/// Distinct bytes for object `i` of a run (content-addressed: every put must be new).
fn payload(len: usize, tag: u64) -> Vec<u8> {
    let mut x = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn spread(v: &[f64]) -> String {
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    format!("{lo:.1}–{hi:.1}")
}

/// Requests the S3 server has counted (asked of the server process).
fn requests() -> u64 {
    use std::io::{Read, Write};
    let addr = S3_ADDR.get().expect("the S3 server is running");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /__bench/requests HTTP/1.0\r\nhost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.rsplit("\r\n\r\n").next().unwrap().trim().parse().unwrap()
}

static S3_ADDR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The S3 server's process id, for its CPU time.
static S3_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The S3 server (s3s-fs over `root`, verifying SigV4), serving in this
/// process until it is killed; counts the requests it receives and tells
/// the count at `/__bench/requests`. Prints its address first.
fn serve_s3(root: PathBuf) {
    static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&root).unwrap());
        b.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
        let service = b.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let _ = socket.set_nodelay(true);
            let inner = service.clone();
            let counted = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let inner = inner.clone();
                async move {
                    if req.uri().path() == "/__bench/requests" {
                        let n = REQUESTS.load(std::sync::atomic::Ordering::SeqCst);
                        return Ok(hyper::Response::new(s3s::Body::from(n.to_string())));
                    }
                    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    hyper::service::Service::call(&inner, req).await
                }
            });
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), counted).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
}

/// Kills the S3 server process when the benchmark ends.
struct S3Server(std::process::Child);

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the S3 server as a process of its own (this benchmark binary,
/// run with `--serve-s3`), pinned to the last core, and pin this process
/// (every client: Coffer, direct, object_store, and the boto3 and `coffer`
/// processes it starts) to the other cores, so the server's work no longer
/// competes with the client's. Without `taskset` (or with one core), both
/// share the machine, and the run says so.
fn start_s3(root: PathBuf) -> (String, S3Server) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2 && Command::new("taskset").arg("--version").output().is_ok();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", &(cores - 1).to_string()]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let mut child = cmd.arg("--serve-s3").arg(&root).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line.trim().to_string();
    S3_ADDR.set(addr.clone()).unwrap();
    S3_PID.set(child.id()).unwrap();
    if pinned {
        let clients = format!("0-{}", cores - 2);
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", &clients, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        PLACEMENT
            .set(if ok {
                format!("the S3 server pinned to core {}, every client to cores {clients}", cores - 1)
            } else {
                "the S3 server pinned to one core; the clients could not be pinned".to_string()
            })
            .unwrap();
    } else {
        PLACEMENT.set("the S3 server and the clients share the machine's cores (no taskset)".into()).unwrap();
    }
    (format!("http://{addr}"), S3Server(child))
}

/// Where the server and the clients run, for the report.
static PLACEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The S3 server process's CPU seconds so far.
fn server_cpu() -> f64 {
    S3_PID
        .get()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .and_then(|s| cpu_seconds(&s))
        .unwrap_or(0.0)
}

fn s3_config(dir: &Path, endpoint: &str, bucket: &str) -> Config {
    let mut c = Config {
        database_url: Some(format!("sqlite:{}", dir.join("bench.db").display())),
        cache_dir: Some(dir.join("cache")),
        ..Config::default()
    };
    c.s3.access_key_id = Some(KEY.into());
    c.s3.secret_access_key = Some(SECRET.into());
    c.s3.endpoint_url = Some(endpoint.into());
    c.s3.bucket = Some(bucket.into());
    c
}

async fn guest_overhead(plan: &Plan, dir: &Path) {
    let config = Config {
        database_url: Some(format!("sqlite:{}", dir.join("guest.db").display())),
        cache_dir: Some(dir.join("cache")),
        ..Config::default()
    };
    let coffer = Coffer::open(config).await.unwrap();
    let info = coffer.put("acme", Content::from_bytes("decide on me", None).unwrap()).await.unwrap();
    let sha = info.sha256.to_string();
    println!("\n## Guest overhead: one policy decision, µs\n");
    println!("| decision | instance | median | p99 | calls |");
    println!("|---|---|---:|---:|---:|");
    for (decision, put) in [("put: placement (namespaces)", true), ("get: authorize", false)] {
        for (label, reuse) in [("warm (reused)", true), ("fresh per call (what Coffer does)", false)] {
            let times = coffer.time_policy_decisions("acme", &sha, plan.decisions, reuse, put).await.unwrap();
            let mut us: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
            println!(
                "| {decision} | {label} | {:.2} | {:.2} | {} |",
                median(&mut us),
                percentile(&mut us, 0.99),
                us.len()
            );
        }
    }

    // What the default fuel budget means in time: an endless loop, stopped.
    let mut config = Config {
        database_url: Some(format!("sqlite:{}", dir.join("loop.db").display())),
        cache_dir: Some(dir.join("cache")),
        ..Config::default()
    };
    config.policy = Some(Path::new(coffer::policy::TEST_GUESTS_DIR).join("coffer_test_guest_hostile.wasm"));
    let hostile = Coffer::open(config).await.unwrap();
    let mut ms = Vec::new();
    for _ in 0..if plan.quick { 1 } else { 5 } {
        let t = Instant::now();
        let err = hostile.put("loop", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(err.to_string().contains("CPU budget"));
    }
    println!(
        "\nAn endless loop is stopped by the default fuel budget ({} instructions) after {:.0} ms (median).",
        coffer::config::PolicyLimits::default().fuel,
        median(&mut ms)
    );
}

/// The ways of putting and getting the same bytes that the benchmark
/// compares.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// Coffer: hash, policy, catalog, signed upload; gets verified.
    Coffer,
    /// The same signed requests with Coffer's own S3 client: no guest, no
    /// catalog (multipart parts in parallel above the threshold).
    Direct,
    /// Direct, but one single-stream PUT whatever the size.
    DirectSingle,
    /// `object_store`'s `AmazonS3`, what a Rust user would pick instead.
    ObjectStore,
    /// boto3, what OpenKAT uses today (a Python process of its own).
    Boto3,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Coffer => "coffer",
            Way::Direct => "direct",
            Way::DirectSingle => "direct, one PUT",
            Way::ObjectStore => "object_store",
            Way::Boto3 => "boto3",
        }
    }
}

/// One way's measurements over the rounds: seconds and client CPU seconds.
#[derive(Default)]
struct Samples {
    put: Vec<f64>,
    get: Vec<f64>,
    put_cpu: Vec<f64>,
    get_cpu: Vec<f64>,
}

/// What one way does with one round's objects: the bytes (small sizes, in
/// memory) or a file (large ones, streamed).
enum Data {
    Memory(Vec<Vec<u8>>),
    File(PathBuf),
}

const BOTO3: &str = r#"
import json, os, resource, sys, time
import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
endpoint, key, secret, bucket, size, count, tag, source = sys.argv[1:9]
size, count = int(size), int(count)
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
try:
    s3.create_bucket(Bucket=bucket)
except Exception:
    pass
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
if source == "-":
    bodies = [(tag + str(i)).encode() * (size // len(tag + str(i)) + 1) for i in range(count)]
    bodies = [b[:size] for b in bodies]
    t, c = time.perf_counter(), cpu()
    for i, b in enumerate(bodies):
        s3.put_object(Bucket=bucket, Key=f"{tag}/{i}", Body=b)
    put, put_cpu = time.perf_counter() - t, cpu() - c
    t, c = time.perf_counter(), cpu()
    for i in range(count):
        s3.get_object(Bucket=bucket, Key=f"{tag}/{i}")["Body"].read()
    get, get_cpu = time.perf_counter() - t, cpu() - c
else:
    # A large file: the transfer manager (multipart, threads), as users call it.
    t, c = time.perf_counter(), cpu()
    s3.upload_file(source, bucket, f"{tag}/0")
    put, put_cpu = time.perf_counter() - t, cpu() - c
    t, c = time.perf_counter(), cpu()
    with open(os.devnull, "wb") as sink:
        s3.download_fileobj(bucket, f"{tag}/0", sink)
    get, get_cpu = time.perf_counter() - t, cpu() - c
    s3.delete_object(Bucket=bucket, Key=f"{tag}/0")
print(json.dumps({"put": put, "get": get, "put_cpu": put_cpu, "get_cpu": get_cpu}))
"#;

/// boto3's (put s, get s, put CPU s, get CPU s), measured inside Python.
fn boto3(endpoint: &str, bucket: &str, size: usize, count: usize, tag: &str, file: Option<&Path>) -> Option<[f64; 4]> {
    let source = file.map_or("-".to_string(), |f| f.display().to_string());
    let out = Command::new("python3")
        .args(["-c", BOTO3, endpoint, KEY, SECRET, bucket, &size.to_string(), &count.to_string(), tag, &source])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("boto3 run failed (pip install boto3): {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some([v["put"].as_f64()?, v["get"].as_f64()?, v["put_cpu"].as_f64()?, v["get_cpu"].as_f64()?])
}

/// A file of `size` distinct bytes (every 8 MiB block differs).
fn write_file(path: &Path, size: u64, tag: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let block = payload(8 << 20, tag);
    let mut written = 0u64;
    while written < size {
        let n = (block.len() as u64 - 8).min(size - written) as usize;
        f.write_all(&block[..n]).unwrap();
        written += n as u64;
        if written < size {
            let stamp = written.to_le_bytes();
            let m = 8.min((size - written) as usize);
            f.write_all(&stamp[..m]).unwrap();
            written += m as u64;
        }
    }
}

/// Drain a stream of chunks, returning the byte count.
async fn drain<E: std::fmt::Debug>(mut s: impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin) -> u64 {
    let mut n = 0;
    while let Some(chunk) = s.next().await {
        n += chunk.unwrap().len() as u64;
    }
    n
}

/// object_store's S3 client for `bucket` on the benchmark's server (path
/// style, plain HTTP, the same credentials as every other way).
fn object_store_client(endpoint: &str, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_access_key_id(KEY)
        .with_secret_access_key(SECRET)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap()
}

struct Clients {
    coffer: Coffer,
    direct: Arc<S3Store>,
    single: Arc<S3Store>,
    object_store: Arc<object_store::aws::AmazonS3>,
    endpoint: String,
}

/// One way puts then gets one round's objects: (put s, get s, put CPU s, get CPU s).
async fn run_way(way: Way, clients: &Clients, data: &Data, size: usize, tag: &str) -> Option<[f64; 4]> {
    use object_store::{ObjectStore, ObjectStoreExt};
    let bucket = "bench";
    if way == Way::Boto3 {
        let count = match data {
            Data::Memory(b) => b.len(),
            Data::File(_) => 1,
        };
        let file = match data {
            Data::File(f) => Some(f.as_path()),
            Data::Memory(_) => None,
        };
        return boto3(&clients.endpoint, "bench-boto3", size, count, tag, file);
    }
    let (t, cpu) = (Instant::now(), own_cpu());
    // What each put left to get back: a digest (Coffer) or a key.
    let mut keys: Vec<String> = Vec::new();
    match (way, data) {
        (Way::Coffer, Data::Memory(bodies)) => {
            for b in bodies {
                let c = Content::from_bytes(b.clone(), None).unwrap();
                keys.push(clients.coffer.put("acme", c).await.unwrap().sha256.to_string());
            }
        }
        (Way::Coffer, Data::File(f)) => {
            let c = Content::from_path(f, None).await.unwrap();
            keys.push(clients.coffer.put("acme", c).await.unwrap().sha256.to_string());
        }
        (Way::Direct | Way::DirectSingle, _) => {
            let store = if way == Way::Direct { &clients.direct } else { &clients.single };
            let file_content = match data {
                Data::File(f) => vec![Content::from_path(f, None).await.unwrap()],
                Data::Memory(bodies) => bodies.iter().map(|b| Content::from_bytes(b.clone(), None).unwrap()).collect(),
            };
            for (i, c) in file_content.iter().enumerate() {
                let key = format!("{tag}/{i}");
                store.put(bucket, &key, c).await.unwrap();
                keys.push(key);
            }
        }
        (Way::ObjectStore, Data::Memory(bodies)) => {
            for (i, b) in bodies.iter().enumerate() {
                let key = format!("os/{tag}/{i}");
                let payload = object_store::PutPayload::from(bytes::Bytes::from(b.clone()));
                clients.object_store.put(&object_store::path::Path::from(key.as_str()), payload).await.unwrap();
                keys.push(key);
            }
        }
        (Way::ObjectStore, Data::File(f)) => {
            let key = format!("os/{tag}/0");
            let store: Arc<dyn ObjectStore> = clients.object_store.clone();
            let mut w = object_store::buffered::BufWriter::new(store, object_store::path::Path::from(key.as_str()));
            let mut file = tokio::fs::File::open(f).await.unwrap();
            tokio::io::copy(&mut file, &mut w).await.unwrap();
            tokio::io::AsyncWriteExt::shutdown(&mut w).await.unwrap();
            keys.push(key);
        }
        (Way::Boto3, _) => unreachable!(),
    }
    let (put, put_cpu) = (t.elapsed().as_secs_f64(), own_cpu() - cpu);
    let (t, cpu) = (Instant::now(), own_cpu());
    let mut got = 0u64;
    for key in &keys {
        got += match way {
            Way::Coffer => drain(clients.coffer.get("acme", key).await.unwrap().1).await,
            Way::Direct | Way::DirectSingle => drain(clients.direct.get(bucket, key).await.unwrap()).await,
            Way::ObjectStore => {
                let path = object_store::path::Path::from(key.as_str());
                drain(clients.object_store.get(&path).await.unwrap().into_stream()).await
            }
            Way::Boto3 => unreachable!(),
        };
    }
    let (get, get_cpu) = (t.elapsed().as_secs_f64(), own_cpu() - cpu);
    assert_eq!(got, (size * keys.len()) as u64, "{} got every byte back", way.name());
    // Large objects are removed again, so a full run fits on a small disk.
    if matches!(data, Data::File(_)) {
        for key in &keys {
            match way {
                Way::Coffer => {
                    clients.coffer.delete("acme", key).await.unwrap();
                }
                Way::ObjectStore => {
                    clients.object_store.delete(&object_store::path::Path::from(key.as_str())).await.unwrap()
                }
                _ => clients.direct.delete(bucket, key).await.unwrap(),
            }
        }
    }
    Some([put, get, put_cpu, get_cpu])
}

async fn throughput(plan: &Plan, dir: &Path, endpoint: &str) {
    let bucket = "bench";
    let coffer = Coffer::open(s3_config(dir, endpoint, bucket)).await.unwrap();
    let config = s3_config(dir, endpoint, bucket);
    let direct = Arc::new(S3Store::new(&config.s3).unwrap());
    direct.ensure_container(bucket).await.unwrap();
    direct.ensure_container("bench-boto3").await.unwrap();
    let mut one_put = config.s3.clone();
    one_put.multipart_threshold = Some(coffer::backend::s3::MAX_SINGLE_PUT);
    let single = Arc::new(S3Store::new(&one_put).unwrap());
    let object_store = Arc::new(object_store_client(endpoint, bucket));
    let clients = Clients { coffer, direct, single, object_store, endpoint: endpoint.to_string() };
    println!("\n## Put and get against the same S3 server (medians over {} rounds; spread in brackets)\n", plan.rounds);
    println!("Placement: {}.\n", PLACEMENT.get().map_or("unknown", |p| p.as_str()));
    println!(
        "| size | objects | way | put MB/s | get MB/s | put CPU s/GiB | get CPU s/GiB |\n|---|---:|---|---:|---:|---:|---:|"
    );
    let mut tag = 0u64;
    let mut table = Vec::new();
    for &(size, count) in &plan.sizes {
        let large = size >= 64 << 20;
        let mut ways = vec![Way::Coffer, Way::Direct, Way::ObjectStore, Way::Boto3];
        if size >= 1 << 30 {
            ways.insert(2, Way::DirectSingle);
        }
        let mut samples: Vec<Samples> = ways.iter().map(|_| Samples::default()).collect();
        for round in 0..plan.rounds {
            tag += 1;
            // New bytes every round (Coffer would de-duplicate a repeat);
            // the other ways store them under keys of their own.
            let data = if large {
                let f = dir.join(format!("through-{size}.bin"));
                write_file(&f, size as u64, tag);
                Data::File(f)
            } else {
                Data::Memory((0..count).map(|i| payload(size, tag * 1_000_000 + i as u64)).collect())
            };
            // The order of the ways turns every round.
            for k in 0..ways.len() {
                let i = (k + round) % ways.len();
                let label = format!("r{round}s{size}t{tag}w{i}");
                if let Some([p, g, pc, gc]) = run_way(ways[i], &clients, &data, size, &label).await {
                    let s = &mut samples[i];
                    s.put.push(p);
                    s.get.push(g);
                    s.put_cpu.push(pc);
                    s.get_cpu.push(gc);
                }
            }
            if let Data::File(f) = &data {
                let _ = std::fs::remove_file(f);
            }
        }
        let gib = (size * count) as f64 / (1u64 << 30) as f64;
        let mb = (size * count) as f64 / 1e6;
        for (way, s) in ways.iter().zip(&mut samples) {
            if s.put.is_empty() {
                println!("| {} | {count} | {} | – | – | – | – |", human(size), way.name());
                continue;
            }
            let put_rates: Vec<f64> = s.put.iter().map(|t| mb / t).collect();
            let get_rates: Vec<f64> = s.get.iter().map(|t| mb / t).collect();
            let (p, g) = (median(&mut put_rates.clone()), median(&mut get_rates.clone()));
            let (pc, gc) = (median(&mut s.put_cpu) / gib, median(&mut s.get_cpu) / gib);
            println!(
                "| {} | {count} | {} | {p:.1} ({}) | {g:.1} ({}) | {pc:.2} | {gc:.2} |",
                human(size),
                way.name(),
                spread(&put_rates),
                spread(&get_rates),
            );
            table.push((size, *way, p, g));
        }
    }
    println!(
        "\n| size | coffer/direct put | coffer/direct get | coffer/object_store put | coffer/object_store get | coffer/boto3 put | coffer/boto3 get |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for &(size, _) in &plan.sizes {
        let rate = |way: Way| table.iter().find(|(s, w, ..)| *s == size && *w == way).map(|&(_, _, p, g)| (p, g));
        let r = |other: Way, get: bool| match (rate(Way::Coffer), rate(other)) {
            (Some(a), Some(b)) => format!("{:.2}", if get { a.1 / b.1 } else { a.0 / b.0 }),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            human(size),
            r(Way::Direct, false),
            r(Way::Direct, true),
            r(Way::ObjectStore, false),
            r(Way::ObjectStore, true),
            r(Way::Boto3, false),
            r(Way::Boto3, true)
        );
    }
    if let (Some(par), Some(one)) = (
        table.iter().find(|(s, w, ..)| *s >= 1 << 30 && *w == Way::Coffer),
        table.iter().find(|(s, w, ..)| *s >= 1 << 30 && *w == Way::DirectSingle),
    ) {
        println!("\n1 GiB put, Coffer's parallel parts against one direct single-stream PUT: {:.2}×", par.2 / one.2);
    }
    let coffer = &clients.coffer;

    println!("\n## Duplicates: putting content that is already stored (1 MiB)\n");
    let (mut first, mut dup, mut hash) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_requests, mut dup_requests) = (0, 0);
    let n = if plan.quick { 3 } else { 20 };
    for i in 0..n {
        // A tag space of its own: content the throughput runs never stored.
        let body = payload(1 << 20, (1 << 40) + i);
        let t = Instant::now();
        let content = Content::from_bytes(body.clone(), None).unwrap();
        hash.push(t.elapsed().as_secs_f64() * 1e3);
        let before = requests();
        let t = Instant::now();
        let stored = coffer.put("acme", content).await.unwrap();
        first.push(t.elapsed().as_secs_f64() * 1e3);
        first_requests += requests() - before;
        assert_eq!(stored.deduplicated, Some(false));
        let content = Content::from_bytes(body, None).unwrap();
        let before = requests();
        let t = Instant::now();
        let again = coffer.put("acme", content).await.unwrap();
        dup.push(t.elapsed().as_secs_f64() * 1e3);
        dup_requests += requests() - before;
        assert_eq!(again.deduplicated, Some(true));
    }
    let (f, d, h) = (median(&mut first), median(&mut dup), median(&mut hash));
    println!("| step | median ms | S3 requests per put |\n|---|---:|---:|");
    println!("| hashing the 1 MiB (needed to know the key, both cases) | {h:.3} | – |");
    println!("| first put, after hashing | {f:.3} | {:.1} |", first_requests as f64 / n as f64);
    println!("| duplicate put, after hashing | {d:.3} | {:.1} |", dup_requests as f64 / n as f64);
    println!("| duplicate/first | {:.3} | |", d / f);
}

/// Where the time of one 4 KiB put and get goes: each step timed alone,
/// one call at a time, medians in µs. The S3 request is the direct way's
/// (signing, HTTP, the server); the catalog of a put (reservation and
/// synced commit) is what remains of Coffer's time after the others.
async fn small_path(plan: &Plan, dir: &Path, endpoint: &str) {
    use coffer::catalog::Catalog;
    let n = if plan.quick { 20 } else { 300 };
    let bucket = "bench-steps";
    let config = s3_config(dir, endpoint, bucket);
    let coffer = Coffer::open(config.clone()).await.unwrap();
    let direct = S3Store::new(&config.s3).unwrap();
    direct.ensure_container(bucket).await.unwrap();
    let catalog = coffer::backend::sqlite::SqliteDb::open(dir.join("bench.db")).await.unwrap();
    let us = |t: Instant| t.elapsed().as_secs_f64() * 1e6;
    let (mut hash, mut put, mut get, mut dput, mut dget, mut lookup) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let body = payload(4 << 10, (3 << 40) + i as u64);
        let t = Instant::now();
        let content = Content::from_bytes(body.clone(), None).unwrap();
        hash.push(us(t));
        let t = Instant::now();
        let sha = coffer.put("acme", content).await.unwrap().sha256;
        put.push(us(t));
        let t = Instant::now();
        coffer.get_bytes("acme", &sha).await.unwrap();
        get.push(us(t));
        let t = Instant::now();
        catalog.lookup_held("acme", &sha).await.unwrap().unwrap();
        lookup.push(us(t));
        let content = Content::from_bytes(body, None).unwrap();
        let key = format!("steps/{i}");
        let t = Instant::now();
        direct.put(bucket, &key, &content).await.unwrap();
        dput.push(us(t));
        let t = Instant::now();
        drain(direct.get(bucket, &key).await.unwrap()).await;
        dget.push(us(t));
    }
    let sha = coffer.put("acme", Content::from_bytes("steps", None).unwrap()).await.unwrap().sha256.to_string();
    let policy = |put: bool| {
        let coffer = coffer.clone();
        let sha = sha.clone();
        async move {
            let times = coffer.time_policy_decisions("acme", &sha, n, false, put).await.unwrap();
            median(&mut times.iter().map(|d| d.as_secs_f64() * 1e6).collect::<Vec<_>>())
        }
    };
    let (policy_put, policy_get) = (policy(true).await, policy(false).await);
    let (h, p, g, dp, dg, l) = (
        median(&mut hash),
        median(&mut put),
        median(&mut get),
        median(&mut dput),
        median(&mut dget),
        median(&mut lookup),
    );
    let share = |x: f64, total: f64| format!("{x:.0} ({:.0} %)", 100.0 * x / total);
    println!("\n## The 4 KiB path, step by step (medians of {n} calls, µs; share of Coffer's time)\n");
    println!("| step | put | get |\n|---|---:|---:|");
    println!("| SHA-256 of 4 KiB (the key; the get's verification) | {} | {} |", share(h, p), share(h, g));
    println!(
        "| policy call (fresh instance: placement / authorize) | {} | {} |",
        share(policy_put, p),
        share(policy_get, g)
    );
    println!("| S3 request (direct: signing, HTTP, the server) | {} | {} |", share(dp, p), share(dg, g));
    println!(
        "| catalog (get: the one lookup statement, measured; put: reservation + synced commit, the rest) | {} | {} |",
        share((p - h - policy_put - dp).max(0.0), p),
        share(l, g)
    );
    println!("| everything else (get: what remains) | – | {} |", share((g - h - policy_get - dg - l).max(0.0), g));
    println!("| **Coffer, whole** | {p:.0} | {g:.0} |");
}

/// Instruction counts of 4 KiB puts and gets, per operation, from
/// callgrind (repeatable whatever else the machine does): each way runs in
/// a process of its own (this binary with `--count`) three times, with
/// `n` puts, `2n` puts, and `2n` puts plus `n` gets; the differences are
/// `n` puts and `n` gets, start-up cancelled out.
fn instruction_counts(dir: &Path, endpoint: &str) {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("\n## Instructions per 4 KiB operation\n\n(skipped: valgrind is not installed)");
        return;
    }
    let n = 50u64;
    println!("\n## Instructions per 4 KiB operation (callgrind, all threads of the client process)\n");
    println!("| way | per put | per get |\n|---|---:|---:|");
    let mut rows = vec![];
    for way in ["coffer", "direct", "object_store"] {
        let mut counts = vec![];
        // A first run (not counted) compiles the policy for valgrind's
        // simulated CPU, whose features differ from the real one's, and
        // caches it, as the runs that count then find it.
        for (run, (puts, gets)) in [(1, 0), (n, 0), (2 * n, 0), (2 * n, n)].into_iter().enumerate() {
            let work = dir.join(format!("count-{way}-{run}"));
            std::fs::create_dir_all(&work).unwrap();
            let out = Command::new("valgrind")
                .args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "--trace-children=no"])
                .arg(std::env::current_exe().unwrap())
                .args(["--count", way, &puts.to_string(), &gets.to_string(), endpoint])
                .arg(&work)
                .env("COFFER_CACHE_DIR", dir.join("cache"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            let collected =
                text.lines().find_map(|l| l.split("Collected : ").nth(1)).and_then(|v| v.trim().parse::<f64>().ok());
            match collected {
                Some(_) if out.status.success() && run == 0 => {}
                Some(c) if out.status.success() => counts.push(c),
                _ => {
                    eprintln!("callgrind run of {way} failed: {text}");
                    break;
                }
            }
        }
        if let [a, b, c] = counts[..] {
            let (put, get) = ((b - a) / n as f64, (c - b) / n as f64);
            println!("| {way} | {:.0} k | {:.0} k |", put / 1e3, get / 1e3);
            rows.push((way, put, get));
        } else {
            println!("| {way} | – | – |");
        }
    }
    if let (Some(c), Some(d), Some(o)) = (
        rows.iter().find(|r| r.0 == "coffer"),
        rows.iter().find(|r| r.0 == "direct"),
        rows.iter().find(|r| r.0 == "object_store"),
    ) {
        println!(
            "\nCoffer/direct: {:.2}× the instructions per put, {:.2}× per get; Coffer/object_store: {:.2}× per put, {:.2}× per get.",
            c.1 / d.1,
            c.2 / d.2,
            c.1 / o.1,
            c.2 / o.2
        );
    }
}

/// The client side of [`instruction_counts`]: `puts` 4 KiB puts and then
/// `gets` gets of the first of them, one way, on a single-threaded runtime.
fn count(way: &str, puts: u64, gets: u64, endpoint: &str, work: &Path) {
    use object_store::ObjectStoreExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let bucket = "bench-count";
        let mut config = s3_config(work, endpoint, bucket);
        config.cache_dir = std::env::var_os("COFFER_CACHE_DIR").map(PathBuf::from);
        let bodies: Vec<Vec<u8>> = (0..puts).map(|i| payload(4 << 10, (5 << 40) + i)).collect();
        match way {
            "coffer" => {
                let coffer = Coffer::open(config).await.unwrap();
                let mut shas = vec![];
                for b in &bodies {
                    shas.push(coffer.put("acme", Content::from_bytes(b.clone(), None).unwrap()).await.unwrap().sha256);
                }
                for sha in shas.iter().take(gets as usize) {
                    coffer.get_bytes("acme", sha).await.unwrap();
                }
            }
            "direct" => {
                let direct = S3Store::new(&config.s3).unwrap();
                direct.ensure_container(bucket).await.unwrap();
                for (i, b) in bodies.iter().enumerate() {
                    direct
                        .put(bucket, &format!("d/{i}"), &Content::from_bytes(b.clone(), None).unwrap())
                        .await
                        .unwrap();
                }
                for i in 0..gets {
                    drain(direct.get(bucket, &format!("d/{i}")).await.unwrap()).await;
                }
            }
            _ => {
                S3Store::new(&config.s3).unwrap().ensure_container(bucket).await.unwrap();
                let store = object_store_client(endpoint, bucket);
                for (i, b) in bodies.iter().enumerate() {
                    let path = object_store::path::Path::from(format!("o/{i}"));
                    store.put(&path, object_store::PutPayload::from(bytes::Bytes::from(b.clone()))).await.unwrap();
                }
                for i in 0..gets {
                    let path = object_store::path::Path::from(format!("o/{i}"));
                    store.get(&path).await.unwrap().bytes().await.unwrap();
                }
            }
        }
    });
}

fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s => format!("{} KiB", s >> 10),
    }
}

/// CPU seconds (user + system) from a `/proc/PID/stat` line.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// This process's CPU seconds so far: the clients' (the S3 server runs in
/// a process of its own). Summed over its threads' scheduler statistics
/// (nanoseconds), not `/proc/self/stat`'s 10 ms ticks, which are too coarse
/// for a few hundred 4 KiB requests.
fn own_cpu() -> f64 {
    let ns: u64 = std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ns as f64 / 1e9
}

/// Run the binary, sampling its peak RSS and CPU; returns (seconds, peak
/// KiB, its CPU seconds, the S3 server's CPU seconds meanwhile).
fn run_measured(cmd: &mut Command) -> (f64, u64, f64, f64) {
    let t = Instant::now();
    let server_before = server_cpu();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    let (status_file, stat_file) = (format!("/proc/{}/status", child.id()), format!("/proc/{}/stat", child.id()));
    let (mut peak, mut cpu) = (0, 0.0f64);
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(c) = std::fs::read_to_string(&stat_file).ok().and_then(|s| cpu_seconds(&s)) {
            cpu = cpu.max(c);
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (t.elapsed().as_secs_f64(), peak, cpu, server_cpu() - server_before)
}

fn large_file(plan: &Plan, dir: &Path, endpoint: &str) {
    let file = dir.join("large.bin");
    write_file(&file, plan.large, 77);
    let size = std::fs::metadata(&file).unwrap().len();
    let t = Instant::now();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    std::io::copy(&mut std::fs::File::open(&file).unwrap(), &mut hasher).unwrap();
    let sha = hex::encode(sha2::Digest::finalize(hasher));
    let hash_s = t.elapsed().as_secs_f64();
    let coffer = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.current_dir(dir)
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("S3_BUCKET", "bench-large")
            .env("COFFER_CACHE_DIR", dir.join("cache"))
            .env("COFFER_DATABASE_URL", format!("sqlite:{}", dir.join("large.db").display()))
            .args(args);
        cmd
    };
    let (put_s, put_kib, put_cpu, put_server) =
        run_measured(&mut coffer(&["put", "--org", "acme", file.to_str().unwrap()]));
    let (get_s, get_kib, get_cpu, get_server) =
        run_measured(&mut coffer(&["get", "--org", "acme", &sha, "-o", dir.join("back.bin").to_str().unwrap()]));
    let mb = size as f64 / 1e6;
    println!("\n## A {} file through the `coffer` binary\n", human(size as usize));
    println!("| step | seconds | MB/s | peak RSS | coffer CPU s | S3 server CPU s |\n|---|---:|---:|---:|---:|---:|");
    println!("| SHA-256 alone (ceiling) | {hash_s:.2} | {:.0} | – | {hash_s:.2} | – |", mb / hash_s);
    println!(
        "| coffer put | {put_s:.2} | {:.0} | {:.1} MiB | {put_cpu:.2} | {put_server:.2} |",
        mb / put_s,
        put_kib as f64 / 1024.0
    );
    println!(
        "| coffer get -o | {get_s:.2} | {:.0} | {:.1} MiB | {get_cpu:.2} | {get_server:.2} |",
        mb / get_s,
        get_kib as f64 / 1024.0
    );
    let _ = std::fs::remove_file(dir.join("back.bin"));
    let _ = std::fs::remove_file(&file);
}

/// 4 KiB objects on SQLite, with the catalog's commits synced fully (what
/// Coffer runs with) and, for comparison, `synchronous = NORMAL` (what it
/// ran with before: faster, but an acknowledged put can vanish on power
/// loss). Rounds alternate so both see the same machine.
async fn sqlite(plan: &Plan, dir: &Path) {
    use coffer::backend::Backends;
    use coffer::backend::sqlite::{SqliteDb, SqliteOptions, Synchronous};
    let rounds = if plan.quick { 1 } else { 3 };
    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![("FULL", vec![], vec![]), ("NORMAL", vec![], vec![])];
    for round in 0..rounds {
        for (i, sync) in [Synchronous::Full, Synchronous::Normal].into_iter().enumerate() {
            let path = dir.join(format!("small-{round}-{i}.db"));
            let config = Config {
                database_url: Some(format!("sqlite:{}", path.display())),
                cache_dir: Some(dir.join("cache")),
                ..Config::default()
            };
            let db = SqliteDb::open_with(&path, SqliteOptions { synchronous: sync, ..SqliteOptions::default() })
                .await
                .unwrap();
            let backends = Backends { database: Arc::new(db.clone()), s3: None };
            let coffer = Coffer::from_parts(config, Arc::new(db), backends).await.unwrap();
            let tag = 5_000_000 + (round * 2 + i) as u64 * 100_000;
            let bodies: Vec<Vec<u8>> = (0..plan.sqlite_objects).map(|n| payload(4 << 10, tag + n as u64)).collect();
            let t = Instant::now();
            let mut shas = Vec::new();
            for b in &bodies {
                shas.push(coffer.put("acme", Content::from_bytes(b.clone(), None).unwrap()).await.unwrap().sha256);
            }
            results[i].1.push(plan.sqlite_objects as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            for s in &shas {
                coffer.get_bytes("acme", s).await.unwrap();
            }
            results[i].2.push(plan.sqlite_objects as f64 / t.elapsed().as_secs_f64());
        }
    }
    println!("\n## Database fallback: 4 KiB objects on SQLite (medians over {rounds} rounds)\n");
    println!("| synchronous | objects | puts/s | gets/s |\n|---|---:|---:|---:|");
    let mut medians = Vec::new();
    for (name, puts, gets) in &mut results {
        let (p, g) = (median(puts), median(gets));
        medians.push(p);
        println!("| {name} | {} | {p:.0} ({}) | {g:.0} ({}) |", plan.sqlite_objects, spread(puts), spread(gets));
    }
    println!("\nFULL/NORMAL puts: {:.2}", medians[0] / medians[1]);
}

/// Put then get `objects` 4 KiB objects for "acme", spread round-robin
/// over `hosts`, `concurrency` at a time; puts/s and gets/s.
async fn small_load(hosts: &[Coffer], objects: usize, concurrency: usize, tag: u64) -> (f64, f64) {
    let bodies: Vec<(usize, Vec<u8>)> = (0..objects).map(|n| (n, payload(4 << 10, tag + n as u64))).collect();
    let t = Instant::now();
    let shas: Vec<_> = futures_util::stream::iter(bodies)
        .map(|(n, b)| {
            let host = hosts[n % hosts.len()].clone();
            async move { (n, host.put("acme", Content::from_bytes(b, None).unwrap()).await.unwrap().sha256) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let puts = objects as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    futures_util::stream::iter(shas)
        .map(|(n, sha)| {
            let host = hosts[n % hosts.len()].clone();
            async move { host.get_bytes("acme", &sha).await.unwrap() }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    (puts, objects as f64 / t.elapsed().as_secs_f64())
}

/// 4 KiB objects with the catalog (and the fallback's blobs) on SQLite
/// and on PostgreSQL, both syncing their commits (SQLite FULL, PostgreSQL
/// fsync on), on the database fallback and on S3; one host, and two hosts
/// (two Coffers with a pool each) sharing the same number of operations in
/// flight. Every host, PostgreSQL and the S3 server share this machine's
/// cores.
async fn catalogs(plan: &Plan, dir: &Path, endpoint: &str) {
    let server = tokio::task::spawn_blocking(|| pg_server::start(true)).await.unwrap();
    let rounds = if plan.quick { 1 } else { 3 };
    let objects = if plan.quick { 20 } else { 400 };
    // (catalog, blobs, hosts, concurrency)
    let cases: &[(&str, &str, usize, usize)] = &[
        ("SQLite", "database", 1, 1),
        ("PostgreSQL", "database", 1, 1),
        ("SQLite", "S3", 1, 1),
        ("PostgreSQL", "S3", 1, 1),
        ("SQLite", "database", 1, 8),
        ("PostgreSQL", "database", 1, 8),
        ("PostgreSQL", "database", 2, 8),
        ("SQLite", "S3", 1, 8),
        ("PostgreSQL", "S3", 1, 8),
        ("PostgreSQL", "S3", 2, 8),
    ];
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); cases.len()];
    for round in 0..rounds {
        for (i, (catalog, blobs, hosts, concurrency)) in cases.iter().enumerate() {
            let case_dir = dir.join(format!("catalogs-{round}-{i}"));
            std::fs::create_dir_all(&case_dir).unwrap();
            let mut config = match *blobs {
                "S3" => s3_config(&case_dir, endpoint, &format!("catalogs-{round}-{i}")),
                _ => Config { cache_dir: Some(dir.join("cache")), ..Config::default() },
            };
            config.cache_dir = Some(dir.join("cache"));
            config.database_url = Some(match *catalog {
                "PostgreSQL" => pg_server::fresh_database_on(&server, &format!("bench_{round}_{i}")).await,
                _ => format!("sqlite:{}", case_dir.join("c.db").display()),
            });
            let mut opened = Vec::new();
            for _ in 0..*hosts {
                opened.push(Coffer::open(config.clone()).await.unwrap());
            }
            let tag = 9_000_000 + (round * cases.len() + i) as u64 * 100_000;
            let (p, g) = small_load(&opened, objects, *concurrency, tag).await;
            results[i].0.push(p);
            results[i].1.push(g);
        }
    }
    println!("\n## 4 KiB objects: the catalog on SQLite and on PostgreSQL (medians over {rounds} rounds)\n");
    println!("| catalog | blobs | hosts | in flight | objects | puts/s | gets/s |\n|---|---|---:|---:|---:|---:|---:|");
    for ((catalog, blobs, hosts, concurrency), (puts, gets)) in cases.iter().zip(&mut results) {
        let (p, g) = (median(puts), median(gets));
        println!(
            "| {catalog} | {blobs} | {hosts} | {concurrency} | {objects} | {p:.0} ({}) | {g:.0} ({}) |",
            spread(puts),
            spread(gets)
        );
    }
}

/// wrk's answer: requests/s, p50 and p99 (ms), non-2xx answers and
/// socket errors.
struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
    failed: u64,
}

fn parse_wrk(out: &str) -> Load {
    let ms = |v: &str| -> f64 {
        let v = v.trim();
        let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = n.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => f64::NAN,
        }
    };
    let field = |prefix: &str| out.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(str::trim);
    let failed = field("Non-2xx or 3xx responses:").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + field("Socket errors:")
            .map(|v| v.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum())
            .unwrap_or(0);
    Load {
        rps: field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
        p50: field("50%").map_or(f64::NAN, ms),
        p99: field("99%").map_or(f64::NAN, ms),
        failed,
    }
}

fn wrk(url: &str, script: &Path, seconds: u64, connections: u32, tag: &str) -> Load {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .args([url, "--", tag])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk: {text}{}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text)
}

/// `coffer serve` (the release binary, access log on as by default)
/// under wrk: 4 KiB puts of new content, then 4 KiB gets of stored
/// objects, 16 connections, on SQLite and on S3. wrk, the server and (for
/// S3) the S3 server share the machine's cores.
fn http_load(plan: &Plan, dir: &Path, endpoint: &str) {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("\n## coffer serve under load\n\n(skipped: wrk is not installed; `apt-get install wrk`)");
        return;
    }
    let seconds = if plan.quick { 2 } else { 10 };
    let put_lua = dir.join("put.lua");
    std::fs::write(
        &put_lua,
        r#"local n = 0
function setup(thread) n = n + 1; thread:set("id", n) end
function init(args) tag = args[1]; count = 0 end
function request()
  count = count + 1
  local head = string.format("%s-%d-%d-", tag, id, count)
  return wrk.format("PUT", "/v1/orgs/bench/objects", {["Content-Type"] = "application/octet-stream"}, head .. string.rep("x", 4096 - #head))
end
"#,
    )
    .unwrap();
    println!("\n## coffer serve under load: 4 KiB objects, wrk -t2 -c16, {seconds} s each\n");
    println!(
        "| backend | operation | requests/s | p50 ms | p99 ms | failed | server peak RSS |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for backend in ["sqlite", "s3"] {
        let work = dir.join(format!("http-{backend}"));
        std::fs::create_dir_all(&work).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.current_dir(&work)
            .env_clear()
            .env("COFFER_CACHE_DIR", work.join("cache"))
            .env("COFFER_MAX_IN_FLIGHT", "1024")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if backend == "s3" {
            cmd.env("AWS_ACCESS_KEY_ID", KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET)
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("S3_BUCKET", "bench-http");
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let url = loop {
            let mut line = String::new();
            assert!(std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0, "coffer serve exited");
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..].trim().to_string();
            }
        };
        // The access log goes on being written (and read away) meanwhile.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let puts =
            wrk(&format!("{url}/v1/orgs/bench/objects"), &put_lua, seconds, 16, &format!("{}", std::process::id()));
        // Gets of objects that exist: some of those just stored.
        let listed: serde_json::Value = {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let r = reqwest::get(format!("{url}/v1/orgs/bench/objects?limit=1000")).await.unwrap();
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
            })
        };
        let paths: Vec<String> = listed["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| format!("\"/v1/orgs/bench/objects/{}\"", o["sha256"].as_str().unwrap()))
            .collect();
        let get_lua = dir.join(format!("get-{backend}.lua"));
        std::fs::write(
            &get_lua,
            format!(
                "local paths = {{{}}}\nfunction init(args) i = 0 end\nfunction request()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
                paths.join(",")
            ),
        )
        .unwrap();
        let gets = wrk(&url, &get_lua, seconds, 16, "get");
        let rss = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().to_string()))
            .unwrap_or_default();
        terminate(&mut child);
        for (op, load) in [("put (new content)", &puts), ("get", &gets)] {
            println!(
                "| {backend} | {op} | {:.0} | {:.2} | {:.2} | {} | {rss} |",
                load.rps, load.p50, load.p99, load.failed
            );
        }
    }
}

/// SIGTERM (the graceful path), then wait.
fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve-s3") {
        serve_s3(PathBuf::from(&args[at + 1]));
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--count") {
        let [way, puts, gets, endpoint, work] = &args[at + 1..at + 6] else {
            panic!("--count WAY PUTS GETS ENDPOINT DIR")
        };
        count(way, puts.parse().unwrap(), gets.parse().unwrap(), endpoint, Path::new(work));
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = plan(quick);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s3")).unwrap();
    let (endpoint, _server) = start_s3(dir.path().join("s3"));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("# Coffer benchmarks{}", if quick { " (quick smoke run)" } else { "" });
    if std::env::args().any(|a| a == "--large-only") {
        // For profiling the large-file path alone (perf record follows the binary).
        large_file(&plan, dir.path(), &endpoint);
        return;
    }
    if std::env::args().any(|a| a == "--catalogs-only") {
        rt.block_on(catalogs(&plan, dir.path(), &endpoint));
        return;
    }
    if std::env::args().any(|a| a == "--compare-only") {
        rt.block_on(throughput(&plan, dir.path(), &endpoint));
        rt.block_on(small_path(&plan, dir.path(), &endpoint));
        if !quick {
            instruction_counts(dir.path(), &endpoint);
        }
        return;
    }
    if std::env::args().any(|a| a == "--http-only") {
        http_load(&plan, dir.path(), &endpoint);
        return;
    }
    rt.block_on(guest_overhead(&plan, dir.path()));
    if std::env::args().any(|a| a == "--guest-only") {
        return;
    }
    rt.block_on(throughput(&plan, dir.path(), &endpoint));
    rt.block_on(small_path(&plan, dir.path(), &endpoint));
    if !quick {
        instruction_counts(dir.path(), &endpoint);
    }
    large_file(&plan, dir.path(), &endpoint);
    rt.block_on(sqlite(&plan, dir.path()));
    rt.block_on(catalogs(&plan, dir.path(), &endpoint));
    if !quick {
        http_load(&plan, dir.path(), &endpoint);
    }
}
