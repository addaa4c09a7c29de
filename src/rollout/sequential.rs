//! The rollout's error-rate test: anytime-valid, so it may look at every
//! check — as often as the driver likes, for as long as the rollout runs —
//! and still hold its confidence.
//!
//! Method: a confidence sequence for each pool's error rate, the
//! beta-binomial mixture of Robbins (1970) and Lai (1976) ("On confidence
//! sequences", Annals of Statistics 4(2)): with `S` errors in `n`
//! requests, the set of rates `p` whose mixture likelihood ratio
//!
//! ```text
//! M_n(p) = B(1 + S, 1 + n − S) / (p^S (1 − p)^(n − S))     (uniform prior)
//! ```
//!
//! stays below `1/α`. Under the true rate `M_n` is a nonnegative martingale
//! of mean 1, so by Ville's inequality the true rate is outside the set at
//! *some* time with probability at most `α` — whenever and however often
//! it is looked at. Target and baseline each get `α/2` (a union bound), so
//! the pair of intervals holds the pair of true rates at every check with
//! probability `confidence`. Assumptions: requests are independent with a
//! fixed error rate per pool while the rollout runs (a changing rate —
//! an outage of a dependency — breaks it for both pools alike).
//!
//! The decision, from the two intervals: **worse** when every pair of
//! rates they allow is beyond the tolerance (the target's rate above the
//! baseline's by more than `max_error_rate_increase` *and* more than
//! `max_error_ratio` times it); **within** when every pair is inside it;
//! **undecided** otherwise. A target no worse than the tolerance is called
//! worse with probability at most `1 − confidence` over the whole rollout.
//!
//! Latency gets the same treatment for a quantile (p99 by default): a
//! confidence sequence for each pool's quantile, and the same three-way
//! decision against `max_p99_ratio` with the `min_p99_increase_ms` floor.
//! The quantile's sequence is Howard & Ramdas's fixed-quantile one
//! ("Sequential estimation of quantiles with applications to A/B-testing
//! and best-arm identification", Bernoulli 28(3), 2022, section 3): of `n`
//! responses, how many are slower than the true `q` quantile is a
//! Binomial(n, 1 − q) count whatever the latency distribution, so a
//! confidence sequence for that count — the beta-binomial mixture again,
//! now with a known rate — bounds the quantile between two order
//! statistics, read off the histogram's buckets (rounded outwards).
//! Assumption beyond independence: latencies are continuous (no two
//! responses take exactly the same time), which microsecond timings are
//! near enough.

use serde::Serialize;

use crate::traffic::Latencies;

/// An estimate and the interval the confidence sequence gives it now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Worse,
    Within,
    Undecided,
}

/// The tolerance the target is held to; `None` parts are not checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// The most the target's error rate may exceed the baseline's by.
    pub increase: Option<f64>,
    /// The most it may be as a multiple of the baseline's.
    pub ratio: Option<f64>,
}

/// One comparison of the target's error rate with the baseline's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorComparison {
    pub target: Interval,
    pub baseline: Interval,
    pub confidence: f64,
    pub decision: Decision,
}

