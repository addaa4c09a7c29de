//! TLS listeners: curl with the test CA over HTTP/1.1 and HTTP/2 (ALPN),
//! SNI picks the certificate, a replaced certificate is served after a
//! reload, and a broken one is refused while the old one keeps serving.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::*;

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Default for Ca {
    fn default() -> Self {
        Self::new()
    }
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cutover test CA");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// Writes the CA's own certificate to `path` (PEM), for a client to trust.
    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.issuer.pem()).unwrap();
    }

    /// Writes a certificate for `name` signed by this CA to DIR/name.{pem,key}.
    pub fn issue(&self, dir: &Path, name: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        // A subject unlike the CA's, or OpenSSL takes the leaf for self-signed.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }
}

/// A test CA, a certificate it issued for app.test (in the returned
/// directory), and the config of a TLS listener on `bind` serving it.
pub fn app_test_listener(bind: &str) -> (Ca, tempfile::TempDir, String) {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    ca.issue(certs.path(), "app.test");
    let d = certs.path().display();
    let listener = format!(
        "[[listener]]\nbind = \"{bind}\"\ntls = {{ cert = \"{d}/app.test.pem\", key = \"{d}/app.test.key\" }}\n"
    );
    (ca, certs, listener)
}

/// A TLS connection to `addr` for `sni`, verified against the test CA.
async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &Ca,
    sni: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_connect_alpn(addr, ca, sni, &[]).await
}

/// The same, offering `alpn` protocols.
pub async fn tls_connect_alpn(
    addr: std::net::SocketAddr,
    ca: &Ca,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    try_tls_connect_alpn(addr, ca, sni, alpn)
        .await
        .expect("handshake verifies against the test CA")
}

