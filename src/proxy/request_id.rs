//! `X-Request-Id` (or `[proxy] request_id_header`): every request carries one to its upstream and back to
//! its client (SPEC.md's promise) — the client's own when it is valid
//! (one header of 1 to 200 visible ASCII characters), else one made here.
//! A made id is this process's random prefix and a counter: unique
//! without a random draw per request, and never seen twice from one
//! process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The longest client id kept; a longer one is replaced.
pub const MAX_LEN: usize = 200;

/// A made id's length: 8 hex digits, a dash, 16 hex digits.
pub const MADE_LEN: usize = 25;

/// Whether a client's id is kept as it is: visible ASCII only (no space,
/// no control character, nothing a log line or a header could be split
/// by), 1 to [`MAX_LEN`] bytes.
pub fn valid(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_LEN && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// An id made here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadeId([u8; MADE_LEN]);

impl MadeId {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn header_value(&self) -> HeaderValue {
        // Hex digits and a dash: always a valid value.
        HeaderValue::from_bytes(&self.0).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// The next id of this process.
pub fn make() -> MadeId {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // The prefix's text is made once: per request only the counter's 16
    // digits are written, two per byte (callgrind: 123 → ~60
    // instructions per request).
    static PREFIX: OnceLock<[u8; 9]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut p = [b'-'; 9];
        for (i, b) in fastrand::u32(..).to_be_bytes().iter().enumerate() {
            p[2 * i] = HEX[usize::from(b >> 4)];
            p[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        p
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = [0u8; MADE_LEN];
    out[..9].copy_from_slice(prefix);
    for (i, b) in n.to_be_bytes().iter().enumerate() {
        out[9 + 2 * i] = HEX[usize::from(b >> 4)];
        out[10 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    MadeId(out)
}

/// The request's id on the hyper path: the one valid `name` header kept
/// (`false`), or a made one (`true`), every header of that name then
/// removed. A made id is not put in the map: each attempt sends it up
/// (written straight into the upstream head on the raw path — one more
/// entry grew the map, ~1,800 instructions per HTTP/2 request).
pub fn settle(headers: &mut HeaderMap, name: &HeaderName) -> (HeaderValue, bool) {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(one), None) if valid(one.as_bytes()) => return (one.clone(), false),
        (None, _) => {}
        _ => {
            headers.remove(name);
        }
    }
    (make().header_value(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_ids_are_kept_only_when_valid() {
        assert!(valid(b"abc-123_XYZ.~"));
        assert!(valid(&[b'a'; MAX_LEN]));
        for bad in [
            &b""[..],
            b"a b",
            b"a\tb",
            b"a\x01b",
            "é".as_bytes(),
            &[b'a'; MAX_LEN + 1],
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
        let name = HeaderName::from_static("x-request-id");
        let mut h = HeaderMap::new();
        h.insert(&name, HeaderValue::from_static("trace-7"));
        assert_eq!(
            settle(&mut h, &name),
            (HeaderValue::from_static("trace-7"), false)
        );
        h.append(&name, HeaderValue::from_static("second"));
        let (made, is_made) = settle(&mut h, &name);
        assert!(is_made && made.len() == MADE_LEN, "{made:?}");
        // The made id goes up with each attempt, not in the map.
        assert_eq!(h.get_all(&name).iter().count(), 0, "the client's are gone");
        let mut empty = HeaderMap::new();
        let (made, is_made) = settle(&mut empty, &name);
        assert!(is_made && made.len() == MADE_LEN, "{made:?}");
    }

    #[test]
    fn made_ids_differ_and_share_the_process_prefix() {
        let (a, b) = (make(), make());
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..9], b.as_bytes()[..9]);
        assert!(valid(a.as_bytes()));
    }
}
