//! The PROXY protocol (HAProxy's v1 text line, v2 binary header) on a
//! listener behind a TCP load balancer: from a trusted proxy the header
//! is required and its source address becomes the client's everywhere
//! (logs, `X-Forwarded-For`, rate-limit keys); from anyone else a header
//! is refused. Read exactly — a v1 line byte by byte up to its CRLF, a v2
//! header by its length field — so not a byte of the request after it is
//! consumed, and never parsed as HTTP. The header itself is parsed by the
//! `ppp` crate.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::ProxyProtocol;

/// A v1 line's longest form (the spec's 107 bytes, CRLF included).
const V1_MAX: usize = 107;

/// v2's 12-byte signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The most of a v2 header after its 16 fixed bytes taken: addresses (at
/// most 216 for UNIX sockets) and TLVs. Beyond it: refused.
const V2_MAX_BODY: usize = 1024;

/// What a connection's first bytes made of it.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Served, as this client.
    Client(SocketAddr),
    /// Closed unread, and why (the metric's `reason`).
    Refused(&'static str),
}

/// Reads the header of a connection from `peer`, within `timeout`.
pub async fn accept(
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: &ProxyProtocol,
    timeout: Duration,
) -> Outcome {
    if !settings.trusts(peer.ip()) {
        return if sends_a_header(stream, timeout).await {
            Outcome::Refused("untrusted")
        } else {
            Outcome::Client(peer)
        };
    }
    match tokio::time::timeout(timeout, read_header(stream, settings)).await {
        Err(_) => Outcome::Refused("timeout"),
        Ok(Err(reason)) => Outcome::Refused(reason),
        Ok(Ok(Some(client))) => Outcome::Client(client),
        // LOCAL (a health check of the balancer's own) or UNKNOWN: the
        // connection's own address.
        Ok(Ok(None)) => Outcome::Client(peer),
    }
}

/// Whether an untrusted peer's first bytes are a PROXY header: looked at,
/// not consumed. Too few bytes to tell are not one (an HTTP parser
/// refuses the rest).
async fn sends_a_header(stream: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 12];
    let Ok(Ok(n)) = tokio::time::timeout(timeout, stream.peek(&mut first)).await else {
        return false;
    };
    let seen = &first[..n];
    (n >= 6 && seen.starts_with(b"PROXY ")) || seen == V2_SIGNATURE
}

/// The header's client address (`None`: LOCAL or UNKNOWN), or why the
/// connection is refused.
async fn read_header(
    stream: &mut TcpStream,
    settings: &ProxyProtocol,
) -> Result<Option<SocketAddr>, &'static str> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await.map_err(|_| "missing")?;
    match first[0] {
        b'P' if settings.v1 => read_v1(stream).await,
        b'\r' if settings.v2 => read_v2(stream).await,
        _ => Err("missing"),
    }
}

async fn read_v1(stream: &mut TcpStream) -> Result<Option<SocketAddr>, &'static str> {
    let mut line = vec![b'P'];
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err("malformed");
        }
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|_| "malformed")?;
        line.push(byte[0]);
    }
    let header = ppp::v1::Header::try_from(&line[..]).map_err(|_| "malformed")?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    })
}

async fn read_v2(stream: &mut TcpStream) -> Result<Option<SocketAddr>, &'static str> {
    let mut fixed = [0u8; 16];
    fixed[0] = b'\r';
    stream
        .read_exact(&mut fixed[1..])
        .await
        .map_err(|_| "malformed")?;
    if fixed[..12] != V2_SIGNATURE {
        return Err("malformed");
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > V2_MAX_BODY {
        return Err("oversized");
    }
    let mut header = fixed.to_vec();
    header.resize(16 + len, 0);
    stream
        .read_exact(&mut header[16..])
        .await
        .map_err(|_| "malformed")?;
    let header = ppp::v2::Header::try_from(&header[..]).map_err(|_| "malformed")?;
    if header.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v2::Addresses::IPv6(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified => None,
    })
}
