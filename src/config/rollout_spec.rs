//! A rollout: what an operator asks for ([`RolloutSpec`]) and the one
//! parser of it — from a request body (`POST …/rollout`) laid over the
//! route's defaults in the file — each problem naming its field. Presets
//! give the shapes of AWS CodeDeploy's AllAtOnce, Canary10Percent5Minutes
//! and Linear10PercentEvery1Minute.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::analysis_checks::{CheckKind, ExternalCheck, parse_checks, unwrap_dry_run};
pub use super::spec_error::SpecError;

/// What an operator asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The pool traffic moves to.
    pub to: String,
    /// The target's percent at each step, increasing, ending at 100.
    pub steps: Vec<u32>,
    /// Time at each step, the last one included (the watch window)…
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// …unless this says how long the last step (100 %) watches; then the
    /// target is judged against its own figures from before it.
    #[serde(
        default,
        with = "humantime_serde_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub watch: Option<Duration>,
    pub analysis: Analysis,
    /// Hold before the step to 100 % until `promote`.
    #[serde(default)]
    pub approval_before_100: bool,
    #[serde(default)]
    pub webhooks: Webhooks,
}

/// The limits a step is judged by. Fields added later carry serde
/// defaults: a state file written before them still loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Errors per request on the target, absolute: a hard guard on the
    /// last window.
    pub max_error_rate: Option<f64>,
    /// The tolerance of the error test (`rollout::sequential`): how much
    /// the target's error rate may exceed the baseline's, absolutely…
    pub max_error_rate_increase: Option<f64>,
    /// …and as a multiple of it. Worse means beyond both.
    #[serde(default = "default_max_error_ratio")]
    pub max_error_ratio: Option<f64>,
    /// The error test's confidence, in (0.5, 0.9999].
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    pub max_p99_ms: Option<u64>,
    /// Hard guards on the latest window's median and 95th percentile, as
    /// `max_p99_ms` on its 99th.
    #[serde(default)]
    pub max_p50_ms: Option<u64>,
    #[serde(default)]
    pub max_p95_ms: Option<u64>,
    /// 4xx answers per request on the target, judged like
    /// `max_error_rate`; off unless set (a 4xx is often the client's).
    #[serde(default)]
    pub max_4xx_rate: Option<f64>,
    /// The latency test's tolerance: the target's quantile (p99 unless
    /// `latency_quantile` says otherwise) over the baseline's.
    pub max_p99_ratio: Option<f64>,
    /// A quantile at most this far above the baseline's is never a
    /// regression, whatever the ratio (sub-millisecond baselines make
    /// ratios noise).
    #[serde(default = "default_min_p99_increase_ms")]
    pub min_p99_increase_ms: u64,
    /// The quantile the latency test compares: 0.99 (`"p99"`), 0.95, 0.5…
    #[serde(default = "default_latency_quantile")]
    pub latency_quantile: f64,
    /// Requests the target must have served in a window before any verdict.
    pub min_requests: u64,
    /// Failing checks in a row that roll back.
    pub failure_limit: u32,
    #[serde(with = "humantime_serde_compat")]
    pub check_every: Duration,
    /// The longest a step waits for `min_requests`; `None`: three times
    /// the interval.
    #[serde(default, with = "humantime_serde_option")]
    pub max_step_wait: Option<Duration>,
    /// What a step that waited `max_step_wait` without data does.
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// Move on as soon as the error test says the target is within its
    /// tolerance, not at the end of the interval.
    #[serde(default)]
    pub promote_on_pass: bool,
    /// When the route mirrors to the target: the most of the compared
    /// shadow copies that may differ from the client's answer (judged with
    /// `confidence`, like the error rate); `None`: not a gate.
    #[serde(default)]
    pub max_shadow_diff_rate: Option<f64>,
    /// GET a URL answering a number (`analysis_checks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<ExternalCheck>,
    /// Prometheus instant queries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prometheus: Vec<ExternalCheck>,
    /// The built-in limits given with `"dry_run": true`, by name: judged
    /// and shown, never acted on.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dry_run: BTreeSet<String>,
}

/// What a step that cannot reach a verdict in `max_step_wait` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Hold, with the reason, until an operator resumes, promotes or aborts.
    #[default]
    Pause,
    Rollback,
    Promote,
}

impl OnInconclusive {
    pub fn word(self) -> &'static str {
        match self {
            OnInconclusive::Pause => "pause",
            OnInconclusive::Rollback => "rollback",
            OnInconclusive::Promote => "promote",
        }
    }
}

fn default_max_error_ratio() -> Option<f64> {
    Some(1.5)
}

fn default_confidence() -> f64 {
    0.99
}

fn default_min_p99_increase_ms() -> u64 {
    5
}

