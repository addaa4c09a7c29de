//! `X-Request-Id` on every request, to its upstream and back to its
//! client, on both fronts — the direct HTTP/1.1 path and hyper's (HTTP/2,
//! and HTTP/1.1 requests the direct path leaves): a valid client id kept,
//! anything else replaced, cutover's own error answers included, and the
//! access log says it.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// The `x-request-id` values in a response head or a `/headers` body.
fn ids(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_string())
        })
        .collect()
}

/// The id the client got in the head, and the ids the upstream saw (the
/// `/headers` body).
fn split_answer(answer: &str) -> (Vec<String>, Vec<String>) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    (ids(head), ids(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_an_id_up_and_back_on_both_fronts() {
    let up = TestUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = start_proxy(&split_config(
        &[("p", 1, &[up.addr])],
        &format!("[proxy]\naccess_log = \"{}\"\n", log.display()),
    ))
    .await;
    // The direct path (a plain GET) and hyper's (a chunked POST).
    let direct = |extra: &str| {
        format!("GET /headers HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n")
    };
    let hyper = |extra: &str| {
        format!(
            "POST /headers HTTP/1.1\r\nHost: a\r\n{extra}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        )
    };
    for (front, request) in [
        ("direct", &direct as &dyn Fn(&str) -> String),
        ("hyper", &hyper),
    ] {
        // None sent: one made, the same both ways.
        let (back, up_saw) = split_answer(&send_raw(&proxy, &request("")).await);
        assert_eq!(back.len(), 1, "{front}: {back:?}");
        assert_eq!(back, up_saw, "{front}");
        assert_eq!(back[0].len(), 25, "{front}: {back:?}");
        // A valid one is kept.
        let (back, up_saw) =
            split_answer(&send_raw(&proxy, &request("X-Request-Id: order-42.a_b\r\n")).await);
        assert_eq!(
            (back.clone(), up_saw),
            (vec!["order-42.a_b".to_string()], back),
            "{front}"
        );
        // Invalid ones never reach the upstream as sent.
        let long = format!("X-Request-Id: {}\r\n", "x".repeat(201));
        for bad in [
            "X-Request-Id: a b\r\n",
            "X-Request-Id: one\r\nX-Request-Id: two\r\n",
            long.as_str(),
        ] {
            let (back, up_saw) = split_answer(&send_raw(&proxy, &request(bad)).await);
            assert_eq!(up_saw.len(), 1, "{front} {bad:?}: {up_saw:?}");
            assert_eq!(back, up_saw, "{front} {bad:?}");
            assert_eq!(back[0].len(), 25, "{front} {bad:?}: replaced");
        }
    }
    // HTTP/2 through hyper's front.
    let client = http2_client();
    let req = http::Request::get(format!("http://{}/headers", proxy.addrs()[0]))
        .header("x-request-id", "h2-trace")
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "h2-trace");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(ids(&String::from_utf8_lossy(&body)), ["h2-trace"]);
    // None sent over HTTP/2 (a bodiless GET: the raw upstream path writes
    // the made id into the upstream head itself): the same one both ways.
    let resp = client
        .request(
            http::Request::get(format!("http://{}/headers", proxy.addrs()[0]))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let back = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        ids(&String::from_utf8_lossy(&body)),
        std::slice::from_ref(&back)
    );
    assert_eq!(back.len(), 25, "{back}");
    // The access log has each request's id.
    wait_until("the access log lines", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            >= 11
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id = |id: &str| {
        lines
            .iter()
            .filter(|l| l["request_id"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    // order-42.a_b went once each way: the direct path, then hyper's.
    let kept = by_id("order-42.a_b");
    let fronts: Vec<&str> = kept
        .iter()
        .map(|l| l["served_by"].as_str().unwrap())
        .collect();
    assert_eq!(fronts, ["direct", "hyper"], "{text}");
    let h2 = by_id("h2-trace");
    assert_eq!(
        (h2[0]["protocol"].as_str(), h2[0]["scheme"].as_str()),
        (Some("HTTP/2.0"), Some("http")),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_s_own_id_is_replaced_and_cutover_s_errors_carry_one() {
    // An upstream that answers with an id of its own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).await.is_ok_and(|n| n > 0) {
                    head.push(byte[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nx-request-id: upstream-own\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let dead = closed_port();
    let proxy = start_proxy(&format!(
        "[[route]]\nname = \"own\"\npath_prefix = \"/own\"\nsplit = {{ echo = 1 }}\n\
         [[route]]\nname = \"dead\"\npath_prefix = \"/dead\"\nsplit = {{ dead = 1 }}\n\
         [pool.echo]\nupstreams = [{{ addr = \"{echo}\" }}]\n[pool.dead]\nupstreams = [{{ addr = \"{dead}\" }}]\n"
    ))
    .await;
    let answer = send_raw(
        &proxy,
        "GET /own HTTP/1.1\r\nHost: a\r\nX-Request-Id: mine\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(split_answer(&answer).0, ["mine"], "{answer}");
    for request in [
        "GET /dead HTTP/1.1\r\nHost: a\r\nX-Request-Id: lost-1\r\nConnection: close\r\n\r\n",
        "POST /dead HTTP/1.1\r\nHost: a\r\nX-Request-Id: lost-1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    ] {
        let answer = send_raw(&proxy, request).await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert_eq!(split_answer(&answer).0, ["lost-1"], "{answer}");
    }
    // No route: still answered with one.
    let answer = send_raw(
        &proxy,
        "GET /nowhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(split_answer(&answer).0.len(), 1, "{answer}");
    proxy.stop().await;
}

/// `[proxy] request_id_header` names the header instead: both fronts use
/// it, and `X-Request-Id` is then an ordinary header. A name cutover owns
/// is a config error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_header_can_be_named() {
    let up = TestUpstream::start("up").await;
    let config = split_config(
        &[("p", 1, &[up.addr])],
        "[proxy]\nrequest_id_header = \"X-Correlation-Id\"\n",
    );
    let proxy = start_proxy(&config).await;
    for request in [
        "GET /headers HTTP/1.1\r\nHost: a\r\nX-Correlation-Id: corr-9\r\nX-Request-Id: other\r\nConnection: close\r\n\r\n",
        "POST /headers HTTP/1.1\r\nHost: a\r\nX-Correlation-Id: corr-9\r\nX-Request-Id: other\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    ] {
        let answer = send_raw(&proxy, request).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let named = |text: &str, header: &str| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.eq_ignore_ascii_case(header))
                .map(|(_, v)| v.trim().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(named(head, "x-correlation-id"), ["corr-9"], "{answer}");
        assert_eq!(named(body, "x-correlation-id"), ["corr-9"], "{answer}");
        assert_eq!(
            named(body, "x-request-id"),
            ["other"],
            "passed as any header: {answer}"
        );
    }
    proxy.stop().await;
    for bad in ["x-forwarded-for", "bad name"] {
        let text = split_config(
            &[("p", 1, &[up.addr])],
            &format!("[proxy]\nrequest_id_header = \"{bad}\"\n"),
        );
        let out = check_config(&text, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("proxy.request_id_header: "),
            "{bad}: {stderr}"
        );
    }
}
