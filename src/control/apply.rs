//! The pure core of the control plane: a [`Change`] applied to the current
//! overrides gives the next overrides, or the reason it is refused. No I/O,
//! no clock, no live table: what the caller knows of the running proxy (which
//! pools have an upstream in rotation) comes in as an argument, and drain
//! deadlines come in the change itself.

use std::net::SocketAddr;

use crate::config::{Config, MirrorTarget, Split};
use crate::state::Overrides;

use super::action;
use super::error::ControlError;
use super::reconcile::{effective, put_mirror, put_split, reconcile};
use super::rollout_changes::{
    RolloutStep, group_routes, move_rollout, no_active_rollout, start_group_rollout, start_rollout,
};
use super::undo::{UndoTarget, remember, split_of, undo};
use crate::rollout::RolloutSpec;

/// One runtime change, as an admin call (or the drain reaper) asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    SetSplit {
        route: String,
        split: Split,
        /// Send traffic to a pool even with no upstream in rotation.
        force: bool,
    },
    AddUpstream {
        pool: String,
        addr: SocketAddr,
        weight: u32,
    },
    /// Drain, then remove once drained (`RemoveDrained`).
    RemoveUpstream {
        pool: String,
        addr: SocketAddr,
        /// Unix ms until which sticky clients may stay.
        drain_until: u64,
    },
    /// The reaper's half of `RemoveUpstream`, once the upstream is drained.
    RemoveDrained {
        pool: String,
        addr: SocketAddr,
    },
    DisableUpstream {
        pool: String,
        addr: SocketAddr,
    },
    /// Clears disable, drain and a pending removal.
    EnableUpstream {
        pool: String,
        addr: SocketAddr,
    },
    DrainUpstream {
        pool: String,
        addr: SocketAddr,
        drain_until: u64,
    },
    DrainPool {
        pool: String,
        drain_until: u64,
    },
    /// Shadow traffic of a route; percent 0 stops it. Without `pool`, the
    /// route's current mirror pool.
    SetMirror {
        route: String,
        pool: Option<String>,
        percent: u32,
    },
    StartRollout {
        route: String,
        spec: Box<RolloutSpec>,
        now_ms: u64,
        /// Start even with no upstream of the target in rotation.
        force: bool,
    },
    /// One rollout over several routes (`POST /api/v1/rollouts`): those
    /// named, or every route splitting between `from` (or the one pool
    /// they split with) and the spec's target.
    StartRollouts {
        from: Option<String>,
        routes: Vec<String>,
        spec: Box<RolloutSpec>,
        now_ms: u64,
        force: bool,
    },
    Rollout {
        route: String,
        step: RolloutStep,
        now_ms: u64,
    },
    /// Restores the split from before the last change of a route, or of
    /// every route whose last change moved `pool`'s share.
    Undo {
        target: UndoTarget,
    },
}

impl Change {
    /// The audit log's `action`.
    pub fn action(&self) -> &'static str {
        match self {
            Change::SetSplit { .. } => action::SET_SPLIT,
            Change::SetMirror { .. } => action::SET_MIRROR,
            Change::AddUpstream { .. } => action::ADD_UPSTREAM,
            Change::RemoveUpstream { .. } => action::REMOVE_UPSTREAM,
            Change::RemoveDrained { .. } => action::REMOVE_DRAINED_UPSTREAM,
            Change::DisableUpstream { .. } => action::DISABLE_UPSTREAM,
            Change::EnableUpstream { .. } => action::ENABLE_UPSTREAM,
            Change::DrainUpstream { .. } => action::DRAIN_UPSTREAM,
            Change::DrainPool { .. } => action::DRAIN_POOL,
            Change::StartRollout { .. } | Change::StartRollouts { .. } => action::START_ROLLOUT,
            Change::Rollout { step, .. } => step.action(),
            Change::Undo { .. } => action::UNDO,
        }
    }

    /// The audit log's `target`: a route, a pool, or `pool/addr`.
    pub fn target(&self) -> String {
        match self {
            Change::SetSplit { route, .. }
            | Change::SetMirror { route, .. }
            | Change::StartRollout { route, .. }
            | Change::Rollout { route, .. } => route.clone(),
            Change::DrainPool { pool, .. } => pool.clone(),
            Change::StartRollouts {
                from, routes, spec, ..
            } => {
                if routes.is_empty() {
                    format!("{}->{}", from.as_deref().unwrap_or("*"), spec.to)
                } else {
                    routes.join(",")
                }
            }
            Change::Undo { target } => target.to_string(),
            Change::AddUpstream { pool, addr, .. }
            | Change::RemoveUpstream { pool, addr, .. }
            | Change::RemoveDrained { pool, addr }
            | Change::DisableUpstream { pool, addr }
            | Change::EnableUpstream { pool, addr }
            | Change::DrainUpstream { pool, addr, .. } => format!("{pool}/{addr}"),
        }
    }

    /// The upstream the change is about, if it is about one.
    pub fn upstream(&self) -> Option<(&str, SocketAddr)> {
        match self {
            Change::AddUpstream { pool, addr, .. }
            | Change::RemoveUpstream { pool, addr, .. }
            | Change::RemoveDrained { pool, addr }
            | Change::DisableUpstream { pool, addr }
            | Change::EnableUpstream { pool, addr }
            | Change::DrainUpstream { pool, addr, .. } => Some((pool, *addr)),
            Change::SetSplit { .. }
            | Change::SetMirror { .. }
            | Change::DrainPool { .. }
            | Change::StartRollout { .. }
            | Change::StartRollouts { .. }
            | Change::Undo { .. }
            | Change::Rollout { .. } => None,
        }
    }
}

