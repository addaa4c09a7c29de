//! The Debian package: `cargo deb` builds it (in a target directory of its
//! own, so it never waits on this test run's), and `dpkg-deb` shows what
//! it installs and what its maintainer scripts do. Skipped where cargo-deb
//! is not installed, except in CI (.ci/run installs it).

use std::path::Path;
use std::process::Command;

fn have_cargo_deb() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("run dpkg-deb");
    assert!(out.status.success(), "dpkg-deb {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_deb_installs_binary_units_config_user_and_docs() {
    if !have_cargo_deb() {
        assert!(
            std::env::var("CI").is_err(),
            "cargo-deb must be installed in CI (.ci/run does it)"
        );
        eprintln!("SKIPPED: cargo-deb not installed (cargo install cargo-deb)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tempfile::tempdir().unwrap();
    let built = Command::new("cargo")
        .args(["deb", "--output"])
        .arg(out_dir.path())
        .current_dir(root)
        .env("CARGO_TARGET_DIR", root.join("target/package"))
        // What is packaged is under test here, not how it is optimized:
        // the release profile's whole-program LTO would add minutes to
        // CI for the same files.
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .output()
        .expect("run cargo deb");
    assert!(
        built.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    assert!(
        deb.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("cutover_"),
        "{deb:?}"
    );

    let files = dpkg_deb(&["--contents"], &deb);
    let service = std::fs::read_to_string(root.join("config/cutover.service")).unwrap();
    let documentation = service
        .lines()
        .find_map(|l| l.strip_prefix("Documentation=file://"))
        .expect("the unit names its documentation");
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|l| l.split_whitespace().next())
        .expect("ExecStart");
    for path in [
        exec,
        "/etc/cutover/cutover.toml",
        "/usr/lib/systemd/system/cutover.service",
        "/usr/lib/systemd/system/cutover.socket",
        documentation,
        "/usr/share/doc/cutover/configuration.md",
        "/usr/share/doc/cutover/copyright",
        "/usr/share/man/man1/cutover.1.gz",
        "/usr/share/man/man1/cutover-ctl-rollout.1.gz",
        "/usr/share/bash-completion/completions/cutover",
        "/usr/share/zsh/vendor-completions/_cutover",
        "/usr/share/fish/vendor_completions.d/cutover.fish",
    ] {
        assert!(
            files.lines().any(|l| l.ends_with(&format!(".{path}"))),
            "{path} is not in the package:\n{files}"
        );
    }
    assert!(
        files.contains("-rwxr-xr-x") && files.contains("./usr/bin/cutover"),
        "{files}"
    );

    // The binary is stripped: no symbol table (its section's name is in
    // the section-name table only when the section is there).
    let unpacked = tempfile::tempdir().unwrap();
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(unpacked.path())
        .output()
        .expect("run dpkg-deb -x");
    assert!(out.status.success(), "{out:?}");
    let binary = std::fs::read(unpacked.path().join("usr/bin/cutover")).unwrap();
    assert!(
        !binary.windows(8).any(|w| w == b".symtab\0"),
        "the packaged binary keeps its symbol table"
    );

    let control = tempfile::tempdir().unwrap();
    let out = Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(control.path())
        .output()
        .expect("run dpkg-deb --control");
    assert!(out.status.success(), "{out:?}");
    let read = |name: &str| std::fs::read_to_string(control.path().join(name)).unwrap_or_default();
    assert_eq!(read("conffiles").trim(), "/etc/cutover/cutover.toml");
    assert!(
        read("control").contains("Depends: adduser"),
        "{}",
        read("control")
    );
    let postinst = read("postinst");
    for want in [
        "adduser --system --group --home /var/lib/cutover",
        "install -d -o cutover -g cutover -m 0700 /var/lib/cutover",
        "systemctl kill --signal=USR2",
        "deb-systemd-helper",
    ] {
        assert!(
            postinst.contains(want),
            "postinst lacks {want:?}:\n{postinst}"
        );
    }
    assert!(
        !postinst.contains("try-restart"),
        "an upgrade hands over, never restarts:\n{postinst}"
    );
    assert!(read("postrm").contains("rm -rf /var/lib/cutover"));
    let sh = Command::new("sh")
        .arg("-n")
        .arg(control.path().join("postinst"))
        .status()
        .unwrap();
    assert!(sh.success(), "postinst is not valid sh");
}

/// The man pages (one per command, as `cutover-ctl-rollout.1` and the
/// like that the top page points to) and the shell completions the
/// package installs are what the binary generates from its own clap
/// definitions. They are checked in for `cargo deb` to pick up; after a
/// change to the CLI, `CUTOVER_REGENERATE=1 cargo test packaged` writes
/// them.
#[test]
fn packaged_man_pages_and_completions_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let regenerate = std::env::var_os("CUTOVER_REGENERATE").is_some();
    let fresh = tempfile::tempdir().unwrap();
    let man = fresh.path().join("man");
    std::fs::create_dir(&man).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["manpage", "--dir"])
        .arg(&man)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut wanted: Vec<(String, Vec<u8>)> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = format!("man/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    assert!(wanted.iter().any(|(n, _)| n == "man/cutover-ctl-rollout.1"));
    for (shell, file) in [
        ("bash", "cutover.bash"),
        ("zsh", "_cutover"),
        ("fish", "cutover.fish"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        wanted.push((format!("completions/{file}"), out.stdout));
    }
    let checked_in = root.join("config");
    let mut stale = Vec::new();
    for (name, bytes) in &wanted {
        let path = checked_in.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            if regenerate {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, bytes).unwrap();
            } else {
                stale.push(name.clone());
            }
        }
    }
    // A page for a command that is gone.
    for entry in std::fs::read_dir(checked_in.join("man"))
        .into_iter()
        .flatten()
    {
        let name = format!("man/{}", entry.unwrap().file_name().to_string_lossy());
        if !wanted.iter().any(|(n, _)| *n == name) {
            if regenerate {
                std::fs::remove_file(checked_in.join(&name)).unwrap();
            } else {
                stale.push(name);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "config/{stale:?} differ from what the binary generates; \
         run `CUTOVER_REGENERATE=1 cargo test packaged` and commit the result"
    );
}

/// `cutover manpage --dir` into a directory that cannot be written: exit
/// 1, the directory and the reason on stderr, nothing half-written claimed.
#[test]
fn man_pages_into_a_missing_directory_is_a_clear_error() {
    let missing = tempfile::tempdir().unwrap().path().join("no/such/dir");
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["manpage", "--dir"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("cutover manpage: {}: ", missing.display())),
        "{stderr}"
    );
}