/// The interval of a rate with `errors` in `requests`, holding the true
/// rate at every time with probability `1 − alpha`.
pub fn error_rate_interval(errors: u64, requests: u64, alpha: f64) -> Interval {
    let errors = errors.min(requests);
    if requests == 0 {
        return Interval {
            estimate: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    let (s, n) = (errors as f64, requests as f64);
    let estimate = s / n;
    // log M_n(p) = ln B(1+S, 1+n−S) − S ln p − (n−S) ln(1−p) < ln(1/α):
    // the set where the convex g(p) = −S ln p − (n−S) ln(1−p) stays below
    // a bound; an interval around the estimate, found by bisection.
    let (a, b) = PRIOR;
    let bound = (1.0 / alpha).ln() - (ln_beta(a + s, b + n - s) - ln_beta(a, b));
    let g = |p: f64| -> f64 {
        let mut v = 0.0;
        if s > 0.0 {
            v -= s * p.ln();
        }
        if n - s > 0.0 {
            v -= (n - s) * (1.0 - p).ln();
        }
        v
    };
    let low = if errors == 0 {
        0.0
    } else {
        bisect(|p| g(p) < bound, 0.0, estimate)
    };
    let high = if errors == requests {
        1.0
    } else {
        // From the estimate up: the last rate still inside.
        1.0 - bisect(|q| g(1.0 - q) < bound, 0.0, 1.0 - estimate)
    };
    Interval {
        estimate,
        low,
        high,
    }
}

/// The smallest `x` in `[outside, inside]` with `inside_at(x)` true, where
/// `inside_at` is false at `outside` and true at `inside` (to 1e-9).
fn bisect(inside_at: impl Fn(f64) -> bool, mut outside: f64, mut inside: f64) -> f64 {
    if inside_at(outside) {
        return outside;
    }
    for _ in 0..64 {
        let mid = 0.5 * (outside + inside);
        if inside_at(mid) {
            inside = mid;
        } else {
            outside = mid;
        }
        if inside - outside < 1e-9 {
            break;
        }
    }
    inside
}

/// The mixture's Beta prior over the error rate: its weight near the small
/// rates real services run at lowers the price the mixture pays for not
/// knowing the rate (benches/rollout_judge.rs measured Beta(1, 1) against
/// this one); any prior keeps the guarantee.
const PRIOR: (f64, f64) = (0.5, 20.0);

fn ln_beta(a: f64, b: f64) -> f64 {
    libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b)
}

/// Evidence, gathered check by check, that the target's error rate is
/// more than `ratio` times the baseline's — the relative half of "worse",
/// tested on both pools' errors together, which has far more power than
/// comparing two one-pool intervals.
///
/// Given how many requests each pool served in a slice of time and how
/// many errors the two had together, the share of those errors that are
/// the target's is Binomial(E, π) with π = n_t·p_t / (n_t·p_t + n_b·p_b)
/// (errors as Poisson counts: rare per request). At the tolerance's edge
/// (p_t = ratio · p_b) π is known from the request counts alone, so the
/// likelihood ratio against π stretched by an odds factor θ, multiplied
/// over the slices and averaged over a grid of θ, is a test martingale: by
/// Ville's inequality it reaches `1/α` with probability at most `α` while
/// the target is within the ratio (the binomial overstates the spread of
/// the exact conditional law, which keeps the test on the safe side).
#[derive(Debug, Clone, PartialEq)]
pub struct RatioEvidence {
    /// ln of each θ's likelihood ratio so far.
    log_lr: [f64; ODDS.len()],
}

/// The odds factors the evidence mixes, equally weighted: from a little
/// past the tolerance to far beyond it.
const ODDS: [f64; 7] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];

impl Default for RatioEvidence {
    fn default() -> Self {
        RatioEvidence {
            log_lr: [0.0; ODDS.len()],
        }
    }
}

impl RatioEvidence {
    /// One slice: each pool's (errors, requests) in it.
    pub fn add(&mut self, target: (u64, u64), baseline: (u64, u64), ratio: f64) {
        let (errors_t, requests_t) = target;
        let (errors_b, requests_b) = baseline;
        let errors = errors_t + errors_b;
        // Without baseline requests every error is the target's, whatever
        // the rates: no evidence either way.
        if errors == 0 || requests_t == 0 || requests_b == 0 {
            return;
        }
        let weighted = ratio * requests_t as f64;
        let edge = weighted / (weighted + requests_b as f64);
        let (s, f) = (
            errors_t.min(errors) as f64,
            (errors - errors_t.min(errors)) as f64,
        );
        for (log_lr, theta) in self.log_lr.iter_mut().zip(ODDS) {
            let q = theta * edge / (1.0 - edge + theta * edge);
            *log_lr += s * (q / edge).ln() + f * ((1.0 - q) / (1.0 - edge)).ln();
        }
    }

    /// ln of the mixture: the evidence against "within the ratio".
    pub fn log_evidence(&self) -> f64 {
        let top = self.log_lr.iter().copied().fold(f64::MIN, f64::max);
        let sum: f64 = self.log_lr.iter().map(|l| (l - top).exp()).sum();
        top + (sum / ODDS.len() as f64).ln()
    }
}

