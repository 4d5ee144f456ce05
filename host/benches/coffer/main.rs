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
//! cargo bench --bench coffer -- --service-only # `coffer serve` on SQLite under Coffer's own load generator
//! cargo bench --bench coffer -- --small-reads-only # 4 KiB GET latency (COFFER_BENCH_GARAGE=path adds Garage)
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

mod catalogs;
mod compare;
mod garage;
mod guest;
mod http;
mod instructions;
mod large;
mod service;
mod small_reads;
mod support;

/// The tests' PostgreSQL harness: a throwaway server on a free port.
#[allow(dead_code)]
#[path = "../../../tests/integration/pg_server.rs"]
mod pg_server;

use std::path::{Path, PathBuf};

use crate::catalogs::{catalogs, sqlite};
use crate::compare::{small_path, throughput};
use crate::guest::guest_overhead;
use crate::http::http_load;
use crate::instructions::{count, instruction_counts};
use crate::large::large_file;
use crate::support::{serve_s3, start_s3};

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

/// The S3 servers small reads are measured against: the benchmark's s3s-fs
/// (`TCP_NODELAY`, as MinIO), a second s3s-fs process with Nagle's
/// algorithm on (as the s3s-fs binary ships), and Garage when
/// `COFFER_BENCH_GARAGE` names its binary. The extra servers stop when the
/// benchmark ends.
fn small_read_targets(dir: &Path, endpoint: &str) -> (Vec<small_reads::Target>, Vec<crate::support::S3Server>) {
    use crate::support::{KEY, SECRET};
    let target = |name: &str, endpoint: String, key: &str, secret: &str| small_reads::Target {
        name: name.into(),
        endpoint,
        key: key.into(),
        secret: secret.into(),
    };
    let mut targets = vec![target("s3s-fs, TCP_NODELAY", endpoint.to_string(), KEY, SECRET)];
    let root = dir.join("s3-nagle");
    std::fs::create_dir_all(&root).unwrap();
    let (addr, child, _) = crate::support::spawn_s3(root, true);
    let mut servers = vec![crate::support::S3Server(child)];
    targets.push(target("s3s-fs, Nagle on", format!("http://{addr}"), KEY, SECRET));
    if let Some(bin) = std::env::var_os("COFFER_BENCH_GARAGE") {
        let (endpoint, key, secret, server) = garage::start(Path::new(&bin), &dir.join("garage"));
        servers.push(server);
        targets.push(target("Garage", endpoint, &key, &secret));
    }
    (targets, servers)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve-s3") {
        serve_s3(PathBuf::from(&args[at + 1]), args.iter().any(|a| a == "--nagle"));
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--load") {
        let [url, op, size, clients, seconds] = &args[at + 1..at + 6] else {
            panic!("--load URL OP SIZE CLIENTS SECONDS")
        };
        service::load(url, op, size.parse().unwrap(), clients.parse().unwrap(), seconds.parse().unwrap());
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
    if std::env::args().any(|a| a == "--service-only") {
        service::service(&plan, dir.path());
        return;
    }
    if std::env::args().any(|a| a == "--small-reads-only") {
        let (targets, _servers) = small_read_targets(dir.path(), &endpoint);
        rt.block_on(small_reads::small_reads(&plan, dir.path(), &targets));
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
    let (targets, servers) = small_read_targets(dir.path(), &endpoint);
    rt.block_on(small_reads::small_reads(&plan, dir.path(), &targets));
    drop(servers);
    if !quick {
        instruction_counts(dir.path(), &endpoint);
    }
    large_file(&plan, dir.path(), &endpoint);
    rt.block_on(sqlite(&plan, dir.path()));
    rt.block_on(catalogs(&plan, dir.path(), &endpoint));
    service::service(&plan, dir.path());
    if !quick {
        http_load(&plan, dir.path(), &endpoint);
    }
}
