//! h2c smuggling: through a proxy that forwarded `Upgrade: h2c`, a client
//! would get an HTTP/2 tunnel to the origin, past every route rule. The
//! origin here is nghttpx (Debian's nghttp2-proxy), which does accept h2c
//! upgrades — shown first, directly — in front of a hyper test upstream.

use std::process::{Child, Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const H2C_UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";

/// nghttpx on `frontend` (cleartext, so it takes h2c upgrades), proxying
/// to `backend`; killed when dropped.
struct Nghttpx(Child);

impl Nghttpx {
    async fn start(frontend: std::net::SocketAddr, backend: std::net::SocketAddr) -> Nghttpx {
        let child = Command::new("nghttpx")
            .arg(format!(
                "--frontend={},{};no-tls",
                frontend.ip(),
                frontend.port()
            ))
            .arg(format!("--backend={},{}", backend.ip(), backend.port()))
            .args(["--conf=/dev/null", "--workers=1", "--log-level=ERROR"])
            .stdout(Stdio::null())
            .spawn()
            .expect("nghttpx (Debian's nghttp2-proxy; .ci/run installs it)");
        let nghttpx = Nghttpx(child);
        wait_until("nghttpx listens", || async {
            TcpStream::connect(frontend).await.is_ok()
        })
        .await;
        nghttpx
    }
}

impl Drop for Nghttpx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master stops its worker process too.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The first bytes of the answer to an h2c upgrade request on `stream`.
async fn answer_to_upgrade(stream: &mut TcpStream) -> String {
    stream.write_all(H2C_UPGRADE).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_h2c_tunnel_opens_through_the_proxy() {
    if !tool_present("nghttpx", "nghttp2-proxy") {
        return;
    }
    let up = TestUpstream::start("up").await;
    let origin_addr = free_port();
    let _origin = Nghttpx::start(origin_addr, up.addr).await;

    // Directly, the origin switches to HTTP/2.
    let mut direct = TcpStream::connect(origin_addr).await.unwrap();
    let answer = answer_to_upgrade(&mut direct).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer:?}");

    // Through cutover, the same request is a plain HTTP/1.1 one: 200 from
    // the app, no 101, and the connection stays HTTP/1.1.
    let proxy = start_proxy(&split_config(&[("p", 1, &[origin_addr])], "")).await;
    let mut s = TcpStream::connect(proxy.addrs()[0]).await.unwrap();
    let answer = answer_to_upgrade(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        !answer.to_ascii_lowercase().contains("upgrade"),
        "{answer:?}"
    );
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // The direct upgrade's request, then the two through cutover.
    assert_eq!(up.hits(), 3);
    proxy.stop().await;
}
