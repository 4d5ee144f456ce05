//! Memory stays bounded whatever the file's size: the `coffer` binary
//! puts and gets a file several times larger than the bound, in parts,
//! while its peak resident memory is watched.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{data, unique_bucket};

/// The mission's bound for a put or get of any size.
const PEAK_LIMIT_KIB: u64 = 64 * 1024;

/// Run `cmd`, sampling its peak resident set (VmHWM, which only grows)
/// until it exits; returns (success, peak KiB, stderr).
pub fn run_watching_memory(cmd: &mut Command) -> (bool, u64, String) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "coffer did not finish in time");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), peak, stderr)
}

#[test]
fn a_file_four_times_the_memory_bound_streams_through_in_bounded_memory() {
    let server = crate::s3_server::server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    // Written in pieces so the test itself stays small too.
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..64u8 {
            f.write_all(&data(4 << 20, i)).unwrap();
        }
    }
    let bucket = unique_bucket("memory");
    let coffer = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", crate::s3_server::SECRET_KEY)
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("S3_BUCKET", &bucket)
            .args(args);
        cmd
    };
    let (ok, put_peak, err) = run_watching_memory(&mut coffer(&["put", "--org", "acme", "big.bin"]));
    assert!(ok, "{err}");
    let sha = crate::support::sha256_file(&file);
    let (ok, get_peak, err) = run_watching_memory(&mut coffer(&["get", "--org", "acme", &sha, "-o", "back.bin"]));
    assert!(ok, "{err}");
    assert_eq!(crate::support::sha256_file(&dir.path().join("back.bin")), sha);
    eprintln!("peak RSS: put {put_peak} KiB, get {get_peak} KiB for a 256 MiB file");
    assert!(put_peak < PEAK_LIMIT_KIB, "put peaked at {put_peak} KiB");
    assert!(get_peak < PEAK_LIMIT_KIB, "get peaked at {get_peak} KiB");
}
