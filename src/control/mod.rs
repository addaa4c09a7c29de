//! The control plane: every runtime change (admin call, reload) goes
//! through [`ControlPlane`], one at a time. A change is validated, persisted
//! to `state.dir`, then published as a new routing table in one swap, and
//! recorded in the audit log. The hot path never waits on any of this.

mod reconcile;
pub mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::config::{Config, MAX_WEIGHT};
use crate::health::HealthChecks;
use crate::routing::{Control, Routing};
use crate::server::Listeners;
use crate::state::{
    AuditEntry, Caller, Overrides, SplitOverride, StateError, Store, now_rfc3339, unix_ms,
};
use crate::upstream::now_ms;

pub use reconcile::{effective, file_split, reconcile};

/// Why a change was refused; each maps to one admin status code.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the config file has {} problem(s)", .0.len())]
    InvalidConfig(Vec<String>),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Listener(String),
}

pub struct ControlPlane {
    file: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
    store: Store,
    control: Control,
    listeners: Listeners,
    health: HealthChecks,
    /// Set once a binary upgrade handed over to this pid: changes belong
    /// to the new process now, so this one refuses them.
    retired_for: Option<u32>,
}

impl ControlPlane {
    /// Opens the state directory, re-applies persisted runtime changes that
    /// the file has not superseded, and publishes the first table.
    pub fn new(
        file: Config,
        config_path: Option<PathBuf>,
        store: Store,
        control: Control,
        listeners: Listeners,
    ) -> Result<ControlPlane, crate::Error> {
        let loaded = store.load()?;
        let (overrides, dropped) = reconcile(&file, loaded.clone());
        let mut plane = ControlPlane {
            file,
            config_path,
            overrides,
            store,
            control,
            listeners,
            health: HealthChecks::new(),
            retired_for: None,
        };
        if !dropped.is_empty() {
            plane.store.save(&plane.overrides)?;
            let caller = Caller {
                peer: "startup".into(),
                token: None,
            };
            for reason in &dropped {
                tracing::warn!(%reason, "runtime change dropped: the config file changed the same value");
                plane.audit(
                    &caller,
                    "drop_runtime_change",
                    reason,
                    json!(null),
                    json!(null),
                    "ok",
                );
            }
        }
        plane.publish();
        Ok(plane)
    }

    pub fn routing(&self) -> Arc<Routing> {
        self.control.routing()
    }

    pub fn listeners(&mut self) -> &mut Listeners {
        &mut self.listeners
    }

    pub fn file(&self) -> &Config {
        &self.file
    }

    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Builds and publishes the table for the current file and overrides,
    /// and sets each upstream's runtime flags.
    fn publish(&mut self) {
        let config = effective(&self.file, &self.overrides);
        self.control.apply_config(&config);
        let table = self.control.routing().load();
        let (now_unix, now_mono) = (unix_ms(), now_ms());
        for pool in table.pools() {
            for u in &pool.upstreams {
                let addr = u.state.addr();
                u.state
                    .set_disabled(self.overrides.is_disabled(&pool.name, addr));
                // Deadlines are kept as wall-clock time (they survive a
                // restart) and enforced on the monotonic clock.
                let deadline = self
                    .overrides
                    .drain_deadline(&pool.name, addr)
                    .map(|d| now_mono.saturating_add(d.saturating_sub(now_unix)));
                u.state.set_draining(deadline);
            }
        }
        self.health.sync(&table);
        self.listeners.proxy().sync_upstreams(&table);
    }

    /// Waits until every upstream of a checked pool has its first verdict
    /// (bounded by `limit`), so a start does not answer 503 while checks run.
    pub async fn first_health_verdicts(&self, limit: Duration) {
        self.health.first_verdicts(limit).await;
    }

    /// After a binary upgrade handed over to `pid`: refuse every change.
    pub fn retire(&mut self, pid: u32) {
        self.retired_for = Some(pid);
    }

    pub fn retired_for(&self) -> Option<u32> {
        self.retired_for
    }

