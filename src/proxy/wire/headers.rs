//! Header rewriting between client and upstream: hop-by-hop headers removed
//! (RFC 9110 §7.6.1), `Via` and `X-Forwarded-*` added, `Host` kept.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that describe one connection, never forwarded (RFC 9110
/// §7.6.1): the one list both engines read — hyper's path by `HeaderName`
/// ([`remove_hop_by_hop`]), the direct path by bytes ([`hop_by_hop`]) —
/// and the config's check of header names cutover owns. It lives in
/// `config`, which every one of them may import.
pub use crate::config::HOP_BY_HOP;

/// Where `te` and `upgrade` stand in [`HOP_BY_HOP`].
const TE_INDEX: usize = 3;
const UPGRADE_INDEX: usize = 6;

static HOP_BY_HOP_NAMES: [HeaderName; 8] = [
    HeaderName::from_static(HOP_BY_HOP[0]),
    HeaderName::from_static(HOP_BY_HOP[1]),
    HeaderName::from_static(HOP_BY_HOP[2]),
    HeaderName::from_static(HOP_BY_HOP[3]),
    HeaderName::from_static(HOP_BY_HOP[4]),
    HeaderName::from_static(HOP_BY_HOP[5]),
    HeaderName::from_static(HOP_BY_HOP[6]),
    HeaderName::from_static(HOP_BY_HOP[7]),
];

/// [`HOP_BY_HOP`]'s entry `i` as bytes, for the direct path's lists.
pub const fn hop_by_hop(i: usize) -> &'static [u8] {
    HOP_BY_HOP[i].as_bytes()
}

/// Is this an HTTP/1.1 WebSocket upgrade request? Only WebSocket is
/// forwarded: any other `Upgrade` (`h2c` above all, a known way to tunnel
/// past a proxy) is removed with the other hop-by-hop headers.
pub fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        && connection_has(headers, "upgrade")
}

/// A `Host` (or authority) a server may accept: `host[:port]` with a
/// reg-name, IPv4 or bracketed IPv6 host and no userinfo (RFC 9110 §7.2,
/// RFC 3986 §3.2.2).
pub fn valid_host(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, after)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                ("", after.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let port_ok = port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5);
    // reg-name: unreserved / sub-delims; no '@', no ':'. Percent-encoded
    // names are refused too: no client sends them for a host, and the http
    // crate (hence the upstream request) rejects them.
    let chars_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b));
    let host_ok = chars_ok && (value.starts_with('[') || !host.is_empty());
    port_ok && host_ok
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers. With `upgrade`, keeps `Upgrade` and sends
/// `Connection: upgrade`, so the upgrade handshake reaches the other side.
/// Returns whether a `TE` header named `trailers` (then the request's
/// sender takes trailers, which gRPC needs said to its server).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) -> bool {
    // One pass over the names finds which fixed hop-by-hop headers are
    // there (usually just `Connection`): cheaper than eight removals that
    // each hash a name.
    let fixed = &HOP_BY_HOP_NAMES;
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = fixed.iter().position(|f| f == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return false;
    }
    let trailers = present & (1 << TE_INDEX) != 0
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    // The usual tokens — `keep-alive`, `upgrade`, `close` — are removed
    // below or name no header, so they need no parsing.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.eq_ignore_ascii_case("close")
                && !fixed.iter().any(|f| t.eq_ignore_ascii_case(f.as_str()))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (i, name) in fixed.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present & (1 << UPGRADE_INDEX) != 0 {
        // An upgrade not forwarded (h2c): its settings go too, named in
        // Connection or not.
        headers.remove(&HTTP2_SETTINGS);
    }
    trailers
}

fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 cutover",
        Version::HTTP_10 => "1.0 cutover",
        Version::HTTP_2 => "2 cutover",
        Version::HTTP_3 => "3 cutover",
        _ => "1.1 cutover",
    })
}