fn default_latency_quantile() -> f64 {
    0.99
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            max_error_rate: Some(0.05),
            // With max_error_ratio 1.5: a release at 2.5x a 0.2 % baseline,
            // or at 0.2 % over a baseline at 0, is worse; one equal is not
            // (docs/rollouts.md has the figures, benches/rollout_judge.rs
            // how they were found).
            max_error_rate_increase: Some(0.001),
            max_error_ratio: default_max_error_ratio(),
            confidence: default_confidence(),
            max_p99_ms: None,
            max_p50_ms: None,
            max_p95_ms: None,
            max_4xx_rate: None,
            // Judged with confidence on the rollout's whole histogram (the
            // buckets are 6 % wide): a p99 twice the baseline's is caught,
            // one 1.3x is let through.
            max_p99_ratio: Some(1.5),
            min_p99_increase_ms: default_min_p99_increase_ms(),
            latency_quantile: default_latency_quantile(),
            min_requests: 50,
            failure_limit: 2,
            check_every: Duration::from_secs(5),
            max_step_wait: None,
            on_inconclusive: OnInconclusive::Pause,
            promote_on_pass: false,
            max_shadow_diff_rate: None,
            http: Vec::new(),
            prometheus: Vec::new(),
            dry_run: BTreeSet::new(),
        }
    }
}

impl Analysis {
    /// The built-in limit `name` only reports (`"dry_run": true`).
    pub fn is_dry_run(&self, name: &str) -> bool {
        self.dry_run.contains(name)
    }

    /// How long a step may wait for data before `on_inconclusive`.
    pub fn step_wait(&self, interval: Duration) -> Duration {
        self.max_step_wait.unwrap_or(interval.saturating_mul(3))
    }
}

/// URLs POSTed a JSON event; `pre` and `step` answering non-2xx hold the
/// rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    pub pre: Option<String>,
    pub step: Option<String>,
    pub rollback: Option<String>,
    pub done: Option<String>,
    #[serde(with = "humantime_serde_compat", default = "default_webhook_timeout")]
    pub timeout: Duration,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Durations in the state file as humantime strings (`"30s"`).
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional durations in the state file, as humantime strings or null.
pub(crate) mod humantime_serde_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn err(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError::new(field, reason)
}

/// The `analysis` object's keys (in a route's file `rollout` table they
/// stand beside `steps` and `interval`).
pub const ANALYSIS_KEYS: [&str; 20] = [
    "max_error_rate",
    "max_error_rate_increase",
    "max_error_ratio",
    "confidence",
    "max_p99_ms",
    "max_p50_ms",
    "max_p95_ms",
    "max_4xx_rate",
    "max_p99_ratio",
    "min_p99_increase_ms",
    "latency_quantile",
    "min_requests",
    "failure_limit",
    "check_every",
    "max_step_wait",
    "on_inconclusive",
    "promote_on_pass",
    "max_shadow_diff_rate",
    "http",
    "prometheus",
];

const SHORTEST: Duration = Duration::from_millis(100);
const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `body` laid over `defaults` (a route's `rollout` table from the
/// file, in the same shape); fields neither gives fall back to the
/// preset's, then to built-in defaults.
pub fn parse_spec(body: &Value, defaults: Option<&Value>) -> Result<RolloutSpec, SpecError> {
    let merged;
    let body = match defaults {
        Some(d) => {
            merged = laid_over(body, d);
            &merged
        }
        None => body,
    };
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
            "to", "steps", "preset", "interval", "watch", "analysis", "approval", "webhooks",
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
    let watch = match map.get("watch") {
        None | Some(Value::Null) => None,
        Some(v) => Some(duration("watch", v)?),
    };
    let analysis = analysis(map.get("analysis"), interval)?;
    if let Some(w) = watch
        && analysis.check_every > w
    {
        return Err(err(
            "watch",
            "must not be shorter than analysis.check_every",
        ));
    }
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
        watch,
        analysis,
        approval_before_100,
        webhooks,
    })
}

