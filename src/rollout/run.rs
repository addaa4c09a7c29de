//! What a running rollout keeps in memory between checks — snapshots of
//! the target's and the baseline's traffic since the step began, failing
//! checks in a row, the webhook gate — and the decision each tick makes.
//! Lost at a restart on purpose: the step and its time are persisted, the
//! figures are gathered afresh.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use super::analysis::{Compared, Figures, Judgement, Traffic, Verdict, judge};
use super::checks::{CheckState, Reading, judge_readings};
use super::sequential::{ErrorComparison, LatencyComparison, RatioEvidence};
use super::{OnInconclusive, RolloutRecord, RolloutState};
use crate::traffic::Snapshot;

/// Snapshots kept per step; older ones are folded away.
const MARKS: usize = 512;

/// A webhook that gates progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Pre,
    Step,
    Rollback,
    Done,
}

impl Hook {
    pub fn word(self) -> &'static str {
        match self {
            Hook::Pre => "pre",
            Hook::Step => "step",
            Hook::Rollback => "rollback",
            Hook::Done => "done",
        }
    }
}

/// The state of a gating webhook for one step.
#[derive(Debug, Clone, PartialEq)]
enum Gate {
    Open,
    Pending { step: usize },
    Passed { step: usize },
    Failed { step: usize, retry_ms: u64 },
}

/// A gating webhook's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum HookAnswer {
    /// 2xx: go on.
    Pass,
    /// Non-2xx, no answer: hold, ask again.
    Hold(String),
    /// 2xx with `{"verdict": "fail"}`: a failing check.
    Fail(String),
}

/// What the driver does after a tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Nothing,
    /// The `pre` webhook passed: shift to the first step.
    Begin,
    Advance,
    Promote,
    Rollback(String),
    /// Pause the rollout, saying why (no verdict in `max_step_wait`).
    Hold(String),
    /// Call a gating webhook (`pre` or `step`) for `step`.
    Call(Hook, usize),
}

#[derive(Debug, Clone, Serialize)]
pub struct LastCheck {
    /// Unix ms.
    pub at_ms: u64,
    pub target: Figures,
    pub baseline: Figures,
    /// `pass`, `fail` or `no_data`.
    pub verdict: &'static str,
    pub breaches: Vec<String>,
    /// The error test over the whole rollout: each pool's rate with its
    /// interval, the confidence, and its decision.
    pub errors: Option<ErrorComparison>,
    /// The latency test the same way (`None` when `max_p99_ratio` is off).
    pub latency: Option<LatencyComparison>,
    /// The outside checks (`http`, `prometheus`), each with its value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckState>,
    /// Limits in dry run this check breached: what would have failed it.
    pub dry_run: Vec<String>,
}

struct Mark {
    target: Snapshot,
    baseline: Snapshot,
}

/// One running rollout's memory.
pub struct Run {
    /// The rollout it belongs to (its record's `started_ms`).
    rollout: Option<u64>,
    /// The counters when the rollout's first step began: the error test
    /// judges everything since.
    origin: Option<Mark>,
    /// The error ratio test's evidence, and the counts it has taken in.
    ratio: RatioEvidence,
    ratio_seen: Option<Mark>,
    /// The route's shadow copies to the target then, and now.
    shadow_origin: Option<Compared>,
    shadow_now: Option<Compared>,
    /// The step the marks belong to; `None` until the first tick.
    step: Option<usize>,
    marks: VecDeque<Mark>,
    next_check_ms: u64,
    failures: u32,
    gate: Gate,
    /// Failing answers of gating webhooks this step.
    hook_failures: u32,
    /// A webhook's failing answers reached `failure_limit`: why.
    rollback_due: Option<String>,
    /// Unix ms when the current step's figures began.
    step_began_ms: u64,
    /// The outside checks' latest answers, in `checks::checks` order.
    readings: Vec<Option<Reading>>,
    /// When the outside checks are next asked.
    next_query_ms: u64,
    /// Dry-run breaches already reported (each is audited once).
    dry_seen: std::collections::BTreeSet<String>,
    pub last: Option<LastCheck>,
    /// Why the rollout waits, if it does.
    pub hold: Option<String>,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            rollout: None,
            origin: None,
            ratio: RatioEvidence::default(),
            ratio_seen: None,
            shadow_origin: None,
            shadow_now: None,
            step: None,
            marks: VecDeque::new(),
            next_check_ms: 0,
            failures: 0,
            gate: Gate::Open,
            hook_failures: 0,
            rollback_due: None,
            step_began_ms: 0,
            readings: Vec::new(),
            next_query_ms: 0,
            dry_seen: std::collections::BTreeSet::new(),
            last: None,
            hold: None,
        }
    }
}

