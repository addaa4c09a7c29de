//! A fleet of instances sharing one runtime state through etcd
//! (docs/fleet.md). The state — the same `Overrides` document a single
//! instance keeps in `state.dir` — lives at `PREFIX/runtime`; a change is
//! written with a transaction guarded by the revision it was made from,
//! and every instance follows the key with a watch, applying documents in
//! revision order. Each instance keeps the last one it applied (and its
//! revision) in `state.dir`, so it starts and serves without etcd.
//! Instances announce themselves under `PREFIX/instances/NAME`, attached
//! to a lease: the fleet view, and how a dead instance disappears.
//! `follow` keeps an instance in step.

pub mod etcd;
pub mod follow;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tonic::Status;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use etcd::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    range_request, request_op, response_op,
};
use etcd::{Client, Connect};

use crate::config::ClusterConfig;
use crate::state::Overrides;
use crate::telemetry::names;

/// Every call to etcd gives up after this: an admin call then answers 503.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an instance renews its lease and announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// An instance silent this long is gone from the fleet (its lease ends).
const LEASE_TTL_SECONDS: i64 = 5;
/// Audit entries the fleet keeps in etcd; older ones are trimmed (each
/// instance's `audit.log` keeps its own in full).
const AUDIT_KEEP: i64 = 1000;
/// Between attempts to reach etcd again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

/// Why a shared write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// Another instance changed the state first: here is the state now.
    Conflict { doc: Box<Overrides>, revision: i64 },
    /// etcd could not be reached, or did not answer in time.
    Unavailable(String),
}

pub struct Cluster {
    /// One client per endpoint, used one at a time: a member that goes
    /// away is left for the next at the first failure (a client balancing
    /// over all of them kept sending to a dead member).
    clients: Vec<Client>,
    current: AtomicUsize,
    /// etcd user and password, if etcd wants them; each client logs in
    /// on first use (`ready_client`), and again once etcd has forgotten
    /// its token.
    credentials: Option<(String, String)>,
    config: ClusterConfig,
    state_key: String,
    /// The watch is established (set by `follow`).
    watching: AtomicBool,
    /// The last heartbeat reached etcd.
    beating: AtomicBool,
    lease: AtomicI64,
    /// Whether it drove them at the last look (for status).
    driving: AtomicBool,
    /// When this instance last asked whether it drives rollouts, and the
    /// answer.
    driver: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
    /// The other instances' last announcements, and when they were read.
    others: tokio::sync::Mutex<Option<(std::time::Instant, Vec<Value>)>>,
}

impl Cluster {
    /// A client for the configured endpoints. No connection is made yet:
    /// an instance starts whether etcd answers or not.
    pub async fn new(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let how = Connect {
            timeout: CALL_TIMEOUT,
            keep_alive: Duration::from_secs(1),
            tls: tls_options(config)?,
        };
        // Logged in on first use, not here: connecting with a user would
        // ask etcd at once, and an instance must start without it.
        let credentials = match (&config.etcd_user, &config.etcd_password_file) {
            (Some(user), Some(file)) => Some((user.clone(), read(file)?.trim().to_string())),
            _ => None,
        };
        let mut clients = Vec::new();
        for endpoint in &config.etcd {
            let client = Client::connect(endpoint, &how)
                .map_err(|e| ClusterError::Etcd(format!("{endpoint}: {e}")))?;
            clients.push(client);
        }
        metrics::gauge!(names::CLUSTER_CONNECTED).set(0.0);
        Ok(Arc::new(Cluster {
            credentials,
            clients,
            current: AtomicUsize::new(0),
            state_key: format!("{}/runtime", config.prefix),
            config: config.clone(),
            watching: AtomicBool::new(false),
            beating: AtomicBool::new(false),
            lease: AtomicI64::new(0),
            driving: AtomicBool::new(false),
            driver: tokio::sync::Mutex::new(None),
            others: tokio::sync::Mutex::new(None),
        }))
    }

