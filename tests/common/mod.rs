//! Helpers shared by the integration tests. Each tests/*.rs file is a crate of its
//! own that declares `mod common;` and uses the part it needs.

// Every test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `path` relative to the repository root.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The reference fixture folder `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    repo("tests/fixtures").join(name)
}

/// A path as a command-line argument (temporary and fixture paths are UTF-8).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the test folder is writable");
    path
}

/// Runs the `maskscape` binary with `args` in the repository root.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maskscape"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the maskscape binary runs")
}

/// Runs the binary: (exit code, or -1 when a signal ended it; stdout; stderr).
pub fn maskscape(args: &[&str]) -> (i32, String, String) {
    let out = run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a user error: exit code 2, no panic, and one line `error: ...` on stderr
/// holding every piece of `expected`. Returns that line.
pub fn assert_user_error(args: &[&str], expected: &[&str]) -> String {
    let (code, _, stderr) = maskscape(args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    for piece in expected {
        assert!(
            stderr.contains(piece),
            "{args:?}: `{piece}` not in: {stderr}"
        );
    }
    stderr.trim_end().to_string()
}

/// Runs the `maskscape` binary with `args` and extra environment variables.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maskscape"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the maskscape binary runs")
}
