//! Put and get through Coffer, the same signed requests made directly,
//! object_store and boto3, side by side; where a small put's and get's
//! time goes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use coffer::backend::BlobStore;
use coffer::backend::s3::S3Store;
use coffer::{Coffer, Content};

use crate::Plan;
use crate::support::{
    KEY, PLACEMENT, SECRET, drain, human, median, own_cpu, payload, requests, s3_config, spread, write_file,
};

/// The ways of putting and getting the same bytes that the benchmark
/// compares.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Way {
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
pub(crate) struct Samples {
    put: Vec<f64>,
    get: Vec<f64>,
    put_cpu: Vec<f64>,
    get_cpu: Vec<f64>,
}

/// What one way does with one round's objects: the bytes (small sizes, in
/// memory) or a file (large ones, streamed).
pub(crate) enum Data {
    Memory(Vec<Vec<u8>>),
    File(PathBuf),
}

pub(crate) const BOTO3: &str = r#"
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
pub(crate) fn boto3(
    endpoint: &str,
    bucket: &str,
    size: usize,
    count: usize,
    tag: &str,
    file: Option<&Path>,
) -> Option<[f64; 4]> {
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

/// object_store's S3 client for `bucket` on the benchmark's server (path
/// style, plain HTTP, the same credentials as every other way).
pub(crate) fn object_store_client(endpoint: &str, bucket: &str) -> object_store::aws::AmazonS3 {
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

pub(crate) struct Clients {
    coffer: Coffer,
    direct: Arc<S3Store>,
    single: Arc<S3Store>,
    object_store: Arc<object_store::aws::AmazonS3>,
    endpoint: String,
}

/// One way puts then gets one round's objects: (put s, get s, put CPU s, get CPU s).
pub(crate) async fn run_way(way: Way, clients: &Clients, data: &Data, size: usize, tag: &str) -> Option<[f64; 4]> {
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

pub(crate) async fn throughput(plan: &Plan, dir: &Path, endpoint: &str) {
    let bucket = "bench";
    let coffer = Coffer::open(s3_config(dir, endpoint, bucket)).await.unwrap();
    let config = s3_config(dir, endpoint, bucket);
    let direct = Arc::new(S3Store::new(&config.s3).unwrap());
    direct.ensure_container(bucket).await.unwrap();
    direct.ensure_container("bench-boto3").await.unwrap();
    let mut one_put = config.s3.clone();
    one_put.multipart_threshold = Some(coffer::config::MAX_SINGLE_PUT);
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
pub(crate) async fn small_path(plan: &Plan, dir: &Path, endpoint: &str) {
    use coffer::catalog::Records;
    let n = if plan.quick { 20 } else { 300 };
    let bucket = "bench-steps";
    let config = s3_config(dir, endpoint, bucket);
    let coffer = Coffer::open(config.clone()).await.unwrap();
    let direct = S3Store::new(&config.s3).unwrap();
    direct.ensure_container(bucket).await.unwrap();
    let catalog = coffer::db::sqlite::SqliteDb::open(dir.join("bench.db")).await.unwrap();
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
