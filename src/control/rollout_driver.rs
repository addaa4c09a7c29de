//! The rollout driver: each tick reads the live traffic of every running
//! rollout's target and baseline from the table, lets `rollout::run`
//! judge, and turns its decision into a change through
//! [`ControlPlane::change`], like any other writer. Also the route's
//! `rollout` status object and the rollout metrics.

use serde_json::{Value, json};

use super::ControlPlane;
use super::apply::Change;
use super::rollout_changes::{CheckCall, RolloutStep, WebhookCall};
use crate::clock::unix_ms;
use crate::rollout::analysis::Compared;
use crate::rollout::checks::checks;
use crate::rollout::run::{Action, Hook, HookAnswer};
use crate::rollout::{RolloutRecord, RolloutState};
use crate::telemetry::names;
use crate::traffic::Snapshot;

impl ControlPlane {
    /// One tick of every running rollout: the moves to make (through
    /// `Instance::change`, then `after_rollout_moves`) and the webhooks to
    /// call.
    ///
    /// `elsewhere`: in a fleet, the other instances' counters by route and
    /// pool, added to this one's so the analysis judges the fleet's traffic.
    pub fn tick_rollouts(&mut self, elsewhere: &FleetTraffic) -> (Vec<Change>, Vec<WebhookCall>) {
        if self.retired_for().is_some() {
            return (Vec::new(), Vec::new());
        }
        let now = unix_ms();
        let table = self.routing().load();
        let mut moves = Vec::new();
        let mut calls = Vec::new();
        let active: Vec<(String, RolloutRecord)> = self
            .now
            .overrides
            .rollouts
            .iter()
            .filter(|(_, r)| r.state == RolloutState::Running)
            .map(|(route, r)| (route.clone(), r.clone()))
            .collect();
        // Finished rollouts keep their last figures for status.
        let rollouts = &self.now.overrides.rollouts;
        self.runs
            .by_route
            .retain(|key, _| rollouts.contains_key(key.strip_prefix(GROUP).unwrap_or(key)));
        for (route, record) in &active {
            let Some(group) = &record.group else {
                let Some(readings) = self.readings(&table, route, record, elsewhere) else {
                    continue;
                };
                let run = self.runs.of(route, record);
                let action = run.tick_with_shadow(
                    record,
                    now,
                    readings.target,
                    readings.baseline,
                    readings.shadow,
                );
                act(route, record, action, &mut moves, &mut calls);
                self.ask_checks(route, record, now);
                continue;
            };
            if group.lead() != route {
                continue;
            }
            // Each member judged alone can only veto; the group's summed
            // traffic moves it.
            let mut veto = None;
            let (mut target, mut baseline) = (Snapshot::default(), Snapshot::default());
            for (member, member_record) in active.iter().filter(|(_, r)| r.same_rollout(record)) {
                let Some(readings) = self.readings(&table, member, member_record, elsewhere) else {
                    continue;
                };
                target = target.plus(&readings.target);
                baseline = baseline.plus(&readings.baseline);
                let run = self.runs.of(member, member_record);
                let action = run.tick_with_shadow(
                    &member_record.as_member(),
                    now,
                    readings.target,
                    readings.baseline,
                    readings.shadow,
                );
                if let (Action::Rollback(reason), None) = (action, &veto) {
                    veto = Some(format!("route {member}: {reason}"));
                }
            }
            let run = self.runs.of(&group_key(route), record);
            let summed = run.tick(record, now, target, baseline);
            let action = match (veto, summed) {
                (Some(reason), _) => Action::Rollback(reason),
                // The summed figures failed: say which routes' own did.
                (None, Action::Rollback(reason)) => Action::Rollback(format!(
                    "{reason} (by route: {})",
                    self.by_route(&active, record)
                )),
                (None, summed) => summed,
            };
            act(route, record, action, &mut moves, &mut calls);
            self.ask_checks(route, record, now);
        }
        self.audit_dry_runs(&active);
        let changes = moves
            .into_iter()
            .map(|(route, step)| Change::Rollout {
                route,
                step,
                now_ms: now,
            })
            .collect();
        (changes, calls)
    }

