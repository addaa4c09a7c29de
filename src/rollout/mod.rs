//! Progressive rollouts: the spec an operator asks for, the persisted
//! record of one rollout's progress, and the splits each step sets.
//! `analysis` judges a window of live traffic against the limits; `run`
//! holds what a running rollout keeps in memory and decides the next move.
//! The spec itself and its parsing live in `config` (the file can carry a
//! route's defaults). Pure: no I/O, no clock (times come in). Imports
//! `config`, `traffic`.

pub mod analysis;
pub mod checks;
pub mod run;
pub mod sequential;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Split;

pub use crate::config::{Analysis, OnInconclusive, RolloutSpec, SpecError, Webhooks, parse_spec};

/// How many finished rollouts a route keeps in its history.
pub const HISTORY: usize = 5;

/// Where a rollout is. `waiting` (for data, approval or a webhook) is not
/// persisted: it is a running rollout's hold, shown in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Paused,
    Promoted,
    RolledBack,
    Aborted,
}

impl RolloutState {
    pub fn word(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Promoted => "promoted",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Running or paused: it still owns the route's split.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

/// One rollout's persisted progress: enough to resume after a restart,
/// reload or binary upgrade at the same step, with the time spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRecord {
    pub spec: RolloutSpec,
    /// The route's split when the rollout started; abort and rollback
    /// return to it.
    pub start_split: Split,
    /// The file's split of the route then: a file that changes it aborts.
    pub file_split: Split,
    /// Index into `spec.steps`.
    pub step: usize,
    pub state: RolloutState,
    /// The `pre` webhook has answered 2xx (or there is none).
    pub started: bool,
    /// Promote was called for the approval gate.
    #[serde(default)]
    pub approved: bool,
    /// Unix ms.
    pub started_ms: u64,
    /// Unix ms when the current step began (moved forward by a pause).
    pub step_started_ms: u64,
    /// While paused: the step time already spent.
    #[serde(default)]
    pub paused_elapsed_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// Why it was rolled back, aborted, or why it holds.
    #[serde(default)]
    pub reason: Option<String>,
    /// Set when the rollout moves several routes as one
    /// (`POST /api/v1/rollouts`): every member's record carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<RolloutGroup>,
}

/// The routes one rollout moves together: one step, one verdict, one
/// rollback. Each member keeps its own record (its start split, its
/// figures); a move of one is made to all in the same change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutGroup {
    /// The member routes, in the order analysis reports them; the first
    /// one's record stands for the group (webhooks, logs, the driver).
    pub routes: Vec<String>,
}

impl RolloutGroup {
    /// The route whose record stands for the group.
    pub fn lead(&self) -> &str {
        self.routes.first().map_or("", String::as_str)
    }
}

impl RolloutRecord {
    pub fn new(spec: RolloutSpec, start_split: Split, file_split: Split, now_ms: u64) -> Self {
        let started = spec.webhooks.pre.is_none();
        RolloutRecord {
            spec,
            start_split,
            file_split,
            step: 0,
            state: RolloutState::Running,
            started,
            approved: false,
            started_ms: now_ms,
            step_started_ms: now_ms,
            paused_elapsed_ms: None,
            ended_ms: None,
            reason: None,
            group: None,
        }
    }

    /// Another rollout of the same group (started in the same change), or
    /// the same route's: moves made to one apply to it.
    pub fn same_rollout(&self, other: &RolloutRecord) -> bool {
        self.started_ms == other.started_ms && self.group == other.group
    }

    /// What a member route is judged by on its own in a group rollout:
    /// its failures veto the group, but the group's summed traffic moves
    /// it — so no gates, approval, outside checks or inconclusive moves of
    /// its own.
    pub fn as_member(&self) -> RolloutRecord {
        let mut member = self.clone();
        member.spec.webhooks = Webhooks::default();
        member.spec.approval_before_100 = false;
        member.spec.analysis.on_inconclusive = OnInconclusive::Pause;
        member.spec.analysis.promote_on_pass = false;
        // Outside checks read the whole app: the group judges them.
        member.spec.analysis.http.clear();
        member.spec.analysis.prometheus.clear();
        member
    }

