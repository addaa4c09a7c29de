//! The optional access log: one JSON line per request (route, pool,
//! upstream, status, duration, bytes), to stdout (journald) or a file.
//!
//! Lines are handed to a writer task through a bounded channel; when it is
//! full (the disk cannot keep up) lines are dropped and counted in
//! `cutover_access_log_dropped_total`, so logging never slows requests.

use std::io::Write;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AccessLogTarget as Target;

pub const DROPPED_TOTAL: &str = "cutover_access_log_dropped_total";

#[derive(Debug, Serialize)]
pub struct Entry {
    pub time: String,
    pub client: String,
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub route: Option<String>,
    pub pool: Option<String>,
    pub upstream: Option<String>,
    pub status: u16,
    pub duration_ms: f64,
    pub bytes: u64,
    /// Upstreams tried: 1, or more after retries (0: none reached).
    pub attempts: u8,
    /// The last attempt's time from sending the request to the response
    /// head: the upstream's own share of `duration_ms`.
    pub upstream_ms: Option<f64>,
    /// Time waiting in pools' queues (`max_in_flight`).
    pub queued_ms: f64,
    /// The request's `X-Request-Id` (the client's if valid, else made).
    pub request_id: String,
    /// `HTTP/1.1`, `HTTP/2.0`…: what the client spoke.
    pub protocol: &'static str,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Which front served it: `direct` (cutover's HTTP/1.1 path) or
    /// `hyper`.
    pub served_by: &'static str,
    /// On a TLS listener: the version, the SNI name, and the client
    /// certificate's subject when one was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_subject: Option<String>,
}

#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Entry>,
}

impl AccessLog {
    /// Opens the target and starts the writer task.
    pub fn start(target: &Target) -> std::io::Result<AccessLog> {
        metrics::counter!(DROPPED_TOTAL).increment(0);
        let mut out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, mut rx) = mpsc::channel::<Entry>(8192);
        // Blocking writes belong on a blocking thread, not a runtime worker.
        tokio::task::spawn_blocking(move || {
            while let Some(entry) = rx.blocking_recv() {
                let mut line = serde_json::to_vec(&entry).unwrap_or_default();
                line.push(b'\n');
                if out.write_all(&line).is_err() {
                    metrics::counter!(DROPPED_TOTAL).increment(1);
                }
                if rx.is_empty() {
                    let _ = out.flush();
                }
            }
        });
        Ok(AccessLog { tx })
    }

    pub fn log(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            metrics::counter!(DROPPED_TOTAL).increment(1);
        }
    }
}