    /// Each member route's target errors in its last check, e.g. `api 19
    /// errors of 45, web 0 of 60`: where a group's summed failure came
    /// from.
    fn by_route(&self, active: &[(String, RolloutRecord)], lead: &RolloutRecord) -> String {
        active
            .iter()
            .filter(|(_, r)| r.same_rollout(lead))
            .map(
                |(member, r)| match self.runs.get(member, r).and_then(|run| run.last.as_ref()) {
                    Some(last) => format!(
                        "{member} {} errors of {}",
                        last.target.errors, last.target.requests
                    ),
                    None => format!("{member} not judged yet"),
                },
            )
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Asks the rollout's outside checks when they are due (every
    /// `check_every`): calls for the lifecycle to make outside the lock.
    fn ask_checks(&mut self, route: &str, record: &RolloutRecord, now: u64) {
        let run = self.runs.of(&run_key(route, record), record);
        if !run.checks_due(record, now) {
            return;
        }
        // Each read is bounded: an answer later than a check is no use.
        let timeout = record.spec.analysis.check_every.clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(10),
        );
        for (index, (name, kind, check)) in checks(&record.spec.analysis).into_iter().enumerate() {
            self.runs.reads.push(CheckCall {
                route: route.to_string(),
                rollout: record.started_ms,
                index,
                name,
                kind,
                url: check.url.clone(),
                query: check.query.clone(),
                timeout,
            });
        }
    }

    /// The outside checks to read now (asked for by the last tick).
    pub fn take_check_calls(&mut self) -> Vec<CheckCall> {
        std::mem::take(&mut self.runs.reads)
    }

    /// An outside check's answer, kept for the rollout's next check.
    pub fn check_answered(&mut self, call: &CheckCall, value: Result<Option<f64>, String>) {
        let Some(record) = self.now.overrides.rollouts.get(&call.route).cloned() else {
            return;
        };
        if record.started_ms != call.rollout {
            return;
        }
        if let Err(e) = &value {
            tracing::warn!(route = %call.route, check = %call.name, error = %e, "a rollout check cannot be read");
        }
        self.runs
            .of(&run_key(&call.route, &record), &record)
            .read(call.index, value, unix_ms());
    }

    /// Logs and audits each dry-run limit the first time it breaches in a
    /// rollout: what would have rolled it back.
    fn audit_dry_runs(&mut self, active: &[(String, RolloutRecord)]) {
        for (route, record) in active {
            if record.group.as_ref().is_some_and(|g| g.lead() != route) {
                continue;
            }
            let key = run_key(route, record);
            let Some(run) = self.runs.by_route.get_mut(&key) else {
                continue;
            };
            for report in run.new_dry_run_breaches() {
                tracing::warn!(%route, to = %record.spec.to, %report, "dry-run limit breached: the rollout goes on");
                let caller = crate::state::Caller {
                    peer: "rollout".into(),
                    token: None,
                };
                let view = json!({"dry_run": report});
                self.audit(
                    &caller,
                    super::action::ROLLOUT_DRY_RUN_BREACH,
                    route,
                    Value::Null,
                    view,
                    "ok",
                );
            }
        }
    }

    /// What the route's rollout judges now: its target's and baseline's
    /// counters (with the fleet's), and its shadow copies to the target.
    fn readings(
        &self,
        table: &crate::routing::RouteTable,
        route: &str,
        record: &RolloutRecord,
        elsewhere: &FleetTraffic,
    ) -> Option<Readings> {
        let r = table.route(route)?;
        let snapshot = |pool: &str| {
            let here = table.traffic(r, pool).map(|s| s.snapshot())?;
            Some(
                match elsewhere.get(&(route.to_string(), pool.to_string())) {
                    Some(there) => here.plus(there),
                    None => here,
                },
            )
        };
        let shadow = r
            .mirror
            .as_ref()
            .filter(|m| *m.pool == *record.spec.to)
            .map(|_| {
                let (compared, differs) = r.shadow.compared();
                Compared { compared, differs }
            });
        Some(Readings {
            target: snapshot(&record.spec.to).unwrap_or_default(),
            baseline: sum(record.baseline().into_iter().filter_map(snapshot)),
            shadow,
        })
    }

