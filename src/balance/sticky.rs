//! Sticky-session cookies, sealed so a client can neither read which
//! upstream it is pinned to nor forge a cookie for another one.
//!
//! Each upstream has an opaque id: HMAC-SHA256(key, "pool/addr"), first 12
//! bytes. A cookie is base64url(id ‖ expiry ‖ cohort ‖ tag) where expiry is
//! Unix seconds, cohort a random number 0–99 drawn when the cookie is made
//! (a rollout moves clients by cohort), and tag is HMAC-SHA256(key, id ‖
//! expiry ‖ cohort), first 16 bytes, checked in constant time, so a client
//! cannot choose its cohort either. Cookies made before cohorts existed
//! (no cohort byte) still open; their cohort comes from a hash of the
//! value. The key (32 random bytes) lives in `state.dir`, so cookies
//! survive restarts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const ID_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Without the cohort byte: cookies of earlier versions.
const SEALED_LEN_V1: usize = ID_LEN + 8 + TAG_LEN;
const SEALED_LEN: usize = ID_LEN + 8 + 1 + TAG_LEN;

/// An upstream's opaque sticky id.
pub type StickyId = [u8; ID_LEN];

#[derive(Clone)]
pub struct StickyKey {
    key: [u8; 32],
}

impl std::fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StickyKey(..)")
    }
}

impl StickyKey {
    pub fn new(key: [u8; 32]) -> Self {
        StickyKey { key }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    /// The opaque id of upstream `addr` in `pool`.
    pub fn upstream_id(&self, pool: &str, addr: &str) -> StickyId {
        let mut mac = self.mac();
        mac.update(b"upstream\0");
        mac.update(pool.as_bytes());
        mac.update(b"/");
        mac.update(addr.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&full[..ID_LEN]);
        id
    }

    fn tag(&self, id: &StickyId, expires: u64, cohort: Option<u8>) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(b"cookie\0");
        mac.update(id);
        mac.update(&expires.to_be_bytes());
        if let Some(c) = cohort {
            mac.update(&[c]);
        }
        mac
    }

    /// The cookie value pinning a client to `id` until `expires` (Unix
    /// s), and its cohort (0–99, drawn at random).
    pub fn seal(&self, id: &StickyId, expires: u64) -> (String, u8) {
        let cohort = fastrand::u8(0..100);
        (self.seal_in_cohort(id, expires, cohort), cohort)
    }

    fn seal_in_cohort(&self, id: &StickyId, expires: u64, cohort: u8) -> String {
        let tag = self.tag(id, expires, Some(cohort)).finalize().into_bytes();
        let mut raw = [0u8; SEALED_LEN];
        raw[..ID_LEN].copy_from_slice(id);
        raw[ID_LEN..ID_LEN + 8].copy_from_slice(&expires.to_be_bytes());
        raw[ID_LEN + 8] = cohort;
        raw[ID_LEN + 9..].copy_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The upstream id in a cookie value, if it is authentic and not expired
    /// at `now` (Unix s).
    pub fn open(&self, value: &str, now: u64) -> Option<StickyId> {
        self.open_with_cohort(value, now).map(|(id, _)| id)
    }

    /// As [`open`](Self::open), with the client's cohort (0–99).
    pub fn open_with_cohort(&self, value: &str, now: u64) -> Option<(StickyId, u32)> {
        if value.len() > 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        let cohort = match raw.len() {
            SEALED_LEN => Some(raw[ID_LEN + 8]),
            SEALED_LEN_V1 => None,
            _ => return None,
        };
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&raw[..ID_LEN]);
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&raw[ID_LEN..ID_LEN + 8]);
        let expires = u64::from_be_bytes(expiry);
        let tag_at = ID_LEN + 8 + usize::from(cohort.is_some());
        self.tag(&id, expires, cohort)
            .verify_truncated_left(&raw[tag_at..])
            .ok()?;
        let cohort = cohort.map_or_else(|| hash_cohort(value), |c| u32::from(c) % 100);
        (now < expires).then_some((id, cohort))
    }
}

/// A cohort for a cookie without one: FNV-1a of its value, 0–99.
fn hash_cohort(value: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in value.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % 100
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> StickyKey {
        StickyKey::new([b; 32])
    }

    #[test]
    fn seal_then_open() {
        let k = key(1);
        let id = k.upstream_id("blue", "127.0.0.1:9001");
        let (cookie, _) = k.seal(&id, 1000);
        assert_eq!(k.open(&cookie, 999), Some(id));
        assert_eq!(k.open(&cookie, 1000), None, "expired");
        assert_eq!(key(2).open(&cookie, 0), None, "another key");
        assert!(
            !cookie.contains("9001") && !cookie.contains("blue"),
            "opaque: {cookie}"
        );
        assert_ne!(id, k.upstream_id("green", "127.0.0.1:9001"));
    }

    #[test]
    fn cohorts_are_sealed_and_older_cookies_still_open() {
        let k = key(4);
        let id = k.upstream_id("blue", "127.0.0.1:9001");
        let cookie = k.seal_in_cohort(&id, 1000, 42);
        assert_eq!(k.open_with_cohort(&cookie, 0), Some((id, 42)));
        // Cookies of earlier versions: id ‖ expiry ‖ tag, no cohort.
        let tag = k.tag(&id, 1000, None).finalize().into_bytes();
        let mut raw = Vec::from(id);
        raw.extend_from_slice(&1000u64.to_be_bytes());
        raw.extend_from_slice(&tag[..TAG_LEN]);
        let old = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(k.open_with_cohort(&old, 0), Some((id, hash_cohort(&old))));
        // Fresh cookies spread over the cohorts.
        let low = (0..1000)
            .filter(|_| k.open_with_cohort(&k.seal(&id, 1000).0, 0).unwrap().1 < 25)
            .count();
        assert!((180..=320).contains(&low), "{low} of 1000 below 25");
    }

    proptest! {
        /// Any change to a sealed cookie is rejected.
        #[test]
        fn tampering_is_rejected(pos in 0usize..50, bit in 0u8..6) {
            let k = key(7);
            let (cookie, _) = k.seal(&k.upstream_id("p", "10.0.0.1:80"), u64::MAX);
            let mut bytes = cookie.clone().into_bytes();
            prop_assume!(pos < bytes.len());
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let i = alphabet.iter().position(|c| *c == bytes[pos]).unwrap();
            bytes[pos] = alphabet[(i ^ (1 << bit)) % 64];
            let forged = String::from_utf8(bytes).unwrap();
            prop_assume!(forged != cookie);
            // The last character carries padding bits base64 ignores.
            if let Some(id) = k.open(&forged, 0) {
                prop_assert_eq!(pos, cookie.len() - 1);
                prop_assert_eq!(id, k.upstream_id("p", "10.0.0.1:80"));
            }
        }

        #[test]
        fn garbage_never_opens(s in "\\PC{0,80}") {
            prop_assert_eq!(key(3).open(&s, 0), None);
        }
    }
}
