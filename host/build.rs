//! Builds the policy components the host embeds or tests with, so that
//! `cargo build` / `cargo test` alone build everything (as wasmtime's
//! `crates/test-programs/artifacts/build.rs` does): a nested cargo builds
//! the guest crates for `wasm32-wasip2` into their own target directory and
//! the resulting components are copied into `OUT_DIR`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, file name of the component it produces): the default policy,
/// then the components the tests use to attack the sandbox.
const GUESTS: &[(&str, &str)] = &[
    ("coffer-policy-default", "coffer_policy_default.wasm"),
    ("coffer-test-guest-hostile", "coffer_test_guest_hostile.wasm"),
    ("coffer-test-guest-extra-import", "coffer_test_guest_extra_import.wasm"),
    ("coffer-test-guest-other-version", "coffer_test_guest_other_version.wasm"),
    // The example wasi:blobstore plugin (a wasi:cli command).
    ("coffer-example-blobstore-plugin", "coffer_example_blobstore_plugin.wasm"),
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = root.join("target").join("guest");

    for watched in ["wit", "guest", "tests/guests", "examples/blobstore-plugin", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    build_guests(&root, &target_dir);
    for (_, file) in GUESTS {
        let built = target_dir.join("wasm32-wasip2").join("guest").join(file);
        std::fs::copy(&built, out_dir.join(file)).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
    // The test suite finds its components here (see `policy::TEST_GUESTS_DIR`).
    println!("cargo:rustc-env=COFFER_TEST_GUESTS={}", out_dir.display());
}

/// One nested cargo for all components, into its own target directory.
fn build_guests(root: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(["build", "--target", "wasm32-wasip2", "--profile", "guest"]);
    for (package, _) in GUESTS {
        cmd.args(["--package", package]);
    }
    cmd.arg("--target-dir").arg(target_dir);
    // The outer build's flags are for the host target, not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the policy components");
    if !status.success() {
        panic!(
            "building the policy components for wasm32-wasip2 failed. \
             If the target is missing, run `rustup target add wasm32-wasip2` \
             (rust-toolchain.toml lists it; `rustup toolchain install` installs it)."
        );
    }
}