    pub fn has_running_rollouts(&self) -> bool {
        self.now
            .overrides
            .rollouts
            .values()
            .any(|r| r.state == RolloutState::Running)
    }

    /// What this instance publishes to the fleet's rollout driver: the
    /// counters of every running rollout's pools, by route and pool.
    pub fn rollout_traffic(&self) -> Value {
        let table = self.routing().load();
        let mut routes = serde_json::Map::new();
        for (route, record) in &self.now.overrides.rollouts {
            if record.state != RolloutState::Running {
                continue;
            }
            let Some(r) = table.route(route) else {
                continue;
            };
            let mut pools = serde_json::Map::new();
            let mut wanted = record.baseline();
            wanted.push(&record.spec.to);
            for pool in wanted {
                if let Some(stats) = table.traffic(r, pool) {
                    pools.insert(pool.to_string(), json!(stats.snapshot()));
                }
            }
            routes.insert(route.clone(), Value::Object(pools));
        }
        Value::Object(routes)
    }

    /// After a tick's moves: the metrics, and the webhooks the moves fire.
    pub fn after_rollout_moves(&mut self) -> Vec<WebhookCall> {
        self.export_rollout_metrics();
        std::mem::take(&mut self.runs.notify)
    }

    /// Logs a move with its figures, and queues the notifying webhook it
    /// fires for the next tick.
    pub(super) fn after_move(&mut self, route: &str, step: &RolloutStep) {
        let Some(record) = self.now.overrides.rollouts.get(route).cloned() else {
            return;
        };
        let figures = self
            .runs
            .get(&run_key(route, &record), &record)
            .and_then(|r| r.last.as_ref())
            .map(|l| json!(l));
        let figures = figures.unwrap_or(Value::Null).to_string();
        match step {
            RolloutStep::Rollback(reason) => {
                tracing::warn!(%route, to = %record.spec.to, %reason, %figures, "rollout rolled back")
            }
            _ => tracing::info!(
                %route,
                to = %record.spec.to,
                action = step.action(),
                step = record.step + 1,
                weight = record.weight(),
                state = record.state.word(),
                %figures,
                "rollout moved"
            ),
        }
        let hook = match record.state {
            RolloutState::RolledBack => {
                Some((Hook::Rollback, record.spec.webhooks.rollback.clone()))
            }
            RolloutState::Promoted | RolloutState::Aborted => {
                Some((Hook::Done, record.spec.webhooks.done.clone()))
            }
            _ => None,
        };
        if let Some((hook, Some(url))) = hook {
            self.runs.notify.push(WebhookCall {
                event: event(route, hook.word(), &record, None),
                rollout: record.started_ms,
                route: route.to_string(),
                hook,
                gates: None,
                url,
                timeout: record.spec.webhooks.timeout,
            });
        }
    }

    /// A gating webhook's answer.
    pub fn webhook_answered(&mut self, call: &WebhookCall, answer: HookAnswer) {
        let Some(step) = call.gates else { return };
        let Some(record) = self.now.overrides.rollouts.get(&call.route).cloned() else {
            return;
        };
        if record.started_ms != call.rollout {
            tracing::debug!(route = %call.route, hook = call.hook.word(), "a webhook answered for an earlier rollout of the route: ignored");
            return;
        }
        let hook = call.hook.word();
        let answer = match answer {
            HookAnswer::Pass => HookAnswer::Pass,
            HookAnswer::Hold(r) => {
                tracing::warn!(route = %call.route, hook, reason = %r, "rollout held by its webhook");
                HookAnswer::Hold(format!("held by the {hook} webhook: {r}"))
            }
            HookAnswer::Fail(r) => {
                tracing::warn!(route = %call.route, hook, reason = %r, "the rollout's webhook answered fail");
                HookAnswer::Fail(format!("{hook} webhook: {r}"))
            }
        };
        let a = &record.spec.analysis;
        self.runs
            .of(&run_key(&call.route, &record), &record)
            .answered(step, answer, unix_ms(), a.check_every, a.failure_limit);
    }

