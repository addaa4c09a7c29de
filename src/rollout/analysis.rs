//! One check of a rollout: the target's and the baseline's traffic against
//! the limits — hard guards on the latest window, the error test
//! (`sequential`) on all the rollout's traffic. Too little traffic on the
//! target gives no verdict at all (never promote or roll back on no data);
//! too little on the baseline leaves the comparisons undecided.

use serde::Serialize;

use super::Analysis;
use super::sequential::{
    Decision, ErrorComparison, Tolerance, compare_error_rates, error_rate_interval,
};
use crate::traffic::Window;

/// What one pool did in the window, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
}

impl From<&Window> for Figures {
    fn from(w: &Window) -> Self {
        Figures {
            requests: w.requests,
            errors: w.errors,
            error_rate: w.error_rate(),
            p99_ms: w.p99.map(|d| d.as_secs_f64() * 1000.0),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough requests to judge; the reason says how many.
    NoData(String),
    Pass,
    /// Each limit breached, in words with its figures.
    Fail(Vec<String>),
}

/// Shadow copies of the route's requests sent to the target and compared
/// with the client's answer: how many, and how many differed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compared {
    pub compared: u64,
    pub differs: u64,
}

impl Compared {
    /// The copies between `earlier` and these counts.
    pub fn since(self, earlier: Compared) -> Compared {
        Compared {
            compared: self.compared.saturating_sub(earlier.compared),
            differs: self.differs.saturating_sub(earlier.differs),
        }
    }
}

/// What one check found: the verdict, and the error test's comparison
/// (`None` without data).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub errors: Option<ErrorComparison>,
}

impl Judgement {
    /// The error test says, with its confidence, the target is within its
    /// tolerance, and nothing else failed (for `promote_on_pass`).
    pub fn confident_pass(&self) -> bool {
        self.verdict == Verdict::Pass && self.errors.is_some_and(|c| c.decision == Decision::Within)
    }
}

