//! Persisted runtime overrides and the audit log, both in `state.dir`.
//!
//! Overrides are written atomically (temp file, fsync, rename, fsync of the
//! directory) before an admin call returns, so after a crash the file is
//! either the state before a change or after it, never a mix. The audit log
//! is JSON lines, appended and fsynced per mutating call.
//! Imports only `config` and `rollout` (the types it persists) and `clock`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{MirrorTarget, Split};
use crate::rollout::RolloutRecord;

const OVERRIDES_FILE: &str = "runtime.json";
const AUDIT_FILE: &str = "audit.log";
const STICKY_KEY_FILE: &str = "sticky.key";
/// In a fleet: which fleet and revision `runtime.json` holds.
const FLEET_FILE: &str = "fleet.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {dir}: {source} (set [state] dir to a writable directory)")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid runtime state file: {source} (cutover run --discard-state moves it aside and starts from the config file alone)"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Runtime changes layered over the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Route → split set at runtime.
    #[serde(default)]
    pub splits: BTreeMap<String, SplitOverride>,
    /// Pool → upstreams added at runtime.
    #[serde(default)]
    pub added: BTreeMap<String, BTreeMap<SocketAddr, u32>>,
    /// Pool → file upstreams removed at runtime, with the file's weight at
    /// removal (if the file changes it, the file wins).
    #[serde(default)]
    pub removed: BTreeMap<String, BTreeMap<SocketAddr, u32>>,
    /// Pool → upstreams taken out of rotation by hand.
    #[serde(default)]
    pub disabled: BTreeMap<String, BTreeSet<SocketAddr>>,
    /// Pool → upstreams being drained or drained, with the drain deadline
    /// (Unix milliseconds) until which sticky clients may still use them.
    #[serde(default)]
    pub drained: BTreeMap<String, BTreeMap<SocketAddr, u64>>,
    /// Pool → upstreams to remove once drained (`DELETE`).
    #[serde(default)]
    pub removing: BTreeMap<String, BTreeSet<SocketAddr>>,
    /// Route → shadow traffic set at runtime.
    #[serde(default)]
    pub mirrors: BTreeMap<String, MirrorOverride>,
    /// Route → its latest rollout (running, paused or finished).
    #[serde(default)]
    pub rollouts: BTreeMap<String, RolloutRecord>,
    /// Route → its earlier rollouts, newest last, at most `rollout::HISTORY`.
    #[serde(default)]
    pub rollout_history: BTreeMap<String, Vec<RolloutRecord>>,
    /// Route → its split before and after its last change (a split set by
    /// hand, a promoted rollout, an undo): what `undo` restores.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub undo: BTreeMap<String, UndoEntry>,
}