    /// The route's `rollout` object in status.
    pub fn rollout_view(&self, route: &str) -> Option<Value> {
        let record = self.now.overrides.rollouts.get(route)?;
        let run = self.runs.get(route, record);
        // A group's step, gates and holds are the group's.
        let own = self.runs.get(&run_key(route, record), record);
        // A finished rollout's run may still hold its last check's words.
        let hold = own
            .filter(|_| record.state == RolloutState::Running)
            .and_then(|r| r.hold.clone());
        let state = match (record.state, &hold) {
            (RolloutState::Running, Some(_)) => "waiting",
            (s, _) => s.word(),
        };
        let a = &record.spec.analysis;
        let history: Vec<Value> = self
            .now
            .overrides
            .rollout_history
            .get(route)
            .into_iter()
            .flatten()
            .rev()
            .map(|h| {
                json!({"to": h.spec.to, "state": h.state.word(), "reason": h.reason,
                       "started_ms": h.started_ms, "ended_ms": h.ended_ms})
            })
            .collect();
        Some(json!({
            "to": record.spec.to,
            "baseline": record.baseline(),
            "steps": record.spec.steps,
            "step": record.step + 1,
            "weight": record.weight(),
            "state": state,
            "reason": hold.or_else(|| record.reason.clone()),
            "interval": humantime::format_duration(record.spec.interval).to_string(),
            "watch": record.spec.watch.map(|w| humantime::format_duration(w).to_string()),
            "watching": record.state.is_active() && record.watching(),
            "started_ms": record.started_ms,
            "step_started_ms": record.step_started_ms,
            "ended_ms": record.ended_ms,
            "approval": if record.spec.approval_before_100 { "before-100" } else { "none" },
            "limits": {
                "max_error_rate": a.max_error_rate,
                "max_error_rate_increase": a.max_error_rate_increase,
                "max_error_ratio": a.max_error_ratio,
                "confidence": a.confidence,
                "max_p99_ms": a.max_p99_ms,
                "max_p50_ms": a.max_p50_ms,
                "max_p95_ms": a.max_p95_ms,
                "max_4xx_rate": a.max_4xx_rate,
                "max_p99_ratio": a.max_p99_ratio,
                "min_p99_increase_ms": a.min_p99_increase_ms,
                "latency_quantile": crate::rollout::sequential::quantile_name(a.latency_quantile),
                "min_requests": a.min_requests,
                "failure_limit": a.failure_limit,
                "check_every": humantime::format_duration(a.check_every).to_string(),
                "max_step_wait": humantime::format_duration(a.step_wait(record.spec.interval)).to_string(),
                "on_inconclusive": a.on_inconclusive.word(),
                "promote_on_pass": a.promote_on_pass,
                "max_shadow_diff_rate": a.max_shadow_diff_rate,
                "http": a.http,
                "prometheus": a.prometheus,
                "dry_run": a.dry_run,
            },
            "failures": run.map_or(0, |r| r.failures()),
            "analysis": run.and_then(|r| r.last.as_ref()).map(|l| json!(l)),
            "group": record.group.as_ref().map(|g| json!({
                "routes": g.routes,
                "failures": own.map_or(0, |r| r.failures()),
                "analysis": own.and_then(|r| r.last.as_ref()).map(|l| json!(l)),
            })),
            "history": history,
        }))
    }

    /// `cutover_rollout_step`, `cutover_rollout_state` and the figures the
    /// last check used.
    fn export_rollout_metrics(&self) {
        for (route, record) in &self.now.overrides.rollouts {
            let route_label = route.clone();
            metrics::gauge!(names::ROLLOUT_STEP, "route" => route_label.clone())
                .set((record.step + 1) as f64);
            for s in ["running", "paused", "promoted", "rolled_back", "aborted"] {
                let on = if record.state.word() == s { 1.0 } else { 0.0 };
                metrics::gauge!(names::ROLLOUT_STATE, "route" => route_label.clone(), "state" => s)
                    .set(on);
            }
            let Some(last) = self.runs.get(route, record).and_then(|r| r.last.as_ref()) else {
                continue;
            };
            for (pool, figures) in [("target", &last.target), ("baseline", &last.baseline)] {
                let pool = if pool == "target" {
                    record.spec.to.clone()
                } else {
                    record.baseline().join("+")
                };
                metrics::gauge!(names::ROLLOUT_ERROR_RATE, "route" => route_label.clone(), "pool" => pool.clone())
                    .set(figures.error_rate);
                if let Some(p99) = figures.p99_ms {
                    metrics::gauge!(names::ROLLOUT_P99_SECONDS, "route" => route_label.clone(), "pool" => pool)
                        .set(p99 / 1000.0);
                }
            }
        }
    }
}

