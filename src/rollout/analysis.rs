//! One check of a rollout: the target's and the baseline's traffic against
//! the limits — `max_p99_ms` on the latest window, the error and latency
//! tests (`sequential`) on all the rollout's traffic. Too little traffic on
//! the target gives no verdict at all (never promote or roll back on no
//! data); too little on the baseline leaves the comparisons undecided.

use serde::Serialize;

use super::Analysis;
use super::sequential::{
    Decision, ErrorComparison, LatencyComparison, LatencyTolerance, RatioEvidence, Tolerance,
    compare_error_rates, compare_latencies, error_rate_interval,
};
use crate::traffic::{Latencies, Snapshot, Window};

/// What one pool did in the window, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// 4xx answers per request.
    pub rate_4xx: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl From<&Window> for Figures {
    fn from(w: &Window) -> Self {
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        Figures {
            requests: w.requests,
            errors: w.errors,
            error_rate: w.error_rate(),
            rate_4xx: if w.requests == 0 {
                0.0
            } else {
                w.client_errors as f64 / w.requests as f64
            },
            p50_ms: ms(w.p50),
            p95_ms: ms(w.p95),
            p99_ms: ms(w.p99),
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
    /// An outside check could not be read: no verdict, and the step never
    /// moves on without it.
    Blocked(String),
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

/// One pool's traffic over a span: its counts and latency histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    pub window: Window,
    pub latencies: Latencies,
}

impl Traffic {
    /// What `now` adds to `earlier`.
    pub fn between(earlier: &Snapshot, now: &Snapshot) -> Traffic {
        Traffic {
            window: now.since(earlier),
            latencies: now.latencies_since(earlier),
        }
    }
}

/// What one check found: the verdict, and the tests' comparisons (`None`
/// without data, or for the latency test when it is off).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub errors: Option<ErrorComparison>,
    pub latency: Option<LatencyComparison>,
    /// Breaches of limits in dry run: they would have failed the check.
    pub dry_run: Vec<String>,
}

impl Judgement {
    /// The tests say, with their confidence, the target is within its
    /// tolerances, and nothing else failed (for `promote_on_pass`).
    pub fn confident_pass(&self) -> bool {
        self.verdict == Verdict::Pass
            && self.errors.is_some_and(|c| c.decision == Decision::Within)
            && self.latency.is_none_or(|c| c.decision == Decision::Within)
    }
}

/// Judges the target against the limits and against the baseline:
/// `max_p99_ms` on the target's `latest` window; the error tests —
/// `max_error_rate` on the target's rate, and the comparison with the
/// baseline's (its relative half by the `ratio` evidence gathered so far,
/// when given) —, the latency test and the shadow gate on everything
/// `since_start` of the rollout (an anytime-valid test wants all its
/// data), sharing the confidence.
pub fn judge(
    limits: &Analysis,
    latest: &Window,
    since_start: (&Traffic, &Traffic),
    ratio: Option<&RatioEvidence>,
    shadow_since_start: Option<Compared>,
) -> Judgement {
    let target = latest;
    if target.requests < limits.min_requests {
        return Judgement {
            verdict: Verdict::NoData(format!(
                "waiting for data: {} of {} requests on the target",
                target.requests, limits.min_requests
            )),
            errors: None,
            latency: None,
            dry_run: Vec::new(),
        };
    }
    // Each breach with the limit it breaks, to tell dry-run ones apart.
    let mut breaches: Vec<(&str, String)> = Vec::new();
    let (all_target, all_baseline) = (&since_start.0.window, &since_start.1.window);
    // The allowance 1 − confidence is shared: a tenth each for this
    // absolute guard (meant for releases far beyond it) and the shadow
    // gate, four tenths each for the two comparisons with the baseline.
    let alpha = (1.0 - limits.confidence) / 10.0;
    // The guards' tenth is shared when both are on.
    let guard_alpha = if limits.max_error_rate.is_some() && limits.max_4xx_rate.is_some() {
        alpha / 2.0
    } else {
        alpha
    };
    if let Some(max) = limits.max_4xx_rate {
        let rate = error_rate_interval(all_target.client_errors, all_target.requests, guard_alpha);
        if rate.low > max {
            breaches.push((
                "max_4xx_rate",
                format!(
                    "4xx rate {:.2} % (at least {:.2} % with {} % confidence) > max_4xx_rate {max}",
                    rate.estimate * 100.0,
                    rate.low * 100.0,
                    limits.confidence * 100.0
                ),
            ));
        }
    }
    if let Some(max) = limits.max_error_rate {
        let rate = error_rate_interval(all_target.errors, all_target.requests, guard_alpha);
        if rate.low > max {
            breaches.push(("max_error_rate", format!(
                "error rate {:.2} % (at least {:.2} % with {} % confidence) > max_error_rate {max}",
                rate.estimate * 100.0,
                rate.low * 100.0,
                limits.confidence * 100.0
            )));
        }
    }
    for (name, word, limit, quantile) in [
        ("max_p50_ms", "p50", limits.max_p50_ms, target.p50),
        ("max_p95_ms", "p95", limits.max_p95_ms, target.p95),
        ("max_p99_ms", "p99", limits.max_p99_ms, target.p99),
    ] {
        let ms = quantile.map(|d| d.as_secs_f64() * 1000.0);
        if let (Some(max), Some(ms)) = (limit, ms)
            && ms > max as f64
        {
            breaches.push((name, format!("{word} {ms:.1} ms > {name} {max}")));
        }
    }
    let tolerance = Tolerance {
        increase: limits.max_error_rate_increase,
        ratio: limits.max_error_ratio,
    };
    let mut errors = compare_error_rates(
        (all_target.errors, all_target.requests),
        (all_baseline.errors, all_baseline.requests),
        1.0 - 4.0 * alpha,
        tolerance,
        ratio,
    );
    // Said as the operator set it: the tests together hold it.
    errors.confidence = limits.confidence;
    if errors.decision == Decision::Worse {
        // One test, two tolerances: dry when either was asked dry.
        let name = if limits.is_dry_run("max_error_ratio") {
            "max_error_ratio"
        } else {
            "max_error_rate_increase"
        };
        breaches.push((name, errors.describe(tolerance)));
    }
    if let (Some(max), Some(shadow)) = (limits.max_shadow_diff_rate, shadow_since_start) {
        let share = error_rate_interval(shadow.differs, shadow.compared, alpha);
        if share.low > max {
            breaches.push(("max_shadow_diff_rate", format!(
                "{:.2} % of {} shadow copies differ from the client's answer (at least {:.2} % with {} % confidence) > max_shadow_diff_rate {max}",
                share.estimate * 100.0,
                shadow.compared,
                share.low * 100.0,
                limits.confidence * 100.0
            )));
        }
    }
    let latency = limits.max_p99_ratio.map(|ratio| {
        let tolerance = LatencyTolerance {
            ratio,
            floor_ms: limits.min_p99_increase_ms as f64,
        };
        let mut c = compare_latencies(
            &since_start.0.latencies,
            &since_start.1.latencies,
            limits.latency_quantile,
            1.0 - 4.0 * alpha,
            tolerance,
        );
        c.confidence = limits.confidence;
        if c.decision == Decision::Worse {
            breaches.push(("max_p99_ratio", c.describe(tolerance)));
        }
        c
    });
    let (dry, acting): (Vec<_>, Vec<_>) = breaches
        .into_iter()
        .partition(|(name, _)| limits.is_dry_run(name));
    let words = |b: Vec<(&str, String)>| b.into_iter().map(|(_, w)| w).collect::<Vec<_>>();
    let verdict = if acting.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(words(acting))
    };
    Judgement {
        verdict,
        errors: Some(errors),
        latency,
        // Dry-run reports lead with their limit's name.
        dry_run: dry.into_iter().map(|(n, w)| format!("{n}: {w}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `requests` responses, `errors` of them failed, 2 % of them at
    /// `p99_ms` (the p99, then) and the rest at a fifth of it.
    fn traffic(requests: u64, errors: u64, p99_ms: u64) -> Traffic {
        let mut s = Snapshot::default();
        let slow = requests / 50;
        let ms = Duration::from_millis;
        s.add(ms(p99_ms / 5), requests - slow, errors);
        s.add(ms(p99_ms), slow, 0);
        Traffic::between(&Snapshot::default(), &s)
    }

    fn judge_traffic(limits: &Analysis, target: Traffic, baseline: Traffic) -> Verdict {
        judge(limits, &target.window, (&target, &baseline), None, None).verdict
    }

    #[test]
    fn no_verdict_without_data_and_comparisons_need_a_baseline() {
        let limits = Analysis::default();
        assert!(matches!(
            judge_traffic(&limits, traffic(10, 10, 5), traffic(1000, 0, 5)),
            Verdict::NoData(_)
        ));
        // 3 % errors against none, enough data to know it at 99 %.
        let v = judge_traffic(&limits, traffic(1000, 30, 5), traffic(10_000, 0, 5));
        assert!(
            matches!(&v, Verdict::Fail(b) if b.len() == 1 && b[0].contains("worse than +0.10 pp and 1.5x")),
            "{v:?}"
        );
        // The same with too little data to know: no breach (yet).
        assert_eq!(
            judge_traffic(&limits, traffic(100, 3, 5), traffic(1000, 0, 5)),
            Verdict::Pass
        );
        // No baseline traffic: only absolute limits can fail.
        assert_eq!(
            judge_traffic(&limits, traffic(1000, 30, 5), traffic(0, 0, 0)),
            Verdict::Pass
        );
        let v = judge_traffic(&limits, traffic(1000, 200, 5), traffic(10_000, 0, 5));
        assert!(matches!(&v, Verdict::Fail(b) if b.len() == 2), "{v:?}");
    }

    #[test]
    fn the_shadow_gate_fails_once_the_differing_share_is_sure() {
        let limits = Analysis {
            max_shadow_diff_rate: Some(0.01),
            ..Analysis::default()
        };
        let (t, b) = (traffic(1000, 0, 5), traffic(1000, 0, 5));
        let shadow = |compared, differs| Some(Compared { compared, differs });
        let verdict = |s| judge(&limits, &t.window, (&t, &b), None, s).verdict;
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
            judge(&off, &t.window, (&t, &b), None, shadow(1000, 500)).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn the_4xx_guard_and_the_p50_and_p95_guards() {
        let with_4xx = |requests: u64, client_errors: u64| {
            let mut s = Snapshot::default();
            s.add(std::time::Duration::from_millis(5), requests, 0);
            s.client_errors = client_errors;
            Traffic::between(&Snapshot::default(), &s)
        };
        let limits = Analysis {
            max_4xx_rate: Some(0.05),
            ..Analysis::default()
        };
        let base = with_4xx(1000, 0);
        assert_eq!(
            judge_traffic(&limits, with_4xx(1000, 20), base.clone()),
            Verdict::Pass
        );
        let v = judge_traffic(&limits, with_4xx(1000, 200), base.clone());
        assert!(
            matches!(&v, Verdict::Fail(b) if b.len() == 1 && b[0].contains("max_4xx_rate 0.05")),
            "{v:?}"
        );
        // Off by default; in dry run, reported only.
        assert_eq!(
            judge_traffic(&Analysis::default(), with_4xx(1000, 900), base.clone()),
            Verdict::Pass
        );
        let dry = Analysis {
            dry_run: ["max_4xx_rate".to_string()].into(),
            ..limits
        };
        let t = with_4xx(1000, 200);
        let j = judge(&dry, &t.window, (&t, &base), None, None);
        assert_eq!(j.verdict, Verdict::Pass);
        assert!(
            j.dry_run[0].starts_with("max_4xx_rate: 4xx rate 20.00 %"),
            "{:?}",
            j.dry_run
        );
        // The median of `traffic(_, _, 100)` is 20 ms, its p95 100 ms.
        let p50 = Analysis {
            max_p50_ms: Some(10),
            ..Analysis::default()
        };
        let v = judge_traffic(&p50, traffic(1000, 0, 100), traffic(1000, 0, 100));
        assert!(
            matches!(&v, Verdict::Fail(b) if b[0].starts_with("p50 ") && b[0].contains("max_p50_ms 10")),
            "{v:?}"
        );
        let p95 = Analysis {
            max_p95_ms: Some(50),
            ..Analysis::default()
        };
        assert_eq!(
            judge_traffic(&p95, traffic(1000, 0, 100), traffic(1000, 0, 100)),
            Verdict::Pass
        );
        let p95 = Analysis {
            max_p95_ms: Some(15),
            ..Analysis::default()
        };
        let v = judge_traffic(&p95, traffic(1000, 0, 100), traffic(1000, 0, 100));
        assert!(
            matches!(&v, Verdict::Fail(b) if b[0].starts_with("p95 ")),
            "{v:?}"
        );
    }

    #[test]
    fn latency_limits() {
        let limits = Analysis {
            max_p99_ms: Some(100),
            ..Analysis::default()
        };
        assert_eq!(
            judge_traffic(&limits, traffic(1000, 0, 50), traffic(1000, 0, 40)),
            Verdict::Pass
        );
        let v = judge_traffic(&limits, traffic(1000, 0, 150), traffic(1000, 0, 140));
        assert!(
            matches!(&v, Verdict::Fail(b) if b.len() == 1 && b[0].contains("max_p99_ms")),
            "{v:?}"
        );
        // The test needs enough slow responses to be sure of the p99.
        let v = judge_traffic(&limits, traffic(5000, 0, 90), traffic(5000, 0, 20));
        assert!(
            matches!(&v, Verdict::Fail(b) if b[0].starts_with("p99 ") && b[0].contains("worse than 1.5x")),
            "{v:?}"
        );
        assert_eq!(
            judge_traffic(&limits, traffic(100, 0, 90), traffic(5000, 0, 20)),
            Verdict::Pass
        );
        // 3x the baseline, but 2 ms above it: never a regression.
        assert_eq!(
            judge_traffic(&limits, traffic(5000, 0, 3), traffic(5000, 0, 1)),
            Verdict::Pass
        );
        // Off with max_p99_ratio = None.
        let off = Analysis {
            max_p99_ratio: None,
            ..Analysis::default()
        };
        let (t, b) = (traffic(5000, 0, 90), traffic(5000, 0, 20));
        let j = judge(&off, &t.window, (&t, &b), None, None);
        assert_eq!((j.verdict, j.latency), (Verdict::Pass, None));
    }
}
