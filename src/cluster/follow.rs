//! Keeping one instance in step with the fleet: catch up, then watch the
//! shared state and hand each newer document to the [`Member`]; heartbeats
//! under a lease. The member is the instance, which implements the trait
//! (in `instance`): this module only speaks to etcd.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::etcd::pb::mvccpb::event::EventType;
use super::{Cluster, HEARTBEAT, RETRY_AFTER, WriteError, bounded, describe, parse};
use crate::state::Overrides;

/// What the follower hands documents to and asks for its heartbeat.
pub trait Member: Send + Sync + 'static {
    /// A newer fleet document at `revision` (older ones are ignored).
    fn adopt(&self, doc: Overrides, revision: i64) -> impl Future<Output = ()> + Send;

    /// The fleet has no state yet: this member's, to write as the first.
    /// Nothing else changes the member until `seeded`.
    fn seeding(&self) -> impl Future<Output = impl Seeding> + Send;

    /// This member's heartbeat record, and the audit entries to copy.
    fn heartbeat(&self) -> impl Future<Output = (Value, Vec<Value>)> + Send;

    /// Audit entries that could not be copied, to try again later.
    fn unsent(&self, entries: Vec<Value>) -> impl Future<Output = ()> + Send;
}

/// A member held still while its state seeds the fleet: `doc` is what to
/// write; `adopt` takes what etcd holds after (the seed, or a document
/// another instance wrote first) and lets the member go.
pub trait Seeding: Send {
    fn doc(&self) -> Overrides;
    fn adopt(self, doc: Overrides, revision: i64);
}

/// Follows the shared state until shutdown: catches up (or seeds etcd with
/// this instance's state if the fleet has none yet), then watches, applying
/// every newer document; on any error, reconnects and catches up again.
pub fn follow<M: Member>(cluster: Arc<Cluster>, instance: Arc<M>, shutdown: CancellationToken) {
    tokio::spawn({
        let cluster = Arc::clone(&cluster);
        let instance = Arc::clone(&instance);
        let shutdown = shutdown.clone();
        async move {
            let mut failures = 0u32;
            loop {
                let started = std::time::Instant::now();
                let ended = tokio::select! {
                    ended = watch_once(&cluster, instance.as_ref()) => ended,
                    () = shutdown.cancelled() => return,
                };
                cluster.set_watching(false);
                // A watch that ran a while ended for a reason of its own
                // (a member stopped): follow again at once, through
                // another member. Repeated failures wait between tries.
                failures = if started.elapsed() > RETRY_AFTER {
                    0
                } else {
                    failures + 1
                };
                if let Err(e) = ended
                    && failures == 1
                {
                    tracing::warn!(error = %e, "lost the fleet's state in etcd; serving the last one applied, changes refused until it is back");
                }
                if failures > 0 {
                    // 50 ms, doubling to RETRY_AFTER: a member gone is
                    // routed around at once; etcd gone is not hammered.
                    let wait = Duration::from_millis(50)
                        .saturating_mul(1 << failures.min(5))
                        .min(RETRY_AFTER);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => {
                    // Entries not copied yet stay in the local audit log.
                    cluster.leave().await;
                    return;
                }
            }
            let (record, audit) = instance.heartbeat().await;
            if !audit.is_empty()
                && let Err(e) = cluster.write_audit(&audit).await
            {
                tracing::debug!(error = %e, "cannot copy audit entries to etcd yet");
                instance.unsent(audit).await;
            }
            match cluster.heartbeat(record).await {
                Ok(()) => cluster.set_beating(true),
                Err(e) => {
                    if cluster.beating.load(Ordering::Acquire) {
                        tracing::warn!(error = %e, "etcd unreachable");
                    }
                    cluster.set_beating(false);
                }
            }
        }
    });
}

/// One catch-up and watch, until the watch ends or fails.
async fn watch_once<M: Member>(cluster: &Cluster, instance: &M) -> Result<(), String> {
    let from = match cluster.fetch().await? {
        Some((doc, revision)) => {
            instance.adopt(doc, revision).await;
            revision
        }
        None => {
            // The first instance of a fleet brings its own state.
            let seeding = instance.seeding().await;
            let doc = seeding.doc();
            match cluster.write(0, &doc).await {
                Ok(revision) => {
                    tracing::info!(
                        revision,
                        "the fleet had no state in etcd: seeded it with this instance's"
                    );
                    seeding.adopt(doc, revision);
                    revision
                }
                Err(WriteError::Conflict { doc, revision }) => {
                    seeding.adopt(*doc, revision);
                    revision
                }
                Err(WriteError::Unavailable(e)) => return Err(e),
            }
        }
    };
    let (i, client) = cluster.ready_client().await?;
    let watched = bounded(client.watch(&cluster.state_key, from + 1)).await;
    let mut stream = match watched {
        Ok(stream) => stream,
        Err(e) => {
            cluster.failed(i);
            return Err(e);
        }
    };
    cluster.set_watching(true);
    tracing::info!(revision = from, instance = %cluster.instance(), "following the fleet's state in etcd");
    loop {
        let answer = match stream.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                cluster.failed(i);
                return Err("the watch ended".into());
            }
            Err(e) => {
                cluster.failed(i);
                return Err(describe(&e));
            }
        };
        if answer.canceled {
            // Compacted past our revision: fetch the whole state again.
            return Err(format!("watch canceled: {}", answer.cancel_reason));
        }
        for event in answer.events {
            if event.r#type() != EventType::Put {
                continue;
            }
            let Some(kv) = event.kv else { continue };
            match parse(&kv.value) {
                Ok(doc) => instance.adopt(doc, kv.mod_revision).await,
                Err(e) => {
                    tracing::error!(revision = kv.mod_revision, error = %e, "ignoring a fleet state that does not parse")
                }
            }
        }
    }
}
