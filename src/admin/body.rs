//! The admin API's request bodies and path segments, parsed into what a
//! change is made of; every refusal names the field and what was expected.

use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::Value;

use crate::config::{Split, WeightError};
use crate::control::ControlError;

pub(super) fn parse_json(body: &Bytes) -> Result<Value, ControlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| ControlError::invalid("body", format!("not valid JSON: {e}")))
}

/// A JSON number as a weight; anything else fails the weight rule as
/// written.
pub(super) fn weight_value(v: &Value) -> Result<i64, WeightError> {
    v.as_i64().ok_or_else(|| WeightError { got: v.to_string() })
}

/// `{"blue": 90, "green": 10}`.
pub(super) fn parse_split(body: &Bytes) -> Result<Split, ControlError> {
    let Value::Object(map) = parse_json(body)? else {
        return Err(ControlError::invalid(
            "body",
            "must be a JSON object of pool weights, e.g. {\"blue\": 90, \"green\": 10}",
        ));
    };
    let mut weights = Vec::new();
    for (pool, v) in &map {
        let w = weight_value(v).map_err(|error| crate::config::SplitError::Weight {
            pool: pool.clone(),
            error,
        })?;
        weights.push((pool.clone(), w));
    }
    Ok(Split::new(weights)?)
}

/// Refuses a body field the call does not take, naming it.
pub(super) fn only_fields(
    map: &serde_json::Map<String, Value>,
    known: &[&str],
) -> Result<(), ControlError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ControlError::invalid(
            k.as_str(),
            format!("unknown field (expected {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `{"pool": "green", "percent": 10}`; the pool may be left out to change
/// the percent of the route's current mirror, or to stop it with 0.
pub(super) fn parse_mirror(body: &Bytes) -> Result<(Option<String>, u32), ControlError> {
    let Value::Object(map) = parse_json(body)? else {
        return Err(ControlError::invalid(
            "body",
            "must be a JSON object, e.g. {\"pool\": \"green\", \"percent\": 10}",
        ));
    };
    only_fields(&map, &["pool", "percent"])?;
    let pool = match map.get("pool") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            return Err(ControlError::invalid(
                "pool",
                format!("expected a pool name, got {v}"),
            ));
        }
    };
    let percent = match map.get("percent") {
        None => {
            return Err(ControlError::invalid(
                "percent",
                "missing (0 to 100; 0 stops the mirror)",
            ));
        }
        Some(v) => v.as_u64().filter(|p| *p <= 100).ok_or_else(|| {
            ControlError::invalid(
                "percent",
                format!("must be an integer from 0 to 100, got {v}"),
            )
        })?,
    };
    Ok((pool, percent as u32))
}

/// `{"addr": "127.0.0.1:9003", "weight": 1}`.
pub(super) fn parse_new_upstream(body: &Bytes) -> Result<(SocketAddr, u32), ControlError> {
    let Value::Object(map) = parse_json(body)? else {
        return Err(ControlError::invalid(
            "body",
            "must be a JSON object, e.g. {\"addr\": \"127.0.0.1:9003\", \"weight\": 1}",
        ));
    };
    only_fields(&map, &["addr", "weight"])?;
    let addr = match map.get("addr") {
        Some(Value::String(s)) => s.parse().map_err(|_| {
            ControlError::invalid("addr", format!("invalid address {s:?}: expected IP:PORT"))
        })?,
        Some(v) => {
            return Err(ControlError::invalid(
                "addr",
                format!("expected a string like \"127.0.0.1:9003\", got {v}"),
            ));
        }
        None => return Err(ControlError::invalid("addr", "missing")),
    };
    let weight = match map.get("weight") {
        None => 1,
        Some(v) => weight_value(v)
            .and_then(crate::config::weight)
            .map_err(|e| ControlError::invalid("weight", e.to_string()))?,
    };
    Ok((addr, weight))
}

/// `{"timeout": "30s"}` or empty.
pub(super) fn parse_drain(body: &Bytes) -> Result<Option<std::time::Duration>, ControlError> {
    match parse_json(body)? {
        Value::Null => Ok(None),
        Value::Object(map) => {
            only_fields(&map, &["timeout"])?;
            match map.get("timeout") {
                None => Ok(None),
                Some(Value::String(s)) => humantime::parse_duration(s).map(Some).map_err(|e| {
                    ControlError::invalid("timeout", format!("invalid duration {s:?}: {e}"))
                }),
                Some(v) => Err(ControlError::invalid(
                    "timeout",
                    format!("expected a duration string like \"30s\", got {v}"),
                )),
            }
        }
        _ => Err(ControlError::invalid(
            "body",
            "must be a JSON object, e.g. {\"timeout\": \"30s\"}",
        )),
    }
}

pub(super) fn parse_addr(segment: &str) -> Result<SocketAddr, ControlError> {
    segment.parse().map_err(|_| {
        ControlError::invalid(
            "addr",
            format!("invalid upstream address {segment:?}: expected IP:PORT"),
        )
    })
}
