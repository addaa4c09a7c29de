//! The control plane: every runtime change (admin call, drain reaper,
//! reload) goes through [`ControlPlane`], one at a time. It does four
//! things, in order: [`apply`] the change (pure), persist the overrides to
//! `state.dir`, publish one new routing table, audit. The published table
//! is its only output: health checks and upstream connection pools follow
//! table swaps themselves (wired in `lifecycle`). The hot path never waits
//! on any of this. Imports `config`, `routing`, `state`, `upstream`, `clock`.

pub mod action;
mod apply;
mod error;
mod reconcile;
mod rollout_changes;
mod rollout_driver;
pub mod status;
mod step;
pub(crate) mod undo;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::balance::sticky::StickyKey;
use crate::clock::{now_rfc3339, unix_ms};
use crate::config::Config;
use crate::dns;
use crate::routing::{Control, RouteTable, Routing};
use crate::state::{AuditEntry, Caller, Overrides, StateError, Store};
use crate::upstream::now_ms;
use step::{Event, Inputs, Shared, Stepped, step};

pub use apply::{Change, apply};
pub use error::ControlError;
pub use reconcile::{effective, reconcile};
pub use rollout_changes::{CheckCall, RolloutStep, WebhookCall};
pub use rollout_driver::{FleetTraffic, fleet_traffic};
pub use undo::UndoTarget;

pub struct ControlPlane {
    /// What the table is made from; only [`ControlPlane::take`] moves it.
    now: Inputs,
    /// What each DNS name resolves to now.
    names: dns::Names,
    config_path: Option<PathBuf>,
    store: Store,
    control: Control,
    /// Set once a binary upgrade handed over to this pid: changes belong
    /// to the new process now, so this one refuses them.
    retired_for: Option<u32>,
    /// Running rollouts' memory between checks.
    runs: rollout_changes::Runs,
    /// In a fleet: audit entries not yet copied to etcd (oldest first,
    /// at most `AUDIT_OUTBOX`).
    audit_outbox: std::collections::VecDeque<Value>,
}

/// Audit entries kept for etcd while it is unreachable; older ones are
/// left in the local audit log only.
const AUDIT_OUTBOX: usize = 1000;

impl ControlPlane {
    /// Opens the state, re-applies persisted runtime changes that the file
    /// has not superseded, and builds the first table (once).
    pub fn start(
        raw_file: Config,
        names: dns::Names,
        config_path: Option<PathBuf>,
        store: Store,
    ) -> Result<ControlPlane, StateError> {
        let file = dns::expand(&raw_file, &names);
        let sticky_key = std::sync::Arc::new(StickyKey::new(store.sticky_key()?));
        let loaded = store.load()?;
        // In a fleet, the saved state is the fleet's last document: kept
        // whole, reconciled with this file only in memory.
        let shared = raw_file.cluster.as_ref().map(|c| Shared {
            revision: store.load_revision(&c.prefix),
            prefix: c.prefix.clone(),
            doc: loaded.clone(),
        });
        let (overrides, dropped) = reconcile(&file, loaded);
        let table = RouteTable::build(&effective(&file, &overrides), None, &sticky_key);
        set_runtime_flags(&table, &overrides);
        let mut plane = ControlPlane {
            now: Inputs {
                raw_file,
                file,
                overrides,
                shared,
            },
            names,
            config_path,
            store,
            control: Control::new(table, sticky_key),
            retired_for: None,
            runs: rollout_changes::Runs::default(),
            audit_outbox: std::collections::VecDeque::new(),
        };
        if let Some(shared) = &plane.now.shared {
            metrics::gauge!(crate::telemetry::names::CLUSTER_REVISION).set(shared.revision as f64);
        } else if !dropped.is_empty() {
            plane.store.save(&plane.now.overrides)?;
            let caller = Caller {
                peer: "startup".into(),
                token: None,
            };
            plane.audit_dropped(&caller, &dropped);
        }
        Ok(plane)
    }

    pub fn routing(&self) -> std::sync::Arc<Routing> {
        self.control.routing()
    }

    pub fn file(&self) -> &Config {
        &self.now.file
    }

    pub fn overrides(&self) -> &Overrides {
        &self.now.overrides
    }

