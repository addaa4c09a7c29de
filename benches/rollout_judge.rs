//! How well rollouts judge, by simulation: the same judge code the proxy
//! runs (`rollout::run::Run`, driven tick by tick through a
//! `RolloutRecord` the way `control::rollout_driver` drives it), fed with
//! synthetic traffic — requests arriving as a Poisson process, errors as
//! independent Bernoulli draws per pool, latencies log-normal — in virtual
//! time, beside two baselines implemented here: the threshold judge
//! cutover had before its tests (the last window's error rate more than
//! 0.02 above the baseline's, or its p99 more than 1.5x the baseline's and
//! 5 ms above it; two checks in a row), and a Kayenta-style Mann-Whitney
//! judge (each check's error rate and p99 a sample; one-sided U tests at
//! 99 %, with the tests' tolerances as effect sizes).
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
use cutover::traffic::{Snapshot, Window};

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

fn rate(w: &Window) -> f64 {
    w.error_rate()
}

fn p99_ms(w: &Window) -> Option<f64> {
    w.p99.map(|d| d.as_secs_f64() * 1000.0)
}

/// The p99 tolerance every judge here is given: 1.5x and 5 ms.
const P99_RATIO: f64 = 1.5;
const P99_FLOOR_MS: f64 = 5.0;

/// The step logic both baselines share with cutover's: checks every
/// `check_every`, no verdict below `min_requests`, two failing checks in
/// a row roll back, a step moves on after its interval, a step without
/// data gives up after `max_step_wait`.
struct Stepper {
    step: Option<usize>,
    next_check_ms: u64,
    failures: u32,
    /// (target, baseline) at each check of the step, the step's start first.
    marks: Vec<(Snapshot, Snapshot)>,
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
        fails: impl FnOnce(&[(Snapshot, Snapshot)], &Snapshot, &Snapshot) -> Option<bool>,
    ) -> Action {
        let a = &record.spec.analysis;
        if !record.started {
            return Action::Begin;
        }
        if self.step != Some(record.step) {
            self.step = Some(record.step);
            self.marks = vec![(target.clone(), baseline.clone())];
            self.failures = 0;
            self.next_check_ms = now_ms + a.check_every.as_millis() as u64;
            return Action::Nothing;
        }
        if now_ms < self.next_check_ms {
            return Action::Nothing;
        }
        self.next_check_ms = now_ms + a.check_every.as_millis() as u64;
        let verdict = fails(&self.marks, target, baseline);
        self.marks.push((target.clone(), baseline.clone()));
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

/// The judge before the tests: the window from the newest mark that
/// gives the target `min_requests`, failing when its error rate is above
/// 0.05, or more than 0.02 above the baseline's, or its p99 more than the
/// tolerance over the baseline's (with `min_requests` on the baseline for
/// the comparisons).
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
                    .or(marks.first())?;
                let (wt, wb) = (t.since(mt), b.since(mb));
                if wt.requests < min {
                    return None;
                }
                let absolute = rate(&wt) > 0.05;
                let compared = wb.requests >= min;
                let errors = compared && rate(&wt) - rate(&wb) > 0.02;
                let latency = compared
                    && match (p99_ms(&wt), p99_ms(&wb)) {
                        (Some(t), Some(b)) => {
                            t.max(1.0) / b.max(1.0) > P99_RATIO && t - b > P99_FLOOR_MS
                        }
                        _ => false,
                    };
                Some(absolute || errors || latency)
            })
    }
}

