//! Shared by the end-to-end tests: real components, built from source once.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Build both guest workspaces (stock processors and test fixtures) for
/// wasm32-wasip2, once per test binary. Cargo makes this a no-op when
/// `make guests` already ran.
fn guests() -> &'static PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let target = root().join("target/guest");
        for ws in ["processors", "tests/fixtures"] {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(root().join(ws).join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .env_remove("RUSTFLAGS")
                .status()
                .expect("run cargo");
            assert!(status.success(), "building the {ws} components failed (is the wasm32-wasip2 target installed? `make setup`)");
        }
        target.join("wasm32-wasip2/release")
    })
}

/// Where the built components are.
pub fn guest_out() -> PathBuf {
    guests().clone()
}

/// The bytes of a component by crate name (`loop-guard`, `hostile`, ...).
pub fn component(name: &str) -> Vec<u8> {
    let path = guests().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
