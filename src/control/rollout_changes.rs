//! The pure changes that start and move a rollout (each sets the route's
//! split from the record, through `apply`), and what the driver keeps
//! between ticks (`rollout_driver` ticks them).

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ControlError;
use super::reconcile::{effective, put_split};
use super::undo::remember;
use crate::config::Config;
use crate::rollout::run::{Hook, Run};
use crate::rollout::{HISTORY, RolloutGroup, RolloutRecord, RolloutSpec, RolloutState};
use crate::state::Overrides;

/// A move of a running rollout, by the driver or an operator.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutStep {
    /// The `pre` webhook passed: shift to the first step.
    Begin,
    /// To the next step; `approve` is the operator's promote.
    Advance {
        approve: bool,
    },
    Promote,
    Rollback(String),
    Abort,
    Pause,
    /// The driver pauses a step that found no data within `max_step_wait`
    /// (`on_inconclusive = "pause"`), saying why; a resume starts the
    /// step's time again.
    Hold(String),
    Resume,
}

impl RolloutStep {
    pub fn action(&self) -> &'static str {
        use super::action;
        match self {
            RolloutStep::Begin => action::ROLLOUT_BEGIN,
            RolloutStep::Advance { approve: false } => action::ROLLOUT_ADVANCE,
            RolloutStep::Advance { approve: true } => action::PROMOTE_ROLLOUT,
            RolloutStep::Promote => action::ROLLOUT_PROMOTED,
            RolloutStep::Rollback(_) => action::ROLLOUT_ROLLED_BACK,
            RolloutStep::Abort => action::ABORT_ROLLOUT,
            RolloutStep::Pause => action::PAUSE_ROLLOUT,
            RolloutStep::Hold(_) => action::ROLLOUT_INCONCLUSIVE,
            RolloutStep::Resume => action::RESUME_ROLLOUT,
        }
    }
}

/// `POST /api/v1/routes/{route}/rollout`.
pub(super) fn start_rollout(
    next: &mut Overrides,
    file: &Config,
    route: &str,
    spec: &RolloutSpec,
    now_ms: u64,
    force: bool,
    in_rotation: &dyn Fn(&str) -> bool,
) -> Result<(), ControlError> {
    let eff = effective(file, next);
    let Some(r) = eff.routes.iter().find(|r| r.name == route) else {
        return Err(ControlError::UnknownRoute(route.to_string()));
    };
    no_active_rollout(next, route)?;
    if file.pool(&spec.to).is_none() {
        return Err(ControlError::UnknownPool(spec.to.clone()));
    }
    if !force && !in_rotation(&spec.to) {
        return Err(ControlError::NoUpstreamInRotation(spec.to.clone()));
    }
    let file_split = file
        .routes
        .iter()
        .find(|f| f.name == route)
        .map(|f| f.split.clone())
        .unwrap_or_else(|| r.split.clone());
    // `started_ms` is also the rollout's identity (the driver's memory of
    // a rollout is kept only for it): a retry in the same millisecond as
    // the last start still gets one of its own.
    let after_last = next
        .rollouts
        .get(route)
        .map_or(0, |old| old.started_ms.saturating_add(1));
    let record = RolloutRecord::new(
        spec.clone(),
        r.split.clone(),
        file_split,
        now_ms.max(after_last),
    );
    if record.baseline().is_empty() {
        return Err(ControlError::NothingToRollOutFrom {
            route: route.to_string(),
            pool: spec.to.clone(),
        });
    }
    if let Some(old) = next.rollouts.remove(route) {
        let history = next.rollout_history.entry(route.to_string()).or_default();
        history.push(old);
        if history.len() > HISTORY {
            history.remove(0);
        }
    }
    put_split(next, route, &record.split(), &record.file_split);
    next.rollouts.insert(route.to_string(), record);
    Ok(())
}