/// `change` applied to `current` over `file`. `in_rotation(pool)` says
/// whether a pool has an upstream that can take traffic now.
pub fn apply(
    change: &Change,
    current: &Overrides,
    file: &Config,
    in_rotation: &dyn Fn(&str) -> bool,
) -> Result<Overrides, ControlError> {
    let mut next = current.clone();
    match change {
        Change::SetSplit {
            route,
            split,
            force,
        } => set_split(&mut next, file, route, split, *force, in_rotation)?,
        Change::SetMirror {
            route,
            pool,
            percent,
        } => set_mirror(&mut next, file, route, pool.as_deref(), *percent)?,
        Change::AddUpstream { pool, addr, weight } => {
            add_upstream(&mut next, file, pool, *addr, *weight)?
        }
        Change::RemoveUpstream {
            pool,
            addr,
            drain_until,
        } => {
            upstream_exists(current, file, pool, *addr)?;
            // An earlier, shorter drain deadline stands.
            let d = next
                .drained
                .entry(pool.clone())
                .or_default()
                .entry(*addr)
                .or_insert(*drain_until);
            *d = (*d).min(*drain_until);
            next.removing.entry(pool.clone()).or_default().insert(*addr);
        }
        Change::RemoveDrained { pool, addr } => {
            upstream_exists(current, file, pool, *addr)?;
            remove_now(&mut next, file, pool, *addr);
            next = reconcile(file, next).0;
        }
        Change::DisableUpstream { pool, addr } => {
            upstream_exists(current, file, pool, *addr)?;
            next.disabled.entry(pool.clone()).or_default().insert(*addr);
        }
        Change::EnableUpstream { pool, addr } => {
            upstream_exists(current, file, pool, *addr)?;
            forget_flags(&mut next, pool, *addr);
        }
        Change::DrainUpstream {
            pool,
            addr,
            drain_until,
        } => {
            upstream_exists(current, file, pool, *addr)?;
            next.drained
                .entry(pool.clone())
                .or_default()
                .insert(*addr, *drain_until);
        }
        Change::StartRollout {
            route,
            spec,
            now_ms,
            force,
        } => start_rollout(&mut next, file, route, spec, *now_ms, *force, in_rotation)?,
        Change::StartRollouts {
            from,
            routes,
            spec,
            now_ms,
            force,
        } => {
            let routes = group_routes(&next, file, &spec.to, from.as_deref(), routes)?;
            start_group_rollout(&mut next, file, &routes, spec, *now_ms, *force, in_rotation)?
        }
        Change::Rollout {
            route,
            step,
            now_ms,
        } => move_rollout(&mut next, file, route, step, *now_ms)?,
        Change::Undo { target } => undo(&mut next, file, target)?,
        Change::DrainPool { pool, drain_until } => {
            pool_exists(file, pool)?;
            let addrs = upstreams_of(current, file, pool);
            let drains = next.drained.entry(pool.clone()).or_default();
            for addr in addrs {
                drains.insert(addr, *drain_until);
            }
            next.drained.retain(|_, d| !d.is_empty());
        }
    }
    Ok(next)
}