/// Judges the target against the limits and against the baseline:
/// `max_p99_ms` and the p99 ratio on the latest `window` of each pool; the
/// error tests — `max_error_rate` on the target's rate, and the comparison
/// with the baseline's — and the shadow gate on everything `since_start`
/// of the rollout (an anytime-valid test wants all its data), sharing the
/// confidence.
pub fn judge(
    limits: &Analysis,
    window: (&Window, &Window),
    since_start: (&Window, &Window),
    shadow_since_start: Option<Compared>,
) -> Judgement {
    let (target, baseline) = window;
    if target.requests < limits.min_requests {
        return Judgement {
            verdict: Verdict::NoData(format!(
                "waiting for data: {} of {} requests on the target",
                target.requests, limits.min_requests
            )),
            errors: None,
        };
    }
    let mut breaches = Vec::new();
    let (all_target, all_baseline) = since_start;
    // The allowance 1 − confidence is shared: a tenth each for this
    // absolute guard (meant for releases far beyond it) and the shadow
    // gate, the rest for the comparison with the baseline.
    let alpha = (1.0 - limits.confidence) / 10.0;
    if let Some(max) = limits.max_error_rate {
        let rate = error_rate_interval(all_target.errors, all_target.requests, alpha);
        if rate.low > max {
            breaches.push(format!(
                "error rate {:.2} % (at least {:.2} % with {} % confidence) > max_error_rate {max}",
                rate.estimate * 100.0,
                rate.low * 100.0,
                limits.confidence * 100.0
            ));
        }
    }
    let p99_ms = target.p99.map(|d| d.as_secs_f64() * 1000.0);
    if let (Some(max), Some(p99)) = (limits.max_p99_ms, p99_ms)
        && p99 > max as f64
    {
        breaches.push(format!("p99 {p99:.1} ms > max_p99_ms {max}"));
    }
    let tolerance = Tolerance {
        increase: limits.max_error_rate_increase,
        ratio: limits.max_error_ratio,
    };
    let mut errors = compare_error_rates(
        (all_target.errors, all_target.requests),
        (all_baseline.errors, all_baseline.requests),
        limits.confidence + 2.0 * alpha,
        tolerance,
    );
    // Said as the operator set it: the two tests together hold it.
    errors.confidence = limits.confidence;
    if errors.decision == Decision::Worse {
        breaches.push(errors.describe(tolerance));
    }
    if let (Some(max), Some(shadow)) = (limits.max_shadow_diff_rate, shadow_since_start) {
        let share = error_rate_interval(shadow.differs, shadow.compared, alpha);
        if share.low > max {
            breaches.push(format!(
                "{:.2} % of {} shadow copies differ from the client's answer (at least {:.2} % with {} % confidence) > max_shadow_diff_rate {max}",
                share.estimate * 100.0,
                shadow.compared,
                share.low * 100.0,
                limits.confidence * 100.0
            ));
        }
    }
    // The p99 comparison needs a baseline with data of its own.
    if baseline.requests >= limits.min_requests
        && let (Some(max), Some(t), Some(b)) = (limits.max_p99_ratio, target.p99, baseline.p99)
    {
        let (t_ms, b_ms) = (t.as_secs_f64() * 1000.0, b.as_secs_f64() * 1000.0);
        // A floor of 1 ms: sub-millisecond p99s make ratios meaningless;
        // and a few ms more is never a regression, whatever the ratio.
        let ratio = t_ms.max(1.0) / b_ms.max(1.0);
        if ratio > max && t_ms - b_ms > limits.min_p99_increase_ms as f64 {
            breaches.push(format!(
                "p99 {t_ms:.1} ms is {ratio:.2}x the baseline's {b_ms:.1} ms > max_p99_ratio {max} (and more than {} ms above it)",
                limits.min_p99_increase_ms
            ));
        }
    }
    let verdict = if breaches.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(breaches)
    };
    Judgement {
        verdict,
        errors: Some(errors),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn window(requests: u64, errors: u64, p99_ms: u64) -> Window {
        Window {
            requests,
            errors,
            p99: Some(Duration::from_millis(p99_ms)),
        }
    }

    fn judge_windows(limits: &Analysis, target: Window, baseline: Window) -> Verdict {
        judge(limits, (&target, &baseline), (&target, &baseline), None).verdict
    }

    #[test]
    fn no_verdict_without_data_and_comparisons_need_a_baseline() {
        let limits = Analysis::default();
        assert!(matches!(
            judge_windows(&limits, window(10, 10, 5), window(1000, 0, 5)),
            Verdict::NoData(_)
        ));
        // 3 % errors against none, enough data to know it at 99 %.
        let v = judge_windows(&limits, window(1000, 30, 5), window(10_000, 0, 5));
        assert!(
            matches!(&v, Verdict::Fail(b) if b.len() == 1 && b[0].contains("worse than +0.10 pp and 1.5x")),
            "{v:?}"
        );
        // The same with too little data to know: no breach (yet).
        assert_eq!(
            judge_windows(&limits, window(100, 3, 5), window(1000, 0, 5)),
            Verdict::Pass
        );
        // No baseline traffic: only absolute limits can fail.
        assert_eq!(
            judge_windows(&limits, window(1000, 30, 5), window(0, 0, 0)),
            Verdict::Pass
        );
        let v = judge_windows(&limits, window(1000, 200, 5), window(10_000, 0, 5));
        assert!(matches!(&v, Verdict::Fail(b) if b.len() == 2), "{v:?}");
    }

    #[test]
    fn the_shadow_gate_fails_once_the_differing_share_is_sure() {
        let limits = Analysis {
            max_shadow_diff_rate: Some(0.01),
            ..Analysis::default()
        };
        let (t, b) = (window(1000, 0, 5), window(1000, 0, 5));
        let shadow = |compared, differs| Some(Compared { compared, differs });
        let verdict = |s| judge(&limits, (&t, &b), (&t, &b), s).verdict;
        assert_eq!(verdict(shadow(1000, 5)), Verdict::Pass);
        assert_eq!(verdict(shadow(20, 2)), Verdict::Pass, "too few to be sure");
        let v = verdict(shadow(1000, 100));
        assert!(
            matches!(&v, Verdict::Fail(b) if b[0].contains("max_shadow_diff_rate 0.01")),
            "{v:?}"
        );
        // Off unless asked for, and nothing without a mirror to the target.
        assert_eq!(verdict(None), Verdict::Pass);
        let off = Analysis::default();
        assert_eq!(
            judge(&off, (&t, &b), (&t, &b), shadow(1000, 500)).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn latency_limits() {
        let limits = Analysis {
            max_p99_ms: Some(100),
            ..Analysis::default()
        };
        assert_eq!(
            judge_windows(&limits, window(100, 0, 50), window(100, 0, 40)),
            Verdict::Pass
        );
        let v = judge_windows(&limits, window(100, 0, 150), window(100, 0, 140));
        assert!(
            matches!(&v, Verdict::Fail(b) if b[0].contains("max_p99_ms")),
            "{v:?}"
        );
        let v = judge_windows(&limits, window(100, 0, 90), window(100, 0, 20));
        assert!(
            matches!(&v, Verdict::Fail(b) if b[0].contains("max_p99_ratio")),
            "{v:?}"
        );
        // 3x the baseline, but 2 ms above it: never a regression.
        assert_eq!(
            judge_windows(&limits, window(100, 0, 3), window(100, 0, 1)),
            Verdict::Pass
        );
    }
}
