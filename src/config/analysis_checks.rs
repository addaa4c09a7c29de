//! A rollout's checks against systems outside the proxy — `http` (GET a
//! URL answering a number) and `prometheus` (an instant query) — and
//! `dry_run` on the built-in limits: their types and their parsing from
//! the `analysis` object, each problem naming its field.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::spec_error::SpecError;

/// One outside check: where to read a number, and the limits it must keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalCheck {
    /// `http`: the URL to GET. `prometheus`: the server's base URL.
    pub url: String,
    /// `prometheus` only: the PromQL instant query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    /// Judged and shown, never acted on.
    #[serde(default)]
    pub dry_run: bool,
}

/// Which kind of outside check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Http,
    Prometheus,
}

impl CheckKind {
    pub fn word(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Prometheus => "prometheus",
        }
    }
}

/// The most checks of one kind a rollout may carry.
const MOST: usize = 16;

/// `analysis.http` or `analysis.prometheus`: a list of checks.
pub fn parse_checks(kind: CheckKind, v: &Value) -> Result<Vec<ExternalCheck>, SpecError> {
    let name = kind.word();
    let field = |i: usize, key: &str| format!("analysis.{name}[{i}].{key}");
    let Value::Array(items) = v else {
        return Err(SpecError::new(
            &format!("analysis.{name}"),
            format!("expected a list of checks, got {v}"),
        ));
    };
    if items.len() > MOST {
        return Err(SpecError::new(
            &format!("analysis.{name}"),
            format!("at most {MOST} checks"),
        ));
    }
    let mut checks = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(SpecError::new(
                &format!("analysis.{name}[{i}]"),
                format!(
                    "expected an object like {{\"url\": \"http://…\", \"max\": 5}}, got {item}"
                ),
            ));
        };
        let keys: &[&str] = match kind {
            CheckKind::Http => &["url", "max", "min", "dry_run"],
            CheckKind::Prometheus => &["url", "query", "max", "min", "dry_run"],
        };
        if let Some(k) = map.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(SpecError::new(
                &field(i, k),
                format!("unknown field (expected one of {})", keys.join(", ")),
            ));
        }
        let url = match map.get("url") {
            Some(Value::String(s))
                if s.starts_with("http://") && s.parse::<http::Uri>().is_ok() =>
            {
                s.trim_end_matches('/').to_string()
            }
            Some(v) => {
                return Err(SpecError::new(
                    &field(i, "url"),
                    format!("expected an http:// URL, got {v}"),
                ));
            }
            None => return Err(SpecError::new(&field(i, "url"), "missing")),
        };
        let query = match (kind, map.get("query")) {
            (CheckKind::Http, _) => None,
            (CheckKind::Prometheus, Some(Value::String(q))) if !q.trim().is_empty() => {
                Some(q.clone())
            }
            (CheckKind::Prometheus, Some(v)) => {
                return Err(SpecError::new(
                    &field(i, "query"),
                    format!("expected a PromQL query, got {v}"),
                ));
            }
            (CheckKind::Prometheus, None) => {
                return Err(SpecError::new(&field(i, "query"), "missing"));
            }
        };
        let bound = |key: &str| match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or_else(|| {
                    SpecError::new(&field(i, key), format!("expected a number, got {v}"))
                }),
        };
        let (max, min) = (bound("max")?, bound("min")?);
        if max.is_none() && min.is_none() {
            return Err(SpecError::new(
                &format!("analysis.{name}[{i}]"),
                "give a limit: max, min or both",
            ));
        }
        if let (Some(max), Some(min)) = (max, min)
            && min > max
        {
            return Err(SpecError::new(&field(i, "min"), "must not be above max"));
        }
        let dry_run = match map.get("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(SpecError::new(
                    &field(i, "dry_run"),
                    format!("expected true or false, got {v}"),
                ));
            }
        };
        checks.push(ExternalCheck {
            url,
            query,
            max,
            min,
            dry_run,
        });
    }
    Ok(checks)
}

/// A built-in limit given as `{"value": N, "dry_run": true}` instead of
/// `N`: the number, with the limit's name added to `dry_run` when asked.
pub fn unwrap_dry_run(
    map: &Map<String, Value>,
    key: &str,
    dry_run: &mut BTreeSet<String>,
) -> Result<Option<Value>, SpecError> {
    let field = format!("analysis.{key}");
    match map.get(key) {
        Some(Value::Object(inner)) => {
            if let Some(k) = inner.keys().find(|k| *k != "value" && *k != "dry_run") {
                return Err(SpecError::new(
                    &format!("{field}.{k}"),
                    "unknown field (expected value, dry_run)",
                ));
            }
            match inner.get("dry_run") {
                None | Some(Value::Bool(false)) => {
                    dry_run.remove(key);
                }
                Some(Value::Bool(true)) => {
                    dry_run.insert(key.to_string());
                }
                Some(v) => {
                    return Err(SpecError::new(
                        &format!("{field}.dry_run"),
                        format!("expected true or false, got {v}"),
                    ));
                }
            }
            match inner.get("value") {
                Some(v) => Ok(Some(v.clone())),
                None => Err(SpecError::new(&format!("{field}.value"), "missing")),
            }
        }
        Some(v) => {
            dry_run.remove(key);
            Ok(Some(v.clone()))
        }
        None => Ok(None),
    }
}