fn set_split(
    next: &mut Overrides,
    file: &Config,
    route: &str,
    split: &Split,
    force: bool,
    in_rotation: &dyn Fn(&str) -> bool,
) -> Result<(), ControlError> {
    let Some(base) = file.routes.iter().find(|r| r.name == route) else {
        return Err(ControlError::UnknownRoute(route.to_string()));
    };
    no_active_rollout(next, route)?;
    for (pool, weight) in split.iter() {
        pool_exists(file, pool)?;
        if weight > 0 && !force && !in_rotation(pool) {
            return Err(ControlError::NoUpstreamInRotation(pool.to_string()));
        }
    }
    let before = split_of(next, file, route);
    put_split(next, route, split, &base.split);
    if let Some(before) = before {
        remember(next, file, route, before);
    }
    Ok(())
}

fn set_mirror(
    next: &mut Overrides,
    file: &Config,
    route: &str,
    pool: Option<&str>,
    percent: u32,
) -> Result<(), ControlError> {
    let Some(base) = file.routes.iter().find(|r| r.name == route) else {
        return Err(ControlError::UnknownRoute(route.to_string()));
    };
    if percent > 100 {
        return Err(ControlError::invalid(
            "percent",
            format!("must be from 0 to 100, got {percent}"),
        ));
    }
    if percent == 0 {
        put_mirror(next, route, None, base.mirror.as_ref());
        return Ok(());
    }
    let current = effective(file, next)
        .routes
        .into_iter()
        .find(|r| r.name == route)
        .and_then(|r| r.mirror);
    let pool = match (pool, current) {
        (Some(p), _) => p.to_string(),
        (None, Some(m)) => m.pool,
        (None, None) => {
            return Err(ControlError::invalid(
                "pool",
                "the route has no mirror yet: name the pool to copy requests to",
            ));
        }
    };
    pool_exists(file, &pool)?;
    put_mirror(
        next,
        route,
        Some(MirrorTarget { pool, percent }),
        base.mirror.as_ref(),
    );
    Ok(())
}

fn add_upstream(
    next: &mut Overrides,
    file: &Config,
    pool: &str,
    addr: SocketAddr,
    weight: u32,
) -> Result<(), ControlError> {
    pool_exists(file, pool)?;
    if upstreams_of(next, file, pool).contains(&addr) {
        return Err(ControlError::UpstreamExists {
            pool: pool.to_string(),
            addr,
        });
    }
    if let Some(r) = next.removed.get_mut(pool) {
        r.remove(&addr);
    }
    next.removed.retain(|_, r| !r.is_empty());
    let file_weight = file
        .pool(pool)
        .and_then(|p| p.upstreams.iter().find(|u| u.addr == addr))
        .map(|u| u.weight);
    // Re-adding a file upstream that was removed at runtime brings back the
    // file's entry (and its weight).
    if file_weight.is_none() {
        next.added
            .entry(pool.to_string())
            .or_default()
            .insert(addr, weight);
    }
    Ok(())
}

/// Takes a drained upstream out of the pool for good.
fn remove_now(next: &mut Overrides, file: &Config, pool: &str, addr: SocketAddr) {
    let runtime_added = next
        .added
        .get_mut(pool)
        .and_then(|a| a.remove(&addr))
        .is_some();
    if !runtime_added {
        let weight = file
            .pool(pool)
            .and_then(|p| p.upstreams.iter().find(|u| u.addr == addr))
            .map_or(0, |u| u.weight);
        next.removed
            .entry(pool.to_string())
            .or_default()
            .insert(addr, weight);
    }
    forget_flags(next, pool, addr);
}

fn pool_exists(file: &Config, pool: &str) -> Result<(), ControlError> {
    match file.pool(pool) {
        Some(_) => Ok(()),
        None => Err(ControlError::UnknownPool(pool.to_string())),
    }
}

/// The pool's upstreams as the live table has them: the file's, less those
/// removed, plus those added.
fn upstreams_of(o: &Overrides, file: &Config, pool: &str) -> Vec<SocketAddr> {
    effective(file, o)
        .pool(pool)
        .map(|p| p.upstreams.iter().map(|u| u.addr).collect())
        .unwrap_or_default()
}

fn upstream_exists(
    o: &Overrides,
    file: &Config,
    pool: &str,
    addr: SocketAddr,
) -> Result<(), ControlError> {
    pool_exists(file, pool)?;
    if upstreams_of(o, file, pool).contains(&addr) {
        Ok(())
    } else {
        Err(ControlError::UnknownUpstream {
            pool: pool.to_string(),
            addr,
        })
    }
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

#[cfg(test)]
mod tests;
