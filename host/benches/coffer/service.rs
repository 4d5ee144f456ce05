//! `coffer serve` measured by a load generator of Coffer's own: this
//! benchmark binary run with `--load`, a process pinned to core 0, the
//! server pinned to core 1, so the numbers are the server's and not a
//! client's that shares its core. Each client is one kept-alive HTTP/1.1
//! connection sending requests one after another for a fixed time.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Plan;
use crate::support::{cpu_seconds, percentile, start_serve, terminate};

/// What one load run measured.
#[derive(serde::Serialize, serde::Deserialize)]
struct Load {
    requests: u64,
    failed: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The load generator (`--load URL OP SIZE CLIENTS SECONDS`): `put` sends
/// new content of `SIZE` bytes every time (never a duplicate), `get` reads
/// the objects listed at the URL, round robin. Prints a [`Load`] as JSON.
pub(crate) fn load(url: &str, op: &str, size: usize, clients: usize, seconds: f64) {
    let put = op == "put";
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let out = rt.block_on(async {
        let objects = format!("{url}/v1/orgs/bench/objects");
        let keys: Arc<Vec<String>> = Arc::new(if !put {
            let listed: serde_json::Value = serde_json::from_slice(
                &reqwest::get(format!("{objects}?limit=1000")).await.unwrap().bytes().await.unwrap(),
            )
            .unwrap();
            listed["objects"].as_array().unwrap().iter().map(|o| o["sha256"].as_str().unwrap().to_string()).collect()
        } else {
            Vec::new()
        });
        let failed = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (objects, keys, failed) = (objects.clone(), keys.clone(), failed.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
                    let mut ms = Vec::new();
                    let mut body = vec![b'x'; size];
                    for n in 0u64.. {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let t = Instant::now();
                        let ok = if put {
                            let tag = format!("{}-{c}-{n}-", std::process::id());
                            body[..tag.len()].copy_from_slice(tag.as_bytes());
                            let r = client.put(&objects).body(body.clone()).send().await;
                            r.is_ok_and(|r| r.status().is_success())
                        } else {
                            let key = &keys[(c + n as usize * clients) % keys.len()];
                            match client.get(format!("{objects}/{key}")).send().await {
                                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                                _ => false,
                            }
                        };
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    ms
                })
            })
            .collect();
        let mut ms = Vec::new();
        for t in tasks {
            ms.extend(t.await.unwrap());
        }
        let seconds = start.elapsed().as_secs_f64();
        Load {
            requests: ms.len() as u64,
            failed: failed.load(Ordering::Relaxed),
            seconds,
            p50_ms: percentile(&mut ms, 0.5),
            p99_ms: percentile(&mut ms, 0.99),
        }
    });
    println!("{}", serde_json::to_string(&out).unwrap());
}

fn pinned(core: usize, program: &Path) -> Command {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 && Command::new("taskset").arg("--version").output().is_ok() {
        let mut c = Command::new("taskset");
        c.args(["-c", &core.to_string()]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn proc_field(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

/// `coffer serve` on SQLite under 1, 8 and 64 clients: 4 KiB and 1 MiB,
/// put then get.
pub(crate) fn service(plan: &Plan, dir: &Path) {
    let seconds = if plan.quick { 1.0 } else { 8.0 };
    println!("\n## `coffer serve` on SQLite under Coffer's load generator ({seconds} s per row)\n");
    println!(
        "| size | op | clients | requests/s | p50 ms | p99 ms | failed | server CPU s | server peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let exe = std::env::current_exe().unwrap();
    for size in [4usize << 10, 1 << 20] {
        for clients in [1usize, 8, 64] {
            let work = dir.join(format!("service-{size}-{clients}"));
            std::fs::create_dir_all(&work).unwrap();
            // The server on the last core: a fresh one per row, so its peak
            // RSS is that row's.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut cmd = pinned(cores - 1, Path::new(env!("CARGO_BIN_EXE_coffer")));
            cmd.current_dir(&work)
                .env_clear()
                .env("COFFER_CACHE_DIR", work.join("cache"))
                .env("COFFER_MAX_IN_FLIGHT", "1024")
                .env("RUST_LOG", "warn");
            let (mut child, url) = start_serve(cmd);
            for op in ["put", "get"] {
                let cpu = cpu_seconds(&proc_field(child.id(), "stat")).unwrap_or(0.0);
                let out = pinned(0, &exe)
                    .args(["--load", &url, op, &size.to_string(), &clients.to_string(), &seconds.to_string()])
                    .output()
                    .unwrap();
                let cpu = cpu_seconds(&proc_field(child.id(), "stat")).unwrap_or(0.0) - cpu;
                let Ok(load) = serde_json::from_slice::<Load>(&out.stdout) else {
                    println!(
                        "| {} | {op} | {clients} | load generator failed: {} |",
                        crate::support::human(size),
                        String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
                    );
                    continue;
                };
                let rss: f64 = proc_field(child.id(), "status")
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0.0);
                println!(
                    "| {} | {op} | {clients} | {:.0} | {:.2} | {:.2} | {} | {cpu:.2} | {:.0} |",
                    crate::support::human(size),
                    load.requests as f64 / load.seconds,
                    load.p50_ms,
                    load.p99_ms,
                    load.failed,
                    rss / 1024.0
                );
            }
            terminate(&mut child);
        }
    }
}
