//! Instruction counts under callgrind: Coffer, direct requests and
//! object_store, each in a process of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use coffer::backend::BlobStore;
use coffer::backend::s3::S3Store;
use coffer::{Coffer, Content};

use crate::compare::object_store_client;
use crate::support::{drain, payload, s3_config};

/// Instruction counts of 4 KiB puts and gets, per operation, from
/// callgrind (repeatable whatever else the machine does): each way runs in
/// a process of its own (this binary with `--count`) three times, with
/// `n` puts, `2n` puts, and `2n` puts plus `n` gets; the differences are
/// `n` puts and `n` gets, start-up cancelled out.
pub(crate) fn instruction_counts(dir: &Path, endpoint: &str) {
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
pub(crate) fn count(way: &str, puts: u64, gets: u64, endpoint: &str, work: &Path) {
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
