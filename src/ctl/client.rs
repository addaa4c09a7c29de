//! The admin API as `cutover ctl` speaks to it: the base URL, a client
//! (plain, or TLS verified against `--ca` or the system's CAs), one call
//! with its errors in the CLI's words, and the exit codes they become.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::control::status::Status;

/// How `cutover ctl rollout --wait` ended, as its exit code.
pub const EXIT_ROLLED_BACK: u8 = 2;
pub const EXIT_ABORTED: u8 = 3;

/// `cutover ctl health POOL`: some upstream of the pool is not healthy.
pub const EXIT_NOT_HEALTHY: u8 = 5;

/// The exit codes, as `cutover ctl --help` prints them.
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 usage error or an answer that is not the admin API's; \
2 refused by the proxy (a 4xx answer: bad input, unknown name, conflict); \
3 the admin API cannot be reached; 4 not authorized (--token-file). \
rollout --wait: 0 promoted, 2 rolled back, 3 aborted. health: 5 not every upstream healthy. \
Errors go to stderr.";

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(
        "cannot reach the admin API at {url}: {reason} (is the proxy running, and is --admin its [admin] bind?)"
    )]
    Unreachable { url: String, reason: String },
    /// The proxy refused the call (4xx).
    #[error("{status}: {message}")]
    Refused {
        status: http::StatusCode,
        message: String,
    },
    #[error(
        "{status}: {message} (give the admin token with --token-file FILE or CUTOVER_TOKEN_FILE)"
    )]
    Unauthorized {
        status: http::StatusCode,
        message: String,
    },
    /// An answer that is not what the admin API gives: a 5xx, or a body
    /// of another shape (e.g. --admin pointed at a proxy listener).
    #[error("unexpected answer from {url}: {what}")]
    Unexpected { url: String, what: String },
    #[error("{0}")]
    Usage(String),
    /// Any error of `rollout --wait`, whose 2 and 3 mean rolled back and
    /// aborted.
    #[error("{0}")]
    WhileWaiting(Box<CtlError>),
}

impl CtlError {
    /// The process exit code for this error (see [`EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) | CtlError::Unexpected { .. } | CtlError::WhileWaiting(_) => 1,
            CtlError::Refused { .. } => 2,
            CtlError::Unreachable { .. } => 3,
            CtlError::Unauthorized { .. } => 4,
        }
    }
}

/// An error and what caused it, down the chain: "client error (Connect)"
/// alone does not say that a certificate was refused.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The API's words for its query flags, in the CLI's.
fn in_cli_words(message: &str) -> String {
    message
        .replace("add ?force=true to insist", "add --force to insist")
        .replace("?force=true", "--force")
}

/// The admin API's base URL from `--admin`: `HOST:PORT` alone means
/// `http://HOST:PORT` (as curl reads it); anything but an http(s) URL of a
/// host is a usage error that shows the expected form.
fn admin_base(raw: &str) -> Result<String, CtlError> {
    let raw = raw.trim().trim_end_matches('/');
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let bad = |why: &str| {
        CtlError::Usage(format!(
            "--admin {raw:?}: {why}; expected the admin listener's URL, like http://127.0.0.1:9090"
        ))
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("only http:// and https:// are spoken"));
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a base URL has no path"));
    }
    Ok(url)
}

/// An HTTP client for the admin API: plain, or TLS verified against `ca`
/// (or the system's CAs) when `admin` is an `https://` URL.
fn admin_client(
    admin: &str,
    ca: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, CtlError> {
    let roots = if admin.starts_with("https://") {
        crate::upstream_tls::roots(ca).map_err(CtlError::Usage)?
    } else {
        rustls::RootCertStore::empty()
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CtlError::Usage(e.to_string()))?
        .with_root_certificates(roots);
    let tls = match client_cert {
        None => tls.with_no_client_auth(),
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let usage = |flag: &str, path: &Path, e: String| {
                CtlError::Usage(format!("{flag} {}: {e}", path.display()))
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| usage("--cert", cert, e.to_string()))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| usage("--key", key, e.to_string()))?;
            tls.with_client_auth_cert(chain, key_der)
                .map_err(|e| usage("--cert", cert, e.to_string()))?
        }
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

pub(super) struct Api {
    base: String,
    token: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Api {
    /// The API at `--admin`, with the token read from `--token-file`.
    pub(super) fn connect(
        admin: &str,
        token_file: Option<&Path>,
        ca: Option<&Path>,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<Api, CtlError> {
        let token = match token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        CtlError::Usage(format!("cannot read token file {}: {e}", path.display()))
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let base = admin_base(admin)?;
        Ok(Api {
            client: admin_client(&base, ca, client_cert)?,
            base,
            token,
        })
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CtlError> {
        self.call_within(method, path, body, Duration::from_secs(30))
            .await
    }

    /// As `call`, waiting up to `limit` for the answer.
    pub(super) async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<Value, CtlError> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let unreachable = |reason: String| CtlError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| CtlError::Usage(format!("bad admin URL {url:?}: {e}")))?;
        let resp = tokio::time::timeout(limit, self.client.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {limit:?}")))?
            .map_err(|e| unreachable(with_causes(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let unexpected = |what: String| CtlError::Unexpected {
            url: url.clone(),
            what,
        };
        let value: Value = serde_json::from_slice(&body).map_err(|_| {
            let text = String::from_utf8_lossy(&body);
            let start: String = text.chars().take(80).collect();
            unexpected(format!(
                "{status} with a body that is not JSON ({start:?}); is --admin the admin listener, not a proxy listener?"
            ))
        })?;
        if status.is_success() {
            return Ok(value);
        }
        // The admin API's errors are `{"error": …, "detail": {"code": …}}`.
        let Some(error) = value.get("error").and_then(Value::as_str) else {
            return Err(unexpected(format!("{status}: {value}")));
        };
        let mut message = in_cli_words(error);
        let problems = value
            .get("problems")
            .or_else(|| value.pointer("/detail/problems"))
            .and_then(Value::as_array);
        for p in problems.into_iter().flatten().filter_map(Value::as_str) {
            message.push_str("\n  ");
            message.push_str(p);
        }
        Err(match status.as_u16() {
            401 | 403 => CtlError::Unauthorized { status, message },
            400..=499 => CtlError::Refused { status, message },
            _ => unexpected(format!("{status}: {message}")),
        })
    }

    /// The status JSON, checked for its shape.
    pub(super) async fn status(&self) -> Result<(Value, Status), CtlError> {
        let v = self.call(Method::GET, "/api/v1/status", None).await?;
        let parsed =
            serde_json::from_value::<Status>(v.clone()).map_err(|e| CtlError::Unexpected {
                url: self.base.clone(),
                what: format!("not the admin API's status: {e}"),
            })?;
        Ok((v, parsed))
    }
}

pub(super) fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}