/// The same, the handshake's failure returned.
pub async fn try_tls_connect_alpn(
    addr: std::net::SocketAddr,
    ca: &Ca,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

/// The leaf certificate the server presents for `sni`.
async fn presented(addr: std::net::SocketAddr, ca: &Ca, sni: &str) -> CertificateDer<'static> {
    let tls = tls_connect(addr, ca, sni).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn curl_available() -> bool {
    let ok = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").is_err(), "curl must be installed in CI");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_sni_alpn_and_hot_reload() {
    let up = TestUpstream::start("up").await;
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let app = ca.issue(certs.path(), "app.test");
    let other = ca.issue(certs.path(), "other.test");
    std::fs::write(certs.path().join("ca.pem"), ca.issuer.pem()).unwrap();
    let d = certs.path().display().to_string();
    let config = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = [ {{ cert = \"{d}/app.test.pem\", key = \"{d}/app.test.key\" }}, {{ cert = \"{d}/other.test.pem\", key = \"{d}/other.test.key\" }} ]\n{}",
        split_config(&[("p", 1, &[up.addr])], "")
    );
    let (proxy, path) = start_proxy_from_file(&config).await;
    let addr = proxy.addrs()[0];

    // SNI picks the certificate; an unknown name gets the first one.
    assert_eq!(presented(addr, &ca, "app.test").await, app);
    assert_eq!(presented(addr, &ca, "other.test").await, other);

    if curl_available() {
        let port = addr.port();
        let d = d.clone();
        let curl = move |extra: &str| {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_version} %{http_code}",
                ])
                .args(["--cacert", &format!("{d}/ca.pem")])
                .args(["--resolve", &format!("app.test:{port}:127.0.0.1")])
                .arg(extra)
                .arg(format!("https://app.test:{port}/headers"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let (h1, h2) = tokio::task::spawn_blocking(move || (curl("--http1.1"), curl("--http2")))
            .await
            .unwrap();
        assert_eq!(h1, "1.1 200");
        assert_eq!(h2, "2 200", "ALPN h2");
    }
    // The upstream is told the client came over https.
    let mut tls = tls_connect(addr, &ca, "app.test").await;
    tls.write_all(b"GET /headers HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.ok();
    assert!(answer.contains("x-forwarded-proto: https"), "{answer}");

    // Replace app.test's certificate and reload: new handshakes see it.
    let renewed = ca.issue(certs.path(), "app.test");
    assert_ne!(renewed, app);
    let (s, v) = admin_call("POST", &proxy.admin_url("/api/v1/reload"), None, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(presented(addr, &ca, "app.test").await, renewed);

    // A broken certificate file: reload refused, the last good one serves on.
    std::fs::write(certs.path().join("app.test.pem"), "not a certificate").unwrap();
    let (s, v) = admin_call("POST", &proxy.admin_url("/api/v1/reload"), None, None).await;
    assert_eq!(s, 400, "{v}");
    let problem = v["problems"][0].as_str().unwrap().to_string();
    assert!(
        problem.starts_with("listener[0].tls: ") && problem.contains("app.test.pem"),
        "{problem}"
    );
    assert_eq!(presented(addr, &ca, "app.test").await, renewed);

    // `cutover check` reports the same problem.
    check_fails_naming(&path, "listener[0].tls: ");
    proxy.stop().await;
}

/// Sends one request head of about `header_bytes` and reads the answer
/// until the server closes (or the deadline).
async fn send_head<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    header_bytes: usize,
) -> String {
    let head = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(header_bytes)
    );
    // The server may answer 431 and close before taking it all.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// `max_header_bytes` holds on plain and TLS listeners alike, also for a
/// head that arrives in one piece (hyper's buffer limit alone let heads
/// of up to twice the limit through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_max_header_bytes_get_431_on_every_listener() {
    let up = TestUpstream::start("up").await;
    let (ca, _certs, tls_listener) = app_test_listener("127.0.0.2:0");
    let config = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n{tls_listener}{}",
        split_config(
            &[("p", 1, &[up.addr])],
            "[proxy]\nmax_header_bytes = 65536\n"
        )
    );
    let (proxy, _path) = start_proxy_from_file(&config).await;
    let (plain, tls) = (proxy.addrs()[0], proxy.addrs()[1]);
    for (size, status) in [(60_000, "200"), (70_000, "431"), (100_000, "431")] {
        let answer = send_head(tokio::net::TcpStream::connect(plain).await.unwrap(), size).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "plain, {size} bytes: {answer}"
        );
        let answer = send_head(tls_connect(tls, &ca, "app.test").await, size).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "TLS, {size} bytes: {answer}"
        );
    }
    assert_eq!(up.hits(), 2, "only the heads within the limit went on");
    proxy.stop().await;
}

/// An idle HTTP/1.1 connection over TLS is parked (hyper's buffers
/// dropped, the TLS session kept) and served again, over the same
/// session, when its client sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_connections_are_parked_and_served_again() {
    let up = TestUpstream::start("up").await;
    let (ca, _certs, tls_listener) = app_test_listener("127.0.0.1:0");
    let config = format!(
        "{tls_listener}{}",
        split_config(&[("p", 1, &[up.addr])], "")
    );
    let process = crate::process::Process::start(&config);
    let admin = format!("http://{}", crate::process::admin_addr_of(&process));
    let mut tls = tls_connect(process.addr, &ca, "app.test").await;
    for round in 0..2 {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let response = tokio::time::timeout(DEADLINE, read_response(&mut tls))
            .await
            .expect("answered");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "round {round}: {response}"
        );
        wait_until("the idle TLS connection is parked", || async {
            gauge(&admin, "cutover_client_connections_parked").await == 1.0
        })
        .await;
    }
    // A request in two writes around the wake-up still arrives whole.
    tls.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    tls.flush().await.unwrap();
    tls.write_all(b"st: app.test\r\n\r\n").await.unwrap();
    let response = tokio::time::timeout(DEADLINE, read_response(&mut tls))
        .await
        .expect("answered");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(up.hits(), 3);
}