/// Which routes `POST /api/v1/rollouts` moves: those named, or every
/// route whose traffic goes only to `from` and `to` (some of it to
/// `from`). Without `from`, the one pool such routes split with `to`.
pub(super) fn group_routes(
    next: &Overrides,
    file: &Config,
    to: &str,
    from: Option<&str>,
    named: &[String],
) -> Result<Vec<String>, ControlError> {
    let eff = effective(file, next);
    if file.pool(to).is_none() {
        return Err(ControlError::UnknownPool(to.to_string()));
    }
    if let Some(from) = from
        && file.pool(from).is_none()
    {
        return Err(ControlError::UnknownPool(from.to_string()));
    }
    if !named.is_empty() {
        for (i, route) in named.iter().enumerate() {
            if !eff.routes.iter().any(|r| r.name == *route) {
                return Err(ControlError::UnknownRoute(route.clone()));
            }
            if named[..i].contains(route) {
                return Err(ControlError::invalid(
                    format!("routes[{i}]"),
                    format!("route {route:?} is named twice"),
                ));
            }
        }
        return Ok(named.to_vec());
    }
    // Each route with traffic outside `to`, and the one other pool it
    // sends traffic to (routes split three ways are never picked).
    let splits_with: Vec<(&str, &str)> = eff
        .routes
        .iter()
        .filter_map(|r| {
            let others: Vec<&str> = r
                .split
                .iter()
                .filter(|(p, w)| *w > 0 && *p != to)
                .map(|(p, _)| p)
                .collect();
            match others.as_slice() {
                [only] => Some((r.name.as_str(), *only)),
                _ => None,
            }
        })
        .collect();
    let from = match from {
        Some(f) => f.to_string(),
        None => {
            let mut pools: Vec<&str> = splits_with.iter().map(|(_, p)| *p).collect();
            pools.sort_unstable();
            pools.dedup();
            match pools.as_slice() {
                [one] => one.to_string(),
                [] => {
                    return Err(ControlError::invalid(
                        "to",
                        format!(
                            "no route sends its traffic to one pool besides {to:?}: name the routes"
                        ),
                    ));
                }
                many => {
                    return Err(ControlError::invalid(
                        "from",
                        format!(
                            "routes split between {to:?} and several pools ({}): say which with from",
                            many.join(", ")
                        ),
                    ));
                }
            }
        }
    };
    let routes: Vec<String> = splits_with
        .iter()
        .filter(|(_, p)| *p == from)
        .map(|(r, _)| r.to_string())
        .collect();
    if routes.is_empty() {
        return Err(ControlError::invalid(
            "from",
            format!("no route splits its traffic between {from:?} and {to:?}"),
        ));
    }
    Ok(routes)
}

/// `POST /api/v1/rollouts`: one rollout over `routes`, each started as
/// its own would be, all in this one change, linked as a group.
pub(super) fn start_group_rollout(
    next: &mut Overrides,
    file: &Config,
    routes: &[String],
    spec: &RolloutSpec,
    now_ms: u64,
    force: bool,
    in_rotation: &dyn Fn(&str) -> bool,
) -> Result<(), ControlError> {
    if routes.is_empty() {
        return Err(ControlError::invalid("routes", "name at least one route"));
    }
    // One identity for the group: after every member's last start.
    let after_last = routes
        .iter()
        .filter_map(|r| next.rollouts.get(r))
        .map(|old| old.started_ms.saturating_add(1))
        .max()
        .unwrap_or(0);
    let started_ms = now_ms.max(after_last);
    let group = RolloutGroup {
        routes: routes.to_vec(),
    };
    for route in routes {
        start_rollout(next, file, route, spec, started_ms, force, in_rotation)?;
        if let Some(record) = next.rollouts.get_mut(route) {
            record.group = Some(group.clone());
        }
    }
    Ok(())
}

/// Moves the route's rollout — and, in a group, every member's — and
/// sets the splits they give.
pub(super) fn move_rollout(
    next: &mut Overrides,
    file: &Config,
    route: &str,
    step: &RolloutStep,
    now_ms: u64,
) -> Result<(), ControlError> {
    let members = match next.rollouts.get(route) {
        Some(record) => match &record.group {
            Some(group) => {
                let lead = record.clone();
                group
                    .routes
                    .iter()
                    .filter(|m| next.rollouts.get(*m).is_some_and(|r| r.same_rollout(&lead)))
                    .cloned()
                    .collect()
            }
            None => vec![route.to_string()],
        },
        None => vec![route.to_string()],
    };
    for member in &members {
        move_one(next, file, member, step, now_ms)?;
    }
    Ok(())
}