/// Compares the target's errors with the baseline's over the same time.
/// `ratio_evidence`, when given, decides the relative half of "worse" in
/// place of the two intervals.
pub fn compare_error_rates(
    target: (u64, u64),
    baseline: (u64, u64),
    confidence: f64,
    tolerance: Tolerance,
    ratio_evidence: Option<&RatioEvidence>,
) -> ErrorComparison {
    let alpha = (1.0 - confidence).max(f64::MIN_POSITIVE);
    let t = error_rate_interval(target.0, target.1, alpha / 2.0);
    let b = error_rate_interval(baseline.0, baseline.1, alpha / 2.0);
    let worse_by_increase = tolerance.increase.is_none_or(|d| t.low - b.high > d);
    // Worse means beyond both parts, so each part may be tested at the
    // full α (an intersection-union test: the release is called worse
    // only when both tests reject).
    let worse_by_ratio = tolerance.ratio.is_none_or(|r| match ratio_evidence {
        Some(e) => e.log_evidence() >= (1.0 / alpha).ln(),
        None => t.low > r * b.high,
    });
    let within_by_increase = tolerance.increase.is_some_and(|d| t.high - b.low <= d);
    let within_by_ratio = tolerance.ratio.is_some_and(|r| t.high <= r * b.low);
    let checked = tolerance.increase.is_some() || tolerance.ratio.is_some();
    let decision = if !checked || within_by_increase || within_by_ratio {
        Decision::Within
    } else if worse_by_increase && worse_by_ratio {
        Decision::Worse
    } else {
        Decision::Undecided
    };
    ErrorComparison {
        target: t,
        baseline: b,
        confidence,
        decision,
    }
}

impl ErrorComparison {
    /// "errors 1.90 % [1.10 %, 2.90 %] vs the baseline's 0.20 % [0.10 %,
    /// 0.30 %]: worse than +0.10 pp and 1.5x with 99 % confidence".
    pub fn describe(&self, tolerance: Tolerance) -> String {
        let pct = |i: &Interval| {
            format!(
                "{:.2} % [{:.2} %, {:.2} %]",
                i.estimate * 100.0,
                i.low * 100.0,
                i.high * 100.0
            )
        };
        let mut limits = Vec::new();
        if let Some(d) = tolerance.increase {
            limits.push(format!("+{:.2} pp", d * 100.0));
        }
        if let Some(r) = tolerance.ratio {
            limits.push(format!("{r}x"));
        }
        let verdict = match self.decision {
            Decision::Worse => "worse than",
            Decision::Within => "within",
            Decision::Undecided => "not yet known against",
        };
        format!(
            "errors {} vs the baseline's {}: {verdict} {} with {} % confidence",
            pct(&self.target),
            pct(&self.baseline),
            limits.join(" and "),
            self.confidence * 100.0
        )
    }
}

/// The latency quantile's tolerance: worse means beyond both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyTolerance {
    /// The most the target's quantile may be as a multiple of the
    /// baseline's (each taken as at least 1 ms).
    pub ratio: f64,
    /// A target at most this many ms above the baseline is never worse.
    pub floor_ms: f64,
}

/// One comparison of a latency quantile, target against baseline, in ms.
/// An interval's `high` is infinite (`null` in JSON) until there is data
/// enough to bound it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyComparison {
    /// Which quantile: 0.99 for p99.
    pub quantile: f64,
    pub target: Interval,
    pub baseline: Interval,
    pub confidence: f64,
    pub decision: Decision,
}

/// The prior's weight on rates above the quantile, in responses: the
/// mixture is tuned to tell a few responses more or fewer than expected
/// above the quantile (benches/rollout_judge.rs tried 0.5 to 8: little
/// difference; 4 caught a little more at low traffic).
const QUANTILE_PRIOR_ABOVE: f64 = 4.0;

