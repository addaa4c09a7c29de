//! `[tracing]`: W3C trace context through cutover on both fronts — a
//! server span per request (a child of the client's `traceparent`), a
//! client span per upstream attempt whose id goes upstream in a fresh
//! `traceparent`, exported over OTLP/gRPC to a real receiver built from
//! the official protobuf definitions (support/otlp.rs).

use crate::support::otlp::{Collector, Received};
use crate::support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The values of header `name` the upstream saw (a `/headers` body).
fn seen(answer: &str, name: &str) -> Vec<String> {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .collect()
}

/// `00-TRACE-SPAN-FLAGS` → (trace, span, flags).
fn parts(traceparent: &str) -> (String, String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((p.len(), p[0]), (4, "00"), "{traceparent}");
    assert_eq!((p[1].len(), p[2].len(), p[3].len()), (32, 16, 2));
    (p[1].to_string(), p[2].to_string(), p[3].to_string())
}

fn kind(span: &Received) -> i32 {
    span.span.kind
}

/// SpanKind in OTLP: 2 server, 3 client.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_trace_goes_through_both_fronts_and_spans_reach_the_collector() {
    let collector = Collector::start().await;
    let up = TestUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = start_proxy(&split_config(
        &[("p", 1, &[up.addr])],
        &format!(
            "[proxy]\naccess_log = \"{}\"\n[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"edge\"\nexport_interval = \"100ms\"\n",
            log.display(),
            collector.endpoint()
        ),
    ))
    .await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let direct = |extra: &str| {
        format!("GET /headers?x=1 HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n")
    };
    let hyper = |extra: &str| {
        format!(
            "POST /headers HTTP/1.1\r\nHost: a\r\n{extra}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        )
    };
    let mut sent_up = Vec::new();
    for (front, request) in [
        ("direct", &direct as &dyn Fn(&str) -> String),
        ("hyper", &hyper),
    ] {
        let extra = format!("traceparent: {traceparent}\r\ntracestate: vendor=1\r\n");
        let answer = send_raw(&proxy, &request(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{front}: {answer}");
        let up_saw = seen(&answer, "traceparent");
        assert_eq!(up_saw.len(), 1, "{front}: {answer}");
        let (trace, span, flags) = parts(&up_saw[0]);
        // The client's trace, a span of cutover's, still sampled.
        assert_eq!(
            (trace.as_str(), flags.as_str()),
            (CLIENT_TRACE, "01"),
            "{front}"
        );
        assert_ne!(span, CLIENT_SPAN, "{front}");
        assert_eq!(seen(&answer, "tracestate"), ["vendor=1"], "{front}");
        sent_up.push((front, span));
        // A malformed traceparent is ignored: a new trace, and never
        // sent up as it came.
        let answer = send_raw(&proxy, &request("traceparent: 00-zz-yy-01\r\n")).await;
        let up_saw = seen(&answer, "traceparent");
        assert_eq!(up_saw.len(), 1, "{front}: {answer}");
        let (trace, _, flags) = parts(&up_saw[0]);
        assert!(
            trace != CLIENT_TRACE && flags == "01",
            "{front}: {up_saw:?}"
        );
    }
    // Each request's server span is the client span's child; each attempt's
    // client span is the server span's, and its id is the one sent up.
    wait_until("the spans at the collector", || async {
        collector
            .spans()
            .iter()
            .filter(|s| s.trace_id() == CLIENT_TRACE)
            .count()
            >= 4
    })
    .await;
    let spans = collector.spans();
    let ours: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id() == CLIENT_TRACE)
        .collect();
    assert_eq!(ours.len(), 4, "{ours:#?}");
    for (front, up_span) in &sent_up {
        let client = ours
            .iter()
            .find(|s| s.span_id() == *up_span)
            .unwrap_or_else(|| panic!("{front}: no span {up_span}: {ours:#?}"));
        assert_eq!(kind(client), CLIENT, "{front}");
        assert_eq!(client.attribute("cutover.pool").as_deref(), Some("p"));
        assert_eq!(
            client.attribute("server.port"),
            Some(up.addr.port().to_string())
        );
        assert_eq!(
            client.attribute("http.response.status_code").as_deref(),
            Some("200")
        );
        let server = ours
            .iter()
            .find(|s| s.span_id() == client.parent_span_id())
            .unwrap_or_else(|| panic!("{front}: no parent of {up_span}"));
        assert_eq!(kind(server), SERVER, "{front}");
        assert_eq!(server.parent_span_id(), CLIENT_SPAN, "{front}");
        assert_eq!(server.service, "edge");
        assert_eq!(server.attribute("url.path").as_deref(), Some("/headers"));
        assert_eq!(server.attribute("cutover.route").as_deref(), Some("app"));
        assert_eq!(server.attribute("cutover.attempts").as_deref(), Some("1"));
        assert_eq!(
            server.attribute("http.response.status_code").as_deref(),
            Some("200")
        );
    }
    // The access log names each request's trace.
    let text = std::fs::read_to_string(&log).unwrap();
    let with_trace: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["trace_id"] == CLIENT_TRACE)
        .collect();
    let fronts: Vec<&str> = with_trace
        .iter()
        .map(|l| l["served_by"].as_str().unwrap())
        .collect();
    assert_eq!(fronts, ["direct", "hyper"], "{text}");
    // Counted as exported once the collector's answer is back (the
    // process's metrics: at least these).
    let metrics_url = proxy.admin_url("/metrics");
    wait_until("the exported spans counted", || async {
        let (_, metrics) = get(&http1_client(), &metrics_url).await;
        let exported: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("cutover_trace_spans_exported_total{result=\"ok\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        exported >= 8.0
    })
    .await;
    proxy.stop().await;
}

/// A retried attempt has its own span (the failed one says why), and an
/// unsampled client trace is followed: its traceparent goes up unsampled
/// and nothing of it is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_has_a_span_and_an_unsampled_trace_stays_unsampled() {
    let collector = Collector::start().await;
    let up = TestUpstream::start("up").await;
    let dead = closed_port();
    let proxy = start_proxy(&format!(
        "[[route]]\nname = \"r\"\nsplit = {{ p = 1 }}\n\
         [pool.p]\nupstreams = [{{ addr = \"{dead}\" }}, {{ addr = \"{}\" }}]\noutlier = {{ consecutive_failures = 0 }}\n\
         [tracing]\notlp_endpoint = \"{}\"\nexport_interval = \"100ms\"\n",
        up.addr,
        collector.endpoint()
    ))
    .await;
    // Enough that some first attempt meets the closed port: the balancer
    // draws between the two, an even chance each time (4 were not always
    // enough).
    for i in 0..64 {
        let answer = send_raw(
            &proxy,
            &format!("GET /headers?i={i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let answer = send_raw(
        &proxy,
        &format!("GET /headers HTTP/1.1\r\nHost: a\r\ntraceparent: {unsampled}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (trace, span, flags) = parts(&seen(&answer, "traceparent")[0]);
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));
    assert_ne!(span, CLIENT_SPAN);
    // A request whose first attempt met the closed port: two client
    // spans under one server span, the first failed to connect.
    wait_until("a retried request's spans", || async {
        let spans = collector.spans();
        spans
            .iter()
            .any(|s| s.attribute("cutover.attempts").as_deref() == Some("2"))
            && spans.iter().filter(|s| kind(s) == CLIENT).count() >= 65
    })
    .await;
    proxy.stop().await;
    let spans = collector.spans();
    let server = spans
        .iter()
        .find(|s| s.attribute("cutover.attempts").as_deref() == Some("2"))
        .unwrap();
    let mut attempts: Vec<&Received> = spans
        .iter()
        .filter(|s| s.parent_span_id() == server.span_id())
        .collect();
    attempts.sort_by_key(|s| s.attribute("cutover.attempt"));
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(
        attempts[0].attribute("error.type").as_deref(),
        Some("connect")
    );
    assert_eq!(
        attempts[0].attribute("server.port"),
        Some(dead.port().to_string())
    );
    assert_eq!(
        attempts[1]
            .attribute("http.response.status_code")
            .as_deref(),
        Some("200")
    );
    assert!(
        spans.iter().all(|s| s.trace_id() != CLIENT_TRACE),
        "an unsampled trace was exported"
    );
}

/// Off (no `[tracing]`): a client's traceparent passes through as any
/// header, even a malformed one, and cutover adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_the_trace_headers_pass_through_untouched() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    for request in [
        "GET /headers HTTP/1.1\r\nHost: a\r\ntraceparent: not-a-trace\r\nConnection: close\r\n\r\n",
        "POST /headers HTTP/1.1\r\nHost: a\r\ntraceparent: not-a-trace\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    ] {
        let answer = send_raw(&proxy, request).await;
        assert_eq!(seen(&answer, "traceparent"), ["not-a-trace"], "{answer}");
    }
    let answer = send_raw(
        &proxy,
        "GET /headers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(seen(&answer, "traceparent").is_empty(), "{answer}");
    proxy.stop().await;
}

/// `sample_ratio = 0`: no new trace is exported, yet each request still
/// carries a fresh unsampled `traceparent` upstream; a client's sampled
/// trace is still followed (and exported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_ratio_zero_only_sampled_parents_are_exported() {
    let collector = Collector::start().await;
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(
        &[("p", 1, &[up.addr])],
        &format!(
            "[tracing]\notlp_endpoint = \"{}\"\nsample_ratio = 0\nexport_interval = \"100ms\"\n",
            collector.endpoint()
        ),
    ))
    .await;
    let answer = send_raw(
        &proxy,
        "GET /headers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (fresh_trace, _, flags) = parts(&seen(&answer, "traceparent")[0]);
    assert_eq!(flags, "00");
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let answer = send_raw(
        &proxy,
        &format!("GET /headers HTTP/1.1\r\nHost: a\r\ntraceparent: {sampled}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(parts(&seen(&answer, "traceparent")[0]).2, "01");
    wait_until("the sampled parent's spans", || async {
        collector
            .spans()
            .iter()
            .filter(|s| s.trace_id() == CLIENT_TRACE)
            .count()
            >= 2
    })
    .await;
    proxy.stop().await;
    assert!(
        collector
            .spans()
            .iter()
            .all(|s| s.trace_id() != fresh_trace),
        "an unsampled new trace was exported"
    );
}
