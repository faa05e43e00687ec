//! The workspace on disk and the release `raftkv` binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

/// The workspace root: the nearest ancestor of this crate's source whose
/// `Cargo.toml` has a `[workspace]` table.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the
/// workspace root, where the harness runs cargo); else the target directory
/// the running executable was built in (a test binary or `xtask`, found by
/// the `CACHEDIR.TAG` cargo writes at its top); else `<root>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return workspace_root().join(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| target_dir_of(&exe))
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The cargo target directory that contains `path`, if any.
fn target_dir_of(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// The release `raftkv` binary, built by `cargo build --release -p raftkv`
/// the first time this is called in a process; later calls (from any
/// thread) return the same path or the same error without building again.
pub fn release_binary() -> Result<PathBuf, Error> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_release().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Build)
}

/// Runs cargo and takes the binary's path from its `compiler-artifact`
/// message, so the answer is right whatever decides the target directory
/// (`CARGO_TARGET_DIR`, `build.target-dir`, `--target`). Diagnostics are
/// rendered to stderr as usual.
fn build_release() -> Result<PathBuf, Error> {
    tracing::info!("building raftkv (release)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--package",
            "raftkv",
            "--bin",
            "raftkv",
        ])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("running cargo", e))?;
    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| Error::io("reading cargo's output", e))?;
            executable = executable.or_else(|| raftkv_executable(&line));
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("waiting for cargo", e))?;
    if !status.success() {
        return Err(Error::Build(format!(
            "cargo build --release -p raftkv failed ({status})"
        )));
    }
    let binary = executable.unwrap_or_else(|| target_dir().join("release/raftkv"));
    if !binary.is_file() {
        return Err(Error::Build(format!(
            "no raftkv binary at {}",
            binary.display()
        )));
    }
    Ok(binary)
}

/// The executable of the `raftkv` bin target, if `line` is cargo's
/// artifact message for it.
fn raftkv_executable(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    (message["reason"] == "compiler-artifact" && message["target"]["name"] == "raftkv")
        .then_some(())?;
    message["executable"].as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_workspace() {
        let root = workspace_root();
        assert!(
            root.join("crates/testcluster/Cargo.toml").is_file(),
            "{root:?}"
        );
        assert!(root.join("xtask").is_dir(), "{root:?}");
    }

    #[test]
    fn the_target_dir_is_found_from_a_binary_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("release/deps")).unwrap();
        std::fs::write(dir.path().join("CACHEDIR.TAG"), "Signature").unwrap();
        let exe = dir.path().join("release/deps/t10_basic-0123");
        assert_eq!(target_dir_of(&exe).as_deref(), Some(dir.path()));
        assert_eq!(target_dir_of(Path::new("/nowhere/bin/x")), None);
    }

    #[test]
    fn the_executable_comes_from_the_artifact_message() {
        let artifact = r#"{"reason":"compiler-artifact","target":{"name":"raftkv","kind":["bin"]},"executable":"/t/release/raftkv"}"#;
        assert_eq!(
            raftkv_executable(artifact),
            Some(PathBuf::from("/t/release/raftkv"))
        );
        let library = r#"{"reason":"compiler-artifact","target":{"name":"api"},"executable":null}"#;
        assert_eq!(raftkv_executable(library), None);
        assert_eq!(raftkv_executable("Compiling raftkv"), None);
    }
}
