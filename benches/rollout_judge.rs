//! How well rollouts judge, by simulation: the same judge code the proxy
//! runs (`rollout::run::Run`, driven tick by tick through a
//! `RolloutRecord` the way `control::rollout_driver` drives it), fed with
//! synthetic traffic — requests arriving as a Poisson process, errors as
//! independent Bernoulli draws per pool — in virtual time, beside two
//! baselines implemented here: the threshold judge cutover had before its
//! error test (the last window's error rate more than 0.02 above the
//! baseline's, two checks in a row), and a Kayenta-style Mann-Whitney
//! judge (each check's error rate a sample; one-sided U test at 99 %, with
//! the error test's +0.1-point tolerance as its effect size).
//!
//! Every rollout uses the defaults: steps 5, 25, 50, 100 %, 30 s each,
//! checks every 5 s, `min_requests` 50, two failing checks roll back, a
//! step without data pauses after 90 s. "Traffic" is the target's
//! requests/s at the first step (5 % of the route; the route carries 20×).
//!
//! Run: `cargo bench --bench rollout_judge` (a few minutes; fewer rollouts
//! with `CUTOVER_SIM_ROLLOUTS=200`). The table it prints is in
//! docs/rollouts.md.

use std::time::{Duration, Instant};

use cutover::config::Split;
use cutover::rollout::run::{Action, Run};
use cutover::rollout::{Analysis, RolloutRecord, RolloutSpec, RolloutState, Webhooks};
use cutover::traffic::Snapshot;

const TICK_MS: u64 = 1000;
/// A rollout not over by then (paused, or waiting) counts as inconclusive.
const GIVE_UP_MS: u64 = 30 * 60 * 1000;

/// What a rollout ended as, and when (ms after its start).
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    RolledBack { at_ms: u64, step: usize },
    Promoted,
    Inconclusive,
}

/// A judge ticked like the driver ticks `Run`.
trait Judge {
    fn tick(
        &mut self,
        record: &RolloutRecord,
        now_ms: u64,
        target: &Snapshot,
        baseline: &Snapshot,
    ) -> Action;
}

/// cutover's judge, as the proxy runs it.
struct Cutover(Run);

impl Judge for Cutover {
    fn tick(
        &mut self,
        record: &RolloutRecord,
        now_ms: u64,
        target: &Snapshot,
        baseline: &Snapshot,
    ) -> Action {
        self.0
            .tick(record, now_ms, target.clone(), baseline.clone())
    }
}

/// Counts of one pool at one check.
#[derive(Clone, Copy, Default)]
struct Counts {
    requests: u64,
    errors: u64,
}

impl Counts {
    fn of(s: &Snapshot) -> Counts {
        Counts {
            requests: s.requests,
            errors: s.errors,
        }
    }

    fn minus(self, earlier: Counts) -> Counts {
        Counts {
            requests: self.requests - earlier.requests,
            errors: self.errors - earlier.errors,
        }
    }

