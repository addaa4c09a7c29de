//! TLS to upstreams (rustls client): the trusted roots (a CA file, or the
//! system's), an optional client certificate, hostname verification on
//! unless `insecure_skip_verify`, and ALPN by the pool's protocol. Built
//! from the config when a table is published; `check` reports every
//! problem of a file before it is used.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{PoolConfig, UpstreamProtocol, UpstreamTls};

/// A rustls client config for one pool. Logs a warning for every load of
/// a pool that skips verification.
pub fn client_config(
    pool: &str,
    tls: &UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        tracing::warn!(%pool, "tls.insecure_skip_verify: upstream certificates are NOT verified");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
    } else {
        builder.with_root_certificates(roots(tls.ca.as_deref())?)
    };
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("{}: no private key: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert and client_key do not match: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// When each of the files `tls` names last changed: a config reload that
/// finds a different stamp builds the client config again, so replaced
/// CA or client certificate files take effect with the reload.
pub fn files_stamp(tls: &UpstreamTls) -> Vec<Option<std::time::SystemTime>> {
    [&tls.ca, &tls.client_cert, &tls.client_key]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// The name to send as SNI and verify: `sni` (which the routing table sets
/// to a DNS-named upstream's name when the config leaves it out), else the
/// address's IP.
pub fn server_name(
    tls: &UpstreamTls,
    addr: std::net::SocketAddr,
) -> Result<ServerName<'static>, String> {
    match &tls.sni {
        Some(name) => {
            ServerName::try_from(name.clone()).map_err(|e| format!("tls.sni {name:?}: {e}"))
        }
        None => Ok(ServerName::IpAddress(addr.ip().into())),
    }
}

/// Every pool's TLS settings loaded once, for `cutover check`, start and
/// reload: each problem as `pool.NAME.tls: …`.
pub fn check(pools: &[PoolConfig]) -> Result<(), Vec<String>> {
    let problems: Vec<String> = pools
        .iter()
        .filter_map(|p| {
            let tls = p.tls.as_ref()?;
            let sni = tls.sni.as_ref().and_then(|n| {
                ServerName::try_from(n.clone())
                    .err()
                    .map(|e| format!("pool.{}.tls.sni: {n:?}: {e}", p.name))
            });
            let built = client_config(&p.name, tls, p.protocol)
                .err()
                .map(|e| format!("pool.{}.tls: {e}", p.name));
            sni.or(built)
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The CA certificates of `ca`, or the system's.
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found (install ca-certificates, or name a CA file)"
                        .into(),
                );
            }
        }
    }
    Ok(roots)
}

/// `insecure_skip_verify`: signatures are still checked, names and chains
/// are not.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
