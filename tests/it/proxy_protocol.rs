//! The PROXY protocol behind a real HAProxy in `mode tcp` (`send-proxy-v2`
//! and v1 `send-proxy`): the client's address from the header is the one
//! the upstream sees in `X-Forwarded-For`, on both fronts; a header from
//! an untrusted peer, a missing, truncated, malformed or oversized one
//! from a trusted peer: closed unread and counted.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::nginx::{Nginx, http_block};
use crate::support::*;

/// HAProxy forwarding TCP from `listen` to `to`, sending a PROXY header
/// (`send-proxy-v2` or `send-proxy`); stopped by PID on drop.
struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(listen: SocketAddr, to: SocketAddr, send: &str) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend edge\n  bind {listen}\n  default_backend cutover\n\
             backend cutover\n  server c1 {to} {send}\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        Haproxy { child, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to `to` from 127.0.0.2 (another client than the
/// balancer, which connects from 127.0.0.1), sending `bytes`; what comes
/// back until the server closes.
async fn from_127_0_0_2(to: SocketAddr, bytes: &[u8]) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `bytes` from 127.0.0.1 (a trusted peer); what comes back.
async fn trusted(to: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(to).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The `x-forwarded-for` the upstream saw (its `/headers` answer).
fn forwarded_for(answer: &str) -> Option<String> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("x-forwarded-for: "))
        .map(str::to_string)
}

async fn refused(admin: &str, reason: &str) -> f64 {
    let (_, text) = admin_call("GET", &format!("{admin}/metrics"), None, None).await;
    text.as_str()
        .unwrap_or("")
        .lines()
        .filter(|l| l.starts_with("cutover_proxy_protocol_refused_total{"))
        .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const GET: &[u8] = b"GET /headers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
const CHUNKED: &[u8] = b"POST /headers HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_the_client_address_is_the_header_s_and_bad_headers_are_refused() {
    if !tool_present("haproxy", "haproxy") {
        return;
    }
    let up = TestUpstream::start("up").await;
    let bind = free_port();
    let proxy = start_proxy(&split_config(
        &[("p", 1, &[up.addr])],
        &format!(
            "[[listener]]\nbind = \"{bind}\"\nproxy_protocol = \"any\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
        ),
    ))
    .await;
    let admin = format!("http://{}", proxy.admin_addr());
    let target = proxy.addrs()[0];
    for send in ["send-proxy-v2", "send-proxy"] {
        let edge = free_port();
        let _haproxy = Haproxy::start(edge, target, send);
        wait_until("haproxy listening", || async {
            TcpStream::connect(edge).await.is_ok()
        })
        .await;
        // Both fronts: the direct path and hyper's.
        for request in [GET, CHUNKED] {
            let answer = from_127_0_0_2(edge, request).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{send}: {answer}");
            assert_eq!(
                forwarded_for(&answer).as_deref(),
                Some("127.0.0.2"),
                "{send}: {answer}"
            );
        }
    }

    // Straight from an untrusted client: served as itself…
    let answer = from_127_0_0_2(target, GET).await;
    assert_eq!(
        forwarded_for(&answer).as_deref(),
        Some("127.0.0.2"),
        "{answer}"
    );
    // …but a header from it is refused, never read as HTTP.
    let answer = from_127_0_0_2(
        target,
        b"PROXY TCP4 10.9.9.9 127.0.0.1 1234 80\r\nGET /headers HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(answer, "", "an untrusted header was answered");
    // From a trusted peer: no header, a v1 line without CRLF within 107
    // bytes, a v2 header claiming more than it may, garbage.
    let v2_oversized = {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
        h.extend_from_slice(&u16::MAX.to_be_bytes());
        h
    };
    for (bytes, _) in [
        (GET.to_vec(), "missing"),
        (
            format!("PROXY TCP4 {}", "1".repeat(120)).into_bytes(),
            "malformed",
        ),
        (b"PROXY TCP4 nonsense here\r\n".to_vec(), "malformed"),
        (v2_oversized, "oversized"),
    ] {
        let answer = trusted(target, &bytes).await;
        assert_eq!(
            answer,
            "",
            "{:?} was answered",
            String::from_utf8_lossy(&bytes)
        );
    }
    for reason in ["untrusted", "missing", "malformed", "oversized"] {
        let want = if reason == "malformed" { 2.0 } else { 1.0 };
        wait_until(&format!("{reason} counted"), || async {
            refused(&admin, reason).await >= want
        })
        .await;
    }
    // A v1 header sent by hand, then keep-alive requests on the connection.
    let mut stream = TcpStream::connect(target).await.unwrap();
    stream
        .write_all(b"PROXY TCP6 2001:db8::7 ::1 4000 80\r\nGET /headers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(
        forwarded_for(&answer).as_deref(),
        Some("2001:db8::7"),
        "{answer}"
    );
    proxy.stop().await;
}

#[test]
fn proxy_protocol_needs_trusted_proxies_and_a_known_version() {
    for (listener, named) in [
        (
            "proxy_protocol = \"v2\"\n",
            "listener[0].proxy_protocol: needs trusted_proxies",
        ),
        (
            "proxy_protocol = \"v3\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
            "listener[0].proxy_protocol: expected",
        ),
        (
            "proxy_protocol = \"v1\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "listener[0].trusted_proxies[0]: ",
        ),
        (
            "trusted_proxies = [\"10.0.0.1\"]\n",
            "listener[0].trusted_proxies: trusted_proxies without proxy_protocol",
        ),
    ] {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n{listener}[[route]]\nname = \"a\"\nsplit = {{ p = 1 }}\n[pool.p]\nupstreams = [{{ addr = \"127.0.0.1:9\" }}]\n"
        );
        let out = check_config(&text, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{listener}: {stderr}");
    }
}

/// On a TLS listener the header comes before the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_takes_the_header_before_the_handshake() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let up = TestUpstream::start("up").await;
    let (ca, certs, listener) = crate::tls::app_test_listener("127.0.0.1:0");
    let listener =
        format!("{listener}proxy_protocol = \"v1\"\ntrusted_proxies = [\"127.0.0.1\"]\n");
    let proxy = start_proxy(&format!(
        "{listener}{}",
        split_config(&[("p", 1, &[up.addr])], "")
    ))
    .await;
    ca.write_ca(&certs.path().join("ca.pem"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.path().join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = TcpStream::connect(proxy.addrs()[0]).await.unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.44 127.0.0.1 5555 443\r\n")
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut tls = connector
        .connect(ServerName::try_from("app.test").unwrap(), tcp)
        .await
        .expect("handshake after the header");
    tls.write_all(GET).await.unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    assert_eq!(
        forwarded_for(&answer).as_deref(),
        Some("192.0.2.44"),
        "{answer}"
    );
    proxy.stop().await;
}

/// A reload swaps a kept listener's PROXY protocol settings for new
/// connections: turned off, a trusted peer's plain request is served;
/// turned on again, it is refused without a header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_proxy_protocol_off_and_on() {
    let up = TestUpstream::start("up").await;
    let bind = free_port();
    let config = |pp: &str| {
        split_config(
            &[("p", 1, &[up.addr])],
            &format!("[[listener]]\nbind = \"{bind}\"\n{pp}"),
        )
    };
    let on = "proxy_protocol = \"v1\"\ntrusted_proxies = [\"127.0.0.1\"]\n";
    let (proxy, path) = start_proxy_from_file(&config(on)).await;
    let target = proxy.addrs()[0];
    assert_eq!(trusted(target, GET).await, "", "served without a header");
    let reload = |text: String| {
        let (path, url) = (path.clone(), proxy.admin_url("/api/v1/reload"));
        let state = proxy.state_dir.path().to_path_buf();
        async move {
            std::fs::write(&path, complete_config(&text, &state)).unwrap();
            let (s, v) = admin_call("POST", &url, None, None).await;
            assert_eq!(s, 200, "{v}");
        }
    };
    reload(config("")).await;
    let answer = trusted(target, GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    reload(config(on)).await;
    assert_eq!(trusted(target, GET).await, "", "served without a header");
    proxy.stop().await;
}

/// The stream module's file in Debian's `libnginx-mod-stream`.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn nginx_with_stream() -> bool {
    let nginx = tool_present("nginx", "nginx-light");
    let stream = std::path::Path::new(STREAM_MODULE).exists();
    if !stream {
        assert!(
            std::env::var("CI").is_err(),
            "{STREAM_MODULE} missing (apt-get install libnginx-mod-stream)"
        );
        eprintln!("skipped: {STREAM_MODULE} missing (apt-get install libnginx-mod-stream)");
    }
    nginx && stream
}

/// nginx's `stream` proxy with `proxy_protocol on` (a second sender
/// beside HAProxy): the client's address reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_nginx_stream_proxy_the_client_address_is_the_header_s() {
    if !nginx_with_stream() {
        return;
    }
    let up = TestUpstream::start("up").await;
    let bind = free_port();
    let proxy = start_proxy(&split_config(
        &[("p", 1, &[up.addr])],
        &format!(
            "[[listener]]\nbind = \"{bind}\"\nproxy_protocol = \"v1\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
        ),
    ))
    .await;
    let edge = free_port();
    let target = proxy.addrs()[0];
    let _nginx = Nginx::start(|_| {
        format!(
            "load_module {STREAM_MODULE};\nstream {{ server {{ listen {edge}; proxy_pass {target}; proxy_protocol on; }} }}"
        )
    });
    wait_until("nginx listening", || async {
        TcpStream::connect(edge).await.is_ok()
    })
    .await;
    for request in [GET, CHUNKED] {
        let answer = from_127_0_0_2(edge, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(
            forwarded_for(&answer).as_deref(),
            Some("127.0.0.2"),
            "{answer}"
        );
    }
    proxy.stop().await;
}

/// `send_proxy` toward an nginx `listen … proxy_protocol`: every request
/// reaches nginx on a connection whose header names the client (v1 and
/// v2) and the address it reached cutover on; nginx's own health checks
/// (a LOCAL / UNKNOWN header) keep the upstream healthy; a keep-alive
/// client's second request names it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_names_the_client_to_an_nginx_upstream() {
    if !tool_present("nginx", "nginx-light") {
        return;
    }
    let (v1, v2) = (free_port(), free_port());
    let server = |addr: SocketAddr| {
        format!(
            "server {{ listen {addr} proxy_protocol; \
             location = /healthz {{ return 200 \"ok\\n\"; }} \
             location / {{ return 200 \"client=$proxy_protocol_addr server=$proxy_protocol_server_addr:$proxy_protocol_server_port\\n\"; }} }}"
        )
    };
    let _nginx = Nginx::start(|dir| http_block(dir, &format!("{} {}", server(v1), server(v2))));
    wait_until("nginx listening", || async {
        TcpStream::connect(v1).await.is_ok() && TcpStream::connect(v2).await.is_ok()
    })
    .await;
    let health =
        "health = { path = \"/healthz\", interval = \"200ms\", timeout = \"200ms\", rise = 1 }";
    let proxy = start_proxy(&format!(
        "[[route]]\nname = \"one\"\npath_prefix = \"/v1\"\nsplit = {{ one = 1 }}\n\
         [[route]]\nname = \"two\"\nsplit = {{ two = 1 }}\n\
         [pool.one]\nupstreams = [{{ addr = \"{v1}\" }}]\nsend_proxy = \"v1\"\n{health}\n\
         [pool.two]\nupstreams = [{{ addr = \"{v2}\" }}]\nsend_proxy = \"v2\"\n{health}\n"
    ))
    .await;
    let target = proxy.addrs()[0];
    let admin = proxy.admin_url("/api/v1/status");
    // Health checks pass through nginx's proxy_protocol listener.
    wait_until("both upstreams healthy", || async {
        let (_, v) = admin_call("GET", &admin, None, None).await;
        let pools = v["pools"].as_array().cloned().unwrap_or_default();
        pools.len() == 2
            && pools.iter().all(|p| {
                p["upstreams"]
                    .as_array()
                    .is_some_and(|u| u.iter().all(|u| u["health"] == "healthy"))
            })
    })
    .await;
    let expected = format!("client=127.0.0.2 server=127.0.0.1:{}", target.port());
    for path in ["/v1/a", "/v2"] {
        // Two requests on one keep-alive connection, then one more: each
        // names the client.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\n\r\nGET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        let answer = from_127_0_0_2(target, request.as_bytes()).await;
        assert_eq!(answer.matches(&expected).count(), 2, "{path}: {answer}");
        let one = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let answer = from_127_0_0_2(target, one.as_bytes()).await;
        assert!(answer.contains(&expected), "{path}: {answer}");
    }
    proxy.stop().await;
    // A send_proxy pool must speak HTTP/1.1, and the version is one of two.
    let bad = format!(
        "[[route]]\nname = \"r\"\nsplit = {{ p = 1 }}\n[pool.p]\nupstreams = [{{ addr = \"{v1}\" }}]\nprotocol = \"h2\"\nsend_proxy = \"v2\"\n\
         [pool.q]\nupstreams = [{{ addr = \"{v2}\" }}]\nsend_proxy = \"v3\"\n"
    );
    let out = check_config(&bad, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "pool.p.send_proxy: needs protocol = \"http1\"",
        "pool.q.send_proxy: unknown PROXY protocol version \"v3\"",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}
