//! `cutover ctl` as scripts use it, through the real binary against an
//! in-process proxy: one exit code per class of failure (1 usage or an
//! answer that is not the admin API's, 2 refused, 3 unreachable, 4 auth),
//! errors on stderr in CLI words, nothing on stdout; drain and remove
//! waiting for their end.

use std::process::Command;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_of_failure_has_its_exit_code() {
    let (blue, green, proxy) = blue_green().await;
    let admin = proxy.admin_url("");

    let (code, out, err) = ctl(&admin, &["status"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ROUTE") && err.is_empty(), "{out}{err}");

    // 1: usage.
    let (code, out, err) = ctl(&admin, &["split", "app", "green"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        out.is_empty() && err.contains("write POOL=WEIGHT"),
        "{out}{err}"
    );

    // 1 for what clap refuses too (its own code is 2, which a pipeline
    // reads as "rolled back"): a typo of a verb or of a flag.
    for typo in [
        &["stauts"][..],
        &["rollout", "app", "--to", "green", "--wiat"],
    ] {
        let (code, out, err) = ctl(&admin, typo).await;
        assert_eq!(code, Some(1), "{typo:?}: {err}");
        assert!(out.is_empty() && err.contains("error:"), "{out}{err}");
    }
    let (code, out, _) = ctl(&admin, &["--help"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("Exit codes"), "{out}");

    // --admin HOST:PORT is read as http://HOST:PORT; another scheme is a
    // usage error showing the form wanted.
    let bare = admin.trim_start_matches("http://").trim_end_matches('/');
    let (code, _, err) = ctl(bare, &["status"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = ctl(&format!("ftp://{bare}"), &["status"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("like http://127.0.0.1:9090"), "{err}");

    // 1: pointed at a proxy listener, whose answer is the app's.
    let wrong = format!("http://{}", proxy.addrs()[0]);
    let (code, out, err) = ctl(&wrong, &["status"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("is --admin the admin listener"), "{err}");

    // 2: refused, in CLI words.
    let disable = format!("/api/v1/pools/green/upstreams/{}/disable", green.addr);
    admin_call("POST", &proxy.admin_url(&disable), None, None).await;
    let (code, out, err) = ctl(&admin, &["split", "app", "blue=0", "green=100"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("409") && err.contains("add --force"), "{err}");
    assert!(!err.contains("?force"), "{err}");
    // What traffic does now beside what the split says.
    let (code, out, err) = ctl(&admin, &["split", "app", "blue=50", "green=50"]).await;
    assert_eq!(code, Some(2), "{out}{err}");
    let (_, out, _) = ctl(&admin, &["split", "app", "blue=50", "green=50", "--force"]).await;
    assert_eq!(out.trim(), "app: blue=50 green=50");
    let (_, out, _) = ctl(&admin, &["status"]).await;
    assert!(
        out.contains("blue=50 green=50  blue 100%  runtime"),
        "{out}"
    );
    let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    assert_eq!(
        v["routes"][0]["effective_split"],
        json!({"blue": 100.0, "green": 0.0})
    );
    let (code, _, err) = ctl(&admin, &["split", "nope", "blue=1"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("404") && err.contains("no route named \"nope\""),
        "{err}"
    );

    // 3: nothing listens there.
    let (code, out, err) = ctl(&format!("http://{}", closed_port()), &["status"]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        out.is_empty() && err.contains("cannot reach the admin API"),
        "{out}{err}"
    );
    proxy.stop().await;

    // 4: a token is needed.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret-token-for-tests\n").unwrap();
    let proxy = start_proxy(&split_config(
        &[("blue", 100, &[blue.addr])],
        &format!(
            "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    ))
    .await;
    let admin = proxy.admin_url("");
    let (code, out, err) = ctl(&admin, &["status"]).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(out.is_empty() && err.contains("--token-file"), "{out}{err}");
    let token = token.display().to_string();
    let (code, _, err) = ctl(&admin, &["--token-file", &token, "status"]).await;
    assert_eq!(code, Some(0), "{err}");
    proxy.stop().await;
}

/// `--json` on a verb prints the API's answer; `drain POOL` drains every
/// upstream and `--wait` returns once drained; `remove` says it drains
/// first, and with `--wait` returns once the upstream is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_a_pool_and_remove_with_wait() {
    let blue = TestUpstream::start("blue").await;
    let green1 = TestUpstream::start("green").await;
    let green2 = TestUpstream::start("green").await;
    let proxy = start_proxy(&split_config(
        &[
            ("blue", 100, &[blue.addr]),
            ("green", 0, &[green1.addr, green2.addr]),
        ],
        "",
    ))
    .await;
    let admin = proxy.admin_url("");
    let (code, out, err) = ctl(
        &admin,
        &["--json", "drain", "green", "--timeout", "0s", "--wait"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["name"], "green", "{v}");
    assert!(
        err.contains(&format!("green {}: drained", green2.addr)),
        "{err}"
    );
    let (_, status) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    let states: Vec<_> = status["pools"][1]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["state"].clone())
        .collect();
    assert_eq!(states, [json!("drained"), json!("drained")]);

    let addr = green1.addr.to_string();
    let (code, out, err) = ctl(&admin, &["remove", "green", &addr]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!("green {addr}: draining, removed when done")
    );
    let addr = green2.addr.to_string();
    let (code, out, err) = ctl(&admin, &["remove", "green", &addr, "--wait"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("green {addr}: removed"));
    let (_, status) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    assert!(
        !status["pools"][1]["upstreams"].to_string().contains(&addr),
        "{status}"
    );
    proxy.stop().await;
}

/// Completions and the man page come from the same clap definitions as
/// the CLI, so they name every verb; `ctl --help` lists the exit codes.
#[test]
fn completions_man_page_and_help_name_every_verb() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(args)
            .output()
            .expect("run cutover");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let verbs = [
        "status", "split", "mirror", "rollout", "promote", "pause", "resume", "abort", "drain",
        "enable", "disable", "add", "remove", "reload", "upgrade", "health",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for verb in verbs {
            assert!(script.contains(verb), "{shell} completions miss {verb}");
        }
    }
    let man = run(&["manpage"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH cutover "),
        "{man}"
    );
    assert!(man.contains(".TH cutover-ctl "), "a page for ctl");
    for verb in verbs {
        assert!(man.contains(verb), "the man page misses {verb}");
    }
    let help = run(&["ctl", "--help"]);
    assert!(
        help.contains("2 refused by the proxy") && help.contains("4 not authorized"),
        "{help}"
    );
}

/// Every argument and flag of every command says what it is for.
#[test]
fn every_argument_has_help_text() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(args)
            .arg("--help")
            .output()
            .expect("run cutover --help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut commands: Vec<Vec<&str>> = ["run", "check", "demo", "completions", "manpage", "ctl"]
        .iter()
        .map(|c| vec![*c])
        .collect();
    for verb in [
        "status", "split", "mirror", "rollout", "promote", "pause", "resume", "abort", "drain",
        "enable", "disable", "add", "remove", "reload", "upgrade", "health",
    ] {
        commands.push(vec!["ctl", verb]);
    }
    let mut bare = Vec::new();
    for command in commands {
        let text = help(&command);
        for section in ["Arguments:", "Options:"] {
            let Some(rest) = text.split(section).nth(1) else {
                continue;
            };
            // Entries start with `-` or `<`; clap puts help on the same
            // line after two spaces, or (when long) on deeper lines below.
            let lines: Vec<&str> = rest.lines().skip(1).take_while(|l| !l.is_empty()).collect();
            let entry = |l: &str| l.trim_start().starts_with(['-', '<']);
            let indent = |l: &str| l.len() - l.trim_start().len();
            for (i, line) in lines.iter().enumerate().filter(|(_, l)| entry(l)) {
                let inline = line.trim().contains("  ");
                let below = lines
                    .get(i + 1)
                    .is_some_and(|next| !entry(next) && indent(next) > indent(line));
                if !inline && !below {
                    bare.push(format!("{command:?}: {}", line.trim()));
                }
            }
        }
    }
    assert!(bare.is_empty(), "arguments without help: {bare:#?}");
}

/// `ctl audit` shows the last changes with who made them; `ctl mirror`
/// with a malformed target is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_shows_the_last_changes_and_mirror_checks_its_argument() {
    let (_blue, _green, proxy) = blue_green().await;
    let admin = proxy.admin_url("");
    let (code, _, err) = ctl(&admin, &["split", "app", "blue=50", "green=50"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = ctl(&admin, &["split", "nope", "blue=1"]).await;
    assert_eq!(code, Some(2), "{err}");
    let (code, out, err) = ctl(&admin, &["audit", "--limit", "2"]).await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("set_split app  ok"), "{out}");
    assert!(
        lines[1].contains("set_split nope  refused: no route"),
        "{out}"
    );
    let (_, out, _) = ctl(&admin, &["--json", "audit"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(2), "{v}");

    let (code, out, err) = ctl(&admin, &["mirror", "app", "green"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("write POOL=PERCENT"), "{err}");
    proxy.stop().await;
}
