//! Undo: a route's split back to what it was before its last change (a
//! split set by hand, a promoted rollout, an earlier undo), refused when
//! the split moved since. Pure, like `apply`.

use std::fmt;

use super::error::ControlError;
use super::reconcile::{effective, put_split};
use crate::config::{Config, Split};
use crate::state::{Overrides, UndoEntry};

/// What `undo` is asked of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoTarget {
    /// `POST /api/v1/routes/{route}/undo`.
    Route(String),
    /// `POST /api/v1/pools/{pool}/undo`: every route whose last change
    /// moved the pool's share (all the routes of a group rollout).
    Pool(String),
}

impl fmt::Display for UndoTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UndoTarget::Route(name) | UndoTarget::Pool(name) => f.write_str(name),
        }
    }
}

/// Notes `route`'s change from `before` to the split it has now in `next`
/// (nothing when the split did not move).
pub(super) fn remember(next: &mut Overrides, file: &Config, route: &str, before: Split) {
    let Some(after) = split_of(next, file, route) else {
        return;
    };
    if !same_shares(&before, &after) {
        next.undo
            .insert(route.to_string(), UndoEntry { before, after });
    }
}

/// The route's split as the table serves it.
pub(crate) fn split_of(o: &Overrides, file: &Config, route: &str) -> Option<Split> {
    effective(file, o)
        .routes
        .into_iter()
        .find(|r| r.name == route)
        .map(|r| r.split)
}

/// Restores the splits before the last change of the target's routes, all
/// in one change; refused if any of them moved since (or has a rollout
/// running). An undo is a change too: undoing it again redoes.
pub(super) fn undo(
    next: &mut Overrides,
    file: &Config,
    target: &UndoTarget,
) -> Result<(), ControlError> {
    let routes: Vec<String> = match target {
        UndoTarget::Route(route) => {
            if !file.routes.iter().any(|r| r.name == *route) {
                return Err(ControlError::UnknownRoute(route.clone()));
            }
            if !next.undo.contains_key(route) {
                return Err(ControlError::NothingToUndo(format!(
                    "route {route:?} has no change of split to undo"
                )));
            }
            vec![route.clone()]
        }
        UndoTarget::Pool(pool) => {
            if file.pool(pool).is_none() {
                return Err(ControlError::UnknownPool(pool.clone()));
            }
            let routes = routes_moving(next, pool);
            if routes.is_empty() {
                return Err(ControlError::NothingToUndo(format!(
                    "no route's last change moved pool {pool:?}'s share"
                )));
            }
            routes
        }
    };
    for route in &routes {
        // A running rollout owns the split (as for any split change).
        if next
            .rollouts
            .get(route)
            .is_some_and(|r| r.state.is_active())
        {
            return Err(ControlError::RolloutRunning(route.clone()));
        }
        let (Some(entry), Some(now)) = (next.undo.get(route), split_of(next, file, route)) else {
            return Err(ControlError::UnknownRoute(route.clone()));
        };
        if !same_shares(&now, &entry.after) {
            return Err(ControlError::ChangedSince {
                route: route.clone(),
                now: now.to_string(),
                after: entry.after.to_string(),
            });
        }
    }
    for route in routes {
        let Some(file_split) = file
            .routes
            .iter()
            .find(|r| r.name == route)
            .map(|r| r.split.clone())
        else {
            continue;
        };
        let Some(entry) = next.undo.remove(&route) else {
            continue;
        };
        put_split(next, &route, &entry.before, &file_split);
        next.undo.insert(
            route,
            UndoEntry {
                before: entry.after,
                after: entry.before,
            },
        );
    }
    Ok(())
}

/// The routes whose last change moved `pool`'s share of traffic.
pub(super) fn routes_moving(o: &Overrides, pool: &str) -> Vec<String> {
    let share = |s: &Split| {
        let total: u64 = s.iter().map(|(_, w)| u64::from(w)).sum();
        (u64::from(s.weight_of(pool)), total.max(1))
    };
    o.undo
        .iter()
        .filter(|(_, e)| {
            let ((a, ta), (b, tb)) = (share(&e.before), share(&e.after));
            a * tb != b * ta
        })
        .map(|(route, _)| route.clone())
        .collect()
}

/// Two splits that send each pool the same share of traffic
/// (`blue=3 green=1` is `blue=75 green=25`).
pub(super) fn same_shares(a: &Split, b: &Split) -> bool {
    let total = |s: &Split| s.iter().map(|(_, w)| u64::from(w)).sum::<u64>();
    let (ta, tb) = (total(a), total(b));
    a.pools()
        .chain(b.pools())
        .all(|p| u64::from(a.weight_of(p)) * tb == u64::from(b.weight_of(p)) * ta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_compare_whatever_the_units() {
        let s = |pairs: &[(&str, i64)]| Split::new(pairs.iter().copied()).unwrap();
        assert!(same_shares(
            &s(&[("blue", 3), ("green", 1)]),
            &s(&[("blue", 75), ("green", 25)])
        ));
        assert!(same_shares(
            &s(&[("blue", 100)]),
            &s(&[("blue", 1), ("green", 0)])
        ));
        assert!(!same_shares(
            &s(&[("blue", 100), ("green", 0)]),
            &s(&[("blue", 0), ("green", 100)])
        ));
    }
}