    /// The target's percent now: 0 before the `pre` webhook passed, the
    /// step's while active, 100 once promoted, 0 after a rollback or abort.
    pub fn weight(&self) -> u32 {
        match self.state {
            RolloutState::Running | RolloutState::Paused if self.started => {
                self.spec.steps.get(self.step).copied().unwrap_or(100)
            }
            RolloutState::Promoted => 100,
            _ => 0,
        }
    }

    /// The pools compared with the target: those the start split sent
    /// traffic to.
    pub fn baseline(&self) -> Vec<&str> {
        self.start_split
            .iter()
            .filter(|(p, w)| *w > 0 && *p != self.spec.to)
            .map(|(p, _)| p)
            .collect()
    }

    /// At the last step (100 %) with a `watch`: judged against the
    /// target's own figures from before it.
    pub fn watching(&self) -> bool {
        self.spec.watch.is_some() && self.started && self.step + 1 == self.spec.steps.len()
    }

    /// How long the current step lasts: the interval, or `watch` for the
    /// last one when set.
    pub fn step_interval(&self) -> Duration {
        match self.spec.watch {
            Some(watch) if self.step + 1 == self.spec.steps.len() => watch,
            _ => self.spec.interval,
        }
    }

    /// Time spent in the current step at `now_ms`.
    pub fn step_elapsed(&self, now_ms: u64) -> Duration {
        let ms = self
            .paused_elapsed_ms
            .unwrap_or_else(|| now_ms.saturating_sub(self.step_started_ms));
        Duration::from_millis(ms)
    }

    /// The split the route has at this point of the rollout.
    pub fn split(&self) -> Split {
        if !self.state.is_active() && self.state != RolloutState::Promoted {
            return self.start_split.clone();
        }
        if !self.started {
            return self.start_split.clone();
        }
        split_at(&self.start_split, &self.spec.to, self.weight())
    }
}

/// `start` with `to` at `percent` and the other pools sharing the rest in
/// their start proportions (pools at 0 stay at 0).
pub fn split_at(start: &Split, to: &str, percent: u32) -> Split {
    let percent = percent.min(100);
    let base: Vec<(&str, u32)> = start.iter().filter(|(p, w)| *w > 0 && *p != to).collect();
    let total: u64 = base.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut weights: Vec<(String, i64)> = Vec::new();
    for (pool, w) in start.iter() {
        let weight = if pool == to {
            i64::from(percent) * 100
        } else if w == 0 || total == 0 {
            0
        } else {
            // The rest, 100 × (100 - percent), in start proportions.
            (u64::from(100 - percent) * 100 * u64::from(w) / total) as i64
        };
        weights.push((pool.to_string(), weight));
    }
    if !weights.iter().any(|(p, _)| p == to) {
        weights.push((to.to_string(), i64::from(percent) * 100));
    }
    Split::new(weights.iter().map(|(p, w)| (p.clone(), *w)))
        .map(|s| reduce(&s))
        .unwrap_or_else(|_| start.clone())
}

/// The same split in percent where it divides evenly, as the operator
/// typed the steps: a canary at 25 % reads `blue=75 green=25`, not
/// `blue=7500 green=2500` (nor `blue=3 green=1`, which hides the step).
fn reduce(split: &Split) -> Split {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    // Weights sum to 10,000; dividing by at most 100 keeps them in
    // percent, or in finer units when three pools share unevenly.
    let g = gcd(split.iter().fold(0, |g, (_, w)| gcd(g, w)), 100).max(1);
    Split::new(split.iter().map(|(p, w)| (p, i64::from(w / g)))).unwrap_or_else(|_| split.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, i64)]) -> Split {
        Split::new(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn steps_move_the_target_share_and_keep_baseline_proportions() {
        let start = split(&[("blue", 100), ("green", 0)]);
        assert_eq!(
            split_at(&start, "green", 25).to_string(),
            "blue=75 green=25"
        );
        assert_eq!(
            split_at(&start, "green", 100).to_string(),
            "blue=0 green=100"
        );
        assert_eq!(split_at(&start, "green", 0).to_string(), "blue=100 green=0");
        let two = split(&[("a", 1), ("b", 3)]);
        let s = split_at(&two, "c", 50);
        assert_eq!(s.weight_of("c") * 2, s.iter().map(|(_, w)| w).sum::<u32>());
        assert_eq!(s.weight_of("b"), 3 * s.weight_of("a"));
    }
}
