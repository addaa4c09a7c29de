//! A rollout request body (`POST …/rollout`) → a checked [`RolloutSpec`],
//! each problem naming its field. Presets give the shapes of AWS
//! CodeDeploy's AllAtOnce, Canary10Percent5Minutes and
//! Linear10PercentEvery1Minute.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{Analysis, RolloutSpec, Webhooks};

/// A field of the body that is wrong, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

const SHORTEST: Duration = Duration::from_millis(100);
const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `body`; `None` fields fall back to the preset's, then to
/// defaults.
pub fn parse_spec(body: &Value) -> Result<RolloutSpec, SpecError> {
    let Value::Object(map) = body else {
        return Err(err(
            "body",
            "must be a JSON object, e.g. {\"to\": \"green\", \"steps\": [10, 50, 100]}",
        ));
    };
    known(
        map,
        "",
        &[
            "to", "steps", "preset", "interval", "analysis", "approval", "webhooks",
        ],
    )?;
    let to = match map.get("to") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(v) => return Err(err("to", format!("expected a pool name, got {v}"))),
        None => return Err(err("to", "missing: name the pool to roll out to")),
    };
    let (preset_steps, preset_interval) = match map.get("preset") {
        None => (None, None),
        Some(Value::String(p)) => match p.as_str() {
            "all-at-once" => (Some(vec![100]), None),
            "canary-10-5m" => (Some(vec![10, 100]), Some(Duration::from_secs(300))),
            "linear-10-1m" => (
                Some((1..=10).map(|i| i * 10).collect()),
                Some(Duration::from_secs(60)),
            ),
            other => {
                return Err(err(
                    "preset",
                    format!(
                        "unknown preset {other:?} (expected all-at-once, canary-10-5m, linear-10-1m)"
                    ),
                ));
            }
        },
        Some(v) => return Err(err("preset", format!("expected a string, got {v}"))),
    };
    if map.contains_key("steps") && preset_steps.is_some() {
        return Err(err("steps", "give steps or a preset, not both"));
    }
    let steps = match map.get("steps") {
        Some(v) => steps(v)?,
        None => preset_steps.unwrap_or_else(|| vec![5, 25, 50, 100]),
    };
    let interval = match map.get("interval") {
        Some(v) => duration("interval", v)?,
        None => preset_interval.unwrap_or(Duration::from_secs(30)),
    };
    let analysis = analysis(map.get("analysis"), interval)?;
    let approval_before_100 = match map.get("approval") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "before-100" => true,
        Some(Value::String(s)) if s == "none" => false,
        Some(v) => {
            return Err(err(
                "approval",
                format!("expected \"before-100\" or \"none\", got {v}"),
            ));
        }
    };
    let webhooks = webhooks(map.get("webhooks"))?;
    Ok(RolloutSpec {
        to,
        steps,
        interval,
        analysis,
        approval_before_100,
        webhooks,
    })
}

fn known(map: &Map<String, Value>, prefix: &str, fields: &[&str]) -> Result<(), SpecError> {
    match map.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(k) => Err(err(
            &format!("{prefix}{k}"),
            format!("unknown field (expected one of {})", fields.join(", ")),
        )),
        None => Ok(()),
    }
}

fn steps(v: &Value) -> Result<Vec<u32>, SpecError> {
    let Value::Array(items) = v else {
        return Err(err(
            "steps",
            format!("expected a list like [5, 25, 50, 100], got {v}"),
        ));
    };
    if items.is_empty() || items.len() > 100 {
        return Err(err("steps", "give 1 to 100 steps, ending at 100"));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let step = item
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                err(
                    &format!("steps[{i}]"),
                    format!("expected a percent from 1 to 100, got {item}"),
                )
            })?;
        if out.last().is_some_and(|last| *last >= step) {
            return Err(err(&format!("steps[{i}]"), "steps must increase"));
        }
        out.push(step);
    }
    if out.last() != Some(&100) {
        return Err(err("steps", "the last step must be 100"));
    }
    Ok(out)
}

fn duration(field: &str, v: &Value) -> Result<Duration, SpecError> {
    let Value::String(s) = v else {
        return Err(err(
            field,
            format!("expected a duration string like \"30s\", got {v}"),
        ));
    };
    let d = humantime::parse_duration(s)
        .map_err(|e| err(field, format!("invalid duration {s:?}: {e}")))?;
    if !(SHORTEST..=LONGEST).contains(&d) {
        return Err(err(field, "must be from 100ms to 7 days"));
    }
    Ok(d)
}

fn number(
    map: &Map<String, Value>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, SpecError> {
    let field = format!("analysis.{key}");
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                err(
                    &field,
                    format!("expected a number from {min} to {max}, got {v}"),
                )
            }),
    }
}

