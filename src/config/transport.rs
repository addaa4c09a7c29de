//! How cutover speaks to a pool's upstreams: `tls` (`true`, or `{ sni, ca,
//! client_cert, client_key, insecure_skip_verify }`), `protocol`
//! (`"http1"`, `"h2"`, or `"auto"`: by ALPN over TLS) and `send_proxy`
//! (a PROXY protocol header first on every connection).

use std::path::{Path, PathBuf};

use toml::de::DeValue;

use super::Problems;
use super::reader::Table;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2: prior knowledge in cleartext (h2c), ALPN `h2` over TLS.
    H2,
    /// Over TLS, whatever ALPN settles (`h2`, else HTTP/1.1).
    Auto,
}

impl UpstreamProtocol {
    pub fn word(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::Auto => "auto",
        }
    }
}

/// TLS to a pool's upstreams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified against the certificate; without
    /// it, the upstream's IP address.
    pub sni: Option<String>,
    /// PEM file of the CA certificates to trust; without it, the system's.
    pub ca: Option<PathBuf>,
    /// A client certificate chain and key (PEM), for upstreams that ask.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Accept any certificate: never in production (warned at every load).
    pub insecure_skip_verify: bool,
}

impl UpstreamTls {
    /// Relative paths are relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.client_cert, &mut self.client_key]
            .into_iter()
            .flatten()
        {
            *p = base.join(&*p);
        }
    }
}

/// The PROXY protocol version a pool's connections start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    V1,
    V2,
}

/// Reads a pool's `send_proxy`: only with HTTP/1.1, whose connections
/// cutover can keep to one client each (an HTTP/2 connection carries
/// many clients' requests).
pub fn read_send_proxy(
    pool: &mut Table<'_>,
    protocol: UpstreamProtocol,
    problems: &mut Problems,
) -> Option<SendProxy> {
    let value = pool.str("send_proxy", problems)?;
    let path = pool.child("send_proxy");
    let version = match *value.get_ref() {
        "v1" => SendProxy::V1,
        "v2" => SendProxy::V2,
        other => {
            problems.push(
                value.span(),
                &path,
                format!("unknown PROXY protocol version {other:?}: expected \"v1\" or \"v2\""),
            );
            return None;
        }
    };
    if protocol != UpstreamProtocol::Http1 {
        problems.push(
            value.span(),
            &path,
            "needs protocol = \"http1\": a PROXY header names one client per connection, and an HTTP/2 connection carries many",
        );
        return None;
    }
    Some(version)
}

/// Reads a pool's `tls` and `protocol`.
pub fn read_transport(
    pool: &mut Table<'_>,
    problems: &mut Problems,
) -> (Option<UpstreamTls>, UpstreamProtocol) {
    let tls = read_tls(pool, problems);
    let protocol = match pool.str("protocol", problems) {
        None => UpstreamProtocol::Http1,
        Some(p) => match *p.get_ref() {
            "http1" => UpstreamProtocol::Http1,
            "h2" => UpstreamProtocol::H2,
            "auto" if tls.is_some() => UpstreamProtocol::Auto,
            "auto" => {
                problems.push(
                    p.span(),
                    &pool.child("protocol"),
                    "\"auto\" chooses by ALPN, which needs tls: set tls, or choose \"http1\" or \"h2\"",
                );
                UpstreamProtocol::Http1
            }
            other => {
                problems.push(
                    p.span(),
                    &pool.child("protocol"),
                    format!("unknown protocol {other:?}: expected \"http1\", \"h2\" or \"auto\""),
                );
                UpstreamProtocol::Http1
            }
        },
    };
    (tls, protocol)
}

fn read_tls(pool: &mut Table<'_>, problems: &mut Problems) -> Option<UpstreamTls> {
    let value = pool.get("tls")?;
    let path = pool.child("tls");
    let mut t = match value.get_ref() {
        DeValue::Boolean(on) => return on.then(UpstreamTls::default),
        DeValue::Table(_) => Table::from_value(value, path, problems)?,
        other => {
            problems.push(
                value.span(),
                &path,
                format!(
                    "expected true or {{ sni = \"…\", ca = \"ca.pem\" }}, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let file = |t: &mut Table<'_>, key: &'static str, problems: &mut Problems| {
        t.str(key, problems).map(|s| PathBuf::from(*s.get_ref()))
    };
    let sni = t.str("sni", problems).map(|s| s.get_ref().to_string());
    let ca = file(&mut t, "ca", problems);
    let client_cert = file(&mut t, "client_cert", problems);
    let client_key = file(&mut t, "client_key", problems);
    let insecure_skip_verify = t.bool("insecure_skip_verify", problems).unwrap_or(false);
    if client_cert.is_some() != client_key.is_some() {
        problems.push(
            t.span(),
            t.path(),
            "client_cert and client_key go together: give both or neither",
        );
    }
    t.finish(problems);
    Some(UpstreamTls {
        sni,
        ca,
        client_cert,
        client_key,
        insecure_skip_verify,
    })
}
