//! The running instance as the admin API, signals and binary upgrades act
//! on it: the control plane and the client-facing listeners, behind one
//! lock, so a reload (which changes both) or an upgrade (which hands the
//! listeners over and retires the plane) never interleaves with a change.

use std::sync::Arc;

use crate::config::Config;
use crate::control::{ControlError, ControlPlane};
use crate::server::Listeners;
use crate::state::Caller;
use crate::tls::CertStore;

pub struct Instance {
    pub plane: ControlPlane,
    pub listeners: Listeners,
    pub admin_tls: Option<AdminTls>,
}

/// The admin API's certificates: the files `[admin] tls` named at start
/// (`[admin]` changes take effect at the next start), read again at every
/// reload so a renewed certificate is served without a restart.
pub struct AdminTls {
    files: Vec<crate::config::TlsFiles>,
    pub store: Arc<CertStore>,
}

impl AdminTls {
    /// `None` without `[admin] tls`; an error names the file and problem.
    pub fn load(files: &[crate::config::TlsFiles]) -> Result<Option<AdminTls>, String> {
        if files.is_empty() {
            return Ok(None);
        }
        let certs = crate::tls::load(files).map_err(|e| format!("admin.tls: {e}"))?;
        let store = CertStore::new(certs);
        store.export_expiry("admin");
        Ok(Some(AdminTls {
            files: files.to_vec(),
            store,
        }))
    }
}

impl Instance {
    /// Re-reads the config file: listeners first, then routes and pools.
    /// An invalid file or a listener that cannot bind changes nothing.
    pub async fn reload(&mut self, caller: &Caller) -> Result<Vec<String>, ControlError> {
        let listeners = &mut self.listeners;
        let admin_tls = self.admin_tls.as_ref();
        self.plane
            .reload(caller, async |file: &Config| {
                // TLS files first: a bad one changes nothing.
                crate::upstream_tls::check(&file.pools).map_err(|p| p.join("; "))?;
                let admin_certs = admin_tls
                    .map(|t| crate::tls::load(&t.files).map_err(|e| format!("admin.tls: {e}")))
                    .transpose()?;
                listeners.reload(&file.listeners).await?;
                if let (Some(tls), Some(certs)) = (admin_tls, admin_certs) {
                    tls.store.replace(certs);
                    tls.store.export_expiry("admin");
                }
                Ok(())
            })
            .await
    }
}
