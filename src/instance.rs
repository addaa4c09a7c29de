//! The running instance as the admin API, signals and binary upgrades act
//! on it: the control plane and the client-facing listeners, behind one
//! lock, so a reload (which changes both) or an upgrade (which hands the
//! listeners over and retires the plane) never interleaves with a change.

use crate::config::Config;
use crate::control::{ControlError, ControlPlane};
use crate::server::Listeners;
use crate::state::Caller;

pub struct Instance {
    pub plane: ControlPlane,
    pub listeners: Listeners,
}

impl Instance {
    /// Re-reads the config file: listeners first, then routes and pools.
    /// An invalid file or a listener that cannot bind changes nothing.
    pub async fn reload(&mut self, caller: &Caller) -> Result<Vec<String>, ControlError> {
        let listeners = &mut self.listeners;
        self.plane
            .reload(caller, async |file: &Config| {
                // Upstream TLS files first: a bad one changes nothing.
                crate::upstream_tls::check(&file.pools).map_err(|p| p.join("; "))?;
                listeners.reload(&file.listeners).await
            })
            .await
    }
}
