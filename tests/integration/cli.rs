//! The `coffer` binary as scripts use it: JSON out, bytes out, one-line
//! errors, distinct exit codes.

use assert_cmd::Command;
use serde_json::Value;

use crate::support::data;

/// `coffer` with a clean environment and its database in `dir`.
fn coffer(dir: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("coffer").unwrap();
    cmd.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn put_get_stat_ls_rm_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scan.bin");
    let bytes = data(2 * 1024 * 1024 + 3, 9);
    std::fs::write(&file, &bytes).unwrap();

    let out = coffer(dir.path())
        .args(["put", "--org", "acme", "scan.bin", "--content-type", "application/x-scan"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let put = json(&out.stdout);
    let sha = put["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    assert_eq!(put["size"], bytes.len() as u64);
    assert_eq!(put["content_type"], "application/x-scan");
    assert_eq!(put["backend"], "database");
    assert_eq!(put["key"], sha.as_str());
    assert_eq!(put["deduplicated"], false);
    assert!(dir.path().join("coffer.db").exists(), "the default database is coffer.db in the current directory");

    let again = json(&coffer(dir.path()).args(["put", "--org", "acme", "scan.bin"]).output().unwrap().stdout);
    assert_eq!(again["deduplicated"], true);

    let got = coffer(dir.path()).args(["get", "--org", "acme", &sha]).output().unwrap();
    assert!(got.status.success());
    assert!(got.stdout == bytes);

    coffer(dir.path()).args(["get", "--org", "acme", &sha, "-o", "copy.bin"]).assert().success();
    assert!(std::fs::read(dir.path().join("copy.bin")).unwrap() == bytes);

    let stat = json(&coffer(dir.path()).args(["stat", "--org", "acme", &sha]).output().unwrap().stdout);
    assert_eq!(stat["sha256"], sha.as_str());

    let ls = coffer(dir.path()).args(["ls", "--org", "acme"]).output().unwrap();
    let lines: Vec<Value> = ls.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(json).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["sha256"], sha.as_str());

    coffer(dir.path()).args(["rm", "--org", "acme", &sha]).assert().success();
    coffer(dir.path()).args(["stat", "--org", "acme", &sha]).assert().code(3);
}

#[test]
fn standard_input_is_stored_when_the_file_is_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let out = coffer(dir.path()).args(["put", "--org", "acme", "-"]).write_stdin("from stdin").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sha = json(&out.stdout)["sha256"].as_str().unwrap().to_string();
    let got = coffer(dir.path()).args(["get", "--org", "acme", &sha]).output().unwrap();
    assert_eq!(got.stdout, b"from stdin");
}

/// Arguments, extra environment, expected exit code, words in the message.
type ErrorCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, &'a str);

/// Exit code and the one line on stderr for each kind of failure.
#[test]
fn errors_are_one_line_with_distinct_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let absent = "0".repeat(64);
    let cases: Vec<ErrorCase> = vec![
        (vec!["get", "--org", "acme", &absent], vec![], 3, "not found"),
        (vec!["get", "--org", "acme", "xyz"], vec![], 2, "not a SHA-256 digest"),
        (vec!["put", "--org", "acme", "no-such-file"], vec![], 2, "no such file"),
        (vec!["put", "--org", "a/b", "-"], vec![], 2, "organisation"),
        (vec!["ls", "--org", "acme"], vec![("COFFER_POLICY", "missing.wasm")], 7, "COFFER_POLICY"),
        (vec!["ls", "--org", "acme"], vec![("BUCKET_PER_ORG", "perhaps")], 7, "BUCKET_PER_ORG"),
        (vec!["ls", "--org", "acme"], vec![("COFFER_DATABASE_URL", "mysql://x/y")], 7, "COFFER_DATABASE_URL"),
    ];
    for (args, env, code, words) in cases {
        let out = coffer(dir.path()).args(&args).envs(env).write_stdin("x").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one line, no backtrace: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Usage errors are clap's: exit code 2.
    coffer(dir.path()).args(["put"]).assert().code(2);
}

#[test]
fn denied_by_policy_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let out = coffer(dir.path())
        .args(["put", "--org", "acme", "-"])
        .env("COFFER_MAX_SIZE", "2")
        .write_stdin("too long")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bucket_name_without_s3_names_the_database_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let out = coffer(dir.path()).args(["bucket-name", "--org", "acme"]).output().unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["backend"], "database");
    assert_eq!(v["container"], "acme");
}

