//! Helpers shared by the zoo test modules.

use std::path::PathBuf;

/// Runs the `anneal` binary: (success, stdout, stderr), without backtraces.
pub fn anneal(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anneal"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run anneal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `anneal-{group}-{pid}-{name}` in the temp folder, removed if it exists
/// (not created).
pub fn fresh_dir(group: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("anneal-{group}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
