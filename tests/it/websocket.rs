//! A WebSocket echo through the proxy: the HTTP/1.1 Upgrade handshake is
//! forwarded and bytes are tunnelled both ways.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn websocket_echo() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("server handshake");
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                ws.send(msg).await.unwrap();
            } else if msg.is_close() {
                break;
            }
        }
    });
    let proxy = start_proxy(&split_config(&[("ws", 1, &[ws_addr])], "")).await;
    let base = proxy.addrs()[0];

    let stream = TcpStream::connect(base).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{base}/chat"), stream)
        .await
        .expect("handshake through the proxy");
    assert_eq!(response.status(), 101);
    for i in 0..50 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let back = ws.next().await.expect("echo").expect("frame");
        assert_eq!(back, Message::text(text));
    }
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![7u8; 100_000])
    );
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::timeout(DEADLINE, echo)
        .await
        .expect("echo server ends")
        .unwrap();
    // The tunnel counted as in flight and ends with the socket.
    let table = proxy.routing().load();
    let state = table.upstream("ws", ws_addr).unwrap().clone();
    wait_until("tunnel closes", || async { state.in_flight() == 0 }).await;
    proxy.stop().await;
}

/// A drain's deadline ends a WebSocket tunnel the way a server going away
/// does: the client and the upstream each get a close frame with 1001,
/// the tunnel is gone, and the upstream is `drained` — it no longer
/// waits for the client to leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_ends_a_websocket_with_going_away_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let echo = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Close(frame) => {
                    let _ = closed_tx.send(frame.map(|f| u16::from(f.code)));
                    break;
                }
                msg if msg.is_text() || msg.is_binary() => ws.send(msg).await.unwrap(),
                _ => {}
            }
        }
    });
    let proxy = start_proxy(&split_config(&[("wsdrain", 1, &[ws_addr])], "")).await;
    let base = proxy.addrs()[0];
    let stream = TcpStream::connect(base).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{base}/chat"), stream)
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));
    let upstream_view = || async {
        let (_, status) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        status["pools"][0]["upstreams"][0].clone()
    };
    assert_eq!(upstream_view().await["tunnels"], 1);
    // `cutover ctl status` says it too.
    let (code, out, err) = ctl(&proxy.admin_url(""), &["status"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 (1 tunnels)"), "{out}");
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url(&format!("/api/v1/pools/wsdrain/upstreams/{ws_addr}/drain")),
        Some(serde_json::json!({"timeout": "1s"})),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Before the deadline the tunnel works, and the drain waits for it.
    ws.send(Message::text("during")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("during"));
    assert_eq!(upstream_view().await["state"], "draining");
    // At the deadline: a close frame, 1001, to the client…
    let close = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("the tunnel ends at the drain deadline");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame with 1001, got {other:?}"),
    }
    // …and to the upstream.
    let upstream_code = tokio::time::timeout(DEADLINE, closed_rx)
        .await
        .expect("the upstream got a close frame")
        .unwrap();
    assert_eq!(upstream_code, Some(1001));
    echo.await.unwrap();
    wait_until("the upstream is drained", || async {
        let u = upstream_view().await;
        u["state"] == "drained" && u["tunnels"] == 0
    })
    .await;
    let admin = proxy.admin_url("");
    let ended = gauge(
        admin.trim_end_matches('/'),
        &format!("cutover_tunnels_drained_total{{upstream=\"{ws_addr}\"}}"),
    )
    .await;
    assert_eq!(ended, 1.0);
    proxy.stop().await;
}
