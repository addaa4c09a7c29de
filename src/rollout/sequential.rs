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

use serde::Serialize;

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

/// Compares the target's errors with the baseline's over the same time.
pub fn compare_error_rates(
    target: (u64, u64),
    baseline: (u64, u64),
    confidence: f64,
    tolerance: Tolerance,
) -> ErrorComparison {
    let alpha = (1.0 - confidence).max(f64::MIN_POSITIVE) / 2.0;
    let t = error_rate_interval(target.0, target.1, alpha);
    let b = error_rate_interval(baseline.0, baseline.1, alpha);
    let worse_by_increase = tolerance.increase.is_none_or(|d| t.low - b.high > d);
    let worse_by_ratio = tolerance.ratio.is_none_or(|r| t.low > r * b.high);
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
        let c = compare_error_rates((500, 10_000), (200, 100_000), 0.99, tolerance);
        assert_eq!(c.decision, Decision::Worse, "{c:?}");
        // Equal, plenty of data: within.
        let c = compare_error_rates((20, 10_000), (200, 100_000), 0.99, tolerance);
        assert_eq!(c.decision, Decision::Within, "{c:?}");
        // Little data: not known either way.
        let c = compare_error_rates((1, 50), (2, 500), 0.99, tolerance);
        assert_eq!(c.decision, Decision::Undecided, "{c:?}");
        // Far above in absolute terms but not in ratio (a high baseline).
        let c = compare_error_rates((2200, 10_000), (20_000, 100_000), 0.99, tolerance);
        assert_eq!(c.decision, Decision::Within, "{c:?}");
        assert!(
            c.describe(tolerance)
                .contains("within +0.50 pp and 2x with 99 % confidence")
        );
    }
}