impl Run {
    /// A fresh memory for the rollout that started at `started_ms`.
    pub fn for_rollout(started_ms: u64) -> Run {
        Run {
            rollout: Some(started_ms),
            ..Run::default()
        }
    }

    pub fn rollout(&self) -> Option<u64> {
        self.rollout
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The answer of a gating webhook called for `step`: a pass opens the
    /// gate; a hold asks again after `retry`; a fail does too, and counts
    /// as a failing check — `failure_limit` of them roll back.
    pub fn answered(
        &mut self,
        step: usize,
        answer: HookAnswer,
        now_ms: u64,
        retry: Duration,
        failure_limit: u32,
    ) {
        let retry_ms = now_ms.saturating_add(retry.as_millis() as u64);
        match answer {
            HookAnswer::Pass => {
                self.gate = Gate::Passed { step };
                self.hold = None;
                self.hook_failures = 0;
            }
            HookAnswer::Hold(reason) => {
                self.gate = Gate::Failed { step, retry_ms };
                self.hold = Some(reason);
            }
            HookAnswer::Fail(reason) => {
                self.gate = Gate::Failed { step, retry_ms };
                self.hook_failures += 1;
                if self.hook_failures >= failure_limit {
                    self.rollback_due = Some(format!(
                        "{} failing webhook answer(s) at step {}: {reason}",
                        self.hook_failures,
                        step + 1
                    ));
                }
                self.hold = Some(format!(
                    "check failed ({} of {failure_limit}): {reason}",
                    self.hook_failures
                ));
            }
        }
    }

    /// Whether the outside checks are to be asked now (every
    /// `check_every` while the rollout runs); the driver asks each and
    /// brings the answers to [`read`](Self::read).
    pub fn checks_due(&mut self, record: &RolloutRecord, now_ms: u64) -> bool {
        let a = &record.spec.analysis;
        if a.http.is_empty() && a.prometheus.is_empty() {
            return false;
        }
        if record.state != RolloutState::Running || !record.started || now_ms < self.next_query_ms {
            return false;
        }
        self.next_query_ms = now_ms.saturating_add(a.check_every.as_millis() as u64);
        true
    }

    /// An outside check's answer (`index` in `checks::checks` order).
    pub fn read(&mut self, index: usize, value: Result<Option<f64>, String>, now_ms: u64) {
        if self.readings.len() <= index {
            self.readings.resize(index + 1, None);
        }
        self.readings[index] = Some(Reading {
            at_ms: now_ms,
            value,
        });
    }

    /// Dry-run breaches of the last check not reported before.
    pub fn new_dry_run_breaches(&mut self) -> Vec<String> {
        let Some(last) = &self.last else {
            return Vec::new();
        };
        last.dry_run
            .iter()
            .filter(|b| self.dry_seen.insert(limit_of(b)))
            .cloned()
            .collect()
    }

    /// One tick at `now_ms` with the current counters of the target and the
    /// baseline (all its pools summed).
    pub fn tick(
        &mut self,
        record: &RolloutRecord,
        now_ms: u64,
        target: Snapshot,
        baseline: Snapshot,
    ) -> Action {
        self.tick_with_shadow(record, now_ms, target, baseline, None)
    }

    /// [`tick`](Self::tick), with the route's shadow copies to the target
    /// so far when it mirrors to it (`max_shadow_diff_rate`).
    pub fn tick_with_shadow(
        &mut self,
        record: &RolloutRecord,
        now_ms: u64,
        target: Snapshot,
        baseline: Snapshot,
        shadow: Option<Compared>,
    ) -> Action {
        self.shadow_now = shadow;
        // A mirror to the target added while the rollout runs: its copies
        // count from when they are first seen.
        if self.origin.is_some() && self.shadow_origin.is_none() {
            self.shadow_origin = shadow;
        }
        if record.state != RolloutState::Running {
            return Action::Nothing;
        }
        if let Some(reason) = self.rollback_due.take() {
            return Action::Rollback(reason);
        }
        let check_every = record.spec.analysis.check_every;
        if !record.started {
            return self.gated(0, now_ms, Action::Begin, Hook::Pre, "pre");
        }
        self.take_in(record, &target, &baseline);
        if self.step != Some(record.step) {
            // A new step (or a fresh start): figures from here.
            self.step = Some(record.step);
            if self.origin.is_none() {
                self.origin = Some(Mark {
                    target: target.clone(),
                    baseline: baseline.clone(),
                });
                self.shadow_origin = shadow;
            }
            self.marks.clear();
            self.marks.push_back(Mark { target, baseline });
            self.failures = 0;
            self.hook_failures = 0;
            self.step_began_ms = now_ms;
            self.next_check_ms = now_ms.saturating_add(check_every.as_millis() as u64);
            self.hold = None;
            if !matches!(self.gate, Gate::Passed { step } if step > record.step) {
                self.gate = Gate::Open;
            }
            return Action::Nothing;
        }
        if now_ms < self.next_check_ms {
            return Action::Nothing;
        }
        self.next_check_ms = now_ms.saturating_add(check_every.as_millis() as u64);
        let judgement = self.check(record, now_ms, target, baseline);
        let confident_pass = judgement.confident_pass();
        match judgement.verdict {
            Verdict::Blocked(reason) => {
                // Never promote, never roll back on a check not read: hold,
                // and pause once the step waited as long as it may.
                let wait = record.spec.analysis.step_wait(record.step_interval());
                self.hold = Some(reason.clone());
                if record.step_elapsed(now_ms) < wait {
                    return Action::Nothing;
                }
                Action::Hold(format!(
                    "no verdict within max_step_wait {} ({reason})",
                    humantime::format_duration(wait)
                ))
            }
            Verdict::NoData(reason) => {
                let a = &record.spec.analysis;
                let wait = a.step_wait(record.step_interval());
                if record.step_elapsed(now_ms) < wait {
                    self.hold = Some(reason);
                    return Action::Nothing;
                }
                let why = format!(
                    "no verdict within max_step_wait {} ({reason}): on_inconclusive = {}",
                    humantime::format_duration(wait),
                    a.on_inconclusive.word()
                );
                self.hold = Some(why.clone());
                match a.on_inconclusive {
                    OnInconclusive::Pause => Action::Hold(why),
                    OnInconclusive::Rollback => Action::Rollback(why),
                    OnInconclusive::Promote => self.next_move(record, now_ms),
                }
            }
            Verdict::Fail(breaches) => {
                self.failures += 1;
                let limit = record.spec.analysis.failure_limit;
                let text = breaches.join("; ");
                if self.failures >= limit {
                    return Action::Rollback(format!(
                        "{} failing check(s) in a row at step {} ({}%): {text}",
                        self.failures,
                        record.step + 1,
                        record.weight()
                    ));
                }
                self.hold = Some(format!(
                    "check failed ({} of {limit}): {text}",
                    self.failures
                ));
                Action::Nothing
            }
            Verdict::Pass => {
                self.failures = 0;
                self.hold = None;
                let early = record.spec.analysis.promote_on_pass && confident_pass;
                if record.step_elapsed(now_ms) < record.step_interval() && !early {
                    return Action::Nothing;
                }
                self.next_move(record, now_ms)
            }
        }
    }

    /// Folds the traffic since the last tick into the ratio evidence: a
    /// slice per tick keeps each slice within one split.
    fn take_in(&mut self, record: &RolloutRecord, target: &Snapshot, baseline: &Snapshot) {
        if let (Some(seen), Some(ratio)) = (&self.ratio_seen, record.spec.analysis.max_error_ratio)
        {
            let (t, b) = (target.since(&seen.target), baseline.since(&seen.baseline));
            self.ratio
                .add((t.errors, t.requests), (b.errors, b.requests), ratio);
        }
        self.ratio_seen = Some(Mark {
            target: target.clone(),
            baseline: baseline.clone(),
        });
    }

    /// The step's time is up and its checks pass: promote, wait for
    /// approval, ask the step webhook, or advance.
    fn next_move(&mut self, record: &RolloutRecord, now_ms: u64) -> Action {
        let next = record.step + 1;
        let Some(next_weight) = record.spec.steps.get(next) else {
            return Action::Promote;
        };
        if *next_weight == 100 && record.spec.approval_before_100 && !record.approved {
            self.hold =
                Some("waiting for approval: cutover ctl promote (POST …/rollout/promote)".into());
            return Action::Nothing;
        }
        if record.spec.webhooks.step.is_none() {
            return Action::Advance;
        }
        self.gated(next, now_ms, Action::Advance, Hook::Step, "step")
    }

    /// Goes on with `then` once the gating webhook passed for `step`;
    /// otherwise asks it (again after a failure, once its retry time came).
    fn gated(&mut self, step: usize, now_ms: u64, then: Action, hook: Hook, name: &str) -> Action {
        match self.gate {
            Gate::Passed { step: s } if s == step => then,
            Gate::Pending { step: s } if s == step => {
                self.hold = Some(format!("waiting for the {name} webhook"));
                Action::Nothing
            }
            Gate::Failed { step: s, retry_ms } if s == step && now_ms < retry_ms => Action::Nothing,
            _ => {
                self.gate = Gate::Pending { step };
                self.hold = Some(format!("waiting for the {name} webhook"));
                Action::Call(hook, step)
            }
        }
    }

    /// Judges the window ending now: back from the newest mark to the first
    /// one that gives the target `min_requests`, never before the step.
    fn check(
        &mut self,
        record: &RolloutRecord,
        now_ms: u64,
        target: Snapshot,
        baseline: Snapshot,
    ) -> Judgement {
        let min = record.spec.analysis.min_requests;
        let from = self
            .marks
            .iter()
            .rev()
            .find(|m| target.requests.saturating_sub(m.target.requests) >= min)
            .or(self.marks.front());
        let (t, b) = match from {
            Some(m) => (target.since(&m.target), baseline.since(&m.baseline)),
            None => (target.since(&target), baseline.since(&baseline)),
        };
        let (all_t, all_b) = match (&self.origin, self.marks.front()) {
            // Watching after the move to 100 %: the target since then
            // against the target before it (the baseline has no traffic).
            (Some(o), Some(step)) if record.watching() => (
                Traffic::between(&step.target, &target),
                Traffic::between(&o.target, &step.target),
            ),
            (Some(o), _) => (
                Traffic::between(&o.target, &target),
                Traffic::between(&o.baseline, &baseline),
            ),
            _ => (Traffic::default(), Traffic::default()),
        };
        // The baseline figures shown: what the comparison used.
        let b = if record.watching() { all_b.window } else { b };
        let shadow = match (self.shadow_now, self.shadow_origin) {
            (Some(now), Some(origin)) => Some(now.since(origin)),
            _ => None,
        };
        // The ratio evidence compares the target with the baseline pools:
        // not what a watch compares.
        let ratio = (!record.watching()).then_some(&self.ratio);
        let mut judgement = judge(&record.spec.analysis, &t, (&all_t, &all_b), ratio, shadow);
        let outside = judge_readings(&record.spec.analysis, &self.readings, self.step_began_ms);
        judgement.dry_run.extend(outside.dry_run);
        // The proxy's figures and the outside checks: a breach of either
        // fails; otherwise a check not read blocks, one without data waits.
        judgement.verdict = match (judgement.verdict, outside.breaches.is_empty()) {
            (Verdict::NoData(r), _) => Verdict::NoData(r),
            (Verdict::Fail(mut b), _) => {
                b.extend(outside.breaches);
                Verdict::Fail(b)
            }
            (_, false) => Verdict::Fail(outside.breaches),
            (v, true) => match (outside.broken, outside.waiting) {
                (Some(why), _) => Verdict::Blocked(why),
                (None, Some(why)) => Verdict::NoData(why),
                (None, None) => v,
            },
        };
        let (word, breaches) = match &judgement.verdict {
            Verdict::Pass => ("pass", Vec::new()),
            Verdict::Fail(b) => ("fail", b.clone()),
            Verdict::NoData(_) => ("no_data", Vec::new()),
            Verdict::Blocked(_) => ("blocked", Vec::new()),
        };
        self.last = Some(LastCheck {
            at_ms: now_ms,
            target: Figures::from(&t),
            baseline: Figures::from(&b),
            verdict: word,
            breaches,
            errors: judgement.errors,
            latency: judgement.latency,
            checks: outside.states,
            dry_run: judgement.dry_run.clone(),
        });
        if self.marks.len() >= MARKS {
            // Keep the step's first mark; drop the oldest after it.
            self.marks.remove(1);
        }
        self.marks.push_back(Mark { target, baseline });
        judgement
    }
}

/// The limit a dry-run report names (it leads with it: `http[0] = 7 >
/// max 5`, `max_p99_ms: p99 …`): what it is reported once by.
fn limit_of(report: &str) -> String {
    report
        .split([':', ' '])
        .next()
        .unwrap_or(report)
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Split;
    use crate::rollout::{Analysis, RolloutSpec, Webhooks};
    use crate::traffic::TrafficStats;

    fn record(failure_limit: u32) -> RolloutRecord {
        let spec = RolloutSpec {
            to: "green".into(),
            steps: vec![50, 100],
            interval: Duration::from_secs(10),
            watch: None,
            analysis: Analysis {
                min_requests: 10,
                failure_limit,
                check_every: Duration::from_secs(1),
                ..Analysis::default()
            },
            approval_before_100: false,
            webhooks: Webhooks::default(),
        };
        let start = Split::new([("blue", 1), ("green", 0)]).unwrap();
        RolloutRecord::new(spec, start.clone(), start, 0)
    }

    /// Ticks once a second, serving `errors` failures out of 100 requests
    /// on the target before each tick.
    fn run_checks(record: &RolloutRecord, errors_per_check: &[u64]) -> Vec<Action> {
        let (target, baseline) = (TrafficStats::default(), TrafficStats::default());
        let mut run = Run::default();
        let mut actions = vec![run.tick(record, 0, target.snapshot(), baseline.snapshot())];
        for (i, errors) in errors_per_check.iter().enumerate() {
            for n in 0..100 {
                target.record(Duration::from_millis(5), n < *errors);
                baseline.record(Duration::from_millis(5), false);
            }
            let now = (i as u64 + 1) * 1000;
            actions.push(run.tick(record, now, target.snapshot(), baseline.snapshot()));
        }
        actions
    }

    #[test]
    fn one_failing_check_does_not_roll_back_with_a_limit_of_two() {
        let actions = run_checks(&record(2), &[0, 0, 30]);
        assert!(actions.iter().all(|a| *a == Action::Nothing), "{actions:?}");
        let actions = run_checks(&record(2), &[0, 30, 30]);
        assert!(
            matches!(actions.last(), Some(Action::Rollback(r)) if r.contains("2 failing")),
            "{actions:?}"
        );
        let actions = run_checks(&record(1), &[30]);
        assert!(
            matches!(actions.last(), Some(Action::Rollback(_))),
            "{actions:?}"
        );
    }

    #[test]
    fn a_passing_step_advances_once_its_interval_is_spent() {
        let actions = run_checks(&record(2), &[0; 10]);
        assert_eq!(actions.last(), Some(&Action::Advance), "{actions:?}");
        assert!(
            actions[..10].iter().all(|a| *a == Action::Nothing),
            "{actions:?}"
        );
    }
}