/// A Kayenta-style judge: each check's error rate and p99 (over its
/// `check_every`) are one sample per pool; the step's samples are
/// compared with one-sided Mann-Whitney U tests (normal approximation,
/// tie-corrected), failing at p < 0.01 when the effect is also beyond the
/// tolerance: the target's mean rate more than 0.001 above the
/// baseline's, or its mean p99 more than 1.5x and 5 ms above.
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
                let mut all: Vec<(&Snapshot, &Snapshot)> =
                    marks.iter().map(|(t, b)| (t, b)).collect();
                all.push((t, b));
                if t.requests - all[0].0.requests < min {
                    return None;
                }
                // Slices where both pools had requests (none on the baseline at
                // 100 %).
                let slices: Vec<(Window, Window)> = all
                    .windows(2)
                    .map(|w| (w[1].0.since(w[0].0), w[1].1.since(w[0].1)))
                    .filter(|(t, b)| t.requests > 0 && b.requests > 0)
                    .collect();
                if slices.len() < 3 {
                    return Some(false);
                }
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                let xs: Vec<f64> = slices.iter().map(|s| rate(&s.0)).collect();
                let ys: Vec<f64> = slices.iter().map(|s| rate(&s.1)).collect();
                let errors =
                    mean(&xs) - mean(&ys) > 0.001 && mann_whitney_greater_p(&xs, &ys) < 0.01;
                let xs: Vec<f64> = slices.iter().filter_map(|s| p99_ms(&s.0)).collect();
                let ys: Vec<f64> = slices.iter().filter_map(|s| p99_ms(&s.1)).collect();
                let (mt, mb) = (mean(&xs), mean(&ys));
                let latency = mt.max(1.0) / mb.max(1.0) > P99_RATIO
                    && mt - mb > P99_FLOOR_MS
                    && mann_whitney_greater_p(&xs, &ys) < 0.01;
                Some(errors || latency)
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
        watch: None,
        analysis: Analysis::default(),
        approval_before_100: false,
        webhooks: Webhooks::default(),
    };
    let start = Split::new([("blue", 100), ("green", 0)]).expect("a valid split");
    RolloutRecord::new(spec, start.clone(), start, 0)
}

/// What the two pools do: (baseline, target) error rates and, for the
/// latency rows, log-normal latency medians (σ 0.5, so the p99 is 3.2x
/// the median); error rows record no latencies (faster, and the latency
/// test then never decides).
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    errors: (f64, f64),
    medians_ms: Option<(f64, f64)>,
}

const SIGMA: f64 = 0.5;

/// Log-normal latencies drawn in bulk: cells 2 % wide over ±5 σ, each
/// request in one with the distribution's probability — an exact
/// multinomial draw, by binomials conditional on the cells before.
struct Latency {
    /// Each cell's duration and its probability given the cells before.
    cells: Vec<(Duration, f64)>,
}

impl Latency {
    fn lognormal(median_ms: f64) -> Latency {
        let cdf =
            |ms: f64| 0.5 * libm::erfc(-(ms / median_ms).ln() / SIGMA / std::f64::consts::SQRT_2);
        let width: f64 = 1.02;
        let count = (10.0 * SIGMA / width.ln()).ceil() as i32;
        let first = median_ms * (-5.0 * SIGMA).exp();
        let mut cells = Vec::new();
        let mut below: f64 = 0.0;
        for k in 0..count {
            let (lo, hi) = (first * width.powi(k), first * width.powi(k + 1));
            let mass = if k + 1 == count {
                1.0 - below
            } else {
                // Cumulative: the first cell takes all below it too.
                cdf(hi) - below
            };
            let left = 1.0 - below;
            let p = if left > 0.0 {
                (mass / left).clamp(0.0, 1.0)
            } else {
                1.0
            };
            below += mass;
            cells.push((Duration::from_secs_f64((lo * hi).sqrt() / 1000.0), p));
        }
        if let Some(last) = cells.last_mut() {
            last.1 = 1.0;
        }
        Latency { cells }
    }

    fn draw(&self, rng: &mut fastrand::Rng, mut n: u64, into: &mut Snapshot) {
        for (d, p) in &self.cells {
            if n == 0 {
                break;
            }
            let k = binomial(rng, n, *p).min(n);
            into.add(*d, k, 0);
            n -= k;
        }
    }
}