/// `body` over `defaults`: the body's fields win, `analysis` and
/// `webhooks` key by key; steps in one replace a preset in the other.
fn laid_over(body: &Value, defaults: &Value) -> Value {
    let (Value::Object(b), Value::Object(d)) = (body, defaults) else {
        return body.clone();
    };
    let mut out = d.clone();
    if b.contains_key("steps") || b.contains_key("preset") {
        out.remove("steps");
        out.remove("preset");
    }
    for (k, v) in b {
        match (out.get_mut(k), v) {
            (Some(Value::Object(inner)), Value::Object(over))
                if k == "analysis" || k == "webhooks" =>
            {
                inner.extend(over.clone());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
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
    known(map, "analysis.", &ANALYSIS_KEYS)?;
    let mut a = defaults;
    limits(map, &mut a)?;
    pacing(map, &mut a, interval)?;
    if let Some(v) = map.get("http") {
        a.http = parse_checks(CheckKind::Http, v)?;
    }
    if let Some(v) = map.get("prometheus") {
        a.prometheus = parse_checks(CheckKind::Prometheus, v)?;
    }
    Ok(a)
}

/// A limit's number if the map gives one — `N`, or `{"value": N,
/// "dry_run": true}` to judge it without acting —; `null` turns that check
/// off; absent, `current` stays.
fn limit(
    map: &Map<String, Value>,
    key: &str,
    current: Option<f64>,
    min: f64,
    max: f64,
    dry_run: &mut BTreeSet<String>,
) -> Result<Option<f64>, SpecError> {
    match unwrap_dry_run(map, key, dry_run)? {
        None => Ok(current),
        Some(v) => {
            let mut one = Map::new();
            one.insert(key.to_string(), v);
            number(&one, key, min, max)
        }
    }
}

/// The error, latency and shadow limits and the tests' confidence.
fn limits(map: &Map<String, Value>, a: &mut Analysis) -> Result<(), SpecError> {
    let dry = &mut a.dry_run;
    a.max_error_rate = limit(map, "max_error_rate", a.max_error_rate, 0.0, 1.0, dry)?;
    a.max_error_rate_increase = limit(
        map,
        "max_error_rate_increase",
        a.max_error_rate_increase,
        0.0,
        1.0,
        dry,
    )?;
    a.max_error_ratio = limit(map, "max_error_ratio", a.max_error_ratio, 1.0, 1000.0, dry)?;
    a.max_shadow_diff_rate = limit(
        map,
        "max_shadow_diff_rate",
        a.max_shadow_diff_rate,
        0.0,
        1.0,
        dry,
    )?;
    if let Some(v) = map.get("confidence") {
        a.confidence = v
            .as_f64()
            .filter(|c| *c > 0.5 && *c <= 0.9999)
            .ok_or_else(|| {
                err(
                    "analysis.confidence",
                    format!("expected a number above 0.5 and at most 0.9999, got {v}"),
                )
            })?;
    }
    a.max_p99_ratio = limit(
        map,
        "max_p99_ratio",
        a.max_p99_ratio,
        1.0,
        1000.0,
        &mut a.dry_run,
    )?;
    if let Some(n) = number(map, "min_p99_increase_ms", 0.0, 3_600_000.0)? {
        a.min_p99_increase_ms = n as u64;
    }
    if let Some(v) = map.get("latency_quantile") {
        a.latency_quantile = v.as_str().and_then(parse_quantile).ok_or_else(|| {
            err(
                "analysis.latency_quantile",
                format!("expected \"p50\" to \"p99.9\" (\"p95\", \"p99\"), got {v}"),
            )
        })?;
    }
    for (key, slot) in [
        ("max_p99_ms", &mut a.max_p99_ms),
        ("max_p50_ms", &mut a.max_p50_ms),
        ("max_p95_ms", &mut a.max_p95_ms),
    ] {
        let now = slot.map(|n| n as f64);
        *slot = limit(map, key, now, 1.0, 3_600_000.0, &mut a.dry_run)?.map(|n| n as u64);
    }
    a.max_4xx_rate = limit(
        map,
        "max_4xx_rate",
        a.max_4xx_rate,
        0.0,
        1.0,
        &mut a.dry_run,
    )?;
    Ok(())
}

/// How checks are paced and what they do when they cannot decide.
fn pacing(map: &Map<String, Value>, a: &mut Analysis, interval: Duration) -> Result<(), SpecError> {
    if let Some(v) = map.get("on_inconclusive") {
        a.on_inconclusive = match v.as_str() {
            Some("pause") => OnInconclusive::Pause,
            Some("rollback") => OnInconclusive::Rollback,
            Some("promote") => OnInconclusive::Promote,
            _ => {
                return Err(err(
                    "analysis.on_inconclusive",
                    format!("expected \"pause\", \"rollback\" or \"promote\", got {v}"),
                ));
            }
        };
    }
    if let Some(v) = map.get("promote_on_pass") {
        a.promote_on_pass = v.as_bool().ok_or_else(|| {
            err(
                "analysis.promote_on_pass",
                format!("expected true or false, got {v}"),
            )
        })?;
    }
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
    match map.get("max_step_wait") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let wait = duration("analysis.max_step_wait", v)?;
            if wait < a.check_every {
                return Err(err(
                    "analysis.max_step_wait",
                    "must not be shorter than check_every",
                ));
            }
            a.max_step_wait = Some(wait);
        }
    }
    Ok(())
}

/// `"p99"` → 0.99; from p50 to p99.9.
fn parse_quantile(text: &str) -> Option<f64> {
    let percent: f64 = text.strip_prefix('p')?.parse().ok()?;
    (50.0..=99.9).contains(&percent).then_some(percent / 100.0)
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
        parse_spec(&body, None).unwrap_err().field
    }

    #[test]
    fn the_body_wins_over_the_route_defaults() {
        let defaults = json!({"steps": [20, 100], "interval": "2m", "analysis": {"max_error_rate": 0.01, "min_requests": 7}});
        let s = parse_spec(
            &json!({"to": "g", "analysis": {"min_requests": 9}}),
            Some(&defaults),
        )
        .unwrap();
        assert_eq!(
            (s.steps, s.interval),
            (vec![20, 100], Duration::from_secs(120))
        );
        assert_eq!(
            (s.analysis.max_error_rate, s.analysis.min_requests),
            (Some(0.01), 9)
        );
        let s = parse_spec(
            &json!({"to": "g", "preset": "all-at-once"}),
            Some(&defaults),
        )
        .unwrap();
        assert_eq!(s.steps, vec![100]);
    }

    #[test]
    fn presets_defaults_and_fields() {
        let s = parse_spec(&json!({"to": "green", "preset": "canary-10-5m"}), None).unwrap();
        assert_eq!(
            (s.steps.clone(), s.interval),
            (vec![10, 100], Duration::from_secs(300))
        );
        assert_eq!(s.analysis.check_every, Duration::from_secs(5));
        let s = parse_spec(&json!({"to": "g", "steps": [100], "interval": "1s"}), None).unwrap();
        assert_eq!(s.analysis.check_every, Duration::from_secs(1));
        let s = parse_spec(
            &json!({"to": "g", "preset": "linear-10-1m", "interval": "2s",
            "analysis": {"max_p99_ms": 300, "max_p99_ratio": null, "min_requests": 10}}),
            None,
        )
        .unwrap();
        assert_eq!(s.steps.len(), 10);
        assert_eq!(
            (s.analysis.max_p99_ms, s.analysis.max_p99_ratio),
            (Some(300), None)
        );
        assert_eq!(s.analysis.min_requests, 10);
        assert_eq!(s.analysis.latency_quantile, 0.99);
        let s = parse_spec(
            &json!({"to": "g", "analysis": {"latency_quantile": "p95"}}),
            None,
        )
        .unwrap();
        assert_eq!(s.analysis.latency_quantile, 0.95);
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
        // The error test's and the step's fields.
        for (analysis, named) in [
            (json!({"confidence": 0.5}), "analysis.confidence"),
            (json!({"confidence": 0.99999}), "analysis.confidence"),
            (json!({"confidence": "high"}), "analysis.confidence"),
            (
                json!({"max_error_rate_increase": -0.1}),
                "analysis.max_error_rate_increase",
            ),
            (json!({"max_error_ratio": 0.5}), "analysis.max_error_ratio"),
            (
                json!({"min_p99_increase_ms": -1}),
                "analysis.min_p99_increase_ms",
            ),
            (
                json!({"on_inconclusive": "wait"}),
                "analysis.on_inconclusive",
            ),
            (
                json!({"latency_quantile": "p100"}),
                "analysis.latency_quantile",
            ),
            (
                json!({"latency_quantile": 0.99}),
                "analysis.latency_quantile",
            ),
            (
                json!({"promote_on_pass": "yes"}),
                "analysis.promote_on_pass",
            ),
            (
                json!({"check_every": "5s", "max_step_wait": "2s"}),
                "analysis.max_step_wait",
            ),
        ] {
            assert_eq!(
                field(json!({"to": "g", "interval": "1m", "analysis": analysis})),
                named
            );
        }
    }

    /// A state file written before the error test's fields loads, with
    /// their defaults.
    #[test]
    fn an_older_persisted_analysis_loads() {
        let old = json!({"max_error_rate": 0.05, "max_error_rate_increase": 0.02, "max_p99_ms": null,
                         "max_p99_ratio": 2.0, "min_requests": 50, "failure_limit": 2, "check_every": "5s"});
        let a: Analysis = serde_json::from_value(old).unwrap();
        assert_eq!(a.confidence, 0.99);
        assert_eq!(a.max_error_ratio, Some(1.5));
        assert_eq!(a.on_inconclusive, OnInconclusive::Pause);
        assert_eq!(a.max_step_wait, None);
        assert_eq!(a.latency_quantile, 0.99);
        let round = serde_json::to_value(&a).unwrap();
        assert_eq!(serde_json::from_value::<Analysis>(round).unwrap(), a);
    }
}
