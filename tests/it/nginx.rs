//! Interoperation with real software: curl (HTTP/1.1 and HTTP/2 prior
//! knowledge) through cutover in front of a real nginx.
//!
//! `.ci/run` installs nginx and curl. Without them the test says so and
//! passes, except under CI (CI=true), where it fails.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::support::*;

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tools_present() -> bool {
    if installed("nginx") && installed("curl") {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "nginx and curl must be installed in CI (.ci/run does it)"
    );
    eprintln!("SKIPPED: nginx or curl not installed (run .ci/run, or apt-get install nginx curl)");
    false
}

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx() -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // nginx needs a fixed port: take a free one from the kernel.
    let addr = closed_port();
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {addr};
        location / {{
            add_header X-Seen-Host $host;
            return 200 "nginx $request_uri\n";
        }}
    }}
}}
"#
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    Nginx {
        child,
        addr,
        _dir: dir,
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_cutover_to_nginx() {
    if !tools_present() {
        return;
    }
    let nginx = start_nginx();
    let nginx_addr = nginx.addr;
    wait_until("nginx listens", || async {
        tokio::net::TcpStream::connect(nginx_addr).await.is_ok()
    })
    .await;
    let proxy = start_proxy(&split_config(&[("nginx", 1, &[nginx.addr])], "")).await;
    let url = format!("http://{}/hello?x=1", proxy.addrs()[0]);
    let (h1, h2) = tokio::task::spawn_blocking(move || {
        (
            curl(&["-i", "--http1.1", "-H", "Host: app.test", &url]),
            curl(&["-i", "--http2-prior-knowledge", &url]),
        )
    })
    .await
    .unwrap();
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(h1.ends_with("nginx /hello?x=1\n"), "{h1}");
    assert!(
        h1.to_ascii_lowercase().contains("x-seen-host: app.test"),
        "{h1}"
    );
    assert!(h1.to_ascii_lowercase().contains("via: 1.1 cutover"), "{h1}");
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
    assert!(h2.ends_with("nginx /hello?x=1\n"), "{h2}");
    proxy.stop().await;
}
