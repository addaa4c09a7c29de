//! Who may call the admin API: bearer tokens with two roles — `operate`
//! (`admin.token_file`: everything) and `read` (`admin.read_token_file`:
//! status only) — compared in constant time, and failed attempts limited
//! per peer address: past [`BURST`] in [`WINDOW`], the peer gets 429 until
//! the window ends, so a token cannot be guessed at network speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// Failed attempts a peer may make per window.
pub const BURST: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Peers remembered at once; the oldest windows go first beyond it.
const PEERS: usize = 4096;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Operate,
}

/// One token and the file it came from (named in the audit log, never the
/// token itself).
pub struct Token {
    secret: Vec<u8>,
    pub file: String,
}

#[derive(Debug, thiserror::Error)]
#[error("admin token file {path}: {reason}")]
pub struct TokenError {
    path: String,
    reason: String,
}

impl Token {
    pub fn load(path: &Path) -> Result<Token, TokenError> {
        let err = |reason: String| TokenError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(err("the file is empty".into()));
        }
        Ok(Token {
            secret: token.as_bytes().to_vec(),
            file: path.display().to_string(),
        })
    }

    /// The tokens `[admin]` names: the operate one and the read one.
    /// `cutover check` and `run` both read them through here, before
    /// anything is bound, so a file `run` would refuse fails `check` too.
    pub fn load_both(
        admin: &crate::config::AdminConfig,
    ) -> Result<(Option<Token>, Option<Token>), TokenError> {
        let operate = admin.token_file.as_deref().map(Token::load).transpose()?;
        let read = admin
            .read_token_file
            .as_deref()
            .map(Token::load)
            .transpose()?;
        Ok((operate, read))
    }

    fn matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.secret.as_slice()))
    }
}

/// Why a call is not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Wrong,
    /// Too many failures from this peer; seconds until it may try again.
    Limited(u64),
}

pub struct Auth {
    operate: Option<Token>,
    read: Option<Token>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Auth {
    pub fn new(operate: Option<Token>, read: Option<Token>) -> Auth {
        Auth {
            operate,
            read,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The role of a request with `authorization` from `peer`, and the
    /// token file that granted it.
    pub fn check(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
    ) -> Result<(Role, Option<&str>), Denied> {
        if self.operate.is_none() && self.read.is_none() {
            return Ok((Role::Operate, None));
        }
        if let Some(wait) = self.limited(peer) {
            return Err(Denied::Limited(wait));
        }
        let presented = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            self.failed(peer);
            return Err(Denied::Missing);
        };
        // Both compared, whichever matches, so timing tells nothing.
        let operate = self.operate.as_ref().filter(|t| t.matches(presented));
        let read = self.read.as_ref().filter(|t| t.matches(presented));
        match (operate, read) {
            (Some(t), _) => Ok((Role::Operate, Some(&t.file))),
            (None, Some(t)) => Ok((Role::Read, Some(&t.file))),
            (None, None) => {
                self.failed(peer);
                Err(Denied::Wrong)
            }
        }
    }

    /// Seconds until `peer` may try again, if it is over the limit.
    fn limited(&self, peer: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().ok()?;
        let (since, n) = failures.get(&peer)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*n >= BURST).then(|| left.as_secs().max(1))
    }

    fn failed(&self, peer: IpAddr) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= PEERS {
            failures.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = failures.entry(peer).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Token {
        Token {
            secret: s.as_bytes().to_vec(),
            file: format!("/etc/cutover/{s}.token"),
        }
    }

    #[test]
    fn roles_and_the_failure_limit() {
        let auth = Auth::new(Some(token("op")), Some(token("ro")));
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            auth.check(peer, Some("Bearer op")).unwrap().0,
            Role::Operate
        );
        assert_eq!(auth.check(peer, Some("Bearer ro")).unwrap().0, Role::Read);
        assert_eq!(auth.check(peer, None), Err(Denied::Missing));
        for _ in 1..BURST {
            assert_eq!(auth.check(peer, Some("Bearer guess")), Err(Denied::Wrong));
        }
        assert!(matches!(
            auth.check(peer, Some("Bearer op")),
            Err(Denied::Limited(_))
        ));
        // Another peer is not held back.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            auth.check(other, Some("Bearer op")).unwrap().0,
            Role::Operate
        );
    }

    #[test]
    fn no_tokens_means_open() {
        let auth = Auth::new(None, None);
        assert_eq!(
            auth.check("::1".parse().unwrap(), None).unwrap().0,
            Role::Operate
        );
    }
}