/// `[admin] tls`: the admin API speaks only TLS, `cutover ctl` reaches it
/// with `--ca` (and refuses a certificate it cannot verify, exit 3), and a
/// renewed certificate is served after a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_tls() {
    let up = TestUpstream::start("up").await;
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let first = ca.issue(certs.path(), "localhost");
    ca.write_ca(&certs.path().join("ca.pem"));
    let d = certs.path().display().to_string();
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{d}/localhost.pem\", key = \"{d}/localhost.key\" }}\n{}",
        split_config(&[("p", 1, &[up.addr])], "")
    );
    let (proxy, path) = start_proxy_from_file(&config).await;
    let admin = proxy.admin_addr();

    // HTTP/1.1 over TLS.
    let mut tls = tls_connect(admin, &ca, "localhost").await;
    tls.write_all(b"GET /api/v1/status HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plain HTTP gets no answer: the bytes are not a TLS handshake.
    let mut plain = tokio::net::TcpStream::connect(admin).await.unwrap();
    plain
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut answer))
        .await
        .expect("closed");
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

    // ctl over https, with the CA; without it, a verification failure.
    let url = format!("https://localhost:{}", admin.port());
    let ca_file = format!("{d}/ca.pem");
    let (code, out, err) = ctl(&url, &["--ca", &ca_file, "status"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("app"), "{out}{err}");
    let (code, out, err) = ctl(&url, &["split", "app", "p=1"]).await;
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("certificate"), "{out}{err}");

    // A renewed certificate (same files) is served after a reload.
    let renewed = ca.issue(certs.path(), "localhost");
    assert_ne!(renewed, first);
    assert_eq!(presented(admin, &ca, "localhost").await, first);
    let (code, out, err) = ctl(&url, &["--ca", &ca_file, "reload"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(presented(admin, &ca, "localhost").await, renewed);

    // A broken certificate: the reload is refused naming it, the last good
    // one serves on, and `cutover check` reports it.
    std::fs::write(certs.path().join("localhost.pem"), "not a certificate").unwrap();
    let (code, out, err) = ctl(&url, &["--ca", &ca_file, "reload"]).await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("admin.tls: ") && err.contains("localhost.pem"),
        "{err}"
    );
    assert_eq!(presented(admin, &ca, "localhost").await, renewed);
    check_fails_naming(&path, "admin.tls: ");
    proxy.stop().await;
}

/// `cutover check -c PATH` fails (exit 1) naming `key` on stderr.
fn check_fails_naming(path: &std::path::Path, key: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["check", "-c"])
        .arg(path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(key), "{err}");
}

/// A request over TLS presenting `client` (DIR/NAME.pem and .key) when
/// given; the answer's status line, or why there was none (a refused
/// certificate ends the connection in or right after the handshake).
async fn mtls_get(
    addr: std::net::SocketAddr,
    ca: &Ca,
    client: Option<(&Path, &str)>,
) -> Result<String, String> {
    let answer = mtls_request(addr, ca, client, "/headers").await?;
    answer
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .map(str::to_string)
        .ok_or_else(|| format!("no answer: {answer:?}"))
}

