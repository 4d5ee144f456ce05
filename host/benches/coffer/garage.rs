//! Garage (a real S3 server, built from crates.io: `cargo install garage`)
//! on 127.0.0.1 for the small-read table: one node, its layout applied,
//! a key and the bucket made with its own CLI.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::S3Server;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn garage(bin: &Path, config: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).arg("-c").arg(config).args(args).output().unwrap();
    assert!(out.status.success(), "garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start Garage in `dir` with bucket `small-reads`: its endpoint, key id
/// and secret, and the process (stopped when dropped).
pub(crate) fn start(bin: &Path, dir: &Path) -> (String, String, String, S3Server) {
    std::fs::create_dir_all(dir).unwrap();
    let (rpc, s3, admin) = (free_port(), free_port(), free_port());
    let config = dir.join("garage.toml");
    let secret: String = (0..32).map(|_| format!("{:02x}", fastrand::u8(..))).collect();
    std::fs::write(
        &config,
        format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            meta = dir.join("meta").display(),
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let child = Command::new("taskset")
        .args(["-c", &(cores - 1).to_string()])
        .arg(bin)
        .arg("-c")
        .arg(&config)
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = S3Server(child);
    let started = Instant::now();
    let node = loop {
        let out = Command::new(bin).arg("-c").arg(&config).args(["node", "id", "-q"]).output().unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().split('@').next().unwrap().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "garage did not start");
        std::thread::sleep(Duration::from_millis(200));
    };
    garage(bin, &config, &["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
    garage(bin, &config, &["layout", "apply", "--version", "1"]);
    let made = garage(bin, &config, &["key", "create", "bench"]);
    let field = |name: &str| {
        made.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in: {made}"))
    };
    let (key, secret) = (field("Key ID:"), field("Secret key:"));
    garage(bin, &config, &["bucket", "create", "small-reads"]);
    garage(bin, &config, &["bucket", "allow", "--read", "--write", "--owner", "small-reads", "--key", "bench"]);
    (format!("http://127.0.0.1:{s3}"), key, secret, server)
}
