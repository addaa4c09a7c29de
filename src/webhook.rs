//! Rollout webhooks: POST a JSON event, bounded by the rollout's webhook
//! timeout. A 2xx answer lets a gated rollout go on; anything else (an
//! error status, no answer in time, no connection) holds it.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::control::WebhookCall;

/// Sends `call`; `Err` says why it did not pass.
pub async fn post(call: &WebhookCall) -> Result<(), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(Method::POST)
        .uri(&call.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("cutover/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(call.event.to_string())))
        .map_err(|e| format!("bad webhook URL {}: {e}", call.url))?;
    match tokio::time::timeout(call.timeout, client.request(request)).await {
        Err(_) => Err(format!(
            "{} did not answer within {:?}",
            call.url, call.timeout
        )),
        Ok(Err(e)) => Err(format!("{}: {e}", call.url)),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("{} answered {}", call.url, resp.status())),
    }
}
