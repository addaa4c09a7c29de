//! Test harness: real hyper upstreams on 127.0.0.1:0, the proxy started
//! in-process on port 0, HTTP clients, and waiting on conditions with a
//! deadline (never sleeping as synchronisation).

#![allow(dead_code)]

pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use cutover::config::Config;
use cutover::lifecycle::{self, Running};

pub use upstream::TestUpstream;

/// Generous: CI machines are small and shared.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Starts the proxy in-process from `toml` (listener on 127.0.0.1:0 unless
/// the text sets one).
pub async fn start_proxy(toml: &str) -> Running {
    let text = if toml.contains("[[listener]]") {
        toml.to_string()
    } else {
        format!("[[listener]]\nbind = \"127.0.0.1:0\"\n{toml}")
    };
    let config =
        Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    lifecycle::start(&config).await.expect("proxy starts")
}

/// A config with one catch-all route `app` splitting across the given
/// pools, each pool listing its upstreams.
pub fn split_config(pools: &[(&str, u32, &[SocketAddr])], extra: &str) -> String {
    let split: Vec<String> = pools.iter().map(|(n, w, _)| format!("{n} = {w}")).collect();
    let mut text = format!(
        "{extra}\n[[route]]\nname = \"app\"\nsplit = {{ {} }}\n",
        split.join(", ")
    );
    for (name, _, addrs) in pools {
        let ups: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        text.push_str(&format!(
            "[pool.{name}]\nupstreams = [ {} ]\n",
            ups.join(", ")
        ));
    }
    text
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn http2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GET `url`, returning status and body text; panics on transport errors.
pub async fn get(client: &HttpClient, url: &str) -> (u16, String) {
    let response = client
        .get(url.parse().expect("test URL is valid"))
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e:?}"));
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `check` returns true, polling, or panics after `DEADLINE`.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address on which nothing listens: bound, then released.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}
