//! The docs stay true to the code: every metric the code names is in the
//! metrics table of docs/admin-api.md and nothing else is; no Markdown
//! table is cut in two by a blank line (which ends it where a reader
//! expects it to go on).

use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `"cutover_…"` string literals of the files that name metrics.
fn names_in_code() -> BTreeSet<String> {
    let text = ["src/telemetry.rs", "src/tls.rs", "src/access_log.rs"]
        .map(read)
        .join("\n");
    text.match_indices("\"cutover_")
        .filter_map(|(at, _)| text[at + 1..].split('"').next())
        .filter(|s| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_metrics_table_lists_exactly_the_metrics_the_code_names() {
    let code = names_in_code();
    assert!(code.len() >= 10, "{code:?}");
    let docs = read("docs/admin-api.md");
    let table: BTreeSet<String> = docs
        .split("## Metrics")
        .nth(1)
        .expect("a Metrics section")
        .lines()
        .filter_map(|l| l.strip_prefix("| `cutover_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("cutover_{n}"))
        .collect();
    let missing: Vec<_> = code.difference(&table).collect();
    let stale: Vec<_> = table.difference(&code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "not in docs/admin-api.md: {missing:?}; in the table but not the code: {stale:?}"
    );
    // And SPEC.md's metric names are among them.
    for spec in [
        "cutover_requests_total",
        "cutover_request_duration_seconds",
        "cutover_upstream_in_flight",
        "cutover_upstream_healthy",
        "cutover_route_weight",
        "cutover_rollout_step",
        "cutover_rollout_state",
        "cutover_mirror_total",
    ] {
        assert!(code.contains(spec), "{spec}");
    }
}

#[test]
fn no_table_is_cut_by_a_blank_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![dir.join("README.md")];
    for entry in std::fs::read_dir(dir.join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut cuts = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for i in 1..lines.len().saturating_sub(2) {
            let (before, blank, after, next) = (lines[i - 1], lines[i], lines[i + 1], lines[i + 2]);
            // A row, a blank line, then a row that is not a new table's head.
            if before.starts_with('|')
                && blank.trim().is_empty()
                && after.starts_with('|')
                && !next.starts_with("|--")
            {
                cuts.push(format!("{}:{}", path.display(), i + 1));
            }
        }
    }
    assert!(cuts.is_empty(), "tables cut by a blank line: {cuts:?}");
}

/// Every verb `cutover ctl --help` lists has a row in the verb table of
/// docs/admin-api.md.
#[test]
fn every_ctl_verb_is_documented() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["ctl", "--help"])
        .output()
        .expect("run cutover ctl --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let verbs: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a Commands section")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .collect();
    assert!(verbs.len() >= 15, "{verbs:?}");
    let docs = read("docs/admin-api.md");
    let section = docs
        .split("## `cutover ctl`")
        .nth(1)
        .expect("a ctl section");
    for verb in verbs {
        assert!(
            section.contains(&format!("`{verb}`")) || section.contains(&format!("`{verb} ")),
            "ctl {verb} is not in docs/admin-api.md's verb table"
        );
    }
}

/// The body of the first ```sh block after `heading` in a doc.
fn script_after(doc: &str, heading: &str) -> String {
    let text = read(doc);
    let after = text
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("{doc}: no {heading:?}"));
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("{doc}: no sh block after {heading:?}"));
    block.to_string()
}

/// docs/rollouts.md's CodeDeploy guard, run as written (the admin address
/// swapped for the test proxy's, `cutover` on PATH) against a real proxy:
/// it fails while green has an upstream down, though blue is healthy, and
/// passes once every green upstream is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codedeploy_guard_in_the_docs_guards() {
    use crate::support::*;
    let script = script_after("docs/rollouts.md", "`scripts/before_allow_traffic.sh`");
    assert!(script.contains("http://10.0.0.5:9090"), "{script}");
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let down = free_port();
    let health = "health = { path = \"/\", interval = \"200ms\", timeout = \"200ms\", rise = 1, fall = 1 }\n";
    let config = split_config(
        &[
            ("blue", 100, &[blue.addr]),
            ("green", 0, &[green.addr, down]),
        ],
        "",
    )
    .replace("[pool.green]\n", &format!("[pool.green]\n{health}"));
    let proxy = start_proxy(&config).await;
    let admin = proxy.admin_url("");
    let admin = admin.trim_end_matches('/').to_string();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cutover"))
        .parent()
        .unwrap()
        .to_path_buf();
    let run = |script: String| {
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh")
                .args(["-c", &script])
                .env("PATH", path)
                .output()
                .unwrap()
        })
    };
    let here = script.replace("http://10.0.0.5:9090", &admin);
    let out = run(here.clone()).await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(
        out.status.code(),
        Some(0),
        "green has a dead upstream: {said}"
    );
    assert!(said.contains("1 of 2 upstreams healthy"), "{said}");

    // The dead upstream removed: every green upstream is healthy.
    let (status, v) = admin_call(
        "DELETE",
        &proxy.admin_url(&format!("/api/v1/pools/green/upstreams/{down}")),
        None,
        None,
    )
    .await;
    assert!(status == 200 || status == 202, "{v}");
    wait_until("green's dead upstream is gone", || async {
        let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        v["pools"][1]["upstreams"].as_array().map(Vec::len) == Some(1)
            && v["pools"][1]["upstreams"][0]["state"] == "healthy"
    })
    .await;
    let out = run(here).await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.stop().await;
}