    /// The client in use, and its index.
    fn client(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::Acquire) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// The client in use, logged in if etcd wants a user; a client that
    /// cannot log in counts as failed.
    async fn ready_client(&self) -> Result<(usize, Client), String> {
        let (i, client) = self.client();
        let Some((user, password)) = &self.credentials else {
            return Ok((i, client));
        };
        if client.logged_in() {
            return Ok((i, client));
        }
        let login = bounded(client.authenticate(user, password))
            .await
            .map_err(|e| format!("cannot log in to etcd: {e}"));
        match login {
            Ok(()) => Ok((i, client)),
            Err(e) => {
                self.failed(i);
                Err(e)
            }
        }
    }

    /// Client `i` failed: the next one is used from now on.
    fn failed(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Tries every endpoint (at least twice over one) until one answers.
    fn attempts(&self) -> usize {
        self.clients.len().max(2)
    }

    pub fn instance(&self) -> &str {
        &self.config.instance
    }

    /// Whether changes can be shared now: watching, and heard by etcd.
    pub fn connected(&self) -> bool {
        self.watching.load(Ordering::Acquire) && self.beating.load(Ordering::Acquire)
    }

    fn set_watching(&self, on: bool) {
        self.watching.store(on, Ordering::Release);
        self.export_connected();
    }

    fn set_beating(&self, on: bool) {
        self.beating.store(on, Ordering::Release);
        self.export_connected();
    }

    fn export_connected(&self) {
        let value = if self.connected() { 1.0 } else { 0.0 };
        metrics::gauge!(names::CLUSTER_CONNECTED).set(value);
    }

    /// Writes `doc` if the shared state is still at `base` (0: no state
    /// yet); returns the new revision.
    pub async fn write(&self, base: i64, doc: &Overrides) -> Result<i64, WriteError> {
        let value = serde_json::to_vec(doc).map_err(|e| WriteError::Unavailable(e.to_string()))?;
        let mut unanswered = None;
        for _ in 0..self.attempts() {
            let (i, client) = match self.ready_client().await {
                Ok(ready) => ready,
                Err(e) => {
                    unanswered = Some(e);
                    continue;
                }
            };
            match self.write_with(client, base, &value).await {
                Ok(revision) => return Ok(revision),
                // An unanswered write may have landed all the same: then
                // the state found is this very document.
                Err(WriteError::Conflict {
                    doc: found,
                    revision,
                }) if unanswered.is_some() && *found == *doc => {
                    return Ok(revision);
                }
                Err(conflict @ WriteError::Conflict { .. }) => return Err(conflict),
                Err(WriteError::Unavailable(why)) => {
                    tracing::debug!(error = %why, "etcd did not take a change: trying the next endpoint");
                    self.failed(i);
                    unanswered = Some(why);
                }
            }
        }
        Err(WriteError::Unavailable(unanswered.unwrap_or_default()))
    }

    async fn write_with(&self, client: Client, base: i64, value: &[u8]) -> Result<i64, WriteError> {
        let unavailable = |e: String| WriteError::Unavailable(e);
        let key = self.state_key.as_bytes();
        let unchanged = if base == 0 {
            revision_is(key, compare::TargetUnion::CreateRevision(0))
        } else {
            revision_is(key, compare::TargetUnion::ModRevision(base))
        };
        let txn = TxnRequest {
            compare: vec![unchanged],
            success: vec![put_op(put(key, value, 0))],
            failure: vec![get_op(get(key))],
        };
        let answer = bounded(client.txn(txn)).await.map_err(unavailable)?;
        let revision = answer.header.as_ref().map_or(0, |h| h.revision);
        if answer.succeeded {
            return Ok(revision);
        }
        if let Some(kv) = first_got(&answer.responses) {
            let doc = parse(&kv.value).map_err(unavailable)?;
            return Err(WriteError::Conflict {
                doc: Box::new(doc),
                revision: kv.mod_revision,
            });
        }
        // The state was deleted (by hand): this change starts it again.
        if base != 0 {
            tracing::warn!(key = %self.state_key, "the fleet's state was deleted from etcd; writing it again");
            return Box::pin(self.write_with(client, 0, value)).await;
        }
        Err(WriteError::Unavailable(
            "etcd refused to create the fleet's state".into(),
        ))
    }

    /// The shared state now and its revision; `None` if there is none.
    async fn fetch(&self) -> Result<Option<(Overrides, i64)>, String> {
        let mut last = String::new();
        for _ in 0..self.attempts() {
            let (i, client) = match self.ready_client().await {
                Ok(ready) => ready,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let answer = bounded(client.range(get(self.state_key.as_bytes()))).await;
            match answer {
                Ok(answer) => {
                    return match answer.kvs.first() {
                        Some(kv) => Ok(Some((parse(&kv.value)?, kv.mod_revision))),
                        None => Ok(None),
                    };
                }
                Err(e) => {
                    self.failed(i);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Announces this instance under its lease every [`HEARTBEAT`]: its
    /// applied revision and in-flight requests, for the fleet view.
    async fn heartbeat(&self, record: Value) -> Result<(), String> {
        let (i, client) = self.ready_client().await?;
        let beat = self.heartbeat_with(client, record).await;
        if beat.is_err() {
            self.failed(i);
        }
        beat
    }

    async fn heartbeat_with(&self, client: Client, record: Value) -> Result<(), String> {
        let mut lease = self.lease.load(Ordering::Acquire);
        if lease != 0 {
            let kept = bounded(client.lease_keep_alive(lease)).await;
            // A TTL of 0 in the answer: the lease expired meanwhile.
            if !matches!(kept, Ok(ttl) if ttl > 0) {
                lease = 0;
            }
        }
        if lease == 0 {
            lease = bounded(client.lease_grant(LEASE_TTL_SECONDS)).await?;
            self.lease.store(lease, Ordering::Release);
        }
        let key = format!("{}/instances/{}", self.config.prefix, self.config.instance);
        let record = record.to_string();
        bounded(client.put(put(key.as_bytes(), record.as_bytes(), lease))).await?;
        Ok(())
    }

    /// Ends this process's lease at shutdown: its announcement and the
    /// rollout driver's key (if it held it) go at once, not 5 s later.
    pub async fn leave(&self) {
        let lease = self.lease.swap(0, Ordering::AcqRel);
        if lease == 0 {
            return;
        }
        let Ok((_, client)) = self.ready_client().await else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
    }

    /// Whether this instance drives the fleet's rollouts (asked of etcd at
    /// most once per [`HEARTBEAT`]; see `claim_driver`).
    pub async fn drives_rollouts(&self) -> bool {
        let mut cached = self.driver.lock().await;
        if let Some((at, answer)) = *cached
            && at.elapsed() < HEARTBEAT
        {
            return answer;
        }
        let answer = self.claim_driver().await;
        *cached = Some((std::time::Instant::now(), answer));
        self.driving.store(answer, Ordering::Release);
        answer
    }

    /// The other instances' announcements, read at most once per
    /// [`HEARTBEAT`] (they change no faster).
    pub async fn others(&self) -> Result<Vec<Value>, String> {
        let mut cached = self.others.lock().await;
        if let Some((at, list)) = &*cached
            && at.elapsed() < HEARTBEAT
        {
            return Ok(list.clone());
        }
        let fetched = self.instances().await;
        let list: Vec<Value> = match fetched {
            Ok(all) => all
                .into_iter()
                .filter(|(name, _)| *name != self.config.instance)
                .map(|(_, record)| record)
                .collect(),
            Err(e) => {
                // Not asked again for a while: callers hold the instance.
                let last = cached.take().map(|(_, l)| l).unwrap_or_default();
                *cached = Some((std::time::Instant::now(), last));
                return Err(e);
            }
        };
        *cached = Some((std::time::Instant::now(), list.clone()));
        Ok(list)
    }

    /// Holds (or now takes) `PREFIX/driver`, attached to this instance's
    /// lease: a dead driver's key goes with its lease, and another
    /// instance takes over.
    async fn claim_driver(&self) -> bool {
        let lease = self.lease.load(Ordering::Acquire);
        if lease == 0 || !self.connected() {
            return false;
        }
        let key = format!("{}/driver", self.config.prefix);
        let key = key.as_bytes();
        let me = self.config.instance.as_str();
        let txn = TxnRequest {
            compare: vec![revision_is(key, compare::TargetUnion::CreateRevision(0))],
            success: vec![put_op(put(key, me.as_bytes(), lease))],
            failure: vec![get_op(get(key))],
        };
        let Ok((i, client)) = self.ready_client().await else {
            return false;
        };
        let Ok(answer) = bounded(client.txn(txn)).await else {
            self.failed(i);
            return false;
        };
        if answer.succeeded {
            tracing::info!(instance = %me, "this instance now drives the fleet's rollouts");
            return true;
        }
        first_got(&answer.responses)
            .is_some_and(|kv| kv.value == me.as_bytes() && kv.lease == lease)
    }

    /// Every instance's last announcement, by name.
    pub async fn instances(&self) -> Result<Vec<(String, Value)>, String> {
        let prefix = format!("{}/instances/", self.config.prefix);
        let (_, client) = self.ready_client().await?;
        let answer = bounded(client.range(get_prefix(&prefix))).await?;
        Ok(answer
            .kvs
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(&kv.key).ok()?;
                let name = key.strip_prefix(&prefix)?.to_string();
                let value = serde_json::from_slice(&kv.value).ok()?;
                Some((name, value))
            })
            .collect())
    }

    /// Copies audit entries to `PREFIX/audit/`, keyed by time and
    /// instance, and trims the oldest past [`AUDIT_KEEP`].
    pub async fn write_audit(&self, entries: &[Value]) -> Result<(), String> {
        let (i, client) = self.ready_client().await?;
        let written = async {
            let now = crate::clock::unix_ms();
            for (n, entry) in entries.iter().enumerate() {
                let key = format!(
                    "{}/audit/{now:016}-{}-{n:04}",
                    self.config.prefix, self.config.instance
                );
                let entry = entry.to_string();
                client.put(put(key.as_bytes(), entry.as_bytes(), 0)).await?;
            }
            let prefix = format!("{}/audit/", self.config.prefix);
            let count = client
                .range(RangeRequest {
                    count_only: true,
                    ..get_prefix(&prefix)
                })
                .await?
                .count;
            let excess = count - AUDIT_KEEP;
            if excess > 0 {
                let oldest = client
                    .range(RangeRequest {
                        keys_only: true,
                        limit: excess,
                        ..get_prefix(&prefix)
                    })
                    .await?;
                for kv in oldest.kvs {
                    client
                        .delete_range(DeleteRangeRequest {
                            key: kv.key,
                            ..Default::default()
                        })
                        .await?;
                }
            }
            Ok::<(), Status>(())
        };
        let written = bounded(written).await;
        if written.is_err() {
            self.failed(i);
        }
        written
    }

    /// The fleet's last `limit` audit entries, oldest first, each with the
    /// instance that wrote it.
    pub async fn audit_tail(&self, limit: usize) -> Result<Vec<Value>, String> {
        let prefix = format!("{}/audit/", self.config.prefix);
        let (_, client) = self.ready_client().await?;
        let newest_first = RangeRequest {
            sort_target: range_request::SortTarget::Key.into(),
            sort_order: range_request::SortOrder::Descend.into(),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            ..get_prefix(&prefix)
        };
        let answer = bounded(client.range(newest_first)).await?;
        let mut entries: Vec<Value> = answer
            .kvs
            .iter()
            .filter_map(|kv| {
                let mut entry: Value = serde_json::from_slice(&kv.value).ok()?;
                let key = std::str::from_utf8(&kv.key).ok()?.strip_prefix(&prefix)?;
                // KEY is TIME-INSTANCE-N: the instance lies between the
                // first '-' and the last (names may contain '-').
                let instance = key.split_once('-').map(|(_, rest)| rest)?;
                let instance = instance.rsplit_once('-').map_or(instance, |(name, _)| name);
                entry["instance"] = json!(instance);
                Some(entry)
            })
            .collect();
        entries.reverse();
        Ok(entries)
    }

    /// What status shows of the fleet link.
    pub fn view(&self, revision: i64) -> Value {
        json!({
            "instance": self.config.instance,
            "prefix": self.config.prefix,
            "etcd": self.config.etcd,
            "connected": self.connected(),
            "revision": revision,
            "drives_rollouts": self.driving.load(Ordering::Acquire),
        })
    }
}

/// `call`, given up after [`CALL_TIMEOUT`]; etcd's error as text.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map_err(|e| describe(&e)),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// An etcd error as an operator wants it: a gRPC status's message and its
/// root cause ("tcp connect error: Connection refused (os error 111)"),
/// not tonic's nested debug output.
fn describe(status: &Status) -> String {
    let mut cause = std::error::Error::source(status);
    while let Some(deeper) = cause.and_then(std::error::Error::source) {
        cause = Some(deeper);
    }
    match cause {
        Some(cause) => format!("{}: {cause}", status.message()),
        None => status.message().to_string(),
    }
}

fn parse(bytes: &[u8]) -> Result<Overrides, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the shared state is not valid: {e}"))
}

fn read(path: &std::path::Path) -> Result<String, ClusterError> {
    std::fs::read_to_string(path).map_err(|e| ClusterError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// For `cutover check`: the files `[cluster]` names can be read and the
/// certificates parse (whether etcd answers is not checked).
pub fn check(config: &ClusterConfig) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if let Err(e) = tls_options(config) {
        problems.push(format!("cluster: {e}"));
    }
    if let Some(file) = &config.etcd_password_file
        && let Err(e) = read(file)
    {
        problems.push(format!("cluster.etcd_password_file: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn tls_options(config: &ClusterConfig) -> Result<Option<ClientTlsConfig>, ClusterError> {
    let uses_tls = config.etcd.iter().any(|e| e.starts_with("https://"));
    if !uses_tls && config.etcd_ca.is_none() && config.etcd_cert.is_none() {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &config.etcd_ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&config.etcd_cert, &config.etcd_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

/// A read of one key.
fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// A read of every key under `prefix`.
fn get_prefix(prefix: &str) -> RangeRequest {
    RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: etcd::prefix_end(prefix.as_bytes()),
        ..Default::default()
    }
}

/// A write of `key`, attached to `lease` unless it is 0.
fn put(key: &[u8], value: &[u8], lease: i64) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    }
}

fn put_op(put: PutRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(put)),
    }
}

fn get_op(get: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(get)),
    }
}

/// A transaction's condition: `key`'s create or mod revision is the one
/// given (a create revision of 0: the key does not exist).
fn revision_is(key: &[u8], value: compare::TargetUnion) -> Compare {
    let target = match value {
        compare::TargetUnion::CreateRevision(_) => compare::CompareTarget::Create,
        compare::TargetUnion::ModRevision(_) => compare::CompareTarget::Mod,
        compare::TargetUnion::Version(_) => compare::CompareTarget::Version,
        compare::TargetUnion::Value(_) => compare::CompareTarget::Value,
        compare::TargetUnion::Lease(_) => compare::CompareTarget::Lease,
    };
    Compare {
        result: compare::CompareResult::Equal.into(),
        target: target.into(),
        key: key.to_vec(),
        target_union: Some(value),
        ..Default::default()
    }
}

/// The first key a failed transaction's read found.
fn first_got(
    responses: &[etcd::pb::etcdserverpb::ResponseOp],
) -> Option<&etcd::pb::mvccpb::KeyValue> {
    responses.iter().find_map(|op| match &op.response {
        Some(response_op::Response::ResponseRange(got)) => got.kvs.first(),
        _ => None,
    })
}