/// Bounds on how many of `n` responses are slower than the true `q`
/// quantile, holding at every `n` with probability `1 − alpha`: the counts
/// `s` where the beta-binomial mixture against Binomial(n, 1 − q) stays
/// below `1/alpha`.
fn count_above_bounds(n: u64, q: f64, alpha: f64) -> (f64, f64) {
    let n = n as f64;
    let p = 1.0 - q;
    let (a, b) = (QUANTILE_PRIOR_ABOVE, QUANTILE_PRIOR_ABOVE * q / p);
    let bound = (1.0 / alpha).ln();
    // ln M(s): convex in s (ln Γ is convex), smallest near n·p.
    let ln_m =
        |s: f64| ln_beta(a + s, b + n - s) - ln_beta(a, b) - s * p.ln() - (n - s) * (1.0 - p).ln();
    let (mut lo, mut hi) = (0.0, n);
    while hi - lo > 0.5 {
        let (m1, m2) = (lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0);
        if ln_m(m1) < ln_m(m2) {
            hi = m2;
        } else {
            lo = m1;
        }
    }
    let least = 0.5 * (lo + hi);
    let low = bisect(|s| ln_m(s) < bound, 0.0, least);
    let high = n - bisect(|u| ln_m(n - u) < bound, 0.0, n - least);
    (low, high)
}

/// The interval of the `q` quantile of `latencies` (ms), holding the true
/// quantile at every time with probability `1 − alpha`.
pub fn quantile_interval(latencies: &Latencies, q: f64, alpha: f64) -> Interval {
    let n = latencies.total();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let estimate = latencies.quantile(q).map_or(0.0, ms);
    let (mut low, mut high) = (0.0, f64::INFINITY);
    if n > 0 {
        let (fewest, most) = count_above_bounds(n, q, alpha);
        // Responses slower than each bucket's bound, bucket by bucket: more
        // than `most` slower than x puts the quantile above x; fewer than
        // `fewest` puts it at or below x.
        let mut slower = n;
        for (upper, count) in latencies.buckets() {
            slower -= count;
            if slower as f64 > most {
                low = ms(upper);
            }
            if (slower as f64) < fewest {
                high = ms(upper);
                break;
            }
        }
    }
    Interval {
        estimate,
        low,
        high,
    }
}

/// Compares the target's latency quantile with the baseline's over the
/// same time.
pub fn compare_latencies(
    target: &Latencies,
    baseline: &Latencies,
    quantile: f64,
    confidence: f64,
    tolerance: LatencyTolerance,
) -> LatencyComparison {
    let alpha = (1.0 - confidence).max(f64::MIN_POSITIVE) / 2.0;
    let t = quantile_interval(target, quantile, alpha);
    let b = quantile_interval(baseline, quantile, alpha);
    let LatencyTolerance { ratio, floor_ms } = tolerance;
    let worse = t.low > ratio * b.high.max(1.0) && t.low - b.high > floor_ms;
    let within = t.high <= ratio * b.low.max(1.0) || t.high - b.low <= floor_ms;
    let decision = if within {
        Decision::Within
    } else if worse {
        Decision::Worse
    } else {
        Decision::Undecided
    };
    LatencyComparison {
        quantile,
        target: t,
        baseline: b,
        confidence,
        decision,
    }
}

/// `p99`, `p95`, `p99.9` for a quantile.
pub fn quantile_name(q: f64) -> String {
    format!("p{}", (q * 1000.0).round() / 10.0)
}

