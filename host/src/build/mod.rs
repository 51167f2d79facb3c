//! Building processor source into components.
//!
//! A processor is a Rust crate that depends on `kiln-guest`; kiln builds it
//! with cargo for `wasm32-wasip2`, which already yields a component. Cargo's
//! JSON messages name the artifact, so kiln never guesses paths. Compile
//! errors come back verbatim: the evolution engine hands them to the model
//! that wrote the code.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target processors build for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{} is not a processor crate: no Cargo.toml there", .0.display())]
    NotACrate(PathBuf),
    #[error("cannot run cargo: {0}")]
    Cargo(String),
    #[error("the `{GUEST_TARGET}` target is not installed\nhint: run `rustup target add {GUEST_TARGET}` (or `make setup`)")]
    MissingTarget,
    #[error("{} does not compile:\n{errors}", .dir.display())]
    Compile { dir: PathBuf, errors: String },
    #[error("cargo built {} but produced no .wasm (is it a `cdylib`?)", .0.display())]
    NoArtifact(PathBuf),
}

/// Where guest builds go unless `KILN_GUEST_TARGET_DIR` says otherwise.
pub fn default_target_dir() -> PathBuf {
    std::env::var_os("KILN_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default().join("target/guest"))
}

/// Build the processor crate at `dir` in release mode and return the
/// component's bytes.
pub fn build_processor(dir: &Path, target_dir: &Path) -> Result<Vec<u8>, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NotACrate(dir.to_path_buf()));
    }
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--message-format=json-render-diagnostics", "--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // A host build's flags (coverage, sanitizers) must not leak into the guest.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|e| BuildError::Cargo(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("may not be installed") || stderr.contains("can't find crate for `core`") {
            return Err(BuildError::MissingTarget);
        }
        return Err(BuildError::Compile { dir: dir.to_path_buf(), errors: compile_errors(&stderr) });
    }
    // The last compiler-artifact of the crate at `dir` with a .wasm file is ours.
    let dir_abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut artifact = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let from_here = msg["manifest_path"].as_str().map(|m| Path::new(m).parent() == Some(dir_abs.as_path())).unwrap_or(false);
        if !from_here {
            continue;
        }
        if let Some(files) = msg["filenames"].as_array() {
            if let Some(w) = files.iter().filter_map(|f| f.as_str()).find(|f| f.ends_with(".wasm")) {
                artifact = Some(PathBuf::from(w));
            }
        }
    }
    let path = artifact.ok_or_else(|| BuildError::NoArtifact(dir.to_path_buf()))?;
    std::fs::read(&path).map_err(|e| BuildError::Cargo(format!("cannot read {}: {e}", path.display())))
}

/// Keep the lines of cargo's output that explain a failure.
fn compile_errors(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim_start().starts_with("Compiling") && !l.trim_start().starts_with("Blocking") && !l.trim_start().starts_with("Updating"))
        .collect();
    let text = lines.join("\n");
    // Bounded: this text may be sent back to a model.
    const MAX: usize = 16_000;
    if text.len() <= MAX {
        return text;
    }
    let cut = (0..=MAX).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}\n[... {} more bytes]", &text[..cut], text.len() - cut)
}
