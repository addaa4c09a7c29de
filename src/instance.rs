//! The running instance as the admin API, signals and binary upgrades act
//! on it: the control plane and the client-facing listeners, behind one
//! lock, so a reload (which changes both) or an upgrade (which hands the
//! listeners over and retires the plane) never interleaves with a change.

use std::sync::Arc;

use crate::cluster::follow::{Member, Seeding};
use crate::cluster::{Cluster, WriteError};
use crate::config::Config;
use crate::control::{Change, ControlError, ControlPlane};
use crate::server::Listeners;
use crate::state::Caller;
use crate::tls::CertStore;

pub struct Instance {
    pub plane: ControlPlane,
    pub listeners: Listeners,
    pub admin_tls: Option<AdminTls>,
    /// In a fleet: the etcd link every change goes through.
    pub cluster: Option<Arc<Cluster>>,
}

/// How many times a change is made again on a newer fleet state before
/// the caller is told to retry.
const FLEET_TRIES: usize = 3;

/// The admin API's certificates: the files `[admin] tls` named at start
/// (`[admin]` changes take effect at the next start), read again at every
/// reload so a renewed certificate is served without a restart.
pub struct AdminTls {
    files: Vec<crate::config::TlsFiles>,
    client_auth: Option<crate::config::ClientAuth>,
    pub store: Arc<CertStore>,
}

impl AdminTls {
    /// `None` without `[admin] tls`; an error names the file and problem.
    pub fn load(admin: &crate::config::AdminConfig) -> Result<Option<AdminTls>, String> {
        if admin.tls.is_empty() {
            return Ok(None);
        }
        let loaded = Self::read(&admin.tls, admin.client_auth.as_ref())?;
        let store = CertStore::with_client_auth(loaded);
        store.export_expiry("admin");
        Ok(Some(AdminTls {
            files: admin.tls.clone(),
            client_auth: admin.client_auth.clone(),
            store,
        }))
    }

    /// The certificates and the client CA, read from their files.
    fn read(
        files: &[crate::config::TlsFiles],
        client_auth: Option<&crate::config::ClientAuth>,
    ) -> Result<crate::tls::ListenerTls, String> {
        let certs = crate::tls::load(files).map_err(|e| format!("admin.tls: {e}"))?;
        let client_auth = client_auth
            .map(crate::tls::client_verifier)
            .transpose()
            .map_err(|e| format!("admin.tls.client_ca: {e}"))?;
        Ok(crate::tls::ListenerTls { certs, client_auth })
    }
}

impl Instance {
    /// One runtime change, from an admin call or the lifecycle (drained
    /// removals, rollout moves). Alone: the control plane's. In a fleet:
    /// written to etcd guarded by the revision it was made from, then
    /// applied here; a concurrent change by another instance means making
    /// it again on the new state (the change may then be refused by it).
    pub async fn change(&mut self, caller: &Caller, change: &Change) -> Result<(), ControlError> {
        let Some(cluster) = self.cluster.clone() else {
            return self.plane.change(caller, change);
        };
        let before = self.plane.audit_view(change);
        let outcome = self.share(&cluster, change).await;
        match outcome {
            Ok((doc, revision)) => self
                .plane
                .commit_shared(caller, change, before, doc, revision),
            Err(e) => {
                self.plane.refused(caller, change, before, &e);
                Err(e)
            }
        }
    }

    /// Writes `change` to the fleet's state; returns it and its revision.
    async fn share(
        &mut self,
        cluster: &Cluster,
        change: &Change,
    ) -> Result<(crate::state::Overrides, i64), ControlError> {
        // Tried even while the link looks down: one etcd member gone only
        // moves the write to another, and the revision guard keeps a
        // change made from a stale state from landing.
        for _ in 0..FLEET_TRIES {
            let next = self.plane.propose(change)?;
            match cluster.write(self.plane.shared_revision(), &next).await {
                Ok(revision) => return Ok((next, revision)),
                Err(WriteError::Conflict { doc, revision }) => {
                    tracing::debug!(
                        revision,
                        "the fleet's state moved on: making the change again"
                    );
                    self.plane.adopt(*doc, revision);
                }
                Err(WriteError::Unavailable(why)) => {
                    return Err(ControlError::FleetUnavailable(why));
                }
            }
        }
        Err(ControlError::FleetBusy(FLEET_TRIES))
    }

    /// The status; in a fleet, with the link to etcd and each upstream's
    /// requests in flight across the fleet — a drain is `drained` only
    /// when no instance has one left.
    pub async fn status(&self) -> crate::control::status::Status {
        let mut status = self.plane.status();
        let Some(cluster) = &self.cluster else {
            return status;
        };
        status.cluster = Some(cluster.view(self.plane.shared_revision()));
        if !cluster.connected() {
            return status;
        }
        let Ok(others) = cluster.others().await else {
            return status;
        };
        for pool in &mut status.pools {
            for u in &mut pool.upstreams {
                let addr = u.addr.to_string();
                let elsewhere: u64 = others
                    .iter()
                    .filter_map(|r| r["in_flight"][&pool.name][&addr].as_u64())
                    .sum();
                let total = u.in_flight + usize::try_from(elsewhere).unwrap_or(usize::MAX);
                u.fleet_in_flight = Some(total);
                if u.state == "drained" && total > 0 {
                    u.state = "draining".into();
                }
            }
        }
        status
    }

    /// What this instance tells the fleet about itself every heartbeat.
    pub fn fleet_record(&self) -> serde_json::Value {
        serde_json::json!({
            "revision": self.plane.shared_revision(),
            "heartbeat": crate::clock::now_rfc3339(),
            "heartbeat_ms": crate::clock::unix_ms(),
            "pid": std::process::id(),
            "in_flight": self.plane.in_flight_by_upstream(),
            "traffic": self.plane.rollout_traffic(),
        })
    }

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
                    .map(|t| AdminTls::read(&t.files, t.client_auth.as_ref()))
                    .transpose()?;
                listeners.reload(&file.listeners).await?;
                if let (Some(tls), Some(loaded)) = (admin_tls, admin_certs) {
                    tls.store.replace_all(&loaded);
                    tls.store.export_expiry("admin");
                }
                Ok(())
            })
            .await
    }
}

/// The fleet's follower (`cluster::follow`) hands documents to the
/// instance and takes its heartbeat through this.
impl Member for tokio::sync::Mutex<Instance> {
    async fn adopt(&self, doc: crate::state::Overrides, revision: i64) {
        self.lock().await.plane.adopt(doc, revision);
    }

    async fn seeding(&self) -> impl Seeding {
        Held(self.lock().await)
    }

    async fn heartbeat(&self) -> (serde_json::Value, Vec<serde_json::Value>) {
        let mut instance = self.lock().await;
        (instance.fleet_record(), instance.plane.take_audit_outbox())
    }

    async fn unsent(&self, entries: Vec<serde_json::Value>) {
        self.lock().await.plane.return_audit_outbox(entries);
    }
}

/// The instance locked while its state seeds the fleet.
struct Held<'a>(tokio::sync::MutexGuard<'a, Instance>);

impl Seeding for Held<'_> {
    fn doc(&self) -> crate::state::Overrides {
        self.0.plane.overrides_to_share()
    }

    fn adopt(mut self, doc: crate::state::Overrides, revision: i64) {
        self.0.plane.adopt(doc, revision);
    }
}
