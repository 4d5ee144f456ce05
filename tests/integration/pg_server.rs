//! A real PostgreSQL server for the tests (and the benchmark): a throwaway
//! cluster in a temporary directory, on a free port of 127.0.0.1, with
//! password authentication. One per process, started on first use; each
//! test takes a database of its own ([`fresh_database`]).
//!
//! - The server binaries come from Debian's `postgresql` package
//!   (`/usr/lib/postgresql/VERSION/bin`). If they are missing and this
//!   runs as root, the package is installed (a fresh machine running the
//!   README's test command); otherwise the tests fail, they never skip.
//! - `initdb` refuses to run as root: as root, the cluster belongs to the
//!   `postgres` user the package creates.
//! - A watchdog shell stops the server and removes the directory within a
//!   second of this process ending, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The test cluster's superuser and its password (tests check that the
/// password never shows up in output).
pub const USER: &str = "coffer";
pub const PASSWORD: &str = "pg-test-password-7f3a";

pub struct PgServer {
    pub port: u16,
    /// The CA that signed the server's TLS certificate (for `localhost`).
    pub ca: PathBuf,
    /// The watchdog shell (never waited for: it outlives this process by
    /// the second it takes to stop the server).
    _watchdog: std::process::Child,
}

impl PgServer {
    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable", self.port)
    }
}

/// The newest installed server's binaries.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Install Debian's server package (as root only).
fn install() {
    eprintln!("PostgreSQL is not installed: installing Debian's postgresql package for the tests");
    let apt = |args: &[&str]| {
        let ok = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "apt-get {args:?} failed: install PostgreSQL's server (apt-get install postgresql) to run the tests"
        );
    };
    apt(&["update", "-q"]);
    apt(&["install", "-y", "-q", "--no-install-recommends", "postgresql"]);
}

/// Run `program` (as the `postgres` user when this is root).
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A free port on 127.0.0.1 (free when asked; the server takes it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Start a cluster: `durable` keeps PostgreSQL's fsync on (for the
/// benchmark, to compare with SQLite's synced commits); the tests turn it
/// off, since a throwaway cluster need not survive a power loss.
pub fn start(durable: bool) -> PgServer {
    let bin = find_bin().unwrap_or_else(|| {
        assert!(
            is_root(),
            "the PostgreSQL tests need the server binaries (Debian: apt-get install postgresql); \
             not installed, and not root to install them"
        );
        install();
        find_bin().expect("postgresql installed, but no /usr/lib/postgresql/*/bin/initdb")
    });
    let root = is_root();
    let dir = tempfile::Builder::new().prefix("coffer-pg-").tempdir().unwrap().keep();
    if root {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap().success();
        assert!(ok, "chown of {} to postgres failed", dir.display());
    }
    let data = dir.join("data");
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, PASSWORD).unwrap();
    if root {
        Command::new("chown").args(["postgres:postgres"]).arg(&pwfile).status().unwrap();
    }
    let out = as_owner(root, &bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", USER, "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    // TLS with a certificate for localhost from a CA of the test's own,
    // so the tests can try every sslmode.
    let (ca, cert, key) = (dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(&dir)
            .args(args)
            .output()
            .expect("openssl (to make the test server's TLS certificate)");
        assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3",
        "-subj",
        "/CN=coffer test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3",
        "-extfile",
        "ext",
        "-out",
        "server.crt",
    ]);
    if root {
        Command::new("chown").args(["postgres:postgres"]).arg(&key).arg(&cert).status().unwrap();
    }
    let port = free_port();
    let fsync = if durable { "on" } else { "off" };
    // The server runs under a watchdog that stops it, and removes the
    // cluster, once this process is gone.
    let script = format!(
        "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync={fsync} \
         -c max_connections=300 -c shared_buffers=64MB -c log_min_messages=fatal \
         -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key} >{dir}/server.log 2>&1 &
         pg=$!
         while kill -0 $pg 2>/dev/null && [ -d /proc/{watch} ]; do sleep 1; done
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf {dir}",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
        watch = std::process::id(),
        cert = cert.display(),
        key = key.display(),
    );
    let watchdog = as_owner(root, Path::new("/bin/sh"))
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the PostgreSQL test server did not start: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    PgServer { port, ca, _watchdog: watchdog }
}

/// The tests' shared server, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| start(false))
}

/// A new, empty database on `server` (its URL).
pub async fn fresh_database_on(server: &PgServer, stem: &str) -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{stem}_{}_{}", std::process::id(), COUNT.fetch_add(1, Ordering::SeqCst));
    let (client, conn) = tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    drop(client);
    let _ = conn.await;
    server.url(&name)
}

/// A new, empty database on the tests' server.
pub async fn fresh_database(stem: &str) -> String {
    let server = tokio::task::spawn_blocking(server).await.unwrap();
    fresh_database_on(server, stem).await
}
