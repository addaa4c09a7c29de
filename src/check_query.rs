//! Reads a rollout's outside checks: `http` (GET a URL that answers a
//! JSON number or `{"value": N}`) and `prometheus` (an instant query
//! against its HTTP API, `/api/v1/query`), bounded by the call's timeout.
//! The answer is the value, no data (an empty result, NaN, null), or why
//! it could not be read — in words an operator can act on.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::CheckKind;
use crate::control::CheckCall;

/// The most of an answer read: a Prometheus result of one series is far
/// below it; a query that returns thousands is refused anyway.
const MAX_ANSWER: usize = 1024 * 1024;

/// Reads `call`'s value.
pub async fn read(call: &CheckCall) -> Result<Option<f64>, String> {
    let uri = match (call.kind, &call.query) {
        (CheckKind::Prometheus, Some(q)) => format!(
            "{}/api/v1/query?query={}",
            call.url,
            percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
        ),
        _ => call.url.clone(),
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::builder()
        .method(Method::GET)
        .uri(&uri)
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("cutover/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| format!("bad URL {uri}: {e}"))?;
    let exchange = async {
        let resp = client
            .request(request)
            .await
            .map_err(|e| format!("{}: {e}", call.url))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{}: answer unreadable: {e}", call.url))?
            .to_bytes();
        // Prometheus answers a bad query with 400 and a JSON error.
        if !status.is_success() && call.kind == CheckKind::Http {
            return Err(format!("{} answered {status}", call.url));
        }
        match call.kind {
            CheckKind::Http => http_value(&body),
            CheckKind::Prometheus => prometheus_value(&body),
        }
    };
    match tokio::time::timeout(call.timeout, exchange).await {
        Err(_) => Err(format!(
            "{} did not answer within {:?}",
            call.url, call.timeout
        )),
        Ok(answer) => answer,
    }
}

/// The start of an answer, for an error message.
fn shown(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A JSON number, `{"value": N}`, or null / `{"value": null}` for no data.
fn http_value(body: &[u8]) -> Result<Option<f64>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| format!("answered {:?}: not a number", shown(body)))?;
    let v = match &v {
        Value::Object(m) if m.contains_key("value") => &m["value"],
        other => other,
    };
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        _ => Err(format!(
            "answered {:?}: expected a number or {{\"value\": N}}",
            shown(body)
        )),
    }
}

/// An instant query's one value: a scalar, or a vector of at most one
/// series (none: no data). More than one series is an error naming
/// their labels — the query must aggregate.
fn prometheus_value(body: &[u8]) -> Result<Option<f64>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| format!("answered {:?}: not the Prometheus API", shown(body)))?;
    if v["status"] != "success" {
        let why = v["error"].as_str().unwrap_or("no reason given");
        return Err(format!("the query failed: {why}"));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let series = data["result"].as_array().map_or(&[][..], Vec::as_slice);
            match series {
                [] => return Ok(None),
                [one] => &one["value"],
                many => {
                    let labels: Vec<String> = many
                        .iter()
                        .take(2)
                        .map(|s| s["metric"].to_string())
                        .collect();
                    return Err(format!(
                        "the query returns {} series ({}, …): aggregate them to one, e.g. sum(…) or max(…)",
                        many.len(),
                        labels.join(", ")
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "the query returns a {}, not one number",
                other.unwrap_or("result of no type")
            ));
        }
    };
    // A sample is [time, "value"]; Prometheus writes values as strings.
    let value = sample[1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("unexpected sample {sample}"))?;
    Ok(Some(value).filter(|v| v.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers() {
        assert_eq!(http_value(b"5"), Ok(Some(5.0)));
        assert_eq!(http_value(br#"{"value": 0.25}"#), Ok(Some(0.25)));
        assert_eq!(http_value(b"null"), Ok(None));
        assert_eq!(http_value(br#"{"value": null}"#), Ok(None));
        assert!(http_value(b"five").unwrap_err().contains("not a number"));
        assert!(
            http_value(br#"{"value": "5"}"#)
                .unwrap_err()
                .contains("expected a number")
        );
    }

    #[test]
    fn prometheus_answers() {
        let vector = |result: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{result}]}}}}"#
            )
        };
        let one = r#"{"metric":{"version":"green"},"value":[1700000000.1,"0.5"]}"#;
        let two = r#"{"metric":{"version":"blue"},"value":[1700000000.1,"1"]}"#;
        assert_eq!(prometheus_value(vector(one).as_bytes()), Ok(Some(0.5)));
        assert_eq!(prometheus_value(vector("").as_bytes()), Ok(None));
        let many = prometheus_value(vector(&format!("{one},{two}")).as_bytes()).unwrap_err();
        assert!(
            many.contains("2 series") && many.contains("\"version\":\"green\""),
            "{many}"
        );
        let nan = r#"{"metric":{},"value":[1,"NaN"]}"#;
        assert_eq!(prometheus_value(vector(nan).as_bytes()), Ok(None));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(prometheus_value(scalar), Ok(Some(3.0)));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(
            prometheus_value(bad)
                .unwrap_err()
                .contains("parse error at char 4")
        );
        assert!(
            prometheus_value(b"<html>")
                .unwrap_err()
                .contains("not the Prometheus API")
        );
    }
}