    pub fn status(&self) -> status::Status {
        let mut status =
            status::status(&self.routing().load(), &self.now.overrides, &self.now.file);
        for route in &mut status.routes {
            route.rollout = self.rollout_view(&route.name);
        }
        for pool in &mut status.pools {
            let Some(raw) = self.now.raw_file.pool(&pool.name) else {
                continue;
            };
            pool.names = raw
                .named
                .iter()
                .map(|n| {
                    let state = self.names.get(&(n.host.clone(), n.port)).cloned();
                    json!({"name": n.name(), "weight": n.weight, "state": state.unwrap_or_default()})
                })
                .collect();
        }
        status
    }

    /// Requests in flight per pool and upstream, for the fleet view.
    pub fn in_flight_by_upstream(&self) -> Value {
        let table = self.routing().load();
        let status = status::status(&table, &self.now.overrides, &self.now.file);
        let pools: serde_json::Map<String, Value> = status
            .pools
            .iter()
            .map(|p| {
                let ups: serde_json::Map<String, Value> = p
                    .upstreams
                    .iter()
                    .map(|u| (u.addr.to_string(), json!(u.in_flight)))
                    .collect();
                (p.name.clone(), Value::Object(ups))
            })
            .collect();
        Value::Object(pools)
    }

    /// The DNS names to look up now: never looked up, or looked up longer
    /// ago than their pools' `dns_refresh`.
    pub fn names_due(&self, now_ms: u64) -> Vec<(String, u16)> {
        dns::names_of(&self.now.raw_file)
            .into_iter()
            .filter(|(name, every)| {
                self.names.get(name).is_none_or(|s| {
                    now_ms.saturating_sub(s.resolved_ms) >= every.as_millis() as u64
                })
            })
            .map(|(name, _)| name)
            .collect()
    }