#[test]
fn get_to_a_file_gives_it_the_mode_a_new_file_gets() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = coffer(dir.path()).args(["put", "--org", "acme", "-"]).write_stdin("mode").output().unwrap();
    let sha = json(&out.stdout)["sha256"].as_str().unwrap().to_string();
    coffer(dir.path()).args(["get", "--org", "acme", &sha, "-o", "got.bin"]).assert().success();
    let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
    std::fs::File::create(dir.path().join("fresh.bin")).unwrap();
    assert_eq!(mode("got.bin"), mode("fresh.bin"), "not the private mode of a temporary file");
    assert_eq!(std::fs::read(dir.path().join("got.bin")).unwrap(), b"mode");
}

/// `-o` replaces only regular files: a device and a FIFO are written
/// through (and stay what they are), `-` is standard output, and a
/// directory or a symbolic link (never followed) is a clear error.
#[test]
fn get_to_a_device_fifo_or_link_writes_through_and_replaces_nothing() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let out = coffer(dir.path()).args(["put", "--org", "acme", "-"]).write_stdin("special").output().unwrap();
    let sha = json(&out.stdout)["sha256"].as_str().unwrap().to_string();
    let get = |to: &str| coffer(dir.path()).args(["get", "--org", "acme", &sha, "-o", to]).output().unwrap();

    let out = get("/dev/null");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null is still a device");

    let fifo = dir.path().join("pipe");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = get("pipe");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(reader.join().unwrap(), b"special", "the FIFO's reader got the bytes");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is still a FIFO");

    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/target.bin"), b"old").unwrap();
    std::os::unix::fs::symlink("sub/target.bin", dir.path().join("link")).unwrap();

    let out = get("-");
    assert_eq!(out.stdout, b"special", "- is standard output");
    assert!(!dir.path().join("-").exists());

    std::os::unix::fs::symlink("nowhere", dir.path().join("dangling")).unwrap();
    for (to, words) in [("sub", "is a directory"), ("link", "symbolic link"), ("dangling", "symbolic link")] {
        let out = get(to);
        assert_eq!(out.status.code(), Some(2), "{to}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{to}: {err}");
    }
    // A link is refused, never followed, and neither it nor its file changes.
    assert!(std::fs::symlink_metadata(dir.path().join("link")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(dir.path().join("sub/target.bin")).unwrap(), b"old");
}

/// A blob whose record was lost, a reservation a crashed put left, and a
/// blob a crashed put was staging: gc --dry-run counts them and changes
/// nothing, the default grace period spares them (they are new), and
/// --older-than 0s reclaims them.
#[test]
fn gc_counts_in_a_dry_run_spares_the_young_and_reclaims_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let out = coffer(dir.path()).args(["put", "--org", "acme", "-"]).write_stdin("orphan").output().unwrap();
    assert!(out.status.success());
    let db = rusqlite::Connection::open(dir.path().join("coffer.db")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    db.execute_batch(&format!(
        "DELETE FROM objects;
         INSERT INTO pending VALUES ('t1', 'acme', '{sha}', 1, 'database', 'acme', '{sha}', {now}, {now});
         INSERT INTO blob_staging (container, name, started_at, touched_at) VALUES ('acme', 'x', {now}, {now});",
        sha = "a".repeat(64)
    ))
    .unwrap();
    let count = |t: &str| -> i64 { db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap() };
    let gc = |args: &[&str]| -> Value {
        let out = coffer(dir.path()).arg("gc").args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        json(&out.stdout)
    };
    let dry = gc(&["--dry-run", "--older-than", "0s"]);
    assert_eq!(
        (&dry["dry_run"], &dry["orphans_deleted"], &dry["reservations_released"], &dry["uploads_aborted"]),
        (&Value::Bool(true), &Value::from(1), &Value::from(1), &Value::from(1)),
        "{dry}"
    );
    assert_eq!((count("blobs"), count("pending"), count("blob_staging")), (1, 1, 1), "a dry run changes nothing");
    let young = gc(&[]);
    assert_eq!((&young["orphans_deleted"], &young["reservations_released"]), (&Value::from(0), &Value::from(0)));
    let done = gc(&["--older-than", "0s"]);
    assert_eq!(done["orphans_deleted"], 1, "{done}");
    assert_eq!((count("blobs"), count("pending"), count("blob_staging"), count("blob_data")), (0, 0, 0, 0));
    coffer(dir.path()).args(["gc", "--older-than", "soon"]).assert().code(2);
}
