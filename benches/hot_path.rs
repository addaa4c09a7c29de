//! Micro-benchmarks of the hot path's pure parts: route match, weighted
//! pick over 2 / 10 / 100 upstreams with some ineligible, sticky cookie
//! open, and header rewriting both ways.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

// The allocator the binary uses (src/main.rs), so figures match it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use cutover::balance::sticky::StickyKey;
use cutover::config::Config;
use cutover::routing::RouteTable;

fn table(upstreams: usize) -> RouteTable {
    table_with(upstreams, "")
}

/// `extra_routes` go before the rest of the file's routes.
fn table_with(upstreams: usize, extra_routes: &str) -> RouteTable {
    let ups: Vec<String> = (0..upstreams)
        .map(|i| {
            format!(
                "{{ addr = \"127.0.0.1:{}\", weight = {} }}",
                10_000 + i,
                1 + i % 3
            )
        })
        .collect();
    let text = format!(
        r#"
[[listener]]
bind = "127.0.0.1:8080"
{extra_routes}
[[route]]
name = "api"
path_prefix = "/api"
split = {{ p = 1 }}
[[route]]
name = "app"
hosts = ["app.example.com", "*.example.org"]
split = {{ p = 9, q = 1 }}
[[route]]
name = "any"
split = {{ q = 1 }}
[pool.p]
upstreams = [{}]
[pool.q]
upstreams = [{{ addr = "127.0.0.1:9999" }}]
"#,
        ups.join(", ")
    );
    let config = Config::parse("bench", &text).expect("bench config is valid");
    let table = RouteTable::build(&config, None, &std::sync::Arc::new(StickyKey::new([7; 32])));
    // A quarter of the upstreams are out of rotation.
    if let Some(pool) = table.pool("p") {
        for u in pool.upstreams.iter().step_by(4).skip(1) {
            u.state.set_disabled(true);
        }
    }
    table
}

/// Route matching for a browser-like request: on a table without matchers
/// (the cost every route pays), on one whose more specific routes carry
/// header, cookie and query matchers the request does not meet (it falls
/// through to the same route), and for a request those matchers take.
fn route_match(c: &mut Criterion) {
    use http::{HeaderMap, HeaderValue, Uri, header};
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("app.example.com"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("Mozilla/5.0"));
    headers.insert(
        header::COOKIE,
        HeaderValue::from_static("session=abc123; theme=dark"),
    );
    let uri: Uri = "/index.html?page=2".parse().expect("uri");
    let plain = table(2);
    c.bench_function("route_match/host+path", |b| {
        b.iter(|| {
            black_box(plain.match_route(
                black_box(Some("App.Example.com:443")),
                black_box(&uri),
                black_box(&headers),
                None,
            ))
        })
    });
    let ruled = table_with(
        2,
        r#"
[[route]]
name = "canary"
hosts = ["app.example.com"]
headers = { "x-canary" = "always" }
split = { q = 1 }
[[route]]
name = "beta"
hosts = ["app.example.com"]
cookies = { beta = "1" }
query = { preview = { regex = "^(1|yes)$" } }
split = { q = 1 }
"#,
    );
    c.bench_function("route_match/host+path_past_matchers", |b| {
        b.iter(|| {
            black_box(ruled.match_route(
                black_box(Some("App.Example.com:443")),
                black_box(&uri),
                black_box(&headers),
                None,
            ))
        })
    });
    let mut flagged = headers.clone();
    flagged.insert(
        header::COOKIE,
        HeaderValue::from_static("session=abc123; beta=1"),
    );
    let preview: Uri = "/index.html?preview=yes".parse().expect("uri");
    let name = |t: &RouteTable, uri: &Uri, h: &HeaderMap| {
        t.match_route(Some("app.example.com"), uri, h, None)
            .map(|r| r.name.to_string())
    };
    assert_eq!(name(&ruled, &uri, &headers).as_deref(), Some("app"));
    assert_eq!(name(&ruled, &preview, &flagged).as_deref(), Some("beta"));
    c.bench_function("route_match/cookie+query_matchers", |b| {
        b.iter(|| {
            black_box(ruled.match_route(
                black_box(Some("App.Example.com:443")),
                black_box(&preview),
                black_box(&flagged),
                None,
            ))
        })
    });
}

fn pick(c: &mut Criterion) {
    for n in [2usize, 10, 100] {
        let t = table(n);
        let route = t.route("api").expect("route exists");
        c.bench_function(&format!("pick/{n}_upstreams"), |b| {
            b.iter(|| black_box(t.pick(route, &[])))
        });
    }
}

fn sticky(c: &mut Criterion) {
    let key = StickyKey::new([7; 32]);
    let (cookie, _) = key.seal(&key.upstream_id("p", "127.0.0.1:10000"), u64::MAX);
    c.bench_function("sticky_cookie/open", |b| {
        b.iter(|| black_box(key.open(black_box(&cookie), 0)))
    });
}

/// A browser-like request and an nginx-like response, rewritten as the
/// proxy does for every request.
fn headers(c: &mut Criterion) {
    use cutover::proxy::wire::headers::{prepare_request, prepare_response};
    use http::{HeaderMap, HeaderValue, Uri, Version, header};
    let mut request = HeaderMap::new();
    for (name, value) in [
        (header::HOST, "app.example.com"),
        (
            header::USER_AGENT,
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        ),
        (
            header::ACCEPT,
            "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
        ),
        (header::ACCEPT_ENCODING, "gzip, deflate, br"),
        (header::ACCEPT_LANGUAGE, "en-GB,en;q=0.5"),
        (header::COOKIE, "session=abc123; theme=dark"),
        (header::CONNECTION, "keep-alive"),
    ] {
        request.insert(name, HeaderValue::from_static(value));
    }
    let uri: Uri = "/index.html".parse().expect("uri");
    let ip =
        cutover::proxy::wire::headers::forwarded_for_value(std::net::IpAddr::from([192, 0, 2, 7]));
    c.bench_function("headers/prepare_request", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                prepare_request(&mut h, &uri, Version::HTTP_11, &ip, "http", false);
                h
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut response = HeaderMap::new();
    for (name, value) in [
        (header::SERVER, "nginx/1.22.1"),
        (header::DATE, "Thu, 26 Nov 2026 12:00:00 GMT"),
        (header::CONTENT_TYPE, "text/plain"),
        (header::CONTENT_LENGTH, "96"),
        (header::CONNECTION, "keep-alive"),
    ] {
        response.insert(name, HeaderValue::from_static(value));
    }
    c.bench_function("headers/prepare_response", |b| {
        b.iter_batched(
            || response.clone(),
            |mut h| {
                prepare_response(&mut h, Version::HTTP_11, false);
                h
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, route_match, pick, sticky, headers);
criterion_main!(benches);
