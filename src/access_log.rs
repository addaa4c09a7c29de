//! The optional access log: one line per request (route, pool, upstream,
//! status, duration, bytes, request id…), JSON or logfmt, all fields or
//! those `access_log_fields` names, to stdout (journald) or a file.
//!
//! Lines are handed to a writer task through a bounded channel; when it is
//! full (the disk cannot keep up) lines are dropped and counted in
//! `cutover_access_log_dropped_total`, so logging never slows requests.

use std::io::Write;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{AccessLogFormat, AccessLogTarget as Target};

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
    /// With `[tracing]`: the request's trace id (32 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The step (1, 2…) of the rollout running on the route when the
    /// request was routed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_step: Option<u32>,
    /// On a sticky route: the client's cohort (0–99), which a rollout's
    /// percent moves (below it: the new pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort: Option<u8>,
}

#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Entry>,
}

impl AccessLog {
    /// Opens the target and starts the writer task.
    pub fn start(
        target: &Target,
        format: AccessLogFormat,
        fields: Option<Vec<String>>,
    ) -> std::io::Result<AccessLog> {
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
                let mut line = render(&entry, format, fields.as_deref());
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

/// One line: all fields in the struct's order (JSON straight from it), or
/// the `fields` named, in their order; logfmt leaves absent ones out.
fn render(entry: &Entry, format: AccessLogFormat, fields: Option<&[String]>) -> Vec<u8> {
    if format == AccessLogFormat::Json && fields.is_none() {
        return serde_json::to_vec(entry).unwrap_or_default();
    }
    let serde_json::Value::Object(all) = serde_json::to_value(entry).unwrap_or_default() else {
        return Vec::new();
    };
    let names: Vec<&str> = match fields {
        Some(f) => f.iter().map(String::as_str).collect(),
        None => crate::config::ACCESS_LOG_FIELDS.to_vec(),
    };
    let pairs = names
        .into_iter()
        .filter_map(|name| all.get(name).map(|v| (name, v)));
    let mut out = Vec::new();
    match format {
        AccessLogFormat::Json => {
            out.push(b'{');
            for (i, (name, value)) in pairs.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut out, name);
                out.push(b':');
                let _ = serde_json::to_writer(&mut out, value);
            }
            out.push(b'}');
        }
        AccessLogFormat::Logfmt => {
            for (name, value) in pairs {
                let text = match value {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) => logfmt_value(s),
                    other => other.to_string(),
                };
                if !out.is_empty() {
                    out.push(b' ');
                }
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    out
}

/// A logfmt value: bare when it can be, else quoted with `"` and `\`
/// escaped and control characters written as escapes (a client's path
/// never splits or forges a line).
fn logfmt_value(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if bare {
        return s.to_string();
    }
    // JSON string escaping is logfmt's quoting: `"`, `\\`, control
    // characters as `\n` / `\u0001`.
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: "2026-12-06T12:00:00Z".into(),
            client: "10.0.0.7:5000".into(),
            method: "GET".into(),
            host: Some("app.test".into()),
            path: "/a b\n\"x\"=1".into(),
            route: Some("app".into()),
            pool: None,
            upstream: None,
            status: 404,
            duration_ms: 1.5,
            bytes: 10,
            attempts: 0,
            upstream_ms: None,
            queued_ms: 0.0,
            request_id: "r-1".into(),
            protocol: "HTTP/1.1",
            scheme: "http",
            served_by: "hyper",
            tls_version: None,
            sni: None,
            client_subject: None,
            trace_id: None,
            rollout_step: None,
            cohort: None,
        }
    }

    #[test]
    fn every_field_is_named_in_the_config_list_and_in_its_order() {
        let serde_json::Value::Object(all) = serde_json::to_value(entry()).unwrap() else {
            panic!()
        };
        let mut tls = entry();
        tls.tls_version = Some("TLSv1.3");
        tls.sni = Some("a".into());
        tls.client_subject = Some("CN=a".into());
        tls.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        tls.rollout_step = Some(2);
        tls.cohort = Some(17);
        let serde_json::Value::Object(with_tls) = serde_json::to_value(tls).unwrap() else {
            panic!()
        };
        let mut keys: Vec<&String> = with_tls.keys().collect();
        keys.sort();
        let mut listed = crate::config::ACCESS_LOG_FIELDS.to_vec();
        listed.sort();
        assert_eq!(keys, listed);
        assert!(
            all.len() < with_tls.len(),
            "TLS, trace and rollout fields left out without them"
        );
        // All fields, JSON: the struct's own order.
        let line = String::from_utf8(render(&entry(), AccessLogFormat::Json, None)).unwrap();
        assert!(line.starts_with("{\"time\":"), "{line}");
    }

    #[test]
    fn chosen_fields_in_json_and_logfmt() {
        let fields = [
            "status".to_string(),
            "path".to_string(),
            "pool".to_string(),
            "request_id".to_string(),
        ];
        let json =
            String::from_utf8(render(&entry(), AccessLogFormat::Json, Some(&fields))).unwrap();
        assert_eq!(
            json,
            r#"{"status":404,"path":"/a b\n\"x\"=1","pool":null,"request_id":"r-1"}"#
        );
        let logfmt =
            String::from_utf8(render(&entry(), AccessLogFormat::Logfmt, Some(&fields))).unwrap();
        assert_eq!(logfmt, r#"status=404 path="/a b\n\"x\"=1" request_id=r-1"#);
        let all = String::from_utf8(render(&entry(), AccessLogFormat::Logfmt, None)).unwrap();
        assert!(
            all.starts_with("time=2026-12-06T12:00:00Z client=10.0.0.7:5000 method=GET"),
            "{all}"
        );
        assert!(!all.contains('\n'), "one line: {all}");
    }
}
