//! Coffer's benchmarks, side by side in one run. Nothing here asserts a
//! time; the numbers go into BENCHMARKS.md.
//!
//! ```sh
//! cargo bench --bench coffer            # the full run (a few minutes)
//! cargo bench --bench coffer -- --quick # smoke run (CI)
//! cargo bench --bench coffer -- --guest-only # the policy-decision table alone
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
            sizes: vec![(4 << 10, 20), (1 << 20, 4)],
            large: 64 << 20,
            sqlite_objects: 50,
        }
    } else {
        Plan {
            quick,
            rounds: 3,
            decisions: 5000,
            sizes: vec![(4 << 10, 300), (1 << 20, 60), (64 << 20, 3)],
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

/// Requests the S3 server has received.
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn requests() -> u64 {
    REQUESTS.load(std::sync::atomic::Ordering::SeqCst)
}

/// The S3 server: s3s-fs over a temporary folder, on its own thread,
/// counting requests.
fn start_s3(root: PathBuf) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&root).unwrap());
            b.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
            let service = b.build();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let _ = socket.set_nodelay(true);
                let inner = service.clone();
                let counted = hyper::service::service_fn(move |req| {
                    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    hyper::service::Service::call(&inner, req)
                });
                let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), counted).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
    });
    format!("http://{}", rx.recv().unwrap())
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

const BOTO3: &str = r#"
import json, sys, time
import boto3
from botocore.config import Config
endpoint, key, secret, bucket, size, count, tag = sys.argv[1:8]
size, count = int(size), int(count)
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
try:
    s3.create_bucket(Bucket=bucket)
except Exception:
    pass
