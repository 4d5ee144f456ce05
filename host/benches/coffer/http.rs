//! `coffer serve` under wrk: 4 KiB puts and gets on SQLite and S3.

use std::path::Path;
use std::process::Command;

use crate::Plan;
use crate::support::{KEY, SECRET, start_serve, terminate};

/// wrk's answer: requests/s, p50 and p99 (ms), non-2xx answers and
/// socket errors.
pub(crate) struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
    failed: u64,
}

pub(crate) fn parse_wrk(out: &str) -> Load {
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

pub(crate) fn wrk(url: &str, script: &Path, seconds: u64, connections: u32, tag: &str) -> Load {
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
pub(crate) fn http_load(plan: &Plan, dir: &Path, endpoint: &str) {
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
            .env("COFFER_MAX_IN_FLIGHT", "1024");
        if backend == "s3" {
            cmd.env("AWS_ACCESS_KEY_ID", KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET)
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("S3_BUCKET", "bench-http");
        }
        // The access log goes on being written (and read away) meanwhile.
        let (mut child, url) = start_serve(cmd);
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
