//! The host's structure: imports run one way (`host/layers.toml`), no
//! two files import each other, checked by `tests/layers.py`; and the
//! check itself catches what it is for.

use std::path::{Path, PathBuf};
use std::process::Output;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Run the checker on `src` (with the layers file beside it).
fn check(src: &Path) -> Output {
    std::process::Command::new("python3")
        .arg(root().join("tests/layers.py"))
        .arg(src)
        .output()
        .expect("python3 runs tests/layers.py")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn imports_run_one_way() {
    let out = check(&root().join("host/src"));
    assert!(out.status.success(), "host/src breaks its layers:\n{}", text(&out));
    assert!(text(&out).contains("one way, no cycle"), "{}", text(&out));
}

/// A small crate: `config` at the bottom, `api` above it.
fn crate_with(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let src = dir.join("src");
    for (name, body) in files {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    std::fs::write(
        dir.join("layers.toml"),
        "[[layer]]\nname = \"bottom\"\nmodules = [\"config\"]\n[[layer]]\nname = \"top\"\nmodules = [\"api\"]\n",
    )
    .unwrap();
    src
}

/// The checker fails on the crate `files` makes, saying each of `said`.
fn refused(dir: &Path, files: &[(&str, &str)], said: &[&str]) {
    let out = check(&crate_with(dir, files));
    assert!(!out.status.success(), "{}", text(&out));
    for s in said {
        assert!(text(&out).contains(s), "expected {s:?} in:\n{}", text(&out));
    }
}

#[test]
fn the_check_catches_an_upward_import_a_cycle_and_a_module_without_a_layer() {
    let dir = tempfile::tempdir().unwrap();
    let clean = crate_with(
        &dir.path().join("clean"),
        &[
            ("lib.rs", "pub mod api;\npub mod config;\npub use crate::api::Api;\n"),
            ("config/mod.rs", "mod limits;\npub use self::limits::Limits;\npub struct Config;\n"),
            ("config/limits.rs", "pub struct Limits;\n"),
            ("api.rs", "use crate::config::{Config, Limits};\npub struct Api(Config, Limits);\n"),
        ],
    );
    let out = check(&clean);
    assert!(out.status.success(), "a clean crate passes: {}", text(&out));

    // The configuration reaches up into the API (through a re-export, and
    // through a path in the code).
    refused(
        &dir.path().join("upward"),
        &[
            ("lib.rs", "pub mod api;\npub mod config;\npub use crate::api::validate;\n"),
            ("config.rs", "pub struct Config;\nfn check() { crate::validate(); }\n"),
            ("api.rs", "use crate::config::Config;\npub fn validate() {}\npub struct Api(Config);\n"),
        ],
        &["upward import: config.rs (config, layer bottom) uses api.rs", "cycle between files: api.rs, config.rs"],
    );

    // Two files of one folder importing each other: `super::` one way, a
    // `use` of the child the other.
    refused(
        &dir.path().join("cycle"),
        &[
            ("lib.rs", "pub mod api;\npub mod config;\n"),
            ("config/mod.rs", "mod env;\nuse self::env::read;\npub struct Config;\npub fn load() { read(); }\n"),
            ("config/env.rs", "use super::Config;\npub fn read() -> Option<Config> { None }\n"),
            ("api.rs", "pub struct Api;\n"),
        ],
        &["cycle between files: config/env.rs, config/mod.rs"],
    );

    // A new top-level module must be given a layer.
    refused(
        &dir.path().join("unlisted"),
        &[
            ("lib.rs", "pub mod api;\npub mod config;\npub mod extra;\n"),
            ("config.rs", ""),
            ("api.rs", ""),
            ("extra.rs", ""),
        ],
        &["module extra has no layer"],
    );
}