/// One pool's traffic for a tick: `n` requests, errors at `p`, latencies
/// from `latency` if any.
fn serve(rng: &mut fastrand::Rng, n: u64, p: f64, latency: Option<&Latency>, into: &mut Snapshot) {
    match latency {
        Some(l) => l.draw(rng, n, into),
        None => into.requests += n,
    }
    into.errors += binomial(rng, n, p);
}

/// One rollout in virtual time: `level` target requests/s at the first
/// step.
fn rollout(
    judge: &mut dyn Judge,
    rng: &mut fastrand::Rng,
    level: f64,
    scenario: &Scenario,
    latencies: Option<&(Latency, Latency)>,
) -> End {
    let mut r = record();
    let route_rate = level * 20.0;
    let (p_base, p_target) = scenario.errors;
    let (mut target, mut baseline) = (Snapshot::default(), Snapshot::default());
    let mut now = 0;
    while now < GIVE_UP_MS {
        now += TICK_MS;
        if r.state == RolloutState::Running {
            let share = f64::from(r.weight()) / 100.0;
            let dt = TICK_MS as f64 / 1000.0;
            let nt = poisson(rng, route_rate * share * dt);
            let nb = poisson(rng, route_rate * (1.0 - share) * dt);
            serve(rng, nt, p_target, latencies.map(|l| &l.1), &mut target);
            serve(rng, nb, p_base, latencies.map(|l| &l.0), &mut baseline);
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

fn simulate(make: &MakeJudge, rollouts: usize, level: f64, scenario: &Scenario, seed: u64) -> Row {
    let mut rng = fastrand::Rng::with_seed(seed);
    let latencies = scenario
        .medians_ms
        .map(|(b, t)| (Latency::lognormal(b), Latency::lognormal(t)));
    let mut row = Row {
        rolled_back: 0,
        promoted: 0,
        inconclusive: 0,
        in_first_step: 0,
        times_ms: Vec::new(),
    };
    for _ in 0..rollouts {
        let mut judge = make();
        match rollout(
            judge.as_mut(),
            &mut rng,
            level,
            scenario,
            latencies.as_ref(),
        ) {
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
            "cutover (tests)",
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
    let errors = |name, errors| Scenario {
        name,
        errors,
        medians_ms: None,
    };
    let latency = |name, target_median| Scenario {
        name,
        errors: (0.002, 0.002),
        medians_ms: Some((20.0, target_median)),
    };
    let all = [
        errors("A/A 0.2 %", (0.002, 0.002)),
        errors("A/A 2 %", (0.02, 0.02)),
        errors("0.2 % -> 0.25 % (within tolerance)", (0.002, 0.0025)),
        errors("0.2 % -> 0.5 %", (0.002, 0.005)),
        errors("0.2 % -> 1 % (5x)", (0.002, 0.01)),
        errors("0.2 % -> 5 %", (0.002, 0.05)),
        errors("0 % -> 1 %", (0.0, 0.01)),
        latency("A/A p99 64 ms", 20.0),
        latency("p99 x1.3 (within tolerance)", 26.0),
        latency("p99 x2", 40.0),
    ];
    // `CUTOVER_SIM_ONLY=p99` runs the scenarios whose name has that in it.
    let only = std::env::var("CUTOVER_SIM_ONLY").unwrap_or_default();
    let scenarios: Vec<&Scenario> = all.iter().filter(|s| s.name.contains(&only)).collect();
    let started = Instant::now();
    println!(
        "{rollouts} rollouts per cell; steps 5/25/50/100 % x 30 s, checks every 5 s, defaults otherwise\n"
    );
    println!(
        "| scenario | target req/s | judge | rolled back | in step 1 | promoted | paused (no verdict) | median time to rollback |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for scenario in scenarios {
        let name = scenario.name;
        let s = all.iter().position(|a| a.name == name).unwrap_or(0);
        for (l, level) in levels.iter().enumerate() {
            for (j, (judge, make)) in judges.iter().enumerate() {
                let seed = (s * 100 + l * 10 + j) as u64 + 1;
                let row = simulate(make.as_ref(), rollouts, *level, scenario, seed);
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
