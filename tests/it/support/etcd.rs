//! Real etcd for the fleet tests: members of one cluster on loopback
//! ports, data in a temp dir, started and stopped by PID (Debian's
//! etcd-server; .ci/run installs it).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::{free_port, http1_client, wait_until};

pub struct Etcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    initial_cluster: String,
    /// Serving clients over TLS: the directory with `localhost.pem`,
    /// `localhost.key` and `ca.pem` (clients must present a certificate
    /// the CA signed).
    tls: Option<std::path::PathBuf>,
}

struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

impl Etcd {
    /// A cluster of `size` members, each healthy when this returns.
    pub async fn start(size: usize) -> Etcd {
        Self::start_with(size, None).await
    }

    /// One member serving clients over TLS with client-certificate auth;
    /// `certs` holds `localhost.pem`, `localhost.key` and `ca.pem`. Not
    /// waited for: the caller's client tells when it answers.
    pub async fn start_tls(certs: &std::path::Path) -> Etcd {
        Self::start_with(1, Some(certs.to_path_buf())).await
    }

    async fn start_with(size: usize, tls: Option<std::path::PathBuf>) -> Etcd {
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            dir: tempfile::tempdir().expect("temp dir"),
            initial_cluster,
            tls,
        };
        for i in 0..size {
            etcd.spawn(i);
        }
        if etcd.tls.is_none() {
            for i in 0..size {
                etcd.wait_healthy(i).await;
            }
        }
        etcd
    }

    /// The client URLs, as `[cluster] etcd` takes them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| match self.tls {
                Some(_) => format!("https://localhost:{}", m.client.port()),
                None => format!("http://{}", m.client),
            })
            .collect()
    }

    /// `etcd = [...]` for a config.
    pub fn config_list(&self) -> String {
        let quoted: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!("[{}]", quoted.join(", "))
    }

    fn spawn(&mut self, i: usize) {
        let data = self.dir.path().join(&self.members[i].name);
        let m = &mut self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut command = Command::new("etcd");
        if let Some(certs) = &self.tls {
            command
                .arg(format!(
                    "--cert-file={}",
                    certs.join("localhost.pem").display()
                ))
                .arg(format!(
                    "--key-file={}",
                    certs.join("localhost.key").display()
                ))
                .arg(format!(
                    "--trusted-ca-file={}",
                    certs.join("ca.pem").display()
                ))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg(format!("--listen-client-urls={scheme}://{}", m.client))
            .arg(format!("--advertise-client-urls={scheme}://{}", m.client))
            .arg(format!("--listen-peer-urls=http://{}", m.peer))
            .arg(format!("--initial-advertise-peer-urls=http://{}", m.peer))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .args([
                "--initial-cluster-state=new",
                "--initial-cluster-token=cutover-test",
            ])
            .args(["--logger=zap", "--log-level=error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian's etcd-server; .ci/run installs it)");
        m.child = Some(child);
    }

    async fn wait_healthy(&self, i: usize) {
        let url = format!("http://{}/health", self.members[i].client);
        let client = http1_client();
        wait_until(&format!("etcd member {i} is healthy"), || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let Ok(uri) = url.parse() else { return false };
                match client.get(uri).await {
                    Ok(r) => r.status() == 200,
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    /// Stops member `i` (SIGKILL), keeping its data.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
