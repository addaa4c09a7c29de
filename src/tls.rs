//! TLS for client listeners (rustls): certificates chosen by SNI, ALPN `h2`
//! and `http/1.1`, TLS 1.2 and 1.3 with rustls' safe defaults. Certificates
//! are loaded into a `CertStore` that a reload swaps in one step: new
//! handshakes see the new certificates at once, open connections keep theirs.
//!
//! The server side runs on aws-lc-rs, not ring: a full handshake with an
//! RSA-2048 certificate cost 581 µs of CPU on ring against nginx's 476 on
//! OpenSSL, and 391 µs on aws-lc-rs (docs/benchmarks.md). Clients
//! (upstream TLS, `ctl`, etcd) stay on ring: they verify, they do not sign.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::config::{ClientAuth, TlsFiles};

/// Metric: each loaded certificate's notAfter, as a Unix timestamp.
pub const CERT_EXPIRY: &str = "cutover_tls_certificate_expiry_timestamp_seconds";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// One loaded certificate chain with its key and the names it serves.
#[derive(Debug)]
pub struct LoadedCert {
    /// Lower-cased DNS names from subjectAltName; `*.example.com` allowed.
    names: Vec<String>,
    key: Arc<CertifiedKey>,
    pub not_after: i64,
    pub label: String,
}

/// What a TLS listener serves with: its certificates, and the verifier of
/// its clients' certificates when it asks for them.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub certs: Vec<Arc<LoadedCert>>,
    pub client_auth: Option<Arc<dyn ClientCertVerifier>>,
}

/// Loads the certificates (and client CAs) of every TLS listener; every
/// problem is reported, as `listener[i].tls: FILE: reason`.
pub fn load_listeners(
    listeners: &[crate::config::ListenerConfig],
) -> Result<std::collections::HashMap<std::net::SocketAddr, ListenerTls>, Vec<String>> {
    let mut loaded = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.tls.is_empty() {
            continue;
        }
        let mut certs = Vec::new();
        for files in &l.tls {
            match load_one(files) {
                Ok(c) => certs.push(c),
                Err(e) => problems.push(format!("listener[{i}].tls: {e}")),
            }
        }
        let client_auth = match l.client_auth.as_ref().map(client_verifier).transpose() {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("listener[{i}].tls.client_ca: {e}"));
                None
            }
        };
        loaded.insert(l.bind, ListenerTls { certs, client_auth });
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

/// Loads and checks every certificate of a listener.
pub fn load(files: &[TlsFiles]) -> Result<Vec<Arc<LoadedCert>>, TlsError> {
    files.iter().map(load_one).collect()
}

fn load_one(files: &TlsFiles) -> Result<Arc<LoadedCert>, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let read = |path: &Path, shown: &str| {
        std::fs::read(path).map_err(|e| TlsError::Read {
            path: shown.to_string(),
            reason: e.to_string(),
        })
    };
    let cert_pem = read(&files.cert, &cert_path)?;
    let key_pem = read(&files.key, &key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            path: cert_path.clone(),
            reason: format!("not a PEM certificate chain: {e}"),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Invalid {
            path: cert_path,
            reason: "no certificate in the file".into(),
        });
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
        path: key_path.clone(),
        reason: format!("not a PEM private key: {e}"),
    })?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| {
        TlsError::Invalid {
            path: key_path.clone(),
            reason: format!("unsupported private key: {e}"),
        }
    })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| TlsError::Invalid {
            path: cert_path.clone(),
            reason: format!("cannot parse the certificate: {e}"),
        })?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let not_after = parsed.validity().not_after.timestamp();
    let certified = CertifiedKey::new(chain, signing);
    if let Err(e) = certified.keys_match() {
        return Err(TlsError::Invalid {
            path: key_path,
            reason: format!("the key does not match {cert_path}: {e}"),
        });
    }
    let label = names.first().cloned().unwrap_or_else(|| cert_path.clone());
    Ok(Arc::new(LoadedCert {
        names,
        key: Arc::new(certified),
        not_after,
        label,
    }))
}