impl LatencyComparison {
    /// "p99 84.0 ms [70.1, 101.2] vs the baseline's 64.0 ms [58.0, 71.0]:
    /// worse than 1.2x and +5 ms with 99 % confidence".
    pub fn describe(&self, tolerance: LatencyTolerance) -> String {
        let ms = |i: &Interval| {
            let high = if i.high.is_finite() {
                format!("{:.1}", i.high)
            } else {
                "?".into()
            };
            format!("{:.1} ms [{:.1}, {high}]", i.estimate, i.low)
        };
        let verdict = match self.decision {
            Decision::Worse => "worse than",
            Decision::Within => "within",
            Decision::Undecided => "not yet known against",
        };
        format!(
            "{} {} vs the baseline's {}: {verdict} {}x and +{} ms with {} % confidence",
            quantile_name(self.quantile),
            ms(&self.target),
            ms(&self.baseline),
            tolerance.ratio,
            tolerance.floor_ms,
            self.confidence * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_hold_the_estimate_and_narrow_with_data() {
        let small = error_rate_interval(2, 100, 0.005);
        let large = error_rate_interval(200, 10_000, 0.005);
        for i in [small, large] {
            assert!(i.low < i.estimate && i.estimate < i.high, "{i:?}");
        }
        assert!(large.high - large.low < small.high - small.low);
        let none = error_rate_interval(0, 1000, 0.005);
        assert_eq!(none.low, 0.0);
        assert!(none.high > 0.0 && none.high < 0.02, "{none:?}");
        let all = error_rate_interval(10, 10, 0.005);
        assert_eq!(all.high, 1.0);
        assert_eq!(error_rate_interval(0, 0, 0.005).high, 1.0);
    }

    /// The guarantee itself, checked by simulation: a rate looked at after
    /// every request for 2,000 requests leaves its interval in far fewer
    /// than α of the runs.
    #[test]
    fn the_true_rate_stays_inside_at_every_look() {
        let alpha = 0.05;
        let p = 0.1;
        let mut rng = fastrand::Rng::with_seed(7);
        let runs = 400;
        let mut missed = 0;
        for _ in 0..runs {
            let mut errors = 0;
            for n in 1..=2000u64 {
                errors += u64::from(rng.f64() < p);
                if n % 10 == 0 {
                    let i = error_rate_interval(errors, n, alpha);
                    if p < i.low || p > i.high {
                        missed += 1;
                        break;
                    }
                }
            }
        }
        assert!(
            (missed as f64) < alpha * runs as f64,
            "{missed} of {runs} runs left the interval"
        );
    }

    #[test]
    fn decisions_follow_the_tolerance() {
        let tolerance = Tolerance {
            increase: Some(0.005),
            ratio: Some(2.0),
        };
        // 5 % against 0.2 %, plenty of data: worse.
        let c = compare_error_rates((500, 10_000), (200, 100_000), 0.99, tolerance, None);
        assert_eq!(c.decision, Decision::Worse, "{c:?}");
        // Equal, plenty of data: within.
        let c = compare_error_rates((20, 10_000), (200, 100_000), 0.99, tolerance, None);
        assert_eq!(c.decision, Decision::Within, "{c:?}");
        // Little data: not known either way.
        let c = compare_error_rates((1, 50), (2, 500), 0.99, tolerance, None);
        assert_eq!(c.decision, Decision::Undecided, "{c:?}");
        // Far above in absolute terms but not in ratio (a high baseline).
        let c = compare_error_rates((2200, 10_000), (20_000, 100_000), 0.99, tolerance, None);
        assert_eq!(c.decision, Decision::Within, "{c:?}");
        assert!(
            c.describe(tolerance)
                .contains("within +0.50 pp and 2x with 99 % confidence")
        );
    }
    /// The ratio test's guarantee, by simulation: a target exactly at the
    /// tolerance (1.5x the baseline's 1 %), its share of traffic stepping
    /// 5, 25, 50 %, looked at every slice — the evidence reaches 1/α in
    /// fewer than α of the runs; at 5x it reaches it in nearly all.
    #[test]
    fn the_ratio_evidence_holds_its_level_and_finds_real_regressions() {
        let alpha = 0.05f64;
        let mut rng = fastrand::Rng::with_seed(5);
        let mut run = |factor: f64| {
            let mut e = RatioEvidence::default();
            for slice in 0..60 {
                let share = [0.05, 0.25, 0.5][slice / 20];
                let (nt, nb) = ((200.0 * share) as u64, (200.0 * (1.0 - share)) as u64);
                let count =
                    |rng: &mut fastrand::Rng, n, p| (0..n).filter(|_| rng.f64() < p).count() as u64;
                let (st, sb) = (
                    count(&mut rng, nt, 0.01 * factor),
                    count(&mut rng, nb, 0.01),
                );
                e.add((st, nt), (sb, nb), 1.5);
                if e.log_evidence() >= (1.0 / alpha).ln() {
                    return true;
                }
            }
            false
        };
        let runs = 400;
        let false_alarms = (0..runs).filter(|_| run(1.5)).count();
        assert!(
            (false_alarms as f64) < alpha * runs as f64,
            "{false_alarms} of {runs} runs at the tolerance crossed"
        );
        let caught = (0..200).filter(|_| run(5.0)).count();
        assert!(caught > 190, "5x caught in {caught} of 200");
        // No baseline traffic: nothing learnt.
        let mut e = RatioEvidence::default();
        e.add((50, 100), (0, 0), 1.5);
        assert_eq!(e.log_evidence(), 0.0);
    }

    fn lognormal_ms(rng: &mut fastrand::Rng, median_ms: f64, sigma: f64) -> f64 {
        let (u1, u2) = (rng.f64().max(1e-300), rng.f64());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median_ms * (sigma * z).exp()
    }

    fn histogram(latencies_ms: &[f64]) -> crate::traffic::Latencies {
        let mut s = crate::traffic::Snapshot::default();
        for ms in latencies_ms {
            s.add(std::time::Duration::from_secs_f64(ms / 1000.0), 1, 0);
        }
        s.latencies_since(&crate::traffic::Snapshot::default())
    }

    /// The quantile's guarantee, by simulation: log-normal latencies (p99
    /// at 63.97 ms), looked at every 25 responses for 2,000 responses.
    #[test]
    fn the_true_quantile_stays_inside_at_every_look() {
        let alpha = 0.05;
        let true_p99 = 20.0 * (0.5f64 * 2.326_348).exp();
        let mut rng = fastrand::Rng::with_seed(11);
        let runs = 300;
        let mut missed = 0;
        let mut widths = Vec::new();
        for _ in 0..runs {
            let mut seen = crate::traffic::Snapshot::default();
            for n in 1..=2000u64 {
                let ms = lognormal_ms(&mut rng, 20.0, 0.5);
                seen.add(std::time::Duration::from_secs_f64(ms / 1000.0), 1, 0);
                if n % 25 == 0 {
                    let l = seen.latencies_since(&crate::traffic::Snapshot::default());
                    let i = quantile_interval(&l, 0.99, alpha);
                    if true_p99 < i.low || true_p99 > i.high {
                        missed += 1;
                        break;
                    }
                    if n == 2000 {
                        widths.push((i.low, i.high));
                    }
                }
            }
        }
        assert!(
            (missed as f64) < alpha * runs as f64,
            "{missed} of {runs} runs left the interval"
        );
        // And it narrows: after 2,000 responses the bounds are finite.
        assert!(
            widths.iter().all(|(l, h)| *l > 30.0 && h.is_finite()),
            "{widths:?}"
        );
    }

    #[test]
    fn latency_decisions_follow_the_tolerance() {
        let mut rng = fastrand::Rng::with_seed(3);
        let draw = |rng: &mut fastrand::Rng, median, n| {
            (0..n)
                .map(|_| lognormal_ms(rng, median, 0.5))
                .collect::<Vec<_>>()
        };
        let tolerance = LatencyTolerance {
            ratio: 1.5,
            floor_ms: 5.0,
        };
        let baseline = histogram(&draw(&mut rng, 20.0, 50_000));
        let compare = |target: &[f64]| {
            compare_latencies(&histogram(target), &baseline, 0.99, 0.99, tolerance)
        };
        // Twice as slow, plenty of data: worse.
        let c = compare(&draw(&mut rng, 40.0, 5_000));
        assert_eq!(c.decision, Decision::Worse, "{c:?}");
        assert!(c.describe(tolerance).starts_with("p99 "), "{c:?}");
        // The same: within.
        let c = compare(&draw(&mut rng, 20.0, 20_000));
        assert_eq!(c.decision, Decision::Within, "{c:?}");
        // Twice as slow, too little data to know.
        let c = compare(&draw(&mut rng, 40.0, 40));
        assert_eq!(c.decision, Decision::Undecided, "{c:?}");
        assert!(c.target.high.is_infinite(), "{c:?}");
        // Ten times a sub-millisecond baseline is within the floor.
        let fast = histogram(&draw(&mut rng, 0.1, 20_000));
        let slow = histogram(&draw(&mut rng, 1.0, 20_000));
        let c = compare_latencies(&slow, &fast, 0.99, 0.99, tolerance);
        assert_eq!(c.decision, Decision::Within, "{c:?}");
        assert_eq!(quantile_name(0.99), "p99");
        assert_eq!(quantile_name(0.999), "p99.9");
    }
}