/// As [`mtls_get`], for `path`; the whole answer.
async fn mtls_request(
    addr: std::net::SocketAddr,
    ca: &Ca,
    client: Option<(&Path, &str)>,
    path: &str,
) -> Result<String, String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((dir, name)) => {
            let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("app.test".to_string()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(answer)
}

/// A route with `client_subject` takes only clients whose verified
/// certificate's subject matches: the billing service's certificate goes
/// to its pool, another client of the same CA and a client without one go
/// to the route after it; a route asking for one on a listener without
/// mTLS never matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_the_client_certificates_subject() {
    let internal = TestUpstream::start("internal").await;
    let public = TestUpstream::start("public").await;
    let (server_ca, clients_ca) = (Ca::new(), Ca::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server_ca.issue(d, "app.test");
    clients_ca.write_ca(&d.join("clients-ca.pem"));
    clients_ca.issue(d, "billing");
    clients_ca.issue(d, "reports");
    let config = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{0}/app.test.pem\", key = \"{0}/app.test.key\", client_ca = \"{0}/clients-ca.pem\", client_auth = \"optional\" }}\n\
         [[listener]]\nbind = \"127.0.0.2:0\"\n\
         [[route]]\nname = \"billing\"\nclient_subject = {{ regex = \"^CN=billing$\" }}\nsplit = {{ internal = 1 }}\n\
         [[route]]\nname = \"app\"\nsplit = {{ public = 1 }}\n\
         [pool.internal]\nupstreams = [{{ addr = \"{1}\" }}]\n[pool.public]\nupstreams = [{{ addr = \"{2}\" }}]\n",
        d.display(),
        internal.addr,
        public.addr
    );
    let proxy = start_proxy(&config).await;
    let tls = proxy.addrs()[0];
    let served_by = |answer: Result<String, String>| {
        let answer = answer.expect("answered");
        answer
            .rsplit("\r\n\r\n")
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    assert_eq!(
        served_by(mtls_request(tls, &server_ca, Some((d, "billing")), "/").await),
        "internal"
    );
    assert_eq!(
        served_by(mtls_request(tls, &server_ca, Some((d, "reports")), "/").await),
        "public"
    );
    assert_eq!(
        served_by(mtls_request(tls, &server_ca, None, "/").await),
        "public"
    );
    // Plain HTTP: no certificate, never the billing route.
    let (status, body) = get(&http1_client(), &format!("http://{}/", proxy.addrs()[1])).await;
    assert_eq!((status, body.trim()), (200, "public"));
    // Status shows the matcher as the file wrote it.
    let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    let billing = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "billing")
        .cloned()
        .unwrap();
    assert_eq!(
        billing["matchers"]["client_subject"], "regex \"^CN=billing$\"",
        "{billing}"
    );
    proxy.stop().await;
    // A bad matcher names its key.
    let bad = format!(
        "[[route]]\nname = \"b\"\nclient_subject = {{ regex = \"(\" }}\nsplit = {{ p = 1 }}\n[pool.p]\nupstreams = [{{ addr = \"{}\" }}]\n",
        internal.addr
    );
    let out = check_config(&bad, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("route[0].client_subject.regex: invalid regex"),
        "{stderr}"
    );
}

