//! Rollout webhooks: POST a JSON event, bounded by the rollout's webhook
//! timeout. A 2xx answer lets a gated rollout go on — unless its body is
//! `{"verdict": "fail", "reason": …}`, a failing check; anything else (an
//! error status, no answer in time, no connection) holds it.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::control::WebhookCall;
use crate::rollout::run::HookAnswer;

/// The most of an answer's body read for a verdict.
const MAX_ANSWER: usize = 64 * 1024;

/// Sends `call`; the answer as a gate reads it.
pub async fn post(call: &WebhookCall) -> HookAnswer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = match Request::builder()
        .method(Method::POST)
        .uri(&call.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("cutover/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(call.event.to_string())))
    {
        Ok(r) => r,
        Err(e) => return HookAnswer::Hold(format!("bad webhook URL {}: {e}", call.url)),
    };
    let exchange = async {
        let resp = client
            .request(request)
            .await
            .map_err(|e| format!("{}: {e}", call.url))?;
        if !resp.status().is_success() {
            return Err(format!("{} answered {}", call.url, resp.status()));
        }
        // A body that cannot be read or is not a verdict is a plain pass.
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(verdict(&body))
    };
    match tokio::time::timeout(call.timeout, exchange).await {
        Err(_) => HookAnswer::Hold(format!(
            "{} did not answer within {:?}",
            call.url, call.timeout
        )),
        Ok(Err(why)) => HookAnswer::Hold(why),
        Ok(Ok(answer)) => answer,
    }
}

/// A 2xx body's verdict: `{"verdict": "fail"}` fails (with its `reason`);
/// anything else passes.
fn verdict(body: &[u8]) -> HookAnswer {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return HookAnswer::Pass;
    };
    if v["verdict"].as_str() != Some("fail") {
        return HookAnswer::Pass;
    }
    let reason = v["reason"].as_str().unwrap_or("no reason given");
    // Bounded and on one line: it goes to logs, status and the audit.
    let reason: String = reason
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HookAnswer::Fail(format!("the webhook says fail: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fail_verdict_fails() {
        assert_eq!(verdict(b""), HookAnswer::Pass);
        assert_eq!(verdict(b"ok"), HookAnswer::Pass);
        assert_eq!(verdict(br#"{"verdict": "pass"}"#), HookAnswer::Pass);
        assert_eq!(
            verdict(br#"{"verdict": "fail", "reason": "cart\nempty"}"#),
            HookAnswer::Fail("the webhook says fail: cart empty".into())
        );
        assert_eq!(
            verdict(br#"{"verdict": "fail"}"#),
            HookAnswer::Fail("the webhook says fail: no reason given".into())
        );
    }
}
