//! One check of a rollout: the target's and the baseline's traffic over the
//! same window, against the limits. Too little traffic on the target gives
//! no verdict at all (never promote or roll back on no data); too little on
//! the baseline skips only the comparisons with it.

use serde::Serialize;

use super::Analysis;
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

/// Judges `target` against the limits and against `baseline`.
pub fn judge(limits: &Analysis, target: &Window, baseline: &Window) -> Verdict {
    if target.requests < limits.min_requests {
        return Verdict::NoData(format!(
            "waiting for data: {} of {} requests on the target",
            target.requests, limits.min_requests
        ));
    }
    let mut breaches = Vec::new();
    let rate = target.error_rate();
    if let Some(max) = limits.max_error_rate
        && rate > max
    {
        breaches.push(format!("error rate {rate:.4} > max_error_rate {max}"));
    }
    let p99_ms = target.p99.map(|d| d.as_secs_f64() * 1000.0);
    if let (Some(max), Some(p99)) = (limits.max_p99_ms, p99_ms)
        && p99 > max as f64
    {
        breaches.push(format!("p99 {p99:.1} ms > max_p99_ms {max}"));
    }
    // Comparisons need a baseline with data of its own.
    if baseline.requests >= limits.min_requests {
        let increase = rate - baseline.error_rate();
        if let Some(max) = limits.max_error_rate_increase
            && increase > max
        {
            breaches.push(format!(
                "error rate {rate:.4} is {increase:.4} above the baseline's {:.4} > max_error_rate_increase {max}",
                baseline.error_rate()
            ));
        }
        if let (Some(max), Some(t), Some(b)) = (limits.max_p99_ratio, target.p99, baseline.p99) {
            // A floor of 1 ms: sub-millisecond p99s make ratios meaningless.
            let ratio = t.as_secs_f64().max(0.001) / b.as_secs_f64().max(0.001);
            if ratio > max {
                breaches.push(format!(
                    "p99 {:.1} ms is {ratio:.2}x the baseline's {:.1} ms > max_p99_ratio {max}",
                    t.as_secs_f64() * 1000.0,
                    b.as_secs_f64() * 1000.0
                ));
            }
        }
    }
    if breaches.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(breaches)
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

    #[test]
    fn no_verdict_without_data_and_comparisons_need_a_baseline() {
        let limits = Analysis::default();
        assert!(matches!(
            judge(&limits, &window(10, 10, 5), &window(1000, 0, 5)),
            Verdict::NoData(_)
        ));
        // 3 % errors: under the absolute 5 %, but 3 points over the baseline.
        let v = judge(&limits, &window(100, 3, 5), &window(1000, 0, 5));
        assert!(
            matches!(&v, Verdict::Fail(b) if b.len() == 1 && b[0].contains("increase")),
            "{v:?}"
        );
        // The same with no baseline traffic: only absolute limits apply.
        assert_eq!(
            judge(&limits, &window(100, 3, 5), &window(0, 0, 0)),
            Verdict::Pass
        );
        let v = judge(&limits, &window(100, 20, 5), &window(1000, 0, 5));
        assert!(matches!(&v, Verdict::Fail(b) if b.len() == 2), "{v:?}");
    }

    #[test]
    fn latency_limits() {
        let limits = Analysis {
            max_p99_ms: Some(100),
            ..Analysis::default()
        };
        assert_eq!(
            judge(&limits, &window(100, 0, 50), &window(100, 0, 40)),
            Verdict::Pass
        );
        let v = judge(&limits, &window(100, 0, 150), &window(100, 0, 140));
        assert!(
            matches!(&v, Verdict::Fail(b) if b[0].contains("max_p99_ms")),
            "{v:?}"
        );
        let v = judge(&limits, &window(100, 0, 90), &window(100, 0, 20));
        assert!(
            matches!(&v, Verdict::Fail(b) if b[0].contains("max_p99_ratio")),
            "{v:?}"
        );
    }
}
