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

/// `maskscape sweep SPEC --out OUT EXTRA...`, which must succeed; its stdout.
pub fn sweep(spec: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["sweep", path_str(spec), "--out", path_str(out)];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = maskscape(&args);
    assert_eq!(code, 0, "{args:?}\n{stdout}\n{stderr}");
    stdout
}

/// Every file under `dir` by its relative path, with its bytes, sorted.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    files
}

/// The relative paths of a [`tree`].
pub fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|f| f.0.as_str()).collect()
}

/// The two folders hold the same files, byte for byte.
pub fn assert_same_tree(one: &Path, other: &Path) {
    let (a, b) = (tree(one), tree(other));
    assert_eq!(names(&a), names(&b));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs");
    }
}
