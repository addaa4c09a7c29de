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