/// The verifier of client certificates chained to `auth.ca`; without a
/// certificate a client is refused unless `auth.required` is false.
pub fn client_verifier(auth: &ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let path = auth.ca.display().to_string();
    let pem = std::fs::read(&auth.ca).map_err(|e| TlsError::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let invalid = |reason: String| TlsError::Invalid {
        path: path.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if auth.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| invalid(format!("cannot verify clients with it: {e}")))
}

/// The certificates of one listener and the verifier of its clients'
/// certificates, swapped whole on reload.
#[derive(Debug)]
pub struct CertStore {
    certs: ArcSwap<Vec<Arc<LoadedCert>>>,
    client_auth: ArcSwap<ClientAuthSlot>,
}

/// A listener's client-certificate verifier, if it asks for certificates.
#[derive(Debug, Default)]
struct ClientAuthSlot(Option<Arc<dyn ClientCertVerifier>>);

impl CertStore {
    pub fn with_client_auth(tls: ListenerTls) -> Arc<CertStore> {
        Arc::new(CertStore {
            certs: ArcSwap::from_pointee(tls.certs),
            client_auth: ArcSwap::from_pointee(ClientAuthSlot(tls.client_auth)),
        })
    }

    /// A reload's certificates and client verifier, for new handshakes.
    pub fn replace_all(&self, tls: &ListenerTls) {
        self.certs.store(Arc::new(tls.certs.clone()));
        self.client_auth
            .store(Arc::new(ClientAuthSlot(tls.client_auth.clone())));
    }

    /// Exports each certificate's expiry as a gauge.
    pub fn export_expiry(&self, listener: &str) {
        for c in self.certs.load().iter() {
            metrics::gauge!(CERT_EXPIRY, "listener" => listener.to_string(), "certificate" => c.label.clone())
                .set(c.not_after as f64);
        }
    }
}

fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let by_name = hello.server_name().and_then(|sni| {
            let sni = sni.to_ascii_lowercase();
            certs
                .iter()
                .find(|c| c.names.iter().any(|n| matches(n, &sni)))
        });
        by_name
            .or_else(|| certs.first())
            .map(|c| Arc::clone(&c.key))
    }
}

/// The listener's client verifier, whatever a reload made it: without
/// one no certificate is asked for (and none is ever verified).
impl ClientCertVerifier for CertStore {
    fn offer_client_auth(&self) -> bool {
        self.client_auth.load().0.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.client_auth
            .load()
            .0
            .as_ref()
            .is_some_and(|v| v.client_auth_mandatory())
    }

    /// No hints: the CA names cannot be lent out of a swappable slot, and
    /// clients send their certificate without them.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &self.client_auth.load().0 {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General(
                "this listener asks for no client certificate".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// The signature algorithms client certificates are checked with: the
/// server's provider's, taken from it once (a provider is built with
/// allocations; this is asked in every handshake that offers client auth).
fn algorithms() -> &'static rustls::crypto::WebPkiSupportedAlgorithms {
    static ALGORITHMS: std::sync::OnceLock<rustls::crypto::WebPkiSupportedAlgorithms> =
        std::sync::OnceLock::new();
    ALGORITHMS.get_or_init(|| {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
    })
}

/// A rustls server config for `store`, offering HTTP/2 and HTTP/1.1 —
/// HTTP/2 alone when `http2_only` — and asking for client certificates
/// when the store's listener does.
pub fn server_config(store: Arc<CertStore>, http2_only: bool) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("aws-lc-rs supports the default protocol versions"));
    let verifier: Arc<dyn ClientCertVerifier> = Arc::clone(&store) as _;
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    config.alpn_protocols = match http2_only {
        true => vec![b"h2".to_vec()],
        false => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards_match_one_label() {
        assert!(matches("app.test", "app.test"));
        assert!(matches("*.example.com", "a.example.com"));
        assert!(!matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
    }
}