bodies = [(tag + str(i)).encode() * (size // len(tag + str(i)) + 1) for i in range(count)]
bodies = [b[:size] for b in bodies]
t = time.perf_counter()
for i, b in enumerate(bodies):
    s3.put_object(Bucket=bucket, Key=f"{tag}/{i}", Body=b)
put = time.perf_counter() - t
t = time.perf_counter()
for i in range(count):
    s3.get_object(Bucket=bucket, Key=f"{tag}/{i}")["Body"].read()
get = time.perf_counter() - t
print(json.dumps({"put": put, "get": get}))
"#;

fn boto3(endpoint: &str, bucket: &str, size: usize, count: usize, tag: &str) -> Option<(f64, f64)> {
    let out = Command::new("python3")
        .args(["-c", BOTO3, endpoint, KEY, SECRET, bucket, &size.to_string(), &count.to_string(), tag])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("boto3 run failed (pip install boto3): {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((v["put"].as_f64()?, v["get"].as_f64()?))
}

#[derive(Default)]
struct Samples {
    put: Vec<f64>,
    get: Vec<f64>,
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

async fn throughput(plan: &Plan, dir: &Path, endpoint: &str) {
    let bucket = "bench";
    let coffer = Coffer::open(s3_config(dir, endpoint, bucket)).await.unwrap();
    let config = s3_config(dir, endpoint, bucket);
    let direct = Arc::new(S3Store::new(&config.s3).unwrap());
    direct.ensure_container(bucket).await.unwrap();
    direct.ensure_container("bench-boto3").await.unwrap();
    println!("\n## Put and get against the same S3 server (medians over {} rounds; spread in brackets)\n", plan.rounds);
    println!("| size | objects | way | put obj/s | put MB/s | get obj/s | get MB/s |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    let mut tag = 0u64;
    let mut ratios = Vec::new();
    for &(size, count) in &plan.sizes {
        let (mut c, mut d, mut b) = (Samples::default(), Samples::default(), Samples::default());
        for round in 0..plan.rounds {
            // Coffer: hash, policy, signed upload, catalog; get verifies.
            tag += 1;
            let bodies: Vec<Vec<u8>> = (0..count).map(|i| payload(size, tag * 1_000_000 + i as u64)).collect();
            let t = Instant::now();
            let mut shas = Vec::new();
            for body in &bodies {
                shas.push(coffer.put("acme", Content::from_bytes(body.clone(), None).unwrap()).await.unwrap().sha256);
            }
            c.put.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            for sha in &shas {
                coffer.get_bytes("acme", sha).await.unwrap();
            }
            c.get.push(t.elapsed().as_secs_f64());

            // Direct: the same signed requests, no guest, no catalog.
            tag += 1;
            let bodies: Vec<Vec<u8>> = (0..count).map(|i| payload(size, tag * 1_000_000 + i as u64)).collect();
            let t = Instant::now();
            let mut keys = Vec::new();
            for body in &bodies {
                let content = Content::from_bytes(body.clone(), None).unwrap();
                let key = format!("direct/{}", content.sha256());
                direct.put(bucket, &key, &content).await.unwrap();
                keys.push(key);
            }
            d.put.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            for key in &keys {
                let mut s = direct.get(bucket, key).await.unwrap();
                while let Some(chunk) = s.next().await {
                    chunk.unwrap();
                }
            }
            d.get.push(t.elapsed().as_secs_f64());

            // boto3, what OpenKAT uses today.
            if let Some((p, g)) = boto3(endpoint, "bench-boto3", size, count, &format!("r{round}s{size}t{tag}")) {
                b.put.push(p);
                b.get.push(g);
            }
        }
        let mb = (size * count) as f64 / 1e6;
        let row = |way: &str, s: &mut Samples| -> Option<(f64, f64)> {
            if s.put.is_empty() {
                println!("| {} | {count} | {way} | – | – | – | – |", human(size));
                return None;
            }
            let put_rates: Vec<f64> = s.put.iter().map(|t| count as f64 / t).collect();
            let get_rates: Vec<f64> = s.get.iter().map(|t| count as f64 / t).collect();
            let (p, g) = (median(&mut put_rates.clone()), median(&mut get_rates.clone()));
            println!(
                "| {} | {count} | {way} | {p:.1} ({}) | {:.1} | {g:.1} ({}) | {:.1} |",
                human(size),
                spread(&put_rates),
                p * mb / count as f64,
                spread(&get_rates),
                g * mb / count as f64
            );
            Some((p, g))
        };
        let cr = row("coffer", &mut c);
        let dr = row("direct", &mut d);
        let br = row("boto3", &mut b);
        ratios.push((size, cr, dr, br));
    }
    println!("\n| size | coffer/direct put | coffer/direct get | coffer/boto3 put | coffer/boto3 get |");
    println!("|---|---:|---:|---:|---:|");
    for (size, c, d, b) in ratios {
        let r = |a: Option<(f64, f64)>, b: Option<(f64, f64)>, get: bool| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}", if get { a.1 / b.1 } else { a.0 / b.0 }),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            human(size),
            r(c, d, false),
            r(c, d, true),
            r(c, b, false),
            r(c, b, true)
        );
    }

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

/// This process's CPU seconds so far (the in-process S3 server's work is
/// most of it while the binary runs).
fn own_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| cpu_seconds(&s)).unwrap_or(0.0)
}

/// Run the binary, sampling its peak RSS and CPU; returns (seconds, peak
/// KiB, its CPU seconds, this process's CPU seconds meanwhile).
fn run_measured(cmd: &mut Command) -> (f64, u64, f64, f64) {
    let t = Instant::now();
    let server_cpu = own_cpu();
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
    (t.elapsed().as_secs_f64(), peak, cpu, own_cpu() - server_cpu)
}

fn large_file(plan: &Plan, dir: &Path, endpoint: &str) {
    let file = dir.join("large.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let block = payload(8 << 20, 77);
        let mut written = 0;
        while written < plan.large {
            f.write_all(&block[..(block.len() as u64).min(plan.large - written) as usize]).unwrap();
            // Vary each block so parts differ.
            f.write_all(&written.to_le_bytes()).unwrap();
            written += block.len() as u64 + 8;
        }
    }
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
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = plan(quick);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s3")).unwrap();
    let endpoint = start_s3(dir.path().join("s3"));
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
    if std::env::args().any(|a| a == "--http-only") {
        http_load(&plan, dir.path(), &endpoint);
        return;
    }
    rt.block_on(guest_overhead(&plan, dir.path()));
    if std::env::args().any(|a| a == "--guest-only") {
        return;
    }
    rt.block_on(throughput(&plan, dir.path(), &endpoint));
    large_file(&plan, dir.path(), &endpoint);
    rt.block_on(sqlite(&plan, dir.path()));
    rt.block_on(catalogs(&plan, dir.path(), &endpoint));
    if !quick {
        http_load(&plan, dir.path(), &endpoint);
    }
}
