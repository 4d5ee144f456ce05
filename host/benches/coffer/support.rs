//! What every benchmark shares: payloads, statistics, CPU time, and the
//! S3 test server in a process of its own (so its CPU is its own).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer::Config;
use futures_util::StreamExt;

pub(crate) const KEY: &str = "bench-key";

pub(crate) const SECRET: &str = "bench-secret-0123456789";

/// Distinct bytes for object `i` of a run (content-addressed: every put must be new).
pub(crate) fn payload(len: usize, tag: u64) -> Vec<u8> {
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

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) fn spread(v: &[f64]) -> String {
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    format!("{lo:.1}–{hi:.1}")
}

/// Requests the S3 server has counted (asked of the server process).
pub(crate) fn requests() -> u64 {
    use std::io::{Read, Write};
    let addr = S3_ADDR.get().expect("the S3 server is running");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /__bench/requests HTTP/1.0\r\nhost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.rsplit("\r\n\r\n").next().unwrap().trim().parse().unwrap()
}

pub(crate) static S3_ADDR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The S3 server's process id, for its CPU time.
pub(crate) static S3_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The S3 server (s3s-fs over `root`, verifying SigV4), serving in this
/// process until it is killed; counts the requests it receives and tells
/// the count at `/__bench/requests`. Prints its address first.
///
/// With `nagle`, its sockets keep Nagle's algorithm on, as the s3s-fs
/// binary and Garage ship (they never set `TCP_NODELAY`); otherwise they
/// set `TCP_NODELAY`, as MinIO does.
pub(crate) fn serve_s3(root: PathBuf, nagle: bool) {
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
            if !nagle {
                let _ = socket.set_nodelay(true);
            }
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
pub(crate) struct S3Server(pub(crate) std::process::Child);

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
pub(crate) fn start_s3(root: PathBuf) -> (String, S3Server) {
    let (addr, child, pinned) = spawn_s3(root, false);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
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

/// Start an S3 server process (see [`serve_s3`]) on the last core; its
/// address, the process, and whether it is pinned.
pub(crate) fn spawn_s3(root: PathBuf, nagle: bool) -> (String, std::process::Child, bool) {
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
    cmd.arg("--serve-s3").arg(&root);
    if nagle {
        cmd.arg("--nagle");
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    (line.trim().to_string(), child, pinned)
}

/// Where the server and the clients run, for the report.
pub(crate) static PLACEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The S3 server process's CPU seconds so far.
pub(crate) fn server_cpu() -> f64 {
    S3_PID
        .get()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .and_then(|s| cpu_seconds(&s))
        .unwrap_or(0.0)
}

pub(crate) fn s3_config(dir: &Path, endpoint: &str, bucket: &str) -> Config {
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

/// A file of `size` distinct bytes (every 8 MiB block differs).
pub(crate) fn write_file(path: &Path, size: u64, tag: u64) {
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
pub(crate) async fn drain<E: std::fmt::Debug>(
    mut s: impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
) -> u64 {
    let mut n = 0;
    while let Some(chunk) = s.next().await {
        n += chunk.unwrap().len() as u64;
    }
    n
}

pub(crate) fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s => format!("{} KiB", s >> 10),
    }
}

/// CPU seconds (user + system) from a `/proc/PID/stat` line.
pub(crate) fn cpu_seconds(stat: &str) -> Option<f64> {
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
pub(crate) fn own_cpu() -> f64 {
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
pub(crate) fn run_measured(cmd: &mut Command) -> (f64, u64, f64, f64) {
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

/// SIGTERM (the graceful path), then wait.
pub(crate) fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// Start `coffer serve` from `cmd` (the binary, its working directory and
/// environment, set by the caller), listening on a free port of
/// 127.0.0.1: the process and its URL. Its log is read away meanwhile.
pub(crate) fn start_serve(mut cmd: Command) -> (std::process::Child, String) {
    let mut child =
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0, "coffer serve exited");
        if let Some(at) = line.find("listening on ") {
            break line[at + "listening on ".len()..].trim().to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, url)
}