    fn rate(self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// The step logic both baselines share with cutover's: checks every
/// `check_every`, no verdict below `min_requests`, two failing checks in
/// a row roll back, a step moves on after its interval, a step without
/// data gives up after `max_step_wait`.
struct Stepper {
    step: Option<usize>,
    next_check_ms: u64,
    failures: u32,
    /// (target, baseline) at each check of the step, the step's start first.
    marks: Vec<(Counts, Counts)>,
}

impl Stepper {
    fn new() -> Self {
        Stepper {
            step: None,
            next_check_ms: 0,
            failures: 0,
            marks: Vec::new(),
        }
    }

    fn tick(
        &mut self,
        record: &RolloutRecord,
        now_ms: u64,
        target: &Snapshot,
        baseline: &Snapshot,
        fails: impl FnOnce(&[(Counts, Counts)], Counts, Counts) -> Option<bool>,
    ) -> Action {
        let a = &record.spec.analysis;
        if !record.started {
            return Action::Begin;
        }
        let (t, b) = (Counts::of(target), Counts::of(baseline));
        if self.step != Some(record.step) {
            self.step = Some(record.step);
            self.marks = vec![(t, b)];
            self.failures = 0;
            self.next_check_ms = now_ms + a.check_every.as_millis() as u64;
            return Action::Nothing;
        }
        if now_ms < self.next_check_ms {
            return Action::Nothing;
        }
        self.next_check_ms = now_ms + a.check_every.as_millis() as u64;
        let verdict = fails(&self.marks, t, b);
        self.marks.push((t, b));
        match verdict {
            None => {
                if record.step_elapsed(now_ms) >= a.step_wait(record.spec.interval) {
                    Action::Hold("no data".into())
                } else {
                    Action::Nothing
                }
            }
            Some(true) => {
                self.failures += 1;
                if self.failures >= a.failure_limit {
                    Action::Rollback("failed".into())
                } else {
                    Action::Nothing
                }
            }
            Some(false) => {
                self.failures = 0;
                if record.step_elapsed(now_ms) < record.spec.interval {
                    Action::Nothing
                } else if record.step + 1 < record.spec.steps.len() {
                    Action::Advance
                } else {
                    Action::Promote
                }
            }
        }
    }
}

/// The judge before the error test: the window from the newest mark that
/// gives the target `min_requests`, failing when its error rate is above
/// 0.05, or more than 0.02 above the baseline's (with `min_requests` on
/// the baseline too).
struct Threshold(Stepper);

impl Judge for Threshold {
    fn tick(
        &mut self,
        record: &RolloutRecord,
        now_ms: u64,
        target: &Snapshot,
        baseline: &Snapshot,
    ) -> Action {
        let min = record.spec.analysis.min_requests;
        self.0
            .tick(record, now_ms, target, baseline, |marks, t, b| {
                let (mt, mb) = marks
                    .iter()
                    .rev()
                    .find(|(mt, _)| t.requests - mt.requests >= min)
                    .or(marks.first())
                    .copied()
                    .unwrap_or_default();
                let (wt, wb) = (t.minus(mt), b.minus(mb));
                if wt.requests < min {
                    return None;
                }
                let absolute = wt.rate() > 0.05;
                let relative = wb.requests >= min && wt.rate() - wb.rate() > 0.02;
                Some(absolute || relative)
            })
    }
}

/// A Kayenta-style judge: each check's error rate (over its `check_every`)
/// is one sample per pool; the step's samples are compared with a
/// one-sided Mann-Whitney U test (normal approximation, tie-corrected);
/// failing at p < 0.01 when the target's mean rate is also more than
/// 0.001 above the baseline's.
struct MannWhitney(Stepper);

impl Judge for MannWhitney {
    fn tick(
        &mut self,
        record: &RolloutRecord,
        now_ms: u64,
        target: &Snapshot,
        baseline: &Snapshot,
    ) -> Action {
        let min = record.spec.analysis.min_requests;
        self.0
            .tick(record, now_ms, target, baseline, |marks, t, b| {
                let mut all: Vec<(Counts, Counts)> = marks.to_vec();
                all.push((t, b));
                let (first_t, _) = all[0];
                if t.requests - first_t.requests < min {
                    return None;
                }
                // Slices where both pools had requests (none on the baseline at
                // 100 %).
                let slices: Vec<(f64, f64)> = all
                    .windows(2)
                    .map(|w| (w[1].0.minus(w[0].0), w[1].1.minus(w[0].1)))
                    .filter(|(t, b)| t.requests > 0 && b.requests > 0)
                    .map(|(t, b)| (t.rate(), b.rate()))
                    .collect();
                if slices.len() < 3 {
                    return Some(false);
                }
                let xs: Vec<f64> = slices.iter().map(|s| s.0).collect();
                let ys: Vec<f64> = slices.iter().map(|s| s.1).collect();
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                let effect = mean(&xs) - mean(&ys) > 0.001;
                Some(effect && mann_whitney_greater_p(&xs, &ys) < 0.01)
            })
    }
}

/// One-sided p-value that `xs` tend to be greater than `ys`.
fn mann_whitney_greater_p(xs: &[f64], ys: &[f64]) -> f64 {
    let (n1, n2) = (xs.len() as f64, ys.len() as f64);
    let mut all: Vec<(f64, bool)> = xs
        .iter()
        .map(|x| (*x, true))
        .chain(ys.iter().map(|y| (*y, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ranks = vec![0.0; all.len()];
    let mut ties = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for r in ranks.iter_mut().take(j + 1).skip(i) {
            *r = rank;
        }
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let r1: f64 = all
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| v.1)
        .map(|(_, r)| r)
        .sum();
    let u = r1 - n1 * (n1 + 1.0) / 2.0;
    let n = n1 + n2;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    let z = (u - n1 * n2 / 2.0 - 0.5) / var.sqrt();
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// Poisson-distributed count with mean `lambda`.
fn poisson(rng: &mut fastrand::Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 50.0 {
        let z = normal(rng);
        return (lambda + z * lambda.sqrt()).round().max(0.0) as u64;
    }
    let limit = (-lambda).exp();
    let (mut k, mut p) = (0u64, 1.0);
    loop {
        p *= rng.f64();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Binomial(n, p): exact for few trials, else Poisson or normal.
fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> u64 {
    if p <= 0.0 || n == 0 {
        return 0;
    }
    if n <= 64 {
        return (0..n).filter(|_| rng.f64() < p).count() as u64;
    }
    let mean = n as f64 * p;
    if mean < 30.0 {
        return poisson(rng, mean).min(n);
    }
    let sd = (mean * (1.0 - p)).sqrt();
    (mean + normal(rng) * sd).round().clamp(0.0, n as f64) as u64
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    let (u1, u2) = (rng.f64().max(1e-300), rng.f64());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn record() -> RolloutRecord {
    let spec = RolloutSpec {
        to: "green".into(),
        steps: vec![5, 25, 50, 100],
        interval: Duration::from_secs(30),
        analysis: Analysis::default(),
        approval_before_100: false,
        webhooks: Webhooks::default(),
    };
    let start = Split::new([("blue", 100), ("green", 0)]).expect("a valid split");
    RolloutRecord::new(spec, start.clone(), start, 0)
}

/// One rollout in virtual time: `level` target requests/s at the first
/// step, error rates `p_base` and `p_target`.
fn rollout(
    judge: &mut dyn Judge,
    rng: &mut fastrand::Rng,
    level: f64,
    p_base: f64,
    p_target: f64,
) -> End {
    let mut r = record();
    let route_rate = level * 20.0;
    let (mut target, mut baseline) = (Snapshot::default(), Snapshot::default());
    let mut now = 0;
    while now < GIVE_UP_MS {
        now += TICK_MS;
        if r.state == RolloutState::Running {
            let share = f64::from(r.weight()) / 100.0;
            let dt = TICK_MS as f64 / 1000.0;
            let nt = poisson(rng, route_rate * share * dt);
            let nb = poisson(rng, route_rate * (1.0 - share) * dt);
            target.requests += nt;
            target.errors += binomial(rng, nt, p_target);
            baseline.requests += nb;
            baseline.errors += binomial(rng, nb, p_base);
        }
        match judge.tick(&r, now, &target, &baseline) {
            Action::Nothing | Action::Call(..) => {}
            Action::Begin => {
                r.started = true;
                r.step_started_ms = now;
            }
            Action::Advance => {
                if r.step + 1 < r.spec.steps.len() {
                    r.step += 1;
                    r.step_started_ms = now;
                } else {
                    return End::Promoted;
                }
            }
            Action::Promote => return End::Promoted,
            Action::Rollback(_) => {
                return End::RolledBack {
                    at_ms: now,
                    step: r.step,
                };
            }
            Action::Hold(_) => return End::Inconclusive,
        }
    }
    End::Inconclusive
}

struct Row {
    rolled_back: usize,
    promoted: usize,
    inconclusive: usize,
    /// Rolled back during the first step (5 %).
    in_first_step: usize,
    times_ms: Vec<u64>,
}

/// A fresh judge for each rollout.
type MakeJudge = dyn Fn() -> Box<dyn Judge>;

fn simulate(make: &MakeJudge, rollouts: usize, level: f64, rates: (f64, f64), seed: u64) -> Row {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut row = Row {
        rolled_back: 0,
        promoted: 0,
        inconclusive: 0,
        in_first_step: 0,
        times_ms: Vec::new(),
    };
    for _ in 0..rollouts {
        let mut judge = make();
        match rollout(judge.as_mut(), &mut rng, level, rates.0, rates.1) {
            End::RolledBack { at_ms, step } => {
                row.rolled_back += 1;
                row.in_first_step += usize::from(step == 0);
                row.times_ms.push(at_ms);
            }
            End::Promoted => row.promoted += 1,
            End::Inconclusive => row.inconclusive += 1,
        }
    }
    row.times_ms.sort_unstable();
    row
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: build only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rollouts: usize = std::env::var("CUTOVER_SIM_ROLLOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let judges: [(&str, Box<MakeJudge>); 3] = [
        (
            "cutover (error test)",
            Box::new(|| Box::new(Cutover(Run::for_rollout(0))) as Box<dyn Judge>),
        ),
        (
            "threshold (before)",
            Box::new(|| Box::new(Threshold(Stepper::new())) as Box<dyn Judge>),
        ),
        (
            "Mann-Whitney",
            Box::new(|| Box::new(MannWhitney(Stepper::new())) as Box<dyn Judge>),
        ),
    ];
    let levels = [0.2, 1.0, 5.0, 20.0, 100.0, 1000.0, 5000.0];
    let scenarios: [(&str, (f64, f64)); 7] = [
        ("A/A 0.2 %", (0.002, 0.002)),
        ("A/A 2 %", (0.02, 0.02)),
        ("0.2 % -> 0.25 % (within tolerance)", (0.002, 0.0025)),
        ("0.2 % -> 0.5 %", (0.002, 0.005)),
        ("0.2 % -> 1 % (5x)", (0.002, 0.01)),
        ("0.2 % -> 5 %", (0.002, 0.05)),
        ("0 % -> 1 %", (0.0, 0.01)),
    ];
    let started = Instant::now();
    println!(
        "{rollouts} rollouts per cell; steps 5/25/50/100 % x 30 s, checks every 5 s, defaults otherwise\n"
    );
    println!(
        "| scenario | target req/s | judge | rolled back | in step 1 | promoted | paused (no verdict) | median time to rollback |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (s, (name, rates)) in scenarios.iter().enumerate() {
        for (l, level) in levels.iter().enumerate() {
            for (j, (judge, make)) in judges.iter().enumerate() {
                let seed = (s * 100 + l * 10 + j) as u64 + 1;
                let row = simulate(make.as_ref(), rollouts, *level, *rates, seed);
                let pct = |n: usize| format!("{:.1} %", n as f64 * 100.0 / rollouts as f64);
                let median = row
                    .times_ms
                    .get(row.times_ms.len() / 2)
                    .map_or("–".to_string(), |ms| {
                        format!("{:.0} s", *ms as f64 / 1000.0)
                    });
                println!(
                    "| {name} | {level} | {judge} | {} | {} | {} | {} | {median} |",
                    pct(row.rolled_back),
                    pct(row.in_first_step),
                    pct(row.promoted),
                    pct(row.inconclusive),
                );
            }
        }
    }
    eprintln!("simulated in {:.0?}", started.elapsed());
}
