//! HTTP as bytes and header maps, for both fronts: pure functions and
//! types, no socket, no routing table, no metric.
//!
//! - `headers`: the hop-by-hop table (read by `HeaderName` on hyper's
//!   front and by bytes on the direct one) and the forwarding headers.
//! - `request` / `response`: the direct path's in-place head readers and
//!   writers (what it takes; the heads it sends on).
//! - `chunked`: following a chunked body without decoding it.
//! - `answer`: the one renderer of the answers cutover writes itself.
//! - `ws_frames`: where WebSocket frames end, for a drain's close frame.
//! - `h2`: HTTP/2 frames and HPACK, for cutover's own HTTP/2 server.

pub mod answer;
pub mod chunked;
pub mod h2;
pub mod headers;
pub mod request;
pub mod response;
pub mod ws_frames;
