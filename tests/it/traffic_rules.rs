//! Routes chosen by header, cookie and query matchers, through the real
//! listener over HTTP/1.1 and HTTP/2: exact values, presence, regexes,
//! precedence (path prefix, then host, then header and cookie matchers,
//! then query matchers, then the file's order) and falling
//! through to the plain route when nothing matches.

use crate::support::*;

/// One upstream per route, each answering its route's name.
struct Fleet {
    upstreams: Vec<TestUpstream>,
}

const ROUTES: [&str; 7] = ["app", "canary", "vip", "beta", "preview", "api", "internal"];

impl Fleet {
    async fn start() -> Fleet {
        let mut upstreams = Vec::new();
        for name in ROUTES {
            upstreams.push(TestUpstream::start(name).await);
        }
        Fleet { upstreams }
    }

    /// `canary` and `vip` match any host, `beta` names one, so they never
    /// tie; `preview` lives under `/page`.
    fn config(&self) -> String {
        let mut text = String::from(
            r#"
[[route]]
name = "app"
split = { app = 1 }
[[route]]
name = "canary"
headers = { "X-Canary" = "always" }
split = { canary = 1 }
[[route]]
name = "vip"
headers = { "x-canary" = "always" }
cookies = { beta = { present = true } }
split = { vip = 1 }
[[route]]
name = "beta"
hosts = ["app.test"]
cookies = { beta = "1" }
split = { beta = 1 }
[[route]]
name = "preview"
path_prefix = "/page"
query = { preview = { regex = "^(1|yes)$" } }
split = { preview = 1 }
[[route]]
name = "api"
path_prefix = "/api"
split = { api = 1 }
[[route]]
name = "internal"
hosts = ["internal.test"]
split = { internal = 1 }
"#,
        );
        for (name, up) in ROUTES.iter().zip(&self.upstreams) {
            text.push_str(&format!(
                "[pool.{name}]\nupstreams = [{{ addr = \"{}\" }}]\n",
                up.addr
            ));
        }
        text
    }
}

/// A request (path, headers) and the route that must answer it.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

async fn route_of(client: &HttpClient, base: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = http::Request::get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Default::default()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {path} {headers:?}: {e:?}"));
    assert_eq!(resp.status(), 200, "GET {path} {headers:?}");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_cookie_and_query_rules_pick_the_most_specific_route() {
    let fleet = Fleet::start().await;
    let proxy = start_proxy(&fleet.config()).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    let cases: &[Case] = &[
        ("/", &[], "app"),
        ("/", &[("x-canary", "always")], "canary"),
        // Exact means exact: another value or case falls through.
        ("/", &[("x-canary", "never")], "app"),
        ("/", &[("x-canary", "Always")], "app"),
        ("/page?preview=yes", &[], "preview"),
        // Form-decoded before matching.
        ("/page?a=b&preview=%31", &[], "preview"),
        ("/page?preview=no", &[], "app"),
        ("/page?preview", &[], "app"),
        ("/other?preview=yes", &[], "app"),
        // Two matchers beat one.
        (
            "/",
            &[("x-canary", "always"), ("cookie", "beta=anything")],
            "vip",
        ),
        // A longer path prefix beats matchers.
        ("/api/users", &[("x-canary", "always")], "api"),
    ];
    // Host-named routes, over HTTP/1.1 (an HTTP/2 Host must equal
    // :authority, which this client takes from the URL).
    let host_cases: &[Case] = &[
        (
            "/",
            &[("host", "app.test"), ("cookie", "theme=dark; beta=1")],
            "beta",
        ),
        ("/", &[("cookie", "beta=1")], "app"),
        ("/", &[("host", "app.test"), ("cookie", "beta=2")], "app"),
        ("/", &[("host", "app.test"), ("cookie", "notbeta=1")], "app"),
        // A named host beats more matchers.
        (
            "/",
            &[
                ("host", "app.test"),
                ("x-canary", "always"),
                ("cookie", "beta=1"),
            ],
            "beta",
        ),
        (
            "/",
            &[("host", "internal.test"), ("x-canary", "always")],
            "internal",
        ),
    ];
    let h1 = http1_client();
    let h2 = http2_client();
    let runs = [
        ("HTTP/1.1", &h1, cases),
        ("HTTP/2", &h2, cases),
        ("HTTP/1.1", &h1, host_cases),
    ];
    for (name, client, cases) in runs {
        for (path, headers, want) in cases {
            assert_eq!(
                route_of(client, &base, path, headers).await,
                *want,
                "{name}: GET {path} {headers:?}"
            );
        }
    }
    proxy.stop().await;
}

/// HTTP/2 clients may send each cookie in a header of its own (RFC 9113
/// §8.2.3); the cookie matcher looks at all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_rules_see_every_cookie_header_of_an_http2_request() {
    let fleet = Fleet::start().await;
    let proxy = start_proxy(&fleet.config()).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    let client = http2_client();
    let route = route_of(
        &client,
        &base,
        "/",
        &[
            ("cookie", "theme=dark"),
            ("x-canary", "always"),
            ("cookie", "beta=1"),
        ],
    )
    .await;
    assert_eq!(route, "vip");
    proxy.stop().await;
}

/// The most common way to let testers in: independent opt-in rules on
/// `/`, one by header, one by cookie, one by query parameter. They are
/// accepted (`cutover check` exits 0 and notes the pair of equal
/// precedence), and the order is total: header and cookie matchers rank
/// above query ones, the file's order settles the rest. A reload to such
/// a file takes effect like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_opt_in_rules_are_accepted_and_ranked() {
    let fleet = Fleet::start().await;
    let (proxy, path) = start_proxy_from_file(&fleet.config()).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    // Without its host, `beta` (a cookie) ranks with `canary` (a header),
    // and so does `vip` without its cookie; `preview` moves to `/` with its
    // query matcher.
    let opt_in = fleet
        .config()
        .replace("hosts = [\"app.test\"]\n", "")
        .replace("cookies = { beta = { present = true } }\n", "")
        .replace("path_prefix = \"/page\"\n", "");
    std::fs::write(&path, complete_config(&opt_in, proxy.state_dir.path())).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("note: routes \"canary\" and \"beta\" can match the same request"),
        "{stderr}"
    );
    let (status, v) = admin_call("POST", &proxy.admin_url("/api/v1/reload"), None, None).await;
    assert_eq!(status, 200, "{v}");
    let client = http1_client();
    let cases: &[Case] = &[
        ("/", &[("x-canary", "always")], "canary"),
        ("/", &[("cookie", "beta=1")], "beta"),
        ("/?preview=1", &[], "preview"),
        // Header and cookie, one matcher each: earlier in the file wins.
        (
            "/",
            &[("x-canary", "always"), ("cookie", "beta=1")],
            "canary",
        ),
        // Header and cookie matchers rank above a query parameter.
        ("/?preview=1", &[("cookie", "beta=1")], "beta"),
        ("/?preview=1", &[("x-canary", "always")], "canary"),
        ("/", &[], "app"),
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            route_of(&client, &base, path, headers).await,
            *want,
            "GET {path} {headers:?}"
        );
    }
    proxy.stop().await;
}