    /// A lookup's outcome. When a name's addresses change, the table is
    /// rebuilt at once: new requests go to the new addresses, requests in
    /// flight to removed ones finish there (their connections close after),
    /// and runtime flags on removed addresses are dropped.
    pub fn name_resolved(
        &mut self,
        host: &str,
        port: u16,
        outcome: Result<Vec<std::net::SocketAddr>, String>,
    ) {
        let state = self.names.entry((host.to_string(), port)).or_default();
        if let Err(e) = &outcome {
            tracing::warn!(name = %format!("{host}:{port}"), error = %e, kept = ?state.addresses, "DNS lookup failed; keeping the last addresses");
        }
        if !dns::record(state, outcome, unix_ms()) {
            return;
        }
        tracing::info!(name = %format!("{host}:{port}"), addresses = ?state.addresses, "DNS name resolves to new addresses");
        let file = dns::expand(&self.now.raw_file, &self.names);
        let caller = Caller {
            peer: "dns".into(),
            token: None,
        };
        // Never refused: new addresses are served even if they cannot be
        // saved (logged in `persist`).
        if let Err(e) = self.take(&caller, Event::Addresses(Box::new(file))) {
            tracing::error!(error = %e, "cannot apply a DNS change");
        }
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
            Some(pid) => Err(ControlError::Retired(pid)),
            None => Ok(()),
        }
    }

    /// One runtime change: apply → persist → publish → audit. Nothing
    /// changes if it is refused or cannot be persisted. Alone, not in a
    /// fleet: there `Instance::change` shares it through etcd.
    pub fn change(&mut self, caller: &Caller, change: &Change) -> Result<(), ControlError> {
        let before = self.audit_view(change);
        let result = self
            .refuse_if_retired()
            .and_then(|()| self.take(caller, Event::Change(change)));
        self.finish(caller, change, before, result.as_ref().err());
        result.map(drop)
    }

    /// What the fleet's document would be after `change`, or why it is
    /// refused; nothing changes yet.
    pub fn propose(&self, change: &Change) -> Result<Overrides, ControlError> {
        self.refuse_if_retired()?;
        let table = self.routing().load();
        let in_rotation = |pool: &str| table.pool(pool).is_some_and(|p| p.in_rotation());
        step::propose(&self.now, change, &in_rotation)
    }

    /// The revision of the shared state proposals are made from (0: none).
    pub fn shared_revision(&self) -> i64 {
        self.now.revision()
    }

    /// What a new fleet starts from: this instance's state.
    pub fn overrides_to_share(&self) -> Overrides {
        self.now.base().clone()
    }

    /// Makes a proposal live once etcd holds it as `doc` at `revision`:
    /// persisted, published and audited as `change`.
    pub fn commit_shared(
        &mut self,
        caller: &Caller,
        change: &Change,
        before: Value,
        doc: Overrides,
        revision: i64,
    ) -> Result<(), ControlError> {
        let result = self.take(
            caller,
            Event::Fleet {
                doc: Box::new(doc),
                revision,
            },
        );
        self.finish(caller, change, before, result.as_ref().err());
        result.map(drop)
    }

    /// Audits a change refused before it could be committed.
    pub fn refused(
        &mut self,
        caller: &Caller,
        change: &Change,
        before: Value,
        error: &ControlError,
    ) {
        self.finish(caller, change, before, Some(error));
    }

    /// After a change (`error`: refused): the rollout hooks, then the
    /// audit line.
    fn finish(
        &mut self,
        caller: &Caller,
        change: &Change,
        before: Value,
        error: Option<&ControlError>,
    ) {
        if let (None, Change::Rollout { route, step, .. }) = (error, change) {
            self.after_move(route, step);
        }
        if let (None, Change::StartRollout { route, spec, .. }) = (error, change) {
            tracing::info!(%route, to = %spec.to, steps = ?spec.steps, interval = ?spec.interval, "rollout started");
        }
        if let (None, Change::StartRollouts { spec, .. }) = (error, change) {
            let routes = self.routes_moved_by(change).join(",");
            tracing::info!(%routes, to = %spec.to, steps = ?spec.steps, interval = ?spec.interval, "rollout of several routes started");
        }
        let (after, outcome) = match error {
            None => (self.audit_view(change), "ok".to_string()),
            Some(e) => (before.clone(), format!("refused: {e}")),
        };
        self.audit(
            caller,
            change.action(),
            &change.target(),
            before,
            after,
            &outcome,
        );
    }

    /// A newer fleet state from etcd (another instance's change, or this
    /// one's coming back through the watch). Older or equal revisions are
    /// ignored.
    pub fn adopt(&mut self, doc: Overrides, revision: i64) {
        if self.now.shared.is_none() || revision <= self.now.revision() {
            return;
        }
        let caller = Caller {
            peer: "fleet".into(),
            token: None,
        };
        // Never refused: the fleet has it (a failed save is logged).
        match self.take(
            &caller,
            Event::Fleet {
                doc: Box::new(doc),
                revision,
            },
        ) {
            Ok(_) => tracing::info!(revision, "applied the fleet's state"),
            Err(e) => tracing::error!(revision, error = %e, "cannot apply the fleet's state"),
        }
    }

    /// The one way the runtime state moves: [`step`] (pure), then the one
    /// commit — persist, publish the table, audit the runtime changes the
    /// file superseded (returned). Nothing moves if the step is refused,
    /// or if the event must be saved and cannot be.
    fn take(&mut self, caller: &Caller, event: Event<'_>) -> Result<Vec<String>, ControlError> {
        let must_save = event.refused_unless_saved();
        let audits_drops = event.audits_drops();
        let table = self.routing().load();
        let in_rotation = |pool: &str| table.pool(pool).is_some_and(|p| p.in_rotation());
        let Stepped { next, dropped } = step(&self.now, event, &in_rotation)?;
        self.persist(&next, must_save)?;
        let revision = next.shared.as_ref().map(|s| s.revision);
        self.now = next;
        self.publish();
        if let Some(revision) = revision {
            metrics::gauge!(crate::telemetry::names::CLUSTER_REVISION).set(revision as f64);
        }
        if audits_drops {
            self.audit_dropped(caller, &dropped);
        }
        Ok(dropped)
    }

    /// Saves `next` to `state.dir`. Alone: the overrides. In a fleet:
    /// the fleet's document whole, with its revision, when it moved — what
    /// this file drops of it is dropped in memory only. A failed save
    /// refuses the step only when `must_save`; else it is served anyway
    /// (only a restart before the disk is fixed would start from an older
    /// copy, and a fleet catches up).
    fn persist(&self, next: &Inputs, must_save: bool) -> Result<(), ControlError> {
        let saved = match &next.shared {
            Some(shared) if shared.revision != self.now.revision() => self
                .store
                .save(&shared.doc)
                .and_then(|()| self.store.save_revision(&shared.prefix, shared.revision)),
            Some(_) => Ok(()),
            None if must_save || next.overrides != self.now.overrides => {
                self.store.save(&next.overrides)
            }
            None => Ok(()),
        };
        match saved {
            Err(e) if must_save => Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, "cannot save the runtime state here; serving it");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Builds the table for the file and overrides, sets each upstream's
    /// runtime flags, and publishes it in one swap.
    fn publish(&mut self) {
        let table = self
            .control
            .build(&effective(&self.now.file, &self.now.overrides));
        set_runtime_flags(&table, &self.now.overrides);
        self.control.store(table);
    }

    /// What the audit log shows of the thing a change touches.
    pub fn audit_view(&self, change: &Change) -> Value {
        let table = self.routing().load();
        match change {
            Change::StartRollout { route, .. } | Change::Rollout { route, .. } => {
                json!({"split": table.route(route).map(|r| split_json(&table, r)), "rollout": self.rollout_view(route)})
            }
            Change::SetSplit { route, .. } => table
                .route(route)
                .map_or(Value::Null, |r| split_json(&table, r)),
            Change::StartRollouts { .. } | Change::Undo { .. } => {
                let routes: serde_json::Map<String, Value> = self
                    .routes_moved_by(change)
                    .into_iter()
                    .filter_map(|route| {
                        let r = table.route(&route)?;
                        Some((route, split_json(&table, r)))
                    })
                    .collect();
                json!({"routes": routes})
            }
            Change::SetMirror { route, .. } => {
                table.route(route).and_then(|r| r.mirror.as_ref()).map_or(
                    Value::Null,
                    |m| json!({"pool": m.pool.as_ref(), "percent": m.settings.percent}),
                )
            }
            Change::DrainPool { pool, .. } => table.pool(pool).map_or(Value::Null, |p| {
                json!(status::pool_view(
                    &table,
                    &self.now.overrides,
                    &self.now.file,
                    p
                ))
            }),
            _ => match change.upstream() {
                Some((pool, addr)) => self.upstream_json(pool, addr),
                None => Value::Null,
            },
        }
    }

    /// The routes a rollout over several routes or an undo moves (before
    /// it is made, as after: the audit's before and after).
    pub fn routes_moved_by(&self, change: &Change) -> Vec<String> {
        let o = &self.now.overrides;
        match change {
            Change::StartRollouts {
                from, routes, spec, ..
            } => {
                // After the change, its members say it; before, the same
                // choice the change makes.
                let started = o
                    .rollouts
                    .values()
                    .find(|r| r.group.is_some() && r.state.is_active() && r.spec == **spec);
                match started.and_then(|r| r.group.as_ref()) {
                    Some(g) if routes.is_empty() || g.routes == *routes => g.routes.clone(),
                    _ => rollout_changes::group_routes(
                        o,
                        &self.now.file,
                        &spec.to,
                        from.as_deref(),
                        routes,
                    )
                    .unwrap_or_default(),
                }
            }
            Change::Undo {
                target: UndoTarget::Route(route),
            } => vec![route.clone()],
            Change::Undo {
                target: UndoTarget::Pool(pool),
            } => undo::routes_moving(o, pool),
            _ => Vec::new(),
        }
    }

    pub fn upstream_json(&self, pool: &str, addr: std::net::SocketAddr) -> Value {
        status::upstream_view(
            &self.routing().load(),
            &self.now.overrides,
            &self.now.file,
            pool,
            addr,
        )
        .map_or(Value::Null, |u| json!(u))
    }

    /// The removals of upstreams `DELETE` marked that are now drained, for
    /// the lifecycle to make (`Instance::change`) every 250 ms.
    pub fn drained_removals(&self) -> Vec<Change> {
        if self.retired_for.is_some() {
            return Vec::new();
        }
        let table = self.routing().load();
        let mut done = Vec::new();
        for (pool, addrs) in &self.now.overrides.removing {
            let sticky = table.pool_is_sticky(pool);
            for addr in addrs {
                let drained = table
                    .upstream(pool, *addr)
                    .is_none_or(|u| status::state_word(u, sticky) == "drained");
                if drained {
                    done.push(Change::RemoveDrained {
                        pool: pool.clone(),
                        addr: *addr,
                    });
                }
            }
        }
        done
    }

    /// `POST /api/v1/reload` and SIGHUP: re-read the file. `listeners` is the
    /// listener step (bind new ones, close removed ones); if it fails, or the
    /// file is invalid, nothing changes. Returns the runtime changes the new
    /// file superseded.
    pub async fn reload<F>(
        &mut self,
        caller: &Caller,
        listeners: F,
    ) -> Result<Vec<String>, ControlError>
    where
        F: AsyncFnOnce(&Config) -> Result<(), String>,
    {
        let result = self.try_reload(caller, listeners).await;
        let (after, outcome) = match &result {
            Ok(_) => (json!(self.now.file.summary()), "ok".to_string()),
            Err(e) => (e.detail(), format!("refused: {e}")),
        };
        self.audit(caller, "reload", "config", Value::Null, after, &outcome);
        result
    }

    async fn try_reload<F>(
        &mut self,
        caller: &Caller,
        listeners: F,
    ) -> Result<Vec<String>, ControlError>
    where
        F: AsyncFnOnce(&Config) -> Result<(), String>,
    {
        self.refuse_if_retired()?;
        let Some(path) = self.config_path.clone() else {
            return Err(ControlError::NoConfigFile);
        };
        let raw = Config::load(&path).map_err(|e| ControlError::InvalidConfig(e.problems))?;
        // Names new to this file are looked up by the DNS task within a
        // second; until then they have no address.
        let file = dns::expand(&raw, &self.names);
        let now = &self.now.file;
        if file.proxy != now.proxy || file.admin != now.admin || file.state != now.state {
            tracing::warn!("[proxy], [admin] and [state] changes take effect at the next start");
        }
        listeners(&file).await.map_err(ControlError::Listener)?;
        let (raw, file) = (Box::new(raw), Box::new(file));
        self.take(caller, Event::File { raw, file })
    }

    /// The audit log's last `n` entries, oldest first.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<Value>, ControlError> {
        Ok(self.store.audit_tail(n)?)
    }

    /// A refused admin call (no or wrong token), in the audit log.
    pub fn audit_auth_failure(&mut self, caller: &Caller, path: &str, why: &str) {
        self.audit(caller, "auth_failed", path, Value::Null, Value::Null, why);
    }

    fn audit_dropped(&mut self, caller: &Caller, dropped: &[String]) {
        for reason in dropped {
            tracing::warn!(%reason, "runtime change dropped: the config file changed the same value");
            self.audit(
                caller,
                "drop_runtime_change",
                reason,
                Value::Null,
                Value::Null,
                "ok",
            );
        }
    }

    pub(super) fn audit(
        &mut self,
        caller: &Caller,
        action: &str,
        target: &str,
        before: Value,
        after: Value,
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
        if self.now.shared.is_some() {
            if self.audit_outbox.len() == AUDIT_OUTBOX {
                self.audit_outbox.pop_front();
            }
            self.audit_outbox.push_back(json!(entry));
        }
    }

    /// In a fleet: the audit entries to copy to etcd now.
    pub fn take_audit_outbox(&mut self) -> Vec<Value> {
        self.audit_outbox.drain(..).collect()
    }

    /// Entries that could not be copied, back at the front, in order.
    pub fn return_audit_outbox(&mut self, entries: Vec<Value>) {
        for entry in entries.into_iter().rev() {
            if self.audit_outbox.len() == AUDIT_OUTBOX {
                break;
            }
            self.audit_outbox.push_front(entry);
        }
    }

    /// Audits a call refused before it became a change (bad body, bad
    /// address).
    pub fn audit_refusal(
        &mut self,
        caller: &Caller,
        action: &str,
        target: &str,
        error: &ControlError,
    ) {
        let result = format!("refused: {error}");
        self.audit(caller, action, target, Value::Null, Value::Null, &result);
    }

    /// Audits a binary upgrade (which changes no runtime state).
    pub fn audit_upgrade(&mut self, caller: &Caller, handover: &Value, result: &str) {
        let pid = json!({"pid": std::process::id()});
        self.audit(caller, "upgrade", "process", pid, handover.clone(), result);
    }
}

