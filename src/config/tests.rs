use super::*;

const GOOD: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"

[admin]
bind = "127.0.0.1:9090"

[state]
dir = "/tmp/cutover"

[proxy]
connect_timeout = "250ms"
retries = 1

[[route]]
name = "app"
hosts = ["App.Example.com", "*.example.org"]
path_prefix = "/"
split = { blue = 70, green = 30 }

[pool.blue]
upstreams = [ { addr = "127.0.0.1:9001", weight = 2 }, { addr = "127.0.0.1:9003" } ]

[pool.green]
upstreams = [ { addr = "127.0.0.1:9002" } ]
"#;

fn problems(text: &str) -> Vec<String> {
    Config::parse("f.toml", text)
        .expect_err("config should be rejected")
        .problems
}

#[test]
fn good_file_parses() {
    let c = Config::parse("f.toml", GOOD).expect("valid");
    assert_eq!(c.listeners[0].bind, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.routes[0].hosts, vec!["app.example.com", "*.example.org"]);
    assert_eq!(
        c.routes[0].split,
        vec![("blue".to_string(), 70), ("green".to_string(), 30)]
    );
    assert_eq!(c.pool("blue").unwrap().upstreams[0].weight, 2);
    assert_eq!(c.pool("blue").unwrap().upstreams[1].weight, 1);
    assert_eq!(c.proxy.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.proxy.retries, 1);
    assert_eq!(c.proxy.idle_timeout, ProxySettings::default().idle_timeout);
    assert_eq!(
        c.summary(),
        "1 listener(s), 1 route(s), 2 pool(s), 3 upstream(s)"
    );
}

#[test]
fn every_problem_is_reported_with_line_col_and_key() {
    let text = GOOD
        .replace("retries = 1", "retries = 1\nbogus = true")
        .replace("weight = 2", "weight = -2")
        .replace("green = 30", "green = 30, red = 1")
        .replace("\"250ms\"", "\"soon\"");
    let p = problems(&text);
    assert_eq!(p.len(), 4, "{p:#?}");
    assert!(
        p[0].starts_with("f.toml:12:19: proxy.connect_timeout: invalid duration"),
        "{p:#?}"
    );
    assert_eq!(p[1], "f.toml:14:1: proxy.bogus: unknown key");
    assert!(
        p[2].starts_with("f.toml:20:34: route[0].split.red: no pool named \"red\""),
        "{p:#?}"
    );
    assert!(
        p[3].starts_with("f.toml:23:51: pool.blue.upstreams[0].weight: must be an integer from 0"),
        "{p:#?}"
    );
}

#[test]
fn zero_weights_and_duplicates_are_errors() {
    let text = GOOD
        .replace("blue = 70, green = 30", "blue = 0, green = 0")
        .replace("127.0.0.1:9003", "127.0.0.1:9001");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|l| l.contains("route[0].split: every pool has weight 0")),
        "{p:#?}"
    );
    assert!(p.iter().any(|l| l.contains("listed twice")), "{p:#?}");
}

#[test]
fn duplicate_route_names_and_same_match_are_errors() {
    let text = format!(
        "{GOOD}\n[[route]]\nname = \"app\"\nsplit = {{ blue = 1 }}\n[[route]]\nname = \"other\"\nhosts = [\"app.example.com\"]\nsplit = {{ blue = 1 }}\n"
    );
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|l| l.contains("route[1].name: route name \"app\" is used twice")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("route[2]: route \"other\" matches the same hosts")),
        "{p:#?}"
    );
}

#[test]
fn syntax_error_has_position() {
    let p = problems("[[listener]]\nbind = \n");
    assert!(p[0].starts_with("f.toml:2:"), "{p:#?}");
}

#[test]
fn non_loopback_admin_needs_token() {
    let p = problems(&GOOD.replace("bind = \"127.0.0.1:9090\"", "bind = \"0.0.0.0:9090\""));
    assert!(
        p[0].contains("admin.bind: 0.0.0.0:9090 is not a loopback address"),
        "{p:#?}"
    );
    let ok = GOOD.replace(
        "bind = \"127.0.0.1:9090\"",
        "bind = \"0.0.0.0:9090\"\ntoken_file = \"/etc/cutover/admin.token\"",
    );
    assert!(Config::parse("f.toml", &ok).is_ok());
}

#[test]
fn missing_sections_are_named() {
    let p = problems("[pool.a]\nupstreams = []\n");
    assert!(
        p.iter()
            .any(|l| l.contains("listener: at least one [[listener]]")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("route: at least one [[route]]")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("pool.a.upstreams: a pool needs at least one upstream")),
        "{p:#?}"
    );
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é\nx", 3), (2, 1));
    assert_eq!(line_col("ab", 99), (1, 3));
}