/// A route's last change of split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndoEntry {
    pub before: Split,
    pub after: Split,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitOverride {
    pub split: Split,
    /// The file's split when the override was made; a reload whose file
    /// split differs drops the override (the file is the newer intent).
    pub file_split: Split,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorOverride {
    /// Where copies go and how many; `None` stops the file's mirror.
    pub mirror: Option<MirrorTarget>,
    /// The file's pool and percent when the override was made; a reload
    /// whose file differs drops the override.
    pub file_mirror: Option<MirrorTarget>,
}

impl Overrides {
    pub fn is_disabled(&self, pool: &str, addr: SocketAddr) -> bool {
        self.disabled.get(pool).is_some_and(|s| s.contains(&addr))
    }

    pub fn is_drained(&self, pool: &str, addr: SocketAddr) -> bool {
        self.drain_deadline(pool, addr).is_some()
    }

    /// The drain deadline (Unix ms) of a draining upstream.
    pub fn drain_deadline(&self, pool: &str, addr: SocketAddr) -> Option<u64> {
        self.drained.get(pool).and_then(|s| s.get(&addr)).copied()
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry<'a> {
    pub time: String,
    pub caller: &'a Caller,
    pub action: &'a str,
    pub target: &'a str,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub result: &'a str,
}

/// Who made an admin call.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    /// Peer address, or `signal` for SIGHUP.
    pub peer: String,
    /// Which credential was presented: the token file's path, or none.
    pub token: Option<String>,
}

/// The state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Creates the directory if needed and checks it is writable.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        let err = |source| StateError::Dir {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(err)?;
        let probe = dir.join(".write-test");
        File::create(&probe).map_err(err)?;
        let _ = fs::remove_file(&probe);
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn overrides_path(&self) -> PathBuf {
        self.dir.join(OVERRIDES_FILE)
    }

    /// The last `n` lines of the audit log, oldest first (lines that do
    /// not parse are skipped).
    pub fn audit_tail(&self, n: usize) -> Result<Vec<serde_json::Value>, StateError> {
        let path = self.audit_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(StateError::Dir { dir: path, source }),
        };
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines[lines.len().saturating_sub(n)..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.join(AUDIT_FILE)
    }

    /// The key that seals sticky cookies: 32 random bytes, created on first
    /// use (mode 0600) and kept, so cookies stay valid across restarts.
    pub fn sticky_key(&self) -> Result<[u8; 32], StateError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(STICKY_KEY_FILE);
        let err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let mut key = [0u8; 32];
        match File::open(&path) {
            Ok(mut f) => {
                f.read_exact(&mut key).map_err(err)?;
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        getrandom::fill(&mut key).map_err(|e| err(std::io::Error::other(e.to_string())))?;
        let tmp = self.dir.join(format!("{STICKY_KEY_FILE}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&key).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(key)
    }

    /// The persisted overrides; none yet is an empty set.
    pub fn load(&self) -> Result<Overrides, StateError> {
        let path = self.overrides_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overrides::default()),
            Err(source) => Err(StateError::Dir { dir: path, source }),
        }
    }

    /// `--discard-state`: a runtime state file that does not parse is
    /// renamed aside (`runtime.json.corrupt-<unix ms>`) so the proxy can
    /// start from the config file alone; a valid one is left as it is.
    /// Returns where a corrupt file went.
    pub fn set_aside_if_corrupt(&self) -> Result<Option<PathBuf>, StateError> {
        match self.load() {
            Err(StateError::Corrupt { path, .. }) => {
                let aside = self.dir.join(format!(
                    "{OVERRIDES_FILE}.corrupt-{}",
                    crate::clock::unix_ms()
                ));
                fs::rename(&path, &aside).map_err(|source| StateError::Write {
                    path: aside.clone(),
                    source,
                })?;
                Ok(Some(aside))
            }
            Err(e) => Err(e),
            Ok(_) => Ok(None),
        }
    }

    /// Replaces the overrides file atomically and durably.
    pub fn save(&self, overrides: &Overrides) -> Result<(), StateError> {
        let path = self.overrides_path();
        let tmp = self.dir.join(format!("{OVERRIDES_FILE}.tmp"));
        let write_err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(overrides)
            .map_err(|e| write_err(std::io::Error::other(e)))?;
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(&json)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            // A full disk leaves part of the new state in the temporary
            // file: gone, so only the last complete state remains.
            let _ = fs::remove_file(&tmp);
            return Err(write_err(e));
        }
        // The rename is durable only once the directory entry is synced.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
        Ok(())
    }

    /// In a fleet: the revision of the shared state `runtime.json` holds,
    /// if it was saved for `prefix` (0 otherwise: any state in etcd is newer).
    pub fn load_revision(&self, prefix: &str) -> i64 {
        let text = fs::read_to_string(self.dir.join(FLEET_FILE)).unwrap_or_default();
        let saved: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if saved["prefix"] == prefix {
            saved["revision"].as_i64().unwrap_or(0)
        } else {
            0
        }
    }

    /// Saves the revision of the shared state just saved (after `save`).
    pub fn save_revision(&self, prefix: &str, revision: i64) -> Result<(), StateError> {
        let path = self.dir.join(FLEET_FILE);
        let tmp = self.dir.join(format!("{FLEET_FILE}.tmp"));
        let text = serde_json::json!({"prefix": prefix, "revision": revision}).to_string();
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| StateError::Write { path, source })
    }

    /// Appends one line to the audit log.
    pub fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), StateError> {
        let path = self.audit_path();
        let write_err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let mut line =
            serde_json::to_vec(entry).map_err(|e| write_err(std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(write_err)?;
        file.write_all(&line).map_err(write_err)?;
        file.sync_data().map_err(write_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips() {
        let dir = std::env::temp_dir().join(format!("cutover-state-test-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), Overrides::default());
        let mut o = Overrides::default();
        o.splits.insert(
            "app".into(),
            SplitOverride {
                split: Split::new([("green", 100)]).unwrap(),
                file_split: Split::new([("blue", 100)]).unwrap(),
            },
        );
        o.disabled
            .entry("blue".into())
            .or_default()
            .insert("127.0.0.1:9".parse().unwrap());
        store.save(&o).unwrap();
        assert_eq!(store.load().unwrap(), o);
        fs::write(store.overrides_path(), b"{ not json").unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
        let _ = fs::remove_dir_all(&dir);
    }
}
