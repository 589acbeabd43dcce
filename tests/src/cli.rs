//! The `distlock` command-line binary for the CLI tests. It belongs to the root package (feature
//! `cli`), whose dev-dependencies stay free of this harness so that its examples build without
//! the server clients; so the tests here build it themselves, once per test binary, with the
//! workspace's feature set (which the test build has already compiled).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The path of the `distlock` binary: `DISTLOCK_CLI_BIN` if set, else built (or found up to
/// date) by `cargo build --workspace --all-features --bin distlock`. Panics with cargo's
/// output if the build fails.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build).clone()
}

fn build() -> PathBuf {
    if let Some(path) = std::env::var_os("DISTLOCK_CLI_BIN") {
        return PathBuf::from(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = Command::new(cargo)
        .args([
            "build",
            "--workspace",
            "--all-features",
            "--bin",
            "distlock",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace)
        .output()
        .expect("run cargo to build the distlock binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo build --bin distlock failed:\n{}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "distlock")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no distlock executable:\n{stdout}"))
}