/// A client's address as an `X-Forwarded-For` element, formatted once per
/// connection rather than for each of its requests.
pub fn forwarded_for_value(ip: IpAddr) -> HeaderValue {
    // An address's text is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Rewrites a client request's headers for the upstream. `version` is the
/// protocol the client spoke; `uri` its request target; `client_ip` comes
/// from [`forwarded_for_value`].
pub fn prepare_request(
    headers: &mut HeaderMap,
    uri: &Uri,
    version: Version,
    client_ip: &HeaderValue,
    proto: &'static str,
    upgrade: bool,
) {
    // Room for the four added below (and Host) at once: a map grown one
    // insert at a time rehashed ~3 times per request (callgrind, HTTP/2).
    headers.reserve(5);
    // `TE: trailers` says the client takes trailers (gRPC needs it to reach
    // the server, and HTTP/2 allows no other TE): it is kept, alone.
    if remove_hop_by_hop(headers, upgrade) {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // An absolute-form target (HTTP/1.1) or :authority (HTTP/2) is the host
    // the client asked for (RFC 9112 §3.2.2); the upstream sees it as Host.
    if let Some(authority) = uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => {
            let ip = client_ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{prior}, {ip}"))
        }
        None => Ok(client_ip.clone()),
    };
    if let Ok(v) = forwarded_for {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match headers.get(header::HOST).cloned() {
        Some(host) => {
            headers.insert(&X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    headers.append(header::VIA, via_value(version));
}

/// A `Set-Cookie` value pinning a sticky client.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age: std::time::Duration,
    secure: bool,
) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    ))
    .ok()
}

/// Rewrites an upstream response's headers for the client.
pub fn prepare_response(headers: &mut HeaderMap, upstream_version: Version, upgrade: bool) {
    remove_hop_by_hop(headers, upgrade);
    headers.append(header::VIA, via_value(upstream_version));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]);
        assert!(remove_hop_by_hop(&mut h, false), "TE named trailers");
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn te_trailers_alone_reaches_the_upstream() {
        let uri: Uri = "/x".parse().unwrap();
        let ip = forwarded_for_value("127.0.0.2".parse().unwrap());
        for (te, kept) in [
            ("trailers", true),
            ("gzip, Trailers", true),
            ("gzip", false),
        ] {
            let mut h = map(&[("te", te), ("connection", "te")]);
            prepare_request(&mut h, &uri, Version::HTTP_11, &ip, "http", false);
            assert_eq!(h.get("te").is_some_and(|v| v == "trailers"), kept, "{te}");
            assert!(h.get("connection").is_none());
        }
    }

    #[test]
    fn hosts_with_userinfo_or_odd_characters_are_invalid() {
        for ok in [
            "app.test",
            "app.test:8080",
            "127.0.0.1:80",
            "[::1]:8443",
            "[::1]",
            "a-b_c~d",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        // `%`, then `%Aa`: found by fuzz::fuzz_accepted_hosts_are_….
        for bad in [
            "%",
            "%Aa",
            "%41pp.test",
            "user@app.test",
            "a b",
            "app.test:80x",
            "[::1",
            "[zz]:80",
            "",
            ":80",
            "a/b",
            "a\\b",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn only_websocket_upgrades_go_through() {
        let mut h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ]);
        assert!(!is_upgrade_request(Version::HTTP_11, &h));
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        let mut h = map(&[("upgrade", "h2c"), ("http2-settings", "AAMA")]);
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "unnamed HTTP2-Settings go too: {h:?}");
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(Version::HTTP_11, &h));
        assert!(!is_upgrade_request(Version::HTTP_2, &h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_headers_are_set() {
        let mut h = map(&[
            ("host", "app.test"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil"),
        ]);
        let uri: Uri = "/x".parse().unwrap();
        prepare_request(
            &mut h,
            &uri,
            Version::HTTP_11,
            &forwarded_for_value("127.0.0.2".parse().unwrap()),
            "http",
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-host"], "app.test");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], "1.1 cutover");
        assert_eq!(h["host"], "app.test");
    }

    #[test]
    fn authority_becomes_host() {
        let mut h = HeaderMap::new();
        let uri: Uri = "http://app.test:8080/x".parse().unwrap();
        prepare_request(
            &mut h,
            &uri,
            Version::HTTP_2,
            &forwarded_for_value("::1".parse().unwrap()),
            "http",
            false,
        );
        assert_eq!(h["host"], "app.test:8080");
        assert_eq!(h["via"], "2 cutover");
        assert_eq!(h["x-forwarded-for"], "::1");
    }
}