/// Moves one route's rollout and sets the split it gives.
fn move_one(
    next: &mut Overrides,
    file: &Config,
    route: &str,
    step: &RolloutStep,
    now_ms: u64,
) -> Result<(), ControlError> {
    if !file.routes.iter().any(|r| r.name == route) {
        return Err(ControlError::UnknownRoute(route.to_string()));
    }
    let Some(record) = next.rollouts.get_mut(route) else {
        return Err(ControlError::NoRollout(route.to_string()));
    };
    let refuse = |state: RolloutState| ControlError::RolloutState {
        route: route.to_string(),
        state: state.word(),
    };
    use RolloutState as S;
    match (step, record.state) {
        (RolloutStep::Begin, S::Running) if !record.started => {
            record.started = true;
            record.step_started_ms = now_ms;
        }
        (RolloutStep::Advance { approve }, S::Running) => {
            if *approve {
                record.approved = true;
            }
            if !record.started {
                record.started = true;
            } else if record.step + 1 < record.spec.steps.len() {
                record.step += 1;
            } else {
                finish(record, S::Promoted, None, now_ms);
            }
            record.step_started_ms = now_ms;
            record.reason = None;
        }
        (RolloutStep::Promote, S::Running) => finish(record, S::Promoted, None, now_ms),
        (RolloutStep::Rollback(reason), S::Running | S::Paused) => {
            finish(record, S::RolledBack, Some(reason.clone()), now_ms)
        }
        (RolloutStep::Abort, S::Running | S::Paused) => finish(
            record,
            S::Aborted,
            Some("aborted by the operator".into()),
            now_ms,
        ),
        (RolloutStep::Pause, S::Running) => {
            record.paused_elapsed_ms = Some(record.step_elapsed(now_ms).as_millis() as u64);
            record.state = S::Paused;
        }
        (RolloutStep::Hold(reason), S::Running) => {
            record.paused_elapsed_ms = Some(0);
            record.state = S::Paused;
            record.reason = Some(reason.clone());
        }
        (RolloutStep::Resume, S::Paused) => {
            let spent = record.paused_elapsed_ms.take().unwrap_or(0);
            record.step_started_ms = now_ms.saturating_sub(spent);
            record.state = S::Running;
            record.reason = None;
        }
        (_, state) => return Err(refuse(state)),
    }
    let promoted = (record.state == S::Promoted).then(|| record.start_split.clone());
    let (split, file_split) = (record.split(), record.file_split.clone());
    put_split(next, route, &split, &file_split);
    if let Some(before) = promoted {
        remember(next, file, route, before);
    }
    Ok(())
}

/// Refuses a change to a route's split while a rollout moves it.
pub(super) fn no_active_rollout(o: &Overrides, route: &str) -> Result<(), ControlError> {
    match o.rollouts.get(route) {
        Some(r) if r.state.is_active() => Err(ControlError::RolloutRunning(route.to_string())),
        _ => Ok(()),
    }
}

fn finish(record: &mut RolloutRecord, state: RolloutState, reason: Option<String>, now_ms: u64) {
    record.state = state;
    record.reason = reason;
    record.ended_ms = Some(now_ms);
    record.paused_elapsed_ms = None;
}

/// A webhook the driver must call, outside the control plane's lock.
#[derive(Debug, Clone)]
pub struct WebhookCall {
    pub route: String,
    /// The rollout it was called for (its `started_ms`): an answer that
    /// arrives after another rollout of the route began is dropped.
    pub rollout: u64,
    pub hook: Hook,
    /// The step it gates (`pre`, `step`), else `None`.
    pub gates: Option<usize>,
    pub url: String,
    pub event: Value,
    pub timeout: std::time::Duration,
}

/// An outside check (`analysis.http`, `analysis.prometheus`) the driver
/// must read, outside the control plane's lock.
#[derive(Debug, Clone)]
pub struct CheckCall {
    /// The route whose rollout asks (a group's lead route).
    pub route: String,
    /// The rollout it was asked for (its `started_ms`).
    pub rollout: u64,
    /// The check, in `rollout::checks::checks` order.
    pub index: usize,
    pub name: String,
    pub kind: crate::config::CheckKind,
    pub url: String,
    pub query: Option<String>,
    pub timeout: std::time::Duration,
}

/// What the driver keeps per route, in memory.
#[derive(Default)]
pub struct Runs {
    /// Each route's latest rollout's memory (marks, failures, gate, hold,
    /// last check), for that rollout alone.
    pub(super) by_route: BTreeMap<String, Run>,
    /// Notifying webhooks of moves made since the last tick.
    pub(super) notify: Vec<WebhookCall>,
    /// Outside checks to read, asked for by the last tick.
    pub(super) reads: Vec<CheckCall>,
}

impl Runs {
    /// The memory of `record`, the route's rollout: a new one if what is
    /// kept belongs to an earlier rollout of the route — a retry judges
    /// only its own traffic.
    pub(super) fn of(&mut self, route: &str, record: &RolloutRecord) -> &mut Run {
        let run = self.by_route.entry(route.to_string()).or_default();
        if run.rollout() != Some(record.started_ms) {
            *run = Run::for_rollout(record.started_ms);
        }
        run
    }

    /// The memory of `record`, if any is kept for it.
    pub(super) fn get(&self, route: &str, record: &RolloutRecord) -> Option<&Run> {
        self.by_route
            .get(route)
            .filter(|run| run.rollout() == Some(record.started_ms))
    }
}