/// A route's split in the table, as the audit log shows it.
fn split_json(table: &RouteTable, route: &crate::routing::Route) -> Value {
    let split: serde_json::Map<String, Value> = table
        .split(route)
        .into_iter()
        .map(|(p, w)| (p.to_string(), json!(w)))
        .collect();
    Value::Object(split)
}

/// How long sticky clients may stay on a draining upstream when the call
/// names no timeout.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The drain deadline (Unix ms) for a drain starting now.
pub fn drain_deadline(timeout: Option<Duration>) -> u64 {
    let t = timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    unix_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Sets the disabled and draining flags of every upstream of `table` from
/// the overrides, before the table is published.
fn set_runtime_flags(table: &RouteTable, overrides: &Overrides) {
    let (now_unix, now_mono) = (unix_ms(), now_ms());
    for pool in table.pools() {
        for u in &pool.upstreams {
            let addr = u.state.addr();
            u.state
                .set_disabled(overrides.is_disabled(&pool.name, addr));
            // Deadlines are kept as wall-clock time (they survive a
            // restart) and enforced on the monotonic clock.
            let deadline = overrides
                .drain_deadline(&pool.name, addr)
                .map(|d| now_mono.saturating_add(d.saturating_sub(now_unix)));
            u.state.set_draining(deadline);
        }
    }
}
