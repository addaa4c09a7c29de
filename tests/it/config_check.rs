//! `cutover check` on the fixtures: every problem reported at once as
//! FILE:LINE:COL: key: message, exit 1; a good file exits 0.
//!
//! Each `tests/fixtures/bad_*.toml` lists its expected problems in
//! `# expect: LINE:COL key.path` comments.

use std::path::{Path, PathBuf};
use std::process::Command;

fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run cutover check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn bad_fixtures_name_file_line_col_and_key() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("bad_") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|e| {
                let (pos, key) = e.split_once(' ').unwrap_or((e, ""));
                let key = key.trim();
                if key.is_empty() {
                    format!("{}:{pos}: ", path.display())
                } else {
                    format!("{}:{pos}: {key}: ", path.display())
                }
            })
            .collect();
        let (code, stdout, stderr) = check(&path);
        assert_eq!(code, 1, "{name}: exit code; stderr:\n{stderr}");
        assert!(stdout.is_empty(), "{name}: {stdout}");
        // A syntax error's source line and caret are indented below it.
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("    ")).collect();
        assert_eq!(lines.len(), expected.len(), "{name}: got\n{stderr}");
        for (line, want) in lines.iter().zip(&expected) {
            assert!(
                line.starts_with(want.as_str()),
                "{name}: want {want:?}, got {line:?}"
            );
            assert!(line.len() > want.len(), "{name}: no message in {line:?}");
        }
    }
    assert!(seen >= 4, "fixtures missing");
}

/// A syntax error is reported once, with its line and a caret under the
/// spot; misspelt keys get the key meant; durations say how to write them.
#[test]
fn problems_say_what_to_write() {
    let (_, _, stderr) = check(&fixtures().join("bad_syntax.toml"));
    assert!(
        stderr.ends_with(": unclosed array table, expected `]`\n    [[route]\n            ^\n"),
        "{stderr}"
    );
    let (_, _, stderr) = check(&fixtures().join("bad_spelling.toml"));
    for want in [
        "proxy.connect_timeout: write durations as strings like \"30s\"",
        "route[0].splt: unknown key; did you mean `split`?",
        "pool.p.upstreams[0].wieght: unknown key; did you mean `weight`?",
    ] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
}

/// With no file named and none at either default path, `check` says
/// which paths it tried.
#[test]
fn check_names_the_default_paths_it_tried() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("check")
        .current_dir(empty.path())
        .output()
        .expect("run cutover check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if Path::new("/etc/cutover/cutover.toml").exists() {
        return; // This machine has a real one; nothing to learn here.
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tried ./cutover.toml and /etc/cutover/cutover.toml"),
        "{stderr}"
    );
}

#[test]
fn example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cutover.toml");
    let (code, stdout, stderr) = check(&example);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(": ok: 1 listener(s), 1 route(s), 2 pool(s)"),
        "{stdout}"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, stderr) = check(Path::new("/nonexistent/cutover.toml"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/cutover.toml: cannot read config file"),
        "{stderr}"
    );
}