fn analysis(v: Option<&Value>, interval: Duration) -> Result<Analysis, SpecError> {
    let defaults = Analysis {
        check_every: Analysis::default().check_every.min(interval),
        ..Analysis::default()
    };
    let map = match v {
        None | Some(Value::Null) => return Ok(defaults),
        Some(Value::Object(m)) => m,
        Some(v) => return Err(err("analysis", format!("expected an object, got {v}"))),
    };
    known(
        map,
        "analysis.",
        &[
            "max_error_rate",
            "max_error_rate_increase",
            "max_p99_ms",
            "max_p99_ratio",
            "min_requests",
            "failure_limit",
            "check_every",
        ],
    )?;
    let mut a = defaults;
    // A limit given as null turns that check off.
    let set = |key: &str, current: Option<f64>, min, max| -> Result<Option<f64>, SpecError> {
        match map.get(key) {
            None => Ok(current),
            Some(_) => number(map, key, min, max),
        }
    };
    a.max_error_rate = set("max_error_rate", a.max_error_rate, 0.0, 1.0)?;
    a.max_error_rate_increase = set(
        "max_error_rate_increase",
        a.max_error_rate_increase,
        0.0,
        1.0,
    )?;
    a.max_p99_ratio = set("max_p99_ratio", a.max_p99_ratio, 1.0, 1000.0)?;
    a.max_p99_ms = set(
        "max_p99_ms",
        a.max_p99_ms.map(|n| n as f64),
        1.0,
        3_600_000.0,
    )?
    .map(|n| n as u64);
    if let Some(n) = number(map, "min_requests", 1.0, 1e9)? {
        a.min_requests = n as u64;
    }
    if let Some(n) = number(map, "failure_limit", 1.0, 100.0)? {
        a.failure_limit = n as u32;
    }
    if let Some(v) = map.get("check_every") {
        a.check_every = duration("analysis.check_every", v)?;
        if a.check_every > interval {
            return Err(err(
                "analysis.check_every",
                "must not be longer than interval",
            ));
        }
    }
    Ok(a)
}

fn webhooks(v: Option<&Value>) -> Result<Webhooks, SpecError> {
    let mut hooks = Webhooks {
        timeout: Duration::from_secs(10),
        ..Webhooks::default()
    };
    let map = match v {
        None | Some(Value::Null) => return Ok(hooks),
        Some(Value::Object(m)) => m,
        Some(v) => return Err(err("webhooks", format!("expected an object, got {v}"))),
    };
    known(
        map,
        "webhooks.",
        &["pre", "step", "rollback", "done", "timeout"],
    )?;
    let url = |key: &str| -> Result<Option<String>, SpecError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s))
                if s.starts_with("http://") && s.parse::<http::Uri>().is_ok() =>
            {
                Ok(Some(s.clone()))
            }
            Some(v) => Err(err(
                &format!("webhooks.{key}"),
                format!("expected an http:// URL, got {v}"),
            )),
        }
    };
    hooks.pre = url("pre")?;
    hooks.step = url("step")?;
    hooks.rollback = url("rollback")?;
    hooks.done = url("done")?;
    if let Some(v) = map.get("timeout") {
        hooks.timeout = duration("webhooks.timeout", v)?;
    }
    Ok(hooks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(body: Value) -> String {
        parse_spec(&body).unwrap_err().field
    }

    #[test]
    fn presets_defaults_and_fields() {
        let s = parse_spec(&json!({"to": "green", "preset": "canary-10-5m"})).unwrap();
        assert_eq!(
            (s.steps.clone(), s.interval),
            (vec![10, 100], Duration::from_secs(300))
        );
        assert_eq!(s.analysis.check_every, Duration::from_secs(5));
        let s = parse_spec(&json!({"to": "g", "steps": [100], "interval": "1s"})).unwrap();
        assert_eq!(s.analysis.check_every, Duration::from_secs(1));
        let s = parse_spec(
            &json!({"to": "g", "preset": "linear-10-1m", "interval": "2s",
            "analysis": {"max_p99_ms": 300, "max_p99_ratio": null, "min_requests": 10}}),
        )
        .unwrap();
        assert_eq!(s.steps.len(), 10);
        assert_eq!(
            (s.analysis.max_p99_ms, s.analysis.max_p99_ratio),
            (Some(300), None)
        );
        assert_eq!(s.analysis.min_requests, 10);
    }

    #[test]
    fn bad_bodies_name_the_field() {
        assert_eq!(field(json!({"steps": [100]})), "to");
        assert_eq!(
            field(json!({"to": "g", "steps": [50, 20, 100]})),
            "steps[1]"
        );
        assert_eq!(field(json!({"to": "g", "steps": [10, 50]})), "steps");
        assert_eq!(field(json!({"to": "g", "steps": [0, 100]})), "steps[0]");
        assert_eq!(field(json!({"to": "g", "preset": "fast"})), "preset");
        assert_eq!(field(json!({"to": "g", "interval": "soon"})), "interval");
        assert_eq!(
            field(json!({"to": "g", "analysis": {"max_error_rate": 2}})),
            "analysis.max_error_rate"
        );
        assert_eq!(
            field(json!({"to": "g", "analysis": {"bogus": 1}})),
            "analysis.bogus"
        );
        assert_eq!(
            field(json!({"to": "g", "interval": "1s", "analysis": {"check_every": "5s"}})),
            "analysis.check_every"
        );
        assert_eq!(field(json!({"to": "g", "approval": "later"})), "approval");
        assert_eq!(
            field(json!({"to": "g", "webhooks": {"pre": "ftp://x"}})),
            "webhooks.pre"
        );
        assert_eq!(field(json!({"to": "g", "colour": 1})), "colour");
    }
}
