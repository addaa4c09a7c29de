//! Upstreams spoken to as real fleets need: HTTP/2 in cleartext (h2c,
//! prior knowledge) over one multiplexed connection, TLS with a CA the test
//! makes (HTTP/1.1, or HTTP/2 chosen by ALPN), and a wrong certificate
//! refused with a 502 — never a silent fall back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::*;
use crate::tls::Ca;

fn one_pool(addr: SocketAddr, pool_settings: &str) -> String {
    format!(
        "[[route]]\nname = \"app\"\nsplit = {{ app = 1 }}\n[pool.app]\nupstreams = [{{ addr = \"{addr}\" }}]\n{pool_settings}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_carries_concurrent_requests_on_one_connection() {
    let up = TestUpstream::start("app").await;
    let proxy = start_proxy(&one_pool(up.addr, "protocol = \"h2\"")).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    let client = http1_client();
    assert_eq!(
        get(&client, &format!("{base}/version")).await,
        (200, "HTTP/2.0\n".into())
    );
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{base}/slow?ms=5");
            tokio::spawn(async move {
                let client = http1_client();
                for _ in 0..25 {
                    assert_eq!(get(&client, &url).await.0, 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.connections(), 1, "one multiplexed connection");
    proxy.stop().await;
}

/// Past 100 streams open on its connection, an upstream gets a second
/// HTTP/2 connection rather than a queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_gets_another_connection_past_100_open_streams() {
    let up = TestUpstream::start("app").await;
    let proxy = start_proxy(&one_pool(up.addr, "protocol = \"h2\"")).await;
    let url = format!("http://{}/slow?ms=1500", proxy.addrs()[0]);
    let tasks: Vec<_> = (0..150)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&http1_client(), &url).await.0 })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(up.connections(), 2, "150 streams: two connections");
    proxy.stop().await;
}

/// A TLS upstream (rustls, ALPN h2 and http/1.1) answering each request
/// with the HTTP version it came in.
struct TlsUpstream {
    addr: SocketAddr,
    _task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    async fn start(dir: &Path, ca: &Ca) -> TlsUpstream {
        Self::start_as(dir, ca, "localhost").await
    }

    /// With a certificate for `name` alone.
    async fn start_as(dir: &Path, ca: &Ca, name: &str) -> TlsUpstream {
        ca.issue(dir, name);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service =
                        service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                            let body = format!("{:?}\n", req.version());
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, _task: task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstreams_verify_the_certificate_and_choose_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_path = dir.path().join("ca.pem");
    ca.write_ca(&ca_path);
    let up = TlsUpstream::start(dir.path(), &ca).await;
    let ca_file = ca_path.display();
    let client = http1_client();
    for (settings, want) in [
        (
            format!("tls = {{ ca = \"{ca_file}\", sni = \"localhost\" }}"),
            (200, "HTTP/1.1\n"),
        ),
        (
            format!("tls = {{ ca = \"{ca_file}\", sni = \"localhost\" }}\nprotocol = \"auto\""),
            (200, "HTTP/2.0\n"),
        ),
        (
            format!("tls = {{ ca = \"{ca_file}\", sni = \"localhost\" }}\nprotocol = \"h2\""),
            (200, "HTTP/2.0\n"),
        ),
        // The system's roots do not know the test CA; a name the
        // certificate does not carry fails with the right CA too.
        ("tls = true".to_string(), (502, "")),
        (
            format!("tls = {{ ca = \"{ca_file}\", sni = \"other.test\" }}"),
            (502, ""),
        ),
        // Explicitly insecure: anything goes (and a warning is logged).
        (
            "tls = { insecure_skip_verify = true }".to_string(),
            (200, "HTTP/1.1\n"),
        ),
    ] {
        let proxy = start_proxy(&one_pool(up.addr, &settings)).await;
        let (status, body) = get(&client, &format!("http://{}/", proxy.addrs()[0])).await;
        assert_eq!(status, want.0, "{settings}: {body}");
        if status == 200 {
            assert_eq!(body, want.1, "{settings}");
        } else {
            assert!(body.contains("could not be reached"), "{settings}: {body}");
        }
        proxy.stop().await;
    }
}

/// An upstream given by DNS name is verified for that name (and gets it
/// as SNI), as nginx's proxy_ssl_name does by default: the operator wrote
/// `app.internal:PORT`, its certificate is for `app.internal`, not for the
/// address it resolved to. Requests and health checks alike; `sni` still
/// overrides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_named_tls_upstream_is_verified_for_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_path = dir.path().join("ca.pem");
    ca.write_ca(&ca_path);
    let up = TlsUpstream::start_as(dir.path(), &ca, "app.internal").await;
    let addr = up.addr;
    let resolver: cutover::dns::Resolver = Arc::new(move |host: String, _port| {
        Box::pin(async move {
            match host.as_str() {
                "app.internal" => Ok(vec![addr]),
                other => Err(format!("{other}: NXDOMAIN")),
            }
        })
    });
    let named = |settings: &str| {
        format!(
            "[[route]]\nname = \"app\"\nsplit = {{ app = 1 }}\n[pool.app]\nupstreams = [{{ addr = \"app.internal:{}\" }}]\n{settings}\n",
            addr.port()
        )
    };
    let ca_file = ca_path.display();
    let client = http1_client();
    for (settings, want) in [
        (format!("tls = {{ ca = \"{ca_file}\" }}"), 200),
        (
            format!(
                "tls = {{ ca = \"{ca_file}\" }}\nprotocol = \"auto\"\nhealth = {{ path = \"/\", interval = \"500ms\", timeout = \"500ms\" }}"
            ),
            200,
        ),
        (
            format!("tls = {{ ca = \"{ca_file}\", sni = \"other.test\" }}"),
            502,
        ),
    ] {
        let proxy = start_proxy_with_resolver(&named(&settings), Arc::clone(&resolver)).await;
        if settings.contains("health") {
            wait_until("healthy over TLS, checked for the name", || async {
                let (_, v) =
                    admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
                v["pools"][0]["upstreams"][0]["health"] == "healthy"
            })
            .await;
        }
        let (status, body) = get(&client, &format!("http://{}/", proxy.addrs()[0])).await;
        assert_eq!(status, want, "{settings}: {body}");
        proxy.stop().await;
    }
}