    fn refuse_if_retired(&self) -> Result<(), ControlError> {
        match self.retired_for {
            Some(pid) => Err(ControlError::Conflict(format!(
                "this process handed over to pid {pid} in a binary upgrade; send the call again"
            ))),
            None => Ok(()),
        }
    }

    /// Persists `next`, then makes it live. Nothing changes if persisting fails.
    fn commit(&mut self, next: Overrides) -> Result<(), ControlError> {
        self.refuse_if_retired()?;
        self.store.save(&next)?;
        self.overrides = next;
        self.publish();
        Ok(())
    }

    fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        before: serde_json::Value,
        after: serde_json::Value,
        result: &str,
    ) {
        let entry = AuditEntry {
            time: now_rfc3339(),
            caller,
            action,
            target,
            before,
            after,
            result,
        };
        if let Err(e) = self.store.audit(&entry) {
            tracing::error!(error = %e, action, target, "cannot write the audit log");
        }
    }

    /// Audits a call refused before it reached the control plane (bad body,
    /// bad address).
    pub fn audit_refusal(&self, caller: &Caller, action: &str, target: &str, reason: &str) {
        self.audit(
            caller,
            action,
            target,
            json!(null),
            json!(null),
            &format!("refused: {reason}"),
        );
    }

    /// Audits a binary upgrade (which changes no runtime state).
    pub fn audit_upgrade(&self, caller: &Caller, handover: &serde_json::Value, result: &str) {
        let pid = json!({"pid": std::process::id()});
        self.audit(caller, "upgrade", "process", pid, handover.clone(), result);
    }

    /// Records a call's outcome in the audit log and passes it on.
    fn audited<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        before: serde_json::Value,
        result: Result<T, ControlError>,
        after: impl FnOnce(&Self) -> serde_json::Value,
    ) -> Result<T, ControlError> {
        match &result {
            Ok(_) => self.audit(caller, action, target, before, after(self), "ok"),
            Err(e) => self.audit(
                caller,
                action,
                target,
                before.clone(),
                before,
                &format!("refused: {e}"),
            ),
        }
        result
    }

    fn current_split(&self, route: &str) -> serde_json::Value {
        let table = self.control.routing().load();
        table
            .route(route)
            .map(|r| {
                let split: BTreeMap<String, u32> = table
                    .split(r)
                    .into_iter()
                    .map(|(p, w)| (p.to_string(), w))
                    .collect();
                json!(split)
            })
            .unwrap_or(json!(null))
    }

    /// `PUT /api/v1/routes/{route}/split`.
    pub fn set_split(
        &mut self,
        caller: &Caller,
        route: &str,
        split: BTreeMap<String, u32>,
        force: bool,
    ) -> Result<(), ControlError> {
        let before = self.current_split(route);
        let result = self.try_set_split(route, split, force);
        self.audited(caller, "set_split", route, before, result, |s| {
            s.current_split(route)
        })
    }

    fn try_set_split(
        &mut self,
        route: &str,
        split: BTreeMap<String, u32>,
        force: bool,
    ) -> Result<(), ControlError> {
        let Some(base) = file_split(&self.file, route) else {
            return Err(ControlError::NotFound(format!("no route named {route:?}")));
        };
        if split.is_empty() {
            return Err(ControlError::BadRequest(
                "split: name at least one pool".into(),
            ));
        }
        let table = self.control.routing().load();
        for (pool, weight) in &split {
            let Some(p) = table.pool(pool) else {
                return Err(ControlError::NotFound(format!("no pool named {pool:?}")));
            };
            if *weight > MAX_WEIGHT {
                return Err(ControlError::BadRequest(format!(
                    "{pool}: weight must be an integer from 0 to {MAX_WEIGHT}"
                )));
            }
            let eligible = p
                .upstreams
                .iter()
                .any(|u| u.weight > 0 && u.state.is_eligible());
            if *weight > 0 && !eligible && !force {
                return Err(ControlError::Conflict(format!(
                    "pool {pool:?} has no healthy upstream in rotation: refusing to send it traffic (add ?force=true to insist)"
                )));
            }
        }
        if split.values().all(|w| *w == 0) {
            return Err(ControlError::BadRequest(
                "split: every weight is 0; at least one must be above 0".into(),
            ));
        }
        let mut next = self.overrides.clone();
        if split == base {
            // Back to the file's value: no override needed.
            next.splits.remove(route);
        } else {
            next.splits.insert(
                route.to_string(),
                SplitOverride {
                    split,
                    file_split: base,
                },
            );
        }
        self.commit(next)
    }

    fn pool_exists(&self, pool: &str) -> Result<(), ControlError> {
        if self.file.pool(pool).is_some() {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!("no pool named {pool:?}")))
        }
    }

    fn upstream_exists(&self, pool: &str, addr: SocketAddr) -> Result<(), ControlError> {
        self.pool_exists(pool)?;
        if self.control.routing().load().upstream(pool, addr).is_some() {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!(
                "pool {pool:?} has no upstream {addr}"
            )))
        }
    }

    fn upstream_json(&self, pool: &str, addr: SocketAddr) -> serde_json::Value {
        status::upstream_view(
            &self.control.routing().load(),
            &self.overrides,
            &self.file,
            pool,
            addr,
        )
        .map(|u| json!(u))
        .unwrap_or(json!(null))
    }

    /// `POST /api/v1/pools/{pool}/upstreams`.
    pub fn add_upstream(
        &mut self,
        caller: &Caller,
        pool: &str,
        addr: SocketAddr,
        weight: u32,
    ) -> Result<(), ControlError> {
        let target = format!("{pool}/{addr}");
        let result = (|| {
            self.pool_exists(pool)?;
            if weight > MAX_WEIGHT {
                return Err(ControlError::BadRequest(format!(
                    "weight: must be an integer from 0 to {MAX_WEIGHT}"
                )));
            }
            if self.control.routing().load().upstream(pool, addr).is_some() {
                return Err(ControlError::Conflict(format!(
                    "pool {pool:?} already has upstream {addr}"
                )));
            }
            let mut next = self.overrides.clone();
            let file_weight = self
                .file
                .pool(pool)
                .and_then(|p| p.upstreams.iter().find(|u| u.addr == addr))
                .map(|u| u.weight);
            match file_weight {
                // Re-adding a file upstream that was removed at runtime.
                Some(w) if w == weight => {
                    if let Some(r) = next.removed.get_mut(pool) {
                        r.remove(&addr);
                    }
                }
                _ => {
                    if let Some(r) = next.removed.get_mut(pool) {
                        r.remove(&addr);
                    }
                    if file_weight.is_none() {
                        next.added
                            .entry(pool.to_string())
                            .or_default()
                            .insert(addr, weight);
                    }
                }
            }
            self.commit(next)
        })();
        self.audited(caller, "add_upstream", &target, json!(null), result, |s| {
            s.upstream_json(pool, addr)
        })
    }

    /// `DELETE /api/v1/pools/{pool}/upstreams/{addr}`: drains the upstream
    /// (sticky clients may stay until `timeout`), and `reap` removes it once
    /// it is drained.
    pub fn remove_upstream(
        &mut self,
        caller: &Caller,
        pool: &str,
        addr: SocketAddr,
        timeout: Option<Duration>,
    ) -> Result<(), ControlError> {
        self.change_upstream(caller, "remove_upstream", pool, addr, |o| {
            // An earlier, shorter drain deadline stands.
            let deadline = drain_deadline(timeout);
            let d = o
                .drained
                .entry(pool.to_string())
                .or_default()
                .entry(addr)
                .or_insert(deadline);
            *d = (*d).min(deadline);
            o.removing.entry(pool.to_string()).or_default().insert(addr);
        })
    }

    /// Removes the upstreams `DELETE` marked once they are drained. Called
    /// periodically by the lifecycle.
    pub fn reap(&mut self) {
        if self.retired_for.is_some() {
            return;
        }
        let table = self.control.routing().load();
        let mut done = Vec::new();
        for (pool, addrs) in &self.overrides.removing {
            let sticky = table.pool_is_sticky(pool);
            for addr in addrs {
                let drained = table
                    .upstream(pool, *addr)
                    .is_none_or(|u| status::state_word(u, sticky) == "drained");
                if drained {
                    done.push((pool.clone(), *addr));
                }
            }
        }
        for (pool, addr) in done {
            let before = self.upstream_json(&pool, addr);
            let mut next = self.overrides.clone();
            let runtime_added = next
                .added
                .get_mut(&pool)
                .and_then(|a| a.remove(&addr))
                .is_some();
            if !runtime_added {
                let weight = self
                    .file
                    .pool(&pool)
                    .and_then(|p| p.upstreams.iter().find(|u| u.addr == addr))
                    .map_or(0, |u| u.weight);
                next.removed
                    .entry(pool.clone())
                    .or_default()
                    .insert(addr, weight);
            }
            forget_flags(&mut next, &pool, addr);
            let (next, _) = reconcile(&self.file, next);
            let caller = Caller {
                peer: "drain".into(),
                token: None,
            };
            let result = self.commit(next);
            if let Err(e) = &result {
                tracing::error!(%pool, %addr, error = %e, "cannot remove drained upstream");
            } else {
                tracing::info!(%pool, %addr, "drained upstream removed");
            }
            let _ = self.audited(
                &caller,
                "remove_drained_upstream",
                &format!("{pool}/{addr}"),
                before,
                result,
                |_| json!(null),
            );
        }
    }

    /// `POST …/{addr}/disable`.
    pub fn disable_upstream(
        &mut self,
        caller: &Caller,
        pool: &str,
        addr: SocketAddr,
    ) -> Result<(), ControlError> {
        self.change_upstream(caller, "disable_upstream", pool, addr, |o| {
            o.disabled.entry(pool.to_string()).or_default().insert(addr);
        })
    }

    /// `POST …/{addr}/enable`: clears disable, drain and a pending removal.
    pub fn enable_upstream(
        &mut self,
        caller: &Caller,
        pool: &str,
        addr: SocketAddr,
    ) -> Result<(), ControlError> {
        self.change_upstream(caller, "enable_upstream", pool, addr, |o| {
            forget_flags(o, pool, addr)
        })
    }

    /// `POST …/{addr}/drain`: no new requests except from clients sticky to
    /// it, until `timeout`; in-flight requests finish.
    pub fn drain_upstream(
        &mut self,
        caller: &Caller,
        pool: &str,
        addr: SocketAddr,
        timeout: Option<Duration>,
    ) -> Result<(), ControlError> {
        self.change_upstream(caller, "drain_upstream", pool, addr, |o| {
            o.drained
                .entry(pool.to_string())
                .or_default()
                .insert(addr, drain_deadline(timeout));
        })
    }

    /// One change to one upstream: check it exists, edit a copy of the
    /// overrides, commit it, and audit the upstream before and after.
    fn change_upstream(
        &mut self,
        caller: &Caller,
        action: &str,
        pool: &str,
        addr: SocketAddr,
        edit: impl FnOnce(&mut Overrides),
    ) -> Result<(), ControlError> {
        let target = format!("{pool}/{addr}");
        let before = self.upstream_json(pool, addr);
        let result = self.upstream_exists(pool, addr).and_then(|_| {
            let mut next = self.overrides.clone();
            edit(&mut next);
            self.commit(next)
        });
        self.audited(caller, action, &target, before, result, |s| {
            s.upstream_json(pool, addr)
        })
    }

    /// `POST /api/v1/pools/{pool}/drain`.
    pub fn drain_pool(
        &mut self,
        caller: &Caller,
        pool: &str,
        timeout: Option<Duration>,
    ) -> Result<(), ControlError> {
        let result = self.pool_exists(pool).and_then(|_| {
            let table = self.control.routing().load();
            let addrs: Vec<SocketAddr> = table
                .pool(pool)
                .map(|p| p.upstreams.iter().map(|u| u.state.addr()).collect())
                .unwrap_or_default();
            self.drain(pool, &addrs, timeout)
        });
        self.audited(caller, "drain_pool", pool, json!(null), result, |_| {
            json!("draining")
        })
    }

    fn drain(
        &mut self,
        pool: &str,
        addrs: &[SocketAddr],
        timeout: Option<Duration>,
    ) -> Result<(), ControlError> {
        let mut next = self.overrides.clone();
        let deadline = drain_deadline(timeout);
        let drains = next.drained.entry(pool.to_string()).or_default();
        for addr in addrs {
            drains.insert(*addr, deadline);
        }
        self.commit(next)
    }

    /// `POST /api/v1/reload` and SIGHUP: re-read the file. An invalid file
    /// changes nothing. Returns the runtime changes the new file superseded.
    pub async fn reload(&mut self, caller: &Caller) -> Result<Vec<String>, ControlError> {
        let result = self.try_reload().await;
        match &result {
            Ok(dropped) => {
                for reason in dropped {
                    self.audit(
                        caller,
                        "drop_runtime_change",
                        reason,
                        json!(null),
                        json!(null),
                        "ok",
                    );
                }
                self.audit(
                    caller,
                    "reload",
                    "config",
                    json!(null),
                    json!(self.file.summary()),
                    "ok",
                );
            }
            Err(ControlError::InvalidConfig(problems)) => self.audit(
                caller,
                "reload",
                "config",
                json!(null),
                json!(problems),
                "refused: invalid config",
            ),
            Err(e) => self.audit(
                caller,
                "reload",
                "config",
                json!(null),
                json!(null),
                &format!("refused: {e}"),
            ),
        }
        result
    }

    async fn try_reload(&mut self) -> Result<Vec<String>, ControlError> {
        self.refuse_if_retired()?;
        let Some(path) = self.config_path.clone() else {
            return Err(ControlError::BadRequest(
                "this instance was not started from a config file".into(),
            ));
        };
        let file = Config::load(&path).map_err(|e| ControlError::InvalidConfig(e.problems))?;
        if file.proxy != self.file.proxy
            || file.admin != self.file.admin
            || file.state != self.file.state
        {
            tracing::warn!("[proxy], [admin] and [state] changes take effect at the next start");
        }
        let certs =
            crate::tls::load_listeners(&file.listeners).map_err(ControlError::InvalidConfig)?;
        self.listeners
            .reconcile(&file.listeners, &certs)
            .await
            .map_err(|e| ControlError::Listener(e.to_string()))?;
        let (next, dropped) = reconcile(&file, self.overrides.clone());
        self.store.save(&next)?;
        // Keep settings that only apply at start, so status stays truthful.
        let mut file = file;
        file.proxy = self.file.proxy.clone();
        file.admin = self.file.admin.clone();
        file.state = self.file.state.clone();
        self.file = file;
        self.overrides = next;
        self.publish();
        for reason in &dropped {
            tracing::warn!(%reason, "runtime change dropped: the config file changed the same value");
        }
        Ok(dropped)
    }
}

/// How long sticky clients may stay on a draining upstream when the call
/// names no timeout.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn drain_deadline(timeout: Option<Duration>) -> u64 {
    let t = timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    unix_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Clears every runtime flag of an upstream: disable, drain, removal.
fn forget_flags(o: &mut Overrides, pool: &str, addr: SocketAddr) {
    if let Some(s) = o.disabled.get_mut(pool) {
        s.remove(&addr);
    }
    if let Some(s) = o.drained.get_mut(pool) {
        s.remove(&addr);
    }
    if let Some(s) = o.removing.get_mut(pool) {
        s.remove(&addr);
    }
    o.disabled.retain(|_, s| !s.is_empty());
    o.drained.retain(|_, s| !s.is_empty());
    o.removing.retain(|_, s| !s.is_empty());
}