/// A listener asking for client certificates (mTLS): one from the
/// listener's client CA is served; none, or one from another CA, is
/// refused in the handshake and counted; a reload makes it optional;
/// curl with `--cert` is served; a client_auth without client_ca is a
/// config error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_verified_and_counted() {
    let up = TestUpstream::start("up").await;
    let (server_ca, clients_ca, strangers_ca) = (Ca::new(), Ca::new(), Ca::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server_ca.issue(d, "app.test");
    server_ca.write_ca(&d.join("server-ca.pem"));
    clients_ca.write_ca(&d.join("clients-ca.pem"));
    clients_ca.issue(d, "billing");
    strangers_ca.issue(d, "stranger");
    let log = d.join("access.log");
    let config = |mode: &str| {
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{0}/app.test.pem\", key = \"{0}/app.test.key\", client_ca = \"{0}/clients-ca.pem\", client_auth = \"{mode}\" }}\n{1}",
            d.display(),
            split_config(
                &[("p", 1, &[up.addr])],
                &format!("[proxy]\naccess_log = \"{}\"\n", log.display())
            )
        )
    };
    let (proxy, path) = start_proxy_from_file(&config("required")).await;
    let addr = proxy.addrs()[0];
    let admin = format!("http://{}", proxy.admin_addr());
    assert_eq!(
        mtls_get(addr, &server_ca, Some((d, "billing"))).await,
        Ok("HTTP/1.1 200 OK".into())
    );
    // The access log says who it was, over what.
    wait_until("the access log line", || async {
        std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty())
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["tls_version"], "TLSv1.3", "{line}");
    assert_eq!(line["sni"], "app.test", "{line}");
    assert_eq!(line["client_subject"], "CN=billing", "{line}");
    assert_eq!(line["scheme"], "https", "{line}");
    let none = mtls_get(addr, &server_ca, None).await;
    assert!(none.is_err(), "served without a certificate: {none:?}");
    let stranger = mtls_get(addr, &server_ca, Some((d, "stranger"))).await;
    assert!(
        stranger.is_err(),
        "served another CA's client: {stranger:?}"
    );
    let refused = || async {
        let (_, text) = admin_call("GET", &format!("{admin}/metrics"), None, None).await;
        let text = text.as_str().unwrap_or("").to_string();
        text.lines()
            .filter(|l| l.starts_with("cutover_tls_client_certificates_refused_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    wait_until("both refusals counted", || async { refused().await >= 2.0 }).await;
    if curl_available() {
        let port = addr.port();
        let dir = d.to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .arg("--cacert")
                .arg(dir.join("server-ca.pem"))
                .arg("--cert")
                .arg(dir.join("billing.pem"))
                .arg("--key")
                .arg(dir.join("billing.key"))
                .args(["--resolve", &format!("app.test:{port}:127.0.0.1")])
                .arg(format!("https://app.test:{port}/"))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "curl --cert: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Optional after a reload: no certificate is served, a bad one is not.
    std::fs::write(
        &path,
        complete_config(&config("optional"), proxy.state_dir.path()),
    )
    .unwrap();
    let (s, v) = admin_call("POST", &proxy.admin_url("/api/v1/reload"), None, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        mtls_get(addr, &server_ca, None).await,
        Ok("HTTP/1.1 200 OK".into())
    );
    assert!(
        mtls_get(addr, &server_ca, Some((d, "stranger")))
            .await
            .is_err()
    );
    proxy.stop().await;

    // client_auth needs client_ca; the mode is one of two words.
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"c.pem\", key = \"k.pem\", client_auth = \"required\" }}\n{}",
        split_config(&[("p", 1, &[up.addr])], "")
    );
    let out = check_config(&text, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listener[0].tls.client_auth: needs client_ca"),
        "{stderr}"
    );
    let out = check_config(&config("sometimes"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listener[0].tls.client_auth: expected \"required\" or \"optional\""),
        "{stderr}"
    );
}

/// The admin API can ask for client certificates too: `ctl --cert --key`
/// is served, `ctl` without them cannot connect (exit 3, saying why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_with_client_certificates_and_ctl_cert() {
    let up = TestUpstream::start("up").await;
    let (ca, operators) = (Ca::new(), Ca::new());
    let certs = tempfile::tempdir().unwrap();
    ca.issue(certs.path(), "localhost");
    ca.write_ca(&certs.path().join("ca.pem"));
    operators.write_ca(&certs.path().join("operators.pem"));
    operators.issue(certs.path(), "alice");
    let d = certs.path().display().to_string();
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{d}/localhost.pem\", key = \"{d}/localhost.key\", client_ca = \"{d}/operators.pem\" }}\n{}",
        split_config(&[("p", 1, &[up.addr])], "")
    );
    let (proxy, _path) = start_proxy_from_file(&config).await;
    let url = format!("https://localhost:{}", proxy.admin_addr().port());
    let ca_file = format!("{d}/ca.pem");
    let (code, out, err) = ctl(
        &url,
        &[
            "--ca",
            &ca_file,
            "--cert",
            &format!("{d}/alice.pem"),
            "--key",
            &format!("{d}/alice.key"),
            "status",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("app"), "{out}{err}");
    let (code, out, err) = ctl(&url, &["--ca", &ca_file, "status"]).await;
    assert_eq!(code, Some(3), "without a client certificate: {out}{err}");
    let (code, _, err) = ctl(
        &url,
        &[
            "--ca",
            &ca_file,
            "--cert",
            &format!("{d}/alice.pem"),
            "status",
        ],
    )
    .await;
    assert_eq!(
        code,
        Some(1),
        "--cert without --key is a usage error: {err}"
    );
    proxy.stop().await;
}
