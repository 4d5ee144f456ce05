//! A large file through the `coffer` binary: throughput, peak memory,
//! and SHA-256 alone as the ceiling.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::Plan;
use crate::support::{KEY, SECRET, human, run_measured, write_file};

pub(crate) fn large_file(plan: &Plan, dir: &Path, endpoint: &str) {
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