/// What one tick reads of a route's rollout.
struct Readings {
    target: Snapshot,
    baseline: Snapshot,
    shadow: Option<Compared>,
}

/// The key of a group rollout's own memory (its summed analysis and
/// gates) among the routes' memories.
const GROUP: &str = "group:";

pub(super) fn group_key(lead: &str) -> String {
    format!("{GROUP}{lead}")
}

/// Where a rollout's own memory is kept: its route's, or its group's.
pub(super) fn run_key(route: &str, record: &RolloutRecord) -> String {
    match &record.group {
        Some(g) => group_key(g.lead()),
        None => route.to_string(),
    }
}

/// A tick's decision for the rollout led by `route`, as a move or a call.
fn act(
    route: &str,
    record: &RolloutRecord,
    action: Action,
    moves: &mut Vec<(String, RolloutStep)>,
    calls: &mut Vec<WebhookCall>,
) {
    let route = route.to_string();
    match action {
        Action::Nothing => {}
        Action::Begin => moves.push((route, RolloutStep::Begin)),
        Action::Advance => moves.push((route, RolloutStep::Advance { approve: false })),
        Action::Promote => moves.push((route, RolloutStep::Promote)),
        Action::Rollback(reason) => moves.push((route, RolloutStep::Rollback(reason))),
        Action::Hold(reason) => moves.push((route, RolloutStep::Hold(reason))),
        Action::Call(hook, step) => {
            let url = match hook {
                Hook::Pre => record.spec.webhooks.pre.clone(),
                _ => record.spec.webhooks.step.clone(),
            };
            if let Some(url) = url {
                calls.push(WebhookCall {
                    event: event(&route, hook.word(), record, Some(step)),
                    rollout: record.started_ms,
                    route,
                    hook,
                    gates: Some(step),
                    url,
                    timeout: record.spec.webhooks.timeout,
                });
            }
        }
    }
}

/// The counters of several pools as one.
/// Other instances' rollout counters, summed, by (route, pool).
pub type FleetTraffic = std::collections::HashMap<(String, String), Snapshot>;

/// Adds up the `traffic` objects of instance records (`rollout_traffic`).
pub fn fleet_traffic<'a>(records: impl Iterator<Item = &'a Value>) -> FleetTraffic {
    let mut total = FleetTraffic::new();
    for record in records {
        let Some(routes) = record["traffic"].as_object() else {
            continue;
        };
        for (route, pools) in routes {
            for (pool, snapshot) in pools.as_object().into_iter().flatten() {
                let Ok(snapshot) = serde_json::from_value::<Snapshot>(snapshot.clone()) else {
                    continue;
                };
                let slot = total.entry((route.clone(), pool.clone())).or_default();
                *slot = slot.plus(&snapshot);
            }
        }
    }
    total
}

fn sum(snapshots: impl Iterator<Item = Snapshot>) -> Snapshot {
    snapshots.fold(Snapshot::default(), |acc, s| acc.plus(&s))
}

/// The JSON a webhook receives.
fn event(route: &str, hook: &str, record: &RolloutRecord, step: Option<usize>) -> Value {
    let mut event = json!({
        "event": hook,
        "route": route,
        "to": record.spec.to,
        "state": record.state.word(),
        "step": step.unwrap_or(record.step) + 1,
        "weight": step.and_then(|s| record.spec.steps.get(s).copied()).unwrap_or(record.weight()),
        "reason": record.reason,
    });
    // A group rollout's events name every route it moves.
    if let Some(group) = &record.group {
        event["routes"] = json!(group.routes);
    }
    event
}
