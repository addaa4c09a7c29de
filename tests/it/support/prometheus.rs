//! A real Prometheus for the rollout checks' tests (Debian's `prometheus`;
//! .ci/run installs it): scraping the given targets every second, on a
//! loopback port, data in a temp dir, stopped by PID.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use http_body_util::BodyExt;

use super::{free_port, http1_client, wait_until};

pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Started and ready (`/-/ready` answers 200).
    pub async fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config).expect("write prometheus.yml");
        let addr = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            addr,
            child,
            _dir: dir,
        };
        let ready = format!("http://{addr}/-/ready");
        wait_until("prometheus ready", || async {
            try_get(&ready)
                .await
                .is_some_and(|(status, _)| status == 200)
        })
        .await;
        p
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The instant query's first value, if it has one.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url(),
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, body) = try_get(&url).await?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET that may fail (Prometheus still starting): status and body.
async fn try_get(url: &str) -> Option<(u16, String)> {
    let get = http1_client().get(url.parse().ok()?);
    let response = tokio::time::timeout(std::time::Duration::from_secs(2), get)
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