/// Health checks speak to a TLS pool the way requests do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_use_the_pool_s_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_path = dir.path().join("ca.pem");
    ca.write_ca(&ca_path);
    let up = TlsUpstream::start(dir.path(), &ca).await;
    let settings = format!(
        "tls = {{ ca = \"{}\", sni = \"localhost\" }}\nprotocol = \"auto\"\nhealth = {{ path = \"/\", interval = \"500ms\", timeout = \"500ms\" }}",
        ca_path.display()
    );
    let proxy = start_proxy(&one_pool(up.addr, &settings)).await;
    wait_until("healthy over TLS", || async {
        let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        v["pools"][0]["upstreams"][0]["health"] == "healthy"
    })
    .await;
    proxy.stop().await;
}

/// A pool's TLS files are checked with the rest of the config: a missing
/// CA file is a problem naming the pool, and the proxy does not start.
#[test]
fn check_names_a_missing_ca_file() {
    let out = check_config(
        &one_pool(
            "127.0.0.1:1".parse().unwrap(),
            "tls = { ca = \"missing-ca.pem\" }\nprotocol = \"auto\"",
        ),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pool.app.tls: ") && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
}

/// An h2c upstream whose connections can be told to go away (GOAWAY, then
/// close once their streams finish), as a restarting server does.
struct GoingAway {
    addr: SocketAddr,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    away: Arc<tokio::sync::Notify>,
    _task: tokio::task::JoinHandle<()>,
}

impl GoingAway {
    async fn start() -> GoingAway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let away = Arc::new(tokio::sync::Notify::new());
        let (h, a) = (Arc::clone(&hits), Arc::clone(&away));
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    // Going away: no new connections either.
                    _ = a.notified() => break,
                };
                let Ok((stream, _)) = accepted else { break };
                let (h, a) = (Arc::clone(&h), Arc::clone(&a));
                tokio::spawn(async move {
                    let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok\n")),
                            ))
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = a.notified() => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
            }
        });
        GoingAway {
            addr,
            hits,
            away,
            _task: task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every connection sends GOAWAY; the listener closes.
    fn go_away(&self) {
        self.away.notify_waiters();
    }
}

/// An h2 upstream that goes away (GOAWAY) under load: requests it did not
/// process go to the other upstream, and none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_going_away_fails_no_request() {
    let a = GoingAway::start().await;
    let b = GoingAway::start().await;
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ app = 1 }}\n[pool.app]\nprotocol = \"h2\"\nupstreams = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
        a.addr, b.addr
    );
    let proxy = start_proxy(&config).await;
    let run = load(format!("http://{}/", proxy.addrs()[0]), 8);
    wait_until("both upstreams serve", || async {
        a.hits() > 200 && b.hits() > 200
    })
    .await;
    a.go_away();
    let after = b.hits();
    wait_until("b carries on", || async { b.hits() > after + 500 }).await;
    let (sent, failed) = run.finish().await;
    assert!(sent > 500, "{sent}");
    assert_eq!(failed, 0, "requests failed when an upstream went away");
    proxy.stop().await;
}

/// A drain closes an HTTP/2 upstream's connection once its streams are
/// done (the pool is replaced; hyper's client connection ends with its
/// last sender): the upstream sees it close, not an idle one kept open
/// until `upstream_idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_an_h2_upstreams_connection() {
    let up = TestUpstream::start("app").await;
    let proxy = start_proxy(&one_pool(up.addr, "protocol = \"h2\"")).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    assert_eq!(
        get(&http1_client(), &format!("{base}/version")).await.0,
        200
    );
    assert_eq!(up.open_connections(), 1);
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url(&format!("/api/v1/pools/app/upstreams/{}/drain", up.addr)),
        Some(serde_json::json!({"timeout": "30s"})),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    wait_until("the upstream's HTTP/2 connection closes", || async {
        up.open_connections() == 0
    })
    .await;
    proxy.stop().await;
}
