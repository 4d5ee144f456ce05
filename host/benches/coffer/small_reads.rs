//! Small reads from S3: the latency of one 4 KiB GET at a time, through
//! Coffer (the library and `coffer serve`), Coffer's S3 client alone
//! ("direct"), object_store and boto3, against S3 servers with Nagle's
//! algorithm on (as the s3s-fs binary and Garage ship) and off (as MinIO).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use coffer::backend::BlobStore;
use coffer::backend::s3::S3Store;
use coffer::{Coffer, Config, Content};

use crate::Plan;
use crate::support::{drain, payload, percentile, start_serve, terminate};

/// An S3 server to read from.
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) endpoint: String,
    pub(crate) key: String,
    pub(crate) secret: String,
}

impl Target {
    fn config(&self, dir: &Path, bucket: &str) -> Config {
        let mut c = Config {
            database_url: Some(format!("sqlite:{}", dir.join("catalog.db").display())),
            cache_dir: Some(dir.join("cache")),
            ..Config::default()
        };
        c.s3.access_key_id = Some(self.key.clone());
        c.s3.secret_access_key = Some(self.secret.clone());
        c.s3.endpoint_url = Some(self.endpoint.clone());
        c.s3.region = Some("garage".into()).filter(|_| self.name.starts_with("Garage"));
        c.s3.bucket = Some(bucket.into());
        c
    }

    fn region(&self) -> &str {
        if self.name.starts_with("Garage") { "garage" } else { "us-east-1" }
    }
}

const BOTO3_GETS: &str = r#"
import json, sys, time
import boto3
from botocore.config import Config
endpoint, key, secret, region, bucket, count = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                  region_name=region, config=Config(s3={"addressing_style": "path"}))
s3.put_object(Bucket=bucket, Key="boto3/small", Body=b"b" * 4096)
ms = []
for i in range(int(count) + 5):
    t = time.perf_counter()
    s3.get_object(Bucket=bucket, Key="boto3/small")["Body"].read()
    ms.append((time.perf_counter() - t) * 1000)
print(json.dumps(ms[5:]))
"#;

/// Milliseconds of each of `count` sequential calls of `get` (after 5
/// warm-up calls, which open the connections).
async fn timed<F, Fut>(count: usize, mut get: F) -> Vec<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let mut ms = Vec::with_capacity(count);
    for i in 0..count + 5 {
        let t = Instant::now();
        assert_eq!(get().await, 4096);
        if i >= 5 {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    ms
}

fn row(target: &str, way: &str, mut ms: Vec<f64>) {
    if ms.is_empty() {
        println!("| {target} | {way} | – | – | – |");
        return;
    }
    let p50 = percentile(&mut ms, 0.5);
    println!("| {target} | {way} | {p50:.2} | {:.2} | {:.0} |", percentile(&mut ms, 0.99), 1000.0 / p50);
}

pub(crate) async fn small_reads(plan: &Plan, dir: &Path, targets: &[Target]) {
    use object_store::ObjectStoreExt;
    let count = if plan.quick { 20 } else { 300 };
    println!("\n## Small reads from S3: one 4 KiB GET at a time ({count} gets per row)\n");
    println!("| S3 server | way | p50 ms | p99 ms | gets/s at p50 |\n|---|---|---:|---:|---:|");
    for (n, target) in targets.iter().enumerate() {
        let work = dir.join(format!("small-reads-{n}"));
        std::fs::create_dir_all(&work).unwrap();
        let bucket = "small-reads";
        // Opening Coffer creates the bucket (or finds it).
        let coffer = Coffer::open(target.config(&work, bucket)).await.unwrap();
        let direct = S3Store::new(&target.config(&work, bucket).s3).unwrap();
        let body = payload(4096, 7 + n as u64);
        let digest = coffer.put("acme", Content::from_bytes(body.clone(), None).unwrap()).await.unwrap().sha256;
        let key = digest.to_string();
        let ms = timed(count, || async { drain(coffer.get("acme", &key).await.unwrap().1).await }).await;
        row(&target.name, "coffer (library)", ms);
        direct.put(bucket, "direct/small", &Content::from_bytes(body.clone(), None).unwrap()).await.unwrap();
        let ms = timed(count, || async { drain(direct.get(bucket, "direct/small").await.unwrap()).await }).await;
        row(&target.name, "direct (Coffer's S3 client)", ms);
        let os = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&target.endpoint)
            .with_bucket_name(bucket)
            .with_access_key_id(&target.key)
            .with_secret_access_key(&target.secret)
            .with_region(target.region())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap();
        let path = object_store::path::Path::from("os/small");
        os.put(&path, object_store::PutPayload::from(bytes::Bytes::from(body.clone()))).await.unwrap();
        let ms = timed(count, || async { os.get(&path).await.unwrap().bytes().await.unwrap().len() as u64 }).await;
        row(&target.name, "object_store", ms);
        let out = Command::new("python3")
            .args(["-c", BOTO3_GETS, &target.endpoint, &target.key, &target.secret, target.region(), bucket])
            .arg(count.to_string())
            .output();
        let ms: Vec<f64> = out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or_default();
        row(&target.name, "boto3", ms);
        drop(coffer);
        row(&target.name, "coffer serve (reqwest client)", serve_gets(&work, target, bucket, &key, count).await);
    }
}

/// `coffer serve` on the target (catalog in SQLite), read by one reqwest
/// client over one kept-alive connection.
async fn serve_gets(work: &Path, target: &Target, bucket: &str, key: &str, count: usize) -> Vec<f64> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    cmd.current_dir(work)
        .env_clear()
        .env("COFFER_CACHE_DIR", work.join("cache"))
        .env("COFFER_DATABASE_URL", format!("sqlite:{}", work.join("catalog.db").display()))
        .env("AWS_ACCESS_KEY_ID", &target.key)
        .env("AWS_SECRET_ACCESS_KEY", &target.secret)
        .env("AWS_ENDPOINT_URL", &target.endpoint)
        .env("AWS_REGION", target.region())
        .env("S3_BUCKET", bucket);
    let (mut child, url) = start_serve(cmd);
    let ms = {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
        let url = format!("{url}/v1/orgs/acme/objects/{key}");
        timed(count, || async {
            let r = client.get(&url).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.bytes().await.unwrap().len() as u64
        })
        .await
    };
    terminate(&mut child);
    ms
}
