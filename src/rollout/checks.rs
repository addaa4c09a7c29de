//! A rollout's outside checks (`analysis.http`, `analysis.prometheus`)
//! judged from their latest answers: a value past its limit fails the
//! check (or, in dry run, is only reported); no answer yet, or no data,
//! gives no verdict; an error blocks the step — it never promotes on a
//! check it could not read. Pure: the answers come in (the driver asks).

use serde::Serialize;

use super::Analysis;
use crate::config::{CheckKind, ExternalCheck};

/// One outside check's latest answer: the value, no data (`None`: an empty
/// result, NaN), or why it could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Unix ms.
    pub at_ms: u64,
    pub value: Result<Option<f64>, String>,
}

/// One check as status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckState {
    /// `http[0]`, `prometheus[1]`.
    pub name: String,
    /// `pending` (no answer this step yet), `no_data`, `pass`, `fail`,
    /// `error`.
    pub state: &'static str,
    pub value: Option<f64>,
    pub max: Option<f64>,
    pub min: Option<f64>,
    pub dry_run: bool,
    pub error: Option<String>,
    /// When the answer came (Unix ms).
    pub at_ms: Option<u64>,
}

/// What the outside checks say at one check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub states: Vec<CheckState>,
    /// Acting checks past their limits, in words.
    pub breaches: Vec<String>,
    /// Dry-run checks past their limits, in words.
    pub dry_run: Vec<String>,
    /// An acting check without a value this step: no verdict yet.
    pub waiting: Option<String>,
    /// An acting check that could not be read: the step holds.
    pub broken: Option<String>,
}

/// Every outside check of `a`, named, `http` first: the order of the
/// driver's readings.
pub fn checks(a: &Analysis) -> Vec<(String, CheckKind, &ExternalCheck)> {
    let http = a.http.iter().map(|c| (CheckKind::Http, c));
    let prometheus = a.prometheus.iter().map(|c| (CheckKind::Prometheus, c));
    let mut seen = [0usize; 2];
    http.chain(prometheus)
        .map(|(kind, c)| {
            let n = &mut seen[usize::from(kind == CheckKind::Prometheus)];
            let name = format!("{}[{n}]", kind.word());
            *n += 1;
            (name, kind, c)
        })
        .collect()
}

/// Judges the readings (one per check, in [`checks`] order) taken at or
/// after `since_ms` (the step's start): older ones are not this step's.
pub fn judge_readings(a: &Analysis, readings: &[Option<Reading>], since_ms: u64) -> Outcome {
    let mut out = Outcome::default();
    for (i, (name, _, check)) in checks(a).into_iter().enumerate() {
        let reading = readings
            .get(i)
            .and_then(Option::as_ref)
            .filter(|r| r.at_ms >= since_ms);
        let mut state = CheckState {
            name: name.clone(),
            state: "pending",
            value: None,
            max: check.max,
            min: check.min,
            dry_run: check.dry_run,
            error: None,
            at_ms: reading.map(|r| r.at_ms),
        };
        match reading.map(|r| &r.value) {
            None => {
                if !check.dry_run {
                    out.waiting.get_or_insert_with(|| {
                        format!("waiting for {name}'s first answer this step")
                    });
                }
            }
            Some(Err(e)) => {
                state.state = "error";
                state.error = Some(e.clone());
                if !check.dry_run {
                    out.broken
                        .get_or_insert_with(|| format!("{name} cannot be read: {e}"));
                }
            }
            Some(Ok(None)) => {
                state.state = "no_data";
                if !check.dry_run {
                    out.waiting
                        .get_or_insert_with(|| format!("waiting for data: {name} has none"));
                }
            }
            Some(Ok(Some(value))) => {
                state.value = Some(*value);
                let breach = match (check.max, check.min) {
                    (Some(max), _) if *value > max => Some(format!("{name} = {value} > max {max}")),
                    (_, Some(min)) if *value < min => Some(format!("{name} = {value} < min {min}")),
                    _ => None,
                };
                state.state = if breach.is_some() { "fail" } else { "pass" };
                match (breach, check.dry_run) {
                    (Some(b), true) => out.dry_run.push(b),
                    (Some(b), false) => out.breaches.push(b),
                    (None, _) => {}
                }
            }
        }
        out.states.push(state);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: Option<f64>, min: Option<f64>, dry_run: bool) -> ExternalCheck {
        ExternalCheck {
            url: "http://127.0.0.1:1".into(),
            query: None,
            max,
            min,
            dry_run,
        }
    }

    fn read(at_ms: u64, value: Result<Option<f64>, String>) -> Option<Reading> {
        Some(Reading { at_ms, value })
    }

    #[test]
    fn values_limits_dry_runs_and_what_gives_no_verdict() {
        let a = Analysis {
            http: vec![check(Some(5.0), None, false), check(None, Some(1.0), true)],
            ..Analysis::default()
        };
        let o = judge_readings(&a, &[read(10, Ok(Some(7.0))), read(10, Ok(Some(0.5)))], 10);
        assert_eq!(o.breaches, ["http[0] = 7 > max 5"]);
        assert_eq!(o.dry_run, ["http[1] = 0.5 < min 1"]);
        assert_eq!((o.waiting, o.broken), (None, None));
        // An answer from before the step is not this step's.
        let o = judge_readings(&a, &[read(9, Ok(Some(7.0))), None], 10);
        assert!(o.breaches.is_empty());
        assert!(o.waiting.unwrap().contains("http[0]"));
        assert_eq!(o.states[0].state, "pending");
        // No data waits; an error blocks; neither for a dry-run check.
        let o = judge_readings(&a, &[read(10, Ok(None)), read(10, Err("down".into()))], 10);
        assert!(o.waiting.unwrap().contains("has none"));
        assert_eq!(o.broken, None);
        let o = judge_readings(
            &a,
            &[read(10, Err("refused".into())), read(10, Ok(None))],
            10,
        );
        assert_eq!(o.broken.as_deref(), Some("http[0] cannot be read: refused"));
        assert_eq!(o.states[1].state, "no_data");
    }
}
